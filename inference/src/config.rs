//! Engine configuration (serde, so the daemon can embed it in its TOML with unknown keys rejected).

use std::path::PathBuf;

use serde::Deserialize;

use crate::libraries::LibraryPaths;

/// How to load and run a bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The bundle directory (manifest.toml inside).
    pub bundle: PathBuf,
    /// Which variant to run (`fp32`, `w8a16`, ...). Default: a quantized variant when the first
    /// provider is `qnn` (the HTP runs integer graphs), else `fp32`.
    #[serde(default)]
    pub variant: Option<String>,
    /// Execution providers in order of preference; a provider that is unavailable (library or
    /// device missing) is skipped, see `require_full_offload` for one that cannot run a graph.
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    /// Every graph must run entirely on the first available accelerator provider:
    /// `session.disable_cpu_ep_fallback=1`, and a graph that does not fully offload is an error
    /// instead of falling back to the next provider.
    #[serde(default)]
    pub require_full_offload: bool,
    /// Where compiled QNN EP context binaries are cached (systemd: `CacheDirectory=`). None: no cache,
    /// every start compiles.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub libraries: LibraryPaths,
    /// Overrides the bundle's probes.toml.
    #[serde(default)]
    pub probes: Option<PathBuf>,
    /// Verify every file's SHA-256 at load (default true).
    #[serde(default = "yes")]
    pub verify_checksums: bool,
    /// Published releases: a system message put before every question (a bundle's manifest has its
    /// own system prompt).
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Published releases: split large images into tiles + thumbnail (None: the model's
    /// preprocessor_config.json `do_image_splitting`).
    #[serde(default)]
    pub image_splitting: Option<bool>,
    /// Bundles whose CPU decoder graphs name their KV capacity (forge/capacity.py): bind the whole
    /// kv_capacity from the start (all KV memory allocated at load, every step attends over all of
    /// it) instead of capacity buckets that grow with the context (default false: buckets).
    #[serde(default)]
    pub preallocate_kv: bool,
}

fn yes() -> bool {
    true
}

fn default_providers() -> Vec<Provider> {
    vec![Provider::Cpu(CpuOptions::default())]
}

impl EngineConfig {
    /// CPU-only defaults for a bundle.
    pub fn new(bundle: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            bundle: bundle.into(),
            variant: None,
            providers: default_providers(),
            require_full_offload: false,
            cache_dir: None,
            libraries: LibraryPaths::default(),
            probes: None,
            verify_checksums: true,
            system_prompt: None,
            image_splitting: None,
            preallocate_kv: false,
        }
    }
}

/// One execution provider and its options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Provider {
    Qnn(QnnOptions),
    Cpu(CpuOptions),
    Cuda(CudaOptions),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Qnn(_) => "qnn",
            Provider::Cpu(_) => "cpu",
            Provider::Cuda(_) => "cuda",
        }
    }
    /// The ONNX Runtime EP name its nodes are assigned to.
    pub fn ep_name(&self) -> &'static str {
        match self {
            Provider::Qnn(_) => "QNNExecutionProvider",
            Provider::Cpu(_) => "CPUExecutionProvider",
            Provider::Cuda(_) => "CUDAExecutionProvider",
        }
    }
}

/// QNN execution provider (HTP backend). Defaults: SA8295P (htp_arch 68, soc_model 39), burst.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QnnOptions {
    #[serde(default = "default_htp_arch")]
    pub htp_arch: u32,
    #[serde(default = "default_soc_model")]
    pub soc_model: u32,
    /// QNN `htp_performance_mode`: burst, balanced, default, high_performance, high_power_saver,
    /// low_balanced, low_power_saver, power_saver, extreme_power_saver, sustained_high_performance.
    #[serde(default = "default_perf")]
    pub performance_mode: String,
    /// Threads for the (CPU) parts of a QNN session; 0 = ONNX Runtime's default.
    #[serde(default)]
    pub threads: usize,
    /// Load the bundle's precompiled EP context binaries when they match htp_arch/soc_model
    /// (default true); false compiles from the ONNX graphs (through the cache).
    #[serde(default = "yes")]
    pub use_bundle_context: bool,
}

pub const PERFORMANCE_MODES: &[&str] = &[
    "burst",
    "balanced",
    "default",
    "high_performance",
    "high_power_saver",
    "low_balanced",
    "low_power_saver",
    "power_saver",
    "extreme_power_saver",
    "sustained_high_performance",
];

fn default_htp_arch() -> u32 {
    68
}
fn default_soc_model() -> u32 {
    39
}
fn default_perf() -> String {
    "burst".into()
}

impl Default for QnnOptions {
    fn default() -> Self {
        QnnOptions {
            htp_arch: 68,
            soc_model: 39,
            performance_mode: default_perf(),
            threads: 0,
            use_bundle_context: true,
        }
    }
}

/// CPU execution provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuOptions {
    /// Intra-op threads; 0 = ONNX Runtime's default (one per physical core).
    #[serde(default)]
    pub threads: usize,
    /// Let the intra-op threads spin (busy-wait) between the operators of a run instead of
    /// sleeping (ONNX Runtime's own default); they stop spinning when the run ends. Off by default:
    /// one A/B on LFM2-1.2B cpu-int4 measured on 15-20 % faster, later runs on the same shared
    /// host were too noisy to confirm it (bench/runtime.md), so the long-standing setting stays.
    #[serde(default)]
    pub spinning: bool,
}

impl CpuOptions {
    /// `threads` intra-op threads, everything else at its default.
    pub fn with_threads(threads: usize) -> Self {
        CpuOptions {
            threads,
            ..Default::default()
        }
    }
}

/// CUDA execution provider (used when `libonnxruntime_providers_cuda.so` sits beside libonnxruntime).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CudaOptions {
    #[serde(default)]
    pub device_id: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_provider_list_and_rejects_unknown_keys() {
        let cfg: EngineConfig = toml::from_str(
            r#"
bundle = "models/tiny-random"
require_full_offload = true
providers = [{ kind = "qnn", htp_arch = 68, performance_mode = "balanced" }, { kind = "cpu", threads = 2 }]
"#,
        )
        .unwrap();
        assert_eq!(cfg.providers.len(), 2);
        assert_eq!(
            cfg.providers[0],
            Provider::Qnn(QnnOptions {
                performance_mode: "balanced".into(),
                ..Default::default()
            })
        );
        assert_eq!(cfg.providers[1], Provider::Cpu(CpuOptions::with_threads(2)));
        let bad = toml::from_str::<EngineConfig>("bundle = 'x'\nprovider = []\n").unwrap_err();
        assert!(bad.to_string().contains("provider"), "{bad}");
        let bad_inner = toml::from_str::<EngineConfig>(
            "bundle = 'x'\nproviders = [{ kind = 'cpu', thread = 2 }]\n",
        );
        assert!(bad_inner.is_err());
    }
}
