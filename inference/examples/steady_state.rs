//! What a bundle's decoder allocates once it runs (issue 15, "zero-copy state"), and how the thread
//! count changes its speed.
//!
//! cargo run --release -p autoneural-inference --example steady_state -- --model BUNDLE \
//!     [--variant fp32] [--threads 1,2] [--json FILE]
//!
//! Allocations: this process's Rust heap allocations are counted by a counting global allocator
//! (every thread), and the C heap in use (glibc `mallinfo2`: ONNX Runtime's arena and everything
//! else malloc'd) is read before and after. A generation of `short` tokens and one of `long`
//! tokens after the same prompt differ only by `long - short` decode steps, so their difference,
//! divided by that, is what one steady-state step allocates (the first run of each warms the
//! arenas and the KV bucket); the C heap is also compared across identical whole requests (a
//! prefill's large temporary blocks come and go inside a request). The same for a round of the bundle's probes on a frame whose prefix
//! is cached. Speed: decode tok/s and the prompt's prefill time per thread count, medians of 3.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use autoneural_inference::{CpuOptions, Engine, EngineConfig, GenerateParams, Provider};
use common::{CpuMeter, frame, ms, quantile};

/// Identical requests the C heap is followed across.
const REQUESTS: usize = 30;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc / realloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as for alloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// glibc's `struct mallinfo2` (ten size_t fields).
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes of the C heap in use: small blocks plus mmap'd ones.
fn c_heap() -> usize {
    // SAFETY: mallinfo2 takes nothing and returns a plain struct (glibc >= 2.33).
    let m = unsafe { mallinfo2() };
    m.uordblks + m.hblkhd
}

#[derive(Clone, Copy)]
struct Snapshot {
    allocations: usize,
    bytes: usize,
    c_heap: usize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        c_heap: c_heap(),
    }
}

/// (Rust allocations, Rust bytes, C heap growth in bytes) between two snapshots.
fn since(a: Snapshot) -> (f64, f64, f64) {
    let b = snapshot();
    (
        (b.allocations - a.allocations) as f64,
        (b.bytes - a.bytes) as f64,
        b.c_heap as f64 - a.c_heap as f64,
    )
}

