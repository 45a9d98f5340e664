//! End-to-end tests of the inference crate against the committed bundles (models/), real ONNX Runtime
//! (from the project venv: `./scripts/setup`, or AUTONEURAL_VENV) and the QNN HTP simulator.
//! One test binary on purpose: each binary links ONNX Runtime glue and tokenizers, slow on CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use autoneural_inference::{
    Bundle, BundleError, CpuOptions, Detokenizer, Engine, EngineConfig, Error, FinishReason, Frame,
    FrameError, GenerateParams, JobClass, JobHandle, ModelSource, PixelLayout, Preemption,
    ProbeOutcome, Provider, QnnOptions, QueueLimits, Verify, Worker,
};

// The default cabin model's Rust-side accuracy check (issue 4) shares this binary.
mod cabin;
// Published LFM2-VL ONNX releases (issue 12).
mod published;
// A Hugging Face LFM2-VL checkpoint converted to an NPU bundle by forge convert-vl (issue 12).
mod converted;
// AutoNeural assembled from public parts (LFM2 + MobileNetV5) by forge assemble (issue 12).
mod assembled;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn tiny() -> PathBuf {
    models().join("tiny-random")
}

/// A directory of its own for one test under the temp dir, removed when the test ends (passed or
/// panicked), so repeated runs leave nothing behind.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!(
        "autoneural-inference-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn cpu_config(bundle: &Path, variant: &str) -> EngineConfig {
    let mut c = EngineConfig::new(bundle);
    c.variant = Some(variant.into());
    c.providers = vec![Provider::Cpu(CpuOptions::with_threads(1))];
    c
}

fn load_frame(bundle: &Path, rel: &str, id: u64) -> Frame {
    let img = image::open(bundle.join(rel)).unwrap().to_rgb8();
    Frame::new(
        id,
        img.width(),
        img.height(),
        PixelLayout::Rgb8,
        img.into_raw(),
    )
}

/// A JSON file of the committed fixtures (golden outputs, reference generations).
fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden_of(bundle: &Path) -> serde_json::Value {
    read_json(&bundle.join("golden.json"))
}

fn golden() -> serde_json::Value {
    golden_of(&tiny())
}

fn no_cancel() -> AtomicBool {
    AtomicBool::new(false)
}

// ------------------------------------------------------------------------------------------------
// Committed bundles

#[test]
fn every_committed_bundle_has_a_valid_manifest_and_checksums() {
    let mut seen = 0;
    for entry in std::fs::read_dir(models()).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("manifest.toml")) else {
            continue;
        };
        // Other bundle formats in models/ (the face networks, autoneural-face/1) belong to their
        // own crates and are checked there.
        let format: toml::Table = text.parse().unwrap();
        if format.get("format").and_then(|f| f.as_str()) != Some("autoneural-bundle/1") {
            continue;
        }
        let b = Bundle::load(&dir, None, Verify::Checksums)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(!b.probes.probes.is_empty(), "{}: no probes", dir.display());
        seen += 1;
    }
    assert!(seen >= 1, "no bundle under models/");
}

// ------------------------------------------------------------------------------------------------
// Parity with forge's golden outputs (ONNX Runtime CPU)

fn check_golden_variant(variant: &str) {
    check_golden(&tiny(), variant);
}

/// The Rust engine against forge's Python runtime (golden.json) on the same graphs: prompt ids,
/// greedy tokens, every probe answer's probability.
fn check_golden(bundle: &Path, variant: &str) {
    let g = golden_of(bundle);
    let cases = g[variant]["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("golden.json has no {variant}"));
    let mut engine = Engine::load(&cpu_config(bundle, variant)).unwrap();
    let probes = engine.probes().probes.clone();
    for (i, case) in cases.iter().enumerate() {
        let question = case["question"].as_str().unwrap();
        let frame = load_frame(bundle, case["image"].as_str().unwrap(), 100 + i as u64);

        let (before, after) = engine.prompt_ids(question).unwrap();
        let image_id = engine.bundle().unwrap().manifest.text.image_token_id;
        let ours: Vec<u64> = before
            .iter()
            .chain([&image_id])
            .chain(&after)
            .map(|&x| x as u64)
            .collect();
        let theirs: Vec<u64> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ours, theirs, "{variant} case {i}: prompt tokens");

        let want: Vec<u32> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let params = GenerateParams {
            max_tokens: want.len(),
            use_bundle_stop_tokens: false,
            ..GenerateParams::default()
        };
        let got = engine
            .generate(&frame, question, &params, &mut |_| {}, &no_cancel())
            .unwrap();
        assert_eq!(got.tokens, want, "{variant} case {i}: greedy tokens");
        assert_eq!(got.finish, FinishReason::Length);

        let outcome = engine.probe(&frame, &probes).unwrap();
        assert!(
            outcome.timings.prefix_reused,
            "the probes reuse the prefix encoded for the generation"
        );
        for answer in &outcome.answers {
            let expected = &case["probes"][&answer.id];
            for (a, p) in &answer.probabilities {
                let e = expected[a]
                    .as_f64()
                    .unwrap_or_else(|| panic!("golden lacks {}/{a}", answer.id));
                assert!(
                    (*p as f64 - e).abs() < 1e-3,
                    "{variant} case {i} probe {} answer {a}: {p} vs golden {e}",
                    answer.id
                );
            }
        }
    }
}

#[test]
fn fp32_matches_golden_on_cpu() {
    check_golden_variant("fp32");
}

