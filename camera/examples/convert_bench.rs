//! Conversion benchmark: nanoseconds per frame for every input format at 640x480 and 1280x800 into
//! 256, 512 and 768 square RGB model inputs (and mono for the NIR formats), plus the MJPEG decoder
//! comparison (zune-jpeg directly vs the `image` crate).
//!
//! cargo run --release -p autoneural-camera --example convert_bench [-- --out bench/camera-conversions.md]
//!
//! Writes a markdown table (default bench/camera-conversions.md) and prints it.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use autoneural_camera::{Channels, Converter, OutputSpec, PixelFormat};

/// A camera-like test image: smooth gradients with some texture, so JPEG sizes are realistic.
fn test_rgb(w: u32, h: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let t = ((x * 7 + y * 13) % 32) as u8;
            rgb.extend_from_slice(&[
                (x * 255 / w) as u8 ^ t,
                (y * 255 / h) as u8,
                ((x + y) * 255 / (w + h)) as u8 ^ (t / 2),
            ]);
        }
    }
    rgb
}

fn yuv(p: &[u8]) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y as u8, u as u8, v as u8)
}

/// The test image in `format` (raw, tightly packed), as (data, stride).
fn encode(format: PixelFormat, rgb: &[u8], w: u32, h: u32) -> Result<(Vec<u8>, u32)> {
    let px = |x: u32, y: u32| &rgb[((y * w + x) * 3) as usize..][..3];
    let mut out = Vec::new();
    let stride = match format {
        PixelFormat::Yuyv => {
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let (y0, u, v) = yuv(px(x, y));
                    let (y1, _, _) = yuv(px(x + 1, y));
                    out.extend_from_slice(&[y0, u, y1, v]);
                }
            }
            w * 2
        }
        PixelFormat::Nv12 => {
            for y in 0..h {
                for x in 0..w {
                    out.push(yuv(px(x, y)).0);
                }
            }
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    let (_, u, v) = yuv(px(x, y));
                    out.extend_from_slice(&[u, v]);
                }
            }
            w
        }
        PixelFormat::Grey => {
            out.extend(rgb.chunks(3).map(|p| yuv(p).0));
            w
        }
        PixelFormat::Y16 => {
            for p in rgb.chunks(3) {
                let l = u16::from(yuv(p).0) * 257;
                out.extend_from_slice(&l.to_le_bytes());
            }
            w * 2
        }
        PixelFormat::Rgb24 => {
            out.extend_from_slice(rgb);
            w * 3
        }
        PixelFormat::Mjpeg => {
            let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).context("image size")?;
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img)?;
            0
        }
    };
    Ok((out, stride))
}

/// Median time of `f` over enough runs to fill `budget` (at least 5, after 2 warm-up runs).
fn measure(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    for _ in 0..2 {
        f()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/camera-conversions.md"
    ));
    let mut budget = Duration::from_millis(400);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = args.next().context("--out wants a path")?.into(),
            "--budget-ms" => {
                budget =
                    Duration::from_millis(args.next().context("--budget-ms wants ms")?.parse()?)
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let sizes = [(640u32, 480u32), (1280, 800)];
    let outputs = [256u32, 512, 768];
    let cases: [(&str, PixelFormat, Channels, bool); 9] = [
        ("YUYV -> RGB", PixelFormat::Yuyv, Channels::Rgb, false),
        ("NV12 -> RGB", PixelFormat::Nv12, Channels::Rgb, false),
        (
            "MJPEG -> RGB (zune-jpeg, used)",
            PixelFormat::Mjpeg,
            Channels::Rgb,
            false,
        ),
        (
            "MJPEG -> RGB (image crate)",
            PixelFormat::Mjpeg,
            Channels::Rgb,
            true,
        ),
        (
            "GREY -> RGB (replicated)",
            PixelFormat::Grey,
            Channels::Rgb,
            false,
        ),
        (
            "Y16 -> RGB (replicated)",
            PixelFormat::Y16,
            Channels::Rgb,
            false,
        ),
        ("RGB24 -> RGB", PixelFormat::Rgb24, Channels::Rgb, false),
        ("GREY -> mono", PixelFormat::Grey, Channels::Mono, false),
        ("YUYV -> mono", PixelFormat::Yuyv, Channels::Mono, false),
    ];

    let mut table = String::new();
    writeln!(table, "# Camera conversions: nanoseconds per frame")?;
    writeln!(table)?;
    writeln!(
        table,
        "`cargo run --release -p autoneural-camera --example convert_bench` (median of repeated runs; \
         frame -> packed 8-bit model input, bilinear resize with fast_image_resize, stretch). \
         Machine: {} logical CPUs, load average {} at the start (shared build machine: treat as upper bounds).",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    )?;
    writeln!(table)?;
    write!(table, "| conversion | input |")?;
    for o in outputs {
        write!(table, " -> {o}x{o} |")?;
    }
    writeln!(table)?;
    writeln!(table, "|---|---|{}", "---:|".repeat(outputs.len()))?;
    for (label, format, channels, via_image) in cases {
        for (w, h) in sizes {
            let rgb = test_rgb(w, h);
            let (data, stride) = encode(format, &rgb, w, h)?;
            write!(table, "| {label} | {w}x{h} |")?;
            for size in outputs {
                let mut converter = Converter::new(OutputSpec::square(size, channels))?;
                let t = if via_image {
                    measure(budget, || {
                        let img =
                            image::load_from_memory_with_format(&data, image::ImageFormat::Jpeg)?
                                .to_rgb8();
                        black_box(converter.convert_raw(
                            PixelFormat::Rgb24,
                            img.width(),
                            img.height(),
                            img.width() * 3,
                            img.as_raw(),
                        )?);
                        Ok(())
                    })?
                } else {
                    measure(budget, || {
                        black_box(converter.convert_raw(format, w, h, stride, &data)?);
                        Ok(())
                    })?
                };
                write!(table, " {} |", group(t.as_nanos()))?;
            }
            writeln!(table)?;
            eprint!(".");
        }
    }
    eprintln!();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    print!("{table}");
    eprintln!("written to {}", out.display());
    Ok(())
}

/// 1234567 -> "1 234 567".
fn group(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}
