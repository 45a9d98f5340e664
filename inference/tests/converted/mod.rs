//! A bundle converted from a Hugging Face LFM2-VL checkpoint by `forge convert-vl`
//! (`models/lfm2-vl-tiny-bundle`: the tiny random LFM2-VL of `models/lfm2-vl-tiny-onnx` as static
//! graphs for the NPU) through the public `Engine`, against transformers' own greedy tokens and
//! yes/no probe probabilities (`conversion_reference.json`, made by forge with transformers on the
//! original checkpoint), on CPU (fp32) and on the QNN HTP simulator (w8a16, full offload).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use autoneural_inference::{Engine, GenerateParams, ModelFormat, Probe};
use serde_json::Value;

use super::{cpu_config, load_frame, models, qnn_config, read_json, scratch};

fn bundle() -> PathBuf {
    models().join("lfm2-vl-tiny-bundle")
}

fn reference() -> Value {
    read_json(&bundle().join("conversion_reference.json"))
}

/// transformers' generated ids without the final stop token (the engine does not return it).
pub(super) fn want_tokens(g: &Value, eos: u64) -> Vec<u32> {
    let mut ids: Vec<u32> = g["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    if ids.last().map(|&t| t as u64) == Some(eos) {
        ids.pop();
    }
    ids
}

/// The reference's probes, as the bundle's probes.toml defines them, with the reference entries.
fn probes_of(engine: &Engine, r: &Value, image: &str) -> Vec<(Probe, f64)> {
    r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["image"] == image)
        .map(|p| {
            let id = p["probe"].as_str().unwrap();
            let probe = engine
                .probes()
                .get(id)
                .unwrap_or_else(|| panic!("probes.toml has no {id}"))
                .clone();
            assert_eq!(probe.question, p["question"].as_str().unwrap());
            (probe, p["p_yes"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn converted_bundle_generates_transformers_tokens_and_probes_on_cpu() {
    let r = reference();
    assert_eq!(ModelFormat::of(&bundle()), ModelFormat::Bundle);
    let mut engine = Engine::load(&cpu_config(&bundle(), "fp32")).unwrap();
    assert_eq!(
        engine.bundle().unwrap().manifest.text.system_prompt,
        r["system_prompt"].as_str().unwrap()
    );
    let eos = r["eos_token_id"].as_u64().unwrap();
    let gens = r["generations"].as_array().unwrap();
    assert!(gens.len() >= 2);
    let mut worst = 0f64;
    let mut n_probes = 0;
    for (i, g) in gens.iter().enumerate() {
        let image = g["image"].as_str().unwrap();
        let frame = load_frame(&bundle(), image, 500 + i as u64);
        let question = g["question"].as_str().unwrap();

        // The prompt is the processor's: our ids with the one image token expanded to N rows.
        let (before, after) = engine.prompt_ids(question).unwrap();
        let m = &engine.bundle().unwrap().manifest;
        let expanded: Vec<u64> = before
            .iter()
            .copied()
            .chain(std::iter::repeat_n(m.text.image_token_id, m.image.tokens))
            .chain(after.iter().copied())
            .map(|x| x as u64)
            .collect();
        let theirs: Vec<u64> = g["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            expanded, theirs,
            "{image}: prompt ids vs transformers' processor"
        );

        let params = GenerateParams {
            max_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
            ..GenerateParams::default()
        };
        let out = engine
            .generate(
                &frame,
                question,
                &params,
                &mut |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
        assert_eq!(
            out.tokens,
            want_tokens(g, eos),
            "{image} {question:?}: Rust bundle engine vs transformers"
        );

        let probes = probes_of(&engine, &r, image);
        assert!(!probes.is_empty());
        let list: Vec<Probe> = probes.iter().map(|(p, _)| p.clone()).collect();
        let outcome = engine.probe(&frame, &list).unwrap();
        assert!(outcome.timings.prefix_reused);
        for (answer, (probe, want)) in outcome.answers.iter().zip(&probes) {
            assert_eq!(answer.id, probe.id);
            let d = (answer.field_probability as f64 - want).abs();
            assert!(
                d < 1e-4,
                "{image} probe {}: P(yes) {} vs transformers {want}",
                probe.id,
                answer.field_probability
            );
            worst = worst.max(d);
            n_probes += 1;
        }
    }
    assert!(n_probes >= 8);
    eprintln!(
        "converted bundle fp32: {n_probes} probes, max |dP(yes)| vs transformers {worst:.2e}"
    );
}

#[test]
fn converted_w8a16_runs_fully_on_the_htp_and_answers() {
    let r = reference();
    let cache = scratch("converted-qnn-cache");
    let mut npu = Engine::load(&qnn_config(&bundle(), &cache, true)).unwrap();
    assert_eq!(npu.variant(), "w8a16");
    assert_eq!(npu.reports().len(), 4);
    for rep in npu.reports() {
        assert_eq!(rep.provider, "qnn", "{rep}");
        assert!(rep.fully_offloaded(), "{rep}");
    }
    let g = &r["generations"][0];
    let image = g["image"].as_str().unwrap();
    let frame = load_frame(&bundle(), image, 900);
    let probes = probes_of(&npu, &r, image);
    let list: Vec<Probe> = probes.iter().map(|(p, _)| p.clone()).collect();
    let on_npu = npu.probe(&frame, &list).unwrap();
    let out = npu
        .generate(
            &frame,
            g["question"].as_str().unwrap(),
            &GenerateParams {
                max_tokens: 8,
                ..GenerateParams::default()
            },
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
    assert!(!out.tokens.is_empty() || out.finish == autoneural_inference::FinishReason::Stop);
    drop(npu);

    // The HTP's answers stay close to the same QDQ graphs on the CPU and to transformers (fp32).
    let mut cpu = Engine::load(&cpu_config(&bundle(), "w8a16")).unwrap();
    let on_cpu = cpu.probe(&frame, &list).unwrap();
    for ((n, c), (probe, want)) in on_npu.answers.iter().zip(&on_cpu.answers).zip(&probes) {
        let sum: f32 = n.probabilities.iter().map(|(_, p)| p).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{}: {:?}", n.id, n.probabilities);
        let d_cpu = (n.field_probability - c.field_probability).abs();
        let d_ref = (n.field_probability as f64 - want).abs();
        eprintln!(
            "{}: P(yes) HTP {:.4} CPU-QDQ {:.4} transformers {want:.4}",
            probe.id, n.field_probability, c.field_probability
        );
        assert!(d_cpu < 0.05, "{}: HTP {n:?} vs CPU {c:?}", probe.id);
        assert!(
            d_ref < 0.1,
            "{}: HTP {n:?} vs transformers {want}",
            probe.id
        );
    }
}
