//! The rules as data: parsed from TOML, validated completely, then handed to the engine.
//!
//! A rules file is complete (every key required) so that the file an assessor reads is the whole
//! parameter set. Parsing rejects unknown keys, wrong types and missing keys with the line from
//! the TOML parser; [`Rules::validate`] then checks ranges and relations and reports the line of
//! the offending key.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::alert::AlertId;
use crate::observation::Field;

/// The rules shipped with the crate (`policies/rules/default.toml`).
pub const DEFAULT_RULES_TOML: &str = include_str!("../rules/default.toml");

/// The longest time any rule parameter may have (one day): bounds the arithmetic.
const MAX_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub observations: ObservationRules,
    pub alerts: AlertRules,
    pub smoothing: Smoothing,
    pub thresholds: Thresholds,
    pub speed_gate: SpeedGate,
    pub long_distraction: TimedRule,
    pub short_distraction: ShortDistractionRule,
    pub phone_use: TimedRule,
    pub microsleep: TimedRule,
    pub sleep: TimedRule,
    pub unresponsive: TimedRule,
    pub drowsiness: DrowsinessRule,
    pub monitoring_unavailable: TimedRule,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationRules {
    /// A longer gap between observations is missing data.
    #[serde(rename = "max_gap_s", deserialize_with = "seconds")]
    pub max_gap: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// An alert clears once its condition has been false continuously for this long.
    #[serde(rename = "clear_after_s", deserialize_with = "seconds")]
    pub clear_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smoothing {
    /// Time constant of the exponential filter; 0 disables smoothing.
    #[serde(rename = "time_constant_s", deserialize_with = "seconds")]
    pub time_constant: Duration,
    /// Largest weight one sample can get (0 < max_step <= 1).
    pub max_step: f32,
}

/// Confidence thresholds with hysteresis for one field.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub threshold: f32,
    pub hysteresis: f32,
}

