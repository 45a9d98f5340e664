//! The policy engine: observations in, driver state and alert events out.
//!
//! Time comes only from the observations' timestamps. The rule for ordering: an observation whose
//! timestamp is not later than the last accepted one (out of order or a duplicate) is dropped and
//! counted in [`EngineStats`]; it changes nothing. An interval longer than `max_gap_s` between two
//! accepted observations is missing data: no timer runs across it except "monitoring unavailable",
//! which counts it as lost sensing. Each observation is processed in two phases: first time moves
//! on to its timestamp with the previous samples held (so a threshold crossed inside the interval
//! is acted on at this timestamp), then its own samples are applied; both phases may emit events,
//! all stamped with the observation's timestamp.

use std::collections::VecDeque;
use std::time::Duration;

use crate::alert::{Alert, AlertEvent, AlertId, ClearReason};
use crate::observation::{Field, Observation};
use crate::rules::{Rules, RulesError};
use crate::signal::{FieldSignal, Sample, Timer};
use crate::state::{DriverState, MonitoringState};

/// Counters for what the engine did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Observations processed.
    pub accepted: u64,
    /// Dropped: timestamp earlier than the last accepted one.
    pub out_of_order: u64,
    /// Dropped: timestamp equal to the last accepted one.
    pub duplicates: u64,
    /// Accepted observations that came after a gap longer than `max_gap_s`.
    pub gaps: u64,
    /// Accepted observations marked invalid.
    pub invalid: u64,
}

/// One interval of eyes-closed data for PERCLOS.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: Duration,
    end: Duration,
    closed: bool,
}

/// A finished eyes-off-road glance counted by VATS (observation-time bounds, known duration).
#[derive(Debug, Clone, Copy)]
struct Glance {
    start: Duration,
    end: Duration,
    held: Duration,
}

/// Turns observations into a [`DriverState`] and [`AlertEvent`]s. See the module docs for the
/// time rules.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    rules: Rules,
    last_timestamp: Option<Duration>,
    seen_valid: bool,
    /// The last observation's speed was below the speed gate.
    slow: bool,
    fields: [FieldSignal; 8],
    /// Each rule's condition timer, indexed by `AlertId::index`.
    conditions: [Timer; 8],
    /// Eyes off road as VATS sees it (its own speed gate), and its finished glances.
    vats_off_road: Timer,
    glances: VecDeque<Glance>,
    vats_total: Duration,
    yawning: Timer,
    yawns: VecDeque<Duration>,
    perclos_segments: VecDeque<Segment>,
    perclos: Option<f32>,
    active: [Option<Alert>; 8],
    last_cleared: [Option<Duration>; 8],
    state: DriverState,
    stats: EngineStats,
}

