//! The policy stage: autoneural-policies' engine with the configured rules file.

use std::path::PathBuf;

use autoneural_policies as policies;
use policies::{Field, PolicyEngine, Probabilities, Rules};

use crate::stages::{Alert, AlertEvent, DriverState, Observation, Policy, Sensing, StageError};

pub struct Rulebook {
    engine: PolicyEngine,
    path: Option<PathBuf>,
}

impl Rulebook {
    /// The rules file, or the built-in Euro NCAP defaults when none is configured.
    pub fn load(path: Option<PathBuf>) -> Result<Self, policies::RulesError> {
        let rules = match &path {
            Some(p) => Rules::from_file(p)?,
            None => Rules::builtin(),
        };
        Ok(Self {
            engine: PolicyEngine::new(rules),
            path,
        })
    }

    fn origin(&self) -> String {
        self.path.as_ref().map_or_else(
            || "the built-in rules".to_string(),
            |p| p.display().to_string(),
        )
    }
}

fn field(name: &str) -> Option<Field> {
    Field::ALL.into_iter().find(|f| f.as_str() == name)
}

fn alert(a: &policies::Alert) -> Alert {
    Alert {
        id: a.id.as_str().to_string(),
        level: a.level,
        message: a.message.clone(),
        since: a.raised_at,
    }
}

fn events(list: Vec<policies::AlertEvent>, now: std::time::Duration) -> Vec<AlertEvent> {
    list.into_iter()
        .map(|e| match &e {
            policies::AlertEvent::Raised { alert: a }
            | policies::AlertEvent::Escalated { alert: a, .. } => AlertEvent::Raised {
                alert: alert(a),
                at: e.at(now),
            },
            policies::AlertEvent::Cleared { alert: a, .. } => AlertEvent::Cleared {
                id: a.id.as_str().to_string(),
                at: e.at(now),
            },
        })
        .collect()
}

impl Policy for Rulebook {
    fn update(&mut self, o: &Observation) -> (DriverState, Vec<AlertEvent>) {
        let obs = match &o.invalid {
            Some(reason) => policies::Observation::invalid(o.timestamp, reason.clone()),
            None => {
                let mut p = Probabilities::default();
                for a in &o.answers {
                    if let Some(f) = field(&a.field) {
                        p.set(f, Some(a.positive.clamp(0.0, 1.0)));
                    }
                }
                policies::Observation::valid(o.timestamp, p)
            }
        };
        let obs = match o.vehicle.speed_kmh {
            Some(kmh) => obs.with_speed(kmh),
            None => obs,
        };
        let evs = events(self.engine.observe(&obs), o.timestamp);
        let s = self.engine.state();
        let sensing = match s.monitoring {
            policies::MonitoringState::Unavailable => Sensing::Unavailable(
                "no valid observation of the driver for the monitoring-unavailable time".into(),
            ),
            policies::MonitoringState::Degraded => match &o.invalid {
                Some(reason) => Sensing::Degraded(reason.clone()),
                None => Sensing::Degraded("the driver's face is not visible".into()),
            },
            _ => Sensing::Ok,
        };
        let state = DriverState {
            is_eyes_on_road: s.is_eyes_on_road.unwrap_or(false),
            attentive_probability: s.attentive_probability as f64,
            distraction_level: s.distraction_level as f64,
            fatigue_level: s.fatigue_level as f64,
            is_hands_on_wheel: s.is_hands_on_wheel.unwrap_or(false),
            phone_in_use: s.phone_in_use.unwrap_or(false),
            eyes_closed: s.eyes_closed.unwrap_or(false),
            face_visible: s.face_visible.unwrap_or(false),
            sensing,
        };
        (state, evs)
    }

    fn active_alerts(&self) -> Vec<Alert> {
        self.engine.active_alerts().iter().map(alert).collect()
    }

    fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError> {
        let Some(path) = &self.path else {
            return Ok((
                "no rules file configured; the built-in rules stay".into(),
                vec![],
            ));
        };
        let rules = Rules::from_file(path).map_err(|e| StageError::new(e.to_string()))?;
        let now = self.engine.state().timestamp.unwrap_or_default();
        let evs = self
            .engine
            .replace_rules(rules)
            .map_err(|e| StageError::new(e.to_string()))?;
        Ok((format!("rules from {}", self.origin()), events(evs, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::ProbeAnswer;
    use crate::vehicle::VehicleState;
    use std::time::Duration;

    fn phone(t_ms: u64, p: f32) -> Observation {
        phone_at(t_ms, p, None)
    }

    fn phone_at(t_ms: u64, p: f32, speed_kmh: Option<f32>) -> Observation {
        let answer = |field: &str, positive: f32| ProbeAnswer {
            probe: field.into(),
            field: field.into(),
            answer: String::new(),
            probabilities: vec![],
            positive,
        };
        Observation {
            timestamp: Duration::from_millis(t_ms),
            answers: vec![
                answer("phone_in_use", p),
                answer("face_visible", 1.0),
                answer("eyes_on_road", 1.0),
                answer("eyes_closed", 0.0),
            ],
            vehicle: VehicleState { speed_kmh },
            invalid: None,
        }
    }

    #[test]
    fn phone_use_raises_after_three_seconds_and_clears() {
        let mut r = Rulebook::load(None).unwrap();
        let mut raised = None;
        let mut cleared = None;
        for i in 0..100u64 {
            let p = if (10..60).contains(&i) { 1.0 } else { 0.0 };
            let (state, evs) = r.update(&phone(i * 100, p));
            if i == 30 {
                assert!(state.phone_in_use);
            }
            for e in evs {
                match e {
                    AlertEvent::Raised { alert, at } if alert.id == "phone_use" => {
                        raised = Some(at)
                    }
                    AlertEvent::Cleared { id, at } if id == "phone_use" => cleared = Some(at),
                    _ => {}
                }
            }
        }
        let raised = raised.expect("raised");
        assert!(
            raised >= Duration::from_millis(4000) && raised <= Duration::from_millis(4600),
            "{raised:?}"
        );
        assert!(cleared.expect("cleared") > Duration::from_secs(6));
    }

    /// The phone rule is speed-gated: below `speed_gate.min_speed_kmh` (10) a phone in hand is no
    /// alert; an unknown speed (no fresh report) is the safe side and gates nothing.
    #[test]
    fn the_reported_speed_gates_the_speed_gated_rules() {
        let raised = |speed: Option<f32>| {
            let mut r = Rulebook::load(None).unwrap();
            (0..60u64).any(|i| {
                let (_, evs) = r.update(&phone_at(i * 100, 1.0, speed));
                evs.iter().any(
                    |e| matches!(e, AlertEvent::Raised { alert, .. } if alert.id == "phone_use"),
                )
            })
        };
        assert!(!raised(Some(5.0)), "raised while parked");
        assert!(raised(Some(50.0)), "not raised while driving");
        assert!(raised(None), "not raised with the speed unknown");
    }

    #[test]
    fn a_broken_rules_file_keeps_the_running_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, autoneural_policies::DEFAULT_RULES_TOML).unwrap();
        let mut r = Rulebook::load(Some(path.clone())).unwrap();
        std::fs::write(&path, "[alerts.phone_use]\nfrobnicate = 1\n").unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.message.contains("rules.toml"), "{err}");
        std::fs::write(&path, autoneural_policies::DEFAULT_RULES_TOML).unwrap();
        assert!(r.reload().is_ok());
    }
}
