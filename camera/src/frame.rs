//! A captured frame: pixels plus what is needed to interpret and date them.

use std::time::Duration;

/// Pixel layouts the project's sources produce (V4L2 fourccs where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B (3 bytes per pixel). What the synthetic and replay sources produce.
    Rgb24,
    /// Packed YUV 4:2:2, Y0 U Y1 V (V4L2 `YUYV`).
    Yuyv,
    /// Planar Y, then interleaved U/V at half resolution (V4L2 `NV12`).
    Nv12,
    /// A complete JPEG image per frame (V4L2 `MJPG`).
    Mjpeg,
    /// 8-bit luminance, e.g. a near-infrared driver camera (V4L2 `GREY`).
    Grey,
    /// 16-bit little-endian luminance (V4L2 `Y16 `).
    Y16,
}

/// One frame. `stride` is bytes per row of the first plane (0 for compressed formats).
#[derive(Debug, Clone)]
pub struct Frame {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub data: Vec<u8>,
    /// Capture time on the monotonic clock (CLOCK_MONOTONIC), from the driver where it gives one.
    pub timestamp: Duration,
    /// The source's frame counter; gaps mean frames were dropped before they reached us.
    pub sequence: u64,
}
