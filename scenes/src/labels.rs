//! Per-frame ground truth (ARCHITECTURE.md contract 2) and the one-sentence description.
//!
//! The string forms of these values are the probe answers the default model is trained on, so they
//! are spelled exactly as the contract spells them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eyes {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Gaze {
    #[serde(rename = "road")]
    Road,
    #[serde(rename = "left mirror")]
    LeftMirror,
    #[serde(rename = "right mirror")]
    RightMirror,
    #[serde(rename = "down")]
    Down,
    #[serde(rename = "console")]
    Console,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phone {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "in hand")]
    InHand,
    #[serde(rename = "at ear")]
    AtEar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Face {
    Visible,
    Occluded,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lighting {
    /// Daylight, colour camera.
    Day,
    /// Night, near-infrared camera with its own illuminator: a monochrome picture.
    Night,
}

impl Gaze {
    pub const ALL: [Gaze; 5] = [
        Gaze::Road,
        Gaze::LeftMirror,
        Gaze::RightMirror,
        Gaze::Down,
        Gaze::Console,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gaze::Road => "road",
            Gaze::LeftMirror => "left mirror",
            Gaze::RightMirror => "right mirror",
            Gaze::Down => "down",
            Gaze::Console => "console",
        }
    }
}

impl Eyes {
    pub fn as_str(self) -> &'static str {
        match self {
            Eyes::Open => "open",
            Eyes::Closed => "closed",
        }
    }
}

impl Phone {
    pub fn as_str(self) -> &'static str {
        match self {
            Phone::None => "none",
            Phone::InHand => "in hand",
            Phone::AtEar => "at ear",
        }
    }
}

impl Face {
    pub fn as_str(self) -> &'static str {
        match self {
            Face::Visible => "visible",
            Face::Occluded => "occluded",
            Face::Absent => "absent",
        }
    }
}

/// What one frame shows. Invariants (enforced by [`SceneLabels::normalised`]):
/// - a face that is not visible (occluded or absent) carries the fixed values `eyes = open`,
///   `gaze = down`, `yawning = false`, `sunglasses = false`, `phone = none` — nothing of the face
///   is drawn, and "down" keeps a hidden face from ever reading as eyes-on-road;
/// - an absent driver has no hands on the wheel and no belt;
/// - a hand holding a phone or covering the face is not on the wheel (at most 2 hands in all);
/// - in daylight sunglasses are opaque, so eyes behind them are drawn (and labelled) open; the
///   near-infrared camera sees through them, so at night they may be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SceneLabels {
    pub eyes: Eyes,
    pub gaze: Gaze,
    pub yawning: bool,
    pub phone: Phone,
    pub hands_on_wheel: u8,
    pub seat_belt: bool,
    pub sunglasses: bool,
    pub face: Face,
    pub passenger: bool,
    pub lighting: Lighting,
}

impl SceneLabels {
    /// An attentive, belted driver alone in daylight.
    pub fn attentive() -> Self {
        SceneLabels {
            eyes: Eyes::Open,
            gaze: Gaze::Road,
            yawning: false,
            phone: Phone::None,
            hands_on_wheel: 2,
            seat_belt: true,
            sunglasses: false,
            face: Face::Visible,
            passenger: false,
            lighting: Lighting::Day,
        }
    }

    /// Hands that are busy with something other than the wheel.
    pub fn busy_hands(&self) -> u8 {
        u8::from(self.phone != Phone::None) + u8::from(self.face == Face::Occluded)
    }

    /// The labels made consistent with what can be drawn (see the type's invariants).
    pub fn normalised(mut self) -> Self {
        if self.face != Face::Visible {
            self.eyes = Eyes::Open;
            self.gaze = Gaze::Down;
            self.yawning = false;
            self.sunglasses = false;
            self.phone = Phone::None;
        }
        if self.face == Face::Absent {
            self.hands_on_wheel = 0;
            self.seat_belt = false;
        }
        if self.sunglasses && self.lighting == Lighting::Day {
            self.eyes = Eyes::Open;
        }
        self.hands_on_wheel = self.hands_on_wheel.min(2 - self.busy_hands());
        self
    }

