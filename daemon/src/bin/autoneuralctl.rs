//! autoneuralctl — talk to autoneurald over D-Bus. See README.md ("autoneuralctl").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use autoneural_daemon::client::{self, Bus, WatchEvent, WatchPrinter};
use autoneural_daemon::config::Config;

const USAGE: &str = "usage: autoneuralctl [--system | --session | --address ADDR] COMMAND

commands:
  status                 driver state, alerts, monitoring state and diagnostics
  watch [--wait SECS]    live state changes and alerts until the service goes away
                         (--wait: first wait up to SECS for the service to appear)
  ask QUESTION           ask the model about the cabin
  describe               a one-sentence description of the cabin
  set-speed KMH [--for SECS]
                         report the vehicle speed (as the vehicle gateway does); --for: keep
                         reporting it every 250 ms for SECS, else one report (it goes stale
                         after vehicle.speed_max_age_ms)
  check-config FILE      check a configuration file
  check-model FILE       load the configuration's model bundle: EP per graph, offload, cache

The bus is the system bus unless --session or --address says otherwise.";

enum Cmd {
    Status,
    Watch { wait: Option<Duration> },
    Ask(String),
    Describe,
    SetSpeed { kmh: f64, hold: Option<Duration> },
    CheckConfig(PathBuf),
    CheckModel(PathBuf),
}

fn parse_args() -> Result<(Bus, Cmd), lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut bus = Bus::System;
    let mut cmd: Option<Cmd> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("system") => bus = Bus::System,
            Long("session") => bus = Bus::Session,
            Long("address") => bus = Bus::Address(parser.value()?.string()?),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Long("wait") if matches!(cmd, Some(Cmd::Watch { .. })) => {
                let secs: f64 = parser.value()?.parse()?;
                cmd = Some(Cmd::Watch {
                    wait: Some(Duration::from_secs_f64(secs.max(0.0))),
                });
            }
            Long("for") if matches!(cmd, Some(Cmd::SetSpeed { .. })) => {
                let secs: f64 = parser.value()?.parse()?;
                if let Some(Cmd::SetSpeed { hold, .. }) = &mut cmd {
                    *hold = Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)));
                }
            }
            Value(v) if cmd.is_none() => {
                let v = v.string()?;
                cmd = Some(match v.as_str() {
                    "status" => Cmd::Status,
                    "watch" => Cmd::Watch { wait: None },
                    "describe" => Cmd::Describe,
                    "ask" => Cmd::Ask(parser.value()?.string()?),
                    "set-speed" => Cmd::SetSpeed {
                        kmh: parser.value()?.parse()?,
                        hold: None,
                    },
                    "check-config" => Cmd::CheckConfig(parser.value()?.into()),
                    "check-model" => Cmd::CheckModel(parser.value()?.into()),
                    other => return Err(format!("unknown command {other:?}").into()),
                });
            }
            _ => return Err(arg.unexpected()),
        }
    }
    cmd.map(|c| (bus, c))
        .ok_or_else(|| "missing COMMAND".into())
}

