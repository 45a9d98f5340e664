//! Scenarios: a timeline of driver states (TOML) rendered at a frame rate with per-frame ground
//! truth, for the demo, the end-to-end tests and the benchmarks.
//!
//! ```toml
//! name = "phone use"
//! fps = 10                 # frames per second of scenario time
//! seed = 7                 # who drives and how the car looks
//! lighting = "day"         # any label may be set here as the default for every segment
//!
//! [[segment]]
//! from = 0.0               # seconds; segments must tile the timeline from 0 without gaps
//! to = 4.0                 # (the base state is an attentive driver, see SceneLabels::attentive)
//!
//! [[segment]]
//! from = 4.0
//! to = 9.0
//! gaze = "down"
//! phone = "in hand"
//! hands_on_wheel = 1
//! ```
//!
//! Timestamps come from the scenario clock (frame index / fps). Natural blinks (about 150 ms every
//! 2.5-5 s) are added while eyes are open unless `blinks = false`; they appear in the labels.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::appearance::{Appearance, Variation};
use super::labels::{Eyes, Face, Gaze, Lighting, Phone, SceneLabels};
use super::rng::Rng;
use super::scene::{Pose, Scene, SceneImage};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line of the problem in the scenario file, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => Some(*line),
            ScenarioError::Io { .. } => None,
        }
    }
}

/// Label fields a scenario or a segment may set; unset ones inherit.
#[derive(Debug, Default, Clone)]
struct LabelOverrides {
    eyes: Option<Eyes>,
    gaze: Option<Gaze>,
    yawning: Option<bool>,
    phone: Option<Phone>,
    hands_on_wheel: Option<Spanned<u8>>,
    seat_belt: Option<bool>,
    sunglasses: Option<bool>,
    face: Option<Face>,
    passenger: Option<bool>,
    lighting: Option<Lighting>,
}

impl LabelOverrides {
    fn apply(&self, mut l: SceneLabels) -> SceneLabels {
        l.eyes = self.eyes.unwrap_or(l.eyes);
        l.gaze = self.gaze.unwrap_or(l.gaze);
        l.yawning = self.yawning.unwrap_or(l.yawning);
        l.phone = self.phone.unwrap_or(l.phone);
        l.hands_on_wheel = self
            .hands_on_wheel
            .as_ref()
            .map(|h| *h.get_ref())
            .unwrap_or(l.hands_on_wheel);
        l.seat_belt = self.seat_belt.unwrap_or(l.seat_belt);
        l.sunglasses = self.sunglasses.unwrap_or(l.sunglasses);
        l.face = self.face.unwrap_or(l.face);
        l.passenger = self.passenger.unwrap_or(l.passenger);
        l.lighting = self.lighting.unwrap_or(l.lighting);
        l
    }
}

/// A file struct with the label fields inline (serde's `flatten` would lose the line numbers and
/// the unknown-key check, so the fields are spelled out by this macro instead).
macro_rules! with_label_fields {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident : $ty:ty $(= $default:expr)?,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[serde(default = $default)])? $field: $ty,)*
            eyes: Option<Eyes>,
            gaze: Option<Gaze>,
            yawning: Option<bool>,
            phone: Option<Phone>,
            hands_on_wheel: Option<Spanned<u8>>,
            seat_belt: Option<bool>,
            sunglasses: Option<bool>,
            face: Option<Face>,
            passenger: Option<bool>,
            lighting: Option<Lighting>,
        }

        impl $name {
            fn labels(&self) -> LabelOverrides {
                LabelOverrides {
                    eyes: self.eyes,
                    gaze: self.gaze,
                    yawning: self.yawning,
                    phone: self.phone,
                    hands_on_wheel: self.hands_on_wheel.clone(),
                    seat_belt: self.seat_belt,
                    sunglasses: self.sunglasses,
                    face: self.face,
                    passenger: self.passenger,
                    lighting: self.lighting,
                }
            }
        }
    };
}

with_label_fields! {
    struct SegmentFile {
        from: Spanned<f64>,
        to: Spanned<f64>,
    }
}

