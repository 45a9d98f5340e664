//! The policy stage: autoneural-policies' engine with the configured rules file.

use std::path::PathBuf;

use autoneural_policies as policies;
use policies::{PolicyEngine, Rules};

use crate::stages::{Alert, AlertEvent, DriverState, Observation, Policy, StageError};

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

impl Policy for Rulebook {
    fn update(&mut self, observation: &Observation) -> (DriverState, Vec<AlertEvent>) {
        let events = self.engine.observe(observation);
        (self.engine.state().clone(), events)
    }

    fn active_alerts(&self) -> Vec<Alert> {
        self.engine.active_alerts()
    }

    fn reload(&mut self) -> Result<(String, Vec<AlertEvent>), StageError> {
        let Some(path) = &self.path else {
            return Ok((
                "no rules file configured; the built-in rules stay".into(),
                vec![],
            ));
        };
        let rules = Rules::from_file(path).map_err(|e| StageError::new(e.to_string()))?;
        let events = self
            .engine
            .replace_rules(rules)
            .map_err(|e| StageError::new(e.to_string()))?;
        Ok((format!("rules from {}", self.origin()), events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::{AlertId, ProbeAnswer, valid_observation};
    use crate::vehicle::VehicleState;
    use std::time::Duration;

    fn phone(t_ms: u64, p: f32) -> Observation {
        phone_at(t_ms, p, None)
    }

    fn phone_at(t_ms: u64, p: f32, speed_kmh: Option<f32>) -> Observation {
        let answer = |field: &str, positive: f32| ProbeAnswer {
            id: field.into(),
            field: field.into(),
            answer: String::new(),
            probabilities: vec![],
            field_probability: positive,
        };
        valid_observation(
            Duration::from_millis(t_ms),
            &[
                answer("phone_in_use", p),
                answer("face_visible", 1.0),
                answer("eyes_on_road", 1.0),
                answer("eyes_closed", 0.0),
            ],
            VehicleState { speed_kmh },
        )
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
                assert_eq!(state.phone_in_use, Some(true));
            }
            let now = Duration::from_millis(i * 100);
            for e in evs.iter().filter(|e| e.alert().id == AlertId::PhoneUse) {
                match e {
                    AlertEvent::Raised { .. } => raised = Some(e.at(now)),
                    AlertEvent::Cleared { .. } => cleared = Some(e.at(now)),
                    AlertEvent::Escalated { .. } => {}
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
                    |e| matches!(e, AlertEvent::Raised { alert } if alert.id == AlertId::PhoneUse),
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
