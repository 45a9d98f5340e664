//! The crate's errors, and how a capture loop should react to each.

use std::io;

use crate::PixelFormat;

/// Why a source could not deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// The device node vanished or the driver said it is gone (ENODEV, ENXIO, ENOENT on open).
    #[error("camera {device} is gone: {source}")]
    DeviceGone { device: String, source: io::Error },
    /// An I/O error from the device (EIO and friends) while it still exists.
    #[error("camera {device}: {what}: {source}")]
    Io {
        device: String,
        what: &'static str,
        source: io::Error,
    },
    /// No frame arrived within the source's timeout.
    #[error("camera {device}: no frame within {timeout_ms} ms")]
    Timeout { device: String, timeout_ms: u64 },
    /// The device cannot do what was asked (not a capture device, no usable format, ...).
    /// Retrying will not help.
    #[error("camera {device}: {reason}")]
    Unsupported { device: String, reason: String },
    /// The configuration is invalid (bad path, unknown format name, ...). Retrying will not help.
    #[error("invalid camera configuration: {0}")]
    Config(String),
    /// One frame was unusable (driver error flag, truncated, corrupt JPEG); the next may be fine.
    #[error("corrupt {format} frame {sequence}: {reason}")]
    CorruptFrame {
        format: PixelFormat,
        sequence: u64,
        reason: String,
    },
    /// A replay file could not be read or parsed.
    #[error("replay {path}: {reason}")]
    Replay { path: String, reason: String },
}

/// What a capture loop should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Drop this frame, count it, ask for the next one.
    SkipFrame,
    /// Close the source and open it again after a back-off.
    Reconnect,
    /// Give up: configuration or capability problems do not heal by retrying.
    Fatal,
}

impl CameraError {
    /// How to react to this error.
    pub fn recovery(&self) -> Recovery {
        match self {
            CameraError::CorruptFrame { .. } => Recovery::SkipFrame,
            // A replay file that cannot be parsed is a source failure like a camera that went
            // away: it may be fixed or rewritten while the daemon runs, so it is retried; giving
            // up left a daemon alive and blind after the file was fixed (issue 16).
            CameraError::DeviceGone { .. }
            | CameraError::Io { .. }
            | CameraError::Timeout { .. }
            | CameraError::Replay { .. } => Recovery::Reconnect,
            CameraError::Unsupported { .. } | CameraError::Config(_) => Recovery::Fatal,
        }
    }

    /// Classifies an OS error from a device operation: "gone" errnos become [`CameraError::DeviceGone`].
    pub fn from_io(device: &str, what: &'static str, err: io::Error) -> CameraError {
        let gone = matches!(
            err.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::ENOENT) | Some(libc::ESHUTDOWN)
        );
        if err.raw_os_error() == Some(libc::ENOTTY) {
            // The node does not speak V4L2 at all: retrying will not change that.
            return CameraError::Unsupported {
                device: device.to_string(),
                reason: format!("{what}: not a V4L2 device ({err})"),
            };
        }
        if gone {
            CameraError::DeviceGone {
                device: device.to_string(),
                source: err,
            }
        } else {
            CameraError::Io {
                device: device.to_string(),
                what,
                source: err,
            }
        }
    }
}
