//! Alerts and the events that raise, escalate and clear them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The rules, and the stable ids of the alerts they raise. The id is part of the D-Bus API
/// (`AlertRaised` / `AlertCleared`) and the name of the rule's table in the rules file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertId {
    /// Eyes off the road continuously (Euro NCAP "long distraction").
    LongDistraction,
    /// Cumulative eyes off road in a sliding window (Euro NCAP "VATS", short distraction).
    ShortDistraction,
    /// Phone in hand or at the ear.
    PhoneUse,
    /// Eyes closed for a short while (superseded by sleep by default).
    Microsleep,
    /// Eyes closed for long.
    Sleep,
    /// Eyes closed or off road for long: the driver does not respond.
    Unresponsive,
    /// Yawning often or a high PERCLOS.
    Drowsiness,
    /// No valid observation or no visible face for long: sensing is degraded.
    MonitoringUnavailable,
}

impl AlertId {
    /// Every id, in the order the engine evaluates the rules (and orders events of one frame).
    pub const ALL: [AlertId; 8] = [
        AlertId::MonitoringUnavailable,
        AlertId::LongDistraction,
        AlertId::ShortDistraction,
        AlertId::PhoneUse,
        AlertId::Unresponsive,
        AlertId::Sleep,
        AlertId::Microsleep,
        AlertId::Drowsiness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertId::LongDistraction => "long_distraction",
            AlertId::ShortDistraction => "short_distraction",
            AlertId::PhoneUse => "phone_use",
            AlertId::Microsleep => "microsleep",
            AlertId::Sleep => "sleep",
            AlertId::Unresponsive => "unresponsive",
            AlertId::Drowsiness => "drowsiness",
            AlertId::MonitoringUnavailable => "monitoring_unavailable",
        }
    }

    pub fn from_name(name: &str) -> Option<AlertId> {
        AlertId::ALL.into_iter().find(|id| id.as_str() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for AlertId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert: raised by a rule, possibly escalated, eventually cleared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: AlertId,
    /// 1 = warning (visual), 2 = escalated (visual + acoustic), 3 = critical (intervention level).
    pub level: u8,
    pub message: String,
    /// Observation timestamp of the frame at which the alert was raised.
    #[serde(serialize_with = "crate::seconds::serialize")]
    pub raised_at: Duration,
    /// Observation timestamp at which it was cleared; `None` while active.
    #[serde(serialize_with = "crate::seconds::serialize_option")]
    pub cleared_at: Option<Duration>,
}

/// Why an alert was cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClearReason {
    /// Its condition was false for the clear hysteresis time.
    ConditionEnded,
    /// A more severe alert that supersedes it was raised (e.g. sleep supersedes microsleep).
    Superseded { by: AlertId },
    /// New rules were loaded in which the rule is disabled.
    RuleDisabled,
}

/// What changed; the daemon turns these into D-Bus signals (`AlertRaised`, `AlertCleared`; an
/// escalation is an `AlertRaised` with the higher level).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AlertEvent {
    Raised { alert: Alert },
    Escalated { alert: Alert, from_level: u8 },
    Cleared { alert: Alert, reason: ClearReason },
}

impl AlertEvent {
    /// The alert as it is after the event.
    pub fn alert(&self) -> &Alert {
        match self {
            AlertEvent::Raised { alert }
            | AlertEvent::Escalated { alert, .. }
            | AlertEvent::Cleared { alert, .. } => alert,
        }
    }

    /// "raised", "escalated" or "cleared".
    pub fn kind(&self) -> &'static str {
        match self {
            AlertEvent::Raised { .. } => "raised",
            AlertEvent::Escalated { .. } => "escalated",
            AlertEvent::Cleared { .. } => "cleared",
        }
    }

    /// The observation timestamp at which the event happened.
    pub fn at(&self, now: Duration) -> Duration {
        match self {
            AlertEvent::Cleared { alert, .. } => alert.cleared_at.unwrap_or(now),
            _ => now,
        }
    }
}
