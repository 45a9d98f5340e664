//! The pipeline's stages as the daemon sees them: a frame feed, a perception stage (the model)
//! and a policy stage. `adapters/` implements them with the camera, inference and policies
//! crates; the scheduler and the D-Bus side only know these traits, which keeps them testable
//! with test doubles. The traits are seams, not a vocabulary: what crosses them is the crates' own
//! types (inference's probe answers; the policies' observations, driver state and alerts),
//! re-exported below.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::vehicle::VehicleState;

/// CLOCK_MONOTONIC now, the clock of V4L2 buffer timestamps and of every timestamp the daemon
/// publishes (declared once, in the camera crate).
pub use autoneural_camera::monotonic_now;

/// A stage failed; the message is for logs and D-Bus errors, the kind decides the D-Bus error name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub kind: StageErrorKind,
    pub message: String,
}

/// Why a stage failed, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageErrorKind {
    /// Something went wrong inside.
    Failed,
    /// Not possible right now (no frame yet, the queue is full): try again later.
    Unavailable,
    /// The request itself cannot be served (a question the loaded model cannot take).
    InvalidRequest,
}

impl StageError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            kind: StageErrorKind::Failed,
            message: msg.into(),
        }
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self {
            kind: StageErrorKind::Unavailable,
            message: msg.into(),
        }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self {
            kind: StageErrorKind::InvalidRequest,
            message: msg.into(),
        }
    }
}

/// A frame with its capture time (CLOCK_MONOTONIC) and the source's sequence number.
pub struct Captured<F> {
    pub frame: Arc<F>,
    pub timestamp: Duration,
    pub sequence: u64,
}

impl<F> Clone for Captured<F> {
    fn clone(&self) -> Self {
        Self {
            frame: Arc::clone(&self.frame),
            timestamp: self.timestamp,
            sequence: self.sequence,
        }
    }
}

/// What waiting for a frame gave.
pub enum SourceEvent<F> {
    Frame(Captured<F>),
    /// No new frame within the timeout.
    Timeout,
    /// The source failed (it keeps trying to reconnect; the reason is published).
    Failed(String),
    /// A finite source reached its end.
    Ended,
}

/// A camera as the scheduler sees it: the newest frame wins, older ones are dropped (and counted).
///
/// Not `autoneural_camera::FrameSource`, which is the producer's side (a blocking `next_frame`,
/// `reconnect`, `recycle`). A feed is the consumer's side of a running capture: it waits with a
/// timeout (so the pipeline can send invalid observations while blind), says why there is no frame
/// (failed, ended) and when the camera last delivered one, counts the frames it dropped, and
/// yields frames already converted for the model (`adapters::camera::CameraStage`: a camera source
/// on its capture thread plus the converter). Test doubles implement it without a camera.
pub trait FrameFeed: Send + 'static {
    type Frame: Send + Sync + 'static;
    /// Waits at most `timeout` for a frame newer than the last one returned.
    fn next(&mut self, timeout: Duration) -> SourceEvent<Self::Frame>;
    /// Frames the source dropped because the consumer was busy.
    fn dropped(&self) -> u64;
    /// When (CLOCK_MONOTONIC) the camera last delivered a frame, whether or not it was returned
    /// (one dropped as superseded or stale counts too; one that turned out to be garbage does
    /// not); None before the first. The pipeline measures camera silence from here: the time it
    /// spent busy with a frame is not the camera's silence.
    fn last_delivery(&self) -> Option<Duration>;
    /// For recorded and synthetic sources: the CLOCK_MONOTONIC time of the stream's time zero,
    /// so that observation timestamps map back to scenario time. None for live cameras.
    fn epoch(&self) -> Option<Duration> {
        None
    }
    /// A short name for logs and diagnostics.
    fn describe(&self) -> String;
}

/// One probe's answer on one frame: the inference crate's (the face pipeline's answers take the same
/// shape, with `id` = `adapters::fusion::FACE_SOURCE`).
pub use autoneural_inference::ProbeAnswer;

/// The safety probes of one frame.
#[derive(Debug, Clone)]
pub struct Perceived {
    pub answers: Vec<ProbeAnswer>,
    /// Time in the model's vision graph and probes; None when the model did not run on this frame.
    pub vision: Option<Duration>,
    pub probes: Option<Duration>,
    /// Time in the face pipeline; None when it is off.
    pub face: Option<Duration>,
}

/// A description or an answer on its way. The model job is queued when the future is made (never
/// blocking); awaiting it waits for the text; dropping it — a D-Bus timeout, a caller that went
/// away — cancels the job (skipped if still queued, stopped after the current token if running).
pub type Answer = Pin<Box<dyn Future<Output = Result<String, StageError>> + Send>>;

/// The model, behind the inference crate's one priority queue: `probe` (safety) goes before
/// `describe`, which goes before `ask`. `probe` blocks (the pipeline thread calls it, never the
/// async runtime); `describe` and `ask` return futures for the async side.
pub trait Perception: Send + Sync + 'static {
    type Frame: Send + Sync + 'static;
    /// The safety probes of one frame; `vehicle` is what the vehicle reported as of its capture.
    fn probe(&self, frame: &Self::Frame, vehicle: VehicleState) -> Result<Perceived, StageError>;
    fn describe(&self, frame: &Self::Frame, max_tokens: usize) -> Answer;
    fn ask(&self, frame: &Self::Frame, question: &str, max_tokens: usize) -> Answer;
    /// (graph, execution provider) for every graph.
    fn execution_providers(&self) -> Vec<(String, String)>;
}

/// The policies' vocabulary, declared once in autoneural-policies: the policy stage takes their
/// [`Observation`] and gives their [`DriverState`] and [`AlertEvent`]s, which the publisher maps
/// onto D-Bus (`dbus.rs`) without an intermediate copy.
pub use autoneural_policies::{
    Alert, AlertEvent, AlertId, DriverState, Field, MonitoringState, Observation, Probabilities,
};

/// The observation of one frame's answers: each answer's `field_probability` feeds its field
/// (clamped to 0..=1; an answer for a field the policies do not know is left out — the model's
/// start-up check refuses such probes), with the vehicle's speed as of the frame.
pub fn valid_observation(
    timestamp: Duration,
    answers: &[ProbeAnswer],
    vehicle: VehicleState,
) -> Observation {
    let mut p = Probabilities::default();
    for a in answers {
        if let Some(f) = Field::from_name(&a.field) {
            p.set(f, Some(a.field_probability.clamp(0.0, 1.0)));
        }
    }
    with_vehicle(Observation::valid(timestamp, p), vehicle)
}

/// An observation saying that nothing could be observed at `timestamp`, and why.
pub fn invalid_observation(
    timestamp: Duration,
    reason: impl Into<String>,
    vehicle: VehicleState,
) -> Observation {
    with_vehicle(Observation::invalid(timestamp, reason), vehicle)
}

fn with_vehicle(observation: Observation, vehicle: VehicleState) -> Observation {
    match vehicle.speed_kmh {
        Some(kmh) => observation.with_speed(kmh),
        None => observation,
    }
}

/// The policy engine: observations in, state and alert events out. Time comes only from the
/// observations' timestamps.
pub trait Policy: Send + 'static {
    fn update(&mut self, observation: &Observation) -> (DriverState, Vec<AlertEvent>);
    fn active_alerts(&self) -> Vec<Alert>;
    /// Re-reads the rules file; on error the running rules stay. Returns a summary and the
    /// events of the change (alerts of rules the new file disables are cleared).
    fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError>;
}
