//! The D-Bus API: `org.autoneural.Cockpit1` at `/org/autoneural/Cockpit1` with the interfaces
//! `org.autoneural.Cockpit1` (driver state, alerts, questions) and
//! `org.autoneural.Cockpit1.Diagnostics` (latency, execution providers, degradation).
//! The committed introspection is `daemon/dbus/org.autoneural.Cockpit1.xml`.
//!
//! The publisher never takes the object server's interface locks: published values live behind a
//! short std mutex, and PropertiesChanged (one signal per observation, only the values that
//! changed) and the alert signals are emitted directly. So a slow `Ask` can never hold up the
//! safety path's publishing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, Variant, interface};

use crate::config::HmiConfig;
use crate::pipeline::Snapshot;
use crate::stages::{Alert, AlertEvent, Answer, DriverState, MonitoringState, StageErrorKind};
use crate::stats::{Stage, StageSummary};
use crate::vehicle::VehicleSignals;

pub const BUS_NAME: &str = "org.autoneural.Cockpit1";
pub const OBJECT_PATH: &str = "/org/autoneural/Cockpit1";
pub const INTERFACE: &str = "org.autoneural.Cockpit1";
pub const DIAGNOSTICS_INTERFACE: &str = "org.autoneural.Cockpit1.Diagnostics";
pub const VEHICLE_INTERFACE: &str = "org.autoneural.Cockpit1.Vehicle";

/// Errors of the methods, named `org.autoneural.Cockpit1.Error.*`.
#[derive(Debug, Clone, zbus::DBusError)]
#[zbus(prefix = "org.autoneural.Cockpit1.Error")]
pub enum CockpitError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The question is empty, too long or contains control characters.
    InvalidQuestion(String),
    /// This sender asked too often (limit per minute).
    RateLimited(String),
    /// Too many questions are waiting already.
    Busy(String),
    /// No camera frame or no model to answer from.
    Unavailable(String),
    /// No answer within the configured time.
    Timeout(String),
    /// The model failed.
    Failed(String),
    /// A vehicle signal out of its range (a speed below 0 or above 400 km/h, NaN).
    InvalidArgument(String),
}

/// Values published on the main interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub state: DriverState,
    pub description: String,
    pub alerts: Vec<Alert>,
    pub monitoring: MonitoringState,
    pub reason: String,
    pub last_observation_us: u64,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            state: DriverState::default(),
            description: String::new(),
            alerts: vec![],
            monitoring: MonitoringState::Starting,
            reason: "loading".into(),
            last_observation_us: 0,
        }
    }
}

/// Whole percent: PropertiesChanged fires on a visible change, not on noise in the last digit.
fn percent(v: f32) -> f64 {
    let v = f64::from(v);
    if v.is_finite() {
        v.clamp(0.0, 100.0).round()
    } else {
        0.0
    }
}

/// A D-Bus boolean has no "unknown": a value the policies do not know is published as false (so
/// missing data never reads as eyes on road or hands on the wheel).
fn known(v: Option<bool>) -> bool {
    v.unwrap_or(false)
}

type AlertTuple = (String, u32, String, u64);

fn alert_tuples(alerts: &[Alert]) -> Vec<AlertTuple> {
    alerts
        .iter()
        .map(|a| {
            (
                a.id.as_str().to_string(),
                a.level as u32,
                a.message.clone(),
                a.raised_at.as_micros() as u64,
            )
        })
        .collect()
}

/// An HMI request for the model.
#[derive(Debug, Clone, PartialEq)]
pub enum HmiRequest {
    Ask(String),
    Describe,
}

/// Starts an HMI request: the model job is queued now, the returned future yields the text, and
/// dropping it cancels the job.
pub type HmiRunner = Arc<dyn Fn(&HmiRequest) -> Answer + Send + Sync>;

/// What the diagnostics interface reads.
pub trait DiagnosticsSource: Send + Sync {
    fn latency(&self) -> Vec<StageSummary>;
    fn execution_providers(&self) -> Vec<(String, String)>;
    fn degradation(&self) -> (String, String);
    fn frames(&self) -> (u64, u64);
    fn budgets(&self) -> Vec<(Stage, Duration)>;
    fn record(&self, stage: Stage, d: Duration);
    /// The camera source's name and its epoch (0 for live cameras).
    fn source(&self) -> (String, u64);
}

