//! The shipped default model reproduces its model card (issue 4's Rust-side check).
//!
//! Renders the first held-out scenes with the Rust scene renderer — the same pixels forge evaluated,
//! since the training pipeline's PNGs are lossless renders of the same seed — runs
//! `models/autoneural-cabin` through the engine on the CPU, and checks every probe's accuracy against
//! `eval.json`'s `rust_check` (the numbers MODEL.md reports) within one point.

use std::collections::BTreeMap;

use autoneural_camera::PixelFormat as CameraFormat;
use autoneural_camera::synthetic::{Scene, Variation};
use autoneural_inference::{Engine, Frame, PixelFormat};

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

    let mut engine = Engine::load(&cpu_config(&bundle, variant)).expect("the shipped bundle loads");
    let probes = engine.probes().probes.clone();
    let mut right: BTreeMap<String, u64> = BTreeMap::new();
    for index in 0..count {
        let scene = Scene::sample(seed, index, Variation::Train);
        let image = scene.render(size, size);
        let format = match image.format {
            CameraFormat::Grey => PixelFormat::Mono8,
            _ => PixelFormat::Rgb8,
        };
        let frame = Frame::new(index, size, size, format, image.data);
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
    for (id, want) in &expected {
        let got = 100.0 * right.get(id).copied().unwrap_or(0) as f64 / count as f64;
        assert!(
            (got - want).abs() <= 1.0,
            "probe {id}: {got:.1} % here, the model card says {want:.1} %"
        );
    }
}
