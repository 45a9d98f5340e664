//! Property tests (proptest, modest case counts): alerts are raised only after their condition
//! held for the rule's time, clear once it has been false for the hysteresis, and levels only go
//! up until an alert clears.
//!
//! The reference model below times each rule's condition directly from the scripted poses
//! (sample-and-hold, paused over invalid data and gaps as documented). Poses last at least 0.5 s,
//! long enough for the smoothing to confirm them; shorter noise is covered by the level property
//! and the unit tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use autoneural_policies::{AlertEvent, AlertId, Observation, PolicyEngine, Probabilities, Rules};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pose {
    Attentive,
    OffRoad,
    Closed,
    Phone,
    NoFace,
    Invalid,
    Silence,
}

impl Pose {
    fn probabilities(self) -> Option<Probabilities> {
        match self {
            Pose::Attentive => Some(attentive()),
            Pose::OffRoad => Some(off_road()),
            Pose::Closed => Some(eyes_closed()),
            Pose::Phone => Some(phone()),
            Pose::NoFace => Some(no_face()),
            Pose::Invalid | Pose::Silence => None,
        }
    }

    /// Whether the rule's condition is true in this pose; `None` where it is unknown.
    fn condition(self, id: AlertId) -> Option<bool> {
        if id == AlertId::MonitoringUnavailable {
            return Some(self == Pose::Invalid);
        }
        if self == Pose::Invalid {
            return None;
        }
        Some(match id {
            AlertId::LongDistraction => self == Pose::OffRoad,
            AlertId::PhoneUse => self == Pose::Phone,
            AlertId::Microsleep | AlertId::Sleep => self == Pose::Closed,
            AlertId::Unresponsive => self == Pose::OffRoad || self == Pose::Closed,
            _ => return None,
        })
    }
}

const TIMED: [AlertId; 6] = [
    AlertId::LongDistraction,
    AlertId::PhoneUse,
    AlertId::Microsleep,
    AlertId::Sleep,
    AlertId::Unresponsive,
    AlertId::MonitoringUnavailable,
];

/// Small deterministic jitter so probabilities are never exactly the same twice.
struct Jitter(u64);

