//! The daemon's configuration file (TOML).
//!
//! Every table rejects unknown keys, and every value is checked while it is read, so a mistake is
//! reported with the file, the line and the key (`autoneurald --check-config FILE`). Relative paths
//! are taken relative to the directory of the configuration file, so a config and the files it
//! names can move together. The reference is in README.md ("Configuration").

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}\n    {line}| {text}")]
    Invalid {
        path: PathBuf,
        line: usize,
        text: String,
        message: String,
    },
}

/// The whole configuration, as read from the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub camera: CameraConfig,
    pub model: ModelConfig,
    /// The camera-rate face pipeline; absent: the model's probes feed every observation field.
    pub face: Option<FaceConfig>,
    #[serde(default)]
    pub fusion: FusionConfig,
    #[serde(default)]
    pub vehicle: VehicleConfig,
    #[serde(default)]
    pub policies: PoliciesConfig,
    #[serde(default)]
    pub budgets: BudgetsConfig,
    #[serde(default)]
    pub description: DescriptionConfig,
    #[serde(default)]
    pub hmi: HmiConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// Which kind of camera feeds the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A V4L2 capture device (`device`).
    V4l2,
    /// Recorded frames from a directory (`directory`).
    Replay,
    /// A scripted synthetic cabin scenario (`scenario`).
    Synthetic,
}

/// What the daemon does when a finite source (a scenario, a replay without `loop`) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndOfStream {
    /// Keep running and report the camera as unavailable (the production behaviour).
    #[default]
    Wait,
    /// Publish the last state, then exit with status 0 (demos and benchmarks).
    Exit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub source: SourceKind,
    /// V4L2 device path or stable `/dev/v4l/by-id/...` name.
    pub device: Option<Spanned<PathBuf>>,
    /// Replay: directory of frames and their timing file.
    pub directory: Option<Spanned<PathBuf>>,
    /// Synthetic: a shipped scenario name (e.g. `phone-use`) or a scenario TOML file.
    pub scenario: Option<Spanned<String>>,
    /// Requested capture size and rate (V4L2 negotiates the nearest; synthetic renders exactly).
    #[serde(default = "default_width")]
    pub width: Bounded<16, 8192>,
    #[serde(default = "default_height")]
    pub height: Bounded<16, 8192>,
    #[serde(default = "default_fps")]
    pub fps: Bounded<1, 120>,
    /// V4L2 pixel format preference, first that the device offers wins.
    #[serde(default)]
    pub formats: Vec<String>,
    /// Replay: start again at the end.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    #[serde(default)]
    pub end_of_stream: EndOfStream,
    /// No frame for this long counts as a camera failure (reported, reconnect attempted).
    #[serde(default = "default_frame_timeout_ms")]
    pub frame_timeout_ms: Bounded<50, 60_000>,
    /// A failed or missing camera is reopened after this delay, doubled per failed attempt up to
    /// `reconnect_max_ms` (the daemon keeps running and retrying meanwhile).
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: Bounded<10, 60_000>,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: Bounded<10, 600_000>,
}

