//! `autoneural-policies`: replay recorded observations through the rules, check a rules file,
//! print the built-in rules.
//!
//! ```text
//! autoneural-policies replay [--rules FILE] --observations FILE.jsonl [--state-every SECONDS] [--json]
//! autoneural-policies check FILE
//! autoneural-policies defaults
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use autoneural_policies::{
    AlertEvent, DEFAULT_RULES_TOML, DriverState, PolicyEngine, Rules, read_observations_jsonl,
};

const USAGE: &str = "\
usage:
  autoneural-policies replay [--rules FILE] --observations FILE.jsonl [--state-every SECONDS] [--json]
      Runs the observations (JSONL, `-` for stdin) through the rules (default: the built-in
      rules) and prints the alert timeline and the driver state over time.
      --state-every SECONDS   driver state interval in observation time (default 1; 0 = every
                              observation)
      --json                  one JSON object per line instead of the table
  autoneural-policies check FILE
      Parses and validates a rules file; prints the first problem with its line.
  autoneural-policies defaults
      Prints the built-in rules file.";

enum Command {
    Replay {
        rules: Option<PathBuf>,
        observations: PathBuf,
        state_every: Duration,
        json: bool,
    },
    Check {
        rules: PathBuf,
    },
    Defaults,
    Help,
}

fn main() {
    match parse_args().and_then(run) {
        Ok(()) => {}
        Err(error) => {
            eprintln!("autoneural-policies: {error:#}");
            std::process::exit(2);
        }
    }
}

fn parse_args() -> Result<Command> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let subcommand = match parser.next()? {
        Some(Value(value)) => value.string()?,
        Some(Short('h') | Long("help")) | None => return Ok(Command::Help),
        Some(other) => return Err(other.unexpected().into()),
    };
    match subcommand.as_str() {
        "replay" => {
            let (mut rules, mut observations, mut state_every, mut json) =
                (None, None, Duration::from_secs(1), false);
            while let Some(arg) = parser.next()? {
                match arg {
                    Long("rules") => rules = Some(PathBuf::from(parser.value()?)),
                    Long("observations") => observations = Some(PathBuf::from(parser.value()?)),
                    Long("state-every") => {
                        let seconds: f64 = parser.value()?.parse()?;
                        if !(seconds.is_finite() && (0.0..=86_400.0).contains(&seconds)) {
                            bail!("--state-every takes seconds in 0..=86400, got {seconds}");
                        }
                        state_every = Duration::from_secs_f64(seconds);
                    }
                    Long("json") => json = true,
                    Short('h') | Long("help") => return Ok(Command::Help),
                    other => return Err(other.unexpected().into()),
                }
            }
            let observations =
                observations.context("replay needs --observations FILE.jsonl (see --help)")?;
            Ok(Command::Replay {
                rules,
                observations,
                state_every,
                json,
            })
        }
        "check" => {
            let mut rules = None;
            while let Some(arg) = parser.next()? {
                match arg {
                    Value(value) if rules.is_none() => rules = Some(PathBuf::from(value)),
                    other => return Err(other.unexpected().into()),
                }
            }
            Ok(Command::Check {
                rules: rules.context("check needs a rules file")?,
            })
        }
        "defaults" => Ok(Command::Defaults),
        "help" => Ok(Command::Help),
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Help => println!("{USAGE}"),
        Command::Defaults => print!("{DEFAULT_RULES_TOML}"),
        Command::Check { rules } => {
            Rules::from_file(&rules)?;
            println!("{}: ok", rules.display());
        }
        Command::Replay {
            rules,
            observations,
            state_every,
            json,
        } => replay(rules, observations, state_every, json)?,
    }
    Ok(())
}

