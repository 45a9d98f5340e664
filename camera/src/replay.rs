//! Replay: plays a directory of images or raw frames as a [`FrameSource`], in real time or as fast as
//! possible, optionally looping — for offline evaluation and tests.
//!
//! Directory layout:
//! - images (`.png`, `.jpg`, `.jpeg`) and/or raw frames (`.raw`, `.yuv`, ...), and
//! - optionally `timing.tsv`: one line per frame, `FILE TIMESTAMP_US [FORMAT WIDTH HEIGHT [STRIDE]]`
//!   (whitespace-separated, `#` starts a comment). Raw files need the format and size; images decode
//!   to RGB24 (GREY for grey-scale images). Timestamps only set the pacing (their differences).
//!   Without `timing.tsv`, every image in the directory plays in name order at `interval`.
//!
//! The `capture` example writes `timing.tsv` next to its frames, so a capture replays as is.
//! Frames are stamped with the monotonic time they are produced at (the source contract); their
//! sequence numbers continue across loops and reconnects.
//!
//! A replay fails like a camera: a directory that is missing or holds no frames, or a frame file
//! that cannot be read, is an error that asks for a reconnect ([`crate::Recovery::Reconnect`]), and
//! [`FrameSource::reconnect`] reads the directory again and plays from its first frame. So a
//! capture loop retries it with back-off until the frames are back. A malformed `timing.tsv` is
//! retried the same way (it may be being rewritten; the error names its line), so fixing it
//! brings the frames back. An undecodable image is a corrupt frame (skipped). In real time
//! a corrupt frame still takes its slot, so a burst of them neither spins nor leaves the good
//! frames after it waiting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{CameraError, Frame, FrameSource, PixelFormat, convert, monotonic_now};

/// How fast to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Keep the recorded spacing between frames.
    RealTime,
    /// Produce each frame as soon as it is asked for.
    AsFastAsPossible,
}

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub dir: PathBuf,
    pub pace: Pace,
    pub looping: bool,
    /// Spacing when the directory has no `timing.tsv`.
    pub interval: Duration,
}

impl ReplayConfig {
    pub fn new(dir: impl Into<PathBuf>) -> ReplayConfig {
        ReplayConfig {
            dir: dir.into(),
            pace: Pace::RealTime,
            looping: false,
            interval: Duration::from_micros(33_333),
        }
    }
}

/// One entry of the play list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    file: PathBuf,
    /// Offset from the first frame.
    at: Duration,
    /// Format and geometry for raw files; `None` for images.
    raw: Option<(PixelFormat, u32, u32, u32)>,
}

pub struct ReplaySource {
    config: ReplayConfig,
    entries: Vec<Entry>,
    /// Length of one pass, for pacing loops (last offset + one typical interval).
    period: Duration,
    next: usize,
    pass: u32,
    sequence: u64,
    started: Option<Instant>,
    spare: Vec<u8>,
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

impl ReplaySource {
    /// Reads the play list. A missing or empty directory, or a malformed `timing.tsv`, is a
    /// reconnectable error (the frames may appear later, the file may be fixed).
    pub fn open(config: ReplayConfig) -> Result<ReplaySource, CameraError> {
        let device = format!("replay {}", config.dir.display());
        let timing = config.dir.join("timing.tsv");
        let entries = if timing.exists() {
            let text = std::fs::read_to_string(&timing)
                .map_err(|e| CameraError::from_io(&device, "read timing.tsv", e))?;
            parse_timing(&config.dir, &text).map_err(|reason| CameraError::Replay {
                path: timing.display().to_string(),
                reason,
            })?
        } else {
            list_images(&config.dir, config.interval)
                .map_err(|e| CameraError::from_io(&device, "list the directory", e))?
        };
        if entries.is_empty() {
            return Err(CameraError::DeviceGone {
                device,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no frames (no timing.tsv and no images)",
                ),
            });
        }
        let last = entries[entries.len() - 1].at;
        let step = if entries.len() > 1 {
            last / (entries.len() as u32 - 1)
        } else {
            config.interval
        };
        Ok(ReplaySource {
            period: last + step,
            entries,
            config,
            next: 0,
            pass: 0,
            sequence: 0,
            started: None,
            spare: Vec::new(),
        })
    }