/// Execution providers the runtime may use, in the order it should try them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Qnn,
    Cpu,
    Cuda,
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Qnn => "qnn",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model directory: an AutoNeural bundle (manifest.toml, graphs, tokenizer, probes.toml) or a
    /// published LFM2-VL ONNX release as downloaded (config.json, onnx/, tokenizer, templates).
    pub bundle: PathBuf,
    /// Variant: a bundle's (`fp32`, `w8a16`, ...) or a release's file suffix (`fp32`, `fp16`, `q4`,
    /// `q8`, or encoder-decoder like `fp16-q4`).
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Ordered fallback list of execution providers.
    #[serde(default = "default_eps")]
    pub execution_providers: Vec<ExecutionProvider>,
    /// Every graph must run fully on the NPU, or loading fails (no silent CPU fallback).
    #[serde(default)]
    pub require_full_offload: bool,
    /// Allocate the model's whole KV capacity at load (steady memory; every decoder step attends
    /// over all of it) instead of capacity buckets that grow with the context (CPU graphs that
    /// name their capacity only).
    #[serde(default)]
    pub preallocate_kv: bool,
    #[serde(default = "default_threads")]
    pub cpu_threads: Bounded<1, 64>,
    /// ONNX Runtime's intra-op threads busy-wait between the operators of a run instead of
    /// sleeping (see `CpuOptions::spinning`; off by default).
    #[serde(default)]
    pub cpu_spinning: bool,
    /// Probe ids to run on every frame; empty means every probe of the bundle.
    #[serde(default)]
    pub probes: Vec<String>,
    /// A probes file (bundle probes.toml format) replacing the model's own: a bundle's probes.toml,
    /// or for a published release the instruction-style default set.
    #[serde(default)]
    pub probes_file: Option<PathBuf>,
    /// Published releases: a system message before every question (a bundle has its own).
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub qnn: QnnConfig,
    /// Directory holding libonnxruntime.so (and the QNN plugin); default: found by the runtime.
    pub runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QnnConfig {
    #[serde(default = "default_htp_arch")]
    pub htp_arch: Bounded<68, 81>,
    #[serde(default = "default_soc_model")]
    pub soc_model: Bounded<0, 1000>,
    #[serde(default = "default_perf_mode")]
    pub performance_mode: String,
}

impl Default for QnnConfig {
    fn default() -> Self {
        Self {
            htp_arch: default_htp_arch(),
            soc_model: default_soc_model(),
            performance_mode: default_perf_mode(),
        }
    }
}

/// The observation fields the face pipeline can feed.
pub const FACE_FIELDS: [&str; 3] = ["face_visible", "eyes_closed", "eyes_on_road"];

/// `[face]`: MediaPipe's face, landmark and iris networks (`autoneural-face`) on every frame.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceConfig {
    /// The face bundle directory (`models/mediapipe-face`).
    pub bundle: PathBuf,
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Observation fields this pipeline feeds; the model's probes feed the others.
    #[serde(default = "d_face_fields")]
    pub fields: Vec<Spanned<String>>,
    /// The detector runs at least every this many frames; landmarks track the face in between.
    #[serde(default = "d_detect_every")]
    pub detect_every: Bounded<1, 1000>,
    /// ONNX Runtime threads for the face graphs.
    #[serde(default = "d_face_threads")]
    pub threads: Bounded<1, 16>,
    /// Eye-openness, gaze cone and calibration tunables (see README, "Face pipeline").
    #[serde(default)]
    pub signals: autoneural_face::SignalConfig,
}

/// `[fusion]`: how often the model's probes run when the face pipeline is on, and how old a field
/// may be before it counts as missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// The model's safety probes run on every Nth frame (1 = every frame).
    #[serde(default = "d_model_every")]
    pub model_every_frames: Bounded<1, 1000>,
    /// A field not refreshed for this long is missing data for the policies (never a stale truth).
    #[serde(default = "d_max_field_age")]
    pub max_field_age_ms: Bounded<1, 60_000>,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            model_every_frames: d_model_every(),
            max_field_age_ms: d_max_field_age(),
        }
    }
}

/// `[vehicle]`: the signals the vehicle gateway reports over D-Bus (see `vehicle.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleConfig {
    /// A speed report older than this is unknown (speed-gated rules run ungated).
    #[serde(default = "d_speed_max_age")]
    pub speed_max_age_ms: Bounded<100, 60_000>,
}

