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

impl PixelFormat {
    /// Every format, in the default negotiation preference (cheapest good conversion first).
    pub const ALL: [PixelFormat; 6] = [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Y16,
        PixelFormat::Rgb24,
    ];

    /// The V4L2 fourcc code (`RGB3` for [`PixelFormat::Rgb24`]).
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Y16 => *b"Y16 ",
        }
    }

    /// The format for a V4L2 fourcc, if the project handles it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Parses a user's name for a format: a fourcc (`YUYV`, `MJPG`, `Y16`) or a common alias
    /// (`MJPEG`, `RGB`, `Y8`, `GRAY`), case-insensitive.
    pub fn parse(name: &str) -> Option<PixelFormat> {
        match name.trim().to_ascii_uppercase().as_str() {
            "RGB" | "RGB24" | "RGB3" => Some(PixelFormat::Rgb24),
            "YUYV" | "YUY2" => Some(PixelFormat::Yuyv),
            "NV12" => Some(PixelFormat::Nv12),
            "MJPG" | "MJPEG" | "JPEG" => Some(PixelFormat::Mjpeg),
            "GREY" | "GRAY" | "Y8" | "Y800" => Some(PixelFormat::Grey),
            "Y16" | "Y16 " => Some(PixelFormat::Y16),
            _ => None,
        }
    }

    /// The minimum bytes per row of the first plane for `width` pixels (`None` for compressed).
    pub fn min_stride(self, width: u32) -> Option<u64> {
        let w = u64::from(width);
        match self {
            PixelFormat::Rgb24 => Some(w * 3),
            PixelFormat::Yuyv => Some(w.div_ceil(2) * 4),
            // NV12's interleaved chroma rows need an even number of bytes.
            PixelFormat::Nv12 => Some(w.div_ceil(2) * 2),
            PixelFormat::Grey => Some(w),
            PixelFormat::Y16 => Some(w * 2),
            PixelFormat::Mjpeg => None,
        }
    }

    /// The bytes a frame of this size needs with rows `stride` bytes apart (`None` for compressed).
    /// NV12's chroma plane follows the luma plane directly, with the same stride.
    pub fn frame_len(self, stride: u32, height: u32) -> Option<u64> {
        let rows = u64::from(height);
        let stride = u64::from(stride);
        match self {
            PixelFormat::Nv12 => Some(stride * (rows + rows.div_ceil(2))),
            PixelFormat::Mjpeg => None,
            _ => Some(stride * rows),
        }
    }

    /// A short name for logs and file names.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "RGB24",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Grey => "GREY",
            PixelFormat::Y16 => "Y16",
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// Sources without a driver clock stamp frames with [`monotonic_now`] when they produce them,
    /// so every frame's age can be computed the same way.
    pub timestamp: Duration,
    /// The source's frame counter; gaps mean frames were dropped before they reached us.
    pub sequence: u64,
}

impl Frame {
    /// How old the frame is now, by the monotonic clock (zero if it is stamped in the future).
    pub fn age(&self) -> Duration {
        monotonic_now().saturating_sub(self.timestamp)
    }
}

/// The current CLOCK_MONOTONIC time — the clock V4L2 drivers stamp buffers with.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we pass; CLOCK_MONOTONIC always exists on
    // Linux, so the call cannot fail with valid arguments.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_round_trips_and_aliases_parse() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(PixelFormat::parse(f.name()), Some(f));
        }
        assert_eq!(PixelFormat::parse("mjpeg"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::parse("y8"), Some(PixelFormat::Grey));
        assert_eq!(PixelFormat::parse("H264"), None);
    }

    #[test]
    fn sizes_cover_odd_widths_and_nv12_chroma() {
        assert_eq!(PixelFormat::Yuyv.min_stride(5), Some(12));
        assert_eq!(PixelFormat::Nv12.frame_len(4, 3), Some(4 * 5));
        assert_eq!(PixelFormat::Mjpeg.frame_len(0, 10), None);
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(a > Duration::ZERO && b >= a);
    }
}