    /// Frames per pass.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sleeps until `entry` is due. The schedule never runs ahead of the clock: a frame that is
    /// due more than one pass in the past (the process was stopped, a file took long to read)
    /// moves the schedule to now instead of playing the frames it missed in a burst.
    fn wait_for(&mut self, entry: &Entry) {
        let offset = self
            .period
            .saturating_mul(self.pass)
            .saturating_add(entry.at);
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let due = started.checked_add(offset).unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > self.period {
            self.started = match now.checked_sub(offset) {
                Some(started) => Some(started),
                None => {
                    // The offset reaches before the clock's origin: start the passes over.
                    self.pass = 0;
                    Some(now.checked_sub(entry.at).unwrap_or(now))
                }
            };
        }
    }

    fn load(&mut self, entry: &Entry) -> Result<Frame, CameraError> {
        let sequence = self.sequence;
        let corrupt = |format: PixelFormat, reason: String| CameraError::CorruptFrame {
            format,
            sequence,
            reason: format!("{}: {reason}", entry.file.display()),
        };
        // A frame that cannot be read is a camera that went away (the directory was moved,
        // unmounted, ...): reconnect, not give up.
        let bytes = std::fs::read(&entry.file).map_err(|e| {
            CameraError::from_io(&format!("replay {}", entry.file.display()), "read", e)
        })?;
        let (format, width, height, stride, data) = match entry.raw {
            Some((format, width, height, stride)) => {
                if format != PixelFormat::Mjpeg {
                    convert::check_frame(format, width, height, stride, bytes.len())
                        .map_err(|e| corrupt(format, e.to_string()))?;
                }
                (format, width, height, stride, bytes)
            }
            None => {
                let img = image::load_from_memory(&bytes)
                    .map_err(|e| corrupt(PixelFormat::Rgb24, e.to_string()))?;
                let (w, h) = (img.width(), img.height());
                let channels = if img.color().channel_count() <= 2 {
                    1
                } else {
                    3
                };
                let mut data = reuse(
                    std::mem::take(&mut self.spare),
                    w as usize * h as usize * channels,
                );
                if img.color().channel_count() <= 2 {
                    data.extend_from_slice(img.to_luma8().as_raw());
                    (PixelFormat::Grey, w, h, w, data)
                } else {
                    data.extend_from_slice(img.to_rgb8().as_raw());
                    (PixelFormat::Rgb24, w, h, w * 3, data)
                }
            }
        };
        Ok(Frame {
            format,
            width,
            height,
            stride,
            data,
            timestamp: Duration::ZERO,
            sequence,
        })
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        if self.next == self.entries.len() {
            if !self.config.looping {
                return Ok(None);
            }
            self.next = 0;
            self.pass = self.pass.saturating_add(1);
        }
        let entry = self.entries[self.next].clone();
        self.next += 1;
        let result = self.load(&entry);
        self.sequence += 1;
        // A corrupt frame takes its slot like a good one (a camera delivers a bad frame at its
        // time too): returning it early made the schedule run ahead of the clock — a busy loop of
        // errors while every frame was corrupt, then a freeze until the clock caught up.
        if self.config.pace == Pace::RealTime {
            self.wait_for(&entry);
        }
        let mut frame = result?;
        frame.timestamp = monotonic_now();
        Ok(Some(frame))
    }

    /// Reads the directory again and plays from its first frame; sequence numbers continue.
    fn reconnect(&mut self) -> Result<(), CameraError> {
        let fresh = ReplaySource::open(self.config.clone())?;
        self.period = fresh.period;
        self.entries = fresh.entries;
        self.next = 0;
        self.pass = 0;
        self.started = None;
        Ok(())
    }