fn main() -> Result<()> {
    let (mut model, mut json, mut variant) = (None, None, "fp32".to_string());
    let mut thread_counts = vec![1usize, 2];
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("model") => model = Some(PathBuf::from(args.value()?)),
            Long("variant") => variant = args.value()?.string()?,
            Long("threads") => thread_counts = common::list(args.value()?)?,
            Long("json") => json = Some(PathBuf::from(args.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let model = model.context("--model DIR (a bundle) is required")?;
    let (short, long) = (8usize, 72usize);
    let no = AtomicBool::new(false);
    let params = |n| GenerateParams {
        max_tokens: n,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let mut doc = serde_json::json!({"model": model.display().to_string(), "variant": variant});
    let mut speed = Vec::new();
    for (i, &threads) in thread_counts.iter().enumerate() {
        let mut config = EngineConfig::new(&model);
        config.variant = Some(variant.clone());
        config.providers = vec![Provider::Cpu(CpuOptions::with_threads(threads))];
        let mut engine =
            Engine::load(&config).with_context(|| format!("loading {}", model.display()))?;
        let Some(capacity) = engine.kv_capacity() else {
            bail!("{}: not an AutoNeural bundle", model.display());
        };
        let vocab = engine
            .bundle()
            .map(|b| b.manifest.text.vocab_size)
            .unwrap_or(1000) as u32;
        let low = vocab / 4; // away from the special tokens at the start of the vocabulary
        let prompt: Vec<u32> = (0..64u32)
            .map(|i| low + (i * 7919) % (vocab - low))
            .collect();
        if prompt.len() + long > capacity {
            bail!(
                "kv_capacity {capacity} is too small for {} positions",
                prompt.len() + long
            );
        }
        let mut run = |n: usize| engine.generate_ids(&prompt, &params(n), &mut |_| {}, &no);
        run(long)?; // warm-up: arenas, the KV bucket of the longest run
        if i == 0 {
            let s = snapshot();
            run(short)?;
            let a = since(s);
            let s = snapshot();
            run(long)?;
            let b = since(s);
            let steps = (long - short) as f64;
            let per_step = [
                (b.0 - a.0) / steps,
                (b.1 - a.1) / steps,
                (b.2 - a.2) / steps,
            ];
            println!(
                "decode, per steady-state step: {:.2} Rust allocations ({:.0} bytes)",
                per_step[0], per_step[1]
            );
            // the C heap across identical requests (a prefill allocates and frees large blocks
            // inside a request, so only whole requests compare)
            let mut heap = vec![c_heap()];
            for _ in 0..REQUESTS {
                run(long)?;
                heap.push(c_heap());
            }
            let growth: Vec<i64> = heap.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect();
            println!(
                "  C heap growth over each of {REQUESTS} identical {long}-token requests: {growth:?} bytes"
            );
            println!(
                "  in all: {:+} bytes over {REQUESTS} requests",
                heap[heap.len() - 1] as i64 - heap[0] as i64
            );
            doc["c_heap_growth_per_request"] = serde_json::json!(growth);
            // the streaming detokenizer's share: the same tokens through a Detokenizer alone
            let tokens = run(long)?.tokens;
            let Some(bundle) = engine.bundle() else {
                bail!("not a bundle");
            };
            let mut detok = autoneural_inference::Detokenizer::new();
            for &t in &tokens[..short] {
                detok
                    .push(&bundle.tokenizer, t)
                    .map_err(anyhow::Error::msg)?;
            }
            let s = snapshot();
            for &t in &tokens[short..] {
                detok
                    .push(&bundle.tokenizer, t)
                    .map_err(anyhow::Error::msg)?;
            }
            let d = since(s);
            let n = (tokens.len() - short) as f64;
            println!(
                "  of which the streaming detokenizer: {:.2} Rust allocations ({:.0} bytes)",
                d.0 / n,
                d.1 / n
            );
            let probes = engine.probes().probes.clone();
            let f = frame(1, 3);
            engine.probe(&f, &probes)?; // encodes the frame's prefix
            engine.probe(&f, &probes)?;
            let s = snapshot();
            let rounds = 10;
            for _ in 0..rounds {
                engine.probe(&f, &probes)?;
            }
            let p = since(s);
            println!(
                "probes ({} per round, prefix cached), per round: {:.1} Rust allocations ({:.0} bytes), C heap {:+.0} bytes",
                probes.len(),
                p.0 / rounds as f64,
                p.1 / rounds as f64,
                p.2 / rounds as f64
            );
            doc["decode_step"] = serde_json::json!({
                "rust_allocations": per_step[0], "rust_bytes": per_step[1],
                "detokenizer_allocations": d.0 / n, "detokenizer_bytes": d.1 / n,
            });
            doc["probe_round"] = serde_json::json!({
                "probes": probes.len(), "rust_allocations": p.0 / rounds as f64,
                "rust_bytes": p.1 / rounds as f64, "c_heap_bytes": p.2 / rounds as f64,
            });
        }
        let meter = CpuMeter::start();
        let (mut tok_s, mut ttft) = (vec![], vec![]);
        for _ in 0..3 {
            let g = engine.generate_ids(&prompt, &params(long), &mut |_| {}, &no)?;
            tok_s.push(g.timings.decode_tokens_per_s().unwrap_or(f64::NAN));
            ttft.push(g.timings.ttft.map(ms).unwrap_or(f64::NAN));
        }
        let row = serde_json::json!({
            "threads": threads,
            "decode_tok_s": quantile(&tok_s, 0.5),
            "prefill_ms": quantile(&ttft, 0.5),
            "other_cores": meter.others(),
        });
        println!(
            "threads {threads}: decode {:.2} tok/s, {}-token prompt to first token {:.1} ms, other cores {:.2}",
            quantile(&tok_s, 0.5),
            prompt.len(),
            quantile(&ttft, 0.5),
            meter.others()
        );
        speed.push(row);
    }
    doc["threads"] = serde_json::Value::Array(speed);
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
