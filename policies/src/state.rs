//! The driver state published to the HMI, aligned with COVESA VSS `Vehicle.Driver.*`.

use std::time::Duration;

use serde::Serialize;

/// Whether the engine can currently see the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitoringState {
    /// No valid observation yet.
    Starting,
    /// The last observation was valid and showed the face.
    Active,
    /// Data is missing (invalid observation, gap, face not visible) but not yet for the
    /// monitoring-unavailable time.
    Degraded,
    /// The monitoring-unavailable alert is active.
    Unavailable,
}

impl MonitoringState {
    pub fn as_str(self) -> &'static str {
        match self {
            MonitoringState::Starting => "starting",
            MonitoringState::Active => "active",
            MonitoringState::Degraded => "degraded",
            MonitoringState::Unavailable => "unavailable",
        }
    }
}

/// The driver state after the last accepted observation.
///
/// Boolean fields are `None` while unknown (no data, or the face is not visible for face-based
/// fields). Missing data is never reported as attentive: `attentive_probability` is 0 while eyes on
/// road is unknown. Levels are percentages (VSS uses 0-100 for these signals).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverState {
    /// Timestamp of the last accepted observation (`None` before the first).
    #[serde(serialize_with = "crate::seconds::serialize_option")]
    pub timestamp: Option<Duration>,
    pub monitoring: MonitoringState,
    /// VSS `Vehicle.Driver.IsEyesOnRoad`.
    pub is_eyes_on_road: Option<bool>,
    /// VSS `Vehicle.Driver.AttentiveProbability` (percent): smoothed P(eyes on road) x
    /// P(eyes open); 0 when unknown.
    pub attentive_probability: f32,
    /// VSS `Vehicle.Driver.DistractionLevel` (percent): progress of the most advanced distraction
    /// rule towards its highest level (100 = reached).
    pub distraction_level: f32,
    /// VSS `Vehicle.Driver.FatigueLevel` (percent): progress of the most advanced fatigue measure
    /// (eyes-closed time towards sleep, PERCLOS and yawn count towards drowsiness).
    pub fatigue_level: f32,
    /// VSS `Vehicle.Driver.IsHandsOnWheel`.
    pub is_hands_on_wheel: Option<bool>,
    pub phone_in_use: Option<bool>,
    pub eyes_closed: Option<bool>,
    pub face_visible: Option<bool>,
    pub yawning: Option<bool>,
    pub seat_belt: Option<bool>,
    pub passenger_present: Option<bool>,
    /// Share of eyes-closed time in the PERCLOS window (0..=1), once the window is covered.
    pub perclos: Option<f32>,
    /// Confirmed yawns in the yawn window.
    pub yawns_in_window: u32,
    /// Eyes-off-road time counted by the short-distraction (VATS) rule in its window.
    #[serde(serialize_with = "crate::seconds::serialize")]
    pub short_distraction_time: Duration,
}

impl Default for DriverState {
    /// The state before the first observation: monitoring `Starting`, everything unknown.
    fn default() -> Self {
        DriverState {
            timestamp: None,
            monitoring: MonitoringState::Starting,
            is_eyes_on_road: None,
            attentive_probability: 0.0,
            distraction_level: 0.0,
            fatigue_level: 0.0,
            is_hands_on_wheel: None,
            phone_in_use: None,
            eyes_closed: None,
            face_visible: None,
            yawning: None,
            seat_belt: None,
            passenger_present: None,
            perclos: None,
            yawns_in_window: 0,
            short_distraction_time: Duration::ZERO,
        }
    }
}
