//! The perception stage: autoneural-inference's worker thread, whose one priority queue puts the
//! safety probes before the description before HMI questions.

use std::sync::Arc;

use autoneural_inference as inference;
use inference::{
    ContextUse, CpuOptions, EngineConfig, GenerateParams, LibraryPaths, Provider, QnnOptions,
    QueueLimits, Worker,
};

use autoneural_policies::Field;

use crate::adapters::camera::ModelInput;
use crate::config::{Config, ExecutionProvider};
use crate::stages::{Answer, Perceived, Perception, StageError};
use crate::vehicle::VehicleState;

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
                spinning: m.cpu_spinning,
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
    engine.preallocate_kv = m.preallocate_kv;
    engine.cache_dir = cfg.cache_dir();
    if let Some(dir) = &m.runtime_dir {
        engine.libraries = LibraryPaths::in_runtime_dir(dir);
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
    worker: Arc<Worker>,
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
        let running = probes.as_ref().unwrap_or(&info.probes.probes);
        let face_fields: Vec<String> = cfg
            .face
            .as_ref()
            .map(|f| f.fields.iter().map(|s| s.get_ref().clone()).collect())
            .unwrap_or_default();
        check_field_sources(running, &face_fields)
            .map_err(|e| anyhow::anyhow!("model {}: {e}", cfg.model.bundle.display()))?;
        let fit = |question: &str| {
            worker
                .context_use(question.to_string())
                .and_then(|job| job.wait())
                .map_err(|e| e.to_string())
        };
        check_prompts_fit(fit, cfg, running).map_err(|e| match e {
            Misfit::Description(m) => anyhow::anyhow!("description.prompt: {m}"),
            Misfit::Probe(m) => anyhow::anyhow!("model {}: {m}", cfg.model.bundle.display()),
        })?;
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
            worker: Arc::new(worker),
            probes,
            description_prompt: cfg.description.prompt.clone(),
            eps,
        })
    }

    pub fn info(&self) -> &inference::EngineInfo {
        self.worker.info()
    }
}

/// Which prompt of the daemon's own does not fit the model (`check_prompts_fit`).
#[derive(Debug)]
pub enum Misfit {
    /// A probe's question (from the bundle or `model.probes_file`).
    Probe(String),
    /// `description.prompt`.
    Description(String),
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Misfit::Probe(m) | Misfit::Description(m) => f.write_str(m),
        }
    }
}

/// Every prompt the daemon sends on its own must fit the loaded model's context (issue 16, item 6):
/// each probe's question with room for its answer, and `description.prompt` with room for at least
/// one token (`Describe` uses it even when the periodic description is off). A description cut
/// short by the context is a warning naming the room there is. `fit` measures a question
/// (`None`: the model's context grows). An HMI question that does not fit is that call's
/// `InvalidQuestion`.
pub fn check_prompts_fit(
    fit: impl Fn(&str) -> Result<Option<ContextUse>, String>,
    cfg: &Config,
    probes: &[inference::Probe],
) -> Result<(), Misfit> {
    for p in probes {
        if let Some(u) = fit(&p.question).map_err(Misfit::Probe)?
            && u.room() < 2
        {
            return Err(Misfit::Probe(format!(
                "probe {:?}: its question takes {} of the model's {} context positions, \
                 leaving no room for an answer",
                p.id, u.prompt, u.capacity
            )));
        }
    }
    let prompt = &cfg.description.prompt;
    if let Some(u) = fit(prompt).map_err(Misfit::Description)? {
        let wanted = cfg.description.max_tokens.get() as usize;
        if u.room() == 0 {
            return Err(Misfit::Description(format!(
                "the prompt takes {} of the model's {} context positions; shorten it",
                u.prompt, u.capacity
            )));
        }
        if u.room() < wanted {
            log::warn!(
                "description.max_tokens = {wanted} but the model's context leaves room for {} \
                 after description.prompt ({} of {} positions): descriptions end there",
                u.room(),
                u.prompt,
                u.capacity
            );
        }
    }
    Ok(())
}

fn frame(f: &ModelInput) -> inference::Frame {
    inference::Frame::new(
        f.sequence,
        f.width,
        f.height,
        f.layout,
        Arc::clone(&f.pixels),
    )
}

