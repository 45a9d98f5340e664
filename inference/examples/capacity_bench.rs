//! Decode speed and prefill time by context length, with the KV bound in capacity buckets and with
//! the whole capacity bound (issue 15, "attend over what is filled").
//!
//! cargo run --release -p autoneural-inference --example capacity_bench -- --model GROWABLE \
//!     [--static STATIC] [--variants fp32,cpu-int4] [--threads N] [--iters N]
//!     [--contexts 256,1024,4096] [--json FILE]
//!
//! GROWABLE is a bundle whose CPU decoder graphs name their KV capacity (forge/capacity.py); it is
//! measured twice, loaded one after the other: with capacity buckets (the default) and with
//! `preallocate_kv` (the whole kv_capacity bound from the start). STATIC, optional, is the same
//! bundle with the capacity fixed in the graphs (what forge exported before). Each of --variants
//! (default fp32) is measured the three ways. For each context
//! length L: a prompt of L - 16 token ids alone (no image: `generate_ids`) is prefilled, then 16
//! tokens are decoded greedily, so the decode steps run at positions L-16..L; reported: the prefill
//! time (to the first token), decode tok/s, the capacity bound at the end, medians of --iters, and
//! the cores other processes used meanwhile (from /proc; run on an idle machine).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use autoneural_inference::{CpuOptions, Engine, EngineConfig, GenerateParams, Provider};
use common::{CpuMeter, ms, quantile};

const DECODED: usize = 16;

struct Row {
    variant: String,
    kv: &'static str,
    context: usize,
    prefill_ms: f64,
    decode_tok_s: f64,
    bound: usize,
    other_cores: f64,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call per configuration, all spelled out"
)]
fn measure(
    variant: &str,
    kv: &'static str,
    dir: &Path,
    preallocate: bool,
    threads: usize,
    iters: usize,
    contexts: &[usize],
    rows: &mut Vec<Row>,
) -> Result<usize> {
    let mut config = EngineConfig::new(dir);
    config.variant = Some(variant.to_string());
    config.providers = vec![Provider::Cpu(CpuOptions::with_threads(threads))];
    config.preallocate_kv = preallocate;
    let mut engine = Engine::load(&config).with_context(|| format!("loading {}", dir.display()))?;
    let Some(capacity) = engine.kv_capacity() else {
        bail!("{}: not an AutoNeural bundle", dir.display());
    };
    let vocab = engine
        .bundle()
        .map(|b| b.manifest.text.vocab_size)
        .unwrap_or(1000) as u32;
    let no = AtomicBool::new(false);
    let params = GenerateParams {
        max_tokens: DECODED,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    // ids away from the special tokens at the start of the vocabulary
    let low = vocab / 4;
    let prompt = |n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| low + (i * 7919) % (vocab - low))
            .collect()
    };
    engine.generate_ids(&prompt(40), &params, &mut |_| {}, &no)?; // warm-up: arenas, page cache
    for &context in contexts {
        if context > capacity || context <= DECODED {
            bail!("--contexts {context}: outside {DECODED}..={capacity} (kv_capacity)");
        }
        let ids = prompt(context - DECODED);
        let meter = CpuMeter::start();
        let (mut prefill, mut decode) = (vec![], vec![]);
        for _ in 0..iters {
            let g = engine.generate_ids(&ids, &params, &mut |_| {}, &no)?;
            prefill.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
            decode.push(g.timings.decode_tokens_per_s().unwrap_or(f64::NAN));
        }
        rows.push(Row {
            variant: variant.to_string(),
            kv,
            context,
            prefill_ms: quantile(&prefill, 0.5),
            decode_tok_s: quantile(&decode, 0.5),
            bound: engine.kv_bound().unwrap_or(capacity),
            other_cores: meter.others(),
        });
    }
    Ok(capacity)
}

fn main() -> Result<()> {
    let (mut model, mut fixed, mut json) = (None, None, None);
    let (mut threads, mut iters) = (2usize, 3usize);
    let mut variants = vec!["fp32".to_string()];
    let mut contexts = vec![256usize, 1024, 4096];
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => model = Some(PathBuf::from(args.value()?)),
            Long("static") => fixed = Some(PathBuf::from(args.value()?)),
            Long("variants") => {
                variants = args
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            }
            Long("threads") => threads = args.value()?.parse()?,
            Long("iters") => iters = args.value()?.parse()?,
            Long("contexts") => contexts = common::list(args.value()?)?,
            Long("json") => json = Some(PathBuf::from(args.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let model = model.context("--model DIR (a bundle with growable decoder graphs) is required")?;
    let iters = iters.max(1);
    let mut rows = Vec::new();
    let mut capacity = 0;
    for v in &variants {
        let mut ways = vec![("buckets", &model, false), ("preallocated", &model, true)];
        if let Some(fixed) = &fixed {
            ways.push(("static graphs", fixed, false));
        }
        for (kv, dir, preallocate) in ways {
            capacity = measure(
                v,
                kv,
                dir,
                preallocate,
                threads,
                iters,
                &contexts,
                &mut rows,
            )?;
        }
    }

    println!(
        "kv_capacity {capacity}, {threads} threads, {DECODED} tokens decoded after each prompt, medians of {iters}"
    );
    println!();
    println!(
        "| variant | KV | context | prefill to first token ms | decode tok/s | capacity attended | other cores |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.2} | {} | {:.2} |",
            r.variant, r.kv, r.context, r.prefill_ms, r.decode_tok_s, r.bound, r.other_cores
        );
    }
    if let Some(path) = json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "variant": r.variant,
                    "kv": r.kv,
                    "context": r.context,
                    "prefill_ms": r.prefill_ms,
                    "decode_tok_s": r.decode_tok_s,
                    "capacity_attended": r.bound,
                    "other_cores": r.other_cores,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "kv_capacity": capacity,
            "threads": threads,
            "iters": iters,
            "decoded_tokens": DECODED,
            "rows": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
