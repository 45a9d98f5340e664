//! A [`FrameSource`] that plays a [`Scenario`]: the synthetic camera of the demo and the tests.

use std::time::Duration;

use autoneural_camera::{CameraError, Frame, FrameSource, PixelFormat, monotonic_now};

use crate::labels::SceneLabels;
use crate::scenario::Scenario;

/// Plays a scenario frame by frame.
///
/// Frame `i` is stamped `epoch + i / fps`, where `epoch` is the monotonic time the source was created
/// (or a fixed one, see [`ScenarioSource::with_epoch`]), so timestamps follow the scenario clock and
/// `frame.timestamp - epoch` maps any frame back to its ground truth with [`ScenarioSource::labels_for`].
/// With `realtime` the source behaves like a live camera: it sleeps until each frame's time and,
/// when rendering is slower than the scenario's fps (an emulated or overloaded CPU), it skips the
/// frames whose time has already passed and renders the one due now, so a frame's timestamp is never
/// older than one frame period when its rendering starts (the skipped sequence numbers are a gap, as
/// a V4L2 driver's lost frames are). Without `realtime`, every frame comes, as fast as it can be
/// rendered (tests, benchmarks, data sets). The source ends after the last frame unless it loops; a
/// looping source keeps the clock running (loop `k` starts at `k * duration`).
pub struct ScenarioSource {
    scenario: Scenario,
    width: u32,
    height: u32,
    realtime: bool,
    looping: bool,
    epoch: Duration,
    next: u64,
}

impl ScenarioSource {
    pub fn new(scenario: Scenario, width: u32, height: u32) -> Self {
        ScenarioSource {
            scenario,
            width,
            height,
            realtime: false,
            looping: false,
            epoch: monotonic_now(),
            next: 0,
        }
    }

    /// Sleep until each frame's time instead of producing frames as fast as possible.
    pub fn realtime(mut self, realtime: bool) -> Self {
        self.realtime = realtime;
        self
    }

    /// Start again from the beginning after the last frame, forever.
    pub fn looping(mut self, looping: bool) -> Self {
        self.looping = looping;
        self
    }

    /// Use a fixed epoch (e.g. `Duration::ZERO`) so timestamps are exactly the scenario clock.
    pub fn with_epoch(mut self, epoch: Duration) -> Self {
        self.epoch = epoch;
        self
    }