impl Default for VehicleConfig {
    fn default() -> Self {
        Self {
            speed_max_age_ms: d_speed_max_age(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Rules file (TOML); the built-in Euro NCAP defaults when absent. Reloaded on SIGHUP.
    pub rules: Option<PathBuf>,
}

/// Per-stage latency budgets in milliseconds. A stage whose p99 over the last `window` samples
/// exceeds its budget makes the daemon degrade (see `budget.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    #[serde(default = "d_capture_to_observation")]
    pub capture_to_observation_ms: Bounded<1, 60_000>,
    #[serde(default = "d_vision")]
    pub vision_ms: Bounded<1, 60_000>,
    #[serde(default = "d_probes")]
    pub probes_ms: Bounded<1, 60_000>,
    #[serde(default = "d_description")]
    pub description_ms: Bounded<1, 600_000>,
    /// Removed: `hmi.timeout_ms` bounds an answer (read only to name it in the error).
    #[serde(default)]
    pub hmi_answer_ms: Option<Spanned<toml::Value>>,
    /// The face pipeline on one frame (detection or tracking, landmarks, both eyes).
    #[serde(default = "d_face")]
    pub face_ms: Bounded<1, 60_000>,
    /// Samples per decision window.
    #[serde(default = "d_window")]
    pub window: Bounded<5, 10_000>,
    /// Recover one step when the p99 of every stage is below this share (percent) of its budget.
    #[serde(default = "d_headroom")]
    pub recovery_headroom_percent: Bounded<10, 95>,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            capture_to_observation_ms: d_capture_to_observation(),
            vision_ms: d_vision(),
            probes_ms: d_probes(),
            description_ms: d_description(),
            hmi_answer_ms: None,
            face_ms: d_face(),
            window: d_window(),
            recovery_headroom_percent: d_headroom(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptionConfig {
    /// How often the cabin description is refreshed; 0 disables it.
    #[serde(default = "d_description_interval")]
    pub interval_ms: Bounded<0, 3_600_000>,
    #[serde(default = "d_description_tokens")]
    pub max_tokens: Bounded<1, 512>,
    /// The question the model answers with the description.
    #[serde(default = "d_description_prompt")]
    pub prompt: String,
}

impl Default for DescriptionConfig {
    fn default() -> Self {
        Self {
            interval_ms: d_description_interval(),
            max_tokens: d_description_tokens(),
            prompt: d_description_prompt(),
        }
    }
}

/// Limits on HMI questions (`Ask`, `Describe`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmiConfig {
    #[serde(default = "d_question_chars")]
    pub max_question_chars: Bounded<1, 4096>,
    #[serde(default = "d_answer_tokens")]
    pub max_answer_tokens: Bounded<1, 1024>,
    /// Calls per sender per minute.
    #[serde(default = "d_rate")]
    pub rate_per_minute: Bounded<1, 6000>,
    /// Questions waiting or running at once, all senders together.
    #[serde(default = "d_pending")]
    pub max_pending: Bounded<1, 64>,
    #[serde(default = "d_timeout")]
    pub timeout_ms: Bounded<100, 600_000>,
}

impl Default for HmiConfig {
    fn default() -> Self {
        Self {
            max_question_chars: d_question_chars(),
            max_answer_tokens: d_answer_tokens(),
            rate_per_minute: d_rate(),
            max_pending: d_pending(),
            timeout_ms: d_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    System,
    Session,
    Address,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    #[serde(default)]
    pub kind: BusKind,
    /// For `kind = "address"`: a D-Bus address such as `unix:path=/run/cockpit/bus`.
    pub address: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// QNN EP context binaries. systemd sets $CACHE_DIRECTORY, which wins when `dir` is not set.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Error => log::LevelFilter::Error,
            Self::Warn => log::LevelFilter::Warn,
            Self::Info => log::LevelFilter::Info,
            Self::Debug => log::LevelFilter::Debug,
            Self::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub level: LogLevel,
}

/// An integer that must lie in `MIN..=MAX`; checked while the file is read, so an out-of-range
/// value is reported at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if v < MIN as i64 || v as u64 > MAX {
            return Err(serde::de::Error::custom(format!(
                "{v} is out of range: allowed {MIN}..={MAX}"
            )));
        }
        Ok(Self(v as u64))
    }
}

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn ms(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

fn default_width() -> Bounded<16, 8192> {
    Bounded(640)
}
fn default_height() -> Bounded<16, 8192> {
    Bounded(480)
}
fn default_fps() -> Bounded<1, 120> {
    Bounded(10)
}
fn default_frame_timeout_ms() -> Bounded<50, 60_000> {
    Bounded(2000)
}
fn default_reconnect_initial_ms() -> Bounded<10, 60_000> {
    Bounded(500)
}
fn default_reconnect_max_ms() -> Bounded<10, 600_000> {
    Bounded(10_000)
}
fn default_variant() -> String {
    "fp32".into()
}
fn default_eps() -> Vec<ExecutionProvider> {
    vec![ExecutionProvider::Cpu]
}
fn default_threads() -> Bounded<1, 64> {
    Bounded(2)
}
fn default_htp_arch() -> Bounded<68, 81> {
    Bounded(68)
}
fn default_soc_model() -> Bounded<0, 1000> {
    Bounded(39)
}
fn default_perf_mode() -> String {
    "burst".into()
}
fn d_capture_to_observation() -> Bounded<1, 60_000> {
    Bounded(500)
}
fn d_vision() -> Bounded<1, 60_000> {
    Bounded(200)
}
fn d_probes() -> Bounded<1, 60_000> {
    Bounded(300)
}
fn d_description() -> Bounded<1, 600_000> {
    Bounded(5000)
}
fn d_face() -> Bounded<1, 60_000> {
    Bounded(100)
}
fn d_face_fields() -> Vec<Spanned<String>> {
    FACE_FIELDS
        .iter()
        .map(|f| Spanned::new(0..0, f.to_string()))
        .collect()
}
fn d_detect_every() -> Bounded<1, 1000> {
    Bounded(10)
}
fn d_face_threads() -> Bounded<1, 16> {
    Bounded(1)
}
fn d_model_every() -> Bounded<1, 1000> {
    Bounded(1)
}
fn d_speed_max_age() -> Bounded<100, 60_000> {
    Bounded(1000)
}
fn d_max_field_age() -> Bounded<1, 60_000> {
    Bounded(2000)
}
fn d_window() -> Bounded<5, 10_000> {
    Bounded(20)
}
fn d_headroom() -> Bounded<10, 95> {
    Bounded(60)
}
fn d_description_interval() -> Bounded<0, 3_600_000> {
    Bounded(5000)
}
fn d_description_tokens() -> Bounded<1, 512> {
    Bounded(32)
}
fn d_description_prompt() -> String {
    "Describe the cabin.".into()
}
fn d_question_chars() -> Bounded<1, 4096> {
    Bounded(256)
}
fn d_answer_tokens() -> Bounded<1, 1024> {
    Bounded(48)
}
fn d_rate() -> Bounded<1, 6000> {
    Bounded(30)
}
fn d_pending() -> Bounded<1, 64> {
    Bounded(4)
}
fn d_timeout() -> Bounded<100, 600_000> {
    Bounded(10_000)
}

/// Line (1-based) and the text of that line for a byte offset into `src`.
/// Longest string any key may hold: paths (PATH_MAX), addresses, names. Prompts are shorter.
pub const MAX_STRING_CHARS: usize = 4096;
/// Longest `description.prompt` / `model.system_prompt`: they are prefilled by the model with every
/// description / question, next to the safety probes.
pub const MAX_PROMPT_CHARS: usize = 1024;

/// The first string value (in a table or array, at any depth) over its limit: (key, chars, limit).
fn overlong_string(t: &toml::Table, prefix: &str) -> Option<(String, usize, usize)> {
    fn walk(v: &toml::Value, key: &str) -> Option<(String, usize, usize)> {
        match v {
            toml::Value::String(s) => {
                let limit = if key.ends_with("prompt") {
                    MAX_PROMPT_CHARS
                } else {
                    MAX_STRING_CHARS
                };
                let n = s.chars().count();
                (n > limit).then(|| (key.to_string(), n, limit))
            }
            toml::Value::Array(a) => a.iter().find_map(|x| walk(x, key)),
            toml::Value::Table(t) => overlong_string(t, key),
            _ => None,
        }
    }
    t.iter().find_map(|(k, v)| {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        walk(v, &key)
    })
}

fn line_of(src: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(src.len());
    let line = src[..offset].bytes().filter(|&b| b == b'\n').count() + 1;
    let text = src
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim_end()
        .to_string();
    (line, text)
}

impl Config {
    /// Reads, checks and resolves a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let src = match std::str::from_utf8(&bytes) {
            Ok(s) => s,
            Err(e) => {
                // Name the line: everything before the first bad byte is valid text.
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let (line, text) = line_of(valid, valid.len());
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    text,
                    message: format!("not UTF-8 text (byte {})", e.valid_up_to()),
                });
            }
        };
        Self::parse(src, path)
    }

    /// Parses `src` (read from `path`, used for messages and to resolve relative paths).
    pub fn parse(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, text) = line_of(src, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                text,
                message,
            }
        };
        let mut cfg: Config =
            toml::from_str(src).map_err(|e| invalid(e.span(), e.message().trim().to_string()))?;
        if let Some((key, n, limit)) = src
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| overlong_string(&t, ""))
        {
            let at = key
                .rsplit('.')
                .next()
                .and_then(|k| {
                    src.lines().position(|l| {
                        l.trim_start()
                            .split('=')
                            .next()
                            .is_some_and(|x| x.trim() == k)
                    })
                })
                .map(|i| src.lines().take(i).map(|l| l.len() + 1).sum::<usize>());
            return Err(invalid(
                at.map(|a| a..a),
                format!("{key}: {n} characters; the limit is {limit}"),
            ));
        }
        cfg.check().map_err(|(span, msg)| invalid(span, msg))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Checks that depend on several keys; returns the span to blame.
    fn check(&self) -> Result<(), (Option<Range<usize>>, String)> {
        let cam = &self.camera;
        let missing = match cam.source {
            SourceKind::V4l2 if cam.device.is_none() => Some("device"),
            SourceKind::Replay if cam.directory.is_none() => Some("directory"),
            SourceKind::Synthetic if cam.scenario.is_none() => Some("scenario"),
            _ => None,
        };
        if let Some(key) = missing {
            let kind = format!("{:?}", cam.source).to_lowercase();
            return Err((
                None,
                format!("[camera] source = \"{kind}\" needs the key `{key}`"),
            ));
        }
        if cam.reconnect_max_ms.get() < cam.reconnect_initial_ms.get() {
            return Err((
                None,
                format!(
                    "camera.reconnect_max_ms ({}) must not be below camera.reconnect_initial_ms ({})",
                    cam.reconnect_max_ms.get(),
                    cam.reconnect_initial_ms.get()
                ),
            ));
        }
        if let Some(s) = &cam.scenario
            && s.get_ref().trim().is_empty()
        {
            return Err((Some(s.span()), "camera.scenario: must not be empty".into()));
        }
        if let Some(v) = &self.budgets.hmi_answer_ms {
            return Err((
                Some(v.span()),
                "budgets.hmi_answer_ms was removed: hmi.timeout_ms bounds the time of an answer \
                 (a question that takes longer gets Error.Timeout and its model job is cancelled)"
                    .into(),
            ));
        }
        if self.model.execution_providers.is_empty() {
            return Err((
                None,
                "model.execution_providers: list at least one provider".into(),
            ));
        }
        if let Some(face) = &self.face {
            for f in &face.fields {
                if !FACE_FIELDS.contains(&f.get_ref().as_str()) {
                    return Err((
                        Some(f.span()),
                        format!(
                            "face.fields: the face pipeline cannot feed {:?} (it feeds {})",
                            f.get_ref(),
                            FACE_FIELDS.join(", ")
                        ),
                    ));
                }
            }
            let s = &face.signals;
            for (key, v) in [
                ("ear_softness", s.ear_softness),
                ("eyeball_radius", s.eyeball_radius),
                ("road_yaw_deg", s.road_yaw_deg),
                ("road_pitch_deg", s.road_pitch_deg),
                ("road_softness_deg", s.road_softness_deg),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err((
                        None,
                        format!("face.signals.{key}: must be a positive number, got {v}"),
                    ));
                }
            }
            for (key, v) in [
                ("ear_closed", s.ear_closed),
                ("neutral_yaw_deg", s.neutral_yaw_deg),
                ("neutral_pitch_deg", s.neutral_pitch_deg),
                ("calibration.min_speed_kmh", s.calibration.min_speed_kmh),
                ("calibration.accept_deg", s.calibration.accept_deg),
                ("calibration.reset_after_s", s.calibration.reset_after_s),
            ] {
                if !v.is_finite() {
                    return Err((None, format!("face.signals.{key}: must be a finite number")));
                }
            }
        }
        match (self.bus.kind, &self.bus.address) {
            (BusKind::Address, None) => {
                return Err((
                    None,
                    "[bus] kind = \"address\" needs the key `address`".into(),
                ));
            }
            (BusKind::Address, Some(a)) => {
                if let Err(e) = zbus::Address::try_from(a.get_ref().as_str()) {
                    return Err((
                        Some(a.span()),
                        format!("bus.address: not a D-Bus address: {e}"),
                    ));
                }
            }
            (_, Some(a)) => {
                return Err((
                    Some(a.span()),
                    "bus.address: only used with kind = \"address\"".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.model.bundle);
        if let Some(face) = self.face.as_mut() {
            abs(&mut face.bundle);
        }
        if let Some(p) = self.model.runtime_dir.as_mut() {
            abs(p);
        }
        if let Some(p) = self.model.probes_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.policies.rules.as_mut() {
            abs(p);
        }
        if let Some(p) = self.cache.dir.as_mut() {
            abs(p);
        }
        if let Some(d) = self.camera.directory.as_mut() {
            abs(d.get_mut());
        }
        if let Some(s) = self.camera.scenario.as_mut() {
            // A scenario is a shipped name unless it looks like a file.
            if s.get_ref().ends_with(".toml") && Path::new(s.get_ref()).is_relative() {
                *s.get_mut() = base.join(s.get_ref()).to_string_lossy().into_owned();
            }
        }
    }

    /// The cache directory: the config's, else systemd's $CACHE_DIRECTORY, else none.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache.dir.clone().or_else(|| {
            std::env::var_os("CACHE_DIRECTORY")
                .map(|v| {
                    PathBuf::from(
                        v.to_string_lossy()
                            .split(':')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .filter(|p| !p.as_os_str().is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[camera]
source = "synthetic"
scenario = "phone-use"

[model]
bundle = "../models/tiny-random"
"#;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(src, Path::new("/etc/autoneural/autoneurald.toml"))
    }

    #[test]
    fn a_file_that_is_not_utf8_names_the_line() {
        let dir = std::env::temp_dir().join(format!("cfg-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, b"[camera]\nsource = \"synth\xffetic\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml:2:") && e.contains("UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 16, item 6: a 10 MB prompt stalled the safety path; every string is bounded.
    #[test]
    fn every_string_is_bounded_and_the_error_names_its_line() {
        let long_prompt = format!(
            "{MINIMAL}[description]\nprompt = \"{}\"\n",
            "x".repeat(MAX_PROMPT_CHARS + 1)
        );
        let e = parse(&long_prompt).unwrap_err().to_string();
        assert!(
            e.contains(":9:") && e.contains("description.prompt") && e.contains("1024"),
            "{e}"
        );
        let ok = format!(
            "{MINIMAL}[description]\nprompt = \"{}\"\n",
            "x".repeat(MAX_PROMPT_CHARS)
        );
        assert!(parse(&ok).is_ok());
        let long_path = MINIMAL.replace("../models/tiny-random", &"d/".repeat(MAX_STRING_CHARS));
        let e = parse(&long_path).unwrap_err().to_string();
        assert!(e.contains(":7:") && e.contains("model.bundle"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.camera.source, SourceKind::Synthetic);
        assert_eq!(cfg.camera.fps.get(), 10);
        assert_eq!(
            cfg.model.bundle,
            Path::new("/etc/autoneural/../models/tiny-random")
        );
        assert_eq!(cfg.model.execution_providers, vec![ExecutionProvider::Cpu]);
        assert_eq!(cfg.bus.kind, BusKind::System);
        assert_eq!(cfg.budgets.capture_to_observation_ms.get(), 500);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line_and_name() {
        let src = format!("{MINIMAL}\n[budgets]\nvision_ms = 10\nvison_ms = 20\n");
        let err = parse(&src).unwrap_err().to_string();
        assert!(err.contains(":11:"), "{err}");
        assert!(err.contains("vison_ms"), "{err}");
    }

    #[test]
    fn the_removed_hmi_answer_budget_names_its_replacement_and_line() {
        let src = format!("{MINIMAL}\n[budgets]\nvision_ms = 10\nhmi_answer_ms = 3000\n");
        let err = parse(&src).unwrap_err().to_string();
        assert!(err.contains(":11:"), "{err}");
        assert!(
            err.contains("hmi_answer_ms was removed") && err.contains("hmi.timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_value_names_line_and_range() {
        let src = MINIMAL.replace(
            "scenario = \"phone-use\"",
            "scenario = \"phone-use\"\nfps = 0",
        );
        let err = parse(&src).unwrap_err().to_string();
        assert!(err.contains(":5:"), "{err}");
        assert!(err.contains("fps = 0"), "{err}");
        assert!(err.contains("1..=120"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_enum_are_rejected() {
        let err = parse(&MINIMAL.replace("\"synthetic\"", "\"usb\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:") && err.contains("usb"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[hmi]\ntimeout_ms = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout_ms"), "{err}");
    }

    #[test]
    fn source_specific_keys_are_required() {
        let src = MINIMAL
            .replace("scenario = \"phone-use\"", "")
            .replace("synthetic", "v4l2");
        let err = parse(&src).unwrap_err().to_string();
        assert!(err.contains("device"), "{err}");
    }

    #[test]
    fn bus_address_is_checked() {
        let err = parse(&format!("{MINIMAL}\n[bus]\nkind = \"address\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("address"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}\n[bus]\nkind = \"address\"\naddress = \"nonsense\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(":11:"), "{err}");
        let ok = parse(&format!(
            "{MINIMAL}\n[bus]\nkind = \"address\"\naddress = \"unix:path=/tmp/x\"\n"
        ))
        .unwrap();
        assert_eq!(ok.bus.kind, BusKind::Address);
    }

    #[test]
    fn reconnect_back_off_defaults_and_order() {
        let cfg = parse(MINIMAL).unwrap();
        assert_eq!(cfg.camera.reconnect_initial_ms.get(), 500);
        assert_eq!(cfg.camera.reconnect_max_ms.get(), 10_000);
        let src = MINIMAL.replace(
            "scenario = \"phone-use\"",
            "scenario = \"phone-use\"\nreconnect_initial_ms = 2000\nreconnect_max_ms = 1000",
        );
        let err = parse(&src).unwrap_err().to_string();
        assert!(err.contains("reconnect_max_ms"), "{err}");
    }

    #[test]
    fn broken_toml_is_reported_with_a_line() {
        let err = parse("[camera\nsource=1").unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }
}
