//! From landmarks to driver signals: eye openness per eye (eye aspect ratio of the iris model's
//! eyelid contour), head pose (yaw/pitch/roll of a face frame built from the 3-D mesh), gaze
//! (head pose plus the iris's offset in the eye), and the probability that the gaze falls inside
//! the road cone around the driver's calibrated neutral gaze.
//!
//! Angles are degrees in the camera image's frame: yaw > 0 toward the image's right, pitch > 0 up,
//! roll > 0 clockwise on screen.

use serde::Deserialize;

use crate::geometry::Point3;

/// Face-mesh indices (MediaPipe's 468-point topology) the signals use.
pub mod mesh {
    /// Outer corner of the eye on the image's left.
    pub const LEFT_EYE_OUTER: usize = 33;
    pub const LEFT_EYE_INNER: usize = 133;
    /// Outer corner of the eye on the image's right.
    pub const RIGHT_EYE_OUTER: usize = 263;
    pub const RIGHT_EYE_INNER: usize = 362;
    pub const FOREHEAD: usize = 10;
    pub const CHIN: usize = 152;
    pub const POINTS: usize = 468;
}

/// The iris model's eye: 71 contour points (0..=8 lower lid from corner to corner, 9..=15 upper lid
/// without the corners, then the halo) and 5 iris points (centre first).
pub const EYE_CONTOUR_POINTS: usize = 71;
pub const IRIS_POINTS: usize = 5;

/// Tunables of the signals (daemon config `[face.signals]`); the defaults suit a driver-facing
/// camera about 0.5-1 m from the face.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    /// Eye aspect ratio at which an eye is as likely closed as open.
    pub ear_closed: f32,
    /// Width of the transition (logistic scale) around `ear_closed`.
    pub ear_softness: f32,
    /// Eyeball radius as a fraction of the eye's corner-to-corner width (iris offset -> angle).
    pub eyeball_radius: f32,
    /// Road cone half-widths around the neutral gaze, degrees.
    pub road_yaw_deg: f32,
    pub road_pitch_deg: f32,
    /// Soft edge of the cone (logistic scale), degrees.
    pub road_softness_deg: f32,
    /// Neutral gaze before calibration (where the road is as seen from the camera), degrees.
    pub neutral_yaw_deg: f32,
    pub neutral_pitch_deg: f32,
    pub calibration: CalibrationConfig,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            ear_closed: 0.15,
            ear_softness: 0.025,
            eyeball_radius: 0.45,
            road_yaw_deg: 20.0,
            road_pitch_deg: 12.0,
            road_softness_deg: 3.0,
            neutral_yaw_deg: 0.0,
            neutral_pitch_deg: 0.0,
            calibration: CalibrationConfig::default(),
        }
    }
}

/// Per-driver calibration of the neutral gaze: learned from frames of attentive driving (face
/// seen, eyes open, gaze within `accept_deg` of the current neutral, speed at least
/// `min_speed_kmh` where a speed is known), reset when no face has been seen for `reset_after_s`
/// (the driver may have changed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationConfig {
    pub enabled: bool,
    pub min_speed_kmh: f32,
    /// Frames needed before the learned neutral replaces the configured one.
    pub min_samples: u32,
    /// Learning time constant, in accepted frames.
    pub samples: u32,
    pub accept_deg: f32,
    pub reset_after_s: f32,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_speed_kmh: 20.0,
            min_samples: 60,
            samples: 600,
            accept_deg: 25.0,
            reset_after_s: 5.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeadPose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gaze {
    pub yaw: f32,
    pub pitch: f32,
}

/// One eye's signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eye {
    pub aspect_ratio: f32,
    /// Probability that the eye is open.
    pub openness: f32,
    /// Eye-in-head rotation from the iris offset.
    pub gaze: Gaze,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn px(p: &Point3, image: (u32, u32)) -> [f32; 3] {
    [
        p[0] * image.0 as f32,
        p[1] * image.1 as f32,
        p[2] * image.0 as f32,
    ]
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f32; 3]) -> Option<[f32; 3]> {
    let n = dot(a, a).sqrt();
    (n > 1e-6).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// The eye from the iris model's contour and iris points (normalised to the frame).
pub fn eye(
    contour: &[Point3],
    iris: &[Point3],
    image: (u32, u32),
    cfg: &SignalConfig,
) -> Option<Eye> {
    if contour.len() < 16 || iris.is_empty() {
        return None;
    }
    let p = |i: usize| {
        let q = px(&contour[i], image);
        [q[0], q[1], 0.0]
    };
    let (mut a, mut b) = (p(0), p(8));
    if a[0] > b[0] {
        std::mem::swap(&mut a, &mut b);
    }
    let width = dot(sub(b, a), sub(b, a)).sqrt();
    if width < 1e-3 {
        return None;
    }
    // Upper-lid point 9 + j sits above lower-lid point 1 + j; the middle five pairs.
    let opening: f32 = (1..6)
        .map(|j| {
            let d = sub(p(9 + j), p(1 + j));
            dot(d, d).sqrt()
        })
        .sum::<f32>()
        / 5.0;
    let aspect_ratio = opening / width;
    let openness = sigmoid((aspect_ratio - cfg.ear_closed) / cfg.ear_softness);
    let axis = [(b[0] - a[0]) / width, (b[1] - a[1]) / width, 0.0];
    let down = [-axis[1], axis[0], 0.0];
    let centre = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0, 0.0];
    let iris_c = px(&iris[0], image);
    let off = sub([iris_c[0], iris_c[1], 0.0], centre);
    let r = cfg.eyeball_radius.max(1e-3);
    let h = (dot(off, axis) / width / r).clamp(-1.0, 1.0);
    let v = (dot(off, down) / width / r).clamp(-1.0, 1.0);
    Some(Eye {
        aspect_ratio,
        openness,
        gaze: Gaze {
            yaw: h.asin().to_degrees(),
            pitch: -v.asin().to_degrees(),
        },
    })
}

