//! Creating one ONNX Runtime session per graph on the first provider of the configured list that
//! can run it, with the QNN EP context cache, and reporting where every node ended up.
//!
//! Fallback rule: a provider that is *unavailable* (its library or device is missing) is skipped.
//! A provider that is available but cannot run the graph is skipped too — unless
//! `require_full_offload` is set, then that is a loud error (the NPU claim is checked, not assumed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ort::session::Session;
use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, GraphKind, Variant};
use crate::config::{
    CpuOptions, CudaOptions, EngineConfig, PERFORMANCE_MODES, Provider, QnnOptions,
};
use crate::error::{Error, LibraryError};
use crate::libraries::{self, Library, LibraryPaths};
use crate::runtime::{QNN_EP_NAME, Runtime};

/// Where the model a session was created from came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The bundle's ONNX graph, compiled by the EP now (CPU/CUDA, or QNN without a cache dir).
    Graph,
    /// QNN: compiled now and written to the EP context cache.
    CompiledToCache,
    /// QNN: an EP context binary from the cache (no compilation).
    Cache,
    /// QNN: a precompiled EP context binary shipped in the bundle.
    BundleContext,
}

/// What the runtime reports per graph: the provider, the model file, timings, node placement.
#[derive(Debug, Clone)]
pub struct SessionReport {
    /// The graph's name (`vision`, `decoder_step`, ... for bundles; `embed_images`, `decoder`, ... for
    /// published releases).
    pub graph: &'static str,
    /// `qnn`, `cpu` or `cuda`.
    pub provider: &'static str,
    pub model: PathBuf,
    pub source: ModelSource,
    /// Session creation, including any compilation of the graph for the EP.
    pub create_time: Duration,
    /// Of which: compiling and writing the EP context binary (zero unless `CompiledToCache`).
    pub compile_time: Duration,
    /// Number of nodes per ONNX Runtime EP name (from the session's EP graph assignment).
    pub nodes_per_ep: BTreeMap<String, usize>,
    /// `op_type` of nodes that are not on the selected provider's EP (empty = fully offloaded).
    pub fallback_ops: Vec<String>,
    /// Providers tried before this one and why they were not used.
    pub skipped: Vec<String>,
}

impl SessionReport {
    pub fn fully_offloaded(&self) -> bool {
        self.fallback_ops.is_empty()
    }
}

impl std::fmt::Display for SessionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self
            .nodes_per_ep
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        write!(
            f,
            "{:<16} {:<4} {:?} created in {:.1} ms (compile {:.1} ms), nodes [{}]",
            self.graph,
            self.provider,
            self.source,
            self.create_time.as_secs_f64() * 1e3,
            self.compile_time.as_secs_f64() * 1e3,
            nodes.join(", ")
        )?;
        if !self.fallback_ops.is_empty() {
            write!(
                f,
                " NOT on {}: {}",
                self.provider,
                self.fallback_ops.join(", ")
            )?;
        }
        Ok(())
    }
}

enum CpuSetup {
    NoDevice,
    Ort(ort::Error),
}

/// The CPU provider's session options: `threads` intra-op threads (0 = ONNX Runtime's default),
/// spinning as configured, and the CPU device named explicitly — with no EP appended ONNX Runtime would pick
/// devices by policy, which may put the graph on a registered NPU.
fn cpu_builder(
    rt: &Runtime,
    b: ort::session::builder::SessionBuilder,
    o: &CpuOptions,
) -> Result<ort::session::builder::SessionBuilder, CpuSetup> {
    let mut b = b;
    if o.threads > 0 {
        b = b
            .with_intra_threads(o.threads)
            .map_err(|e| CpuSetup::Ort(e.into()))?;
    }
    b = b
        .with_intra_op_spinning(o.spinning)
        .map_err(|e| CpuSetup::Ort(e.into()))?;
    if o.spinning {
        // Every session has its own pool: one left spinning after its run (prefill) would take a
        // core from the next session's run (decoder_step). Spin within a run only.
        b = b
            .with_config_entry("session.force_spinning_stop", "1")
            .map_err(|e| CpuSetup::Ort(e.into()))?;
    }
    let cpu: Vec<_> = rt
        .env
        .devices()
        .filter(|d| d.ep().is_ok_and(|n| n == "CPUExecutionProvider"))
        .collect();
    if cpu.is_empty() {
        return Err(CpuSetup::NoDevice);
    }
    b.with_devices(cpu, None)
        .map_err(|e| CpuSetup::Ort(e.into()))
}

