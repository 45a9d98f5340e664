//! Captures frames from a V4L2 device through the latest-frame-wins hand-off, converts them to a
//! model input, optionally saves them, and prints rate, latency and conversion time.
//!
//! cargo run -p autoneural-camera --example capture -- --device /dev/video0 --format YUYV --count 30 --out DIR
//!
//! Options: --device PATH|by-id-name  --format LIST (comma-separated preference, default
//! YUYV,MJPEG,NV12,GREY,Y16)  --width/--height/--fps (requested)  --count N  --out DIR
//! --out-size WxH (default 256x256)  --mono  --gain N  --exposure N  --timeout-ms N
//! --max-seconds N (give up if N frames have not arrived by then, default 60).
//! In DIR: frame-NNN.png, frames.tsv (index, sequence, driver timestamp, latency, convert time) and
//! timing.tsv, which makes DIR playable by the replay source.
//! The last line printed starts with SUMMARY and is key=value pairs (the VM test parses it).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use autoneural_camera::{
    Capture, CaptureOptions, Channels, Converter, HealthEvent, OutputSpec, PixelFormat, TakeError,
    V4l2Config, V4l2Source, monotonic_now,
};

struct Args {
    config: V4l2Config,
    count: usize,
    out: Option<PathBuf>,
    spec: OutputSpec,
    max_seconds: u64,
}

fn parse_args() -> Result<Args> {
    use lexopt::prelude::*;
    let mut config = V4l2Config::default();
    let mut count = 30;
    let mut out = None;
    let mut spec = OutputSpec::square(256, Channels::Rgb);
    let mut max_seconds = 60;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("device") => config.device = parser.value()?.string()?,
            Long("format") => {
                let list = parser.value()?.string()?;
                config.formats = list
                    .split(',')
                    .map(|n| PixelFormat::parse(n).with_context(|| format!("unknown format {n:?}")))
                    .collect::<Result<_>>()?;
            }
            Long("width") => config.width = parser.value()?.parse()?,
            Long("height") => config.height = parser.value()?.parse()?,
            Long("fps") => config.fps = Some(parser.value()?.parse()?),
            Long("gain") => config.gain = Some(parser.value()?.parse()?),
            Long("exposure") => config.exposure = Some(parser.value()?.parse()?),
            Long("timeout-ms") => config.timeout = Duration::from_millis(parser.value()?.parse()?),
            Long("count") => count = parser.value()?.parse()?,
            Long("out") => out = Some(parser.value()?.parse()?),
            Long("out-size") => {
                let v = parser.value()?.string()?;
                let (w, h) = v.split_once('x').context("--out-size wants WxH")?;
                spec.width = w.parse()?;
                spec.height = h.parse()?;
            }
            Long("mono") => spec.channels = Channels::Mono,
            Long("max-seconds") => max_seconds = parser.value()?.parse()?,
            Long("help") => {
                println!("see the top of camera/examples/capture.rs");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Args {
        config,
        count,
        out,
        spec,
        max_seconds,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let source = V4l2Source::open(args.config.clone())
        .with_context(|| format!("opening {}", args.config.device))?;
    let negotiated = source.negotiated().cloned().context("not streaming")?;
    println!(
        "negotiated: {} {} {}x{} stride {} interval {:?} buffers {}",
        negotiated.path.display(),
        negotiated.format,
        negotiated.width,
        negotiated.height,
        negotiated.stride,
        negotiated.interval,
        negotiated.buffers
    );
    let capture = Capture::spawn(source, CaptureOptions::default(), |e: &HealthEvent| {
        println!("health: {:.3} {:?}", e.at.as_secs_f64(), e.health);
    })?;
    let mut converter = Converter::new(args.spec)?;
    let mut timing = match &args.out {
        Some(dir) => Some(std::fs::File::create(dir.join("timing.tsv"))?),
        None => None,
    };
    let mut tsv = match &args.out {
        Some(dir) => {
            let mut f = std::fs::File::create(dir.join("frames.tsv"))?;
            writeln!(
                f,
                "index\tsequence\ttimestamp_us\tlatency_us\tconvert_us\tformat\twidth\theight"
            )?;
            Some(f)
        }
        None => None,
    };

    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let (mut latencies, mut converts) = (Vec::new(), Vec::new());
    let (mut first_ts, mut last_ts) = (None, Duration::ZERO);
    let mut convert_errors = 0u64;
    while latencies.len() < args.count {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match capture.take(Some(left)) {
            Ok(frame) => frame,
            Err(TakeError::Timeout) => bail!(
                "only {} of {} frames within {} s",
                latencies.len(),
                args.count,
                args.max_seconds
            ),
            Err(TakeError::Closed) => bail!("capture ended: {:?}", capture.health()),
        };
        let latency = monotonic_now().saturating_sub(frame.timestamp);
        let started = Instant::now();
        let converted = match converter.convert(&frame) {
            Ok(pixels) => pixels,
            Err(e) => {
                convert_errors += 1;
                eprintln!("frame {} dropped: {e}", frame.sequence);
                continue;
            }
        };
        let convert = started.elapsed();
        let index = latencies.len();
        if let Some(dir) = &args.out {
            let color = match args.spec.channels {
                Channels::Rgb => image::ExtendedColorType::Rgb8,
                Channels::Mono => image::ExtendedColorType::L8,
            };
            let path = dir.join(format!("frame-{index:03}.png"));
            image::save_buffer(&path, converted, args.spec.width, args.spec.height, color)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(f) = tsv.as_mut() {
            writeln!(
                f,
                "{index}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                frame.sequence,
                frame.timestamp.as_micros(),
                latency.as_micros(),
                convert.as_micros(),
                frame.format,
                frame.width,
                frame.height
            )?;
        }
        if let Some(f) = timing.as_mut() {
            writeln!(f, "frame-{index:03}.png\t{}", frame.timestamp.as_micros())?;
        }
        first_ts.get_or_insert(frame.timestamp);
        last_ts = frame.timestamp;
        latencies.push(latency);
        converts.push(convert);
        capture.give_back(frame);
    }
    let stats = capture.stats();
    capture.stop();

    let span = last_ts
        .saturating_sub(first_ts.unwrap_or_default())
        .as_secs_f64();
    let fps = if span > 0.0 {
        (latencies.len() - 1) as f64 / span
    } else {
        0.0
    };
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() / v.len().max(1) as f64;
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default().as_secs_f64();
    println!(
        "{} frames at {:.1} fps; latency mean {:.2} ms, max {:.2} ms; convert mean {:.3} ms",
        latencies.len(),
        fps,
        mean(&latencies) * 1e3,
        max(&latencies) * 1e3,
        mean(&converts) * 1e3
    );
    println!(
        "SUMMARY format={} width={} height={} frames={} fps={:.2} latency_ms={:.2} convert_ms={:.3} dropped={} stale={} corrupt={} convert_errors={} gaps={} reconnects={}",
        negotiated.format,
        negotiated.width,
        negotiated.height,
        latencies.len(),
        fps,
        mean(&latencies) * 1e3,
        mean(&converts) * 1e3,
        stats.dropped,
        stats.stale,
        stats.corrupt,
        convert_errors,
        stats.sequence_gaps,
        stats.reconnects
    );
    Ok(())
}
