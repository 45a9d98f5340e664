//! End-to-end test against a real V4L2 driver: boots the Debian kernel in QEMU with the vivid test
//! driver (tests/vivid/run-vm.sh), runs the `capture` example inside the guest in YUYV, GREY, NV12
//! and Y16 and through an unplug/replug of the device, then checks what came out: frame counts,
//! sequence numbers, monotonic driver timestamps, vivid's colour bars at the right places in the
//! converted images, and the reconnect.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// vivid's default 75 % colour bars, left to right.
const BARS: [&str; 8] = [
    "white", "yellow", "cyan", "green", "magenta", "red", "blue", "black",
];

fn capture_example() -> PathBuf {
    // Integration tests live in target/<profile>/deps; examples in target/<profile>/examples.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let example = profile_dir.join("examples").join("capture");
    if !example.exists() {
        // `cargo test` builds examples, but a filtered run (`--test vivid_vm`) may not have.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "autoneural-camera", "--example", "capture"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the capture example failed");
    }
    example
}

struct Run {
    summary: HashMap<String, String>,
    stdout: String,
    /// (sequence, timestamp µs, latency µs) per delivered frame.
    frames: Vec<(u64, u64, u64)>,
    dir: PathBuf,
}

fn load(out: &Path, name: &str) -> Run {
    let dir = out.join(name);
    let stdout = std::fs::read_to_string(dir.join("stdout.txt"))
        .unwrap_or_else(|e| panic!("{name}: no stdout.txt ({e})"));
    let summary_line = stdout
        .lines()
        .find(|l| l.starts_with("SUMMARY "))
        .unwrap_or_else(|| panic!("{name}: capture did not finish:\n{stdout}"));
    let summary = summary_line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tsv = std::fs::read_to_string(dir.join("frames.tsv")).expect("frames.tsv");
    let frames = tsv
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<u64> = line
                .split('\t')
                .take(4)
                .map(|c| c.parse().expect("number"))
                .collect();
            (cols[1], cols[2], cols[3])
        })
        .collect();
    Run {
        summary,
        stdout,
        frames,
        dir,
    }
}

impl Run {
    fn get(&self, key: &str) -> &str {
        self.summary.get(key).map(String::as_str).unwrap_or("")
    }

    fn number(&self, key: &str) -> u64 {
        self.get(key).parse().unwrap_or(u64::MAX)
    }

    /// Sequence numbers and driver timestamps strictly increase, and the timestamps are on the
    /// guest's CLOCK_MONOTONIC (a frame is never "from the future" or hours old).
    fn check_sequence_and_timestamps(&self, name: &str) {
        for pair in self.frames.windows(2) {
            let ((s0, t0, _), (s1, t1, _)) = (pair[0], pair[1]);
            assert!(s1 > s0, "{name}: sequence {s0} then {s1}");
            assert!(t1 > t0, "{name}: timestamp {t0} then {t1} µs");
        }
        for &(seq, _, latency) in &self.frames {
            assert!(
                latency < 10_000_000,
                "{name}: frame {seq} is {latency} µs old: not CLOCK_MONOTONIC?"
            );
        }
    }

    /// The converted frame's row at 3/4 height (below vivid's text overlay) shows the eight bars.
    fn check_bars(&self, name: &str, mono: bool) {
        let index = self.frames.len() - 1;
        let path = self.dir.join(format!("frame-{index:03}.png"));
        let img = image::open(&path)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", path.display()))
            .to_rgb8();
        let y = img.height() * 3 / 4;
        let samples: Vec<[u8; 3]> = (0..8)
            .map(|bar| img.get_pixel((2 * bar + 1) * img.width() / 16, y).0)
            .collect();
        if mono {
            let luma: Vec<u8> = samples.iter().map(|p| p[0]).collect();
            assert!(
                luma.windows(2).all(|w| w[0] > w[1]) && luma[0] > 150 && luma[7] < 40,
                "{name}: bar brightness should fall from white to black: {luma:?}"
            );
        } else {
            let seen: Vec<&str> = samples.iter().map(|&p| colour(p)).collect();
            assert_eq!(seen, BARS, "{name}: bars {samples:?}");
        }
    }
}