/// A CPU session for one standalone graph (`name` is for errors), on the process's ONNX Runtime
/// found from `paths` like every engine's. For small auxiliary networks that are not part of an
/// AutoNeural bundle (the face networks); bundles go through [`crate::Engine`].
pub fn cpu_graph_session(
    paths: &LibraryPaths,
    name: &str,
    path: &Path,
    options: &CpuOptions,
) -> Result<Session, Error> {
    let rt = crate::runtime::runtime(paths, path.parent())?;
    let b =
        Session::builder(&rt.env).map_err(|e| crate::error::ort_err(name, "session options", e))?;
    let mut b = cpu_builder(rt, b, options).map_err(|e| match e {
        CpuSetup::NoDevice => {
            crate::error::ort_err(name, "session options", "ONNX Runtime lists no CPU device")
        }
        CpuSetup::Ort(e) => crate::error::ort_err(name, "session options", e),
    })?;
    b.commit_from_file(path)
        .map_err(|e| crate::error::ort_err(name, "session creation", e))
}

/// Why a provider could not be used for a graph.
enum Attempt {
    /// Library/device missing: try the next provider even with require_full_offload.
    Unavailable(String),
    /// Available but failed on this graph.
    Failed(Error),
}

/// Tries `attempt` on each configured provider in order (see the module's fallback rule).
fn first_provider(
    config: &EngineConfig,
    name: &'static str,
    mut attempt: impl FnMut(&Provider) -> Result<(Session, SessionReport), Attempt>,
) -> Result<(Session, SessionReport), Error> {
    let mut skipped = Vec::new();
    for provider in &config.providers {
        match attempt(provider) {
            Ok((session, mut report)) => {
                if config.require_full_offload && !report.fully_offloaded() {
                    return Err(Error::NotFullyOffloaded {
                        graph: name.into(),
                        provider: provider.name().into(),
                        reason: format!("nodes on other EPs: {}", report.fallback_ops.join(", ")),
                    });
                }
                report.skipped = skipped;
                return Ok((session, report));
            }
            Err(Attempt::Unavailable(why)) => {
                log::info!(
                    "graph {name}: provider {} unavailable: {why}",
                    provider.name()
                );
                skipped.push(format!("{}: unavailable: {why}", provider.name()));
            }
            Err(Attempt::Failed(e)) => {
                if config.require_full_offload && !matches!(provider, Provider::Cpu(_)) {
                    return Err(match e {
                        Error::Ort { message, .. } => Error::NotFullyOffloaded {
                            graph: name.into(),
                            provider: provider.name().into(),
                            reason: message,
                        },
                        other => other,
                    });
                }
                if matches!(e, Error::Bundle(_)) {
                    return Err(e); // a bad graph is bad on every provider
                }
                log::warn!(
                    "graph {name}: provider {} failed, trying the next: {e}",
                    provider.name()
                );
                skipped.push(format!("{}: {e}", provider.name()));
            }
        }
    }
    Err(Error::NoProvider {
        graph: name.into(),
        attempts: skipped,
    })
}

/// A session for one graph of a published release (dynamic shapes): CPU or CUDA. QNN compiles
/// static graphs only; such a model reaches the NPU through a forge conversion to a bundle.
pub(crate) fn dynamic_session(
    rt: &'static Runtime,
    config: &EngineConfig,
    name: &'static str,
    path: &Path,
) -> Result<(Session, SessionReport), Error> {
    first_provider(config, name, |provider| {
        let fail =
            |e: ort::Error| Attempt::Failed(crate::error::ort_err(name, "session options", e));
        let b = Session::builder(&rt.env)
            .map_err(fail)?
            .with_config_entry("session.record_ep_graph_assignment_info", "1")
            .map_err(|e| fail(e.into()))?;
        let (b, provider_name, ep) = match provider {
            Provider::Cpu(o) => (cpu_attempt(rt, b, o, name)?, "cpu", "CPUExecutionProvider"),
            Provider::Cuda(o) => (
                cuda_attempt(rt, b, o, name)?,
                "cuda",
                "CUDAExecutionProvider",
            ),
            Provider::Qnn(_) => {
                return Err(Attempt::Unavailable(
                    "the QNN HTP runs static-shape graphs: convert the release into a bundle with forge"
                        .into(),
                ));
            }
        };
        commit(b, name, path, provider_name, ep)
    })
}

