//! A small `log` backend for a service: one line per record on stderr. Under systemd (when
//! `$JOURNAL_STREAM` is set) each line starts with the syslog priority (`<3>` error … `<7>` debug),
//! which journald turns into the entry's priority; on a terminal the level is spelled out.
//! Only this crate and the project's crates log at the configured level; dependencies log warnings
//! and errors only, so the default level has no per-frame or per-message lines.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    level: LevelFilter,
    journal: bool,
}

fn ours(target: &str) -> bool {
    target.starts_with("autoneural")
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if ours(m.target()) {
            m.level() <= self.level
        } else {
            m.level() <= Level::Warn
        }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journal {
            let prio = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{prio}>{}\n", record.args())
        } else {
            format!(
                "{:<5} {}: {}\n",
                record.level(),
                record.target(),
                record.args()
            )
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger; `AUTONEURAL_LOG` (error|warn|info|debug|trace) overrides the configured level.
pub fn init(level: LevelFilter) {
    let level = std::env::var("AUTONEURAL_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(level);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_logger(Box::leak(Box::new(Logger { level, journal }))).is_ok() {
        log::set_max_level(level.max(LevelFilter::Warn));
    }
}