/// Names a saturated colour by which channels are lit.
fn colour([r, g, b]: [u8; 3]) -> &'static str {
    let on = |c: u8| c > 140;
    let off = |c: u8| c < 60;
    match (on(r), on(g), on(b)) {
        _ if off(r) && off(g) && off(b) => "black",
        (true, true, true) => "white",
        (true, true, false) if off(b) => "yellow",
        (false, true, true) if off(r) => "cyan",
        (false, true, false) if off(r) && off(b) => "green",
        (true, false, true) if off(g) => "magenta",
        (true, false, false) if off(g) && off(b) => "red",
        (false, false, true) if off(r) && off(g) => "blue",
        _ => "?",
    }
}

#[test]
fn vivid_capture_in_a_vm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vivid-vm");
    let status = Command::new("bash")
        .arg(root.join("tests/vivid/run-vm.sh"))
        .arg(capture_example())
        .arg(&work)
        .status()
        .expect("running tests/vivid/run-vm.sh");
    assert!(
        status.success(),
        "the vivid VM run failed (see the output above)"
    );
    let out = work.join("out");

    for (name, format, count, mono) in [
        ("yuyv", "YUYV", 30, false),
        ("grey", "GREY", 10, true),
        ("nv12", "NV12", 10, false),
        ("y16", "Y16", 5, true),
    ] {
        let run = load(&out, name);
        assert_eq!(run.get("format"), format, "{name}: {}", run.stdout);
        assert_eq!((run.get("width"), run.get("height")), ("640", "480"));
        assert_eq!(run.frames.len(), count, "{name}");
        assert_eq!(run.number("frames"), count as u64, "{name}");
        assert_eq!(run.number("convert_errors"), 0, "{name}");
        run.check_sequence_and_timestamps(name);
        run.check_bars(name, mono);
    }

    // The capture directory replays as is (timing.tsv written by the example).
    let mut config = autoneural_camera::ReplayConfig::new(out.join("yuyv"));
    config.pace = autoneural_camera::Pace::AsFastAsPossible;
    let mut replay = autoneural_camera::ReplaySource::open(config).expect("replay of the capture");
    let mut replayed = 0;
    while let Some(frame) =
        autoneural_camera::FrameSource::next_frame(&mut replay).expect("replays")
    {
        assert_eq!((frame.width, frame.height), (320, 240));
        replayed += 1;
    }
    assert_eq!(replayed, 30);

    // Unplug and replug mid-stream: the capture reports the loss, reconnects, and finishes.
    let replug = load(&out, "replug");
    let serial = std::fs::read_to_string(out.join("serial.txt")).expect("serial log");
    assert!(
        serial.contains("VM-UNBOUND") && serial.contains("VM-BOUND"),
        "{serial}"
    );
    assert_eq!(replug.frames.len(), 60);
    assert!(replug.number("reconnects") >= 1, "{}", replug.stdout);
    let health: Vec<&str> = replug
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("health: "))
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    let lost = health
        .iter()
        .position(|h| *h == "Reconnecting")
        .expect("a Reconnecting event");
    assert!(
        health[lost..].contains(&"Streaming"),
        "streaming again after the loss: {health:?}"
    );
    // The replugged device starts counting again: exactly one place where the sequence restarts.
    let restarts: Vec<usize> = (1..replug.frames.len())
        .filter(|&i| replug.frames[i].0 <= replug.frames[i - 1].0)
        .collect();
    assert_eq!(restarts.len(), 1, "{:?}", replug.frames);
    // Timestamps stay monotonic across the replug (same clock); sequences increase on each side.
    for w in replug.frames.windows(2) {
        assert!(w[1].1 > w[0].1, "timestamps {:?}", replug.frames);
    }
    for part in [&replug.frames[..restarts[0]], &replug.frames[restarts[0]..]] {
        assert!(part.windows(2).all(|w| w[1].0 > w[0].0), "{part:?}");
    }
}