fn cpu_attempt(
    rt: &Runtime,
    b: ort::session::builder::SessionBuilder,
    o: &CpuOptions,
    name: &'static str,
) -> Result<ort::session::builder::SessionBuilder, Attempt> {
    cpu_builder(rt, b, o).map_err(|e| match e {
        CpuSetup::NoDevice => Attempt::Unavailable("ONNX Runtime lists no CPU device".into()),
        CpuSetup::Ort(e) => Attempt::Failed(crate::error::ort_err(name, "session creation", e)),
    })
}

/// The CUDA EP on `b`, if ONNX Runtime's directory has the CUDA provider library.
fn cuda_attempt(
    rt: &Runtime,
    b: ort::session::builder::SessionBuilder,
    o: &CudaOptions,
    name: &'static str,
) -> Result<ort::session::builder::SessionBuilder, Attempt> {
    let dir = rt
        .ort_lib
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let lib = dir.join("libonnxruntime_providers_cuda.so");
    if !lib.is_file() {
        return Err(Attempt::Unavailable(format!(
            "{} not found (the CPU onnxruntime wheel has no CUDA EP)",
            lib.display()
        )));
    }
    let ep = ort::ep::CUDA::default()
        .with_device_id(o.device_id)
        .build()
        .error_on_failure();
    b.with_execution_providers([ep])
        .map_err(|e| Attempt::Failed(crate::error::ort_err(name, "session creation", e)))
}

/// Creates the session from the graph file and reports where its nodes went.
fn commit(
    mut builder: ort::session::builder::SessionBuilder,
    name: &'static str,
    path: &Path,
    provider: &'static str,
    ep_name: &'static str,
) -> Result<(Session, SessionReport), Attempt> {
    let t = Instant::now();
    let session = builder
        .commit_from_file(path)
        .map_err(|e| Attempt::Failed(crate::error::ort_err(name, "session creation", e)))?;
    let create_time = t.elapsed();
    let report = report(
        name,
        provider,
        ep_name,
        path.to_path_buf(),
        ModelSource::Graph,
        create_time,
        Duration::ZERO,
        &session,
    );
    Ok((session, report))
}

pub(crate) struct SessionFactory<'a> {
    pub rt: &'static Runtime,
    pub config: &'a EngineConfig,
    pub bundle: &'a Bundle,
    pub variant_name: &'a str,
    pub variant: &'a Variant,
    /// The CPU sessions of one bundle share their prepacked weights: decoder_prefill and
    /// decoder_step read the same weight file, and ONNX Runtime would otherwise hold the packed
    /// copy of every weight once per session. Each session keeps the container alive.
    pub prepacked: ort::session::builder::PrepackedWeights,
}

