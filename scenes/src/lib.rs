//! autoneural-scenes: synthetic cabin scenes — a procedural driver-monitoring camera view,
//! deterministic from a seed, at any resolution, with per-frame ground truth (ARCHITECTURE.md
//! contract 2). The `autoneural-scenes` binary renders data sets and scenarios to disk.
//!
//! The renderer is the single source of truth for the default model's training data, for the
//! scenario tests and for the demo: what a frame's labels say is what its pixels show.
//!
//! - [`Scene::sample`] draws item `index` of a data set (`Variation::Train` or the `Shifted`
//!   out-of-distribution set) and [`Scene::render`] paints it.
//! - [`Scenario`] is a timeline (TOML) of driver states rendered at a frame rate, and
//!   [`ScenarioSource`] plays one as an [`autoneural_camera::FrameSource`].
//!
//! Data flows one way: this crate produces autoneural-camera's [`autoneural_camera::Frame`]s;
//! the camera crate knows nothing of scenes.

mod appearance;
mod canvas;
mod labels;
mod rng;
mod scenario;
mod scene;
mod source;

pub use appearance::{Appearance, Variation};
pub use labels::{Eyes, Face, Gaze, LabelRecord, Lighting, Phone, SceneLabels};
pub use rng::Rng;
pub use scenario::{BUILTIN, Scenario, ScenarioError, ScenarioFrame};
pub use scene::{Pose, Scene, SceneImage};
pub use source::ScenarioSource;
