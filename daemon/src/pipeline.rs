//! The safety path: one thread takes the newest frame, runs the safety probes (highest priority in
//! the inference queue), feeds the observation to the policies and hands the result to the D-Bus
//! publisher through a small bounded channel. Frames that arrive while a frame is being processed
//! are dropped by the source (latest frame wins); nothing here can grow without bound.
//!
//! Without frames the thread keeps producing *invalid* observations (every `TICK`; for a camera
//! that is merely quiet, once it has delivered nothing for the frame timeout, counted from its last
//! delivery — `FrameFeed::last_delivery` — not from the last frame processed), so the
//! policies' clock keeps running (monitoring-unavailable after 10 s) and the watchdog sees a
//! pipeline that is alive but blind — which is different from a stalled pipeline.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, info, warn};
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Governor, Level};
use crate::shutdown::{Done, ShutdownSignal};
use crate::stages::{
    Alert, AlertEvent, Captured, DriverState, FrameFeed, MonitoringState, Perception, Policy,
    SourceEvent, invalid_observation, monotonic_now, valid_observation,
};
use crate::stats::{LatencyStats, Stage};
use crate::vehicle::VehicleSignals;

/// How often the thread looks up from waiting (stop flag, commands, missing frames).
const TICK: Duration = Duration::from_millis(200);

/// Everything the publisher needs for one observation.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The policies' state after this observation.
    pub state: DriverState,
    pub events: Vec<AlertEvent>,
    pub active_alerts: Vec<Alert>,
    pub observation_time: Duration,
    /// The frame's capture time, for valid observations.
    pub captured_at: Option<Duration>,
    pub valid: bool,
    /// `MonitoringState` on D-Bus: the policies' view, made worse by an inference error or a
    /// reduced budget level (`reason` says why it is not active).
    pub monitoring: MonitoringState,
    pub reason: String,
    pub level: Level,
}

pub enum Update {
    Snapshot(Box<Snapshot>),
    /// A finite source ended and the configuration says to exit.
    Ended,
}

/// Requests from the async side to the pipeline thread.
pub enum Command {
    ReloadRules(oneshot::Sender<Result<String, String>>),
}

/// What the pipeline thread is doing, for the shutdown message when it does not stop in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Activity {
    Starting,
    WaitingForFrame,
    InModelCall,
    Publishing,
    ClosingCamera,
    Stopped,
}

impl Activity {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::WaitingForFrame => "waiting for a camera frame",
            Self::InModelCall => "in a model call",
            Self::Publishing => "handing an observation to the publisher",
            Self::ClosingCamera => "closing the camera",
            Self::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        [
            Self::Starting,
            Self::WaitingForFrame,
            Self::InModelCall,
            Self::Publishing,
            Self::ClosingCamera,
            Self::Stopped,
        ]
        .get(usize::from(v))
        .copied()
        .unwrap_or(Self::Stopped)
    }
}

/// State shared by the pipeline thread, the publisher and the D-Bus objects.
pub struct Shared<F> {
    pub latest: Mutex<Option<Captured<F>>>,
    pub stats: Mutex<LatencyStats>,
    pub governor: Mutex<Governor>,
    pub frames_processed: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub source_dropped: AtomicU64,
    /// The vehicle gateway's reports (written by D-Bus, read once per frame).
    pub vehicle: Arc<VehicleSignals>,
    activity: AtomicU8,
}

impl<F> Shared<F> {
    pub fn new(governor: Governor, stats_window: usize, vehicle: Arc<VehicleSignals>) -> Self {
        Self {
            latest: Mutex::new(None),
            stats: Mutex::new(LatencyStats::new(stats_window)),
            governor: Mutex::new(governor),
            frames_processed: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            source_dropped: AtomicU64::new(0),
            vehicle,
            activity: AtomicU8::new(Activity::Starting as u8),
        }
    }

    pub fn activity(&self) -> Activity {
        Activity::from_u8(self.activity.load(Ordering::Relaxed))
    }

    fn set_activity(&self, a: Activity) {
        self.activity.store(a as u8, Ordering::Relaxed);
    }

