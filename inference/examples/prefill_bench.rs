//! Time to first token by prompt length, with and without `conv_index` (issue 15, "prefill without
//! single steps").
//!
//! cargo run --release -p autoneural-inference --example prefill_bench -- --model NEW --old OLD \
//!     [--threads N] [--iters N] [--lengths 8,40,100] [--json FILE]
//!
//! NEW is a bundle whose decoder_prefill takes `conv_index`; OLD the same bundle in the contract
//! before it (`python -m bench.old_prefill NEW OLD`: same weights, the remainder of a prompt past
//! the last full chunk through decoder_step one token at a time). For each question length (in
//! tokens after the image) and each bundle, loaded one after the other: TTFT with the frame's
//! prefix reused (question prefill + first token) and TTFT of a new frame (vision + prefix +
//! question), medians of --iters, with the `Session::run` call counts and the cores other processes
//! used meanwhile (from /proc; run on an idle machine).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use autoneural_inference::{CpuOptions, Engine, EngineConfig, GenerateParams, Provider};
use common::{CpuMeter, frame, ms, quantile};

struct Row {
    bundle: &'static str,
    question_tokens: usize,
    prefix_tokens: usize,
    warm_ttft_ms: f64,
    warm_runs: usize,
    cold_ttft_ms: f64,
    cold_runs: usize,
    other_cores: f64,
}

fn measure(
    which: &'static str,
    dir: &Path,
    threads: usize,
    iters: usize,
    lengths: &[usize],
    rows: &mut Vec<Row>,
) -> Result<(usize, usize)> {
    let mut config = EngineConfig::new(dir);
    config.providers = vec![Provider::Cpu(CpuOptions::with_threads(threads))];
    let mut engine = Engine::load(&config).with_context(|| format!("loading {}", dir.display()))?;
    let Some(b) = engine.bundle() else {
        bail!("{}: not an AutoNeural bundle", dir.display());
    };
    let chunk = b.manifest.decoder.prefill_chunk;
    let capacity = b.manifest.decoder.kv_capacity;
    let no = AtomicBool::new(false);
    let params = GenerateParams {
        max_tokens: 1,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let mut id = 1u64;
    let mut next = || {
        id += 1;
        frame(id, id as u32 * 7)
    };
    // Warm-up: arenas, page cache.
    let f = next();
    engine.generate(&f, "Describe the driver.", &params, &mut |_| {}, &no)?;
    for &want in lengths {
        let mut q = String::from("Describe");
        while engine.prompt_ids(&q)?.1.len() < want {
            q.push_str(" the road");
        }
        let meter = CpuMeter::start();
        let (mut warm, mut cold) = (vec![], vec![]);
        let (mut warm_runs, mut cold_runs, mut q_tokens, mut prefix) = (0, 0, 0, 0);
        for _ in 0..iters {
            let f = next();
            let g = engine.generate(&f, &q, &params, &mut |_| {}, &no)?;
            cold.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
            cold_runs = g.timings.session_runs;
            prefix = g.timings.prefix_tokens;
            if prefix + g.timings.prefill_tokens >= capacity {
                bail!("--lengths {want}: the prompt fills the context ({capacity})");
            }
            let g = engine.generate(&f, &q, &params, &mut |_| {}, &no)?;
            warm.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
            warm_runs = g.timings.session_runs;
            q_tokens = g.timings.prefill_tokens;
        }
        rows.push(Row {
            bundle: which,
            question_tokens: q_tokens,
            prefix_tokens: prefix,
            warm_ttft_ms: quantile(&warm, 0.5),
            warm_runs,
            cold_ttft_ms: quantile(&cold, 0.5),
            cold_runs,
            other_cores: meter.others(),
        });
    }
    Ok((chunk, capacity))
}

fn main() -> Result<()> {
    let (mut new, mut old, mut json) = (None, None, None);
    let (mut threads, mut iters) = (2usize, 5usize);
    let mut lengths = vec![8usize, 40, 100];
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => new = Some(PathBuf::from(args.value()?)),
            Long("old") => old = Some(PathBuf::from(args.value()?)),
            Long("threads") => threads = args.value()?.parse()?,
            Long("iters") => iters = args.value()?.parse()?,
            Long("lengths") => lengths = common::list(args.value()?)?,
            Long("json") => json = Some(PathBuf::from(args.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let new = new.context("--model DIR (a bundle with conv_index) is required")?;
    let old = old.context("--old DIR (python -m bench.old_prefill NEW OLD) is required")?;
    let iters = iters.max(1);
    let mut rows = Vec::new();
    let (chunk, capacity) = measure("conv_index", &new, threads, iters, &lengths, &mut rows)?;
    measure("single steps", &old, threads, iters, &lengths, &mut rows)?;

    println!(
        "prefill_chunk {chunk}, kv_capacity {capacity}, {threads} threads, medians of {iters}"
    );
    println!();
    println!(
        "| remainder through | question tokens | TTFT prefix reused ms (runs) | TTFT new frame ms (prefix tokens, runs) | other cores |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} ({}) | {:.1} ({}, {}) | {:.2} |",
            r.bundle,
            r.question_tokens,
            r.warm_ttft_ms,
            r.warm_runs,
            r.cold_ttft_ms,
            r.prefix_tokens,
            r.cold_runs,
            r.other_cores
        );
    }
    if let Some(path) = json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "remainder": r.bundle, "question_tokens": r.question_tokens,
                    "prefix_tokens": r.prefix_tokens, "warm_ttft_ms": r.warm_ttft_ms,
                    "warm_session_runs": r.warm_runs, "cold_ttft_ms": r.cold_ttft_ms,
                    "cold_session_runs": r.cold_runs, "other_cores": r.other_cores,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "model": new.display().to_string(), "prefill_chunk": chunk,
            "kv_capacity": capacity, "threads": threads, "iters": iters, "rows": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
