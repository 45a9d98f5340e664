//! Latest-frame-wins hand-off: a capture thread pulls from a [`FrameSource`] and keeps only the
//! newest frame in a single slot; consumers take that frame (blocking or not). A slow consumer
//! therefore never works through a queue of stale frames — frames it missed are counted as dropped,
//! and a frame older than `max_age` when taken is discarded and counted as stale.
//!
//! The capture thread also owns resilience: errors that ask for it make it reconnect the source
//! with exponential back-off, and every health change is reported through a callback (and is
//! readable at any time), so an async daemon can forward it without this crate knowing about tokio.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{CameraError, Frame, FrameSource, Health, HealthEvent, Recovery, monotonic_now};

/// How the capture thread behaves.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The first reconnect delay; doubled per failed attempt up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// After this many failed reconnect attempts in a row the health becomes
    /// `Failed { retrying: true }`; the thread keeps trying at `backoff_max`.
    pub fail_after: u32,
    /// Frames older than this (by their monotonic timestamp) when taken are discarded as stale.
    pub max_age: Option<Duration>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            fail_after: 8,
            max_age: None,
        }
    }
}

/// Counters since the capture started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames the source delivered to the slot.
    pub captured: u64,
    /// Frames a consumer took.
    pub delivered: u64,
    /// Frames overwritten in the slot before anyone took them (latest frame wins).
    pub dropped: u64,
    /// Frames discarded at take time because they were older than `max_age`.
    pub stale: u64,
    /// Frames the source reported as corrupt and skipped (e.g. undecodable MJPEG, driver errors).
    pub corrupt: u64,
    /// Frames missing according to the source's sequence numbers (lost before they reached us).
    pub sequence_gaps: u64,
    /// Successful reconnects of the source.
    pub reconnects: u64,
}

/// Why a take returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeError {
    #[error("no fresh frame within the timeout")]
    Timeout,
    #[error("the capture has ended (source finished, failed for good, or was stopped)")]
    Closed,
}

type HealthCallback = Box<dyn FnMut(&HealthEvent) + Send>;

struct Slot {
    frame: Option<Frame>,
    closed: bool,
    health: Health,
    /// Buffers consumers gave back, for the capture thread to hand to the source.
    returned: Vec<Vec<u8>>,
    /// CLOCK_MONOTONIC time the source last delivered a frame into the slot.
    last_captured_at: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    captured: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    stale: AtomicU64,
    corrupt: AtomicU64,
    sequence_gaps: AtomicU64,
    reconnects: AtomicU64,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
    stop: AtomicBool,
    counters: Counters,
    max_age: Option<Duration>,
}

impl Shared {
    /// Locks the slot, recovering it if a thread panicked while holding the lock (the slot's
    /// contents stay consistent: every update is a single assignment).
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A running capture: owns the capture thread; stops it when dropped.
pub struct Capture {
    frames: LatestFrame,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts a capture thread pulling from `source`. `on_health` is called on the capture
    /// thread for every health change; keep it short (e.g. send into a channel).
    pub fn spawn<S, F>(source: S, options: CaptureOptions, on_health: F) -> std::io::Result<Capture>
    where
        S: FrameSource + 'static,
        F: FnMut(&HealthEvent) + Send + 'static,
    {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                frame: None,
                closed: false,
                health: Health::Starting,
                returned: Vec::new(),
                last_captured_at: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            max_age: options.max_age,
        });
        let worker = Worker {
            shared: Arc::clone(&shared),
            options,
            on_health: Box::new(on_health),
        };
        let thread = std::thread::Builder::new()
            .name("camera-capture".to_string())
            .spawn(move || worker.run(source))?;
        Ok(Capture {
            frames: LatestFrame { shared },
            thread: Some(thread),
        })
    }

    /// A cloneable handle for consumers (may be moved to other threads).
    pub fn frames(&self) -> LatestFrame {
        self.frames.clone()
    }

    /// Stops the capture thread and waits for it (at most about one source timeout).
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the capture thread. It sees the stop flag between frames; a source blocked for long
    /// (a recording whose next frame is due far ahead, a driver call that hangs) is left behind
    /// after `JOIN_LIMIT` rather than holding up whoever drops the capture.
    fn shutdown(&mut self) {
        const JOIN_LIMIT: Duration = Duration::from_secs(1);
        self.frames.shared.stop.store(true, Ordering::SeqCst);
        self.frames.shared.changed.notify_all();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + JOIN_LIMIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !thread.is_finished() {
            log::warn!(
                "camera: the capture thread did not stop within {} s (its source is blocked); leaving it",
                JOIN_LIMIT.as_secs()
            );
        } else if thread.join().is_err() {
            log::error!("camera capture thread panicked");
        }
    }
}

