//! The perception stage: autoneural-inference's worker thread, whose one priority queue puts the
//! safety probes before the description before HMI questions.

use std::sync::Arc;
use std::time::Duration;

use autoneural_inference as inference;
use inference::{
    CpuOptions, EngineConfig, GenerateParams, LibraryPaths, PixelFormat, Provider, QnnOptions,
    QueueLimits, Worker,
};

use crate::adapters::camera::ModelInput;
use crate::config::{Config, ExecutionProvider};
use crate::stages::{Perceived, Perception, ProbeAnswer, StageError};

/// The engine configuration the daemon's config asks for.
pub fn engine_config(cfg: &Config) -> EngineConfig {
    let m = &cfg.model;
    let providers = m
        .execution_providers
        .iter()
        .map(|ep| match ep {
            ExecutionProvider::Qnn => Provider::Qnn(QnnOptions {
                htp_arch: m.qnn.htp_arch.get() as u32,
                soc_model: m.qnn.soc_model.get() as u32,
                performance_mode: m.qnn.performance_mode.clone(),
                ..QnnOptions::default()
            }),
            ExecutionProvider::Cpu => Provider::Cpu(CpuOptions {
                threads: m.cpu_threads.get() as usize,
            }),
            ExecutionProvider::Cuda => Provider::Cuda(Default::default()),
        })
        .collect();
    let mut engine = EngineConfig::new(&m.bundle);
    engine.variant = Some(m.variant.clone());
    engine.probes = m.probes_file.clone();
    engine.system_prompt = m.system_prompt.clone();
    engine.providers = providers;
    engine.require_full_offload = m.require_full_offload;
    engine.cache_dir = cfg.cache_dir();
    if let Some(dir) = &m.runtime_dir {
        engine.libraries = LibraryPaths {
            onnxruntime: Some(dir.join("libonnxruntime.so")),
            ..LibraryPaths::default()
        };
    }
    engine
}

/// The frame size the model takes: a bundle's square input, or (published releases, which resize
/// keeping the aspect ratio themselves) the camera's own size.
pub fn input_size(cfg: &Config) -> anyhow::Result<Option<u32>> {
    inference::input_size(&cfg.model.bundle)
        .map_err(|e| anyhow::anyhow!("model.bundle {}: {e}", cfg.model.bundle.display()))
}

pub struct Model {
    worker: Worker,
    probes: Option<Vec<inference::Probe>>,
    description_prompt: String,
    eps: Vec<(String, String)>,
}

impl Model {
    /// Loads the bundle on the worker thread (blocking: call from a blocking context).
    pub fn load(cfg: &Config) -> anyhow::Result<Self> {
        let limits = QueueLimits {
            safety: 1,
            description: 1,
            question: cfg.hmi.max_pending.get() as usize,
        };
        let worker = Worker::spawn(engine_config(cfg), limits)
            .map_err(|e| anyhow::anyhow!("model bundle {}: {e}", cfg.model.bundle.display()))?;
        let info = worker.info();
        let probes = if cfg.model.probes.is_empty() {
            None
        } else {
            let mut chosen = vec![];
            for id in &cfg.model.probes {
                let p = info
                    .probes
                    .probes
                    .iter()
                    .find(|p| &p.id == id)
                    .ok_or_else(|| {
                        anyhow::anyhow!("model.probes: the bundle has no probe {id:?}")
                    })?;
                chosen.push(p.clone());
            }
            Some(chosen)
        };
        let eps = info
            .reports
            .iter()
            .map(|r| (r.graph.to_string(), r.provider.to_string()))
            .collect();
        log::info!(
            "model: {} ({}) loaded in {} ms; {}",
            info.bundle_name,
            info.variant,
            info.load_time.as_millis(),
            info.reports
                .iter()
                .map(|r| format!("{} on {}", r.graph, r.provider))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Self {
            worker,
            probes,
            description_prompt: cfg.description.prompt.clone(),
            eps,
        })
    }

    pub fn info(&self) -> &inference::EngineInfo {
        self.worker.info()
    }
}

fn frame(f: &ModelInput) -> inference::Frame {
    let format = if f.mono {
        PixelFormat::Mono8
    } else {
        PixelFormat::Rgb8
    };
    inference::Frame::new(f.sequence, f.width, f.height, format, Arc::clone(&f.pixels))
}

/// Generated text as it may leave the daemon: trimmed, without control characters other than
/// newline and tab. A model can emit any token — a NUL or an escape sequence from a badly trained or
/// random model — and a NUL inside a D-Bus string makes the bus daemon drop our connection.
pub fn answer_text(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
        .collect::<String>()
        .trim()
        .to_string()
}

fn err(e: inference::Error) -> StageError {
    StageError::new(e.to_string())
}

impl Perception for Model {
    type Frame = ModelInput;

    fn probe(&self, f: &ModelInput) -> Result<Perceived, StageError> {
        let outcome = self
            .worker
            .probe(frame(f), self.probes.clone())
            .map_err(err)?
            .wait()
            .map_err(err)?;
        let t = &outcome.timings;
        Ok(Perceived {
            answers: outcome
                .answers
                .into_iter()
                .map(|a| ProbeAnswer {
                    probe: a.id,
                    field: a.field,
                    answer: a.answer,
                    probabilities: a.probabilities,
                    positive: a.field_probability,
                })
                .collect(),
            vision: Some(t.preprocess + t.vision),
            probes: Some(t.prefix_prefill + t.probe),
            face: None,
        })
    }

    fn describe(&self, f: &ModelInput, max_tokens: usize) -> Result<String, StageError> {
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let g = self
            .worker
            .describe(frame(f), self.description_prompt.clone(), params, None)
            .map_err(err)?
            .wait()
            .map_err(err)?;
        Ok(answer_text(&g.text))
    }

    fn ask(&self, f: &ModelInput, question: &str, max_tokens: usize) -> Result<String, StageError> {
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let handle = self
            .worker
            .ask(frame(f), question.to_string(), params, None)
            .map_err(|e| StageError::new(format!("unavailable: {e}")))?;
        // Bounded wait: the D-Bus side times out first; cancel so the worker drops the job.
        match handle.wait_timeout(Duration::from_secs(600)) {
            Some(r) => r.map(|g| answer_text(&g.text)).map_err(err),
            None => {
                handle.cancel();
                Err(StageError::new("the question was not answered in time"))
            }
        }
    }

    fn set_low_resolution(&self, on: bool) -> Result<(), StageError> {
        if on {
            Err(StageError::new("the bundle has one input size"))
        } else {
            Ok(())
        }
    }

    fn execution_providers(&self) -> Vec<(String, String)> {
        self.eps.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::answer_text;

    #[test]
    fn generated_text_loses_nul_and_escape_codes_but_keeps_lines() {
        assert_eq!(answer_text(" a\u{0}b\u{1b}[2Jc\nd\te "), "ab[2Jc\nd\te");
    }
}
