//! What the policies consume: one timestamped observation per processed frame.
//!
//! The probe answers of ARCHITECTURE.md ("Default probe set") arrive as the probability that each
//! field is true. A field the daemon did not ask about (or could not answer) is `None`; an
//! observation the daemon could not produce at all (no frame, inference failed) is
//! [`Validity::Invalid`] with a reason, so that lost sensing is visible to the rules instead of
//! silently looking like an attentive driver.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The observation fields, one per probe of the default probe set (ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    EyesClosed,
    EyesOnRoad,
    PhoneInUse,
    Yawning,
    HandsOnWheel,
    SeatBelt,
    FaceVisible,
    PassengerPresent,
}

impl Field {
    /// Every field, in a fixed order (used for iteration and stable output).
    pub const ALL: [Field; 8] = [
        Field::EyesClosed,
        Field::EyesOnRoad,
        Field::PhoneInUse,
        Field::Yawning,
        Field::HandsOnWheel,
        Field::SeatBelt,
        Field::FaceVisible,
        Field::PassengerPresent,
    ];

    /// The field's name in the probe contract, the rules file and the JSONL schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::EyesClosed => "eyes_closed",
            Field::EyesOnRoad => "eyes_on_road",
            Field::PhoneInUse => "phone_in_use",
            Field::Yawning => "yawning",
            Field::HandsOnWheel => "hands_on_wheel",
            Field::SeatBelt => "seat_belt",
            Field::FaceVisible => "face_visible",
            Field::PassengerPresent => "passenger_present",
        }
    }

    /// The field with this name (the probe contract's `field`), if it is one.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Whether the field is read from the driver's face; such fields are unknown while the face
    /// is not visible, whatever the probe answered.
    pub fn needs_face(self) -> bool {
        matches!(self, Field::EyesClosed | Field::EyesOnRoad | Field::Yawning)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The probability (0..=1) that each field is true; `None` where the field was not observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eyes_closed: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eyes_on_road: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_in_use: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yawning: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hands_on_wheel: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_belt: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_visible: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passenger_present: Option<f32>,
}

impl Probabilities {
    pub fn get(&self, field: Field) -> Option<f32> {
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

    pub fn set(&mut self, field: Field, probability: Option<f32>) {
        let slot = match field {
            Field::EyesClosed => &mut self.eyes_closed,
            Field::EyesOnRoad => &mut self.eyes_on_road,
            Field::PhoneInUse => &mut self.phone_in_use,
            Field::Yawning => &mut self.yawning,
            Field::HandsOnWheel => &mut self.hands_on_wheel,
            Field::SeatBelt => &mut self.seat_belt,
            Field::FaceVisible => &mut self.face_visible,
            Field::PassengerPresent => &mut self.passenger_present,
        };
        *slot = probability;
    }

    /// Builder-style [`Probabilities::set`].
    pub fn with(mut self, field: Field, probability: f32) -> Self {
        self.set(field, Some(probability));
        self
    }
}

/// Whether the daemon could observe the driver at all for this frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validity {
    Valid,
    /// No usable observation, e.g. "no frame for 500 ms", "inference failed: ...".
    Invalid {
        reason: String,
    },
}

/// One observation: the probe answers for one processed frame.
///
/// `timestamp` is the frame's time on a monotonic clock (CLOCK_MONOTONIC or the camera's buffer
/// timestamps) measured from an arbitrary origin that stays fixed for the engine's lifetime. The
/// engine never reads a clock itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub timestamp: Duration,
    pub validity: Validity,
    pub probabilities: Probabilities,
    /// Vehicle speed in km/h, when the daemon has a speed source; `None` disables speed gating
    /// for this observation (the gated rules stay armed).
    pub vehicle_speed_kmh: Option<f32>,
}

impl Observation {
    /// A valid observation with the given probe answers and no speed.
    pub fn valid(timestamp: Duration, probabilities: Probabilities) -> Self {
        Self {
            timestamp,
            validity: Validity::Valid,
            probabilities,
            vehicle_speed_kmh: None,
        }
    }

    /// An observation saying that nothing could be observed at `timestamp`. The daemon sends these
    /// when frames stop arriving or inference fails, so that "monitoring unavailable" is timed.
    pub fn invalid(timestamp: Duration, reason: impl Into<String>) -> Self {
        Self {
            timestamp,
            validity: Validity::Invalid {
                reason: reason.into(),
            },
            probabilities: Probabilities::default(),
            vehicle_speed_kmh: None,
        }
    }

    pub fn with_speed(mut self, kmh: f32) -> Self {
        self.vehicle_speed_kmh = Some(kmh);
        self
    }

    pub fn is_valid(&self) -> bool {
        matches!(self.validity, Validity::Valid)
    }
}

/// The JSONL form of an observation (one JSON object per line), used by the replay tool and for
/// recordings. Schema:
///
/// ```json
/// {"t": 12.5, "eyes_on_road": 0.97, "eyes_closed": 0.02, "face_visible": 0.99, "speed_kmh": 48.0}
/// {"t": 12.6, "invalid": "no frame for 500 ms"}
/// ```
///
/// `t` is seconds (a finite number >= 0) on the monotonic clock; each field of [`Field`] is an
/// optional probability in 0..=1; `speed_kmh` is optional; `invalid` (a reason) marks an invalid
/// observation, whose probabilities must then be absent. Unknown keys are rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObservationRecord {
    t: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invalid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    speed_kmh: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eyes_closed: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eyes_on_road: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone_in_use: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    yawning: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hands_on_wheel: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seat_belt: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    face_visible: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    passenger_present: Option<f32>,
}