    /// The latest buffer is kept (its size follows the stream), the older one dropped: one huge
    /// frame in a recording must not stay resident for the rest of the run.
    fn recycle(&mut self, buffer: Vec<u8>) {
        self.spare = buffer;
    }

    fn describe(&self) -> String {
        format!(
            "replay {} ({} frames{}{})",
            self.config.dir.display(),
            self.entries.len(),
            if self.config.pace == Pace::RealTime {
                ", real time"
            } else {
                ", fast"
            },
            if self.config.looping { ", looping" } else { "" }
        )
    }
}

/// `spare` emptied for a frame of `need` bytes, or a fresh buffer when `spare` is more than twice
/// that (the allocation of an earlier, much larger frame goes back to the system).
fn reuse(mut spare: Vec<u8>, need: usize) -> Vec<u8> {
    if spare.capacity() > need.saturating_mul(2) {
        return Vec::with_capacity(need);
    }
    spare.clear();
    spare
}

fn list_images(dir: &Path, interval: Duration) -> std::io::Result<Vec<Entry>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .enumerate()
        .map(|(i, file)| Entry {
            file,
            at: interval * i as u32,
            raw: None,
        })
        .collect())
}

fn parse_timing(dir: &Path, text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut first: Option<u64> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        let number = |i: usize, what: &str| -> Result<u64, String> {
            cols.get(i)
                .ok_or_else(|| bad(&format!("missing {what}")))?
                .parse::<u64>()
                .map_err(|_| bad(&format!("{what} is not a number")))
        };
        let file = dir.join(cols[0]);
        if file.strip_prefix(dir).is_err() || cols[0].contains("..") {
            return Err(bad("the file must be inside the directory"));
        }
        let us = number(1, "timestamp")?;
        let base = *first.get_or_insert(us);
        let at = us
            .checked_sub(base)
            .ok_or_else(|| bad("timestamps must not go backwards from the first"))?;
        if let Some(prev) = entries.last().map(|e: &Entry| e.at)
            && Duration::from_micros(at) < prev
        {
            return Err(bad("timestamps must not go backwards"));
        }
        let raw = match cols.get(2) {
            None => {
                let ext = file.extension().and_then(|x| x.to_str()).unwrap_or("");
                if !IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
                    return Err(bad("a raw frame needs FORMAT WIDTH HEIGHT"));
                }
                None
            }
            Some(name) => {
                let format = PixelFormat::parse(name).ok_or_else(|| bad("unknown pixel format"))?;
                let width = number(3, "width")? as u32;
                let height = number(4, "height")? as u32;
                let stride = match cols.get(5) {
                    Some(_) => number(5, "stride")? as u32,
                    None => format.min_stride(width).unwrap_or(0) as u32,
                };
                Some((format, width, height, stride))
            }
        };
        entries.push(Entry {
            file,
            at: Duration::from_micros(at),
            raw,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("autoneural-replay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_huge_frame_does_not_stay_resident_after_it() {
        let dir = temp_dir("huge");
        png(&dir, "000.png", 10);
        image::RgbImage::new(2000, 1500)
            .save(dir.join("001.png"))
            .unwrap();
        png(&dir, "002.png", 30);
        png(&dir, "003.png", 40);
        let mut cfg = ReplayConfig::new(&dir);
        cfg.pace = Pace::AsFastAsPossible;
        let mut src = ReplaySource::open(cfg).unwrap();
        for _ in 0..4 {
            let f = src.next_frame().unwrap().unwrap();
            src.recycle(f.data);
        }
        let small = 3 * 4 * 4;
        assert!(
            src.spare.capacity() <= 2 * small,
            "a {} byte buffer kept after a {small} byte frame",
            src.spare.capacity()
        );
    }

    #[test]
    fn images_and_raw_frames_play_in_order_with_their_formats() {
        let dir = temp_dir("mixed");
        image::RgbImage::from_pixel(4, 2, image::Rgb([10, 20, 30]))
            .save(dir.join("a.png"))
            .expect("png");
        image::GrayImage::from_pixel(3, 3, image::Luma([99]))
            .save(dir.join("b.png"))
            .expect("png");
        std::fs::write(dir.join("c.raw"), [235, 128, 16, 128]).expect("raw");
        std::fs::write(
            dir.join("timing.tsv"),
            "# file ts\na.png 1000\nb.png 2000\nc.raw 3000 YUYV 2 1\n",
        )
        .expect("timing");
        let mut config = ReplayConfig::new(&dir);
        config.pace = Pace::AsFastAsPossible;
        let mut replay = ReplaySource::open(config).expect("opens");
        let a = replay.next_frame().expect("ok").expect("frame");
        assert_eq!(
            (a.format, a.width, a.height, a.stride),
            (PixelFormat::Rgb24, 4, 2, 12)
        );
        assert_eq!(a.data[..3], [10, 20, 30]);
        let b = replay.next_frame().expect("ok").expect("frame");
        assert_eq!((b.format, b.data[0]), (PixelFormat::Grey, 99));
        let c = replay.next_frame().expect("ok").expect("frame");
        assert_eq!((c.format, c.width, c.sequence), (PixelFormat::Yuyv, 2, 2));
        assert!(
            replay.next_frame().expect("ok").is_none(),
            "ends without looping"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn real_time_looping_keeps_the_spacing_and_counts_on() {
        let dir = temp_dir("loop");
        for name in ["0.png", "1.png"] {
            image::GrayImage::new(2, 2)
                .save(dir.join(name))
                .expect("png");
        }
        let mut config = ReplayConfig::new(&dir);
        config.looping = true;
        config.interval = Duration::from_millis(20);
        let mut replay = ReplaySource::open(config).expect("opens");
        let frames: Vec<Frame> = (0..4)
            .map(|_| replay.next_frame().expect("ok").expect("frame"))
            .collect();
        let seqs: Vec<u64> = frames.iter().map(|f| f.sequence).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        // Four frames 20 ms apart span at least 60 ms of the monotonic clock.
        assert!(frames[3].timestamp - frames[0].timestamp >= Duration::from_millis(59));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_timing_files_and_truncated_raw_frames_are_errors() {
        let dir = temp_dir("bad");
        for (timing, needle) in [
            ("x.raw 0\n", "raw frame needs"),
            ("x.raw zero YUYV 2 2\n", "not a number"),
            ("x.raw 0 H264 2 2\n", "unknown pixel format"),
            ("../x.png 0\n", "inside the directory"),
            ("a.png 5\nb.png 1\n", "backwards"),
        ] {
            std::fs::write(dir.join("timing.tsv"), timing).expect("timing");
            let err = ReplaySource::open(ReplayConfig::new(&dir))
                .err()
                .expect("rejected");
            assert!(err.to_string().contains(needle), "{timing:?}: {err}");
        }
        std::fs::write(dir.join("short.raw"), [0u8; 7]).expect("raw");
        std::fs::write(dir.join("timing.tsv"), "short.raw 0 YUYV 2 2\n").expect("timing");
        let mut replay = ReplaySource::open(ReplayConfig::new(&dir)).expect("opens");
        let err = replay.next_frame().expect_err("truncated");
        assert_eq!(err.recovery(), crate::Recovery::SkipFrame, "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let missing = ReplaySource::open(ReplayConfig::new("/nonexistent/replay"))
            .err()
            .expect("a missing directory is an error");
        assert_eq!(missing.recovery(), crate::Recovery::Reconnect, "{missing}");
    }

    #[test]
    fn a_vanished_directory_asks_for_a_reconnect_and_plays_again_when_back() {
        let dir = temp_dir("vanish");
        let away = dir.with_extension("away");
        let _ = std::fs::remove_dir_all(&away);
        for (name, grey) in [("0.png", 10u8), ("1.png", 20)] {
            image::GrayImage::from_pixel(2, 2, image::Luma([grey]))
                .save(dir.join(name))
                .expect("png");
        }
        let mut config = ReplayConfig::new(&dir);
        config.pace = Pace::AsFastAsPossible;
        config.looping = true;
        let mut replay = ReplaySource::open(config).expect("opens");
        let first = replay.next_frame().expect("ok").expect("frame");
        assert_eq!(first.data[0], 10);

        std::fs::rename(&dir, &away).expect("move away");
        let gone = replay.next_frame().expect_err("the frames are gone");
        assert_eq!(gone.recovery(), crate::Recovery::Reconnect, "{gone}");
        let still_gone = replay.reconnect().expect_err("still gone");
        assert_eq!(still_gone.recovery(), crate::Recovery::Reconnect);

        std::fs::rename(&away, &dir).expect("move back");
        replay.reconnect().expect("back");
        let again = replay.next_frame().expect("ok").expect("frame");
        assert_eq!(again.data[0], 10, "plays from the first frame");
        assert!(again.sequence > first.sequence, "sequence numbers continue");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_directory_is_a_camera_not_there_yet() {
        let dir = temp_dir("empty");
        let err = ReplaySource::open(ReplayConfig::new(&dir))
            .err()
            .expect("no frames");
        assert_eq!(err.recovery(), crate::Recovery::Reconnect, "{err}");
        assert!(err.to_string().contains("no frames"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every log line of the process (the logger is process-wide; each test filters by its own
    /// directory, which the lines name).
    fn log_lines() -> &'static std::sync::Mutex<Vec<String>> {
        struct Lines(std::sync::Mutex<Vec<String>>);
        impl log::Log for Lines {
            fn enabled(&self, _: &log::Metadata) -> bool {
                true
            }
            fn log(&self, record: &log::Record) {
                let line = format!("{} {}", record.level(), record.args());
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
            fn flush(&self) {}
        }
        static LINES: Lines = Lines(std::sync::Mutex::new(Vec::new()));
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            if log::set_logger(&LINES).is_ok() {
                log::set_max_level(log::LevelFilter::Debug);
            }
        });
        &LINES.0
    }

    fn lines_about(dir: &Path, word: &str) -> Vec<String> {
        let dir = dir.display().to_string();
        log_lines()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(&dir) && l.contains(word))
            .cloned()
            .collect()
    }

    fn png(dir: &Path, name: &str, value: u8) {
        // Written whole and renamed, so that the replay never reads half a file.
        let tmp = dir.join(format!(".{name}.tmp.png"));
        image::RgbImage::from_pixel(4, 4, image::Rgb([value, value, value]))
            .save(&tmp)
            .expect("png");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }

    /// Issue 16 (2): a burst of corrupt frames used to return before pacing while the pass counter
    /// advanced: a busy loop of warnings, then a freeze until the clock caught up with the passes.
    #[test]
    fn a_corrupt_burst_neither_spins_nor_delays_the_good_frames_after_it() {
        use crate::{Capture, CaptureOptions, HealthEvent};
        let _ = log_lines();
        let dir = temp_dir("corrupt-burst");
        let names = ["0.png", "1.png", "2.png", "3.png"];
        for name in names {
            std::fs::write(dir.join(name), b"not a png at all").expect("corrupt");
        }
        let mut config = ReplayConfig::new(&dir);
        config.looping = true;
        config.interval = Duration::from_millis(20);
        let replay = ReplaySource::open(config).expect("opens");
        let capture =
            Capture::spawn(replay, CaptureOptions::default(), |_: &HealthEvent| {}).expect("spawn");
        let burst = Duration::from_millis(400);
        std::thread::sleep(burst);
        let corrupt = capture.stats().corrupt;
        // Paced like good frames: ~20 in 400 ms at 20 ms (it was tens of thousands).
        assert!(
            (5..=40).contains(&corrupt),
            "{corrupt} corrupt frames in {burst:?}"
        );

        for (i, name) in names.iter().enumerate() {
            png(&dir, name, i as u8);
        }
        let frames = capture.frames();
        let back = Instant::now();
        let first = frames
            .take(Some(Duration::from_secs(2)))
            .expect("good frames arrive after the burst");
        let waited = back.elapsed();
        // At most one pass (4 frames x 20 ms) plus a corrupt frame that was being read; it was
        // minutes.
        assert!(
            waited < Duration::from_millis(250),
            "first good frame after {waited:?}"
        );
        assert_eq!(first.width, 4);
        // And they keep their spacing: 10 more frames in about 200 ms, neither frozen nor burst.
        let t = Instant::now();
        for _ in 0..10 {
            frames.take(Some(Duration::from_secs(1))).expect("frame");
        }
        let ten = t.elapsed();
        assert!(
            ten >= Duration::from_millis(150) && ten < Duration::from_millis(600),
            "10 frames in {ten:?} at 20 ms"
        );
        capture.stop();

        // The warnings were rate-limited: the first of the burst only (a count follows at most
        // every CORRUPT_LOG_INTERVAL, which this test is shorter than).
        let warnings = lines_about(&dir, "corrupt");
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 16 (3): a malformed `timing.tsv` seen during a reconnect ended the capture
    /// (`Failed { retrying: false }`): a daemon alive and blind after the file was fixed.
    #[test]
    fn a_timing_file_broken_during_a_reconnect_is_retried_until_it_is_fixed() {
        use crate::{Capture, CaptureOptions, Health, HealthEvent};
        let dir = temp_dir("timing-fixed");
        let good = "a.raw 0 YUYV 2 2\nb.raw 20000 YUYV 2 2\n";
        std::fs::write(dir.join("a.raw"), [16u8; 8]).expect("raw");
        std::fs::write(dir.join("b.raw"), [16u8; 8]).expect("raw");
        std::fs::write(dir.join("timing.tsv"), good).expect("timing");
        let mut config = ReplayConfig::new(&dir);
        config.looping = true;
        let replay = ReplaySource::open(config).expect("opens");
        let (tx, rx) = std::sync::mpsc::channel();
        let options = CaptureOptions {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            fail_after: 3,
            max_age: None,
        };
        let capture = Capture::spawn(replay, options, move |e: &HealthEvent| {
            let _ = tx.send(e.health.clone());
        })
        .expect("spawn");
        let frames = capture.frames();
        frames
            .take(Some(Duration::from_secs(2)))
            .expect("streaming");

        // The recording is being rewritten: a timing file that does not parse, and a frame file
        // gone (which makes the capture reconnect, and so read the timing file again).
        std::fs::write(dir.join("timing.tsv"), "a.raw zero YUYV 2 2\n").expect("timing");
        std::fs::remove_file(dir.join("b.raw")).expect("remove");
        let deadline = Instant::now() + Duration::from_secs(5);
        let failed = loop {
            assert!(
                Instant::now() < deadline,
                "the bad timing file was never reported"
            );
            if let Ok(Health::Failed { reason, retrying }) =
                rx.recv_timeout(Duration::from_millis(100))
            {
                break (reason, retrying);
            }
        };
        assert!(
            failed.1,
            "gave up on a source that can be fixed: {}",
            failed.0
        );
        assert!(failed.0.contains("not a number"), "{}", failed.0);

        // Fixed: frames resume, without a restart.
        std::fs::write(dir.join("b.raw"), [16u8; 8]).expect("raw");
        std::fs::write(dir.join("timing.tsv"), good).expect("timing");
        let _ = frames.try_take();
        frames
            .take(Some(Duration::from_secs(3)))
            .expect("frames resume once the file is fixed");
        assert!(
            rx.try_iter().any(|h| matches!(h, Health::Streaming { .. })),
            "streaming again"
        );
        capture.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
