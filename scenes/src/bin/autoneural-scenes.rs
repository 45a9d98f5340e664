//! autoneural-scenes: render synthetic cabin scenes — data sets for training and evaluation, the
//! frames of a scenario, and a speed measurement.
//!
//! ```text
//! autoneural-scenes render --count N --size S --seed K --out DIR [--shifted] [--jobs J]
//! autoneural-scenes scenario NAME|FILE.toml --size S --out DIR
//! autoneural-scenes bench [--size S] [--frames N]
//! autoneural-scenes list
//! ```

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autoneural_camera::PixelFormat;
use autoneural_scenes::{LabelRecord, Scenario, Scene, SceneImage, Variation};
use lexopt::ValueExt;

const USAGE: &str = "usage:
  autoneural-scenes render --count N --size S --seed K --out DIR [--shifted] [--jobs J]
      writes DIR/images/NNNNNN.png and DIR/labels.jsonl (ARCHITECTURE.md contract 2)
  autoneural-scenes scenario NAME|FILE.toml --size S --out DIR
      renders every frame of a scenario; labels.jsonl lines also carry time_s
  autoneural-scenes bench [--size S] [--frames N]
      frames per second of the renderer on one core
  autoneural-scenes list
      the built-in scenarios";

fn main() -> Result<()> {
    let mut args = lexopt::Parser::from_env();
    let command = match args.next()? {
        Some(lexopt::Arg::Value(v)) => v.string()?,
        Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h')) | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => bail!("{}\n{USAGE}", other.unexpected()),
    };
    match command.as_str() {
        "render" => render(&mut args),
        "scenario" => scenario(&mut args),
        "bench" => bench(&mut args),
        "list" => {
            for (name, text) in autoneural_scenes::BUILTIN {
                let first = text.lines().next().unwrap_or("").trim_start_matches("# ");
                println!("{name:16} {first}");
            }
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

struct Options {
    count: u64,
    size: u32,
    seed: u64,
    out: Option<PathBuf>,
    shifted: bool,
    jobs: usize,
    frames: u64,
    positional: Option<String>,
}

fn parse(args: &mut lexopt::Parser) -> Result<Options> {
    use lexopt::prelude::*;
    let mut o = Options {
        count: 0,
        size: 128,
        seed: 0,
        out: None,
        shifted: false,
        jobs: 1,
        frames: 200,
        positional: None,
    };
    while let Some(arg) = args.next()? {
        match arg {
            Long("count") => o.count = args.value()?.parse()?,
            Long("size") => o.size = args.value()?.parse()?,
            Long("seed") => o.seed = args.value()?.parse()?,
            Long("out") => o.out = Some(args.value()?.into()),
            Long("shifted") => o.shifted = true,
            Long("jobs") => o.jobs = args.value()?.parse::<usize>()?.max(1),
            Long("frames") => o.frames = args.value()?.parse()?,
            Value(v) if o.positional.is_none() => o.positional = Some(v.string()?),
            other => bail!("{}\n{USAGE}", other.unexpected()),
        }
    }
    if o.size == 0 || o.size > 8192 {
        bail!("--size must be 1..=8192, not {}", o.size);
    }
    Ok(o)
}

fn save_png(path: &Path, img: &SceneImage) -> Result<()> {
    let colour = match img.format {
        PixelFormat::Grey => image::ExtendedColorType::L8,
        _ => image::ExtendedColorType::Rgb8,
    };
    image::save_buffer(path, &img.data, img.width, img.height, colour)
        .with_context(|| format!("writing {}", path.display()))
}

fn render(args: &mut lexopt::Parser) -> Result<()> {
    let o = parse(args)?;
    let out = o.out.context("--out DIR is required")?;
    if o.count == 0 {
        bail!("--count N (N > 0) is required");
    }
    fs::create_dir_all(out.join("images"))
        .with_context(|| format!("creating {}", out.display()))?;
    let variation = if o.shifted {
        Variation::Shifted
    } else {
        Variation::Train
    };
    let started = Instant::now();
    // Workers render disjoint index ranges; their label lines are joined in index order.
    let chunk = o.count.div_ceil(o.jobs as u64);
    let parts: Vec<Result<Vec<String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.jobs as u64)
            .map(|j| {
                let out = &out;
                s.spawn(move || -> Result<Vec<String>> {
                    let mut lines = Vec::new();
                    for index in (j * chunk)..((j + 1) * chunk).min(o.count) {
                        let scene = Scene::sample(o.seed, index, variation);
                        let name = format!("images/{index:06}.png");
                        save_png(&out.join(&name), &scene.render(o.size, o.size))?;
                        let record = LabelRecord {
                            image: name,
                            seed: o.seed,
                            index,
                            labels: scene.labels,
                            description: scene.labels.description(),
                        };
                        lines.push(serde_json::to_string(&record)?);
                    }
                    Ok(lines)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a render worker panicked"))
            })
            .collect()
    });
    let path = out.join("labels.jsonl");
    let mut labels = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for part in parts {
        for line in part? {
            writeln!(labels, "{line}")?;
        }
    }
    labels.flush()?;
    eprintln!(
        "rendered {} {}x{} scenes ({}) to {} in {:.1} s",
        o.count,
        o.size,
        o.size,
        if o.shifted {
            "shifted"
        } else {
            "train distribution"
        },
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn scenario(args: &mut lexopt::Parser) -> Result<()> {
    let o = parse(args)?;
    let out = o.out.context("--out DIR is required")?;
    let which = o
        .positional
        .context("which scenario? a built-in name (see `list`) or a .toml file")?;
    let s = match Scenario::builtin(&which) {
        Some(s) => s,
        None => Scenario::load(Path::new(&which))?,
    };
    fs::create_dir_all(out.join("images"))
        .with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("labels.jsonl");
    let mut labels = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    for frame in s.frames(o.size, o.size) {
        let name = format!("images/{:06}.png", frame.index);
        save_png(&out.join(&name), &frame.image)?;
        let record = LabelRecord {
            image: name,
            seed: s.seed,
            index: frame.index,
            labels: frame.labels,
            description: frame.description,
        };
        let mut value = serde_json::to_value(&record)?;
        value["time_s"] = serde_json::json!(frame.timestamp.as_secs_f64());
        writeln!(labels, "{value}")?;
    }
    labels.flush()?;
    eprintln!(
        "rendered {} frames of {:?} to {}",
        s.frame_count(),
        s.name,
        out.display()
    );
    Ok(())
}

fn bench(args: &mut lexopt::Parser) -> Result<()> {
    let o = parse(args)?;
    let sizes: Vec<u32> = if o.size == 128 && o.positional.is_none() {
        vec![128, 256, 768]
    } else {
        vec![o.size]
    };
    for size in sizes {
        let frames =
            (o.frames * 256 * 256 / (u64::from(size) * u64::from(size))).clamp(10, o.frames);
        let started = Instant::now();
        let mut bytes = 0usize;
        for i in 0..frames {
            bytes += Scene::sample(1, i, Variation::Train)
                .render(size, size)
                .data
                .len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{size}x{size}: {:.1} frames/s on one thread ({frames} frames, {bytes} bytes)",
            frames as f64 / secs
        );
    }
    Ok(())
}
