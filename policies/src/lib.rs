//! autoneural-policies: observations -> driver state -> alerts.
//!
//! The daemon feeds one [`Observation`] per processed frame (the probe answers as probabilities,
//! or an invalid observation when it has none) to a [`PolicyEngine`], which returns the
//! [`AlertEvent`]s to publish and keeps the VSS-aligned [`DriverState`]. The rules are data
//! ([`Rules`], TOML; defaults in `rules/default.toml` follow Euro NCAP's driver-monitoring
//! timings). Time comes only from the observations' timestamps, so replaying a recording gives
//! the same alerts every time (see the `autoneural-policies replay` tool).
//!
//! ```
//! use std::time::Duration;
//! use autoneural_policies::{Field, Observation, PolicyEngine, Probabilities, Rules};
//!
//! let mut engine = PolicyEngine::new(Rules::builtin());
//! let looking_down = Probabilities::default()
//!     .with(Field::FaceVisible, 1.0)
//!     .with(Field::EyesClosed, 0.0)
//!     .with(Field::EyesOnRoad, 0.0);
//! let mut raised = Vec::new();
//! for i in 0..=30 {
//!     let t = Duration::from_millis(100 * i);
//!     for event in engine.observe(&Observation::valid(t, looking_down)) {
//!         raised.push((event.alert().id.as_str(), t));
//!     }
//! }
//! assert_eq!(raised, [("long_distraction", Duration::from_secs(3))]);
//! ```

mod alert;
mod engine;
mod observation;
mod rules;
mod seconds;
mod signal;
mod state;

pub use alert::{Alert, AlertEvent, AlertId, ClearReason};
pub use engine::{EngineStats, PolicyEngine};
pub use observation::{
    Field, Observation, ObservationError, Probabilities, Validity, read_observations_jsonl,
};
pub use rules::{
    AlertRules, DEFAULT_RULES_TOML, DrowsinessRule, ObservationRules, Rules, RulesError,
    ShortDistractionRule, Smoothing, SpeedGate, Step, Threshold, Thresholds, TimedRule,
};
pub use state::{DriverState, MonitoringState};
