//! The processor and prompt against transformers' own outputs on the tiny published-layout fixture
//! (`models/lfm2-vl-tiny-onnx`, references made by forge with transformers 5.23).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::preprocess::PixelLayout;

pub(crate) fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/lfm2-vl-tiny-onnx")
}

pub(crate) fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A little-endian float32 C-order `.npy` file: (shape, data).
pub(crate) fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let dims = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = dims
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse().unwrap())
        .collect();
    let data = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

pub(crate) fn load_frame(path: &Path, id: u64) -> Frame {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    Frame::new(id, w, h, PixelLayout::Rgb8, img.into_raw())
}

fn model(system: Option<&str>, splitting: bool) -> PublishedModel {
    let mut config = EngineConfig::new(fixture());
    config.libraries = crate::LibraryPaths::default();
    config.system_prompt = system.map(str::to_string);
    config.image_splitting = Some(splitting);
    PublishedModel::load(&config).unwrap()
}

#[test]
fn expanded_prompts_and_pixels_match_transformers() {
    let r = reference();
    let system = r["prompts"]["system_user"]["messages"][0]["content"]
        .as_str()
        .unwrap();
    let question = r["prompts"]["system_user"]["messages"][1]["content"][1]["text"]
        .as_str()
        .unwrap();
    let level = 1.0 / 127.5; // one 8-bit step after (x/255 - 0.5) / 0.5
    let mut worst = 0f32;
    let mut checked = 0;
    for splitting in [false, true] {
        let m = model(Some(system), splitting);
        let mut processor = ImageProcessor::new(m.processor.config.clone());
        for (name, image) in r["images"].as_object().unwrap() {
            let case = &image["cases"][if splitting { "tiles" } else { "single" }];
            if case.get("same_as").is_some() {
                continue;
            }
            let frame = load_frame(&fixture().join(image["file"].as_str().unwrap()), 1);
            let out = processor.process(&frame.as_ref(), splitting).unwrap();
            // Spatial shapes, patch counts and token counts: exact.
            let shapes: Vec<Vec<u64>> = out
                .pieces
                .iter()
                .map(|p| vec![p.patches_h as u64, p.patches_w as u64])
                .collect();
            let want: Vec<Vec<u64>> =
                serde_json::from_value(case["spatial_shapes"].clone()).unwrap();
            assert_eq!(shapes, want, "{name} splitting={splitting}");
            assert_eq!(
                out.total_tokens() as u64,
                case["num_image_tokens"].as_u64().unwrap(),
                "{name}"
            );
            // The expanded prompt: exact ids.
            let placeholder = out.placeholder(&m.processor.config, &m.image_tokens);
            let (prefix, rest) = m.prompt(&placeholder, question).unwrap();
            let ids: Vec<u64> = prefix.iter().chain(&rest).map(|&i| u64::from(i)).collect();
            let want_ids: Vec<u64> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            assert_eq!(
                ids, want_ids,
                "{name} splitting={splitting}: expanded input_ids"
            );
            // Pixels: the sampled full patch rows, within the resamplers' rounding.
            let (_, rows) = npy_f32(&fixture().join(case["pixel_rows_file"].as_str().unwrap()));
            let index: Vec<Vec<usize>> =
                serde_json::from_value(case["pixel_rows_index"].clone()).unwrap();
            let mut k = 0;
            for (piece, idx) in out.pieces.iter().zip(&index) {
                for &row in idx {
                    let ours = &piece.pixels[row * 768..(row + 1) * 768];
                    let theirs = &rows[k * 768..(k + 1) * 768];
                    for (a, b) in ours.iter().zip(theirs) {
                        worst = worst.max((a - b).abs());
                    }
                    k += 1;
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} cases");
    eprintln!(
        "pixel rows: max |diff| {worst} ({:.1} steps)",
        worst / level
    );
    // Pillow-style resampling (fast_image_resize) vs torchvision's uint8 antialias: at most one step.
    assert!(worst <= level + 1e-6, "max |diff| {worst}");
}