with_label_fields! {
    struct ScenarioFile {
        name: String,
        fps: Spanned<f64>,
        seed: u64 = "zero",
        blinks: bool = "yes",
        segment: Vec<SegmentFile> = "Vec::new",
    }
}

fn zero() -> u64 {
    0
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
struct Segment {
    to: f64,
    labels: SceneLabels,
}

/// A parsed scenario. Frame `i` is at `i / fps` seconds; `frame_count` frames cover the timeline.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub fps: f64,
    pub seed: u64,
    blinks: bool,
    segments: Vec<Segment>,
    appearance: Appearance,
    motion: [(f32, f32); 4],
}

/// One rendered frame of a scenario.
#[derive(Debug, Clone)]
pub struct ScenarioFrame {
    pub index: u64,
    /// Scenario time of the frame.
    pub timestamp: Duration,
    pub labels: SceneLabels,
    pub description: String,
    pub image: SceneImage,
}

/// The scenarios that ship with the project: (name, TOML).
pub const BUILTIN: [(&str, &str); 6] = [
    (
        "attentive-drive",
        include_str!("../scenarios/attentive-drive.toml"),
    ),
    ("phone-use", include_str!("../scenarios/phone-use.toml")),
    ("microsleep", include_str!("../scenarios/microsleep.toml")),
    (
        "mirror-glance",
        include_str!("../scenarios/mirror-glance.toml"),
    ),
    (
        "vats-glances",
        include_str!("../scenarios/vats-glances.toml"),
    ),
    ("face-lost", include_str!("../scenarios/face-lost.toml")),
];

fn line_of(text: &str, span: Option<Range<usize>>) -> usize {
    let at = span.map(|s| s.start).unwrap_or(0).min(text.len());
    1 + text[..at].bytes().filter(|&b| b == b'\n').count()
}

