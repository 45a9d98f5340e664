//! The `FrameSource` abstraction every camera implements (V4L2, replay, synthetic scenes), and the
//! health states a capture loop reports about it.

use std::time::Duration;

use crate::{CameraError, Frame};

/// A producer of frames with a blocking pull API.
///
/// Contract for implementers:
/// - `next_frame` blocks until a frame is ready and returns it, `Ok(None)` when the source has
///   ended for good (a replay without looping), or an error whose [`CameraError::recovery`] says
///   what the caller should do (skip the frame, reconnect, give up).
/// - `Frame::timestamp` is on CLOCK_MONOTONIC ([`crate::monotonic_now`] for sources without a driver
///   clock); `Frame::sequence` increases by one per produced frame (gaps = frames lost upstream).
/// - After an error that asks for reconnecting, the caller invokes `reconnect`; on `Ok` the
///   source is ready to stream again.
/// - A source must never panic on what a device or a file gives it.
pub trait FrameSource: Send {
    /// Blocks until the next frame (see the trait's contract).
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError>;

    /// Closes whatever is open and opens the source again. The default says it cannot.
    fn reconnect(&mut self) -> Result<(), CameraError> {
        Err(CameraError::Unsupported {
            device: self.describe(),
            reason: "this source cannot reconnect".to_string(),
        })
    }

    /// Gives a no-longer-needed frame buffer back so the source can reuse its allocation.
    /// The default drops it.
    fn recycle(&mut self, buffer: Vec<u8>) {
        drop(buffer);
    }

    /// A short human-readable name ("/dev/video0 YUYV 640x480 @ 30 fps", "replay DIR", ...).
    fn describe(&self) -> String;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        (**self).next_frame()
    }
    fn reconnect(&mut self) -> Result<(), CameraError> {
        (**self).reconnect()
    }
    fn recycle(&mut self, buffer: Vec<u8>) {
        (**self).recycle(buffer)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// The state of a source as its capture loop sees it. Published by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Started, no frame yet.
    Starting,
    /// Frames are flowing.
    Streaming { source: String },
    /// The source failed; the loop waits `retry_in` and tries again (attempt counts from 1).
    Reconnecting {
        attempt: u32,
        retry_in: Duration,
        reason: String,
    },
    /// The source failed in a way retrying cannot fix, or kept failing for `fail_after` attempts.
    /// `retrying` says whether the loop still tries in the background (at the longest back-off).
    Failed { reason: String, retrying: bool },
    /// The source ended normally (a replay without looping) or the capture was stopped.
    Ended,
}

impl Health {
    /// A one-word state for status lines and D-Bus ("starting", "streaming", ...).
    pub fn state(&self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Streaming { .. } => "streaming",
            Health::Reconnecting { .. } => "reconnecting",
            Health::Failed { .. } => "failed",
            Health::Ended => "ended",
        }
    }
}

/// A health change, stamped with the monotonic time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub at: Duration,
    pub health: Health,
}