fn replay(
    rules_path: Option<PathBuf>,
    observations_path: PathBuf,
    state_every: Duration,
    json: bool,
) -> Result<()> {
    let rules = match &rules_path {
        Some(path) => Rules::from_file(path)?,
        None => Rules::builtin(),
    };
    let reader: Box<dyn BufRead> = if observations_path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&observations_path)
            .with_context(|| format!("opening {}", observations_path.display()))?;
        Box::new(BufReader::new(file))
    };
    let observations = read_observations_jsonl(reader)
        .with_context(|| format!("reading {}", observations_path.display()))?;

    let mut engine = PolicyEngine::new(rules);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let rules_name = rules_path.map_or("built-in".to_owned(), |p| p.display().to_string());
    if !json {
        writeln!(
            out,
            "# rules: {rules_name}; observations: {} from {}",
            observations.len(),
            observations_path.display()
        )?;
        writeln!(
            out,
            "{:>9}  {:<9}  {:<22}  {:<5}  detail",
            "t [s]", "what", "id", "level"
        )?;
    }
    let mut next_state: Option<Duration> = None;
    for obs in &observations {
        let accepted_before = engine.stats().accepted;
        let events = engine.observe(obs);
        let t = obs.timestamp;
        for event in &events {
            print_event(&mut out, t, event, json)?;
        }
        let accepted = engine.stats().accepted > accepted_before;
        if accepted && next_state.is_none_or(|due| t >= due) {
            print_state(&mut out, engine.state(), json)?;
            next_state = Some(t.saturating_add(state_every));
        }
    }
    let stats = engine.stats();
    let active = engine.active_alerts();
    if json {
        let summary = serde_json::json!({
            "summary": {
                "accepted": stats.accepted,
                "out_of_order": stats.out_of_order,
                "duplicates": stats.duplicates,
                "gaps": stats.gaps,
                "invalid": stats.invalid,
                "active": active,
            }
        });
        writeln!(out, "{summary}")?;
    } else {
        writeln!(
            out,
            "# accepted {}, dropped {} out of order and {} duplicates, {} gaps, {} invalid; \
             active at the end: {}",
            stats.accepted,
            stats.out_of_order,
            stats.duplicates,
            stats.gaps,
            stats.invalid,
            if active.is_empty() {
                "none".to_owned()
            } else {
                active
                    .iter()
                    .map(|a| format!("{} (level {})", a.id, a.level))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )?;
    }
    Ok(())
}

fn print_event(out: &mut impl Write, t: Duration, event: &AlertEvent, json: bool) -> Result<()> {
    let alert = event.alert();
    if json {
        let mut value = serde_json::to_value(event)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("t".into(), t.as_secs_f64().into());
        }
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let detail = match event {
        AlertEvent::Raised { .. } => alert.message.clone(),
        AlertEvent::Escalated { from_level, .. } => {
            format!("{} (from level {from_level})", alert.message)
        }
        AlertEvent::Cleared { reason, .. } => {
            let active = alert
                .cleared_at
                .unwrap_or(t)
                .saturating_sub(alert.raised_at);
            format!("after {:.1} s, {reason:?}", active.as_secs_f64())
        }
    };
    writeln!(
        out,
        "{:>9.3}  {:<9}  {:<22}  {:<5}  {detail}",
        t.as_secs_f64(),
        event.kind().to_uppercase(),
        alert.id.as_str(),
        alert.level
    )?;
    Ok(())
}

fn print_state(out: &mut impl Write, state: &DriverState, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::json!({ "state": state }))?;
        return Ok(());
    }
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    };
    let t = state.timestamp.unwrap_or_default().as_secs_f64();
    writeln!(
        out,
        "{t:>9.3}  {:<9}  {:<22}  {:<5}  eyes_on_road={} attentive={:.0}% distraction={:.0}% \
         fatigue={:.0}% eyes_closed={} phone={} hands={} face={} vats={:.1}s perclos={}",
        "state",
        state.monitoring.as_str(),
        "",
        yes_no(state.is_eyes_on_road),
        state.attentive_probability,
        state.distraction_level,
        state.fatigue_level,
        yes_no(state.eyes_closed),
        yes_no(state.phone_in_use),
        yes_no(state.is_hands_on_wheel),
        yes_no(state.face_visible),
        state.short_distraction_time.as_secs_f64(),
        state
            .perclos
            .map_or("?".to_owned(), |p| format!("{:.0}%", 100.0 * p)),
    )?;
    Ok(())
}
