//! Inference benchmark for a bundle: prints a markdown report.
//!
//! cargo run --release -p autoneural-inference --example bench -- --bundle models/tiny-random \
//!     [--variant NAME] [--ep cpu|qnn] [--threads N] [--iters N] [--cache DIR] [--image FILE] [--compile]
//!
//! Reports session creation, vision latency, prefill tokens/s, TTFT (cold frame and reused prefix),
//! decode tokens/s at several KV positions, probe latency per frame with and without prefix reuse,
//! and the share of time spent outside ONNX Runtime's `Session::run`. Medians over --iters runs.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use autoneural_inference::{
    CpuOptions, Engine, EngineConfig, Frame, GenerateParams, PixelLayout, Provider, QnnOptions,
    Timings,
};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Outside {
    total: Duration,
    inside: Duration,
}

impl Outside {
    fn add(&mut self, t: &Timings) {
        self.total += t.total;
        self.inside += t.in_session_run;
    }
}

fn main() -> Result<()> {
    let mut bundle = None;
    let mut variant = None;
    let mut ep = "cpu".to_string();
    let mut threads = 0usize;
    let mut iters = 5usize;
    let mut cache = None;
    let mut image = None;
    let mut compile = false;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("bundle") => bundle = Some(PathBuf::from(args.value()?)),
            Long("variant") => variant = Some(args.value()?.string()?),
            Long("ep") => ep = args.value()?.string()?,
            Long("threads") => threads = args.value()?.parse()?,
            Long("iters") => iters = args.value()?.parse()?,
            Long("cache") => cache = Some(PathBuf::from(args.value()?)),
            Long("image") => image = Some(PathBuf::from(args.value()?)),
            // QNN: compile the ONNX graphs (through --cache) instead of loading the bundle's context binaries
            Long("compile") => compile = true,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let bundle = bundle.context("--bundle DIR is required")?;
    let iters = iters.max(1);
    let mut config = EngineConfig::new(&bundle);
    config.variant = variant;
    config.cache_dir = cache;
    config.providers = match ep.as_str() {
        "cpu" => vec![Provider::Cpu(CpuOptions::with_threads(threads))],
        "qnn" => {
            config.require_full_offload = true;
            vec![Provider::Qnn(QnnOptions {
                threads,
                use_bundle_context: !compile,
                ..Default::default()
            })]
        }
        other => bail!("--ep {other}: use cpu or qnn"),
    };
    let mut engine =
        Engine::load(&config).with_context(|| format!("loading {}", bundle.display()))?;
    let Some(bundle_loaded) = engine.bundle() else {
        bail!(
            "{}: this benchmark runs AutoNeural bundles (for a published release use `vlm`)",
            bundle.display()
        );
    };
    let m = bundle_loaded.manifest.clone();
    let size = m.image.size;
    let frame_of = |id: u64| -> Result<Frame> {
        Ok(match &image {
            Some(p) => {
                let img = image::open(p)?.to_rgb8();
                Frame::new(
                    id,
                    img.width(),
                    img.height(),
                    PixelLayout::Rgb8,
                    img.into_raw(),
                )
            }
            // A 1280x800 camera-like frame, resized by the preprocessor like a real one.
            None => {
                let (w, h) = (1280u32, 800u32);
                let data: Vec<u8> = (0..w * h * 3)
                    .map(|i| ((i * 2654435761u32) >> 24) as u8)
                    .collect();
                Frame::new(id, w, h, PixelLayout::Rgb8, data)
            }
        })
    };
    let probes = engine.probes().probes.clone();
    let question = "Describe the driver.";
    let no = AtomicBool::new(false);
    let mut outside = Outside {
        total: Duration::ZERO,
        inside: Duration::ZERO,
    };
    let mut id = 1000u64;
    let mut next = || {
        id += 1;
        id
    };

    // Warm-up (first runs allocate arenas, page in weights).
    let f = frame_of(next())?;
    engine.probe(&f, &probes)?;

    // Cold frame: preprocess, vision, prefix prefill, question prefill, first token.
    let (mut pre, mut vis, mut pfx_rate, mut q_rate, mut ttft_cold, mut ttft_warm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let gen1 = GenerateParams {
        max_tokens: 1,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    for _ in 0..iters {
        let f = frame_of(next())?;
        let g = engine.generate(&f, question, &gen1, &mut |_| {}, &no)?;
        outside.add(&g.timings);
        pre.push(ms(g.timings.preprocess));
        vis.push(ms(g.timings.vision));
        pfx_rate.push(g.timings.prefix_tokens as f64 / g.timings.prefix_prefill.as_secs_f64());
        if let Some(r) = g.timings.prefill_tokens_per_s() {
            q_rate.push(r);
        }
        ttft_cold.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
        let g = engine.generate(&f, question, &gen1, &mut |_| {}, &no)?;
        outside.add(&g.timings);
        ttft_warm.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
    }

    // Decode tokens/s at several positions: a filler question moves the start position.
    let f = frame_of(next())?;
    engine.encode_frame(&f)?;
    let prefix_len = engine.position();
    let cap = engine.kv_capacity().unwrap_or(0);
    let decode_n = 16usize;
    let mut decode_rows = Vec::new();
    for frac in [0.0f64, 0.25, 0.5, 0.75] {
        let target = prefix_len + ((cap - prefix_len) as f64 * frac) as usize;
        if target + decode_n + 16 > cap {
            continue;
        }
        let mut q = String::from(question);
        while prefix_len + engine.prompt_ids(&q)?.1.len() < target {
            q.push_str(" the road ahead");
        }
        let params = GenerateParams {
            max_tokens: decode_n,
            use_bundle_stop_tokens: false,
            ..Default::default()
        };
        let mut rates = vec![];
        let mut start_pos = 0;
        for _ in 0..iters {
            let g = engine.generate(&f, &q, &params, &mut |_| {}, &no)?;
            outside.add(&g.timings);
            start_pos = prefix_len + g.timings.prefill_tokens;
            if let Some(r) = g.timings.decode_tokens_per_s() {
                rates.push(r);
            }
        }
        decode_rows.push((start_pos, median(rates)));
    }

    // Probes per frame: prefix encoded once and reused vs re-encoded for every probe.
    let (mut reuse, mut noreuse) = (vec![], vec![]);
    for _ in 0..iters {
        let f = frame_of(next())?;
        let o = engine.probe(&f, &probes)?;
        outside.add(&o.timings);
        reuse.push(ms(o.timings.total));
        let mut total = Duration::ZERO;
        for p in &probes {
            engine.forget_prefix();
            let o = engine.probe(&f, std::slice::from_ref(p))?;
            outside.add(&o.timings);
            total += o.timings.total;
        }
        noreuse.push(ms(total));
    }

    println!(
        "## Inference benchmark: `{}` variant `{}` on {}",
        m.name,
        engine.variant(),
        ep
    );
    println!();
    println!(
        "image {size}x{size} ({} tokens), hidden {}, {} layers, kv_capacity {cap}, prefill_chunk {}; prefix {prefix_len} positions; medians of {iters} runs; input frame {}",
        m.image.tokens,
        m.decoder.hidden,
        m.decoder.layer_types.len(),
        m.decoder.prefill_chunk,
        if image.is_some() {
            "from --image"
        } else {
            "1280x800 RGB (resized)"
        }
    );
    println!();
    println!(
        "| graph | provider | source | session creation (ms) | of which compile (ms) | nodes per EP |"
    );
    println!("|---|---|---|---:|---:|---|");
    for r in engine.reports() {
        let nodes: Vec<String> = r
            .nodes_per_ep
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        println!(
            "| {} | {} | {:?} | {:.1} | {:.1} | {} |",
            r.graph,
            r.provider,
            r.source,
            ms(r.create_time),
            ms(r.compile_time),
            nodes.join(", ")
        );
    }
    println!();
    println!("| metric | value |");
    println!("|---|---:|");
    println!(
        "| preprocess (resize + normalise) | {:.3} ms |",
        median(pre)
    );
    println!("| vision latency | {:.2} ms |", median(vis));
    println!(
        "| prefix prefill (system + image) | {:.0} tok/s |",
        median(pfx_rate)
    );
    println!("| question prefill | {:.0} tok/s |", median(q_rate));
    println!(
        "| TTFT, new frame (preprocess + vision + prefix + question + 1st token) | {:.2} ms |",
        median(ttft_cold)
    );
    println!("| TTFT, prefix reused | {:.2} ms |", median(ttft_warm));
    for (pos, rate) in &decode_rows {
        println!("| decode from position {pos} | {rate:.1} tok/s |");
    }
    let (r, n) = (median(reuse), median(noreuse));
    println!(
        "| {} probes per frame, prefix reused | {r:.2} ms |",
        probes.len()
    );
    println!(
        "| {} probes per frame, prefix re-encoded per probe | {n:.2} ms |",
        probes.len()
    );
    println!(
        "| saving from prefix reuse | {:.0} % |",
        100.0 * (1.0 - r / n)
    );
    let share = 100.0 * (1.0 - outside.inside.as_secs_f64() / outside.total.as_secs_f64());
    println!("| time outside Session::run (all requests above) | {share:.2} % |");
    Ok(())
}