    /// Records a stage sample for the statistics and the budget governor.
    pub fn record(&self, stage: Stage, d: Duration) {
        if let Ok(mut s) = self.stats.lock() {
            s.record(stage, d);
        }
        if let Ok(mut g) = self.governor.lock() {
            g.record(stage, d);
        }
    }

    pub fn level(&self) -> (Level, String) {
        self.governor
            .lock()
            .map(|g| (g.level(), g.reason().to_string()))
            .unwrap_or((Level::Full, String::new()))
    }

    pub fn latest_frame(&self) -> Option<Captured<F>> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }
}

pub struct PipelineConfig {
    pub fps: u32,
    pub frame_timeout: Duration,
    pub exit_at_end: bool,
}

pub struct Pipeline<S: FrameFeed, P: Perception<Frame = S::Frame>, L: Policy> {
    pub source: S,
    pub perception: Arc<P>,
    pub policy: L,
    pub shared: Arc<Shared<S::Frame>>,
    pub config: PipelineConfig,
    pub updates: mpsc::Sender<Update>,
    pub commands: std_mpsc::Receiver<Command>,
    /// Events of a rules reload, published with the next observation.
    pub pending_events: Vec<AlertEvent>,
    /// The daemon's shutdown, checked between frames (at least every `TICK`).
    pub shutdown: ShutdownSignal,
}

impl<S: FrameFeed, P: Perception<Frame = S::Frame>, L: Policy> Pipeline<S, P, L> {
    /// Runs until the shutdown is triggered, the updates channel closes, or a finite source ends;
    /// then closes the camera (the source is dropped with the pipeline) and drops `done`, which
    /// tells the service's shutdown join that this thread has ended.
    pub fn run(mut self, done: Done) {
        self.run_frames();
        self.shared.set_activity(Activity::ClosingCamera);
        let shared = Arc::clone(&self.shared);
        drop(self);
        shared.set_activity(Activity::Stopped);
        drop(done);
    }

    fn run_frames(&mut self) {
        let period = Duration::from_secs_f64(1.0 / self.config.fps.max(1) as f64);
        let started = monotonic_now();
        let mut last_frame_at = started;
        let mut last_start = Duration::ZERO;
        let mut first_valid = false;
        let mut ended = false;
        info!("pipeline: started ({} fps requested)", self.config.fps);
        while !self.shutdown.is_triggered() {
            self.handle_commands();
            let (level, _) = self.shared.level();
            // Reduced rate: wait out the rest of the longer period; the source keeps only the
            // newest frame meanwhile.
            let next_allowed = last_start + period * level.frame_divisor();
            let now = monotonic_now();
            if level.frame_divisor() > 1 && now < next_allowed {
                std::thread::sleep((next_allowed - now).min(TICK));
                continue;
            }
            self.shared.set_activity(Activity::WaitingForFrame);
            let event = if ended {
                std::thread::sleep(TICK);
                SourceEvent::Ended
            } else {
                self.source.next(TICK)
            };
            self.shared
                .source_dropped
                .store(self.source.dropped(), Ordering::Relaxed);
            let problem = match event {
                SourceEvent::Frame(captured) => {
                    last_frame_at = monotonic_now();
                    last_start = last_frame_at;
                    let valid = self.process(captured, &mut first_valid);
                    if !valid.is_ok_and(|sent| sent) {
                        return;
                    }
                    continue;
                }
                SourceEvent::Timeout => {
                    // Silence is the camera's, since its last delivery (a frame discarded as
                    // stale or superseded counts): not since this thread last took a frame, which
                    // would count the time spent on that frame (probe rounds of seconds on a slow
                    // machine) as a lost camera.
                    let delivered = self
                        .source
                        .last_delivery()
                        .map_or(started, |t| t.max(started));
                    let silent = monotonic_now().saturating_sub(delivered);
                    if silent < self.config.frame_timeout {
                        continue;
                    }
                    format!("camera: no frame for {} ms", silent.as_millis())
                }
                SourceEvent::Failed(e) => {
                    // A source that fails at once must not make this a busy loop.
                    let silent = monotonic_now().saturating_sub(last_frame_at);
                    if silent < TICK {
                        std::thread::sleep(TICK - silent);
                    }
                    format!("camera: {e}")
                }
                SourceEvent::Ended => {
                    if self.config.exit_at_end {
                        info!("pipeline: the source ended; exiting as configured");
                        let _ = self.updates.blocking_send(Update::Ended);
                        return;
                    }
                    if !ended {
                        warn!("pipeline: the camera stream ended");
                    }
                    ended = true;
                    "camera: stream ended".to_string()
                }
            };
            if !self.publish_invalid(problem) {
                return;
            }
        }
        info!("pipeline: stopped");
    }

