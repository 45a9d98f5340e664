//! A published LFM2-VL ONNX release (the tiny random fixture `models/lfm2-vl-tiny-onnx`, exported
//! in the layout of `LiquidAI/LFM2.5-VL-1.6B-ONNX`) through the public `Engine`, against
//! transformers' greedy tokens and probe probabilities (`reference.json`, made by forge), and every
//! kind of bad download.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use autoneural_inference::{
    BundleError, Engine, EngineConfig, Error, Frame, GenerateParams, ModelFormat, PixelLayout,
    Probe,
};
use serde_json::Value;

use super::{check_safety_preempts_generation, copy_dir, cpu_config, models, scratch};

fn fixture() -> PathBuf {
    models().join("lfm2-vl-tiny-onnx")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap())
        .unwrap()
}

fn frame(rel: &str, id: u64) -> Frame {
    let img = image::open(fixture().join(rel)).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    Frame::new(id, w, h, PixelLayout::Rgb8, img.into_raw())
}

fn config(dir: &Path, variant: &str, splitting: bool) -> EngineConfig {
    let r = reference();
    let mut c = cpu_config(dir, variant);
    c.system_prompt = Some(
        r["prompts"]["system_user"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    c.image_splitting = Some(splitting);
    c
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    }
}

#[test]
fn a_safety_probe_runs_inside_a_published_release_generation() {
    check_safety_preempts_generation(
        config(&fixture(), "fp32", false),
        frame("images/chelsea_451x300.png", 1),
        frame("images/small_64x48.png", 2),
    );
}

#[test]
fn published_release_generates_transformers_tokens() {
    let r = reference();
    assert_eq!(ModelFormat::of(&fixture()), ModelFormat::Published);
    let gens = r["generations"].as_array().unwrap();
    assert!(gens.len() >= 3);
    for splitting in [false, true] {
        let mut engine = Engine::load(&config(&fixture(), "fp32", splitting)).unwrap();
        assert_eq!(engine.format(), ModelFormat::Published);
        assert!(engine.bundle().is_none() && engine.kv_capacity().is_none());
        for (i, g) in gens.iter().enumerate() {
            if g["do_image_splitting"].as_bool() != Some(splitting) {
                continue;
            }
            let image = format!("images/{}.png", g["image"].as_str().unwrap());
            let mut streamed = String::new();
            let out = engine
                .generate(
                    &frame(&image, i as u64),
                    g["question"].as_str().unwrap(),
                    &greedy(g["max_new_tokens"].as_u64().unwrap() as usize),
                    &mut |t| streamed.push_str(t),
                    &AtomicBool::new(false),
                )
                .unwrap();
            assert_eq!(
                out.tokens,
                ids(&g["generated_ids"]),
                "generation {i} ({image}, splitting {splitting}): Rust vs transformers"
            );
            assert_eq!(streamed, out.text);
            let t = &out.timings;
            assert!(
                t.vision > std::time::Duration::ZERO && t.ttft.is_some(),
                "{t:?}"
            );
            assert_eq!(
                t.prefix_tokens + t.prefill_tokens,
                g["input_ids"].as_array().unwrap().len(),
                "prompt length"
            );
        }
    }
}

#[test]
fn published_release_probes_match_transformers() {
    let r = reference();
    let mut engine = Engine::load(&config(&fixture(), "fp32", false)).unwrap();
    let mut worst = 0f64;
    let probes = r["probes"].as_array().unwrap();
    assert!(probes.len() >= 8);
    for (i, p) in probes.iter().enumerate() {
        let image = format!("images/{}.png", p["image"].as_str().unwrap());
        let probe = Probe {
            id: format!("p{i}"),
            question: p["question"].as_str().unwrap().to_string(),
            answers: serde_json::from_value(p["answers"].clone()).unwrap(),
            field: "eyes_closed".into(),
            positive: vec!["yes".into()],
        };
        // Frames with the same id share the encoded prefix: probes on one image reuse it.
        let id = if p["image"] == probes[0]["image"] {
            1
        } else {
            2
        };
        let out = engine.probe(&frame(&image, id), &[probe]).unwrap();
        let ours = f64::from(out.answers[0].field_probability);
        let theirs = p["p_yes"].as_f64().unwrap();
        worst = worst.max((ours - theirs).abs());
    }
    eprintln!("probe P(yes): max |Rust - transformers| = {worst:.2e}");
    // The image goes through a Pillow-style resampler here and torchvision's there (pixels at most
    // one 8-bit step apart, see the crate's processor test); everything after is the same graphs.
    assert!(worst < 1e-4, "P(yes) differs by {worst}");
}

#[test]
fn every_published_variant_runs_and_the_instruct_probes_are_the_default() {
    let r = reference();
    let g = &r["generations"][0];
    let image = format!("images/{}.png", g["image"].as_str().unwrap());
    for variant in ["fp16", "q8", "q4", "fp16-q4"] {
        let mut engine = Engine::load(&config(&fixture(), variant, false)).unwrap();
        assert_eq!(engine.variant(), variant);
        let out = engine
            .generate(
                &frame(&image, 1),
                g["question"].as_str().unwrap(),
                &greedy(4),
                &mut |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
        assert!(!out.tokens.is_empty(), "{variant}");
        let probes = engine.probes().probes.clone();
        assert!(probes.iter().any(|p| p.field == "eyes_closed"), "{variant}");
        let seen = engine.probe(&frame(&image, 1), &probes).unwrap();
        for a in &seen.answers {
            assert!(
                (0.0..=1.0).contains(&a.field_probability),
                "{variant} {a:?}"
            );
        }
        // Quantized/half graphs against transformers' fp32 probabilities: how far each variant
        // moves the answers (random weights are a hard case: near-tied logits).
        let mut worst = 0f64;
        for p in r["probes"].as_array().unwrap().iter().take(4) {
            let probe = Probe {
                id: "p".into(),
                question: p["question"].as_str().unwrap().to_string(),
                answers: serde_json::from_value(p["answers"].clone()).unwrap(),
                field: "eyes_closed".into(),
                positive: vec!["yes".into()],
            };
            let image = format!("images/{}.png", p["image"].as_str().unwrap());
            let out = engine.probe(&frame(&image, 7), &[probe]).unwrap();
            let d = f64::from(out.answers[0].field_probability) - p["p_yes"].as_f64().unwrap();
            worst = worst.max(d.abs());
        }
        eprintln!("{variant}: probe P(yes) max |variant - transformers fp32| = {worst:.4}");
        let limit = match variant {
            "fp16" => 0.005,
            "q8" => 0.02,
            _ => 1.0, // 4-bit random weights: runs, answers are not comparable
        };
        assert!(worst <= limit, "{variant}: P(yes) off by {worst}");
    }
}

fn damaged(name: &str, damage: impl FnOnce(&Path)) -> Error {
    let dir = scratch(name);
    copy_dir(&fixture(), &dir);
    damage(&dir);
    let err = Engine::load(&cpu_config(&dir, "fp32")).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    err
}

#[test]
fn bad_downloads_name_the_file_and_the_problem() {
    // Missing external data.
    let e = damaged("pub-nodata", |d| {
        std::fs::remove_file(d.join("onnx/decoder.onnx_data")).unwrap()
    });
    let s = e.to_string();
    assert!(
        matches!(e, Error::Bundle(BundleError::Missing { .. })),
        "{s}"
    );
    assert!(
        s.contains("decoder.onnx_data") && s.contains("external data"),
        "{s}"
    );

    // External data cut short (an interrupted download).
    let e = damaged("pub-short", |d| {
        let p = d.join("onnx/decoder.onnx_data");
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
    let s = e.to_string();
    assert!(
        s.contains("decoder.onnx_data") && s.contains("incomplete download"),
        "{s}"
    );

    // A graph file cut short.
    let e = damaged("pub-graph", |d| {
        let p = d.join("onnx/embed_images.onnx");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    });
    let s = e.to_string();
    assert!(s.contains("embed_images.onnx"), "{s}");

    // A graph whose I/O is not what the layout says (the token table where the encoder should be).
    let e = damaged("pub-io", |d| {
        std::fs::copy(
            d.join("onnx/embed_tokens.onnx"),
            d.join("onnx/embed_images.onnx"),
        )
        .unwrap();
    });
    let s = e.to_string();
    assert!(
        s.contains("embed_images.onnx") && s.contains("pixel_values"),
        "{s}"
    );

    // Missing tokenizer / chat template / processor config.
    for (file, tag) in [
        ("tokenizer.json", "pub-tok"),
        ("chat_template.jinja", "pub-tmpl"),
    ] {
        let e = damaged(tag, |d| std::fs::remove_file(d.join(file)).unwrap());
        let s = e.to_string();
        assert!(
            s.contains(file) || s.contains("chat template"),
            "{file}: {s}"
        );
    }
    let e = damaged("pub-pre", |d| {
        std::fs::remove_file(d.join("preprocessor_config.json")).unwrap();
        std::fs::remove_file(d.join("processor_config.json")).unwrap();
    });
    assert!(e.to_string().contains("preprocessor_config.json"), "{e}");

    // Mixed files: a config.json of another model size.
    let e = damaged("pub-cfg", |d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["text_config"]["hidden_size"] = 1024.into();
        std::fs::write(&p, v.to_string()).unwrap();
    });
    let s = e.to_string();
    assert!(s.contains("decoder.onnx") && s.contains("1024"), "{s}");

    // A variant the download does not have: the error lists what it has.
    let mut c = cpu_config(&fixture(), "q5");
    c.variant = Some("q5".into());
    let s = Engine::load(&c).unwrap_err().to_string();
    assert!(
        s.contains("q5") && s.contains("q4") && s.contains("fp16"),
        "{s}"
    );
}