/// Per-sender call counts over the last minute. Only accepted work is recorded (a call answered
/// `Busy` costs its sender nothing), and the table is bounded without ever refusing a new sender
/// because of others: when it is full, expired entries go first, then the sender whose last call is
/// oldest.
struct RateLimiter {
    per_minute: usize,
    calls: HashMap<String, VecDeque<Instant>>,
}

const MAX_SENDERS: usize = 1024;
const MINUTE: Duration = Duration::from_secs(60);

impl RateLimiter {
    fn new(per_minute: usize) -> Self {
        Self {
            per_minute,
            calls: HashMap::new(),
        }
    }

    /// Whether `sender` may make one more call now (records nothing).
    fn allow(&mut self, sender: &str, now: Instant) -> bool {
        let Some(q) = self.calls.get_mut(sender) else {
            return true;
        };
        while q.front().is_some_and(|t| now.duration_since(*t) >= MINUTE) {
            q.pop_front();
        }
        q.len() < self.per_minute
    }

    /// Counts an accepted call.
    fn record(&mut self, sender: &str, now: Instant) {
        if self.calls.len() >= MAX_SENDERS && !self.calls.contains_key(sender) {
            self.calls
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
            if self.calls.len() >= MAX_SENDERS {
                let oldest = self
                    .calls
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.calls.remove(&k);
                }
            }
        }
        self.calls
            .entry(sender.to_string())
            .or_default()
            .push_back(now);
    }
}

/// Checks a question before it may reach the model.
pub fn check_question(q: &str, max_chars: usize) -> Result<&str, CockpitError> {
    let trimmed = q.trim();
    if trimmed.is_empty() {
        return Err(CockpitError::InvalidQuestion(
            "the question is empty".into(),
        ));
    }
    let n = trimmed.chars().count();
    if n > max_chars {
        return Err(CockpitError::InvalidQuestion(format!(
            "the question has {n} characters; the limit is {max_chars}"
        )));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(CockpitError::InvalidQuestion(
            "the question contains control characters".into(),
        ));
    }
    Ok(trimmed)
}

/// The `org.autoneural.Cockpit1` object.
pub struct Cockpit {
    published: Arc<Mutex<Published>>,
    runner: HmiRunner,
    diagnostics: Arc<dyn DiagnosticsSource>,
    limits: HmiConfig,
    rate: Mutex<RateLimiter>,
    pending: Arc<Semaphore>,
    /// The Describe in flight and the last result: a Describe that arrives while one runs waits for
    /// it and shares its answer instead of superseding it.
    describing: tokio::sync::Mutex<Option<(Instant, Result<String, CockpitError>)>>,
}

