//! autoneurald — the cockpit service. See README.md ("autoneurald").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use autoneural_daemon::config::Config;
use autoneural_daemon::notify::Notifier;
use autoneural_daemon::{adapters, logging};

const DEFAULT_CONFIG: &str = "/etc/autoneural/autoneurald.toml";

const USAGE: &str = "usage: autoneurald [--config FILE]
       autoneurald --check-config FILE

  --config FILE         configuration (default /etc/autoneural/autoneurald.toml)
  --check-config FILE   check a configuration file and exit (0 = valid)
  AUTONEURAL_LOG=debug  override the configured log level";

enum Mode {
    Run(PathBuf),
    Check(PathBuf),
}

fn parse_args() -> Result<Mode, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut mode = Mode::Run(PathBuf::from(DEFAULT_CONFIG));
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") | Short('c') => mode = Mode::Run(parser.value()?.into()),
            Long("check-config") => mode = Mode::Check(parser.value()?.into()),
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
    Ok(mode)
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
        Mode::Check(path) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
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
    // A model call still running must not hold up the exit (SIGTERM: out within 2 s).
    runtime.shutdown_timeout(Duration::from_millis(300));
    let exit = result?;
    log::info!("stopped ({exit:?})");
    Ok(())
}