    fn handle_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::ReloadRules(reply) => {
                    let result = match self.policy.reload() {
                        Ok((summary, events)) => {
                            self.pending_events.extend(events);
                            Ok(summary)
                        }
                        Err(e) => Err(e.message),
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Probes one frame and publishes its observation. Err/Ok(false): the publisher is gone.
    fn process(
        &mut self,
        captured: Captured<S::Frame>,
        first_valid: &mut bool,
    ) -> Result<bool, ()> {
        if let Ok(mut latest) = self.shared.latest.lock() {
            *latest = Some(captured.clone());
        }
        let vehicle = self.shared.vehicle.at(captured.timestamp);
        self.shared.set_activity(Activity::InModelCall);
        let probed = self.perception.probe(&captured.frame, vehicle);
        let (observation, inference_error) = match probed {
            Ok(p) => {
                for (stage, d) in [
                    (Stage::Vision, p.vision),
                    (Stage::Probes, p.probes),
                    (Stage::Face, p.face),
                ] {
                    if let Some(d) = d {
                        self.shared.record(stage, d);
                    }
                }
                (
                    valid_observation(captured.timestamp, &p.answers, vehicle),
                    None,
                )
            }
            Err(e) => {
                warn!(
                    "pipeline: inference failed on frame {}: {e}",
                    captured.sequence
                );
                let reason = format!("inference: {e}");
                let obs = invalid_observation(captured.timestamp, reason.clone(), vehicle);
                (obs, Some(reason))
            }
        };
        let t = monotonic_now();
        let (state, mut events) = self.policy.update(&observation);
        events.splice(0..0, self.pending_events.drain(..));
        self.shared
            .record(Stage::Policies, monotonic_now().saturating_sub(t));
        self.shared.frames_processed.fetch_add(1, Ordering::Relaxed);
        let change = self
            .shared
            .governor
            .lock()
            .ok()
            .and_then(|mut g| g.decide());
        if let Some(c) = &change {
            if c.to > c.from {
                warn!("budget: degrading {} -> {}: {}", c.from, c.to, c.reason);
            } else {
                info!("budget: recovering {} -> {}: {}", c.from, c.to, c.reason);
            }
        }
        let (level, level_reason) = self.shared.level();
        // The observation is valid unless inference failed, so the policies' Degraded means a
        // face they do not see (or a gap in the data).
        let (monitoring, reason) = match (inference_error, state.monitoring) {
            (Some(e), _) => (MonitoringState::Unavailable, e),
            (None, MonitoringState::Unavailable) => (
                MonitoringState::Unavailable,
                "no valid observation of the driver for the monitoring-unavailable time".into(),
            ),
            (None, MonitoringState::Degraded) => (
                MonitoringState::Degraded,
                "the driver's face is not visible".into(),
            ),
            (None, MonitoringState::Active | MonitoringState::Starting) if level > Level::Full => {
                (MonitoringState::Degraded, level_reason)
            }
            (None, MonitoringState::Active | MonitoringState::Starting) => {
                (MonitoringState::Active, String::new())
            }
        };
        if !*first_valid && monitoring != MonitoringState::Unavailable {
            *first_valid = true;
            info!(
                "pipeline: first observation from frame {}",
                captured.sequence
            );
        }
        debug!(
            "pipeline: frame {} -> {} alert events",
            captured.sequence,
            events.len()
        );
        let snapshot = Snapshot {
            state,
            events,
            active_alerts: self.policy.active_alerts(),
            observation_time: observation.timestamp,
            captured_at: observation.is_valid().then_some(captured.timestamp),
            valid: observation.is_valid(),
            monitoring,
            reason,
            level,
        };
        self.shared.set_activity(Activity::Publishing);
        Ok(self
            .updates
            .blocking_send(Update::Snapshot(Box::new(snapshot)))
            .is_ok())
    }

    /// An observation without data; false when the publisher is gone.
    fn publish_invalid(&mut self, reason: String) -> bool {
        let now = monotonic_now();
        let observation = invalid_observation(now, reason.clone(), self.shared.vehicle.at(now));
        let (state, mut events) = self.policy.update(&observation);
        events.splice(0..0, self.pending_events.drain(..));
        let (level, _) = self.shared.level();
        let snapshot = Snapshot {
            state,
            events,
            active_alerts: self.policy.active_alerts(),
            observation_time: observation.timestamp,
            captured_at: None,
            valid: false,
            monitoring: MonitoringState::Unavailable,
            reason,
            level,
        };
        self.shared.set_activity(Activity::Publishing);
        self.updates
            .blocking_send(Update::Snapshot(Box::new(snapshot)))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline thread alone, with test doubles for its three stages (no D-Bus; the service's
    //! tests run it with the publisher on a private bus).
    use std::time::Instant;

    use super::*;
    use crate::config::BudgetsConfig;
    use crate::shutdown::Shutdown;
    use crate::stages::{Answer, Observation, Perceived, StageError};
    use crate::vehicle::VehicleState;

    /// A camera delivering frames all the time (until `silent_after` from its start, if set), as
    /// a capture thread fills its slot. It hands the pipeline every other frame only: the take
    /// after a frame finds nothing fresh within its timeout, as when the frames that came while
    /// the pipeline was busy were discarded as stale (a renderer whose stamps lag behind the
    /// clock) — the camera is not silent for that.
    struct Camera {
        start: Duration,
        silent_after: Option<Duration>,
        stale_next: bool,
        sequence: u64,
    }

    impl Camera {
        fn new(silent_after: Option<Duration>) -> Self {
            Self {
                start: monotonic_now(),
                silent_after,
                stale_next: false,
                sequence: 0,
            }
        }

        /// How long the camera has delivered frames.
        fn delivering_for(&self) -> Duration {
            let running = monotonic_now().saturating_sub(self.start);
            self.silent_after.map_or(running, |s| running.min(s))
        }

        fn silent(&self) -> bool {
            self.silent_after
                .is_some_and(|s| monotonic_now().saturating_sub(self.start) >= s)
        }
    }

    impl FrameFeed for Camera {
        type Frame = u64;
        fn next(&mut self, timeout: Duration) -> SourceEvent<u64> {
            if self.silent() || std::mem::take(&mut self.stale_next) {
                std::thread::sleep(timeout);
                return SourceEvent::Timeout;
            }
            self.stale_next = true;
            self.sequence += 1;
            SourceEvent::Frame(Captured {
                frame: Arc::new(self.sequence),
                timestamp: monotonic_now(),
                sequence: self.sequence,
            })
        }
        fn dropped(&self) -> u64 {
            0
        }
        fn last_delivery(&self) -> Option<Duration> {
            // A camera silent from the start never delivered anything.
            (self.silent_after != Some(Duration::ZERO)).then(|| self.start + self.delivering_for())
        }
        fn describe(&self) -> String {
            "test camera".into()
        }
    }

    /// A model that takes `0` for the probes of a frame (a slow machine).
    struct Slow(Duration);

    impl Perception for Slow {
        type Frame = u64;
        fn probe(&self, _: &u64, _: VehicleState) -> Result<Perceived, StageError> {
            std::thread::sleep(self.0);
            Ok(Perceived {
                answers: vec![],
                vision: None,
                probes: None,
                face: None,
            })
        }
        fn describe(&self, _: &u64, _: usize) -> Answer {
            Box::pin(std::future::ready(Ok(String::new())))
        }
        fn ask(&self, _: &u64, _: &str, _: usize) -> Answer {
            Box::pin(std::future::ready(Ok(String::new())))
        }
        fn execution_providers(&self) -> Vec<(String, String)> {
            vec![]
        }
    }

    struct NoRules;

    impl Policy for NoRules {
        fn update(&mut self, _: &Observation) -> (DriverState, Vec<AlertEvent>) {
            (DriverState::default(), vec![])
        }
        fn active_alerts(&self) -> Vec<Alert> {
            vec![]
        }
        fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError> {
            Err(StageError::new("test rules cannot be reloaded"))
        }
    }

    /// Runs the pipeline on `camera` with a model taking `busy` per frame, collecting its
    /// snapshots until `enough` of them; then stops it.
    fn run(
        camera: Camera,
        busy: Duration,
        frame_timeout: Duration,
        enough: impl Fn(&[Snapshot]) -> bool,
    ) -> Vec<Snapshot> {
        let shutdown = Shutdown::new();
        let (signal, done) = shutdown.subscribe();
        let (updates, mut received) = mpsc::channel(4);
        let (_commands, commands) = std_mpsc::channel();
        let vehicle = Arc::new(VehicleSignals::new(Duration::from_secs(1)));
        let pipeline = Pipeline {
            source: camera,
            perception: Arc::new(Slow(busy)),
            policy: NoRules,
            shared: Arc::new(Shared::new(
                Governor::new(&BudgetsConfig::default()),
                16,
                vehicle,
            )),
            config: PipelineConfig {
                fps: 10,
                frame_timeout,
                exit_at_end: false,
            },
            updates,
            commands,
            pending_events: vec![],
            shutdown: signal,
        };
        let thread = std::thread::spawn(move || pipeline.run(done));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut snapshots = vec![];
        while !enough(&snapshots) {
            assert!(Instant::now() < deadline, "only {snapshots:#?}");
            match received.try_recv() {
                Ok(Update::Snapshot(s)) => snapshots.push(*s),
                Ok(Update::Ended) => panic!("the pipeline ended"),
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(mpsc::error::TryRecvError::Disconnected) => panic!("the pipeline stopped"),
            }
        }
        shutdown.trigger();
        drop(received);
        thread.join().expect("the pipeline thread panicked");
        snapshots
    }

    fn no_frame(s: &Snapshot) -> bool {
        !s.valid && s.reason.starts_with("camera: no frame for ")
    }

    fn valid(snapshots: &[Snapshot]) -> usize {
        snapshots.iter().filter(|s| s.valid).count()
    }

    #[test]
    fn a_camera_that_keeps_delivering_is_not_silent_while_the_model_is_slower_than_the_timeout() {
        // Each frame takes 2.5 frame timeouts; the take after it finds no fresh frame.
        let frame_timeout = Duration::from_millis(400);
        let snapshots = run(
            Camera::new(None),
            Duration::from_millis(1000),
            frame_timeout,
            |s| valid(s) >= 3,
        );
        let silent: Vec<&Snapshot> = snapshots.iter().filter(|s| no_frame(s)).collect();
        assert!(
            silent.is_empty(),
            "the camera delivered all along: {silent:#?}"
        );
    }

    #[test]
    fn a_camera_that_goes_silent_is_reported_with_its_silence_even_while_the_model_is_slow() {
        let frame_timeout = Duration::from_millis(400);
        let snapshots = run(
            Camera::new(Some(Duration::from_millis(1500))),
            Duration::from_millis(1000),
            frame_timeout,
            |s| s.iter().any(no_frame),
        );
        assert!(valid(&snapshots) >= 1, "{snapshots:#?}");
        let reported = snapshots.iter().find(|s| no_frame(s)).map(|s| &s.reason);
        let silent_ms: u128 = reported
            .and_then(|r| r.strip_prefix("camera: no frame for "))
            .and_then(|r| r.strip_suffix(" ms"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{reported:?}"));
        assert!(silent_ms >= frame_timeout.as_millis(), "{reported:?}");
    }

    #[test]
    fn a_camera_that_never_delivers_is_reported_after_the_frame_timeout() {
        let frame_timeout = Duration::from_millis(400);
        let snapshots = run(
            Camera::new(Some(Duration::ZERO)),
            Duration::from_millis(1000),
            frame_timeout,
            |s| s.iter().any(no_frame),
        );
        assert_eq!(valid(&snapshots), 0, "{snapshots:#?}");
    }
}