#[test]
fn quantized_variants_match_their_golden_on_cpu() {
    let g = golden();
    let mut n = 0;
    for variant in g.as_object().unwrap().keys().filter(|v| *v != "fp32") {
        check_golden_variant(variant);
        n += 1;
    }
    assert!(n >= 1, "golden.json has no quantized variant");
}

/// The default model's `cpu-int4` variant (forge cpu-int4: MatMulNBits decoder) reproduces its
/// golden cases, carries its accuracy against fp32, and is the one chosen on the CPU when the config
/// names no variant (the NPU still gets its QDQ variant).
#[test]
fn cpu_int4_variant_matches_its_golden_and_is_the_cpu_default() {
    let cabin = models().join("autoneural-cabin");
    check_golden(&cabin, "cpu-int4");
    let bundle = Bundle::load(&cabin, None, Verify::Presence).unwrap();
    let v = bundle.variant("cpu-int4").unwrap();
    assert_eq!(v.quantization, "int4");
    assert_eq!(v.int4.as_ref().unwrap().block, 32);
    let acc = v
        .accuracy
        .as_ref()
        .expect("accuracy against fp32 in the manifest");
    assert!(
        acc.first_logits_rel_err > 0.0 && acc.first_logits_rel_err < 0.1,
        "{acc:?}"
    );
    let mut auto = EngineConfig::new(&cabin);
    auto.providers = vec![Provider::Cpu(CpuOptions::with_threads(1))];
    let engine = Engine::load(&auto).unwrap();
    assert_eq!(engine.variant(), "cpu-int4");
    let step = engine
        .reports()
        .iter()
        .find(|r| r.graph == "decoder_step")
        .unwrap();
    assert!(step.model.ends_with("cpu-int4/decoder_step.onnx"), "{step}");
}

// ------------------------------------------------------------------------------------------------
// Prefix reuse, generation features

#[test]
fn prefix_reuse_gives_the_same_probes_as_re_encoding() {
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let frame = load_frame(&tiny(), "golden/1.png", 7);
    let probes = engine.probes().probes.clone();
    let first = engine.probe(&frame, &probes).unwrap();
    assert!(!first.timings.prefix_reused);
    let again = engine.probe(&frame, &probes).unwrap();
    assert!(again.timings.prefix_reused);
    assert!(again.timings.vision.is_zero() && again.timings.prefix_prefill.is_zero());
    engine.forget_prefix();
    let fresh = engine.probe(&frame, &probes).unwrap();
    assert!(!fresh.timings.prefix_reused);
    for ((a, b), c) in first.answers.iter().zip(&again.answers).zip(&fresh.answers) {
        assert_eq!(a.answer, b.answer);
        for ((x, y), z) in a
            .probabilities
            .iter()
            .zip(&b.probabilities)
            .zip(&c.probabilities)
        {
            assert!(
                (x.1 - y.1).abs() < 1e-6 && (x.1 - z.1).abs() < 1e-6,
                "{}: {x:?} {y:?} {z:?}",
                a.id
            );
        }
    }
    // A different frame (id) is encoded anew.
    let other = load_frame(&tiny(), "golden/2.png", 8);
    assert!(
        !engine
            .probe(&other, &probes[..1])
            .unwrap()
            .timings
            .prefix_reused
    );
}

