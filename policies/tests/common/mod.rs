//! Scripted drives for the engine tests: frames at a fixed rate, each with a driver pose.
#![allow(dead_code)]

use std::time::Duration;

use autoneural_policies::{
    AlertEvent, AlertId, Field, Observation, PolicyEngine, Probabilities, Rules,
};

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A driver looking at the road, eyes open, hands on the wheel, no phone.
pub fn attentive() -> Probabilities {
    Probabilities::default()
        .with(Field::FaceVisible, 0.98)
        .with(Field::EyesClosed, 0.03)
        .with(Field::EyesOnRoad, 0.95)
        .with(Field::PhoneInUse, 0.02)
        .with(Field::Yawning, 0.01)
        .with(Field::HandsOnWheel, 0.9)
        .with(Field::SeatBelt, 0.97)
        .with(Field::PassengerPresent, 0.05)
}

pub fn off_road() -> Probabilities {
    attentive().with(Field::EyesOnRoad, 0.04)
}

pub fn eyes_closed() -> Probabilities {
    attentive().with(Field::EyesClosed, 0.96)
}

pub fn phone() -> Probabilities {
    attentive().with(Field::PhoneInUse, 0.93)
}

pub fn yawning() -> Probabilities {
    attentive().with(Field::Yawning, 0.9)
}

pub fn no_face() -> Probabilities {
    attentive()
        .with(Field::FaceVisible, 0.02)
        .with(Field::EyesOnRoad, 0.5)
}

/// Feeds frames at `rate_hz` and records every event with the frame time it came at.
pub struct Drive {
    pub engine: PolicyEngine,
    /// Frame index; the next frame is at `frame * 1 s / rate`.
    pub frame: u64,
    pub rate_hz: u64,
    pub speed_kmh: Option<f32>,
    pub events: Vec<(Duration, AlertEvent)>,
}

impl Drive {
    pub fn new(rules: Rules) -> Self {
        Self::at_rate(rules, 10)
    }

    pub fn at_rate(rules: Rules, rate_hz: u64) -> Self {
        Drive {
            engine: PolicyEngine::new(rules),
            frame: 0,
            rate_hz,
            speed_kmh: None,
            events: Vec::new(),
        }
    }

    /// The timestamp of the next frame (exact nanoseconds, no float drift).
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.frame * 1_000_000_000 / self.rate_hz)
    }

    pub fn feed(&mut self, obs: Observation) {
        let t = obs.timestamp;
        for event in self.engine.observe(&obs) {
            self.events.push((t, event));
        }
    }

    /// Frames with `pose` covering `seconds` (sample-and-hold: the pose lasts from the first
    /// frame to the next call's first frame).
    pub fn hold(&mut self, pose: Probabilities, seconds: f64) -> &mut Self {
        let frames = (seconds * self.rate_hz as f64).round() as u64;
        for _ in 0..frames {
            let mut obs = Observation::valid(self.now(), pose);
            obs.vehicle_speed_kmh = self.speed_kmh;
            self.feed(obs);
            self.frame += 1;
        }
        self
    }

    /// Invalid observations covering `seconds`.
    pub fn invalid(&mut self, seconds: f64) -> &mut Self {
        let frames = (seconds * self.rate_hz as f64).round() as u64;
        for _ in 0..frames {
            self.feed(Observation::invalid(self.now(), "no frame"));
            self.frame += 1;
        }
        self
    }

    /// No observations at all for `seconds`.
    pub fn silence(&mut self, seconds: f64) -> &mut Self {
        self.frame += (seconds * self.rate_hz as f64).round() as u64;
        self
    }

    /// (time, kind, id, level) of every event so far.
    pub fn timeline(&self) -> Vec<(Duration, &'static str, AlertId, u8)> {
        self.events
            .iter()
            .map(|(t, e)| (*t, e.kind(), e.alert().id, e.alert().level))
            .collect()
    }

    /// Events of one alert id.
    pub fn of(&self, id: AlertId) -> Vec<(Duration, &'static str, u8)> {
        self.timeline()
            .into_iter()
            .filter(|e| e.2 == id)
            .map(|(t, kind, _, level)| (t, kind, level))
            .collect()
    }

    pub fn is_active(&self, id: AlertId) -> bool {
        self.engine.active_alerts().iter().any(|a| a.id == id)
    }
}