impl std::ops::Deref for Capture {
    type Target = LatestFrame;
    fn deref(&self) -> &LatestFrame {
        &self.frames
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The consumer side of the hand-off.
#[derive(Clone)]
pub struct LatestFrame {
    shared: Arc<Shared>,
}

impl LatestFrame {
    /// Takes the newest frame if there is a fresh one, without waiting.
    pub fn try_take(&self) -> Result<Option<Frame>, TakeError> {
        let mut slot = self.shared.lock();
        match self.take_fresh(&mut slot) {
            Some(frame) => Ok(Some(frame)),
            None if slot.closed => Err(TakeError::Closed),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` (forever with `None`) for a fresh frame and takes it.
    pub fn take(&self, timeout: Option<Duration>) -> Result<Frame, TakeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.shared.lock();
        loop {
            if let Some(frame) = self.take_fresh(&mut slot) {
                return Ok(frame);
            }
            if slot.closed {
                return Err(TakeError::Closed);
            }
            slot = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(slot)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TakeError::Timeout);
                    }
                    self.shared
                        .changed
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Gives a frame's buffer back for reuse by the source (optional; saves an allocation).
    pub fn give_back(&self, frame: Frame) {
        let mut slot = self.shared.lock();
        if slot.returned.len() < 4 {
            slot.returned.push(frame.data);
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.shared.lock().health.clone()
    }

    /// When (CLOCK_MONOTONIC) the source last delivered a frame to the capture, whether or not
    /// a consumer took it (a frame later overwritten or discarded as stale counts too); None
    /// before the first. How long the camera itself has been silent, unlike the time since a
    /// consumer last took a frame, which includes the time the consumer was busy.
    pub fn last_captured_at(&self) -> Option<Duration> {
        self.shared.lock().last_captured_at
    }

    /// Counters since the start.
    pub fn stats(&self) -> CaptureStats {
        let c = &self.shared.counters;
        CaptureStats {
            captured: c.captured.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            sequence_gaps: c.sequence_gaps.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }

    fn take_fresh(&self, slot: &mut Slot) -> Option<Frame> {
        let frame = slot.frame.take()?;
        let counters = &self.shared.counters;
        if let Some(max_age) = self.shared.max_age
            && frame.age() > max_age
        {
            counters.stale.fetch_add(1, Ordering::Relaxed);
            if slot.returned.len() < 4 {
                slot.returned.push(frame.data);
            }
            return None;
        }
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        Some(frame)
    }
}

/// At most one "dropping a frame" line per this interval: the first corrupt frame of a burst is
/// logged at once, the rest as one count (a source that delivers nothing but corrupt frames once
/// wrote ~80,000 warnings a second).
pub(crate) const CORRUPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate limit for the corrupt-frame warning: what to log, if anything, for each event.
#[derive(Debug, Default)]
pub(crate) struct CorruptLog {
    last_line: Option<Instant>,
    /// Corrupt frames dropped since the last line and not yet in a line.
    unreported: u64,
}

impl CorruptLog {
    /// A corrupt frame was dropped: the line to log now, if any.
    pub(crate) fn dropped(&mut self, now: Instant, err: &CameraError) -> Option<String> {
        if self.due(now) {
            let line = match std::mem::take(&mut self.unreported) {
                0 => format!("dropping a frame: {err}"),
                n => format!(
                    "dropping a frame: {err} (and {n} more corrupt frames since the last message)"
                ),
            };
            self.last_line = Some(now);
            Some(line)
        } else {
            self.unreported += 1;
            None
        }
    }

    /// A good frame arrived: the count of the corrupt frames not yet reported, once the interval
    /// since the last line has passed (so flapping between good and bad frames stays bounded).
    pub(crate) fn good(&mut self, now: Instant) -> Option<String> {
        if self.unreported == 0 || !self.due(now) {
            return None;
        }
        self.last_line = Some(now);
        Some(format!(
            "dropped {} more corrupt frames since the last message; frames are good again",
            std::mem::take(&mut self.unreported)
        ))
    }

    fn due(&self, now: Instant) -> bool {
        self.last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= CORRUPT_LOG_INTERVAL)
    }
}

struct Worker {
    shared: Arc<Shared>,
    options: CaptureOptions,
    on_health: HealthCallback,
}

impl Worker {
    fn run<S: FrameSource>(mut self, mut source: S) {
        let mut last_sequence: Option<u64> = None;
        let mut streaming = false;
        let mut corrupt_log = CorruptLog::default();
        while !self.stopped() {
            let returned = std::mem::take(&mut self.shared.lock().returned);
            for buffer in returned {
                source.recycle(buffer);
            }
            match source.next_frame() {
                Ok(Some(frame)) => {
                    if !streaming {
                        streaming = true;
                        self.set_health(Health::Streaming {
                            source: source.describe(),
                        });
                    }
                    if let Some(line) = corrupt_log.good(Instant::now()) {
                        log::warn!("{line}");
                    }
                    self.count_gap(&mut last_sequence, frame.sequence);
                    self.publish(frame, &mut source);
                }
                Ok(None) => {
                    self.finish(Health::Ended);
                    return;
                }
                Err(err) => match err.recovery() {
                    Recovery::SkipFrame => {
                        self.shared.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        if let Some(line) = corrupt_log.dropped(Instant::now(), &err) {
                            log::warn!("{line}");
                        }
                    }
                    Recovery::Reconnect => {
                        streaming = false;
                        last_sequence = None;
                        if !self.reconnect(&mut source, err) {
                            return;
                        }
                    }
                    Recovery::Fatal => {
                        self.finish(Health::Failed {
                            reason: err.to_string(),
                            retrying: false,
                        });
                        return;
                    }
                },
            }
        }
        self.finish(Health::Ended);
    }

    /// Reconnects with back-off until it works (true) or cannot work / was stopped (false).
    fn reconnect<S: FrameSource>(&mut self, source: &mut S, first: CameraError) -> bool {
        let mut reason = first.to_string();
        let mut delay = self.options.backoff_initial;
        let mut attempt: u32 = 1;
        let mut failed_reported = false;
        log::warn!("camera failed, reconnecting: {reason}");
        loop {
            if attempt > self.options.fail_after && !failed_reported {
                failed_reported = true;
                self.set_health(Health::Failed {
                    reason: reason.clone(),
                    retrying: true,
                });
            } else if !failed_reported {
                self.set_health(Health::Reconnecting {
                    attempt,
                    retry_in: delay,
                    reason: reason.clone(),
                });
            }
            if !self.sleep(delay) {
                self.finish(Health::Ended);
                return false;
            }
            match source.reconnect() {
                Ok(()) => {
                    self.shared
                        .counters
                        .reconnects
                        .fetch_add(1, Ordering::Relaxed);
                    log::info!("camera reconnected: {}", source.describe());
                    return true;
                }
                Err(err) if err.recovery() == Recovery::Fatal => {
                    self.finish(Health::Failed {
                        reason: err.to_string(),
                        retrying: false,
                    });
                    return false;
                }
                Err(err) => {
                    reason = err.to_string();
                    log::debug!("reconnect attempt {attempt} failed: {reason}");
                }
            }
            attempt = attempt.saturating_add(1);
            delay = (delay * 2).min(self.options.backoff_max);
        }
    }

    fn publish<S: FrameSource>(&self, frame: Frame, source: &mut S) {
        let counters = &self.shared.counters;
        counters.captured.fetch_add(1, Ordering::Relaxed);
        let overwritten = {
            let mut slot = self.shared.lock();
            slot.last_captured_at = Some(monotonic_now());
            slot.frame.replace(frame)
        };
        self.shared.changed.notify_all();
        if let Some(old) = overwritten {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            source.recycle(old.data);
        }
    }

    fn count_gap(&self, last: &mut Option<u64>, sequence: u64) {
        // A sequence that does not increase means the source restarted its counter: no gap.
        if let Some(prev) = *last
            && sequence > prev + 1
        {
            self.shared
                .counters
                .sequence_gaps
                .fetch_add(sequence - prev - 1, Ordering::Relaxed);
        }
        *last = Some(sequence);
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `delay` unless stopped first; false when stopped.
    fn sleep(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut slot = self.shared.lock();
        while !self.stopped() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            slot = self
                .shared
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        false
    }

    fn set_health(&mut self, health: Health) {
        self.update(health, false);
    }

    /// Reports the final health and closes the slot; consumers see `Closed` once the callback runs.
    fn finish(&mut self, health: Health) {
        self.update(health, true);
    }

    fn update(&mut self, health: Health, close: bool) {
        {
            let mut slot = self.shared.lock();
            slot.closed |= close;
            if slot.health == health {
                drop(slot);
                self.shared.changed.notify_all();
                return;
            }
            slot.health = health.clone();
        }
        self.shared.changed.notify_all();
        (self.on_health)(&HealthEvent {
            at: monotonic_now(),
            health,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;

    use super::*;
    use crate::PixelFormat;

    /// One scripted outcome of `next_frame` or `reconnect`.
    enum Step {
        Frame { sequence: u64, age: Duration },
        Fail(fn() -> CameraError),
        End,
    }

    struct Scripted {
        frames: VecDeque<Step>,
        reconnects: VecDeque<Result<(), fn() -> CameraError>>,
    }

    impl FrameSource for Scripted {
        fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
            match self.frames.pop_front().unwrap_or(Step::End) {
                Step::Frame { sequence, age } => Ok(Some(Frame {
                    format: PixelFormat::Grey,
                    width: 2,
                    height: 1,
                    stride: 2,
                    data: vec![sequence as u8, 0],
                    timestamp: monotonic_now().saturating_sub(age),
                    sequence,
                })),
                Step::Fail(make) => Err(make()),
                Step::End => Ok(None),
            }
        }
        fn reconnect(&mut self) -> Result<(), CameraError> {
            match self.reconnects.pop_front() {
                Some(Ok(())) | None => Ok(()),
                Some(Err(make)) => Err(make()),
            }
        }
        fn describe(&self) -> String {
            "scripted".to_string()
        }
    }

    fn frame(sequence: u64) -> Step {
        Step::Frame {
            sequence,
            age: Duration::ZERO,
        }
    }

    fn gone() -> CameraError {
        CameraError::DeviceGone {
            device: "/dev/video9".into(),
            source: std::io::Error::from_raw_os_error(libc::ENODEV),
        }
    }

    fn fast() -> CaptureOptions {
        CaptureOptions {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            fail_after: 2,
            max_age: None,
        }
    }

    /// Runs a script to its end and returns the capture plus every health event it reported.
    fn run(script: Scripted, options: CaptureOptions) -> (Capture, Vec<Health>) {
        let (tx, rx) = mpsc::channel();
        let capture = Capture::spawn(script, options, move |e: &HealthEvent| {
            let _ = tx.send(e.health.clone());
        })
        .expect("spawn");
        let mut events = Vec::new();
        while let Ok(h) = rx.recv_timeout(Duration::from_secs(10)) {
            let done = matches!(
                h,
                Health::Ended
                    | Health::Failed {
                        retrying: false,
                        ..
                    }
            );
            events.push(h);
            if done {
                break;
            }
        }
        (capture, events)
    }

    #[test]
    fn a_slow_consumer_gets_only_the_newest_frame_and_drops_are_counted() {
        let script = Scripted {
            frames: (0..10).map(frame).collect(),
            reconnects: VecDeque::new(),
        };
        let (capture, events) = run(script, fast());
        assert_eq!(events.last(), Some(&Health::Ended));
        let newest = capture.take(Some(Duration::from_secs(1))).expect("a frame");
        assert_eq!(newest.sequence, 9);
        assert_eq!(
            capture.take(Some(Duration::from_millis(10))).err(),
            Some(TakeError::Closed)
        );
        let stats = capture.stats();
        assert_eq!((stats.captured, stats.delivered, stats.dropped), (10, 1, 9));
    }

    #[test]
    fn device_loss_reconnects_with_backoff_and_reports_health() {
        let script = Scripted {
            frames: [frame(0), frame(1), Step::Fail(gone), frame(0), frame(1)].into(),
            reconnects: [Err(gone as fn() -> CameraError), Ok(())].into(),
        };
        let (capture, events) = run(script, fast());
        let states: Vec<&str> = events.iter().map(Health::state).collect();
        assert_eq!(
            states,
            [
                "streaming",
                "reconnecting",
                "reconnecting",
                "streaming",
                "ended"
            ]
        );
        assert!(matches!(events[2], Health::Reconnecting { attempt: 2, .. }));
        assert_eq!(capture.stats().reconnects, 1);
        assert_eq!(
            capture.stats().sequence_gaps,
            0,
            "a restarted counter is no gap"
        );
    }

    #[test]
    fn persistent_failure_is_reported_once_as_failed_while_retrying() {
        let script = Scripted {
            frames: [Step::Fail(gone), frame(5)].into(),
            reconnects: [gone as fn() -> CameraError, gone, gone, gone]
                .into_iter()
                .map(Err)
                .collect(),
        };
        let (_capture, events) = run(script, fast());
        let states: Vec<&str> = events.iter().map(Health::state).collect();
        assert_eq!(
            states,
            [
                "reconnecting",
                "reconnecting",
                "failed",
                "streaming",
                "ended"
            ]
        );
        assert!(matches!(events[2], Health::Failed { retrying: true, .. }));
    }

    #[test]
    fn fatal_errors_close_the_capture() {
        let script = Scripted {
            frames: [Step::Fail(|| CameraError::Config("bad".into()))].into(),
            reconnects: VecDeque::new(),
        };
        let (capture, events) = run(script, fast());
        assert!(matches!(
            events.last(),
            Some(Health::Failed {
                retrying: false,
                ..
            })
        ));
        assert_eq!(capture.try_take().err(), Some(TakeError::Closed));
    }

    #[test]
    fn corrupt_frames_are_skipped_and_sequence_gaps_counted() {
        let corrupt = || CameraError::CorruptFrame {
            format: PixelFormat::Mjpeg,
            sequence: 1,
            reason: "no EOI".into(),
        };
        let script = Scripted {
            frames: [frame(0), Step::Fail(corrupt), frame(4)].into(),
            reconnects: VecDeque::new(),
        };
        let (capture, _) = run(script, fast());
        let stats = capture.stats();
        assert_eq!(
            (stats.corrupt, stats.sequence_gaps, stats.captured),
            (1, 3, 2)
        );
    }

    #[test]
    fn frames_older_than_max_age_are_discarded_as_stale() {
        let old = Step::Frame {
            sequence: 0,
            age: Duration::from_secs(60),
        };
        let script = Scripted {
            frames: [old].into(),
            reconnects: VecDeque::new(),
        };
        let options = CaptureOptions {
            max_age: Some(Duration::from_secs(1)),
            ..fast()
        };
        let before = monotonic_now();
        let (capture, _) = run(script, options);
        assert_eq!(
            capture.take(Some(Duration::from_millis(50))).err(),
            Some(TakeError::Closed)
        );
        assert_eq!(capture.stats().stale, 1);
        assert_eq!(capture.stats().delivered, 0);
        // The discarded frame was still delivered by the source: that is when it last spoke.
        let at = capture.last_captured_at().expect("a delivery");
        assert!(before <= at && at <= monotonic_now(), "{at:?}");
    }

    #[test]
    fn take_times_out_while_the_source_is_silent() {
        struct Silent;
        impl FrameSource for Silent {
            fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
                std::thread::sleep(Duration::from_millis(20));
                Err(CameraError::Timeout {
                    device: "silent".into(),
                    timeout_ms: 20,
                })
            }
            fn reconnect(&mut self) -> Result<(), CameraError> {
                Ok(())
            }
            fn describe(&self) -> String {
                "silent".into()
            }
        }
        let capture = Capture::spawn(Silent, fast(), |_: &HealthEvent| {}).expect("spawn");
        assert_eq!(
            capture.take(Some(Duration::from_millis(30))).err(),
            Some(TakeError::Timeout)
        );
        assert_eq!(capture.last_captured_at(), None, "nothing was delivered");
        capture.stop();
    }

    #[test]
    fn corrupt_frame_warnings_are_one_line_then_a_count_per_interval() {
        let err = CameraError::CorruptFrame {
            format: PixelFormat::Mjpeg,
            sequence: 7,
            reason: "no EOI".into(),
        };
        let mut log = CorruptLog::default();
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // 80,000 corrupt frames a second for 25 s, then good frames.
        let step = Duration::from_micros(12);
        let mut t = t0;
        while t < t0 + Duration::from_secs(25) {
            lines.extend(log.dropped(t, &err));
            t += step;
        }
        lines.extend(log.good(t));
        lines.extend(log.good(t + CORRUPT_LOG_INTERVAL));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("dropping a frame: corrupt "),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("more corrupt frames"), "{}", lines[1]);
        assert!(lines[3].contains("frames are good again"), "{}", lines[3]);
        assert_eq!(log.good(t + CORRUPT_LOG_INTERVAL * 3), None, "all counted");
    }
}
