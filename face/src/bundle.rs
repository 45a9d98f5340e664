//! The face bundle (`format = "autoneural-face/1"`, written by `forge.face_bundle`): the three
//! MediaPipe graphs per variant, their I/O names, the input value ranges and the post-processing
//! constants of the reference implementation, and a SHA-256 per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::FaceError;

pub const FORMAT: &str = "autoneural-face/1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub size: u32,
    pub input: String,
    pub input_range: [f32; 2],
    pub boxes: String,
    pub scores: String,
    pub strides: Vec<u32>,
    pub anchor_offset: f32,
    pub interpolated_scale_aspect_ratio: f32,
    pub keypoints: usize,
    pub min_score: f32,
    pub min_suppression_threshold: f32,
    pub score_clip: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandmarksSpec {
    pub size: u32,
    pub input: String,
    pub input_range: [f32; 2],
    pub landmarks: String,
    pub presence: String,
    pub roi_scale: f32,
    pub min_presence: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrisSpec {
    pub size: u32,
    pub input: String,
    pub input_range: [f32; 2],
    pub contour: String,
    pub iris: String,
    pub roi_scale: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariantSpec {
    pub quantization: String,
    pub detector: String,
    pub landmarks: String,
    pub iris: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub description: String,
    pub source: String,
    pub detector: DetectorSpec,
    pub landmarks: LandmarksSpec,
    pub iris: IrisSpec,
    pub variants: BTreeMap<String, VariantSpec>,
    pub files: BTreeMap<String, String>,
}

/// A loaded, verified bundle with one variant chosen.
#[derive(Debug, Clone)]
pub struct FaceBundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub variant: String,
}

impl FaceBundle {
    /// Reads `dir/manifest.toml`, checks the format, that the variant exists and that every graph
    /// of it is listed in `[files]` with a matching SHA-256.
    pub fn open(dir: &Path, variant: &str) -> Result<Self, FaceError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            FaceError::bundle(&path, format!("cannot read the face bundle manifest: {e}"))
        })?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| FaceError::bundle(&path, e.to_string().trim()))?;
        if manifest.format != FORMAT {
            return Err(FaceError::bundle(
                &path,
                format!("format {:?}, expected {FORMAT:?}", manifest.format),
            ));
        }
        let Some(v) = manifest.variants.get(variant) else {
            let names: Vec<&str> = manifest.variants.keys().map(String::as_str).collect();
            return Err(FaceError::bundle(
                &path,
                format!(
                    "no variant {variant:?} (the bundle has: {})",
                    names.join(", ")
                ),
            ));
        };
        for rel in [&v.detector, &v.landmarks, &v.iris] {
            let file = dir.join(rel);
            let Some(want) = manifest.files.get(rel.as_str()) else {
                return Err(FaceError::bundle(
                    &file,
                    "not listed in manifest.toml [files]",
                ));
            };
            let got = autoneural_inference::bundle::sha256_file(&file)
                .map_err(|e| FaceError::bundle(&file, e))?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(FaceError::bundle(
                    &file,
                    format!("SHA-256 mismatch (manifest {want}, file {got})"),
                ));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            variant: variant.to_string(),
        })
    }

    fn variant_spec(&self) -> &VariantSpec {
        // `open` checked that the variant exists.
        &self.manifest.variants[&self.variant]
    }

    pub fn detector_path(&self) -> PathBuf {
        self.dir.join(&self.variant_spec().detector)
    }
    pub fn landmarks_path(&self) -> PathBuf {
        self.dir.join(&self.variant_spec().landmarks)
    }
    pub fn iris_path(&self) -> PathBuf {
        self.dir.join(&self.variant_spec().iris)
    }
}
