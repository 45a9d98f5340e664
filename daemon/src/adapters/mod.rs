//! The stage traits implemented with the project's crates: autoneural-camera (frames; synthetic
//! scenarios from autoneural-scenes), autoneural-inference (the model) and autoneural-policies
//! (rules).

pub mod camera;
pub mod fusion;
pub mod model;
pub mod policy;
pub mod preflight;

use std::fmt::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::notify::Notifier;
use crate::service::{self, Exit};

/// Loads the model, the rules and the camera, then runs the service until it stops.
pub async fn run(cfg: Config, notifier: Arc<Notifier>) -> anyhow::Result<Exit> {
    let rules = policy::Rulebook::load(cfg.policies.rules.clone()).context("policies.rules")?;
    let size = model::input_size(&cfg)?.map_or(
        (
            cfg.camera.width.get() as u32,
            cfg.camera.height.get() as u32,
        ),
        |s| (s, s),
    );
    let load_cfg = cfg.clone();
    let model = tokio::task::spawn_blocking(move || load_perception(&load_cfg))
        .await
        .context("model loader")??;
    let _ = notifier.status("Model loaded; waiting for the first observation");
    let (source, epoch) = camera::open(&cfg.camera)?;
    let face_size = cfg.face.as_ref().map(|_| {
        (
            cfg.camera.width.get() as u32,
            cfg.camera.height.get() as u32,
        )
    });
    let camera = camera::CameraStage::start(
        source,
        epoch,
        size,
        autoneural_camera::Channels::Rgb,
        face_size,
        cfg.camera.frame_timeout_ms.ms(),
        (
            cfg.camera.reconnect_initial_ms.ms(),
            cfg.camera.reconnect_max_ms.ms(),
        ),
    )?;
    service::run(cfg, camera, Arc::new(model), rules, notifier).await
}

/// The model and, when configured, the face pipeline, fused into one perception stage (blocking).
pub fn load_perception(cfg: &Config) -> anyhow::Result<fusion::Fused> {
    let model = model::Model::load(cfg)?;
    let face = match &cfg.face {
        Some(f) => Some(fusion::open_face(cfg, f)?),
        None => None,
    };
    Ok(fusion::Fused::new(cfg, model, face))
}

/// Loads the configured bundle and reports the execution provider of every graph.
pub async fn check_model(cfg: &Config) -> anyhow::Result<String> {
    let load_cfg = cfg.clone();
    let model = tokio::task::spawn_blocking(move || model::Model::load(&load_cfg))
        .await
        .context("model loader")??;
    let info = model.info();
    let mut out = String::new();
    let _ = writeln!(out, "model    {} ({})", info.bundle_name, info.variant);
    let _ = writeln!(out, "loaded   in {} ms", info.load_time.as_millis());
    let mut full = true;
    for r in &info.reports {
        let offload = if r.fallback_ops.is_empty() {
            "full offload".to_string()
        } else {
            full = false;
            format!(
                "NOT fully offloaded: {} on another EP",
                r.fallback_ops.join(", ")
            )
        };
        let _ = writeln!(
            out,
            "graph    {:<16} {:<5} {:?}, created in {} ms (compile {} ms), {offload}",
            r.graph,
            r.provider,
            r.source,
            r.create_time.as_millis(),
            r.compile_time.as_millis()
        );
        for s in &r.skipped {
            let _ = writeln!(out, "         skipped: {s}");
        }
    }
    let _ = writeln!(
        out,
        "offload  {}",
        if full {
            "yes: every graph runs entirely on its EP"
        } else {
            "no"
        }
    );
    if let Some(face_cfg) = &cfg.face {
        let (c, f) = (cfg.clone(), face_cfg.clone());
        let face = tokio::task::spawn_blocking(move || fusion::open_face(&c, &f))
            .await
            .context("face loader")??;
        let b = face.bundle();
        let _ = writeln!(
            out,
            "face     {} ({}): detector, landmarks, iris on cpu; feeds {}",
            b.manifest.name,
            b.variant,
            face_cfg
                .fields
                .iter()
                .map(|f| f.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let cache = match cfg.cache_dir() {
        Some(d) => match std::fs::read_dir(&d) {
            Ok(entries) => format!("{} ({} entries)", d.display(), entries.count()),
            Err(e) => format!("{} ({e})", d.display()),
        },
        None => "none configured (QNN graphs compile at every start)".into(),
    };
    let _ = writeln!(out, "cache    {cache}");
    Ok(out)
}
