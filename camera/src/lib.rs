//! autoneural-camera: frame sources (V4L2, replay, synthetic cabin scenes) and conversion of frames
//! into the model's input. See ARCHITECTURE.md.

pub mod frame;

pub use frame::{Frame, PixelFormat};