    pub fn epoch(&self) -> Duration {
        self.epoch
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The timestamp of the frame with this sequence number (laps included).
    fn stamp(&self, sequence: u64) -> Duration {
        let count = self.scenario.frame_count().max(1);
        let (lap, index) = (sequence / count, sequence % count);
        self.epoch + self.scenario.duration() * lap as u32 + self.scenario.timestamp(index)
    }

    /// The ground truth of the frame stamped `timestamp` by this source.
    pub fn labels_for(&self, timestamp: Duration) -> SceneLabels {
        let t = timestamp.saturating_sub(self.epoch).as_secs_f64();
        let duration = self.scenario.duration().as_secs_f64();
        let t = if self.looping && duration > 0.0 {
            t % duration
        } else {
            t
        };
        self.scenario.labels_at(Duration::from_secs_f64(t))
    }
}

impl FrameSource for ScenarioSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        let count = self.scenario.frame_count();
        if count == 0 || (!self.looping && self.next >= count) {
            return Ok(None);
        }
        if self.realtime {
            // A live camera does not queue the frames it could not deliver in time. Without this, a
            // renderer slower than the fps stamps frame i with epoch + i / fps further and further
            // in the past, and once that lag passes the consumer's maximum frame age (the daemon's
            // frame_timeout_ms) every frame is discarded as stale: under qemu the daemon got frame 0
            // and then only `camera: no frame for N ms`.
            let now = monotonic_now();
            while (self.looping || self.next + 1 < count) && self.stamp(self.next + 1) <= now {
                self.next += 1;
            }
        }
        let sequence = self.next;
        let (lap, index) = (sequence / count, sequence % count);
        let rendered = self.scenario.frame(index, self.width, self.height);
        let timestamp = self.epoch + self.scenario.duration() * lap as u32 + rendered.timestamp;
        debug_assert_eq!(timestamp, self.stamp(sequence));
        if self.realtime {
            let now = monotonic_now();
            if timestamp > now {
                std::thread::sleep(timestamp - now);
            }
        }
        self.next += 1;
        let image = rendered.image;
        let stride = match image.format {
            PixelFormat::Grey => image.width,
            _ => image.width * 3,
        };
        Ok(Some(Frame {
            format: image.format,
            width: image.width,
            height: image.height,
            stride,
            data: image.data,
            timestamp,
            sequence,
        }))
    }

    fn reconnect(&mut self) -> Result<(), CameraError> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "synthetic scenario {:?} {}x{} @ {} fps",
            self.scenario.name, self.width, self.height, self.scenario.fps
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phone;

    #[test]
    fn frames_carry_the_scenario_clock_and_end() {
        let scenario = Scenario::builtin("phone-use").expect("shipped");
        let count = scenario.frame_count();
        let mut src = ScenarioSource::new(scenario, 32, 24).with_epoch(Duration::from_secs(100));
        let mut n = 0;
        let mut phone_frames = 0;
        while let Some(f) = src.next_frame().expect("synthetic frames never fail") {
            assert_eq!(f.sequence, n);
            assert_eq!(
                f.timestamp,
                Duration::from_secs(100) + Duration::from_secs_f64(n as f64 / 10.0)
            );
            assert_eq!(f.data.len(), (f.stride * f.height) as usize);
            phone_frames += usize::from(src.labels_for(f.timestamp).phone != Phone::None);
            n += 1;
        }
        assert_eq!(n, count);
        assert_eq!(
            phone_frames, 80,
            "phone in hand 4-9 s and at the ear 9-12 s at 10 fps"
        );
        assert!(src.next_frame().expect("ended").is_none());
    }

    #[test]
    fn a_realtime_source_that_fell_behind_renders_the_frame_due_now() {
        // As when rendering is slower than the fps: the clock is 5 s past frame 0. The source
        // skips frames 1-49 instead of delivering frames stamped ever further in the past.
        let scenario = Scenario::builtin("phone-use").expect("shipped");
        let count = scenario.frame_count();
        let behind = Duration::from_millis(5_050);
        let mut src = ScenarioSource::new(scenario, 32, 24)
            .with_epoch(monotonic_now() - behind)
            .realtime(true);
        let first = src.next_frame().expect("ok").expect("a frame");
        assert!(
            first.sequence >= 50,
            "frame {} of a clock 5 s in",
            first.sequence
        );
        assert!(
            first.age() < Duration::from_secs(1),
            "frame {} is {:?} old",
            first.sequence,
            first.age()
        );
        assert_eq!(
            src.labels_for(first.timestamp),
            src.scenario().labels_at(first.timestamp - src.epoch())
        );
        let second = src.next_frame().expect("ok").expect("a frame");
        assert!(second.sequence > first.sequence && second.timestamp > first.timestamp);
        assert!(second.age() < Duration::from_secs(1));

        // Looping: 30 s behind on a 12 s scenario is lap 2, ~6 s in; without looping, a source
        // whose whole scenario is past gives its last frame, then ends.
        let scenario = Scenario::builtin("mirror-glance").expect("shipped");
        let count_mirror = scenario.frame_count();
        let mut src = ScenarioSource::new(scenario, 8, 8)
            .with_epoch(monotonic_now() - Duration::from_secs(30))
            .realtime(true)
            .looping(true);
        let f = src.next_frame().expect("ok").expect("loops");
        assert!(f.sequence / count_mirror == 2 && f.age() < Duration::from_secs(1));
        let phone = Scenario::builtin("phone-use").expect("shipped");
        let past_the_end = phone.duration() + Duration::from_secs(2);
        let mut src = ScenarioSource::new(phone, 8, 8)
            .with_epoch(monotonic_now() - past_the_end)
            .realtime(true);
        assert_eq!(
            src.next_frame().expect("ok").expect("last").sequence,
            count - 1
        );
        assert!(src.next_frame().expect("ok").is_none());
    }

    #[test]
    fn looping_keeps_the_clock_running() {
        let scenario = Scenario::builtin("mirror-glance").expect("shipped");
        let count = scenario.frame_count();
        let mut src = ScenarioSource::new(scenario, 8, 8)
            .with_epoch(Duration::ZERO)
            .looping(true);
        let frames: Vec<Frame> = (0..count + 2)
            .map(|_| src.next_frame().expect("ok").expect("loops"))
            .collect();
        assert_eq!(frames[count as usize].timestamp, Duration::from_secs(12));
        assert_eq!(frames[count as usize].data, frames[0].data);
        assert_eq!(
            src.labels_for(Duration::from_secs(17)),
            src.labels_for(Duration::from_secs(5))
        );
    }
}
