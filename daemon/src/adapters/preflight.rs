//! What start-up would find wrong, checked without loading any graph: `--check-config` (the unit's
//! `ExecStartPre`) must fail on a configuration that cannot start, naming the line of the key.
//!
//! Checked: the model directory (a bundle's manifest, files and variant; a release's layout, JSON
//! files, chat template and variant), the probes (file, ids, a source for every observation field),
//! the prompts' fit in a bundle's context (probe questions, `description.prompt`),
//! `model.runtime_dir`, `model.qnn.performance_mode`, the rules file, the camera (scenario, pixel
//! format names, a device or replay path of the wrong kind; a camera that is not there yet is not an
//! error — start-up waits for it) and the face bundle.

use std::path::Path;

use autoneural_inference as inference;

use crate::config::{Config, ConfigError, SourceKind};

/// The line of `key` in `[table]` (1-based, with its text), or line 0 when it is not written.
fn key_line(src: &str, table: &str, key: &str) -> (usize, String) {
    let mut current = String::new();
    for (i, line) in src.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
            continue;
        }
        if current == table
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return (i + 1, line.trim_end().to_string());
        }
    }
    (0, String::new())
}

/// Checks `cfg` (loaded from `path`) against the machine.
pub fn check(cfg: &Config, path: &Path) -> Result<(), ConfigError> {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let fail = |table: &str, key: &str, message: String| {
        let (line, text) = key_line(&src, table, key);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            text,
            message: format!("{table}.{key}: {message}"),
        }
    };
    let m = &cfg.model;

    // The model directory and its variant.
    if !m.bundle.exists() {
        return Err(fail(
            "model",
            "bundle",
            format!("{} does not exist", m.bundle.display()),
        ));
    }
    if !m.bundle.is_dir() {
        return Err(fail(
            "model",
            "bundle",
            format!("{} is a file, not a model directory", m.bundle.display()),
        ));
    }
    let mut bundle = None;
    let probes = match inference::ModelFormat::of(&m.bundle) {
        inference::ModelFormat::Published => {
            inference::published::Layout::open(&m.bundle, Some(&m.variant))
                .map_err(|e| fail("model", "bundle", e.to_string()))?;
            match &m.probes_file {
                Some(p) => inference::ProbeSet::load(p)
                    .map_err(|e| fail("model", "probes_file", e.to_string()))?,
                None => inference::ProbeSet::parse(inference::published::INSTRUCT_PROBES)
                    .map_err(|e| fail("model", "bundle", e))?,
            }
        }
        inference::ModelFormat::Bundle => {
            let b = inference::Bundle::load(
                &m.bundle,
                m.probes_file.as_deref(),
                inference::Verify::Presence,
            )
            .map_err(|e| {
                let key = if e.to_string().contains("probes") && m.probes_file.is_some() {
                    "probes_file"
                } else {
                    "bundle"
                };
                fail("model", key, e.to_string())
            })?;
            b.variant(&m.variant)
                .map_err(|e| fail("model", "variant", e.to_string()))?;
            let probes = b.probes.clone();
            bundle = Some(b);
            probes
        }
    };
    let mut running = Vec::new();
    for id in &m.probes {
        match probes.probes.iter().find(|p| &p.id == id) {
            Some(p) => running.push(p.clone()),
            None => {
                let ids: Vec<&str> = probes.probes.iter().map(|p| p.id.as_str()).collect();
                return Err(fail(
                    "model",
                    "probes",
                    format!("the model has no probe {id:?} (it has {})", ids.join(", ")),
                ));
            }
        }
    }
    if m.probes.is_empty() {
        running = probes.probes.clone();
    }
    let face_fields: Vec<String> = cfg
        .face
        .as_ref()
        .map(|f| f.fields.iter().map(|s| s.get_ref().clone()).collect())
        .unwrap_or_default();
    // Where the probes came from: the key to name when they are wrong.
    let probes_key = if m.probes_file.is_some() {
        "probes_file"
    } else {
        "bundle"
    };
    super::model::check_field_sources(&running, &face_fields)
        .map_err(|e| fail("model", probes_key, e))?;
    // The prompts fit a bundle's fixed context (a release's context grows).
    if let Some(b) = &bundle {
        let fit = |q: &str| b.context_use(q).map(Some).map_err(|e| e.to_string());
        super::model::check_prompts_fit(fit, cfg, &running).map_err(|e| match e {
            super::model::Misfit::Description(m) => fail("description", "prompt", m),
            super::model::Misfit::Probe(m) => fail("model", probes_key, m),
        })?;
    }

    if let Some(dir) = &m.runtime_dir {
        let lib = inference::LibraryPaths::in_runtime_dir(dir)
            .onnxruntime
            .unwrap_or_default();
        if !lib.exists() {
            return Err(fail(
                "model",
                "runtime_dir",
                format!("{} not found", lib.display()),
            ));
        }
    }
    if !inference::PERFORMANCE_MODES.contains(&m.qnn.performance_mode.as_str()) {
        return Err(fail(
            "model.qnn",
            "performance_mode",
            format!(
                "{:?} is not one of {}",
                m.qnn.performance_mode,
                inference::PERFORMANCE_MODES.join(", ")
            ),
        ));
    }

    // Rules.
    if let Some(rules) = &cfg.policies.rules {
        super::policy::Rulebook::load(Some(rules.clone()))
            .map_err(|e| fail("policies", "rules", e.to_string()))?;
    }

    // Camera: what retrying cannot fix.
    let cam = &cfg.camera;
    match cam.source {
        SourceKind::Synthetic => {
            let name = cam
                .scenario
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default();
            if name.ends_with(".toml") {
                autoneural_scenes::Scenario::load(Path::new(&name))
                    .map_err(|e| fail("camera", "scenario", e.to_string()))?;
            } else if autoneural_scenes::Scenario::builtin(&name).is_none() {
                let names: Vec<&str> = autoneural_scenes::BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(fail(
                    "camera",
                    "scenario",
                    format!(
                        "no shipped scenario {name:?} (shipped: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        SourceKind::V4l2 => {
            for f in &cam.formats {
                if autoneural_camera::PixelFormat::parse(f).is_none() {
                    return Err(fail(
                        "camera",
                        "formats",
                        format!("unknown pixel format {f:?}"),
                    ));
                }
            }
            if let Some(dev) = &cam.device {
                let p = Path::new(dev.get_ref());
                if let Ok(meta) = std::fs::metadata(p) {
                    use std::os::unix::fs::FileTypeExt;
                    if !meta.file_type().is_char_device() {
                        return Err(fail(
                            "camera",
                            "device",
                            format!(
                                "{} is not a device node (a V4L2 camera is a character device)",
                                p.display()
                            ),
                        ));
                    }
                }
            }
        }
        SourceKind::Replay => {
            if let Some(d) = &cam.directory
                && d.get_ref().is_file()
            {
                return Err(fail(
                    "camera",
                    "directory",
                    format!(
                        "{} is a file, not a directory of frames",
                        d.get_ref().display()
                    ),
                ));
            }
        }
    }

    // The face bundle.
    if let Some(face) = &cfg.face {
        autoneural_face::FaceBundle::open(&face.bundle, &face.variant)
            .map_err(|e| fail("face", "bundle", e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::key_line;

    #[test]
    fn key_lines_are_found_in_their_table() {
        let src = "[camera]\nsource = \"v4l2\"\n\n[model]\nbundle = \"x\"\n[model.qnn]\nperformance_mode = \"warp\"\n";
        assert_eq!(key_line(src, "model", "bundle").0, 5);
        assert_eq!(key_line(src, "model.qnn", "performance_mode").0, 7);
        assert_eq!(key_line(src, "model", "variant").0, 0);
        assert_eq!(key_line(src, "camera", "bundle").0, 0);
    }
}