/// Head pose from the face mesh: the face's x axis runs from the outer corner of the image-left
/// eye to that of the image-right eye, its y axis from forehead to chin (made orthogonal), and the
/// face looks along minus their cross product.
pub fn head_pose(landmarks: &[Point3], image: (u32, u32)) -> Option<HeadPose> {
    if landmarks.len() < mesh::POINTS {
        return None;
    }
    let p = |i: usize| px(&landmarks[i], image);
    let ex = norm(sub(p(mesh::RIGHT_EYE_OUTER), p(mesh::LEFT_EYE_OUTER)))?;
    let down = sub(p(mesh::CHIN), p(mesh::FOREHEAD));
    let k = dot(down, ex);
    let ey = norm([
        down[0] - k * ex[0],
        down[1] - k * ex[1],
        down[2] - k * ex[2],
    ])?;
    let ez = cross(ex, ey);
    let f = [-ez[0], -ez[1], -ez[2]];
    Some(HeadPose {
        yaw: f[0].atan2(-f[2]).to_degrees(),
        pitch: (-f[1])
            .atan2((f[0] * f[0] + f[2] * f[2]).sqrt())
            .to_degrees(),
        roll: ex[1].atan2(ex[0]).to_degrees(),
    })
}

/// Learns the driver's neutral gaze (see [`CalibrationConfig`]).
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    neutral: Gaze,
    samples: u32,
    last_face: Option<f64>,
}