impl SessionFactory<'_> {
    /// A session for `kind` on the first provider that can run it.
    pub fn create(&self, kind: GraphKind) -> Result<(Session, SessionReport), Error> {
        first_provider(self.config, kind.name(), |provider| match provider {
            Provider::Cpu(o) => self.cpu(kind, o),
            Provider::Qnn(o) => self.qnn(kind, o),
            Provider::Cuda(o) => self.cuda(kind, o),
        })
    }

    fn graph_path(&self, kind: GraphKind) -> PathBuf {
        self.bundle.dir.join(self.variant.graph(kind))
    }

    fn builder(&self, kind: GraphKind) -> Result<ort::session::builder::SessionBuilder, Attempt> {
        let b = Session::builder(&self.rt.env)
            .map_err(|e| Attempt::Failed(ort_fail(kind, "session options", e)))?;
        b.with_config_entry("session.record_ep_graph_assignment_info", "1")
            .map_err(|e| Attempt::Failed(ort_fail(kind, "session options", e.into())))
    }

    /// Creates the session from the bundle's plain graph (no EP context) and reports it.
    fn commit_graph(
        &self,
        kind: GraphKind,
        builder: ort::session::builder::SessionBuilder,
        provider: &'static str,
        ep_name: &'static str,
    ) -> Result<(Session, SessionReport), Attempt> {
        commit(
            builder,
            kind.name(),
            &self.graph_path(kind),
            provider,
            ep_name,
        )
    }

    fn cpu(&self, kind: GraphKind, o: &CpuOptions) -> Result<(Session, SessionReport), Attempt> {
        let b = cpu_attempt(self.rt, self.builder(kind)?, o, kind.name())?
            .with_prepacked_weights(&self.prepacked)
            .map_err(|e| Attempt::Failed(ort_fail(kind, "session options", e.into())))?;
        self.commit_graph(kind, b, "cpu", "CPUExecutionProvider")
    }

    fn cuda(&self, kind: GraphKind, o: &CudaOptions) -> Result<(Session, SessionReport), Attempt> {
        let b = cuda_attempt(self.rt, self.builder(kind)?, o, kind.name())?;
        self.commit_graph(kind, b, "cuda", "CUDAExecutionProvider")
    }

    /// A QNN HTP session, from the first source that has one: (1) a context binary shipped in the
    /// bundle for exactly this HTP, (2) the EP context cache, (3) compiling the graph now (into the
    /// cache when there is one).
    fn qnn(&self, kind: GraphKind, o: &QnnOptions) -> Result<(Session, SessionReport), Attempt> {
        let qnn = self.qnn_setup(o)?;
        if let Some(rel) = self.variant.qnn_context_graph(kind)
            && let Some(ctx) = self.variant.qnn_context.as_ref()
            && o.use_bundle_context
            && ctx.htp_arch == o.htp_arch
            && ctx.soc_model == o.soc_model
        {
            let path = self.bundle.dir.join(rel);
            return self.qnn_load(kind, o, &qnn, path, ModelSource::BundleContext);
        }
        let graph = self.graph_path(kind);
        let Some(cache_root) = &self.config.cache_dir else {
            return self.qnn_load(kind, o, &qnn, graph, ModelSource::Graph);
        };
        // Keyed by the graph's checksum, the options and the library versions.
        let key = self.cache_key(kind, o, &qnn.ep_lib, &qnn.backend);
        let entry = cache_root.join(format!(
            "{}-{}-{}-{}",
            self.bundle.manifest.name,
            self.variant_name,
            kind.name(),
            &key[..16]
        ));
        let ctx_file = entry.join(format!("{}_ctx.onnx", kind.name()));
        if ctx_file.is_file() {
            match self.qnn_load(kind, o, &qnn, ctx_file.clone(), ModelSource::Cache) {
                Ok(found) => return Ok(found),
                Err(Attempt::Failed(e)) => {
                    // A damaged cache entry is rebuilt, not fatal.
                    log::warn!(
                        "EP context cache {} unusable, recompiling: {e}",
                        entry.display()
                    );
                    let _ = std::fs::remove_dir_all(&entry);
                }
                Err(other) => return Err(other),
            }
        }
        self.qnn_compile(kind, o, &qnn, &graph, cache_root, &key, &entry)
    }

    /// Checks the options, finds the QNN EP and backend libraries, registers the EP and makes sure
    /// it has a device.
    fn qnn_setup(&self, o: &QnnOptions) -> Result<QnnSetup, Attempt> {
        if !PERFORMANCE_MODES.contains(&o.performance_mode.as_str()) {
            return Err(Attempt::Failed(Error::Config(format!(
                "qnn performance_mode `{}` is not one of {}",
                o.performance_mode,
                PERFORMANCE_MODES.join(", ")
            ))));
        }
        let libs = &self.config.libraries;
        let bundle_dir = Some(self.bundle.dir.as_path());
        let unavailable = |e: LibraryError| Attempt::Unavailable(e.to_string());
        let ep_lib = libraries::resolve(Library::QnnEp, libs, bundle_dir).map_err(unavailable)?;
        let backend =
            libraries::resolve(Library::QnnBackend, libs, bundle_dir).map_err(unavailable)?;
        self.rt
            .ensure_qnn(&ep_lib)
            .map_err(|e| Attempt::Unavailable(e.to_string()))?;
        if !self
            .rt
            .env
            .devices()
            .any(|d| d.ep().is_ok_and(|n| n == QNN_EP_NAME))
        {
            let seen: Vec<String> = self
                .rt
                .env
                .devices()
                .map(|d| {
                    let hw = d.hardware_device();
                    format!(
                        "{} on {:?} ({})",
                        d.ep().unwrap_or("?"),
                        hw.ty(),
                        hw.vendor().unwrap_or("?")
                    )
                })
                .collect();
            return Err(Attempt::Unavailable(no_htp_device(&ep_lib, &seen)));
        }
        let options = vec![
            (
                format!("{QNN_EP_NAME}.backend_path"),
                backend.display().to_string(),
            ),
            (format!("{QNN_EP_NAME}.htp_arch"), o.htp_arch.to_string()),
            (format!("{QNN_EP_NAME}.soc_model"), o.soc_model.to_string()),
            (
                format!("{QNN_EP_NAME}.htp_performance_mode"),
                o.performance_mode.clone(),
            ),
        ];
        Ok(QnnSetup {
            ep_lib,
            backend,
            options,
        })
    }

    /// A session builder on the QNN device with the session options and `extra` config entries.
    fn qnn_builder(
        &self,
        kind: GraphKind,
        o: &QnnOptions,
        qnn: &QnnSetup,
        extra: &[(&str, String)],
    ) -> Result<ort::session::builder::SessionBuilder, Attempt> {
        let fail = |e: ort::Error| Attempt::Failed(ort_fail(kind, "session options", e));
        let mut b = self.builder(kind)?;
        if o.threads > 0 {
            b = b
                .with_intra_threads(o.threads)
                .map_err(|e| fail(e.into()))?;
        }
        if self.config.require_full_offload {
            b = b.with_disable_cpu_fallback().map_err(|e| fail(e.into()))?;
        }
        for (k, v) in extra {
            b = b.with_config_entry(*k, v).map_err(|e| fail(e.into()))?;
        }
        let devices = self
            .rt
            .env
            .devices()
            .filter(|d| d.ep().is_ok_and(|n| n == QNN_EP_NAME));
        b.with_devices(devices, Some(&qnn.options))
            .map_err(|e| fail(e.into()))
    }

    /// Loads `path` (a graph or an EP context model) on the HTP and reports it as from `source`.
    fn qnn_load(
        &self,
        kind: GraphKind,
        o: &QnnOptions,
        qnn: &QnnSetup,
        path: PathBuf,
        source: ModelSource,
    ) -> Result<(Session, SessionReport), Attempt> {
        let (s, dt) = qnn_commit(kind, self.qnn_builder(kind, o, qnn, &[])?, &path)?;
        let r = report(
            kind.name(),
            "qnn",
            QNN_EP_NAME,
            path,
            source,
            dt,
            Duration::ZERO,
            &s,
        );
        Ok((s, r))
    }

    /// Compiles the graph into a private directory, publishes it as the cache `entry` with one
    /// rename, then loads it back, so that what runs is exactly what the next start will load.
    #[allow(clippy::too_many_arguments)]
    fn qnn_compile(
        &self,
        kind: GraphKind,
        o: &QnnOptions,
        qnn: &QnnSetup,
        graph: &Path,
        cache_root: &Path,
        key: &str,
        entry: &Path,
    ) -> Result<(Session, SessionReport), Attempt> {
        let cache_err = |e: std::io::Error, p: &Path| {
            Attempt::Failed(Error::Cache {
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        std::fs::create_dir_all(cache_root).map_err(|e| cache_err(e, cache_root))?;
        let tmp = cache_root.join(format!(
            ".tmp-{}-{}-{}",
            kind.name(),
            std::process::id(),
            &key[..16]
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| cache_err(e, &tmp))?;
        let tmp_ctx = tmp.join(format!("{}_ctx.onnx", kind.name()));
        let compile_opts = [
            ("ep.context_enable", "1".to_string()),
            ("ep.context_file_path", tmp_ctx.display().to_string()),
            ("ep.context_embed_mode", "0".to_string()),
        ];
        let compiled = self
            .qnn_builder(kind, o, qnn, &compile_opts)
            .and_then(|b| qnn_commit(kind, b, graph));
        // Node placement is taken from the compiling session: it sees the original graph's nodes
        // (the context model that is loaded afterwards holds only EPContext nodes).
        let (compile_time, placement) = match compiled {
            Ok((s, dt)) => (dt, assignment(&s)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        if !tmp_ctx.is_file() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Attempt::Failed(Error::Cache {
                path: tmp_ctx,
                message: "QNN EP did not write an EP context model".into(),
            }));
        }
        let ctx_file = entry.join(format!("{}_ctx.onnx", kind.name()));
        match std::fs::rename(&tmp, entry) {
            Ok(()) => {}
            // Another process published the same key first: theirs is as good as ours.
            Err(_) if ctx_file.is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(cache_err(e, entry)),
        }
        let (s, r) = self.qnn_load(kind, o, qnn, ctx_file, ModelSource::CompiledToCache)?;
        let r = SessionReport {
            create_time: compile_time + r.create_time,
            compile_time,
            nodes_per_ep: nodes_per_ep(&placement),
            fallback_ops: fallback_ops(&placement, QNN_EP_NAME),
            ..r
        };
        Ok((s, r))
    }

    fn cache_key(&self, kind: GraphKind, o: &QnnOptions, ep_lib: &Path, backend: &Path) -> String {
        let graph_rel = self.variant.graph(kind);
        let libs: Vec<String> = [ep_lib, backend]
            .iter()
            .map(|lib| {
                let meta = std::fs::metadata(lib).ok();
                let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
                let mtime = meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                format!("{}|{size}|{mtime:?}", lib.display())
            })
            .collect();
        cache_key(&[
            graph_rel,
            self.bundle.checksum_of(graph_rel).unwrap_or(""),
            &format!(
                "{}|{}|{}|{}",
                o.htp_arch, o.soc_model, o.performance_mode, self.config.require_full_offload
            ),
            &self.rt.version(),
            &libs.join("\n"),
        ])
    }
}

/// SHA-256 over the parts that decide what an EP context binary contains: the graph file and its
/// checksum (a changed bundle invalidates), the EP options, ONNX Runtime and the QNN libraries.
pub(crate) fn cache_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"autoneural-qnn-ctx/1");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why QNN is unavailable when its EP library loaded but offers no device: on a machine without a
/// Qualcomm Hexagon NPU (an x86_64 or other aarch64 machine, qemu) the plugin registers none.
/// `seen`: the devices ONNX Runtime does have ("CPUExecutionProvider on CPU (vendor)").
fn no_htp_device(ep_lib: &Path, seen: &[String]) -> String {
    format!(
        "no QNN HTP device: the QNN EP library {} loaded but registered no device (no Qualcomm \
         Hexagon NPU found; ONNX Runtime's devices: {})",
        ep_lib.display(),
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    )
}

/// What every QNN session of a factory shares: the libraries and the EP's device options.
struct QnnSetup {
    ep_lib: PathBuf,
    backend: PathBuf,
    options: Vec<(String, String)>,
}

/// Creates the session; returns it with the time it took.
fn qnn_commit(
    kind: GraphKind,
    mut b: ort::session::builder::SessionBuilder,
    path: &Path,
) -> Result<(Session, Duration), Attempt> {
    let t = Instant::now();
    let s = b
        .commit_from_file(path)
        .map_err(|e| Attempt::Failed(ort_fail(kind, "session creation", e)))?;
    Ok((s, t.elapsed()))
}

fn ort_fail(kind: GraphKind, during: &'static str, e: ort::Error) -> Error {
    crate::error::ort_err(kind.name(), during, e)
}

#[allow(clippy::too_many_arguments)]
fn report(
    kind: &'static str,
    provider: &'static str,
    ep: &str,
    model: PathBuf,
    source: ModelSource,
    create_time: Duration,
    compile_time: Duration,
    session: &Session,
) -> SessionReport {
    let placement = assignment(session);
    let nodes_per_ep = nodes_per_ep(&placement);
    let fallback_ops = fallback_ops(&placement, ep);
    SessionReport {
        graph: kind,
        provider,
        model,
        source,
        create_time,
        compile_time,
        nodes_per_ep,
        fallback_ops,
        skipped: Vec::new(),
    }
}

fn nodes_per_ep(placement: &[(String, Vec<String>)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (ep_name, ops) in placement {
        *out.entry(ep_name.clone()).or_insert(0) += ops.len();
    }
    out
}

fn fallback_ops(placement: &[(String, Vec<String>)], ep: &str) -> Vec<String> {
    placement
        .iter()
        .filter(|(e, _)| e != ep)
        .flat_map(|(_, ops)| ops.iter().cloned())
        .collect()
}

/// (EP name, op types of its nodes) per assigned subgraph, read through the C API that `ort` does not
/// wrap yet. Empty if the library does not provide it.
fn assignment(session: &Session) -> Vec<(String, Vec<String>)> {
    use ort::AsPointer;
    use std::ffi::{CStr, c_char};
    let api = ort::api();
    let mut out = Vec::new();
    // SAFETY: the session pointer is valid for the call; the returned arrays and strings are owned by
    // the session and only read here, before the session can be dropped. Every status is released.
    unsafe {
        let check = |st: ort::sys::OrtStatusPtr| -> bool {
            if st.0.is_null() {
                true
            } else {
                (api.ReleaseStatus)(st.0);
                false
            }
        };
        let mut subgraphs: *const *const ort::sys::OrtEpAssignedSubgraph = std::ptr::null();
        let mut n = 0usize;
        if !check((api.Session_GetEpGraphAssignmentInfo)(
            session.ptr(),
            &mut subgraphs,
            &mut n,
        )) || subgraphs.is_null()
        {
            return out;
        }
        let cstr = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        for i in 0..n {
            let sg = *subgraphs.add(i);
            let mut name: *const c_char = std::ptr::null();
            if !check((api.EpAssignedSubgraph_GetEpName)(sg, &mut name)) {
                continue;
            }
            let mut nodes: *const *const ort::sys::OrtEpAssignedNode = std::ptr::null();
            let mut nn = 0usize;
            let mut ops = Vec::new();
            if check((api.EpAssignedSubgraph_GetNodes)(sg, &mut nodes, &mut nn)) && !nodes.is_null()
            {
                for j in 0..nn {
                    let mut op: *const c_char = std::ptr::null();
                    if check((api.EpAssignedNode_GetOperatorType)(*nodes.add(j), &mut op)) {
                        ops.push(cstr(op));
                    }
                }
            }
            out.push((cstr(name), ops));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_device_message_names_the_missing_htp_and_what_there_is() {
        let msg = no_htp_device(
            Path::new("/opt/qnn/libonnxruntime_providers_qnn.so"),
            &["CPUExecutionProvider on CPU (ARM)".into()],
        );
        assert!(msg.starts_with("no QNN HTP device: "), "{msg}");
        assert!(
            msg.contains("/opt/qnn/libonnxruntime_providers_qnn.so"),
            "{msg}"
        );
        assert!(msg.contains("Hexagon NPU"), "{msg}");
        assert!(
            msg.ends_with("devices: CPUExecutionProvider on CPU (ARM))"),
            "{msg}"
        );
        assert!(no_htp_device(Path::new("x"), &[]).ends_with("devices: none)"));
    }

    #[test]
    fn cache_key_changes_with_the_graph_checksum_and_options() {
        let base = cache_key(&[
            "w8a16/vision.onnx",
            "aa",
            "68|39|burst|true",
            "1.31.1",
            "libs",
        ]);
        assert_eq!(
            base,
            cache_key(&[
                "w8a16/vision.onnx",
                "aa",
                "68|39|burst|true",
                "1.31.1",
                "libs"
            ])
        );
        assert_ne!(
            base,
            cache_key(&[
                "w8a16/vision.onnx",
                "ab",
                "68|39|burst|true",
                "1.31.1",
                "libs"
            ])
        );
        assert_ne!(
            base,
            cache_key(&[
                "w8a16/vision.onnx",
                "aa",
                "73|39|burst|true",
                "1.31.1",
                "libs"
            ])
        );
        // part boundaries matter: ("ab","c") differs from ("a","bc")
        assert_ne!(cache_key(&["ab", "c"]), cache_key(&["a", "bc"]));
    }
}
