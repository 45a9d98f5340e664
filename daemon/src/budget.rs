//! Latency budgets and the degradation ladder.
//!
//! The governor watches the safety path's stages (capture -> observation, vision, probes) and the
//! description refresh. It decides once per window of `window` processed frames:
//!
//! * **over budget**: more than 10 % of a safety stage's samples in the window exceed its budget
//!   (its p90 is over budget), or a description refresh took longer than its budget. The daemon
//!   steps one level down the ladder:
//!   1. `no-description` — stop the description refresh (frees the inference queue);
//!   2. `reduced-rate` — process every second frame (half the configured rate), the last rung
//!      (bundle format autoneural-bundle/1 has one input size, so there is no lower resolution
//!      to switch to).
//! * **headroom**: the p99 of every safety stage is below `recovery_headroom_percent` of its budget;
//!   the daemon steps one level back up.
//!
//! After each step the window starts empty, so every decision rests on samples taken at the
//! current level. The level and its reason are published on D-Bus (`MonitoringState`,
//! `Diagnostics.DegradationReason`).

use std::fmt;
use std::time::Duration;

use crate::config::BudgetsConfig;
use crate::stats::{Stage, Window};

/// How far the daemon has stepped down to stay within its budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Full,
    NoDescription,
    ReducedRate,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::NoDescription => "no-description",
            Level::ReducedRate => "reduced-rate",
        }
    }

    pub fn description_enabled(self) -> bool {
        self == Level::Full
    }

    /// Process one frame in this many.
    pub fn frame_divisor(self) -> u32 {
        if self >= Level::ReducedRate { 2 } else { 1 }
    }

    fn down(self) -> Self {
        match self {
            Level::Full => Level::NoDescription,
            _ => Level::ReducedRate,
        }
    }

    fn up(self) -> Self {
        match self {
            Level::ReducedRate => Level::NoDescription,
            _ => Level::Full,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A change of level and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelChange {
    pub from: Level,
    pub to: Level,
    pub reason: String,
}

const SAFETY_STAGES: [Stage; 4] = [
    Stage::CaptureToObservation,
    Stage::Vision,
    Stage::Probes,
    Stage::Face,
];

pub struct Governor {
    budgets: Vec<(Stage, Duration)>,
    windows: Vec<(Stage, Window)>,
    window: usize,
    headroom: f64,
    level: Level,
    description_overrun: Option<Duration>,
    /// Why the daemon is at its current level ("" at full service).
    reason: String,
}

impl Governor {
    pub fn new(cfg: &BudgetsConfig) -> Self {
        let window = cfg.window.get() as usize;
        Self {
            budgets: vec![
                (
                    Stage::CaptureToObservation,
                    cfg.capture_to_observation_ms.ms(),
                ),
                (Stage::Vision, cfg.vision_ms.ms()),
                (Stage::Probes, cfg.probes_ms.ms()),
                (Stage::Description, cfg.description_ms.ms()),
                (Stage::Face, cfg.face_ms.ms()),
            ],
            windows: SAFETY_STAGES
                .iter()
                .map(|&s| (s, Window::new(window)))
                .collect(),
            window,
            headroom: cfg.recovery_headroom_percent.get() as f64 / 100.0,
            level: Level::Full,
            description_overrun: None,
            reason: String::new(),
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn budget(&self, stage: Stage) -> Option<Duration> {
        self.budgets
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, b)| *b)
    }

    /// Records one sample of a stage. Safety-stage samples are judged once per window.
    pub fn record(&mut self, stage: Stage, d: Duration) {
        if stage == Stage::Description {
            if self.budget(stage).is_some_and(|b| d > b) {
                self.description_overrun = Some(d);
            }
            return;
        }
        if let Some((_, w)) = self.windows.iter_mut().find(|(s, _)| *s == stage) {
            w.push(d);
        }
    }

    /// Called once per processed frame, after its samples were recorded.
    pub fn decide(&mut self) -> Option<LevelChange> {
        if let Some(d) = self.description_overrun.take()
            && self.level == Level::Full
        {
            let reason = format!(
                "description refresh took {} ms, budget {} ms",
                d.as_millis(),
                self.budget(Stage::Description)
                    .unwrap_or_default()
                    .as_millis()
            );
            return Some(self.step(Level::NoDescription, reason));
        }
        let frames = self
            .windows
            .iter()
            .find(|(s, _)| *s == Stage::CaptureToObservation)
            .map_or(0, |(_, w)| w.len());
        if frames < self.window {
            return None;
        }
        let mut over = None;
        let mut headroom = true;
        for (stage, w) in &self.windows {
            let Some(budget) = self.budget(*stage) else {
                continue;
            };
            let budget_ms = budget.as_secs_f64() * 1000.0;
            if w.is_empty() {
                continue;
            }
            let p90 = w.quantile_ms(0.9).unwrap_or(0.0);
            let p99 = w.quantile_ms(0.99).unwrap_or(0.0);
            if p90 > budget_ms && over.is_none() {
                over = Some(format!(
                    "{stage} p90 {p90:.0} ms over budget {budget_ms:.0} ms"
                ));
            }
            if p99 > budget_ms * self.headroom {
                headroom = false;
            }
        }
        for (_, w) in &mut self.windows {
            w.clear();
        }
        if let Some(why) = over {
            if self.level < Level::ReducedRate {
                let to = self.level.down();
                return Some(self.step(to, why));
            }
            // Nothing left to give up: stay, but say so.
            self.reason = format!("{why}, at the lowest level ({})", self.level);
            return None;
        }
        if headroom && self.level > Level::Full {
            let to = self.level.up();
            let reason = format!(
                "every stage below {:.0} % of its budget",
                self.headroom * 100.0
            );
            return Some(self.step(to, reason));
        }
        None
    }

    fn step(&mut self, to: Level, why: String) -> LevelChange {
        let from = self.level;
        self.level = to;
        for (_, w) in &mut self.windows {
            w.clear();
        }
        self.reason = if to == Level::Full {
            String::new()
        } else if to > from {
            format!("{to}: {why}")
        } else {
            format!("{to}: recovering ({why})")
        };
        LevelChange {
            from,
            to,
            reason: why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bounded;

    fn cfg() -> BudgetsConfig {
        BudgetsConfig {
            capture_to_observation_ms: Bounded(100),
            vision_ms: Bounded(50),
            probes_ms: Bounded(50),
            description_ms: Bounded(1000),
            hmi_answer_ms: None,
            face_ms: Bounded(50),
            window: Bounded(10),
            recovery_headroom_percent: Bounded(50),
        }
    }

    fn frames(g: &mut Governor, n: usize, total_ms: u64) -> Vec<LevelChange> {
        let mut changes = vec![];
        for _ in 0..n {
            g.record(Stage::Vision, Duration::from_millis(total_ms / 4));
            g.record(Stage::Probes, Duration::from_millis(total_ms / 4));
            g.record(Stage::CaptureToObservation, Duration::from_millis(total_ms));
            changes.extend(g.decide());
        }
        changes
    }

    #[test]
    fn degrades_in_the_documented_order_and_recovers() {
        let mut g = Governor::new(&cfg());
        assert!(
            frames(&mut g, 9, 150).is_empty(),
            "no decision before a full window"
        );
        let c = frames(&mut g, 1, 150);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].from, c[0].to), (Level::Full, Level::NoDescription));
        assert!(
            c[0].reason.contains("capture_to_observation"),
            "{}",
            c[0].reason
        );
        assert_eq!(frames(&mut g, 10, 150)[0].to, Level::ReducedRate);
        assert!(
            frames(&mut g, 10, 150).is_empty(),
            "no level below the last"
        );
        assert!(g.reason().contains("lowest"), "{}", g.reason());
        // Inside the budget but without headroom: stay.
        assert!(frames(&mut g, 10, 80).is_empty());
        let ups: Vec<Level> = frames(&mut g, 30, 20).iter().map(|c| c.to).collect();
        assert_eq!(ups, [Level::NoDescription, Level::Full]);
        assert_eq!(g.reason(), "");
    }

    #[test]
    fn ladder_ends_at_reduced_rate() {
        let mut g = Governor::new(&cfg());
        let downs: Vec<Level> = frames(&mut g, 50, 500).iter().map(|c| c.to).collect();
        assert_eq!(downs, [Level::NoDescription, Level::ReducedRate]);
    }

    #[test]
    fn one_slow_frame_in_a_window_is_not_an_overrun() {
        let mut g = Governor::new(&cfg());
        assert!(frames(&mut g, 9, 30).is_empty());
        assert!(frames(&mut g, 1, 400).is_empty());
        assert_eq!(g.level(), Level::Full);
    }

    #[test]
    fn slow_description_stops_the_refresh_first() {
        let mut g = Governor::new(&cfg());
        g.record(Stage::Description, Duration::from_millis(1500));
        let c = g.decide().unwrap();
        assert_eq!(c.to, Level::NoDescription);
        assert!(!g.level().description_enabled());
        assert_eq!(g.level().frame_divisor(), 1);
    }
}
