//! The Rust runtime's row of the side-by-side runtime benchmark (issue 15 item 6, bench/runtime.md):
//! time to first token and decode speed by prompt length, with the protocol every runner of that
//! benchmark follows (bench/bench_runtime.py).
//!
//! cargo run --release -p autoneural-inference --example runtime_bench -- --model BUNDLE \
//!     [--variant fp32] [--threads 2] [--spinning on|off] [--lengths 64,256,1024,4096] [--decode 32] \
//!     [--iters-small 3]
//!
//! Protocol: the prompt of length n is the token ids `low + (i * 7919) % (vocab - low)`, i < n, with
//! `low = vocab / 4` (away from the special tokens), fed as ids alone (no image: `generate_ids`).
//! One warm-up (n = 64, 4 tokens), then for each length L: `--iters-small` iterations when L <= 256,
//! else one; each starts from an empty context, times the prompt up to the first greedy token
//! (TTFT) and then `--decode` more greedy tokens (decode tok/s over those steps). Medians. The last
//! line of stdout is one JSON object, with the share of the measured time spent outside
//! `Session::run`; peak memory is measured by the caller (wait4).

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autoneural_inference::{CpuOptions, Engine, EngineConfig, GenerateParams, Provider};
use common::{CpuMeter, ms, quantile};

fn main() -> Result<()> {
    let mut model = None;
    let mut variant = "fp32".to_string();
    let (mut threads, mut decode, mut iters_small) = (2usize, 32usize, 3usize);
    let mut spinning = CpuOptions::default().spinning;
    let mut lengths = vec![64usize, 256, 1024, 4096];
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => model = Some(PathBuf::from(args.value()?)),
            Long("variant") => variant = args.value()?.string()?,
            Long("threads") => threads = args.value()?.parse()?,
            Long("spinning") => spinning = args.value()?.string()? == "on",
            Long("decode") => decode = args.value()?.parse()?,
            Long("iters-small") => iters_small = args.value()?.parse()?,
            Long("lengths") => lengths = common::list(args.value()?)?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let model = model.context("--model DIR (a bundle) is required")?;
    let mut config = EngineConfig::new(&model);
    config.variant = Some(variant.clone());
    config.providers = vec![Provider::Cpu(CpuOptions { threads, spinning })];
    let t = Instant::now();
    let mut engine =
        Engine::load(&config).with_context(|| format!("loading {}", model.display()))?;
    let load_s = t.elapsed().as_secs_f64();
    let Some(capacity) = engine.kv_capacity() else {
        bail!("{}: not an AutoNeural bundle", model.display());
    };
    let vocab = engine
        .bundle()
        .map(|b| b.manifest.text.vocab_size)
        .context("the bundle's manifest has no vocabulary size")?;
    let low = vocab / 4;
    let prompt = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|i| (low + (i * 7919) % (vocab - low)) as u32)
            .collect()
    };
    let no = AtomicBool::new(false);
    let params = |new: usize| GenerateParams {
        max_tokens: new,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    engine.generate_ids(&prompt(64), &params(5), &mut |_| {}, &no)?; // warm-up: arenas, page cache

    let meter = CpuMeter::start();
    let (mut ttft, mut tok_s) = (serde_json::Map::new(), serde_json::Map::new());
    let (mut total, mut outside) = (0.0, 0.0);
    for &n in &lengths {
        if n + decode + 1 > capacity {
            bail!(
                "--lengths {n} + --decode {decode}: more than the bundle's kv_capacity {capacity}"
            );
        }
        let ids = prompt(n);
        let (mut first, mut rate) = (vec![], vec![]);
        for _ in 0..if n <= 256 { iters_small.max(1) } else { 1 } {
            let g = engine.generate_ids(&ids, &params(decode + 1), &mut |_| {}, &no)?;
            first.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
            rate.push(g.timings.decode_tokens_per_s().unwrap_or(f64::NAN));
            total += ms(g.timings.total);
            outside += ms(g.timings.outside_session_run());
        }
        eprintln!(
            "{variant}: {n} tokens: TTFT {:.0} ms, decode {:.2} tok/s",
            quantile(&first, 0.5),
            quantile(&rate, 0.5)
        );
        ttft.insert(n.to_string(), quantile(&first, 0.5).into());
        tok_s.insert(n.to_string(), quantile(&rate, 0.5).into());
    }
    let doc = serde_json::json!({
        "runner": "ours",
        "precision": if variant == "cpu-int4" { "int4".to_string() } else { variant.clone() },
        "variant": variant,
        "load_s": load_s,
        "threads": threads,
        "intra_op_spinning": spinning,
        "kv_capacity": capacity,
        "ttft_ms": ttft,
        "decode_tok_s": tok_s,
        "outside_session_run_share": outside / total,
        "other_cores_self_measured": meter.others(),
    });
    println!("{doc}");
    Ok(())
}
