//! autoneurald — the cockpit service. See README.md ("autoneurald").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use autoneural_daemon::config::Config;
use autoneural_daemon::notify::Notifier;
use autoneural_daemon::stages::Perception;
use autoneural_daemon::vehicle::VehicleState;
use autoneural_daemon::{adapters, logging};

const DEFAULT_CONFIG: &str = "/etc/autoneural/autoneurald.toml";

const USAGE: &str = "usage: autoneurald [--config FILE]
       autoneurald --check-config FILE
       autoneurald --observe IMAGE... [--config FILE] [--json]

  --config FILE         configuration (default /etc/autoneural/autoneurald.toml)
  --check-config FILE   check a configuration file and exit (0 = valid)
  --observe IMAGE...    run the configured perception (model probes and face pipeline) on image
                        files and print one observation per image: every field's probability
                        and its source (no bus, no policies)
  --json                with --observe: one JSON object per line
  AUTONEURAL_LOG=debug  override the configured log level";

enum Mode {
    Run(PathBuf),
    Check(PathBuf),
    Observe {
        config: PathBuf,
        images: Vec<PathBuf>,
        json: bool,
    },
}

fn parse_args() -> Result<Mode, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut check = None;
    let mut images: Option<Vec<PathBuf>> = None;
    let mut json = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") | Short('c') => config = parser.value()?.into(),
            Long("check-config") => check = Some(parser.value()?.into()),
            Long("observe") => {
                let list = images.get_or_insert_with(Vec::new);
                list.extend(parser.values()?.map(PathBuf::from));
            }
            Long("json") => json = true,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Long("version") => {
                println!("autoneurald {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(match (check, images) {
        (Some(path), _) => Mode::Check(path),
        (None, Some(images)) => Mode::Observe {
            config,
            images,
            json,
        },
        (None, None) if json => return Err("--json goes with --observe".into()),
        (None, None) => Mode::Run(config),
    })
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("autoneurald: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Check(path) => {
            match Config::load(&path).and_then(|cfg| adapters::preflight::check(&cfg, &path)) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Mode::Observe {
            config,
            images,
            json,
        } => match observe(&config, &images, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("autoneurald: {e:#}");
                ExitCode::from(1)
            }
        },
        Mode::Run(path) => match run(&path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e:#}");
                eprintln!("autoneurald: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    logging::init(cfg.logging.level.filter());
    let notifier = Arc::new(Notifier::from_env().context("$NOTIFY_SOCKET")?);
    let _ = notifier.status("Loading the model");
    log::info!(
        "autoneurald {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(cfg.hmi.max_pending.get() as usize + 4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(adapters::run(cfg, Arc::clone(&notifier)));
    // The daemon's own tasks and threads were joined by its shutdown (service.rs); what is left
    // belongs to the bus library or is a pipeline thread stuck in one model call, and must not
    // hold up the exit (SIGTERM: out within 2 s).
    runtime.shutdown_timeout(Duration::from_millis(300));
    let exit = result?;
    if exit.is_failure() {
        anyhow::bail!("stopped ({exit:?})");
    }
    log::info!("stopped ({exit:?})");
    Ok(())
}

/// `--observe`: the configured perception on image files, one observation per image.
fn observe(path: &std::path::Path, images: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let mut cfg = Config::load(path)?;
    logging::init(log::LevelFilter::Warn);
    // Every image gets the model's probes; nothing carries over from one image to the next.
    cfg.fusion.model_every_frames = autoneural_daemon::config::Bounded(1);
    let size = adapters::model::input_size(&cfg)?;
    let perception = adapters::load_perception(&cfg)?;
    for (i, image) in images.iter().enumerate() {
        // The face pipeline tracks and calibrates across frames; independent images start afresh.
        perception.reset();
        let frame = adapters::camera::still(image, size, cfg.face.is_some(), i as u64)?;
        let seen = perception
            .probe(&frame, VehicleState::default())
            .map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
        if json {
            let fields: serde_json::Map<String, serde_json::Value> = seen
                .answers
                .iter()
                .map(|a| {
                    (
                        a.field.clone(),
                        serde_json::json!({
                            "probability": a.field_probability,
                            "source": a.id,
                            "answer": a.answer,
                            "answers": a.probabilities.iter().map(|(k, p)| (k.clone(), serde_json::json!(p))).collect::<serde_json::Map<_, _>>(),
                        }),
                    )
                })
                .collect();
            let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1e3);
            println!(
                "{}",
                serde_json::json!({
                    "image": image.display().to_string(),
                    "fields": fields,
                    "timings_ms": {"vision": ms(seen.vision), "probes": ms(seen.probes), "face": ms(seen.face)},
                })
            );
        } else {
            println!("{}", image.display());
            for a in &seen.answers {
                println!(
                    "  {:<18} {:>5.1} %  {:<10} source {}",
                    a.field,
                    a.field_probability * 100.0,
                    a.answer,
                    if a.id == adapters::fusion::FACE_SOURCE {
                        "face pipeline".to_string()
                    } else {
                        format!("model probe `{}`", a.id)
                    }
                );
            }
        }
    }
    Ok(())
}