/// Every observation field the policies read needs a source — a probe the model runs or the face
/// pipeline — and every probe must feed a field they know; otherwise the daemon would run blind on
/// that field (reported as missing data forever) or drop answers silently.
pub fn check_field_sources(
    probes: &[inference::Probe],
    face_fields: &[String],
) -> Result<(), String> {
    let known: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    if let Some(p) = probes.iter().find(|p| !known.contains(&p.field.as_str())) {
        return Err(format!(
            "probe `{}` feeds `{}`, which is not an observation field (known: {})",
            p.id,
            p.field,
            known.join(", ")
        ));
    }
    let missing: Vec<&str> = known
        .iter()
        .copied()
        .filter(|f| !probes.iter().any(|p| p.field == *f) && !face_fields.iter().any(|x| x == f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "nothing feeds {}: the model's probes (probes.toml, model.probes_file, model.probes) must cover every observation field the face pipeline does not",
            missing.join(", ")
        ));
    }
    Ok(())
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

    fn probe(&self, f: &ModelInput, _: VehicleState) -> Result<Perceived, StageError> {
        let outcome = self
            .worker
            .probe(frame(f), self.probes.clone())
            .map_err(err)?
            .wait()
            .map_err(err)?;
        let t = &outcome.timings;
        Ok(Perceived {
            answers: outcome.answers,
            vision: Some(t.preprocess + t.vision),
            probes: Some(t.prefix_prefill + t.probe),
            face: None,
        })
    }

    fn describe(&self, f: &ModelInput, max_tokens: usize) -> Answer {
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let worker = Arc::clone(&self.worker);
        let frame = frame(f);
        let prompt = self.description_prompt.clone();
        Box::pin(async move {
            // A newer description job (another Describe, or the periodic refresh) replaces a
            // queued one; the replaced caller asks again and gets a description of the newest
            // frame, instead of an error (issue 16, item 10). Bounded: each retry is behind at
            // most one newer job.
            let mut tries = 0;
            let g = loop {
                let job = worker
                    .describe(frame.clone(), prompt.clone(), params.clone(), None)
                    .map_err(err)?;
                match job.await {
                    Err(inference::Error::Superseded { .. }) if tries < 3 => tries += 1,
                    other => break other.map_err(err)?,
                }
            };
            Ok(answer_text(&g.text))
        })
    }

    fn ask(&self, f: &ModelInput, question: &str, max_tokens: usize) -> Answer {
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let job = self
            .worker
            .ask(frame(f), question.to_string(), params, None);
        Box::pin(async move {
            // Dropping this future drops the job's handle, which cancels the job.
            let job = job.map_err(|e| StageError::unavailable(e.to_string()))?;
            job.await
                .map(|g| answer_text(&g.text))
                .map_err(|e| match e {
                    // What the loaded model cannot take is the question's problem, not a failure.
                    inference::Error::ContextFull { .. } | inference::Error::Prompt(_) => {
                        StageError::invalid(format!("the model cannot take this question: {e}"))
                    }
                    e => err(e),
                })
        })
    }

    fn execution_providers(&self) -> Vec<(String, String)> {
        self.eps.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::{answer_text, check_field_sources};

    fn probe(id: &str, field: &str) -> autoneural_inference::Probe {
        autoneural_inference::Probe {
            id: id.into(),
            question: "q".into(),
            answers: vec!["a".into(), "b".into()],
            field: field.into(),
            positive: vec!["a".into()],
        }
    }

    #[test]
    fn every_field_needs_a_source_and_every_probe_a_known_field() {
        let all: Vec<_> = autoneural_policies::Field::ALL
            .iter()
            .map(|f| probe(f.as_str(), f.as_str()))
            .collect();
        assert!(check_field_sources(&all, &[]).is_ok());
        let e = check_field_sources(&[], &[]).unwrap_err();
        assert!(
            e.contains("eyes_closed") && e.contains("passenger_present"),
            "{e}"
        );
        // The face pipeline covers its fields.
        let face: Vec<String> = ["face_visible", "eyes_closed", "eyes_on_road"]
            .map(String::from)
            .into();
        let e = check_field_sources(&all[2..6], &face).unwrap_err();
        assert!(
            e.contains("passenger_present") && !e.contains("eyes_closed"),
            "{e}"
        );
        let mut odd = all.clone();
        odd.push(probe("mood", "driver_mood"));
        assert!(
            check_field_sources(&odd, &[])
                .unwrap_err()
                .contains("driver_mood")
        );
    }

    #[test]
    fn generated_text_loses_nul_and_escape_codes_but_keeps_lines() {
        assert_eq!(answer_text(" a\u{0}b\u{1b}[2Jc\nd\te "), "ab[2Jc\nd\te");
    }
}
