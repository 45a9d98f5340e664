//! Speed of a published LFM2-VL ONNX release on the CPU: one markdown table row per run.
//!
//! cargo run --release -p autoneural-inference --example release_bench -- --model DIR \
//!     [--variant fp32|q4|...] [--threads N] [--iters N] [--image FILE] [--label TEXT] [--out FILE]
//!
//! Per iteration, on a 640x480 frame (the image, resized; default a grey gradient) with a new frame
//! id: vision (image processor + embed_images), prefix prefill (chat template + image tokens), the 8
//! instruction-style probes from the shared prefix, then TTFT of a question on the encoded frame and
//! decode tokens/s over 32 tokens (stop tokens ignored, so every run decodes the same count).
//! Medians over --iters. Run on an idle machine; the row records the load average.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use autoneural_inference::{
    CpuOptions, Engine, EngineConfig, Frame, GenerateParams, PixelLayout, Provider,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn frame(image: Option<&PathBuf>, id: u64) -> Result<Frame> {
    let (w, h) = (640u32, 480u32);
    let data = match image {
        Some(p) => image::open(p)?
            .resize_exact(w, h, image::imageops::FilterType::Triangle)
            .to_rgb8()
            .into_raw(),
        None => (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, 128]))
            .collect(),
    };
    Ok(Frame::new(id, w, h, PixelLayout::Rgb8, data))
}

fn main() -> Result<()> {
    let mut model = None;
    let mut variant = None;
    let mut threads = 2usize;
    let mut iters = 3usize;
    let mut image = None;
    let mut label = None;
    let mut out = None;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => model = Some(PathBuf::from(args.value()?)),
            Long("variant") => variant = Some(args.value()?.string()?),
            Long("threads") => threads = args.value()?.parse()?,
            Long("iters") => iters = args.value()?.parse()?,
            Long("image") => image = Some(PathBuf::from(args.value()?)),
            Long("label") => label = Some(args.value()?.string()?),
            Long("out") => out = Some(PathBuf::from(args.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let model = model.context("--model DIR is required")?;
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut config = EngineConfig::new(&model);
    config.variant = variant.clone();
    config.providers = vec![Provider::Cpu(CpuOptions::with_threads(threads))];
    let t = Instant::now();
    let mut engine =
        Engine::load(&config).with_context(|| format!("loading {}", model.display()))?;
    let load = t.elapsed();
    let probes = engine.probes().probes.clone();
    let never = AtomicBool::new(false);
    let params = GenerateParams {
        max_tokens: 32,
        use_bundle_stop_tokens: false,
        ..GenerateParams::default()
    };
    let (mut vision, mut prefix, mut probe, mut ttft, mut decode) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut prefix_tokens = 0;
    let mut question_tokens = 0;
    for i in 0..iters.max(1) {
        let f = frame(image.as_ref(), 1000 + i as u64)?;
        let enc = engine.encode_frame(&f)?;
        vision.push(ms(enc.preprocess + enc.vision));
        prefix.push(ms(enc.prefix_prefill));
        prefix_tokens = enc.prefix_tokens;
        let p = engine.probe(&f, &probes)?;
        probe.push(ms(p.timings.probe));
        let g = engine.generate(
            &f,
            "What is the driver doing?",
            &params,
            &mut |_| {},
            &never,
        )?;
        question_tokens = g.timings.prefill_tokens;
        ttft.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
        if g.timings.decode_tokens > 0 {
            decode.push(g.timings.decode_tokens as f64 / g.timings.decode.as_secs_f64());
        }
    }
    let name = label.unwrap_or_else(|| engine.name().to_string());
    let row = format!(
        "| {name} | {} | {threads} | {:.0} | {:.0} ({prefix_tokens} tok) | {:.0} ({}) | {:.0} ({question_tokens} tok) | {:.1} | {:.1} | {} |",
        engine.variant(),
        median(vision),
        median(prefix),
        median(probe),
        probes.len(),
        median(ttft),
        median(decode),
        load.as_secs_f64(),
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "| model | variant | threads | vision ms | prefix prefill ms | probes ms | TTFT ms (encoded frame) | decode tok/s | load s | load avg before |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!("{row}");
    if let Some(path) = out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{row}")?;
    }
    Ok(())
}
