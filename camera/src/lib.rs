//! autoneural-camera: frame sources (V4L2, replay) and conversion of frames into the model's input.
//! See ARCHITECTURE.md and the README's "Camera" section. Synthetic cabin scenes (the renderer and
//! its `ScenarioSource`) live in the autoneural-scenes crate, which builds on these types.
//!
//! - [`FrameSource`]: the blocking pull abstraction every source implements.
//! - [`Capture`] / [`LatestFrame`]: the latest-frame-wins hand-off with reconnect and health events.
//! - [`Converter`]: any [`PixelFormat`] to the model's RGB or mono input, resized.
//! - [`ReplaySource`]: a directory of images or raw frames with a timing file.
//! - [`V4l2Source`]: V4L2 capture (tested against vivid in a VM: camera/tests/vivid_vm.rs).

pub mod convert;
pub mod error;
pub mod frame;
pub mod handoff;
pub mod replay;
pub mod source;
pub mod v4l2;

pub use convert::{Channels, ConvertError, Converter, Filter, Fit, OutputSpec};
pub use error::{CameraError, Recovery};
pub use frame::{Frame, PixelFormat, monotonic_now};
pub use handoff::{Capture, CaptureOptions, CaptureStats, LatestFrame, TakeError};
pub use replay::{Pace, ReplayConfig, ReplaySource};
pub use source::{FrameSource, Health, HealthEvent};
pub use v4l2::{V4l2Config, V4l2Source};