/// Why a JSONL observation line was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ObservationError {
    #[error("line {line}: {message}")]
    Json { line: usize, message: String },
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("reading observations: {0}")]
    Io(#[from] std::io::Error),
}

impl Observation {
    /// Parses one JSONL line (see the schema on [`Observation::to_json_line`]). `line` is only
    /// used in the error.
    pub fn from_json_line(text: &str, line: usize) -> Result<Self, ObservationError> {
        let record: ObservationRecord =
            serde_json::from_str(text).map_err(|e| ObservationError::Json {
                line,
                message: e.to_string(),
            })?;
        let invalid = |message: String| ObservationError::Invalid { line, message };
        if !record.t.is_finite() || record.t < 0.0 || record.t > 1e12 {
            return Err(invalid(format!(
                "`t` must be seconds >= 0, got {}",
                record.t
            )));
        }
        let probabilities = Probabilities {
            eyes_closed: record.eyes_closed,
            eyes_on_road: record.eyes_on_road,
            phone_in_use: record.phone_in_use,
            yawning: record.yawning,
            hands_on_wheel: record.hands_on_wheel,
            seat_belt: record.seat_belt,
            face_visible: record.face_visible,
            passenger_present: record.passenger_present,
        };
        for field in Field::ALL {
            if let Some(p) = probabilities.get(field)
                && !(0.0..=1.0).contains(&p)
            {
                return Err(invalid(format!(
                    "`{field}` must be a probability in 0..=1, got {p}"
                )));
            }
        }
        if let Some(speed) = record.speed_kmh
            && !(speed.is_finite() && speed >= 0.0)
        {
            return Err(invalid(format!("`speed_kmh` must be >= 0, got {speed}")));
        }
        let validity = match record.invalid {
            None => Validity::Valid,
            Some(reason) => {
                if Field::ALL.iter().any(|f| probabilities.get(*f).is_some()) {
                    return Err(invalid(
                        "an `invalid` observation carries no probabilities".into(),
                    ));
                }
                Validity::Invalid { reason }
            }
        };
        Ok(Observation {
            timestamp: Duration::from_secs_f64(record.t),
            validity,
            probabilities,
            vehicle_speed_kmh: record.speed_kmh,
        })
    }

    /// The observation as one JSONL line: `{"t": seconds, "<field>": probability, ...,
    /// "speed_kmh": km/h, "invalid": "reason"}` (absent keys are omitted).
    pub fn to_json_line(&self) -> String {
        let p = &self.probabilities;
        let record = ObservationRecord {
            t: self.timestamp.as_secs_f64(),
            invalid: match &self.validity {
                Validity::Valid => None,
                Validity::Invalid { reason } => Some(reason.clone()),
            },
            speed_kmh: self.vehicle_speed_kmh,
            eyes_closed: p.eyes_closed,
            eyes_on_road: p.eyes_on_road,
            phone_in_use: p.phone_in_use,
            yawning: p.yawning,
            hands_on_wheel: p.hands_on_wheel,
            seat_belt: p.seat_belt,
            face_visible: p.face_visible,
            passenger_present: p.passenger_present,
        };
        // Serialising a struct of numbers and strings cannot fail.
        serde_json::to_string(&record).unwrap_or_default()
    }
}

/// Reads a JSONL observation stream; blank lines and lines starting with `#` are skipped.
pub fn read_observations_jsonl(
    reader: impl std::io::BufRead,
) -> Result<Vec<Observation>, ObservationError> {
    let mut observations = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        observations.push(Observation::from_json_line(trimmed, index + 1)?);
    }
    Ok(observations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_round_trips() {
        let obs = Observation::valid(
            Duration::from_millis(12_500),
            Probabilities::default()
                .with(Field::EyesOnRoad, 0.25)
                .with(Field::FaceVisible, 1.0),
        )
        .with_speed(48.0);
        let back = Observation::from_json_line(&obs.to_json_line(), 1).unwrap();
        assert_eq!(back, obs);
        let invalid = Observation::invalid(Duration::from_secs(3), "no frame");
        assert_eq!(
            Observation::from_json_line(&invalid.to_json_line(), 1).unwrap(),
            invalid
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        let err = Observation::from_json_line(r#"{"t": 1, "eyes_shut": 0.5}"#, 7).unwrap_err();
        assert!(err.to_string().starts_with("line 7:"), "{err}");
        assert!(err.to_string().contains("eyes_shut"), "{err}");
        let err = Observation::from_json_line(r#"{"t": 1, "eyes_closed": 1.5}"#, 3).unwrap_err();
        assert!(err.to_string().contains("eyes_closed"), "{err}");
        let err = Observation::from_json_line(r#"{"t": -1}"#, 2).unwrap_err();
        assert!(err.to_string().contains("`t`"), "{err}");
        let err = Observation::from_json_line(r#"{"t": 1, "invalid": "x", "yawning": 0.1}"#, 2)
            .unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn reader_skips_comments_and_blank_lines() {
        let text = "# recorded run\n\n{\"t\": 0.0, \"eyes_on_road\": 1.0}\n{\"t\": 0.1, \"invalid\": \"no frame\"}\n";
        let obs = read_observations_jsonl(text.as_bytes()).unwrap();
        assert_eq!(obs.len(), 2);
        assert!(obs[0].is_valid());
        assert!(!obs[1].is_valid());
    }
}
