//! Ask a bundle about an image, or run its probes, and print the answers with timings.
//!
//! cargo run --release -p autoneural-inference --example vlm -- --bundle models/tiny-random \
//!     --image models/tiny-random/golden/0.png (--ask "Describe the driver." | --probe FILE|bundle) \
//!     [--ep qnn|cpu] [--variant NAME] [--cache DIR] [--max-tokens N] [--require-full-offload]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use autoneural_inference::{
    CpuOptions, Engine, EngineConfig, Frame, GenerateParams, PixelLayout, ProbeSet, Provider,
    QnnOptions,
};

fn main() -> Result<()> {
    let mut bundle = None;
    let mut image = None;
    let mut ask = None;
    let mut probe = None;
    let mut ep = "cpu".to_string();
    let mut variant = None;
    let mut cache = None;
    let mut max_tokens = 64usize;
    let mut full = false;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("bundle") => bundle = Some(PathBuf::from(args.value()?)),
            Long("image") => image = Some(PathBuf::from(args.value()?)),
            Long("ask") => ask = Some(args.value()?.string()?),
            Long("probe") => probe = Some(args.value()?.string()?),
            Long("ep") => ep = args.value()?.string()?,
            Long("variant") => variant = Some(args.value()?.string()?),
            Long("cache") => cache = Some(PathBuf::from(args.value()?)),
            Long("max-tokens") => max_tokens = args.value()?.parse()?,
            Long("require-full-offload") => full = true,
            Long("help") | Short('h') => {
                println!(
                    "vlm --bundle DIR --image FILE (--ask TEXT | --probe FILE|bundle) [--ep qnn|cpu] [--variant NAME] [--cache DIR] [--max-tokens N] [--require-full-offload]"
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let bundle = bundle.context("--bundle DIR is required")?;
    let image = image.context("--image FILE is required")?;
    if ask.is_none() == probe.is_none() {
        bail!("give exactly one of --ask TEXT or --probe FILE|bundle");
    }
    let mut config = EngineConfig::new(&bundle);
    config.variant = variant;
    config.require_full_offload = full;
    config.cache_dir = cache;
    config.providers = match ep.as_str() {
        "cpu" => vec![Provider::Cpu(CpuOptions::default())],
        "qnn" => vec![Provider::Qnn(QnnOptions::default())],
        other => bail!("--ep {other}: use qnn or cpu"),
    };
    let engine_start = std::time::Instant::now();
    let mut engine =
        Engine::load(&config).with_context(|| format!("loading {}", bundle.display()))?;
    println!(
        "model {} variant {} loaded in {:.1} ms",
        engine.name(),
        engine.variant(),
        engine_start.elapsed().as_secs_f64() * 1e3
    );
    for r in engine.reports() {
        println!("  {r}");
    }
    let img = image::open(&image)
        .with_context(|| format!("reading {}", image.display()))?
        .to_rgb8();
    let frame = Frame::new(
        1,
        img.width(),
        img.height(),
        PixelLayout::Rgb8,
        img.into_raw(),
    );

    if let Some(question) = ask {
        let params = GenerateParams {
            max_tokens,
            ..Default::default()
        };
        print!("Q: {question}\nA: ");
        let mut out = std::io::stdout();
        let g = engine.generate(
            &frame,
            &question,
            &params,
            &mut |t| {
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
            },
            &AtomicBool::new(false),
        )?;
        println!("\nfinish: {:?}, {} tokens", g.finish, g.tokens.len());
        println!("timings: {}", g.timings);
    } else if let Some(p) = probe {
        let set = if p == "bundle" {
            engine.probes().clone()
        } else {
            ProbeSet::load(std::path::Path::new(&p))?
        };
        let outcome = engine.probe(&frame, &set.probes)?;
        for a in &outcome.answers {
            let probs: Vec<String> = a
                .probabilities
                .iter()
                .map(|(k, v)| format!("{k}={v:.4}"))
                .collect();
            println!(
                "{:<10} {:<14} P({})={:.4}  [{}]",
                a.id,
                a.answer,
                a.field,
                a.field_probability,
                probs.join(", ")
            );
        }
        println!("timings: {}", outcome.timings);
    }
    Ok(())
}