    /// The answer to a default probe (ARCHITECTURE.md probe ids), exactly as the model must say it.
    pub fn probe_answer(&self, probe: &str) -> Option<&'static str> {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        Some(match probe {
            "eyes" => self.eyes.as_str(),
            "gaze" => self.gaze.as_str(),
            "phone" => self.phone.as_str(),
            "yawn" => yes_no(self.yawning),
            "hands" => ["none", "one", "two"][usize::from(self.hands_on_wheel.min(2))],
            "belt" => yes_no(self.seat_belt),
            "face" => self.face.as_str(),
            "passenger" => yes_no(self.passenger),
            _ => return None,
        })
    }

    /// One sentence saying what the frame shows. The renderer is its single source of truth; the
    /// forge trains the model to write exactly this and parses it back to score attributes.
    pub fn description(&self) -> String {
        let hands = ["no hands", "one hand", "both hands"][usize::from(self.hands_on_wheel.min(2))];
        let belt = if self.seat_belt { "belted" } else { "unbelted" };
        let passenger = if self.passenger {
            "a passenger"
        } else {
            "no passenger"
        };
        match self.face {
            Face::Absent => format!("The driver's seat is empty, with {passenger}."),
            Face::Occluded => format!(
                "The driver's face is hidden, with {hands} on the wheel, {belt}, and {passenger}."
            ),
            Face::Visible => {
                let mut s = String::from("The driver looks ");
                s.push_str(match self.gaze {
                    Gaze::Road => "at the road",
                    Gaze::LeftMirror => "at the left mirror",
                    Gaze::RightMirror => "at the right mirror",
                    Gaze::Down => "down",
                    Gaze::Console => "at the console",
                });
                if self.eyes == Eyes::Closed {
                    s.push_str(" with eyes closed");
                }
                if self.yawning {
                    s.push_str(", yawning");
                }
                if self.sunglasses {
                    s.push_str(", in sunglasses");
                }
                match self.phone {
                    Phone::None => {}
                    Phone::InHand => s.push_str(", holding a phone"),
                    Phone::AtEar => s.push_str(", phone at the ear"),
                }
                s.push_str(&format!(
                    ", with {hands} on the wheel, {belt}, and {passenger}."
                ));
                s
            }
        }
    }
}

/// One line of `labels.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub image: String,
    pub seed: u64,
    pub index: u64,
    #[serde(flatten)]
    pub labels: SceneLabels,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spells_the_contract_values() {
        let mut l = SceneLabels::attentive();
        l.gaze = Gaze::LeftMirror;
        l.phone = Phone::InHand;
        let rec = LabelRecord {
            image: "images/000000.png".into(),
            seed: 7,
            index: 0,
            labels: l.normalised(),
            description: l.normalised().description(),
        };
        let json = serde_json::to_string(&rec).unwrap();
        for needle in [
            r#""gaze":"left mirror""#,
            r#""phone":"in hand""#,
            r#""hands_on_wheel":1"#,
            r#""eyes":"open""#,
            r#""face":"visible""#,
            r#""lighting":"day""#,
            r#""seed":7"#,
        ] {
            assert!(json.contains(needle), "{needle} missing in {json}");
        }
        let back: LabelRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn normalising_enforces_what_can_be_drawn() {
        let mut l = SceneLabels::attentive();
        l.face = Face::Absent;
        l.eyes = Eyes::Closed;
        l.phone = Phone::AtEar;
        let n = l.normalised();
        assert_eq!(
            (n.eyes, n.gaze, n.phone, n.hands_on_wheel, n.seat_belt),
            (Eyes::Open, Gaze::Down, Phone::None, 0, false)
        );
        let mut l = SceneLabels::attentive();
        l.sunglasses = true;
        l.eyes = Eyes::Closed;
        assert_eq!(l.normalised().eyes, Eyes::Open);
        l.lighting = Lighting::Night;
        assert_eq!(l.normalised().eyes, Eyes::Closed);
    }

    #[test]
    fn description_names_every_attribute() {
        let mut l = SceneLabels::attentive();
        assert_eq!(
            l.description(),
            "The driver looks at the road, with both hands on the wheel, belted, and no passenger."
        );
        l.eyes = Eyes::Closed;
        l.yawning = true;
        l.phone = Phone::AtEar;
        l.hands_on_wheel = 1;
        l.passenger = true;
        l.seat_belt = false;
        assert_eq!(
            l.description(),
            "The driver looks at the road with eyes closed, yawning, phone at the ear, with one hand on the wheel, unbelted, and a passenger."
        );
        assert_eq!(l.probe_answer("hands"), Some("one"));
        assert_eq!(l.probe_answer("belt"), Some("no"));
        assert_eq!(l.probe_answer("nonsense"), None);
    }
}
