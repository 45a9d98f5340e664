//! AutoNeural assembled from public parts by `forge assemble` (`models/autoneural-assembled-tiny`:
//! a tiny random transformers `Lfm2ForCausalLM` + a tiny timm MobileNetV5 encoder + a fresh
//! connector, as a static-shape NPU bundle) through the public `Engine`: the language model
//! against transformers' own greedy tokens (`assembly_reference.json`, text only: the connector is
//! untrained, so nothing outside the bundle knows what the image path should answer), the image
//! path against forge's Python runtime on the same graphs (golden.json), and W8A16 fully on the
//! QNN HTP simulator.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use autoneural_inference::{Engine, GenerateParams, ModelFormat};
use serde_json::Value;

use super::{
    check_golden, converted::want_tokens, cpu_config, load_frame, models, qnn_config, read_json,
    scratch,
};

fn bundle() -> PathBuf {
    models().join("autoneural-assembled-tiny")
}

fn reference() -> Value {
    read_json(&bundle().join("assembly_reference.json"))
}

#[test]
fn assembled_bundle_generates_transformers_tokens_from_text_on_cpu() {
    let r = reference();
    assert_eq!(ModelFormat::of(&bundle()), ModelFormat::Bundle);
    let mut engine = Engine::load(&cpu_config(&bundle(), "fp32")).unwrap();
    let eos = r["eos_token_id"].as_u64().unwrap();
    let gens = r["generations"].as_array().unwrap();
    assert!(gens.len() >= 2);
    let params = GenerateParams {
        max_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
        ..GenerateParams::default()
    };
    for g in gens {
        let ids: Vec<u32> = g["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let out = engine
            .generate_ids(&ids, &params, &mut |_| {}, &AtomicBool::new(false))
            .unwrap();
        assert_eq!(
            out.tokens,
            want_tokens(g, eos),
            "{:?}: Rust bundle engine vs transformers' Lfm2ForCausalLM",
            g["question"]
        );
    }
    // A frame request after a text-only one encodes its frame again and still answers.
    let frame = load_frame(&bundle(), "golden/0.png", 700);
    let probes = engine.probes().probes.clone();
    let outcome = engine.probe(&frame, &probes).unwrap();
    assert!(!outcome.timings.prefix_reused);
    assert_eq!(outcome.answers.len(), probes.len());
}

#[test]
fn assembled_bundle_image_path_matches_forge_runtime_in_fp32_and_w8a16() {
    check_golden(&bundle(), "fp32");
    check_golden(&bundle(), "w8a16");
}

#[test]
fn assembled_w8a16_runs_fully_on_the_htp() {
    let cache = scratch("assembled-qnn-cache");
    let mut npu = Engine::load(&qnn_config(&bundle(), &cache, true)).unwrap();
    assert_eq!(npu.variant(), "w8a16");
    assert_eq!(npu.reports().len(), 4);
    for rep in npu.reports() {
        assert_eq!(rep.provider, "qnn", "{rep}");
        assert!(rep.fully_offloaded(), "{rep}");
    }
    let frame = load_frame(&bundle(), "golden/0.png", 900);
    let probes = npu.probes().probes.clone();
    let on_npu = npu.probe(&frame, &probes).unwrap();
    drop(npu);
    let mut cpu = Engine::load(&cpu_config(&bundle(), "w8a16")).unwrap();
    let on_cpu = cpu.probe(&frame, &probes).unwrap();
    for (n, c) in on_npu.answers.iter().zip(&on_cpu.answers) {
        let sum: f32 = n.probabilities.iter().map(|(_, p)| p).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{}: {:?}", n.id, n.probabilities);
        assert!(
            (n.field_probability - c.field_probability).abs() < 0.05,
            "{}: HTP {n:?} vs CPU {c:?}",
            n.id
        );
    }
}
