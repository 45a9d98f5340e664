//! The shipped default model reproduces its model card (issue 4's Rust-side check).
//!
//! Renders the first held-out scenes with the Rust scene renderer — the same pixels forge evaluated,
//! since the training pipeline's PNGs are lossless renders of the same seed — runs
//! `models/autoneural-cabin` through the engine on the CPU, and checks every probe's accuracy against
//! `eval.json`'s `rust_check` (the numbers MODEL.md reports) within one point. It also asks for the
//! description of the first scenes and counts the sentences that are exactly the renderer's.

use std::collections::BTreeMap;

use autoneural_camera::PixelFormat;
use autoneural_scenes::{Scene, Variation};
use std::sync::atomic::AtomicBool;

use autoneural_inference::{Engine, Frame, GenerateParams, PixelLayout};

use super::{cpu_config, models};

#[test]
fn cabin_model_reproduces_its_model_card() {
    let bundle = models().join("autoneural-cabin");
    let text = std::fs::read_to_string(bundle.join("eval.json")).expect("the bundle has eval.json");
    let eval: serde_json::Value = serde_json::from_str(&text).expect("eval.json is JSON");
    let check = &eval["rust_check"];
    let seed = check["seed"].as_u64().expect("rust_check.seed");
    let count = check["count"].as_u64().expect("rust_check.count");
    let size = check["size"].as_u64().expect("rust_check.size") as u32;
    let variant = check["variant"].as_str().expect("rust_check.variant");
    assert_eq!(
        check["variation"].as_str(),
        Some("train"),
        "held-out scenes come from the training distribution"
    );
    let expected: BTreeMap<String, f64> = check["per_probe_pct"]
        .as_object()
        .expect("rust_check.per_probe_pct")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("a percentage")))
        .collect();
    assert_eq!(expected.len(), 8, "every default probe has a number");

    let describe = &check["description"];
    let describe_count = describe["count"]
        .as_u64()
        .expect("rust_check.description.count");
    let question = describe["question"]
        .as_str()
        .expect("rust_check.description.question");
    let params = GenerateParams {
        max_tokens: describe["max_tokens"].as_u64().expect("max_tokens") as usize,
        ..GenerateParams::default()
    };
    let expected_exact = describe["exact"]
        .as_u64()
        .expect("rust_check.description.exact");

    let mut engine = Engine::load(&cpu_config(&bundle, variant)).expect("the shipped bundle loads");
    let probes = engine.probes().probes.clone();
    let mut right: BTreeMap<String, u64> = BTreeMap::new();
    let mut exact = 0u64;
    for index in 0..count {
        let scene = Scene::sample(seed, index, Variation::Train);
        let image = scene.render(size, size);
        let format = match image.format {
            PixelFormat::Grey => PixelLayout::Mono8,
            _ => PixelLayout::Rgb8,
        };
        let frame = Frame::new(index, size, size, format, image.data);
        if index < describe_count {
            let text = engine
                .generate(
                    &frame,
                    question,
                    &params,
                    &mut |_| {},
                    &AtomicBool::new(false),
                )
                .expect("a description")
                .text;
            exact += u64::from(text.trim() == scene.labels.description());
        }
        let outcome = engine.probe(&frame, &probes).expect("probes run");
        assert_eq!(outcome.answers.len(), expected.len());
        for answer in &outcome.answers {
            let truth = scene
                .labels
                .probe_answer(&answer.id)
                .expect("a default probe");
            *right.entry(answer.id.clone()).or_default() += u64::from(answer.answer == truth);
        }
    }
    assert!(
        exact.abs_diff(expected_exact) <= 1,
        "descriptions: {exact} of {describe_count} exactly right here, the model card says {expected_exact}"
    );
    for (id, want) in &expected {
        let got = 100.0 * right.get(id).copied().unwrap_or(0) as f64 / count as f64;
        assert!(
            (got - want).abs() <= 1.0,
            "probe {id}: {got:.1} % here, the model card says {want:.1} %"
        );
    }
}