impl Jitter {
    fn apply(&mut self, p: Probabilities) -> Probabilities {
        let mut p = p;
        for field in autoneural_policies::Field::ALL {
            if let Some(v) = p.get(field) {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((self.0 >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.12;
                p.set(field, Some((v + noise).clamp(0.0, 1.0)));
            }
        }
        p
    }
}

/// Frames of a script: (timestamp, pose), silence leaving no frames.
fn frames(script: &[(Pose, u64)], rate: u64) -> Vec<(Duration, Pose)> {
    let mut out = Vec::new();
    let mut index = 0u64;
    for &(pose, millis) in script {
        let count = (millis * rate).div_ceil(1000);
        for _ in 0..count {
            if pose != Pose::Silence {
                out.push((Duration::from_nanos(index * 1_000_000_000 / rate), pose));
            }
            index += 1;
        }
    }
    out
}

/// The reference: how long each rule's condition has held true / false at a frame, before
/// (phase 1) and after (phase 2) the frame's own sample.
#[derive(Debug, Clone, Copy, Default)]
struct Runs {
    value: Option<bool>,
    true_for: Duration,
    false_for: Duration,
}

fn reference(frames: &[(Duration, Pose)], id: AlertId, max_gap: Duration) -> Vec<(Runs, Runs)> {
    let mut runs = Runs::default();
    let mut previous: Option<(Duration, Pose)> = None;
    let mut out = Vec::new();
    for &(t, pose) in frames {
        if let Some((last, last_pose)) = previous {
            let dt = t - last;
            let gap = dt > max_gap;
            if id == AlertId::MonitoringUnavailable && gap {
                // A gap is lost sensing from its start.
                if runs.value != Some(true) {
                    runs.true_for = Duration::ZERO;
                }
                runs.value = Some(true);
                runs.true_for += dt;
            } else if !gap && last_pose.condition(id).is_some() {
                match runs.value {
                    Some(true) => runs.true_for += dt,
                    Some(false) => runs.false_for += dt,
                    None => {}
                }
            }
        }
        let before = runs;
        if let Some(value) = pose.condition(id) {
            if runs.value != Some(value) {
                if value {
                    runs.true_for = Duration::ZERO;
                } else {
                    runs.false_for = Duration::ZERO;
                }
            }
            runs.value = Some(value);
        }
        out.push((before, runs));
        previous = Some((t, pose));
    }
    out
}

fn step_time(rules: &Rules, id: AlertId, level: u8) -> Duration {
    let steps = match id {
        AlertId::LongDistraction => &rules.long_distraction.steps,
        AlertId::PhoneUse => &rules.phone_use.steps,
        AlertId::Microsleep => &rules.microsleep.steps,
        AlertId::Sleep => &rules.sleep.steps,
        AlertId::Unresponsive => &rules.unresponsive.steps,
        AlertId::MonitoringUnavailable => &rules.monitoring_unavailable.steps,
        _ => unreachable!("timed rules only"),
    };
    steps
        .iter()
        .filter(|s| s.level <= level)
        .map(|s| s.after)
        .max()
        .unwrap_or_default()
}

fn settled_pose() -> impl Strategy<Value = (Pose, u64)> {
    prop_oneof![
        3 => (Just(Pose::Attentive), 500u64..6000),
        3 => (Just(Pose::OffRoad), 500u64..7000),
        2 => (Just(Pose::Closed), 500u64..5000),
        2 => (Just(Pose::Phone), 500u64..5000),
        1 => (Just(Pose::Invalid), 500u64..12000),
        1 => (Just(Pose::Silence), 600u64..12000),
    ]
}

fn run_engine(rules: &Rules, frames: &[(Duration, Pose)], seed: u64) -> Vec<Vec<AlertEvent>> {
    let mut engine = PolicyEngine::new(rules.clone());
    let mut jitter = Jitter(seed);
    frames
        .iter()
        .map(|&(t, pose)| {
            let obs = match pose.probabilities() {
                Some(p) => Observation::valid(t, jitter.apply(p)),
                None => Observation::invalid(t, "scripted"),
            };
            engine.observe(&obs)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn alerts_only_after_their_condition_held_and_clear_after_the_hysteresis(
        script in prop::collection::vec(settled_pose(), 1..40),
        rate in prop::sample::select(vec![5u64, 10, 20]),
        seed in any::<u64>(),
    ) {
        let rules = Rules::builtin();
        let frames = frames(&script, rate);
        let per_frame = run_engine(&rules, &frames, seed);
        for id in TIMED {
            let reference = reference(&frames, id, rules.observations.max_gap);
            let mut active = false;
            for (i, events) in per_frame.iter().enumerate() {
                let (before, after) = reference[i];
                for event in events.iter().filter(|e| e.alert().id == id) {
                    match event {
                        AlertEvent::Raised { alert } | AlertEvent::Escalated { alert, .. } => {
                            let needed = step_time(&rules, id, alert.level);
                            let held = [before, after]
                                .iter()
                                .filter(|r| r.value == Some(true))
                                .map(|r| r.true_for)
                                .max()
                                .unwrap_or_default();
                            prop_assert!(
                                held >= needed,
                                "{id} level {} at {:?} after only {held:?} of {needed:?}",
                                alert.level, frames[i].0
                            );
                            active = true;
                        }
                        AlertEvent::Cleared { .. } => active = false,
                    }
                }
                if active && after.value == Some(false) {
                    prop_assert!(
                        after.false_for < rules.alerts.clear_after,
                        "{id} still active at {:?}, its condition false for {:?}",
                        frames[i].0, after.false_for
                    );
                }
            }
        }
    }

    #[test]
    fn levels_only_rise_until_an_alert_clears(
        script in prop::collection::vec(
            (prop::sample::select(vec![
                Pose::Attentive, Pose::OffRoad, Pose::Closed, Pose::Phone, Pose::NoFace,
                Pose::Invalid, Pose::Silence,
            ]), 50u64..5000),
            1..60,
        ),
        rate in prop::sample::select(vec![5u64, 10, 30]),
        seed in any::<u64>(),
        shuffle in prop::collection::vec(any::<bool>(), 0..64),
        speeds in prop::collection::vec(prop::option::of(0.0f32..80.0), 1..8),
    ) {
        let rules = Rules::builtin();
        let mut engine = PolicyEngine::new(rules);
        let mut jitter = Jitter(seed);
        let frames = frames(&script, rate);
        let mut levels: HashMap<AlertId, u8> = HashMap::new();
        let mut accepted = 0u64;
        let mut last: Option<Duration> = None;
        for (i, &(t, pose)) in frames.iter().enumerate() {
            // Now and then a stale or repeated timestamp.
            let t = if shuffle.get(i % 64).copied().unwrap_or(false) && i % 7 == 0 {
                t.saturating_sub(Duration::from_millis(150))
            } else {
                t
            };
            let mut obs = match pose.probabilities() {
                Some(p) => Observation::valid(t, jitter.apply(p)),
                None => Observation::invalid(t, "scripted"),
            };
            obs.vehicle_speed_kmh = speeds[i / 50 % speeds.len()];
            if last.is_none_or(|l| t > l) {
                accepted += 1;
                last = Some(t);
            }
            for event in engine.observe(&obs) {
                let id = event.alert().id;
                let level = event.alert().level;
                prop_assert!((1..=3).contains(&level));
                match event {
                    AlertEvent::Raised { .. } => {
                        prop_assert!(!levels.contains_key(&id), "{id} raised twice");
                        levels.insert(id, level);
                    }
                    AlertEvent::Escalated { from_level, .. } => {
                        let current = levels.get(&id).copied();
                        prop_assert_eq!(current, Some(from_level));
                        prop_assert!(level > from_level, "{} went from {} to {}", id, from_level, level);
                        levels.insert(id, level);
                    }
                    AlertEvent::Cleared { .. } => {
                        prop_assert_eq!(levels.remove(&id), Some(level), "{} cleared at another level", id);
                    }
                }
            }
            let mut active: Vec<(AlertId, u8)> =
                engine.active_alerts().iter().map(|a| (a.id, a.level)).collect();
            let mut expected: Vec<(AlertId, u8)> = levels.iter().map(|(k, v)| (*k, *v)).collect();
            active.sort();
            expected.sort();
            prop_assert_eq!(active, expected);
        }
        prop_assert_eq!(engine.stats().accepted, accepted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever a rules file says, parsing returns rules or an error, never a panic, and the
    /// rules it returns pass validation.
    #[test]
    fn mangled_rules_files_never_panic(
        start in 0usize..autoneural_policies::DEFAULT_RULES_TOML.len(),
        len in 0usize..40,
        insert in "[a-z0-9_.=\\[\\]{}\" -]{0,12}",
    ) {
        let text = autoneural_policies::DEFAULT_RULES_TOML;
        let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        let mangled = format!("{}{}{}", &text[..start], insert, &text[end..]);
        if let Ok(rules) = Rules::from_toml_str(&mangled) {
            prop_assert!(rules.validate().is_ok());
        }
    }

    /// Arbitrary observations (any numbers, any order) never panic the engine.
    #[test]
    fn arbitrary_observations_never_panic(
        observations in prop::collection::vec(
            (any::<u64>(), any::<bool>(), prop::collection::vec(prop::option::of(any::<f32>()), 8),
             prop::option::of(any::<f32>())),
            0..200,
        ),
    ) {
        let mut engine = PolicyEngine::new(Rules::builtin());
        for (nanos, valid, probabilities, speed) in observations {
            let t = Duration::from_nanos(nanos);
            let mut p = Probabilities::default();
            for (field, value) in autoneural_policies::Field::ALL.iter().zip(probabilities) {
                p.set(*field, value);
            }
            let mut obs = if valid {
                Observation::valid(t, p)
            } else {
                Observation::invalid(t, "x")
            };
            obs.vehicle_speed_kmh = speed;
            engine.observe(&obs);
            let state = engine.state();
            prop_assert!((0.0..=100.0).contains(&state.attentive_probability));
            prop_assert!((0.0..=100.0).contains(&state.distraction_level));
            prop_assert!((0.0..=100.0).contains(&state.fatigue_level));
        }
    }
}