impl Threshold {
    /// The filtered probability at which the field turns true.
    pub fn on(&self) -> f32 {
        self.threshold + self.hysteresis
    }
    /// The filtered probability at which the field turns false.
    pub fn off(&self) -> f32 {
        self.threshold - self.hysteresis
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub eyes_closed: Threshold,
    pub eyes_on_road: Threshold,
    pub phone_in_use: Threshold,
    pub yawning: Threshold,
    pub hands_on_wheel: Threshold,
    pub seat_belt: Threshold,
    pub face_visible: Threshold,
    pub passenger_present: Threshold,
}

impl Thresholds {
    pub fn get(&self, field: Field) -> Threshold {
        match field {
            Field::EyesClosed => self.eyes_closed,
            Field::EyesOnRoad => self.eyes_on_road,
            Field::PhoneInUse => self.phone_in_use,
            Field::Yawning => self.yawning,
            Field::HandsOnWheel => self.hands_on_wheel,
            Field::SeatBelt => self.seat_belt,
            Field::FaceVisible => self.face_visible,
            Field::PassengerPresent => self.passenger_present,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedGate {
    pub min_speed_kmh: f32,
}

/// One step of a timed rule: the condition held for `after` reaches `level`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(rename = "after_s", deserialize_with = "seconds")]
    pub after: Duration,
    pub level: u8,
}

/// A rule whose condition must hold continuously: long distraction, phone use, microsleep, sleep,
/// unresponsive, monitoring unavailable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedRule {
    pub enabled: bool,
    pub speed_gated: bool,
    #[serde(rename = "cooldown_s", deserialize_with = "seconds")]
    pub cooldown: Duration,
    pub superseded_by: Vec<AlertId>,
    pub message: String,
    /// Increasing times and increasing levels.
    pub steps: Vec<Step>,
}

/// Euro NCAP's visual attention time sharing (VATS).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortDistractionRule {
    pub enabled: bool,
    pub speed_gated: bool,
    #[serde(rename = "cooldown_s", deserialize_with = "seconds")]
    pub cooldown: Duration,
    pub superseded_by: Vec<AlertId>,
    pub message: String,
    pub level: u8,
    /// Eyes-off-road time within the window that raises the alert.
    #[serde(rename = "cumulative_s", deserialize_with = "seconds")]
    pub cumulative: Duration,
    #[serde(rename = "window_s", deserialize_with = "seconds")]
    pub window: Duration,
    /// Continuous eyes on road that empties the window.
    #[serde(rename = "reset_after_s", deserialize_with = "seconds")]
    pub reset_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrowsinessRule {
    pub enabled: bool,
    pub speed_gated: bool,
    #[serde(rename = "cooldown_s", deserialize_with = "seconds")]
    pub cooldown: Duration,
    pub superseded_by: Vec<AlertId>,
    pub message: String,
    pub level: u8,
    pub yawn_count: u32,
    #[serde(rename = "yawn_window_s", deserialize_with = "seconds")]
    pub yawn_window: Duration,
    /// Share of eyes-closed time (0..=1) that raises the alert.
    pub perclos_threshold: f32,
    #[serde(rename = "perclos_window_s", deserialize_with = "seconds")]
    pub perclos_window: Duration,
    /// Share of the PERCLOS window that must have eye data before PERCLOS is judged.
    pub perclos_min_coverage: f32,
}

/// What every rule has, whatever its kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Common<'a> {
    pub enabled: bool,
    pub speed_gated: bool,
    pub cooldown: Duration,
    pub superseded_by: &'a [AlertId],
    pub message: &'a str,
}

impl Rules {
    /// The built-in rules ([`DEFAULT_RULES_TOML`]).
    #[allow(
        clippy::expect_used,
        reason = "embedded in the crate and parsed by a unit test"
    )]
    pub fn builtin() -> Rules {
        // The embedded file is part of the crate and a unit test parses it; failing here is a
        // build defect, not an input error.
        Rules::from_toml_str(DEFAULT_RULES_TOML).expect("the built-in rules file is valid")
    }

    /// Parses and validates a rules file's text.
    pub fn from_toml_str(text: &str) -> Result<Rules, RulesError> {
        Self::parse(text, "rules")
    }

    /// Reads, parses and validates a rules file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Rules, RulesError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    fn parse(text: &str, origin: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            RulesError::Parse {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        rules.check().map_err(|problem| RulesError::Invalid {
            origin: origin.to_owned(),
            line: locate_key(text, &problem.path),
            key: problem.path.join("."),
            message: problem.message,
        })?;
        Ok(rules)
    }

    /// Checks ranges and relations (for rules built or edited in code; files are checked when
    /// parsed).
    pub fn validate(&self) -> Result<(), RulesError> {
        self.check().map_err(|problem| RulesError::Invalid {
            origin: "rules".to_owned(),
            line: None,
            key: problem.path.join("."),
            message: problem.message,
        })
    }

    pub(crate) fn common(&self, id: AlertId) -> Common<'_> {
        fn timed(r: &TimedRule) -> Common<'_> {
            Common {
                enabled: r.enabled,
                speed_gated: r.speed_gated,
                cooldown: r.cooldown,
                superseded_by: &r.superseded_by,
                message: &r.message,
            }
        }
        match id {
            AlertId::LongDistraction => timed(&self.long_distraction),
            AlertId::PhoneUse => timed(&self.phone_use),
            AlertId::Microsleep => timed(&self.microsleep),
            AlertId::Sleep => timed(&self.sleep),
            AlertId::Unresponsive => timed(&self.unresponsive),
            AlertId::MonitoringUnavailable => timed(&self.monitoring_unavailable),
            AlertId::ShortDistraction => {
                let r = &self.short_distraction;
                Common {
                    enabled: r.enabled,
                    speed_gated: r.speed_gated,
                    cooldown: r.cooldown,
                    superseded_by: &r.superseded_by,
                    message: &r.message,
                }
            }
            AlertId::Drowsiness => {
                let r = &self.drowsiness;
                Common {
                    enabled: r.enabled,
                    speed_gated: r.speed_gated,
                    cooldown: r.cooldown,
                    superseded_by: &r.superseded_by,
                    message: &r.message,
                }
            }
        }
    }

    /// The steps of a timed rule; `None` for the window-based rules.
    pub(crate) fn steps(&self, id: AlertId) -> Option<&[Step]> {
        match id {
            AlertId::LongDistraction => Some(&self.long_distraction.steps),
            AlertId::PhoneUse => Some(&self.phone_use.steps),
            AlertId::Microsleep => Some(&self.microsleep.steps),
            AlertId::Sleep => Some(&self.sleep.steps),
            AlertId::Unresponsive => Some(&self.unresponsive.steps),
            AlertId::MonitoringUnavailable => Some(&self.monitoring_unavailable.steps),
            AlertId::ShortDistraction | AlertId::Drowsiness => None,
        }
    }

    fn check(&self) -> Result<(), Problem> {
        check_seconds(
            &["observations", "max_gap_s"],
            self.observations.max_gap,
            Some(Duration::from_millis(1)),
            Some(Duration::from_secs(60)),
        )?;
        check_seconds(
            &["alerts", "clear_after_s"],
            self.alerts.clear_after,
            None,
            Some(Duration::from_secs(600)),
        )?;
        check_seconds(
            &["smoothing", "time_constant_s"],
            self.smoothing.time_constant,
            None,
            Some(Duration::from_secs(60)),
        )?;
        let step = self.smoothing.max_step;
        if !(step > 0.0 && step <= 1.0) {
            return Err(Problem::new(
                &["smoothing", "max_step"],
                format!("must be in (0, 1], got {step}"),
            ));
        }
        for field in Field::ALL {
            let t = self.thresholds.get(field);
            let path = ["thresholds", field.as_str()];
            if !(t.hysteresis >= 0.0 && t.off() > 0.0 && t.on() < 1.0) {
                return Err(Problem::new(
                    &path,
                    format!(
                        "needs hysteresis >= 0 and 0 < threshold - hysteresis <= threshold + \
                         hysteresis < 1, got threshold {} hysteresis {}",
                        t.threshold, t.hysteresis
                    ),
                ));
            }
        }
        let speed = self.speed_gate.min_speed_kmh;
        if !(speed.is_finite() && (0.0..=300.0).contains(&speed)) {
            return Err(Problem::new(
                &["speed_gate", "min_speed_kmh"],
                format!("must be in 0..=300 km/h, got {speed}"),
            ));
        }
        for id in AlertId::ALL {
            self.check_rule(id)?;
        }
        self.check_supersession()
    }

    fn check_rule(&self, id: AlertId) -> Result<(), Problem> {
        let name = id.as_str();
        let common = self.common(id);
        let longest = Some(Duration::from_secs_f64(MAX_SECONDS));
        check_seconds(&[name, "cooldown_s"], common.cooldown, None, longest)?;
        if common.message.trim().is_empty() {
            return Err(Problem::new(&[name, "message"], "must not be empty"));
        }
        if common.superseded_by.contains(&id) {
            return Err(Problem::new(
                &[name, "superseded_by"],
                "a rule cannot supersede itself",
            ));
        }
        if let Some(steps) = self.steps(id) {
            if steps.is_empty() || steps.len() > 3 {
                return Err(Problem::new(
                    &[name, "steps"],
                    format!("needs 1 to 3 steps, got {}", steps.len()),
                ));
            }
            let mut previous: Option<Step> = None;
            for (i, step) in steps.iter().enumerate() {
                let index = i.to_string();
                check_level(&[name, "steps", &index, "level"], step.level)?;
                check_seconds(
                    &[name, "steps", &index, "after_s"],
                    step.after,
                    None,
                    longest,
                )?;
                if let Some(prev) = previous {
                    if step.after <= prev.after {
                        return Err(Problem::new(
                            &[name, "steps", &index, "after_s"],
                            "steps must have increasing times",
                        ));
                    }
                    if step.level <= prev.level {
                        return Err(Problem::new(
                            &[name, "steps", &index, "level"],
                            "steps must have increasing levels",
                        ));
                    }
                }
                previous = Some(*step);
            }
        }
        match id {
            AlertId::ShortDistraction => {
                let r = &self.short_distraction;
                check_level(&[name, "level"], r.level)?;
                check_seconds(
                    &[name, "window_s"],
                    r.window,
                    Some(Duration::from_millis(1)),
                    longest,
                )?;
                check_seconds(
                    &[name, "cumulative_s"],
                    r.cumulative,
                    Some(Duration::from_millis(1)),
                    Some(r.window),
                )?;
                check_seconds(
                    &[name, "reset_after_s"],
                    r.reset_after,
                    Some(Duration::from_millis(1)),
                    longest,
                )?;
            }
            AlertId::Drowsiness => {
                let r = &self.drowsiness;
                check_level(&[name, "level"], r.level)?;
                if r.yawn_count == 0 {
                    return Err(Problem::new(&[name, "yawn_count"], "must be at least 1"));
                }
                check_seconds(
                    &[name, "yawn_window_s"],
                    r.yawn_window,
                    Some(Duration::from_millis(1)),
                    longest,
                )?;
                check_seconds(
                    &[name, "perclos_window_s"],
                    r.perclos_window,
                    Some(Duration::from_millis(1)),
                    longest,
                )?;
                for (key, value) in [
                    ("perclos_threshold", r.perclos_threshold),
                    ("perclos_min_coverage", r.perclos_min_coverage),
                ] {
                    if !(value > 0.0 && value <= 1.0) {
                        return Err(Problem::new(
                            &[name, key],
                            format!("must be in (0, 1], got {value}"),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// "A supersedes B" must not loop, or two active alerts would clear each other.
    fn check_supersession(&self) -> Result<(), Problem> {
        for start in AlertId::ALL {
            let mut frontier = self.common(start).superseded_by.to_vec();
            let mut seen = Vec::new();
            while let Some(next) = frontier.pop() {
                if next == start {
                    return Err(Problem::new(
                        &[start.as_str(), "superseded_by"],
                        "supersession forms a cycle",
                    ));
                }
                if !seen.contains(&next) {
                    seen.push(next);
                    frontier.extend_from_slice(self.common(next).superseded_by);
                }
            }
        }
        Ok(())
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::builtin()
    }
}

/// Why a rules file was rejected. Nothing is replaced when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{origin}: {source}")]
    Io {
        origin: String,
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys, missing keys and wrong types.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("{origin}{}: `{key}` {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        origin: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl RulesError {
    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RulesError::Io { .. } => None,
            RulesError::Parse { line, .. } => Some(*line),
            RulesError::Invalid { line, .. } => *line,
        }
    }
}

struct Problem {
    path: Vec<String>,
    message: String,
}

impl Problem {
    fn new(path: &[&str], message: impl Into<String>) -> Self {
        Problem {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

fn check_level(path: &[&str], level: u8) -> Result<(), Problem> {
    if (1..=3).contains(&level) {
        Ok(())
    } else {
        Err(Problem::new(
            path,
            format!("must be 1, 2 or 3, got {level}"),
        ))
    }
}

fn check_seconds(
    path: &[&str],
    value: Duration,
    min: Option<Duration>,
    max: Option<Duration>,
) -> Result<(), Problem> {
    if let Some(min) = min
        && value < min
    {
        return Err(Problem::new(
            path,
            format!(
                "must be at least {} s, got {} s",
                min.as_secs_f64(),
                value.as_secs_f64()
            ),
        ));
    }
    if let Some(max) = max
        && value > max
    {
        return Err(Problem::new(
            path,
            format!(
                "must be at most {} s, got {} s",
                max.as_secs_f64(),
                value.as_secs_f64()
            ),
        ));
    }
    Ok(())
}

/// Seconds as a non-negative finite number (integer or float) -> Duration.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if !(value.is_finite() && (0.0..=MAX_SECONDS).contains(&value)) {
        return Err(serde::de::Error::custom(format!(
            "seconds must be a number in 0..={MAX_SECONDS}, got {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line of the key at `path` (table names, keys, array indices), if the text has it.
fn locate_key(text: &str, path: &[String]) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut span = None;
    let mut value: Option<&toml::de::DeValue<'_>> = None;
    for segment in path {
        match value {
            Some(toml::de::DeValue::Array(array)) => {
                let item = array.get(segment.parse::<usize>().ok()?)?;
                span = Some(item.span());
                value = Some(item.get_ref());
            }
            _ => {
                if let Some(v) = value {
                    table = v.as_table()?;
                }
                let (key, item) = table.iter().find(|(k, _)| k.get_ref() == segment)?;
                span = Some(key.span());
                value = Some(item.get_ref());
            }
        }
    }
    span.map(|s| line_column(text, s.start).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_hold_the_euro_ncap_defaults() {
        let rules = Rules::from_toml_str(DEFAULT_RULES_TOML).unwrap();
        let secs = Duration::from_secs_f64;
        let steps = |r: &TimedRule| {
            r.steps
                .iter()
                .map(|s| (s.after, s.level))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            steps(&rules.long_distraction),
            vec![(secs(3.0), 1), (secs(5.0), 2)]
        );
        assert_eq!(steps(&rules.phone_use), vec![(secs(3.0), 1)]);
        assert_eq!(steps(&rules.microsleep), vec![(secs(1.0), 2)]);
        assert_eq!(steps(&rules.sleep), vec![(secs(3.0), 3)]);
        assert_eq!(steps(&rules.unresponsive), vec![(secs(6.0), 3)]);
        assert_eq!(steps(&rules.monitoring_unavailable), vec![(secs(10.0), 1)]);
        assert_eq!(rules.short_distraction.cumulative, secs(10.0));
        assert_eq!(rules.short_distraction.window, secs(30.0));
        assert_eq!(rules.short_distraction.reset_after, secs(2.0));
        assert_eq!(rules.drowsiness.yawn_count, 3);
        assert_eq!(rules.drowsiness.yawn_window, secs(300.0));
        assert_eq!(rules.drowsiness.perclos_threshold, 0.15);
        assert_eq!(rules.drowsiness.perclos_window, secs(60.0));
        assert_eq!(rules.speed_gate.min_speed_kmh, 10.0);
        assert_eq!(rules.alerts.clear_after, secs(1.0));
        assert_eq!(
            rules.microsleep.superseded_by,
            vec![AlertId::Sleep, AlertId::Unresponsive]
        );
        assert_eq!(rules.sleep.superseded_by, vec![AlertId::Unresponsive]);
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(DEFAULT_RULES_TOML.contains(from), "{from}");
        DEFAULT_RULES_TOML.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let text = replace("max_gap_s = 0.5", "max_gap_s = 0.5\nmax_gapp_s = 0.5");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "max_gapp_s")), "{err}");
        assert!(err.to_string().contains("max_gapp_s"), "{err}");
    }

    #[test]
    fn wrong_type_and_unknown_alert_id_are_rejected_with_their_lines() {
        let text = replace("clear_after_s = 1.0", "clear_after_s = \"one\"");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "clear_after_s")), "{err}");

        let text = replace(
            "superseded_by = [\"sleep\", \"unresponsive\"]",
            "superseded_by = [\"slep\", \"unresponsive\"]",
        );
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "\"slep\"")), "{err}");
        assert!(err.to_string().contains("slep"), "{err}");
    }

    #[test]
    fn negative_seconds_are_rejected_with_their_line() {
        let text = replace("cumulative_s = 10.0", "cumulative_s = -10.0");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "cumulative_s")), "{err}");
    }

    #[test]
    fn range_errors_name_the_key_and_its_line() {
        let text = replace("cumulative_s = 10.0", "cumulative_s = 40.0");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "cumulative_s")), "{err}");
        assert!(
            err.to_string().contains("short_distraction.cumulative_s"),
            "{err}"
        );

        let text = replace(
            "steps = [{ after_s = 3.0, level = 1 }, { after_s = 5.0, level = 2 }]",
            "steps = [{ after_s = 3.0, level = 1 },\n  { after_s = 2.0, level = 2 }]",
        );
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "after_s = 2.0")), "{err}");

        let text = replace("perclos_threshold = 0.15", "perclos_threshold = 1.5");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(
            err.line(),
            Some(line_of(&text, "perclos_threshold")),
            "{err}"
        );

        let text = replace(
            "eyes_closed = { threshold = 0.5, hysteresis = 0.1 }",
            "eyes_closed = { threshold = 0.95, hysteresis = 0.1 }",
        );
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert_eq!(err.line(), Some(line_of(&text, "eyes_closed = {")), "{err}");

        let text = replace("level = 1\ncumulative_s", "level = 4\ncumulative_s");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert!(err.to_string().contains("short_distraction.level"), "{err}");
        assert_eq!(err.line(), Some(line_of(&text, "level = 4")), "{err}");
    }

    #[test]
    fn missing_key_is_rejected() {
        let text = replace("max_step = 0.5\n", "");
        let err = Rules::from_toml_str(&text).unwrap_err();
        assert!(err.to_string().contains("max_step"), "{err}");
        assert!(err.line().is_some());
    }

    #[test]
    fn supersession_cycles_are_rejected() {
        let mut rules = Rules::builtin();
        rules.sleep.superseded_by = vec![AlertId::Microsleep];
        let err = rules.validate().unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
    }

    #[test]
    fn from_file_names_the_file() {
        let err = Rules::from_file(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rules.toml"), "{err}");
    }
}