/// A prompt of any length goes through decoder_prefill calls of full width: the part past the last
/// full chunk is one padded call (`conv_index`), not one decoder_step per token. Counted in
/// `Session::run` calls for questions of every length from 1 to 2T+1 tokens after a reused prefix.
#[test]
fn a_prompt_of_any_length_is_prefilled_in_full_width_calls() {
    let bundle = Bundle::load(&tiny(), None, Verify::Presence).unwrap();
    assert!(bundle.manifest.decoder.prefill_conv_index);
    let t = bundle.manifest.decoder.prefill_chunk;
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let params = GenerateParams {
        max_tokens: 1,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let ask = |engine: &mut Engine, question: &str| {
        engine
            .generate(&frame, question, &params, &mut |_| {}, &no_cancel())
            .unwrap()
    };
    ask(&mut engine, "encode the frame's prefix");
    let mut seen = std::collections::BTreeSet::new();
    for words in 1..=2 * t + 1 {
        let g = ask(&mut engine, &"a".repeat(words));
        let q = g.timings.prefill_tokens;
        assert!(g.timings.prefix_reused);
        // embed: ceil(q/T) calls; decoder: ceil(q/T) prefill calls, or one decoder_step for a
        // remainder of exactly one token (a step is a one-row prefill)
        let calls = q.div_ceil(t);
        assert_eq!(g.timings.session_runs, 2 * calls, "{q} tokens");
        seen.insert(q % t);
    }
    assert!(seen.len() > t / 2, "remainders covered: {seen:?}");
}

/// Issue 15 "prefill without padding": a CPU prefill graph that names its width
/// (forge/prefill_width.py) runs the part of a prompt past the last full chunk at the smallest of
/// T, T/2, T/4, ... (>= 4) that holds it, and answers what the same graph answers at full width
/// (`preallocate_kv` keeps the full width and capacity), for every remainder from 1 to T.
#[test]
fn a_short_prompt_part_runs_at_the_smallest_width_that_holds_it() {
    let bundle = Bundle::load(&tiny(), None, Verify::Presence).unwrap();
    let t = bundle.manifest.decoder.prefill_chunk;
    assert_eq!(t, 16);
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let params = GenerateParams {
        max_tokens: 6,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let mut full_width = cpu_config(&tiny(), "fp32");
    full_width.preallocate_kv = true;
    let mut engines = [
        Engine::load(&cpu_config(&tiny(), "fp32")).unwrap(),
        Engine::load(&full_width).unwrap(),
    ];
    let mut widths = std::collections::BTreeMap::new();
    for words in 1..=t + 1 {
        let question = "a".repeat(words);
        let mut answers = Vec::new();
        for engine in engines.iter_mut() {
            let g = engine
                .generate(&frame, &question, &params, &mut |_| {}, &no_cancel())
                .unwrap();
            // the prefill graph's last call was the question's (the generated tokens are steps)
            answers.push((g.tokens, g.timings.prefill_tokens, engine.prefill_width()));
        }
        let (free, fixed) = (&answers[0], &answers[1]);
        assert_eq!(free.0, fixed.0, "{words} words: the same tokens");
        assert_eq!(fixed.2, Some(t), "preallocate_kv keeps the full width");
        let rest = free.1 % t;
        if rest >= 2 {
            let want = [4, 8, 16].into_iter().find(|&w| w >= rest).unwrap();
            assert_eq!(free.2, Some(want), "{} prompt tokens", free.1);
            widths.insert(rest, want);
        }
    }
    let used: std::collections::BTreeSet<usize> = widths.values().copied().collect();
    assert!(
        used.len() == 3,
        "remainders {widths:?} covered widths 4, 8 and 16"
    );
}

/// Issue 15 "attend over what is filled": a bundle whose CPU decoder graphs name their KV capacity
/// (forge/capacity.py) binds the smallest capacity bucket its context fits in — growing as a long
/// generation fills it, shrinking back when a probe starts again after the frame's prefix — and
/// answers exactly what the whole capacity, bound from the start, answers.
#[test]
fn a_growable_decoder_attends_over_the_bucket_its_context_fills() {
    // tiny-random's graphs take any capacity: a copy whose manifest allows 2048 positions gives a
    // 500-position context room to cross the 64 / 256 / 1024 buckets
    let dir = scratch("kv-buckets");
    copy_dir(&tiny(), &dir);
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    assert!(manifest.contains("kv_capacity = 256\n"));
    std::fs::write(
        dir.join("manifest.toml"),
        manifest.replace("kv_capacity = 256\n", "kv_capacity = 2048\n"),
    )
    .unwrap();
    let frame = load_frame(&dir, "golden/0.png", 1);
    let params = GenerateParams {
        max_tokens: 400,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let mut preallocated = cpu_config(&dir, "fp32");
    preallocated.preallocate_kv = true;
    let mut runs = Vec::new();
    for config in [cpu_config(&dir, "fp32"), preallocated] {
        let mut engine = Engine::load(&config).unwrap();
        assert_eq!(engine.kv_capacity(), Some(2048));
        let probes = engine.probes().probes.clone();
        let first = engine.probe(&frame, &probes).unwrap();
        let after_probe = engine.kv_bound();
        let g = engine
            .generate(
                &frame,
                "Describe the driver.",
                &params,
                &mut |_| {},
                &no_cancel(),
            )
            .unwrap();
        assert_eq!(g.tokens.len(), 400);
        let after_generation = (engine.position(), engine.kv_bound());
        let again = engine.probe(&frame, &probes).unwrap();
        assert!(again.timings.prefix_reused);
        runs.push((
            g.tokens,
            first,
            again,
            after_probe,
            after_generation,
            engine.kv_bound(),
        ));
    }
    let (bucketed, full) = (&runs[0], &runs[1]);
    let (prefix_and_probe, (pos, during), after) = (bucketed.3, bucketed.4, bucketed.5);
    assert_eq!(prefix_and_probe, Some(256), "a probe's context fits 256");
    assert!(pos > 256 && pos <= 1024, "{pos} positions");
    assert_eq!(
        during,
        Some(1024),
        "the generation grew into the 1024 bucket"
    );
    assert_eq!(after, Some(256), "the next probe went back to 256");
    assert_eq!(
        (full.3, full.4.1, full.5),
        (Some(2048), Some(2048), Some(2048))
    );
    assert_eq!(bucketed.0, full.0, "greedy tokens over 400 positions");
    for (a, b) in [(&bucketed.1, &full.1), (&bucketed.2, &full.2)] {
        for (x, y) in a.answers.iter().zip(&b.answers) {
            for (p, q) in x.probabilities.iter().zip(&y.probabilities) {
                assert!((p.1 - q.1).abs() < 1e-5, "{}: {p:?} vs {q:?}", x.id);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn streaming_sampling_stops_and_cancellation() {
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let q = "Describe the driver.";

    // Streamed deltas concatenate to the returned text.
    let mut streamed = String::new();
    let params = GenerateParams {
        max_tokens: 24,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let g = engine
        .generate(
            &frame,
            q,
            &params,
            &mut |t| streamed.push_str(t),
            &no_cancel(),
        )
        .unwrap();
    assert_eq!(streamed, g.text);
    assert_eq!(g.tokens.len(), 24);
    assert!(g.timings.ttft.is_some() && g.timings.decode_tokens == 23);
    assert!(g.timings.in_session_run <= g.timings.total);

    // Seeded sampling is reproducible and differs from greedy for some seed.
    let sample = |seed| GenerateParams {
        max_tokens: 16,
        use_bundle_stop_tokens: false,
        sampling: autoneural_inference::Sampling::Sample {
            temperature: 1.5,
            top_k: 50,
            top_p: 0.95,
            seed,
        },
        ..Default::default()
    };
    let a = engine
        .generate(&frame, q, &sample(3), &mut |_| {}, &no_cancel())
        .unwrap();
    let b = engine
        .generate(&frame, q, &sample(3), &mut |_| {}, &no_cancel())
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    let greedy = &g.tokens[..16];
    assert!((0..8).any(|s| {
        engine
            .generate(&frame, q, &sample(s), &mut |_| {}, &no_cancel())
            .unwrap()
            .tokens
            != greedy
    }));

    // A stop token: the greedy sequence's 5th token as stop ends generation right before it.
    let stop_at = g.tokens[4];
    let first = g.tokens.iter().position(|&t| t == stop_at).unwrap();
    let p = GenerateParams {
        max_tokens: 24,
        use_bundle_stop_tokens: false,
        stop_tokens: vec![stop_at],
        ..Default::default()
    };
    let s = engine
        .generate(&frame, q, &p, &mut |_| {}, &no_cancel())
        .unwrap();
    assert_eq!(s.finish, FinishReason::Stop);
    assert_eq!(s.tokens, g.tokens[..first].to_vec());

    // A stop string: text ends before it and it is never streamed.
    if let Some(cut) = g
        .text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= 3 && g.text.len() - i >= 2)
    {
        let stop = g.text[cut..].chars().take(2).collect::<String>();
        let expect_end = g.text.find(&stop).unwrap();
        let mut streamed = String::new();
        let p = GenerateParams {
            max_tokens: 24,
            use_bundle_stop_tokens: false,
            stop_strings: vec![stop.clone()],
            ..Default::default()
        };
        let s = engine
            .generate(&frame, q, &p, &mut |t| streamed.push_str(t), &no_cancel())
            .unwrap();
        assert_eq!(s.finish, FinishReason::Stop);
        assert_eq!(s.text, g.text[..expect_end]);
        assert_eq!(streamed, s.text);
    }

    // Cancelled before the first token.
    let c = engine
        .generate(&frame, q, &params, &mut |_| {}, &AtomicBool::new(true))
        .unwrap();
    assert_eq!(c.finish, FinishReason::Cancelled);
    assert!(c.tokens.is_empty());
}

#[test]
fn detokenizer_never_splits_utf8_characters() {
    let b = Bundle::load(&tiny(), None, Verify::Presence).unwrap();
    let text = "Der Fahrer schaut nach vorn — naïve façade ✓ 🚗 ok";
    let ids = b.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    assert!(
        ids.len() > text.chars().count() / 3,
        "byte-level pieces expected"
    );
    let mut d = Detokenizer::new();
    let mut out = String::new();
    for id in ids.iter().copied() {
        let delta = d.push(&b.tokenizer, id).unwrap();
        assert!(
            !delta.contains('\u{FFFD}'),
            "half a character was emitted: {delta:?}"
        );
        out.push_str(&delta);
    }
    assert_eq!(out, b.tokenizer.decode(&ids, true).unwrap());
}

// ------------------------------------------------------------------------------------------------
// Bad input: typed errors, no panics

#[test]
fn missing_file_is_named() {
    let dir = scratch("missing");
    copy_dir(&tiny(), &dir);
    std::fs::remove_file(dir.join("fp32/embed.onnx")).unwrap();
    match Bundle::load(&dir, None, Verify::Checksums) {
        Err(BundleError::Missing { path, .. }) => {
            assert!(path.ends_with("fp32/embed.onnx"), "{path:?}")
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let err = Engine::load(&cpu_config(&dir, "fp32")).unwrap_err();
    assert!(err.to_string().contains("fp32/embed.onnx"), "{err}");
    assert!(matches!(
        Bundle::load(&dir.join("nope"), None, Verify::Checksums),
        Err(BundleError::Missing { .. })
    ));
}

#[test]
fn wrong_checksum_and_unlisted_files_are_named() {
    let dir = scratch("checksum");
    copy_dir(&tiny(), &dir);
    let probes = dir.join("probes.toml");
    let mut text = std::fs::read_to_string(&probes).unwrap();
    text.push_str("\n# tampered\n");
    std::fs::write(&probes, text).unwrap();
    match Bundle::load(&dir, None, Verify::Checksums) {
        Err(BundleError::Checksum {
            path,
            expected,
            actual,
        }) => {
            assert!(path.ends_with("probes.toml"));
            assert_ne!(expected, actual);
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
    let dir = scratch("unlisted");
    copy_dir(&tiny(), &dir);
    std::fs::write(dir.join("fp32/extra.onnx"), b"x").unwrap();
    assert!(
        matches!(Bundle::load(&dir, None, Verify::Checksums), Err(BundleError::Unlisted { path }) if path.ends_with("fp32/extra.onnx"))
    );
}

#[test]
fn bad_manifest_is_named() {
    let dir = scratch("manifest");
    copy_dir(&tiny(), &dir);
    let m = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("[image]\n", "[image]\ncolour = true\n");
    std::fs::write(&m, text).unwrap();
    match Bundle::load(&dir, None, Verify::Checksums) {
        Err(BundleError::Invalid { path, message }) => {
            assert!(path.ends_with("manifest.toml"));
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A quantization the runtime does not know (issue 16, item 10) is named, not ignored.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("colour = true\n", "")
        .replacen("quantization = \"w8a16\"", "quantization = \"w3a7\"", 1);
    std::fs::write(&m, text).unwrap();
    match Bundle::load(&dir, None, Verify::Presence) {
        Err(BundleError::Invalid { message, .. }) => {
            assert!(
                message.contains("w3a7") && message.contains("w4a16"),
                "{message}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn graph_with_wrong_inputs_is_rejected_with_its_file() {
    let dir = scratch("wrong-graph");
    copy_dir(&tiny(), &dir);
    // Put the embed graph where the vision graph belongs and make the checksum agree.
    std::fs::copy(dir.join("fp32/embed.onnx"), dir.join("fp32/vision.onnx")).unwrap();
    let sha = autoneural_inference::bundle::sha256_file(&dir.join("fp32/vision.onnx")).unwrap();
    let m = dir.join("manifest.toml");
    let old = Bundle::load(&tiny(), None, Verify::Presence)
        .unwrap()
        .manifest
        .files["fp32/vision.onnx"]
        .clone();
    std::fs::write(&m, std::fs::read_to_string(&m).unwrap().replace(&old, &sha)).unwrap();
    match Engine::load(&cpu_config(&dir, "fp32")) {
        Err(Error::Bundle(BundleError::Graph { path, message })) => {
            assert!(path.ends_with("fp32/vision.onnx"), "{path:?}");
            assert!(message.contains("pixel_values"), "{message}");
        }
        other => panic!("expected a Graph error, got {other:?}"),
    }
}

#[test]
fn over_long_prompt_bad_frames_and_bad_questions_are_typed_errors() {
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let long = "Is the driver looking at the road ahead or somewhere else? ".repeat(40);
    match engine.generate(
        &frame,
        &long,
        &GenerateParams::default(),
        &mut |_| {},
        &no_cancel(),
    ) {
        Err(Error::ContextFull { needed, capacity }) => assert!(needed > capacity),
        other => panic!("expected ContextFull, got {other:?}"),
    }
    // The engine is still usable afterwards.
    assert!(
        engine
            .generate(
                &frame,
                "Describe the driver.",
                &GenerateParams::default(),
                &mut |_| {},
                &no_cancel()
            )
            .is_ok()
    );

    let short = Frame::new(2, 64, 64, PixelLayout::Rgb8, vec![0u8; 64 * 64 * 3 - 1]);
    match engine.probe(&short, &engine.probes().probes.clone()) {
        Err(Error::Frame(FrameError::SizeMismatch {
            expected, actual, ..
        })) => assert_eq!(expected, actual + 1),
        other => panic!("expected a frame size error, got {other:?}"),
    }
    let empty = Frame::new(3, 0, 10, PixelLayout::Mono8, Vec::new());
    assert!(matches!(
        engine.encode_frame(&empty),
        Err(Error::Frame(FrameError::Empty { .. }))
    ));
    // Any size and mono frames are fine.
    let mono = Frame::new(4, 97, 61, PixelLayout::Mono8, vec![128u8; 97 * 61]);
    let one = engine.probes().probes[..1].to_vec();
    assert!(engine.probe(&mono, &one).is_ok());

    assert!(matches!(
        engine.generate(
            &frame,
            "what is <image> here",
            &GenerateParams::default(),
            &mut |_| {},
            &no_cancel()
        ),
        Err(Error::Prompt(_))
    ));
}

// ------------------------------------------------------------------------------------------------
// Worker: priority queue, bounds, cancellation, futures

/// Polls a future on this thread (no async runtime needed for the test).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn worker_runs_safety_before_description_before_questions_within_bounds() {
    let limits = QueueLimits {
        safety: 1,
        description: 1,
        question: 2,
    };
    let worker = Worker::spawn(cpu_config(&tiny(), "fp32"), limits).unwrap();
    assert_eq!(worker.info().reports.len(), 4);
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let params = GenerateParams {
        max_tokens: 6,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };

    // Block the worker inside a streaming callback until the queue is set up.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((gate_rx, started_tx)));
    let blocker = worker
        .ask(
            frame.clone(),
            "Describe the driver.".into(),
            GenerateParams {
                max_tokens: 64,
                use_bundle_stop_tokens: false,
                ..Default::default()
            },
            Some(Box::new(move |_| {
                if let Some((rx, started)) = gate.lock().unwrap().take() {
                    let _ = started.send(());
                    let _ = rx.recv();
                }
            })),
        )
        .unwrap();
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the blocking job started");

    let t0 = Instant::now();
    let q1 = worker
        .ask(
            frame.clone(),
            "Is the driver yawning?".into(),
            params.clone(),
            None,
        )
        .unwrap();
    let q2 = worker
        .ask(
            frame.clone(),
            "Describe the cabin.".into(),
            params.clone(),
            None,
        )
        .unwrap();
    match worker.ask(frame.clone(), "One too many?".into(), params.clone(), None) {
        Err(Error::QueueFull {
            class: JobClass::Question,
            capacity: 2,
        }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let d_old = worker
        .describe(
            frame.clone(),
            "Describe the driver.".into(),
            params.clone(),
            None,
        )
        .unwrap();
    let d = worker
        .describe(
            frame.clone(),
            "Describe the driver.".into(),
            params.clone(),
            None,
        )
        .unwrap();
    let s_old = worker.probe(frame.clone(), None).unwrap();
    let s = worker.probe(frame.clone(), None).unwrap();
    let cancelled = worker.ask(
        Frame {
            id: 2,
            ..frame.clone()
        },
        "cancel me".into(),
        params.clone(),
        None,
    );
    assert!(
        matches!(cancelled, Err(Error::QueueFull { .. })),
        "the question queue is still full"
    );
    q2.cancel();
    assert_eq!(worker.queued(), [1, 1, 2]);
    blocker.cancel();
    gate_tx.send(()).unwrap();

    let blocked = blocker.wait().unwrap();
    assert_eq!(blocked.finish, FinishReason::Cancelled);
    assert!(matches!(
        block_on(s_old),
        Err(Error::Superseded {
            class: JobClass::Safety
        })
    ));
    assert!(matches!(
        d_old.wait(),
        Err(Error::Superseded {
            class: JobClass::Description
        })
    ));
    let s = block_on(s).unwrap();
    let d = d.wait().unwrap();
    let q1 = block_on(q1).unwrap();
    assert!(matches!(q2.wait(), Err(Error::Cancelled)));
    assert_eq!(s.answers.len(), worker.info().probes.probes.len());
    // Start times (enqueue + queue wait) follow the class priority, not the submission order.
    let start = |w: Duration| t0 + w;
    assert!(start(s.timings.queue_wait) < start(d.timings.queue_wait));
    assert!(start(d.timings.queue_wait) < start(q1.timings.queue_wait));
    worker.shutdown();
}

#[test]
fn dropping_a_job_handle_cancels_its_job() {
    let worker = Worker::spawn(
        cpu_config(&tiny(), "fp32"),
        QueueLimits {
            safety: 1,
            description: 1,
            question: 1,
        },
    )
    .unwrap();
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let params = GenerateParams {
        max_tokens: 64,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let asked = worker
        .ask(
            frame.clone(),
            "Describe the driver.".into(),
            params.clone(),
            None,
        )
        .unwrap();
    let token = asked.cancel_token();
    assert!(!token.load(std::sync::atomic::Ordering::Relaxed));
    drop(asked);
    assert!(
        token.load(std::sync::atomic::Ordering::Relaxed),
        "a dropped handle cancels its job"
    );
    // The worker goes on with the next job; a handle whose result was taken changes nothing.
    let done = worker.ask(frame, "Is the driver yawning?".into(), params, None);
    let done = done.unwrap().wait().unwrap();
    assert_ne!(done.finish, FinishReason::Cancelled);
    worker.shutdown();
}

/// `ContextUse` is what a generation really gets: with no stop, a question generates exactly
/// `room()` tokens before the context is full; the worker and the bundle agree on it.
#[test]
fn context_use_is_the_room_a_generation_really_has() {
    let bundle = Bundle::load(&tiny(), None, Verify::Presence).unwrap();
    let worker = Worker::spawn(cpu_config(&tiny(), "fp32"), QueueLimits::default()).unwrap();
    let question = "Describe the driver.";
    let u = bundle.context_use(question).unwrap();
    let from_worker = worker.context_use(question.into()).unwrap().wait().unwrap();
    assert_eq!(from_worker, Some(u));
    assert!(u.prompt > 0 && u.room() > 1, "{u:?}");
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    let g = worker
        .ask(
            frame,
            question.into(),
            GenerateParams {
                max_tokens: u.capacity * 2,
                use_bundle_stop_tokens: false,
                ..Default::default()
            },
            None,
        )
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(g.finish, FinishReason::ContextFull);
    assert_eq!(g.tokens.len(), u.room());
    // A question longer than the context is refused by the measure too.
    let long = "look ".repeat(u.capacity * 2);
    assert_eq!(bundle.context_use(&long).unwrap().room(), 0);
    worker.shutdown();
}

#[test]
fn a_safety_probe_runs_inside_a_generation_which_then_goes_on_unchanged() {
    let frame_a = load_frame(&tiny(), "golden/0.png", 1);
    let frame_b = load_frame(&tiny(), "golden/1.png", 2);
    // A probe of another frame (its prefix is encoded in the pause), then of the question's own
    // frame (its prefix is reused in the pause).
    check_safety_preempts_generation(cpu_config(&tiny(), "fp32"), frame_a.clone(), frame_b);
    check_safety_preempts_generation(cpu_config(&tiny(), "fp32"), frame_a.clone(), frame_a);
}

/// Issue 15 "safety preempts": a safety probe submitted while a question generates completes before
/// the generation does (observed from inside the generation's own stream), and both results equal
/// the ones each request gives alone: the generation's decoder state was put back exactly.
fn check_safety_preempts_generation(config: EngineConfig, frame_a: Frame, frame_b: Frame) {
    let worker = Worker::spawn(config, QueueLimits::default()).unwrap();
    let question = "Describe the driver.";
    let params = GenerateParams {
        max_tokens: 32,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let alone = worker
        .ask(frame_a.clone(), question.into(), params.clone(), None)
        .unwrap()
        .wait()
        .unwrap();
    let probe_alone = worker.probe(frame_b.clone(), None).unwrap().wait().unwrap();

    // The stream: on the first text the test submits the probe and hands its handle in; every later
    // text looks whether the probe has its result yet, and records at which text it saw it.
    struct Seen {
        texts: usize,
        probe_done_at: Option<(usize, autoneural_inference::Result<ProbeOutcome>)>,
    }
    let seen = Arc::new(Mutex::new(Seen {
        texts: 0,
        probe_done_at: None,
    }));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (handle_tx, handle_rx) = mpsc::channel::<JobHandle<ProbeOutcome>>();
    let mut probe: Option<JobHandle<ProbeOutcome>> = None;
    let stream_seen = Arc::clone(&seen);
    let sink = Box::new(move |_: &str| {
        let mut s = stream_seen.lock().unwrap();
        s.texts += 1;
        if s.texts == 1 {
            started_tx.send(()).unwrap();
            probe = handle_rx.recv_timeout(Duration::from_secs(60)).ok();
        } else if s.probe_done_at.is_none()
            && let Some(r) = probe.as_ref().and_then(|p| p.wait_timeout(Duration::ZERO))
        {
            s.probe_done_at = Some((s.texts, r));
        }
    });
    let asked = worker
        .ask(frame_a.clone(), question.into(), params.clone(), Some(sink))
        .unwrap();
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the generation streams");
    handle_tx
        .send(worker.probe(frame_b.clone(), None).unwrap())
        .unwrap();
    let interrupted = asked.wait().unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        seen.texts >= 3,
        "the question streamed {} texts",
        seen.texts
    );
    let (at, outcome) = seen
        .probe_done_at
        .as_ref()
        .expect("the safety probe completed while the question was still generating");
    assert!(*at < seen.texts, "seen at text {at} of {}", seen.texts);
    let outcome = outcome.as_ref().unwrap();
    assert_eq!(outcome.frame_id, frame_b.id);
    assert_eq!(
        outcome.timings.prefix_reused,
        frame_b.id == frame_a.id,
        "a probe of the question's own frame reuses its prefix, another frame's is encoded"
    );
    assert_eq!(interrupted.timings.preemptions, 1);
    assert!(interrupted.timings.preempted > Duration::ZERO);
    assert_eq!(
        interrupted.tokens, alone.tokens,
        "the generation goes on exactly where it was"
    );
    assert_eq!(interrupted.text, alone.text);
    assert_eq!(outcome.answers.len(), probe_alone.answers.len());
    for (a, b) in outcome.answers.iter().zip(&probe_alone.answers) {
        assert_eq!(a.answer, b.answer, "probe {}", a.id);
        assert!(
            (a.field_probability - b.field_probability).abs() < 1e-5,
            "probe {}: {} vs {} alone",
            a.id,
            a.field_probability,
            b.field_probability
        );
    }
    // And the engine is in a sound state afterwards: the same question gives the same answer.
    let again = worker
        .ask(frame_a, question.into(), params, None)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(again.tokens, alone.tokens);
    worker.shutdown();
}

/// A safety probe waiting while a long prompt is prefilled runs between two of its prefill calls,
/// not after the whole prompt, and the generation then goes on as without the pause.
#[test]
fn a_safety_probe_runs_between_the_prefill_calls_of_a_long_prompt() {
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let frame_a = load_frame(&tiny(), "golden/0.png", 1);
    let frame_b = load_frame(&tiny(), "golden/1.png", 2);
    let question = "look ".repeat(40);
    let params = GenerateParams {
        max_tokens: 8,
        use_bundle_stop_tokens: false,
        ..Default::default()
    };
    let no = AtomicBool::new(false);
    let alone = engine
        .generate(&frame_a, &question, &params, &mut |_| {}, &no)
        .unwrap();
    let probes = engine.probes().probes.clone();
    let probe_alone = engine.probe(&frame_b, &probes).unwrap();
    let chunk = engine.bundle().unwrap().manifest.decoder.prefill_chunk;
    let calls = alone.timings.prefill_tokens.div_ceil(chunk);
    assert!(calls >= 3, "the prompt needs {calls} prefill calls");

    // Asked once after the frame prefix, then between every two prefill calls, then before each
    // token: the probe is handed out on the second ask, after the prompt's first call.
    let texts = std::cell::Cell::new(0usize);
    let (mut asks, mut asks_before_text) = (0usize, 0usize);
    let slot: Arc<Mutex<Option<autoneural_inference::Result<ProbeOutcome>>>> = Arc::default();
    let done_slot = Arc::clone(&slot);
    let mut done = Some(Box::new(move |r| *done_slot.lock().unwrap() = Some(r))
        as Box<dyn FnOnce(autoneural_inference::Result<ProbeOutcome>) + Send>);
    let mut preempt = || {
        asks += 1;
        if texts.get() == 0 {
            asks_before_text += 1;
        }
        if asks != 2 {
            return None;
        }
        Some(Preemption {
            frame: frame_b.clone(),
            probes: probes.clone(),
            done: done.take()?,
        })
    };
    let interrupted = engine
        .generate_preemptible(
            &frame_a,
            &question,
            &params,
            &mut |_| texts.set(texts.get() + 1),
            &no,
            &mut preempt,
        )
        .unwrap();
    // 1 after the prefix, calls - 1 between prefill calls (+1: asked again after the probe ran),
    // 1 before the first token.
    assert_eq!(asks_before_text, 1 + (calls - 1) + 1 + 1);
    assert_eq!(interrupted.timings.preemptions, 1);
    assert_eq!(
        interrupted.timings.prefill_tokens,
        alone.timings.prefill_tokens
    );
    assert_eq!(
        interrupted.tokens, alone.tokens,
        "the generation goes on exactly"
    );
    let outcome = slot.lock().unwrap().take().expect("the probe ran").unwrap();
    assert_eq!(outcome.frame_id, frame_b.id);
    for (a, b) in outcome.answers.iter().zip(&probe_alone.answers) {
        assert_eq!(a.answer, b.answer, "probe {}", a.id);
        assert!((a.field_probability - b.field_probability).abs() < 1e-5);
    }
}

// ------------------------------------------------------------------------------------------------
// QNN HTP simulator

fn qnn_config(bundle: &Path, cache: &Path, use_bundle_context: bool) -> EngineConfig {
    let mut c = EngineConfig::new(bundle);
    c.variant = Some("w8a16".into());
    c.require_full_offload = true;
    c.cache_dir = Some(cache.to_path_buf());
    c.providers = vec![Provider::Qnn(QnnOptions {
        use_bundle_context,
        ..Default::default()
    })];
    c
}

#[test]
fn qnn_htp_full_offload_matches_cpu_answers_and_caches_context_binaries() {
    let cache = scratch("qnn-cache");
    let frame = load_frame(&tiny(), "golden/0.png", 1);

    // First load compiles every graph on the HTP (CPU fallback disabled) and writes the cache.
    let mut npu = Engine::load(&qnn_config(&tiny(), &cache, false)).unwrap();
    for r in npu.reports() {
        assert_eq!(r.provider, "qnn");
        assert_eq!(r.source, ModelSource::CompiledToCache, "{r}");
        assert!(r.fully_offloaded(), "{r}");
        assert!(r.model.starts_with(&cache) && r.model.is_file(), "{r}");
        assert!(!r.compile_time.is_zero());
    }
    let probes = npu.probes().probes.clone();
    let on_npu = npu.probe(&frame, &probes).unwrap();
    drop(npu);

    let mut cpu = Engine::load(&cpu_config(&tiny(), "w8a16")).unwrap();
    let on_cpu = cpu.probe(&frame, &probes).unwrap();
    for (n, c) in on_npu.answers.iter().zip(&on_cpu.answers) {
        assert_eq!(
            n.answer, c.answer,
            "probe {}: HTP {:?} vs CPU {:?}",
            n.id, n.probabilities, c.probabilities
        );
    }

    // Second load reuses the context binaries: nothing is compiled.
    let again = Engine::load(&qnn_config(&tiny(), &cache, false)).unwrap();
    for r in again.reports() {
        assert_eq!(r.source, ModelSource::Cache, "{r}");
        assert!(r.compile_time.is_zero());
    }
    drop(again);

    // The bundle's own precompiled context binaries load as they are.
    let shipped = Engine::load(&qnn_config(&tiny(), &cache, true)).unwrap();
    assert!(
        shipped
            .reports()
            .iter()
            .all(|r| r.source == ModelSource::BundleContext && r.fully_offloaded())
    );
}

#[test]
fn an_unavailable_provider_is_skipped_and_reported() {
    let mut c = cpu_config(&tiny(), "fp32");
    c.providers.insert(0, Provider::Qnn(QnnOptions::default()));
    c.libraries.qnn_ep = Some(scratch("no-qnn").join("libonnxruntime_providers_qnn.so"));
    let engine = Engine::load(&c).unwrap();
    for r in engine.reports() {
        assert_eq!(r.provider, "cpu");
        assert!(
            r.skipped.len() == 1 && r.skipped[0].contains("libonnxruntime_providers_qnn.so"),
            "{:?}",
            r.skipped
        );
    }
    // With nothing left to fall back to, the error lists what was tried.
    c.providers.truncate(1);
    match Engine::load(&c) {
        Err(Error::NoProvider { graph, attempts }) => {
            assert_eq!(graph, "vision");
            assert!(attempts[0].contains("./scripts/setup"), "{attempts:?}");
        }
        other => panic!("expected NoProvider, got {other:?}"),
    }
}

/// How long the traced child stays alive after its probes: ONNX Runtime 1.31.1's telemetry uploader
/// resolves its collector about 9 s after the library starts, so a shorter run would miss it.
const TELEMETRY_WATCH: Duration = Duration::from_secs(11);

/// The traced half of `onnx_runtime_opens_no_network_socket_and_writes_nothing_under_home`: a real
/// engine load and probe run, then a wait for ONNX Runtime's background telemetry.
#[test]
#[ignore = "run by onnx_runtime_opens_no_network_socket_and_writes_nothing_under_home under strace"]
fn telemetry_child_loads_probes_and_waits() {
    let mut engine = Engine::load(&cpu_config(&tiny(), "fp32")).unwrap();
    let probes = engine.probes().probes.clone();
    let frame = load_frame(&tiny(), "golden/0.png", 1);
    engine.probe(&frame, &probes).unwrap();
    std::thread::sleep(TELEMETRY_WATCH);
}

/// Issue 16 (4): "never needs the network, stores nothing". ONNX Runtime's telemetry ignored
/// `with_telemetry(false)`: it wrote ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db
/// and resolved its collector over UDP DNS. The engine must switch it off before the library loads.
#[test]
fn onnx_runtime_opens_no_network_socket_and_writes_nothing_under_home() {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is missing: run ./scripts/setup"
    );
    let dir = scratch("telemetry");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let trace = dir.join("strace.txt");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-e",
            "trace=execve,socket,connect",
            "-o",
        ])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "telemetry_child_loads_probes_and_waits",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env("HOME", &home)
        // Nothing from the caller's environment may switch the telemetry off for us.
        .env_remove("ORT_DISABLE_TELEMETRY")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the traced run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&trace).unwrap();
    let network: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("AF_INET") || l.contains("AF_INET6"))
        .collect();
    assert!(
        network.is_empty(),
        "network sockets opened:\n{}",
        network.join("\n")
    );
    // The trace saw the process at all (an empty trace would pass the check above).
    assert!(calls.contains("execve("), "strace traced nothing: {calls}");
    let written: Vec<PathBuf> = walk(&home);
    assert!(written.is_empty(), "written under $HOME: {written:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(walk(&p));
        }
        found.push(p);
    }
    found
}