impl Calibration {
    /// The neutral gaze in use: the learned one once it has enough samples, else the configured.
    pub fn neutral(&self, cfg: &SignalConfig) -> (Gaze, bool) {
        if cfg.calibration.enabled && self.samples >= cfg.calibration.min_samples {
            (self.neutral, true)
        } else {
            (
                Gaze {
                    yaw: cfg.neutral_yaw_deg,
                    pitch: cfg.neutral_pitch_deg,
                },
                false,
            )
        }
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// A frame at `t` seconds: `gaze` when a face with open eyes was seen, `speed` when known.
    pub fn observe(
        &mut self,
        t: f64,
        face: bool,
        gaze: Option<Gaze>,
        eyes_open: bool,
        speed: Option<f32>,
        cfg: &SignalConfig,
    ) {
        let c = &cfg.calibration;
        if !face {
            if let Some(last) = self.last_face
                && t - last > c.reset_after_s as f64
                && self.samples > 0
            {
                log::info!("face calibration reset: no face for {:.1} s", t - last);
                *self = Self::default();
            }
            return;
        }
        self.last_face = Some(t);
        let (Some(g), true, true) = (gaze, eyes_open, c.enabled) else {
            return;
        };
        if speed.is_some_and(|s| s < c.min_speed_kmh) {
            return;
        }
        // Accept frames near what is known so far: the learned neutral once learning started,
        // else the configured one.
        let centre = if self.samples == 0 {
            Gaze {
                yaw: cfg.neutral_yaw_deg,
                pitch: cfg.neutral_pitch_deg,
            }
        } else {
            self.neutral
        };
        if (g.yaw - centre.yaw).abs() > c.accept_deg
            || (g.pitch - centre.pitch).abs() > c.accept_deg
        {
            return;
        }
        if self.samples == 0 {
            self.neutral = g;
        } else {
            let w = 1.0 / (self.samples.min(c.samples.max(1)) as f32 + 1.0);
            self.neutral.yaw += (g.yaw - self.neutral.yaw) * w;
            self.neutral.pitch += (g.pitch - self.neutral.pitch) * w;
        }
        self.samples = self.samples.saturating_add(1);
    }
}

/// Probability that `gaze` falls inside the road cone around `neutral`.
pub fn on_road(gaze: Gaze, neutral: Gaze, cfg: &SignalConfig) -> f32 {
    let s = cfg.road_softness_deg.max(1e-3);
    let dy = (gaze.yaw - neutral.yaw).abs();
    let dp = (gaze.pitch - neutral.pitch).abs();
    sigmoid((cfg.road_yaw_deg - dy) / s) * sigmoid((cfg.road_pitch_deg - dp) / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat frontal "mesh": only the points head_pose reads are placed.
    fn mesh_with(yaw_deg: f32) -> Vec<Point3> {
        let mut m = vec![[0.5, 0.5, 0.0]; mesh::POINTS];
        let (s, c) = yaw_deg.to_radians().sin_cos();
        // eye corners 0.2 apart in x; turning the head rotates them about the vertical axis
        m[mesh::LEFT_EYE_OUTER] = [0.5 - 0.1 * c, 0.45, 0.1 * s];
        m[mesh::RIGHT_EYE_OUTER] = [0.5 + 0.1 * c, 0.45, -0.1 * s];
        m[mesh::FOREHEAD] = [0.5, 0.3, 0.0];
        m[mesh::CHIN] = [0.5, 0.7, 0.0];
        m
    }

    #[test]
    fn a_frontal_face_has_zero_pose_and_a_turned_one_has_yaw() {
        let p = head_pose(&mesh_with(0.0), (100, 100)).unwrap();
        assert!(
            p.yaw.abs() < 1e-3 && p.pitch.abs() < 1e-3 && p.roll.abs() < 1e-3,
            "{p:?}"
        );
        let t = head_pose(&mesh_with(30.0), (100, 100)).unwrap();
        assert!((t.yaw.abs() - 30.0).abs() < 0.5, "{t:?}");
    }

    fn eye_points(opening: f32, iris_dx: f32) -> (Vec<Point3>, Vec<Point3>) {
        let mut c = vec![[0.0; 3]; EYE_CONTOUR_POINTS];
        for (i, p) in c.iter_mut().take(9).enumerate() {
            let x = 0.4 + 0.2 * i as f32 / 8.0;
            let lid = if i == 0 || i == 8 { 0.0 } else { opening / 2.0 };
            *p = [x, 0.5 + lid, 0.0];
        }
        for j in 0..7 {
            let x = 0.4 + 0.2 * (j + 1) as f32 / 8.0;
            c[9 + j] = [x, 0.5 - opening / 2.0, 0.0];
        }
        (c, vec![[0.5 + iris_dx, 0.5, 0.0]; IRIS_POINTS])
    }

    #[test]
    fn open_eyes_score_above_closed_ones_and_the_iris_offset_turns_the_gaze() {
        let cfg = SignalConfig::default();
        let (c, i) = eye_points(0.06, 0.0);
        let open = eye(&c, &i, (100, 100), &cfg).unwrap();
        let (c, i) = eye_points(0.005, 0.0);
        let closed = eye(&c, &i, (100, 100), &cfg).unwrap();
        assert!(
            open.openness > 0.9 && closed.openness < 0.1,
            "{open:?} {closed:?}"
        );
        let (c, i) = eye_points(0.06, 0.03);
        let right = eye(&c, &i, (100, 100), &cfg).unwrap();
        assert!(right.gaze.yaw > 10.0, "{right:?}");
        assert!(open.gaze.yaw.abs() < 1e-3);
    }

    #[test]
    fn the_road_cone_is_soft_and_centred_on_the_neutral_gaze() {
        let cfg = SignalConfig::default();
        let n = Gaze {
            yaw: 5.0,
            pitch: -3.0,
        };
        assert!(on_road(n, n, &cfg) > 0.95);
        assert!(
            on_road(
                Gaze {
                    yaw: 45.0,
                    pitch: -3.0
                },
                n,
                &cfg
            ) < 0.01
        );
        assert!(
            on_road(
                Gaze {
                    yaw: 5.0,
                    pitch: -30.0
                },
                n,
                &cfg
            ) < 0.01
        );
        let edge = on_road(
            Gaze {
                yaw: 25.0,
                pitch: -3.0,
            },
            n,
            &cfg,
        );
        assert!((edge - 0.5).abs() < 0.05, "{edge}");
    }

    #[test]
    fn calibration_learns_while_attentive_and_resets_when_the_face_is_gone() {
        let cfg = SignalConfig::default();
        let mut cal = Calibration::default();
        let g = Gaze {
            yaw: 8.0,
            pitch: -6.0,
        };
        for i in 0..100 {
            cal.observe(i as f64 * 0.1, true, Some(g), true, Some(50.0), &cfg);
        }
        let (n, learned) = cal.neutral(&cfg);
        assert!(learned && (n.yaw - 8.0).abs() < 1e-3 && (n.pitch + 6.0).abs() < 1e-3);
        // slow driving and glances outside the accept cone do not teach it
        cal.observe(
            10.1,
            true,
            Some(Gaze {
                yaw: 60.0,
                pitch: 0.0,
            }),
            true,
            Some(50.0),
            &cfg,
        );
        cal.observe(
            10.2,
            true,
            Some(Gaze {
                yaw: 0.0,
                pitch: 0.0,
            }),
            true,
            Some(5.0),
            &cfg,
        );
        assert_eq!(cal.samples(), 100);
        cal.observe(12.0, false, None, false, None, &cfg);
        assert_eq!(cal.samples(), 100);
        cal.observe(16.0, false, None, false, None, &cfg);
        assert_eq!(cal.samples(), 0);
        assert!(!cal.neutral(&cfg).1);
    }
}