fn main() -> ExitCode {
    let (bus, cmd) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("autoneuralctl: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("autoneuralctl: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(bus, cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoneuralctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(bus: Bus, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::CheckConfig(path) => {
            let cfg = Config::load(&path)?;
            autoneural_daemon::adapters::preflight::check(&cfg, &path)?;
            println!("{}: ok", path.display());
            Ok(())
        }
        Cmd::CheckModel(path) => check_model(&path).await,
        Cmd::Status => {
            let conn = client::connect(&bus)
                .await
                .context("cannot connect to the bus")?;
            let typed = ["Latency", "Budgets", "ExecutionProviders"];
            for (iface, name, value) in client::all_properties(&conn).await? {
                if typed.contains(&name.as_str()) {
                    continue;
                }
                let short = iface.rsplit('.').next().unwrap_or(&iface);
                println!("{short:<12} {name:<22} {value}");
            }
            let diag = client::diagnostics(&conn).await?;
            let mut eps: Vec<(String, String)> =
                diag.execution_providers().await?.into_iter().collect();
            eps.sort();
            for (graph, ep) in eps {
                println!(
                    "{:<12} {:<22} {graph} on {ep}",
                    "Diagnostics", "ExecutionProviders"
                );
            }
            let budgets = diag.budgets().await?;
            for (stage, p50, p99, n) in diag.latency().await? {
                let budget = budgets
                    .get(&stage)
                    .map(|b| format!(", budget {b:.0} ms"))
                    .unwrap_or_default();
                println!(
                    "{:<12} {:<22} {stage}: p50 {p50:.1} ms, p99 {p99:.1} ms (n={n}){budget}",
                    "Diagnostics", "Latency"
                );
            }
            Ok(())
        }
        Cmd::Ask(q) => {
            let conn = client::connect(&bus)
                .await
                .context("cannot connect to the bus")?;
            println!("{}", client::cockpit(&conn).await?.ask(&q).await?);
            Ok(())
        }
        Cmd::Describe => {
            let conn = client::connect(&bus)
                .await
                .context("cannot connect to the bus")?;
            println!("{}", client::cockpit(&conn).await?.describe().await?);
            Ok(())
        }
        Cmd::SetSpeed { kmh, hold } => {
            let conn = client::connect(&bus)
                .await
                .context("cannot connect to the bus")?;
            let vehicle = client::vehicle(&conn).await?;
            let until = tokio::time::Instant::now() + hold.unwrap_or_default();
            loop {
                vehicle.set_speed(kmh).await?;
                if tokio::time::Instant::now() >= until {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Cmd::Watch { wait } => watch(&bus, wait).await,
    }
}

async fn watch(bus: &Bus, wait: Option<Duration>) -> anyhow::Result<()> {
    let conn = client::connect(bus)
        .await
        .context("cannot connect to the bus")?;
    let mut signals = client::watch_stream(&conn).await?;
    let mut owner = client::owner_gone_stream(&conn).await?;
    if !client::wait_for_service(&conn, wait.unwrap_or_default()).await? {
        bail!("{} is not on the bus", autoneural_daemon::dbus::BUS_NAME);
    }
    let cockpit = client::cockpit(&conn).await?;
    let diag = client::diagnostics(&conn).await?;
    let stamp = |start: tokio::time::Instant| format!("{:>7.2}s", start.elapsed().as_secs_f64());
    let start = tokio::time::Instant::now();
    let mut last_summary = start;
    // Synthetic and recorded sources: alert times in the scenario's own clock.
    let epoch = diag.source_epoch().await.unwrap_or(0);
    let at = |ts: u64| {
        if epoch > 0 && ts >= epoch {
            format!(" [scenario t={:.1} s]", (ts - epoch) as f64 / 1e6)
        } else {
            String::new()
        }
    };
    if let Ok(src) = diag.source().await {
        println!("{} source: {src}", stamp(start));
    }
    let levels = [
        (
            "AttentiveProbability",
            cockpit.attentive_probability().await,
        ),
        ("DistractionLevel", cockpit.distraction_level().await),
        ("FatigueLevel", cockpit.fatigue_level().await),
    ];
    println!(
        "{} monitoring={} eyes_on_road={} phone={} eyes_closed={} face={} alerts={:?} attentive={:.0}% distraction={:.0}% fatigue={:.0}%",
        stamp(start),
        cockpit.monitoring_state().await.unwrap_or_default(),
        cockpit.is_eyes_on_road().await.unwrap_or_default(),
        cockpit.phone_in_use().await.unwrap_or_default(),
        cockpit.eyes_closed().await.unwrap_or_default(),
        cockpit.face_visible().await.unwrap_or_default(),
        cockpit.active_alerts().await.unwrap_or_default(),
        levels[0].1.as_ref().copied().unwrap_or_default(),
        levels[1].1.as_ref().copied().unwrap_or_default(),
        levels[2].1.as_ref().copied().unwrap_or_default(),
    );
    // States and alerts at once; the levels (they move with every frame) every few seconds.
    let mut printer = WatchPrinter::new(Duration::from_secs(5));
    for (name, value) in levels {
        if let Ok(v) = value {
            printer.know_level(name, format!("{v:.0}"));
        }
    }
    loop {
        let msg = tokio::select! {
            m = client::next(&mut signals) => m,
            m = client::next(&mut owner) => m,
        };
        let Some(Ok(msg)) = msg else { break };
        for event in client::decode(&msg) {
            let when = match &event {
                WatchEvent::AlertRaised { timestamp, .. }
                | WatchEvent::AlertCleared { timestamp, .. } => at(*timestamp),
                _ => String::new(),
            };
            for line in printer.lines(&event, std::time::Instant::now()) {
                println!("{} {line}{when}", stamp(start));
            }
            if event == WatchEvent::ServiceGone {
                return Ok(());
            }
        }
        // Every few seconds, the levels if they moved and the safety path's latency (summary
        // lines, not per frame).
        if last_summary.elapsed() >= Duration::from_secs(5) {
            last_summary = tokio::time::Instant::now();
            if let Some(line) = printer.levels_line(std::time::Instant::now()) {
                println!("{} {line}", stamp(start));
            }
            if let Ok(lat) = diag.latency().await {
                let parts: Vec<String> = lat
                    .iter()
                    .filter(|(stage, ..)| stage == "capture_to_observation" || stage == "probes")
                    .map(|(stage, p50, p99, _)| format!("{stage} p50 {p50:.0} ms p99 {p99:.0} ms"))
                    .collect();
                let level = diag.degradation_level().await.unwrap_or_default();
                println!(
                    "{} [latency] {} [level] {level}",
                    stamp(start),
                    parts.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn check_model(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let report = autoneural_daemon::adapters::check_model(&cfg).await?;
    print!("{report}");
    Ok(())
}