impl PolicyEngine {
    pub fn new(rules: Rules) -> Self {
        PolicyEngine {
            rules,
            last_timestamp: None,
            seen_valid: false,
            slow: false,
            fields: Default::default(),
            conditions: Default::default(),
            vats_off_road: Timer::default(),
            glances: VecDeque::new(),
            vats_total: Duration::ZERO,
            yawning: Timer::default(),
            yawns: VecDeque::new(),
            perclos_segments: VecDeque::new(),
            perclos: None,
            active: Default::default(),
            last_cleared: [None; 8],
            state: DriverState::default(),
            stats: EngineStats::default(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The driver state after the last accepted observation.
    pub fn state(&self) -> &DriverState {
        &self.state
    }

    /// The active alerts, in rule order.
    pub fn active_alerts(&self) -> Vec<Alert> {
        AlertId::ALL
            .iter()
            .filter_map(|id| self.active[id.index()].clone())
            .collect()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Replaces the rules (hot reload). The new rules are validated first; on error nothing
    /// changes. Timers and alerts carry over; active alerts of rules the new set disables are
    /// cleared (returned as events). Levels of active alerts never go down until they clear.
    pub fn replace_rules(&mut self, rules: Rules) -> Result<Vec<AlertEvent>, RulesError> {
        rules.validate()?;
        self.rules = rules;
        let now = self.last_timestamp.unwrap_or_default();
        let mut events = Vec::new();
        for id in AlertId::ALL {
            if !self.rules.common(id).enabled {
                self.clear(id, now, ClearReason::RuleDisabled, &mut events);
            }
        }
        Ok(events)
    }

    /// Processes one observation; returns what changed, in order.
    pub fn observe(&mut self, obs: &Observation) -> Vec<AlertEvent> {
        let now = obs.timestamp;
        let mut events = Vec::new();
        let previous = self.last_timestamp;
        if let Some(last) = previous {
            if now < last {
                self.stats.out_of_order += 1;
                return events;
            }
            if now == last {
                self.stats.duplicates += 1;
                return events;
            }
        }
        self.last_timestamp = Some(now);
        self.stats.accepted += 1;
        let dt = previous.map_or(Duration::ZERO, |last| now - last);
        let gap = previous.is_some() && dt > self.rules.observations.max_gap;
        if gap {
            self.stats.gaps += 1;
        }

        // Phase 1: time moves on with the previous samples held.
        self.advance(previous, now, dt, gap);
        self.update_aggregates(now);
        self.evaluate(now, &mut events);

        // Phase 2: this observation's samples.
        self.apply(obs, (!gap && previous.is_some()).then_some(dt));
        self.update_aggregates(now);
        self.evaluate(now, &mut events);
        self.update_state(obs);
        events
    }

    fn advance(&mut self, previous: Option<Duration>, now: Duration, dt: Duration, gap: bool) {
        let Some(previous) = previous else { return };
        for (i, timer) in self.conditions.iter_mut().enumerate() {
            if i == AlertId::MonitoringUnavailable.index() {
                // Lost sensing is always known; a gap is lost sensing from its start.
                if gap {
                    timer.sample(previous, Some(Sample::constant(true)));
                }
                timer.advance(dt, now, true);
            } else {
                timer.advance(dt, now, !gap);
            }
        }
        self.vats_off_road.advance(dt, now, !gap);
        self.yawning.advance(dt, now, !gap);
        if !gap && let Some(closed) = self.fields[Field::EyesClosed.index()].value() {
            match self.perclos_segments.back_mut() {
                Some(last) if last.end == previous && last.closed == closed => last.end = now,
                _ => self.perclos_segments.push_back(Segment {
                    start: previous,
                    end: now,
                    closed,
                }),
            }
        }
    }

    fn apply(&mut self, obs: &Observation, dt: Option<Duration>) {
        let valid = obs.is_valid();
        if valid {
            self.seen_valid = true;
        } else {
            self.stats.invalid += 1;
        }
        let rules = &self.rules;
        let raw = |field: Field| {
            if !valid {
                return None;
            }
            // NaN is no probability; anything else is clamped into 0..=1.
            obs.probabilities
                .get(field)
                .filter(|p| !p.is_nan())
                .map(|p| p.clamp(0.0, 1.0))
        };
        let face = self.fields[Field::FaceVisible.index()].update(
            raw(Field::FaceVisible),
            dt,
            &rules.smoothing,
            rules.thresholds.face_visible,
        );
        let face_lost = face.is_some_and(|f| !f.state);
        let mut samples: [Option<Sample>; 8] = [None; 8];
        samples[Field::FaceVisible.index()] = face;
        for field in Field::ALL {
            if field == Field::FaceVisible {
                continue;
            }
            let input = if field.needs_face() && face_lost {
                None
            } else {
                raw(field)
            };
            samples[field.index()] = self.fields[field.index()].update(
                input,
                dt,
                &rules.smoothing,
                rules.thresholds.get(field),
            );
        }

        let off_road = samples[Field::EyesOnRoad.index()].map(Sample::not);
        let closed = samples[Field::EyesClosed.index()];
        // Which rule owns which condition (see rules/default.toml): closed eyes are drowsiness
        // (microsleep, sleep), not distraction, whatever a gaze estimate from closed eyes says;
        // so the distraction rules (long_distraction, VATS) see eyes off the road only while the
        // eyes are open. `unresponsive` counts both.
        let distracted = Sample::unless(off_road, closed);
        // Sensing is lost without a valid observation, with the face confirmed not visible, or
        // when the observation has no eye data at all.
        let no_eye_data = raw(Field::EyesOnRoad).is_none() && raw(Field::EyesClosed).is_none();
        let lost = Sample {
            state: !valid || face_lost || no_eye_data,
            evidence: !valid || face.is_some_and(|f| !f.evidence) || no_eye_data,
        };
        let slow = obs
            .vehicle_speed_kmh
            .is_some_and(|speed| speed < rules.speed_gate.min_speed_kmh);
        self.slow = slow;
        let gate = |id: AlertId, sample: Option<Sample>| {
            if slow && rules.common(id).speed_gated {
                Some(Sample::constant(false))
            } else {
                sample
            }
        };
        let now = obs.timestamp;
        let inputs = [
            (AlertId::LongDistraction, distracted),
            (AlertId::PhoneUse, samples[Field::PhoneInUse.index()]),
            (AlertId::Microsleep, closed),
            (AlertId::Sleep, closed),
            (AlertId::Unresponsive, Sample::or(closed, off_road)),
            (AlertId::MonitoringUnavailable, Some(lost)),
        ];
        for (id, sample) in inputs {
            let gated = gate(id, sample);
            self.conditions[id.index()].sample(now, gated);
        }
        let vats_input = gate(AlertId::ShortDistraction, distracted);
        if let Some(glance) = self.vats_off_road.sample(now, vats_input)
            && glance.value
            && self.counts_for_vats(glance.held())
        {
            self.glances.push_back(Glance {
                start: glance.start.wall,
                end: glance.end.wall,
                held: glance.held(),
            });
        }
        let was_yawning = self.yawning.last_known() == Some(true);
        self.yawning.sample(now, samples[Field::Yawning.index()]);
        if !was_yawning
            && self.yawning.last_known() == Some(true)
            && let Some(period) = self.yawning.current_period()
        {
            self.yawns.push_back(period.start.wall);
        }
    }

    /// VATS and drowsiness: conditions over windows, recomputed at `now`.
    fn update_aggregates(&mut self, now: Duration) {
        let vats = &self.rules.short_distraction;
        if self.vats_off_road.current() == Some(false)
            && self.vats_off_road.held() >= vats.reset_after
        {
            self.glances.clear();
        }
        let window_start = now.saturating_sub(vats.window);
        while self.glances.front().is_some_and(|g| g.end <= window_start) {
            self.glances.pop_front();
        }
        let in_window = |g: Glance| g.held.min(g.end.saturating_sub(g.start.max(window_start)));
        let mut total: Duration = self.glances.iter().map(|g| in_window(*g)).sum();
        if let Some(period) = self.vats_off_road.current_period()
            && period.value
            && self.counts_for_vats(period.held())
        {
            total += in_window(Glance {
                start: period.start.wall,
                end: period.end.wall,
                held: period.held(),
            });
        }
        self.vats_total = total;
        let vats_condition = self
            .vats_off_road
            .is_known()
            .then_some(total >= vats.cumulative);
        self.conditions[AlertId::ShortDistraction.index()]
            .sample(now, vats_condition.map(Sample::constant));

        let drowsy = &self.rules.drowsiness;
        let yawn_start = now.saturating_sub(drowsy.yawn_window);
        while self.yawns.front().is_some_and(|t| *t < yawn_start) {
            self.yawns.pop_front();
        }
        let perclos_start = now.saturating_sub(drowsy.perclos_window);
        while self
            .perclos_segments
            .front()
            .is_some_and(|s| s.end <= perclos_start)
        {
            self.perclos_segments.pop_front();
        }
        let (mut closed, mut known) = (Duration::ZERO, Duration::ZERO);
        for segment in &self.perclos_segments {
            let length = segment.end.saturating_sub(segment.start.max(perclos_start));
            known += length;
            if segment.closed {
                closed += length;
            }
        }
        let coverage = known.as_secs_f64() / drowsy.perclos_window.as_secs_f64();
        self.perclos = (coverage >= f64::from(drowsy.perclos_min_coverage) && !known.is_zero())
            .then(|| (closed.as_secs_f64() / known.as_secs_f64()) as f32);
        let yawn_condition = self.yawns.len() >= drowsy.yawn_count as usize;
        let perclos_condition = self.perclos.is_some_and(|p| p >= drowsy.perclos_threshold);
        let slow_gate = drowsy.speed_gated && self.slow;
        self.conditions[AlertId::Drowsiness.index()].sample(
            now,
            Some(Sample::constant(
                (yawn_condition || perclos_condition) && !slow_gate,
            )),
        );
    }

    /// Raises, escalates and clears alerts from the condition timers.
    fn evaluate(&mut self, now: Duration, events: &mut Vec<AlertEvent>) {
        let clear_after = self.rules.alerts.clear_after;
        for id in AlertId::ALL {
            let common = self.rules.common(id);
            if !common.enabled {
                continue;
            }
            let timer = &self.conditions[id.index()];
            let condition = timer.current();
            let held = timer.held();
            let target = match condition {
                Some(true) => self.level_reached(id, held),
                _ => None,
            };
            let superseded = common
                .superseded_by
                .iter()
                .any(|other| self.active[other.index()].is_some());
            match &mut self.active[id.index()] {
                None => {
                    let cooling = self.last_cleared[id.index()]
                        .is_some_and(|cleared| now < cleared.saturating_add(common.cooldown));
                    if let Some(level) = target
                        && !superseded
                        && !cooling
                    {
                        let alert = Alert {
                            id,
                            level,
                            message: common.message.to_owned(),
                            raised_at: now,
                            cleared_at: None,
                        };
                        self.active[id.index()] = Some(alert.clone());
                        events.push(AlertEvent::Raised { alert });
                    }
                }
                Some(alert) => {
                    if let Some(level) = target
                        && level > alert.level
                    {
                        let from_level = alert.level;
                        alert.level = level;
                        alert.message = common.message.to_owned();
                        events.push(AlertEvent::Escalated {
                            alert: alert.clone(),
                            from_level,
                        });
                    } else if condition == Some(false) && held >= clear_after {
                        self.clear(id, now, ClearReason::ConditionEnded, events);
                    }
                }
            }
        }
        for id in AlertId::ALL {
            let by = self
                .rules
                .common(id)
                .superseded_by
                .iter()
                .copied()
                .find(|other| self.active[other.index()].is_some());
            if let Some(by) = by {
                self.clear(id, now, ClearReason::Superseded { by }, events);
            }
        }
    }

    /// Whether a glance of `held` is VATS's (a short glance) rather than long_distraction's: a
    /// glance that reached long_distraction's first step is alerted by that rule and leaves the
    /// VATS count (Euro NCAP separates long distraction from the cumulative short-glance test).
    fn counts_for_vats(&self, held: Duration) -> bool {
        if !self.rules.common(AlertId::LongDistraction).enabled {
            return true;
        }
        let long = self
            .rules
            .steps(AlertId::LongDistraction)
            .and_then(|steps| steps.iter().map(|s| s.after).min());
        long.is_none_or(|after| held < after)
    }

    /// The highest level whose time the condition has held, if any.
    fn level_reached(&self, id: AlertId, held: Duration) -> Option<u8> {
        match self.rules.steps(id) {
            Some(steps) => steps
                .iter()
                .filter(|step| held >= step.after)
                .map(|step| step.level)
                .max(),
            None => Some(match id {
                AlertId::ShortDistraction => self.rules.short_distraction.level,
                _ => self.rules.drowsiness.level,
            }),
        }
    }

    fn clear(
        &mut self,
        id: AlertId,
        now: Duration,
        reason: ClearReason,
        events: &mut Vec<AlertEvent>,
    ) {
        if let Some(mut alert) = self.active[id.index()].take() {
            alert.cleared_at = Some(now);
            self.last_cleared[id.index()] = Some(now);
            events.push(AlertEvent::Cleared { alert, reason });
        }
    }

    fn update_state(&mut self, obs: &Observation) {
        let field = |f: Field| self.fields[f.index()].value();
        let probability = |f: Field| self.fields[f.index()].probability();
        let rules = &self.rules;
        let attentive = match probability(Field::EyesOnRoad) {
            Some(on_road) => {
                let open = 1.0 - probability(Field::EyesClosed).unwrap_or(0.0);
                100.0 * on_road * open
            }
            None => 0.0,
        };
        let progress = |id: AlertId| {
            let timer = &self.conditions[id.index()];
            let last_step = rules
                .steps(id)
                .and_then(|steps| steps.last())
                .map_or(Duration::ZERO, |s| s.after);
            if timer.last_known() == Some(true) && !last_step.is_zero() {
                timer.held().as_secs_f64() / last_step.as_secs_f64()
            } else {
                0.0
            }
        };
        let vats_progress =
            self.vats_total.as_secs_f64() / rules.short_distraction.cumulative.as_secs_f64();
        let distraction = progress(AlertId::LongDistraction)
            .max(progress(AlertId::PhoneUse))
            .max(vats_progress);
        let drowsy = &rules.drowsiness;
        let fatigue = progress(AlertId::Sleep)
            .max(
                self.perclos
                    .map_or(0.0, |p| f64::from(p / drowsy.perclos_threshold)),
            )
            .max(self.yawns.len() as f64 / f64::from(drowsy.yawn_count));
        let monitoring = if self.active[AlertId::MonitoringUnavailable.index()].is_some() {
            MonitoringState::Unavailable
        } else if !self.seen_valid {
            MonitoringState::Starting
        } else if self.conditions[AlertId::MonitoringUnavailable.index()].current() == Some(true) {
            MonitoringState::Degraded
        } else {
            MonitoringState::Active
        };
        self.state = DriverState {
            timestamp: Some(obs.timestamp),
            monitoring,
            is_eyes_on_road: field(Field::EyesOnRoad),
            attentive_probability: attentive,
            distraction_level: (100.0 * distraction).clamp(0.0, 100.0) as f32,
            fatigue_level: (100.0 * fatigue).clamp(0.0, 100.0) as f32,
            is_hands_on_wheel: field(Field::HandsOnWheel),
            phone_in_use: field(Field::PhoneInUse),
            eyes_closed: field(Field::EyesClosed),
            face_visible: field(Field::FaceVisible),
            yawning: field(Field::Yawning),
            seat_belt: field(Field::SeatBelt),
            passenger_present: field(Field::PassengerPresent),
            perclos: self.perclos,
            yawns_in_window: self.yawns.len() as u32,
            short_distraction_time: self.vats_total,
        };
    }
}
