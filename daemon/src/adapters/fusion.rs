//! Two perception paths, one observation. The face pipeline (`autoneural-face`, every frame) feeds
//! the fields listed in `[face] fields` (by default `face_visible`, `eyes_closed`,
//! `eyes_on_road`); the model's safety probes feed every other field, on every
//! `fusion.model_every_frames`-th frame. Each field remembers the capture time of the frame it
//! came from, and a field older than `fusion.max_field_age_ms` is left out of the observation:
//! the policies then see missing data, never a stale truth. Without `[face]` the model feeds every
//! field on every frame, exactly as before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use autoneural_face::{FacePipeline, PipelineConfig, RgbImage};
use autoneural_inference::LibraryPaths;

use crate::adapters::camera::ModelInput;
use crate::adapters::model::Model;
use crate::config::{Config, FaceConfig};
use crate::stages::{Answer, Perceived, Perception, ProbeAnswer, StageError};
use crate::vehicle::VehicleState;

/// The `id` the face pipeline's answers carry (the model's carry their probe ids).
pub const FACE_SOURCE: &str = "face";

struct FaceStage {
    pipeline: Mutex<FacePipeline>,
    fields: Vec<String>,
}

#[derive(Default)]
struct Fields {
    frames: u64,
    /// The model's latest answers and the capture time of their frame.
    model: Vec<(ProbeAnswer, Duration)>,
}

pub struct Fused {
    model: Model,
    face: Option<FaceStage>,
    model_every: u64,
    max_age: Duration,
    fields: Mutex<Fields>,
}

/// Opens the face pipeline of `[face]` with the ONNX Runtime library the model uses.
pub fn open_face(cfg: &Config, face: &FaceConfig) -> anyhow::Result<FacePipeline> {
    let libraries = match &cfg.model.runtime_dir {
        Some(dir) => LibraryPaths::in_runtime_dir(dir),
        None => LibraryPaths::default(),
    };
    let pipeline = PipelineConfig {
        detect_every: face.detect_every.get() as u32,
        threads: face.threads.get() as usize,
        signals: face.signals.clone(),
    };
    let p = FacePipeline::open(&face.bundle, &face.variant, &libraries, pipeline)
        .map_err(|e| anyhow::anyhow!("face.bundle: {e}"))?;
    log::info!(
        "face: {} ({}) for {}",
        p.bundle().manifest.name,
        face.variant,
        face.fields
            .iter()
            .map(|f| f.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(p)
}

impl Fused {
    pub fn new(cfg: &Config, model: Model, face: Option<FacePipeline>) -> Self {
        let fields = cfg
            .face
            .as_ref()
            .map(|f| f.fields.iter().map(|s| s.get_ref().clone()).collect())
            .unwrap_or_default();
        Self {
            model,
            face: face.map(|p| FaceStage {
                pipeline: Mutex::new(p),
                fields,
            }),
            model_every: cfg.fusion.model_every_frames.get(),
            max_age: cfg.fusion.max_field_age_ms.ms(),
            fields: Mutex::new(Fields::default()),
        }
    }

    /// Forgets the tracked face, its calibration and the model's cached answers.
    pub fn reset(&self) {
        if let Some(stage) = &self.face
            && let Ok(mut p) = stage.pipeline.lock()
        {
            p.reset();
        }
        if let Ok(mut f) = self.fields.lock() {
            *f = Fields::default();
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    fn face_answers(
        &self,
        stage: &FaceStage,
        f: &ModelInput,
        vehicle: VehicleState,
    ) -> Result<(Vec<ProbeAnswer>, Duration), StageError> {
        let input = f
            .face
            .as_ref()
            .ok_or_else(|| StageError::new("face pipeline: the frame has no face image"))?;
        let img = RgbImage::new(input.width, input.height, &input.rgb)
            .map_err(|e| StageError::new(format!("face pipeline: {e}")))?;
        let t = Instant::now();
        let seen = {
            let mut p = stage
                .pipeline
                .lock()
                .map_err(|_| StageError::new("face pipeline: poisoned by an earlier panic"))?;
            // The neutral gaze is learned only while driving (`calibration.min_speed_kmh`).
            p.process(&img, f.timestamp.as_secs_f64(), vehicle.speed_kmh)
                .map_err(|e| StageError::new(format!("face pipeline: {e}")))?
        };
        let took = t.elapsed();
        let mut answers = Vec::new();
        for field in &stage.fields {
            let p = match field.as_str() {
                "face_visible" => Some(seen.face_present),
                "eyes_closed" => seen.eyes_closed,
                "eyes_on_road" => seen.eyes_on_road,
                _ => None,
            };
            if let Some(p) = p {
                answers.push(face_answer(field, p));
            }
        }
        Ok((answers, took))
    }
}

fn face_answer(field: &str, p: f32) -> ProbeAnswer {
    let p = p.clamp(0.0, 1.0);
    ProbeAnswer {
        id: FACE_SOURCE.into(),
        field: field.into(),
        answer: if p >= 0.5 { "yes" } else { "no" }.into(),
        probabilities: vec![("yes".into(), p), ("no".into(), 1.0 - p)],
        field_probability: p,
    }
}

impl Perception for Fused {
    type Frame = ModelInput;

    fn probe(&self, f: &ModelInput, vehicle: VehicleState) -> Result<Perceived, StageError> {
        let Some(stage) = &self.face else {
            return self.model.probe(f, vehicle);
        };
        let (mut answers, face_time) = self.face_answers(stage, f, vehicle)?;
        let mut fields = self
            .fields
            .lock()
            .map_err(|_| StageError::new("fusion: poisoned by an earlier panic"))?;
        let due = fields.frames % self.model_every == 0;
        fields.frames += 1;
        let (mut vision, mut probes) = (None, None);
        if due {
            match self.model.probe(f, vehicle) {
                Ok(p) => {
                    vision = p.vision;
                    probes = p.probes;
                    fields.model = p
                        .answers
                        .into_iter()
                        .filter(|a| !stage.fields.contains(&a.field))
                        .map(|a| (a, f.timestamp))
                        .collect();
                }
                // The face fields are still good; the model's age out and go missing.
                Err(e) => log::warn!("fusion: model probes failed on frame {}: {e}", f.sequence),
            }
        }
        let max_age = self.max_age;
        answers.extend(
            fields
                .model
                .iter()
                .filter(|(_, at)| f.timestamp.saturating_sub(*at) <= max_age)
                .map(|(a, _)| a.clone()),
        );
        Ok(Perceived {
            answers,
            vision,
            probes,
            face: Some(face_time),
        })
    }

    fn describe(&self, f: &ModelInput, max_tokens: usize) -> Answer {
        self.model.describe(f, max_tokens)
    }

    fn ask(&self, f: &ModelInput, question: &str, max_tokens: usize) -> Answer {
        self.model.ask(f, question, max_tokens)
    }

    fn execution_providers(&self) -> Vec<(String, String)> {
        let mut eps = self.model.execution_providers();
        if self.face.is_some() {
            for g in ["face_detector", "face_landmarks", "iris_landmarks"] {
                eps.push((g.to_string(), "cpu".to_string()));
            }
        }
        eps
    }
}