impl Scenario {
    /// A shipped scenario by name (see [`BUILTIN`]).
    pub fn builtin(name: &str) -> Option<Scenario> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Scenario::parse_named(text, name).ok()
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse_named(&text, &path.display().to_string())
    }

    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse_named(text, "scenario")
    }

    /// Parses `text`; errors name `origin` and the line.
    pub fn parse_named(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |span: Option<Range<usize>>, message: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            line: line_of(text, span),
            message,
        };
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let fps = *file.fps.get_ref();
        if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
            return Err(invalid(
                Some(file.fps.span()),
                format!("fps must be in (0, 1000], not {fps}"),
            ));
        }
        if file.segment.is_empty() {
            return Err(invalid(
                None,
                "a scenario needs at least one [[segment]]".into(),
            ));
        }
        let file_labels = file.labels();
        let base = file_labels.apply(SceneLabels::attentive());
        let mut segments = Vec::new();
        let mut end = 0.0;
        for seg in &file.segment {
            let (from, to) = (*seg.from.get_ref(), *seg.to.get_ref());
            if (from - end).abs() > 1e-9 {
                return Err(invalid(
                    Some(seg.from.span()),
                    format!(
                        "segment starts at {from} s but the previous one ends at {end} s (segments must follow each other without gaps)"
                    ),
                ));
            }
            if !(to.is_finite() && to > from) {
                return Err(invalid(
                    Some(seg.to.span()),
                    format!("segment must end after it starts ({from} s), not at {to} s"),
                ));
            }
            let seg_labels = seg.labels();
            let hands = seg_labels
                .hands_on_wheel
                .as_ref()
                .or(file_labels.hands_on_wheel.as_ref());
            if let Some(h) = hands.filter(|h| *h.get_ref() > 2) {
                return Err(invalid(
                    Some(h.span()),
                    format!("hands_on_wheel is 0, 1 or 2, not {}", h.get_ref()),
                ));
            }
            let wanted = seg_labels.apply(base);
            let labels = wanted.normalised();
            if labels.hands_on_wheel != wanted.hands_on_wheel && seg_labels.hands_on_wheel.is_some()
            {
                return Err(invalid(
                    Some(seg.from.span()),
                    format!(
                        "{} hands on the wheel is impossible with the phone or face state of this segment",
                        wanted.hands_on_wheel
                    ),
                ));
            }
            segments.push(Segment { to, labels });
            end = to;
        }
        let mut rng = Rng::for_item(file.seed, 0, 0x5ce0);
        let appearance = Appearance::sample(&mut rng, Variation::Train);
        let motion = [0; 4].map(|_| (rng.range(0.1, 0.35), rng.range(0.0, std::f32::consts::TAU)));
        Ok(Scenario {
            name: file.name,
            fps,
            seed: file.seed,
            blinks: file.blinks,
            segments,
            appearance,
            motion,
        })
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.segments.last().map(|s| s.to).unwrap_or(0.0))
    }

    pub fn frame_count(&self) -> u64 {
        let end = self.segments.last().map(|s| s.to).unwrap_or(0.0);
        (end * self.fps - 1e-9).ceil().max(0.0) as u64
    }

    pub fn timestamp(&self, index: u64) -> Duration {
        Duration::from_secs_f64(index as f64 / self.fps)
    }

    /// Ground truth at scenario time `t` (the last segment's state after the end).
    pub fn labels_at(&self, t: Duration) -> SceneLabels {
        let t = t.as_secs_f64();
        let seg = self
            .segments
            .iter()
            .find(|s| t < s.to)
            .or(self.segments.last());
        let Some(seg) = seg else {
            return SceneLabels::attentive();
        };
        let mut labels = seg.labels;
        if self.blinks && self.blinking(t) && labels.eyes == Eyes::Open {
            let mut blink = labels;
            blink.eyes = Eyes::Closed;
            // A blink behind opaque sunglasses cannot be seen, so it is not labelled either.
            labels = blink.normalised();
        }
        labels
    }

    /// Blinks: 150 ms every 2.5-5 s, at times fixed by the seed.
    fn blinking(&self, t: f64) -> bool {
        let period_index = (t / 5.0).floor() as u64;
        // One blink per 5 s window at a seeded offset, plus a second one in about half the windows.
        let mut rng = Rng::for_item(self.seed, period_index, 0xb11c);
        let first = rng.range(0.0, 2.3) as f64;
        let second = first + rng.range(2.5, 2.65) as f64;
        let local = t - period_index as f64 * 5.0;
        let has_second = rng.chance(0.5);
        (local >= first && local < first + 0.15)
            || (has_second && local >= second && local < second + 0.15)
    }

    /// Renders frame `index` at `width` x `height`.
    pub fn frame(&self, index: u64, width: u32, height: u32) -> ScenarioFrame {
        let timestamp = self.timestamp(index);
        let labels = self.labels_at(timestamp);
        let t = timestamp.as_secs_f32();
        // Slow, smooth head motion inside the gaze's range; fresh sensor noise every frame.
        let wobble = self
            .motion
            .map(|(f, phase)| 0.6 * (std::f32::consts::TAU * f * t + phase).sin());
        let mut appearance = self.appearance.clone();
        appearance.noise_seed ^= index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let scene = Scene {
            labels,
            appearance,
            pose: Pose::for_labels(&labels, wobble),
        };
        ScenarioFrame {
            index,
            timestamp,
            labels,
            description: labels.description(),
            image: scene.render(width, height),
        }
    }

    /// Every frame in order.
    pub fn frames(&self, width: u32, height: u32) -> impl Iterator<Item = ScenarioFrame> + '_ {
        (0..self.frame_count()).map(move |i| self.frame(i, width, height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = r#"name = "phone"
fps = 10
seed = 3
blinks = false

[[segment]]
from = 0
to = 4

[[segment]]
from = 4
to = 9
gaze = "down"
phone = "in hand"
hands_on_wheel = 1
"#;

    #[test]
    fn labels_follow_the_timeline() {
        let s = Scenario::parse(PHONE).unwrap();
        assert_eq!(s.frame_count(), 90);
        assert_eq!(s.duration(), Duration::from_secs(9));
        let at = |secs: f64| s.labels_at(Duration::from_secs_f64(secs));
        assert_eq!(
            (at(3.9).phone, at(3.9).gaze, at(3.9).hands_on_wheel),
            (Phone::None, Gaze::Road, 2)
        );
        assert_eq!(
            (at(4.0).phone, at(4.0).gaze, at(4.0).hands_on_wheel),
            (Phone::InHand, Gaze::Down, 1)
        );
        let f = s.frame(45, 32, 32);
        assert_eq!(f.timestamp, Duration::from_millis(4500));
        assert_eq!(f.labels.phone, Phone::InHand);
        assert_eq!(f.description, f.labels.description());
        // Deterministic, and frames differ over time (noise and motion).
        assert_eq!(s.frame(45, 32, 32).image, f.image);
        assert_ne!(s.frame(46, 32, 32).image, f.image);
    }

    #[test]
    fn blinks_are_short_and_labelled() {
        let s = Scenario::parse(&PHONE.replace("blinks = false", "blinks = true")).unwrap();
        let closed: Vec<u64> = (0..40)
            .filter(|&i| s.frame(i, 8, 8).labels.eyes == Eyes::Closed)
            .collect();
        assert!(!closed.is_empty(), "no blink in the first 4 s");
        // At 10 fps a 150 ms blink closes the eyes for one or two consecutive frames.
        let longest = closed.windows(2).fold((1, 1), |(best, run), w| {
            let run = if w[1] == w[0] + 1 { run + 1 } else { 1 };
            (best.max(run), run)
        });
        assert!(longest.0 <= 2, "{closed:?}");
    }

    fn error_line(text: &str) -> (usize, String) {
        match Scenario::parse(text) {
            Err(e @ ScenarioError::Invalid { .. }) => (e.line().unwrap_or(0), e.to_string()),
            other => panic!("expected an invalid-scenario error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let (line, msg) = error_line(&PHONE.replace(r#"gaze = "down""#, r#"gaze = "sideways""#));
        assert_eq!(line, 13, "{msg}");
        assert!(msg.contains("sideways"), "{msg}");
        let (line, msg) = error_line(&PHONE.replace("from = 4\n", "from = 5\n"));
        assert_eq!(line, 11, "{msg}");
        assert!(msg.contains("gaps"), "{msg}");
        let (line, msg) = error_line(&PHONE.replace("to = 9", "to = 3"));
        assert_eq!(line, 12, "{msg}");
        let (line, msg) = error_line(&PHONE.replace("hands_on_wheel = 1", "hands_on_wheel = 2"));
        assert_eq!(line, 11, "{msg}");
        assert!(msg.contains("impossible"), "{msg}");
        let (line, msg) = error_line(&PHONE.replace("hands_on_wheel = 1", "hands_on_wheel = 7"));
        assert_eq!(line, 15, "{msg}");
        let (line, msg) = error_line(&PHONE.replace("seed = 3", "sede = 3"));
        assert_eq!(line, 3, "{msg}");
        let (line, msg) = error_line(&PHONE.replace("fps = 10", "fps = 0"));
        assert_eq!(line, 2, "{msg}");
        let (line, _) = error_line("name = \"x\"\nfps = [\n");
        assert!(line >= 2);
        let (_, msg) = error_line("name = \"x\"\nfps = 5\n");
        assert!(msg.contains("segment"), "{msg}");
    }

    #[test]
    fn shipped_scenarios_parse_and_say_what_they_promise() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse_named(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.frame_count() > 0, "{name}");
            assert!(Scenario::builtin(name).is_some());
        }
        let seconds = |name: &str, pred: &dyn Fn(&SceneLabels) -> bool| {
            let s = Scenario::builtin(name).unwrap();
            (0..s.frame_count())
                .filter(|&i| pred(&s.labels_at(s.timestamp(i))))
                .count() as f64
                / s.fps
        };
        assert!(seconds("phone-use", &|l| l.phone != Phone::None) >= 3.0);
        assert!(seconds("microsleep", &|l| l.eyes == Eyes::Closed) >= 1.0);
        assert!(seconds("mirror-glance", &|l| l.gaze == Gaze::LeftMirror) >= 3.0);
        assert!(seconds("vats-glances", &|l| l.gaze != Gaze::Road) >= 10.0);
        assert!(seconds("face-lost", &|l| l.face != Face::Visible) >= 10.0);
        assert_eq!(
            seconds("attentive-drive", &|l| l.gaze != Gaze::Road
                || l.phone != Phone::None),
            0.0
        );
    }
}