impl Cockpit {
    pub fn new(
        published: Arc<Mutex<Published>>,
        runner: HmiRunner,
        diagnostics: Arc<dyn DiagnosticsSource>,
        limits: HmiConfig,
    ) -> Self {
        Self {
            published,
            rate: Mutex::new(RateLimiter::new(limits.rate_per_minute.get() as usize)),
            pending: Arc::new(Semaphore::new(limits.max_pending.get() as usize)),
            describing: tokio::sync::Mutex::new(None),
            runner,
            diagnostics,
            limits,
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Published) -> T) -> T {
        match self.published.lock() {
            Ok(p) => f(&p),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    async fn run(&self, header: &Header<'_>, request: HmiRequest) -> Result<String, CockpitError> {
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let allowed = self
            .rate
            .lock()
            .map(|mut r| r.allow(&sender, Instant::now()))
            .unwrap_or(true);
        if !allowed {
            return Err(CockpitError::RateLimited(format!(
                "more than {} questions per minute from {sender}",
                self.limits.rate_per_minute.get()
            )));
        }
        let permit = Arc::clone(&self.pending).try_acquire_owned().map_err(|_| {
            CockpitError::Busy(format!(
                "{} questions are already waiting; try again later",
                self.limits.max_pending.get()
            ))
        })?;
        if let Ok(mut r) = self.rate.lock() {
            r.record(&sender, Instant::now());
        }
        let started = Instant::now();
        // At the timeout the answer's future is dropped, which cancels the model job: a queued
        // question is skipped, a running one stops after its current token.
        let answer =
            tokio::time::timeout(self.limits.timeout_ms.ms(), (self.runner)(&request)).await;
        drop(permit);
        let result = match answer {
            Err(_) => Err(CockpitError::Timeout(format!(
                "no answer within {} ms",
                self.limits.timeout_ms.get()
            ))),
            Ok(Err(e)) => Err(match e.kind {
                StageErrorKind::Unavailable => CockpitError::Unavailable(e.message),
                StageErrorKind::InvalidRequest => CockpitError::InvalidQuestion(e.message),
                StageErrorKind::Failed => CockpitError::Failed(e.message),
            }),
            Ok(Ok(text)) => Ok(text),
        };
        self.diagnostics.record(Stage::HmiAnswer, started.elapsed());
        result
    }
}

#[interface(name = "org.autoneural.Cockpit1")]
impl Cockpit {
    /// Answers a free-text question about the cabin from the newest camera frame.
    #[zbus(out_args("answer"))]
    async fn ask(
        &self,
        #[zbus(header)] header: Header<'_>,
        question: &str,
    ) -> Result<String, CockpitError> {
        let q = check_question(question, self.limits.max_question_chars.get() as usize)?;
        self.run(&header, HmiRequest::Ask(q.to_string())).await
    }

    /// Describes the cabin in one sentence from the newest camera frame.
    #[zbus(out_args("text"))]
    async fn describe(&self, #[zbus(header)] header: Header<'_>) -> Result<String, CockpitError> {
        let asked = Instant::now();
        let mut last = self.describing.lock().await;
        if let Some((done, result)) = &*last
            && *done >= asked
        {
            // A Describe finished while this one waited for it: the same frame, the same answer.
            return result.clone();
        }
        let result = self.run(&header, HmiRequest::Describe).await;
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Vehicle.Driver.IsEyesOnRoad
    #[zbus(property)]
    fn is_eyes_on_road(&self) -> bool {
        self.read(|p| known(p.state.is_eyes_on_road))
    }

    /// Vehicle.Driver.AttentiveProbability, percent 0-100.
    #[zbus(property)]
    fn attentive_probability(&self) -> f64 {
        self.read(|p| percent(p.state.attentive_probability))
    }

    /// Vehicle.Driver.DistractionLevel, percent 0-100.
    #[zbus(property)]
    fn distraction_level(&self) -> f64 {
        self.read(|p| percent(p.state.distraction_level))
    }

    /// Vehicle.Driver.FatigueLevel, percent 0-100.
    #[zbus(property)]
    fn fatigue_level(&self) -> f64 {
        self.read(|p| percent(p.state.fatigue_level))
    }

    /// Vehicle.Driver.IsHandsOnWheel
    #[zbus(property)]
    fn is_hands_on_wheel(&self) -> bool {
        self.read(|p| known(p.state.is_hands_on_wheel))
    }

    #[zbus(property)]
    fn phone_in_use(&self) -> bool {
        self.read(|p| known(p.state.phone_in_use))
    }

    #[zbus(property)]
    fn eyes_closed(&self) -> bool {
        self.read(|p| known(p.state.eyes_closed))
    }

    #[zbus(property)]
    fn face_visible(&self) -> bool {
        self.read(|p| known(p.state.face_visible))
    }

    /// The latest one-sentence cabin description (refreshed at a low rate).
    #[zbus(property)]
    fn description(&self) -> String {
        self.read(|p| p.description.clone())
    }

    /// Active alerts: (id, level 1-3, message, since in CLOCK_MONOTONIC microseconds).
    #[zbus(property)]
    fn active_alerts(&self) -> Vec<AlertTuple> {
        self.read(|p| alert_tuples(&p.alerts))
    }

    /// starting / active / degraded / unavailable
    #[zbus(property)]
    fn monitoring_state(&self) -> String {
        self.read(|p| p.monitoring.as_str().to_string())
    }

    /// Why MonitoringState is not `active` ("" when it is).
    #[zbus(property)]
    fn monitoring_reason(&self) -> String {
        self.read(|p| p.reason.clone())
    }

    /// Capture time of the latest observation, CLOCK_MONOTONIC microseconds. Changes with every
    /// frame, so it is read, not signalled.
    #[zbus(property(emits_changed_signal = "false"))]
    fn last_observation(&self) -> u64 {
        self.read(|p| p.last_observation_us)
    }

    /// An alert was raised or escalated.
    #[zbus(signal)]
    pub async fn alert_raised(
        emitter: &SignalEmitter<'_>,
        id: &str,
        level: u32,
        message: &str,
        timestamp: u64,
    ) -> zbus::Result<()>;

    /// An alert's condition has been false for its hysteresis time.
    #[zbus(signal)]
    pub async fn alert_cleared(
        emitter: &SignalEmitter<'_>,
        id: &str,
        timestamp: u64,
    ) -> zbus::Result<()>;
}

/// The `org.autoneural.Cockpit1.Diagnostics` object.
pub struct Diagnostics {
    source: Arc<dyn DiagnosticsSource>,
}

impl Diagnostics {
    pub fn new(source: Arc<dyn DiagnosticsSource>) -> Self {
        Self { source }
    }
}

#[interface(name = "org.autoneural.Cockpit1.Diagnostics")]
impl Diagnostics {
    /// Per stage: (name, p50 ms, p99 ms, samples ever taken), over the recent window.
    #[zbus(property(emits_changed_signal = "false"))]
    fn latency(&self) -> Vec<(String, f64, f64, u64)> {
        self.source
            .latency()
            .into_iter()
            .map(|s| (s.stage.name().to_string(), s.p50_ms, s.p99_ms, s.samples))
            .collect()
    }

    /// Stage budgets in milliseconds.
    #[zbus(property(emits_changed_signal = "const"))]
    fn budgets(&self) -> HashMap<String, f64> {
        self.source
            .budgets()
            .into_iter()
            .map(|(s, d)| (s.name().to_string(), d.as_secs_f64() * 1000.0))
            .collect()
    }

    /// Graph name -> execution provider running it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn execution_providers(&self) -> HashMap<String, String> {
        self.source.execution_providers().into_iter().collect()
    }

    /// full / no-description / reduced-rate
    #[zbus(property)]
    fn degradation_level(&self) -> String {
        self.source.degradation().0
    }

    #[zbus(property)]
    fn degradation_reason(&self) -> String {
        self.source.degradation().1
    }

    /// The camera source ("/dev/video0 GREY 1280x800 @ 15 fps", "synthetic scenario ...").
    #[zbus(property(emits_changed_signal = "const"))]
    fn source(&self) -> String {
        self.source.source().0
    }

    /// For synthetic and recorded sources: CLOCK_MONOTONIC microseconds of the stream's time
    /// zero, so that timestamps map back to scenario time; 0 for a live camera.
    #[zbus(property(emits_changed_signal = "const"))]
    fn source_epoch(&self) -> u64 {
        self.source.source().1
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn frames_processed(&self) -> u64 {
        self.source.frames().0
    }

    /// Frames the camera delivered that were never processed (latest frame wins).
    #[zbus(property(emits_changed_signal = "false"))]
    fn frames_dropped(&self) -> u64 {
        self.source.frames().1
    }
}

/// The `org.autoneural.Cockpit1.Vehicle` object: the vehicle gateway reports what the camera
/// cannot see. The bus policy lets only the `autoneural-vehicle` group call it.
pub struct Vehicle {
    signals: Arc<VehicleSignals>,
}

impl Vehicle {
    pub fn new(signals: Arc<VehicleSignals>) -> Self {
        Self { signals }
    }
}

#[interface(name = "org.autoneural.Cockpit1.Vehicle")]
impl Vehicle {
    /// The vehicle speed in km/h (0..=400). Report it at least every `vehicle.speed_max_age_ms`:
    /// an older report counts as unknown, and speed-gated rules then run as if driving.
    async fn set_speed(&self, speed_kmh: f64) -> Result<(), CockpitError> {
        self.signals
            .set_speed(speed_kmh, crate::stages::monotonic_now())
            .map_err(|e| CockpitError::InvalidArgument(e.to_string()))
    }

    /// The speed the daemon uses now, km/h; -1 when no fresh report exists.
    #[zbus(property(emits_changed_signal = "false"))]
    fn speed(&self) -> f64 {
        self.signals
            .at(crate::stages::monotonic_now())
            .speed_kmh
            .map_or(-1.0, f64::from)
    }
}

/// Publishes one snapshot: updates the values, emits one PropertiesChanged with what changed, then
/// the alert signals in order.
pub async fn publish(
    conn: &Connection,
    published: &Mutex<Published>,
    last_degradation: &mut (String, String),
    degradation: (String, String),
    snap: &Snapshot,
) -> zbus::Result<()> {
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
    let changes: Vec<(&'static str, Variant<'static>)> = {
        let mut p = match published.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = p.clone();
        if snap.valid {
            p.state = snap.state.clone();
        } else {
            // Missing data is not attentive driving: keep the last values but never claim eyes on road.
            p.state.is_eyes_on_road = None;
            p.state.attentive_probability = 0.0;
            p.state.face_visible = snap.state.face_visible;
        }
        p.alerts = snap.active_alerts.clone();
        p.monitoring = snap.monitoring;
        p.reason = snap.reason.clone();
        p.last_observation_us = snap.observation_time.as_micros() as u64;
        property_changes(&old, &p)
    };
    if !changes.is_empty() {
        let map: HashMap<&str, Variant<'_>> = changes.into_iter().collect();
        zbus::fdo::Properties::properties_changed(
            &emitter,
            INTERFACE.try_into()?,
            map,
            (&[][..]).into(),
        )
        .await?;
    }
    if degradation != *last_degradation {
        let mut map: HashMap<&str, Variant<'_>> = HashMap::new();
        if degradation.0 != last_degradation.0 {
            map.insert("DegradationLevel", Variant::from(degradation.0.clone()));
        }
        if degradation.1 != last_degradation.1 {
            map.insert("DegradationReason", Variant::from(degradation.1.clone()));
        }
        zbus::fdo::Properties::properties_changed(
            &emitter,
            DIAGNOSTICS_INTERFACE.try_into()?,
            map,
            (&[][..]).into(),
        )
        .await?;
        *last_degradation = degradation;
    }
    for event in &snap.events {
        let (alert, at) = (event.alert(), event.at(snap.observation_time));
        match event {
            // An escalation is an AlertRaised with the higher level.
            AlertEvent::Raised { .. } | AlertEvent::Escalated { .. } => {
                Cockpit::alert_raised(
                    &emitter,
                    alert.id.as_str(),
                    alert.level as u32,
                    &alert.message,
                    at.as_micros() as u64,
                )
                .await?
            }
            AlertEvent::Cleared { .. } => {
                Cockpit::alert_cleared(&emitter, alert.id.as_str(), at.as_micros() as u64).await?
            }
        }
    }
    Ok(())
}

/// Sets the description and signals it when it changed.
pub async fn publish_description(
    conn: &Connection,
    published: &Mutex<Published>,
    text: String,
) -> zbus::Result<()> {
    let changed = match published.lock() {
        Ok(mut p) if p.description != text => {
            p.description = text.clone();
            true
        }
        _ => false,
    };
    if changed {
        let emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
        let map: HashMap<&str, Variant<'_>> =
            [("Description", Variant::from(text))].into_iter().collect();
        zbus::fdo::Properties::properties_changed(
            &emitter,
            INTERFACE.try_into()?,
            map,
            (&[][..]).into(),
        )
        .await?;
    }
    Ok(())
}

/// The signalled properties whose published value differs between `old` and `new`.
pub fn property_changes(old: &Published, new: &Published) -> Vec<(&'static str, Variant<'static>)> {
    let mut out: Vec<(&'static str, Variant<'static>)> = vec![];
    let (o, n) = (&old.state, &new.state);
    let mut b = |name, a: Option<bool>, b: Option<bool>| {
        let (a, b) = (known(a), known(b));
        if a != b {
            out.push((name, Variant::from(b)));
        }
    };
    b("IsEyesOnRoad", o.is_eyes_on_road, n.is_eyes_on_road);
    b("IsHandsOnWheel", o.is_hands_on_wheel, n.is_hands_on_wheel);
    b("PhoneInUse", o.phone_in_use, n.phone_in_use);
    b("EyesClosed", o.eyes_closed, n.eyes_closed);
    b("FaceVisible", o.face_visible, n.face_visible);
    for (name, a, b) in [
        (
            "AttentiveProbability",
            o.attentive_probability,
            n.attentive_probability,
        ),
        ("DistractionLevel", o.distraction_level, n.distraction_level),
        ("FatigueLevel", o.fatigue_level, n.fatigue_level),
    ] {
        if percent(a) != percent(b) {
            out.push((name, Variant::from(percent(b))));
        }
    }
    if old.description != new.description {
        out.push(("Description", Variant::from(new.description.clone())));
    }
    if old.alerts != new.alerts {
        out.push(("ActiveAlerts", Variant::from(alert_tuples(&new.alerts))));
    }
    if old.monitoring != new.monitoring {
        out.push((
            "MonitoringState",
            Variant::from(new.monitoring.as_str().to_string()),
        ));
    }
    if old.reason != new.reason {
        out.push(("MonitoringReason", Variant::from(new.reason.clone())));
    }
    out
}

/// The two interfaces of the service out of an object's introspection XML, re-indented, as in
/// the committed `daemon/dbus/org.autoneural.Cockpit1.xml` (the standard interfaces left out).
pub fn our_interfaces(xml: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node name=\"/org/autoneural/Cockpit1\">\n",
    );
    for name in [INTERFACE, DIAGNOSTICS_INTERFACE, VEHICLE_INTERFACE] {
        let open = format!("<interface name=\"{name}\">");
        let Some(start) = xml.find(&open) else {
            continue;
        };
        let Some(len) = xml[start..].find("</interface>") else {
            continue;
        };
        let mut depth = 1usize;
        for line in xml[start..start + len + "</interface>".len()].lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let closing = line.starts_with("</");
            if closing {
                depth = depth.saturating_sub(1);
            }
            out.push_str(&"  ".repeat(depth));
            out.push_str(line);
            out.push('\n');
            let opening = line.starts_with('<')
                && !closing
                && !line.starts_with("<!--")
                && !line.ends_with("/>")
                && !line.contains("</");
            if opening {
                depth += 1;
            }
        }
    }
    out.push_str("</node>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_checked() {
        assert!(matches!(
            check_question("  ", 10),
            Err(CockpitError::InvalidQuestion(_))
        ));
        assert!(matches!(
            check_question("abcdefghijk", 10),
            Err(CockpitError::InvalidQuestion(_))
        ));
        assert!(matches!(
            check_question("a\u{7}b", 10),
            Err(CockpitError::InvalidQuestion(_))
        ));
        assert_eq!(
            check_question(" Is the belt on? ", 20).unwrap(),
            "Is the belt on?"
        );
        // Characters, not bytes, count.
        assert!(check_question("ééééé", 5).is_ok());
    }

    fn call(r: &mut RateLimiter, sender: &str, t: Instant) -> bool {
        let ok = r.allow(sender, t);
        if ok {
            r.record(sender, t);
        }
        ok
    }

    #[test]
    fn rate_limit_is_per_sender_and_per_minute() {
        let mut r = RateLimiter::new(2);
        let t = Instant::now();
        assert!(call(&mut r, ":1.1", t));
        assert!(call(&mut r, ":1.1", t));
        assert!(!call(&mut r, ":1.1", t));
        assert!(call(&mut r, ":1.2", t));
        assert!(call(&mut r, ":1.1", t + Duration::from_secs(61)));
        // A call that was not accepted (Busy) is never recorded, so it costs nothing.
        assert!(r.allow(":1.3", t) && r.allow(":1.3", t) && r.allow(":1.3", t));
    }

    #[test]
    fn a_full_sender_table_never_refuses_a_new_sender() {
        let mut r = RateLimiter::new(2);
        let t = Instant::now();
        for i in 0..MAX_SENDERS + 100 {
            assert!(call(&mut r, &format!(":1.{i}"), t), "sender {i}");
        }
        assert!(r.calls.len() <= MAX_SENDERS);
        assert!(call(&mut r, ":9.9", t + Duration::from_secs(1)));
        // The sender just seen keeps its count.
        assert!(call(&mut r, ":9.9", t + Duration::from_secs(1)));
        assert!(!call(&mut r, ":9.9", t + Duration::from_secs(1)));
    }

    #[test]
    fn only_changed_values_are_signalled() {
        let old = Published::default();
        let mut new = old.clone();
        assert!(property_changes(&old, &new).is_empty());
        new.state.attentive_probability = 0.3; // rounds to the same whole percent
        new.last_observation_us = 42; // read, not signalled
        assert!(property_changes(&old, &new).is_empty());
        new.state.phone_in_use = Some(true);
        new.monitoring = MonitoringState::Active;
        let names: Vec<&str> = property_changes(&old, &new)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, ["PhoneInUse", "MonitoringState"]);
    }
}
