//! How long a safety probe waits while a question generates (issue 15, "safety preempts").
//!
//! cargo run --release -p autoneural-inference --example preempt_bench -- --model DIR \
//!     [--variant V] [--threads N] [--rounds N] [--tokens N] [--label TEXT] [--json FILE]
//!
//! Through the `Worker`, as the daemon uses it: a question generates `--tokens` tokens (stop tokens
//! ignored) on one frame; at a point spread over its decoding, a safety probe of a new frame (the
//! model's default probes) is submitted. Per round: the probe's wait (submitted -> started), its
//! latency (submitted -> result), and how long it would have waited for the rest of the generation
//! without preemption. Baselines from the same run: the probe alone on an idle worker, and one decode
//! step. The target: wait <= one decode step (latency <= one decode step + the probe alone).
//! Each row records the cores other processes used meanwhile (from /proc); run on an idle machine.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use autoneural_inference::{
    CpuOptions, EngineConfig, GenerateParams, Provider, QueueLimits, Worker,
};
use common::{CpuMeter, frame, ms, quantile};

fn main() -> Result<()> {
    let mut model = None;
    let mut variant = None;
    let mut threads = 2usize;
    let mut rounds = 8usize;
    let mut tokens = 48usize;
    let mut label = None;
    let mut json = None;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => model = Some(PathBuf::from(args.value()?)),
            Long("variant") => variant = Some(args.value()?.string()?),
            Long("threads") => threads = args.value()?.parse()?,
            Long("rounds") => rounds = args.value()?.parse()?,
            Long("tokens") => tokens = args.value()?.parse()?,
            Long("label") => label = Some(args.value()?.string()?),
            Long("json") => json = Some(PathBuf::from(args.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let model = model.context("--model DIR is required")?;
    if tokens < 4 {
        bail!("--tokens must be at least 4");
    }
    let mut config = EngineConfig::new(&model);
    config.variant = variant;
    config.providers = vec![Provider::Cpu(CpuOptions::with_threads(threads))];
    let worker = Worker::spawn(config, QueueLimits::default())
        .with_context(|| format!("loading {}", model.display()))?;
    let meter = CpuMeter::start();
    let question = "What is the driver doing?";
    let params = GenerateParams {
        max_tokens: tokens,
        use_bundle_stop_tokens: false,
        ..GenerateParams::default()
    };
    let mut next_id = 1u64;
    let mut new_frame = || {
        next_id += 1;
        frame(next_id, next_id as u32 * 7)
    };

    // Baselines: the probe alone (a new frame each time, as from a camera), one decode step.
    let mut alone = vec![];
    for _ in 0..3 {
        let p = worker.probe(new_frame(), None)?.wait()?;
        alone.push(ms(p.timings.total));
    }
    let asked = frame(1, 0);
    // Twice: the rounds find the question's frame encoded (a preempting probe's frame does not
    // replace it), so their decoding starts after the second ask's TTFT, not the first's.
    worker
        .ask(asked.clone(), question.into(), params.clone(), None)?
        .wait()?;
    let g = worker
        .ask(asked.clone(), question.into(), params.clone(), None)?
        .wait()?;
    let step = ms(g.timings.decode) / g.timings.decode_tokens.max(1) as f64;
    let ttft = g.timings.ttft.map(ms).unwrap_or(0.0);
    let generation = ms(g.timings.decode) + g.timings.ttft.map(ms).unwrap_or(0.0);

    let (mut waits, mut latencies, mut without) = (vec![], vec![], vec![]);
    let mut missed = 0usize;
    for round in 0..rounds {
        // Not on the first streamed text: a random-weight model may decode to no text at all.
        // The question's frame is encoded, so decoding starts after the baseline's TTFT.
        let t_ask = Instant::now();
        let job = worker.ask(asked.clone(), question.into(), params.clone(), None)?;
        // Spread the submissions over the first ~80 % of the decoding.
        let frac = (round as f64 + 0.5) / rounds as f64 * 0.8;
        std::thread::sleep(Duration::from_secs_f64(
            (ttft + step * (tokens - 1) as f64 * frac) / 1e3,
        ));
        let f = new_frame();
        let t_probe = Instant::now();
        let p = worker.probe(f, None)?.wait()?;
        let latency = t_probe.elapsed();
        let g = job.wait()?;
        let t_end = t_ask.elapsed();
        if g.timings.preemptions != 1 {
            // The generation ended before the probe came (a model too fast for the spread).
            missed += 1;
            continue;
        }
        waits.push(ms(p.timings.queue_wait));
        latencies.push(ms(latency));
        // Without preemption the probe would have started when the generation ended.
        let submitted = t_probe.duration_since(t_ask);
        without.push(ms(t_end.saturating_sub(submitted)) - ms(p.timings.total));
    }
    if waits.is_empty() {
        bail!(
            "every generation ended before its probe came: a model this fast needs more --tokens"
        );
    }
    let others = meter.others();
    let name = label.unwrap_or_else(|| worker.info().bundle_name.clone());
    let alone_ms = quantile(&alone, 0.5);
    println!(
        "| model | variant | threads | tokens | rounds (missed) | decode step ms | probe alone ms | probe wait p50 / p99 ms | probe latency p50 / p99 ms | wait without preemption p50 ms | other cores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {name} | {} | {threads} | {tokens} | {rounds} ({missed}) | {step:.1} | {alone_ms:.0} | {:.1} / {:.1} | {:.0} / {:.0} | {:.0} | {others:.2} |",
        worker.info().variant,
        quantile(&waits, 0.5),
        quantile(&waits, 0.99),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&without, 0.5),
    );
    if let Some(path) = json {
        let body = serde_json::json!({
            "model": name,
            "variant": worker.info().variant,
            "threads": threads,
            "tokens": tokens,
            "rounds": rounds,
            "rounds_missed": missed,
            "decode_step_ms": step,
            "generation_ms": generation,
            "probe_alone_ms": alone_ms,
            "safety_probe_wait_ms": {
                "rounds": waits.clone(),
                "p50": quantile(&waits, 0.5),
                "p99": quantile(&waits, 0.99),
                "max": quantile(&waits, 1.0),
            },
            "safety_probe_latency_ms": {
                "p50": quantile(&latencies, 0.5),
                "p99": quantile(&latencies, 0.99),
            },
            "wait_without_preemption_ms": { "p50": quantile(&without, 0.5) },
            "other_cores": others,
        });
        std::fs::write(&path, format!("{body:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
