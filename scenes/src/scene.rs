//! A cabin scene: labels + appearance + pose, and how it is drawn.
//!
//! Geometry is in scene units (the unit square; x to the right of the image, y down). The camera
//! faces the driver of a left-hand-drive car, so the driver's left (door side, left mirror) is the
//! image's right, and the passenger, the centre console and the right mirror are on the image's left.

use super::appearance::{Appearance, HairStyle, Occluder, Person, Variation};
use super::canvas::{Canvas, Paint, Rgb, Shape, View};
use super::labels::{Eyes, Face, Gaze, Lighting, Phone, SceneLabels};
use super::rng::Rng;
use autoneural_camera::PixelFormat;

/// Continuous pose behind the labels: where the head points and how open eyes and mouth are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// Head turn, -1 (towards the image's left) .. +1 (towards the image's right).
    pub yaw: f32,
    /// Head pitch, 0 level .. 1 looking down into the lap.
    pub pitch: f32,
    /// Pupils relative to the eye centre, -1..1 each way.
    pub eye_dx: f32,
    pub eye_dy: f32,
    /// Mouth opening 0..1 (a yawn is > 0.6).
    pub mouth: f32,
}

impl Pose {
    /// The pose that shows `gaze`, with `wobble` in -1..1 choosing a point inside the gaze's range.
    pub fn for_labels(labels: &SceneLabels, wobble: [f32; 4]) -> Self {
        let w = |i: usize, amount: f32| wobble[i] * amount;
        let (yaw, pitch, eye_dx, eye_dy) = match labels.gaze {
            Gaze::Road => (w(0, 0.1), w(1, 0.08), w(2, 0.15), w(3, 0.1)),
            Gaze::LeftMirror => (
                0.85 + w(0, 0.12),
                0.05 + w(1, 0.05),
                0.8 + w(2, 0.15),
                w(3, 0.1),
            ),
            Gaze::RightMirror => (
                -0.9 + w(0, 0.1),
                0.05 + w(1, 0.05),
                -0.8 + w(2, 0.15),
                w(3, 0.1),
            ),
            Gaze::Down => (w(0, 0.12), 0.8 + w(1, 0.12), w(2, 0.2), 0.85 + w(3, 0.1)),
            Gaze::Console => (
                -0.45 + w(0, 0.08),
                0.55 + w(1, 0.1),
                -0.7 + w(2, 0.15),
                0.6 + w(3, 0.15),
            ),
        };
        let mouth = if labels.yawning {
            0.85 + w(1, 0.15)
        } else {
            0.1 + w(2, 0.1)
        };
        Pose {
            yaw,
            pitch,
            eye_dx,
            eye_dy,
            mouth,
        }
    }
}

/// One frame to draw.
#[derive(Debug, Clone)]
pub struct Scene {
    pub labels: SceneLabels,
    pub appearance: Appearance,
    pub pose: Pose,
}

/// A rendered frame: packed RGB8 in daylight, 8-bit grey at night (the near-infrared camera).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneImage {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
}

impl SceneImage {
    /// Packed RGB8; grey frames are replicated to three channels (what the model's input wants).
    pub fn to_rgb(&self) -> Vec<u8> {
        match self.format {
            PixelFormat::Grey => self.data.iter().flat_map(|&g| [g, g, g]).collect(),
            _ => self.data.clone(),
        }
    }
}

/// Parts of the picture, recorded while drawing so tests can check pixels against labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Sclera,
    Pupil,
    ClosedLid,
    Sunglasses,
    YawningMouth,
    Phone,
    HandOnWheel,
    BeltAcrossChest,
    DriverHead,
    Occluder,
    PassengerHead,
}

impl Scene {
    /// Item `index` of the data set with seed `seed`: labels drawn so that every probe answer is
    /// common, and an appearance from `variation`.
    pub fn sample(seed: u64, index: u64, variation: Variation) -> Self {
        let mut rng = Rng::for_item(seed, index, variation as u64);
        let labels = sample_labels(&mut rng);
        let appearance = Appearance::sample(&mut rng, variation);
        let wobble = [0; 4].map(|_| rng.range(-1.0, 1.0));
        Scene {
            pose: Pose::for_labels(&labels, wobble),
            labels,
            appearance,
        }
    }

    pub fn render(&self, width: u32, height: u32) -> SceneImage {
        self.render_traced(width, height, &mut Vec::new())
    }

    /// Renders and lists the parts drawn, in order.
    pub fn render_traced(&self, width: u32, height: u32, trace: &mut Vec<Part>) -> SceneImage {
        let (w, h) = (width.max(1) as usize, height.max(1) as usize);
        let a = &self.appearance;
        let view = View::fit(w, h, a.zoom, a.shift, a.camera_roll);
        let mut canvas = Canvas::new(w, h, view);
        let painter = Painter {
            labels: &self.labels,
            a,
            pose: &self.pose,
            lighting: self.labels.lighting,
        };
        painter.draw(&mut canvas, trace);
        painter.finish(&mut canvas);
        let mut noise = Rng::new(a.noise_seed);
        let (format, data) = match self.labels.lighting {
            Lighting::Day => (PixelFormat::Rgb24, canvas.to_rgb8(a.noise, &mut noise)),
            Lighting::Night => (
                PixelFormat::Grey,
                canvas.to_grey8(a.noise * 1.5, &mut noise),
            ),
        };
        SceneImage {
            width: w as u32,
            height: h as u32,
            format,
            data,
        }
    }
}

/// Labels for a training / evaluation sample: roughly balanced answers, independent attributes.
fn sample_labels(rng: &mut Rng) -> SceneLabels {
    let face = [Face::Visible, Face::Occluded, Face::Absent][rng.weighted(&[0.78, 0.11, 0.11])];
    let phone = [Phone::None, Phone::InHand, Phone::AtEar][rng.weighted(&[0.5, 0.25, 0.25])];
    let labels = SceneLabels {
        eyes: if rng.chance(0.4) {
            Eyes::Closed
        } else {
            Eyes::Open
        },
        gaze: Gaze::ALL[rng.below(5)],
        yawning: rng.chance(0.3),
        phone,
        hands_on_wheel: rng.below(3) as u8,
        seat_belt: rng.chance(0.6),
        sunglasses: rng.chance(0.2),
        face,
        passenger: rng.chance(0.45),
        lighting: if rng.chance(0.6) {
            Lighting::Day
        } else {
            Lighting::Night
        },
    };
    let mut labels = labels.normalised();
    // Clamping piles "hands" onto the top allowed value; redraw it within what is allowed instead.
    labels.hands_on_wheel = rng.below(usize::from(2 - labels.busy_hands()) + 1) as u8;
    if labels.face == Face::Absent {
        labels.hands_on_wheel = 0;
    }
    labels
}

const HEAD: (f32, f32) = (0.5, 0.36);
const HEAD_RADII: (f32, f32) = (0.135, 0.17);
const WHEEL: (f32, f32, f32, f32) = (0.5, 1.1, 0.46, 0.32);

struct Painter<'a> {
    labels: &'a SceneLabels,
    a: &'a Appearance,
    pose: &'a Pose,
    lighting: Lighting,
}

/// The driver's head geometry after placement and pose.
struct Head {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    roll: f32,
}

impl Head {
    /// A point given in head-relative units (x in rx, y in ry), rolled with the head.
    fn at(&self, u: f32, v: f32) -> (f32, f32) {
        let (x, y) = (u * self.rx, v * self.ry);
        let (s, c) = self.roll.sin_cos();
        (self.cx + x * c - y * s, self.cy + x * s + y * c)
    }
}

fn shade(c: Rgb, k: f32) -> Rgb {
    c.map(|v| (v * k).clamp(0.0, 1.0))
}

impl Painter<'_> {
    fn tone(&self, t: &super::appearance::Tone) -> Rgb {
        t.get(self.lighting)
    }

    fn draw(&self, c: &mut Canvas, trace: &mut Vec<Part>) {
        self.background(c);
        self.passenger_side(c, trace);
        self.driver_seat(c);
        let driver = self.labels.face != Face::Absent;
        if driver {
            self.torso(c, trace);
        } else {
            self.hanging_belt(c);
        }
        self.wheel(c, trace);
        if driver {
            let head = self.head_geometry();
            self.head(c, &head, trace);
            match self.labels.phone {
                Phone::None => {}
                Phone::InHand => self.phone_in_hand(c, trace),
                Phone::AtEar => self.phone_at_ear(c, &head, trace),
            }
            if self.labels.face == Face::Occluded {
                self.occluder(c, &head, trace);
            }
        }
    }

    fn background(&self, c: &mut Canvas) {
        let cabin = self.tone(&self.a.cabin);
        c.clear(Paint::Linear {
            p0: (0.5, 0.0),
            c0: shade(cabin, 1.15),
            p1: (0.5, 1.0),
            c1: shade(cabin, 0.7),
        });
        let (sky_top, sky_bottom) = match self.lighting {
            Lighting::Day => ([0.75, 0.85, 0.95], [0.92, 0.93, 0.9]),
            Lighting::Night => ([0.03; 3], [0.06; 3]),
        };
        // Rear window behind the seats and the driver's door window on the image's right.
        let sky = Paint::Linear {
            p0: (0.5, 0.0),
            c0: sky_top,
            p1: (0.5, 0.3),
            c1: sky_bottom,
        };
        c.fill(
            &Shape::Polygon(vec![(0.22, 0.04), (0.78, 0.04), (0.74, 0.2), (0.26, 0.2)]),
            sky,
            1.0,
        );
        c.fill(
            &Shape::Polygon(vec![(0.86, 0.0), (1.1, 0.0), (1.1, 0.42), (0.9, 0.36)]),
            sky,
            1.0,
        );
        // B-pillar with the belt's upper anchor.
        c.fill(
            &Shape::Polygon(vec![(0.8, 0.0), (0.86, 0.0), (0.92, 0.6), (0.86, 0.6)]),
            Paint::Solid(shade(cabin, 0.8)),
            1.0,
        );
    }

    fn passenger_side(&self, c: &mut Canvas, trace: &mut Vec<Part>) {
        let seat = self.tone(&self.a.seat);
        c.fill(
            &Shape::RoundRect {
                cx: 0.08,
                cy: 0.62,
                hw: 0.13,
                hh: 0.3,
                r: 0.05,
                angle: 0.05,
            },
            Paint::Solid(shade(seat, 0.9)),
            1.0,
        );
        c.fill(
            &Shape::RoundRect {
                cx: 0.09,
                cy: 0.27,
                hw: 0.07,
                hh: 0.05,
                r: 0.03,
                angle: 0.05,
            },
            Paint::Solid(seat),
            1.0,
        );
        if !self.labels.passenger {
            return;
        }
        let p = &self.a.passenger;
        let clothing = self.tone(&p.clothing);
        c.fill(
            &Shape::Polygon(vec![
                (-0.1, 1.0),
                (-0.07, 0.58),
                (0.02, 0.52),
                (0.18, 0.52),
                (0.24, 0.6),
                (0.26, 1.0),
            ]),
            Paint::Solid(clothing),
            1.0,
        );
        let skin = self.tone(&p.skin);
        c.fill(
            &Shape::Stroke {
                points: vec![(0.09, 0.4), (0.09, 0.53)],
                r: 0.03,
            },
            Paint::Solid(shade(skin, 0.85)),
            1.0,
        );
        let head = Head {
            cx: 0.09,
            cy: 0.36,
            rx: 0.07,
            ry: 0.09,
            roll: 0.05,
        };
        self.hair_back(c, &head, p);
        c.fill(
            &Shape::Ellipse {
                cx: 0.095,
                cy: 0.375,
                rx: 0.062,
                ry: 0.08,
                angle: 0.05,
            },
            Paint::Solid(skin),
            1.0,
        );
        self.hair_top(c, &head, p, 0.0);
        // The passenger looks ahead, a little towards the road: small eyes, no detail needed.
        for dx in [-0.024, 0.028] {
            c.fill(
                &Shape::Ellipse {
                    cx: 0.095 + dx,
                    cy: 0.36,
                    rx: 0.011,
                    ry: 0.006,
                    angle: 0.0,
                },
                Paint::Solid(shade(skin, 0.35)),
                1.0,
            );
        }
        c.fill(
            &Shape::Stroke {
                points: vec![(0.085, 0.42), (0.11, 0.42)],
                r: 0.004,
            },
            Paint::Solid(shade(skin, 0.5)),
            1.0,
        );
        trace.push(Part::PassengerHead);
    }

    fn driver_seat(&self, c: &mut Canvas) {
        let seat = self.tone(&self.a.seat);
        let (hx, hy) = (HEAD.0 + self.a.head_offset.0, HEAD.1 + self.a.head_offset.1);
        let paint = Paint::Linear {
            p0: (hx - 0.25, 0.5),
            c0: shade(seat, 1.1),
            p1: (hx + 0.25, 0.5),
            c1: shade(seat, 0.8),
        };
        c.fill(
            &Shape::RoundRect {
                cx: hx,
                cy: 0.78,
                hw: 0.3,
                hh: 0.36,
                r: 0.08,
                angle: 0.0,
            },
            paint,
            1.0,
        );
        c.fill(
            &Shape::RoundRect {
                cx: hx,
                cy: hy - 0.1,
                hw: 0.13,
                hh: 0.08,
                r: 0.05,
                angle: 0.0,
            },
            Paint::Solid(seat),
            1.0,
        );
    }

    fn hanging_belt(&self, c: &mut Canvas) {
        let belt = self.tone(&self.a.belt);
        c.fill(
            &Shape::Stroke {
                points: vec![(0.86, 0.3), (0.88, 0.62), (0.87, 0.95)],
                r: 0.018,
            },
            Paint::Solid(belt),
            1.0,
        );
    }

    fn torso(&self, c: &mut Canvas, trace: &mut Vec<Part>) {
        let p = &self.a.driver;
        let clothing = self.tone(&p.clothing);
        let skin = self.tone(&p.skin);
        let hx = HEAD.0 + self.a.head_offset.0;
        let s = self.a.head_scale;
        let top = 0.62 + self.a.head_offset.1 * 0.5;
        c.fill(
            &Shape::Stroke {
                points: vec![(hx, top - 0.12), (hx, top + 0.02)],
                r: 0.05 * s,
            },
            Paint::Solid(shade(skin, 0.85)),
            1.0,
        );
        let body = vec![
            (hx - 0.33 * s, 1.05),
            (hx - 0.3 * s, top + 0.06),
            (hx - 0.14 * s, top),
            (hx + 0.14 * s, top),
            (hx + 0.3 * s, top + 0.06),
            (hx + 0.33 * s, 1.05),
        ];
        let paint = Paint::Linear {
            p0: (hx, top),
            c0: clothing,
            p1: (hx, 1.0),
            c1: shade(clothing, 0.85),
        };
        c.fill(&Shape::Polygon(body), paint, 1.0);
        // Collar: a V of skin.
        c.fill(
            &Shape::Polygon(vec![
                (hx - 0.06 * s, top),
                (hx + 0.06 * s, top),
                (hx, top + 0.08),
            ]),
            Paint::Solid(shade(skin, 0.9)),
            1.0,
        );
        let belt = self.tone(&self.a.belt);
        if self.labels.seat_belt {
            let shoulder = (hx + 0.2 * s, top + 0.02);
            c.fill(
                &Shape::Stroke {
                    points: vec![(0.86, 0.3), shoulder, (hx - 0.26 * s, 1.02)],
                    r: 0.024,
                },
                Paint::Solid(belt),
                1.0,
            );
            c.fill(
                &Shape::Stroke {
                    points: vec![shoulder, (hx - 0.26 * s, 1.02)],
                    r: 0.006,
                },
                Paint::Solid(shade(belt, 1.4)),
                0.5,
            );
            trace.push(Part::BeltAcrossChest);
        } else {
            self.hanging_belt(c);
        }
    }

    fn wheel(&self, c: &mut Canvas, trace: &mut Vec<Part>) {
        let (cx, cy, rx, ry) = WHEEL;
        let cx = cx + self.a.head_offset.0 * 0.3;
        let wheel = self.tone(&self.a.wheel);
        let skin = self.tone(&self.a.driver.skin);
        let sleeve = self.tone(&self.a.driver.clothing);
        let hands = self.hands_on_wheel();
        // Forearms reach the rim from the body, behind it.
        for &side in &hands {
            let (x, y) = (cx + side * rx * 0.62, cy - ry * 0.78);
            c.fill(
                &Shape::Stroke {
                    points: vec![(x, y + 0.02), (x - side * 0.05, y + 0.2)],
                    r: 0.045,
                },
                Paint::Solid(shade(sleeve, 0.9)),
                1.0,
            );
        }
        let paint = Paint::Linear {
            p0: (cx, cy - ry),
            c0: shade(wheel, 1.6),
            p1: (cx, cy - ry + 0.06),
            c1: wheel,
        };
        c.fill(
            &Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                half_width: 0.032,
            },
            paint,
            1.0,
        );
        for &side in &hands {
            let (x, y) = (cx + side * rx * 0.62, cy - ry * 0.78);
            c.fill(
                &Shape::Ellipse {
                    cx: x,
                    cy: y,
                    rx: 0.055,
                    ry: 0.042,
                    angle: side * 0.5,
                },
                Paint::Solid(skin),
                1.0,
            );
            for k in 0..3 {
                let kx = x - side * 0.02 + side * k as f32 * 0.018;
                c.fill(
                    &Shape::Stroke {
                        points: vec![(kx, y - 0.02), (kx + side * 0.004, y + 0.02)],
                        r: 0.003,
                    },
                    Paint::Solid(shade(skin, 0.7)),
                    1.0,
                );
            }
            trace.push(Part::HandOnWheel);
        }
    }

    /// Sides (-1 image left, +1 image right) of the hands on the wheel.
    fn hands_on_wheel(&self) -> Vec<f32> {
        match self.labels.hands_on_wheel {
            0 => vec![],
            1 => {
                // The phone is held in the hand on the ear's side; the other one stays on the wheel.
                if self.labels.phone == Phone::AtEar {
                    vec![-self.a.ear_side]
                } else {
                    vec![self.a.wheel_hand]
                }
            }
            _ => vec![-1.0, 1.0],
        }
    }

    fn head_geometry(&self) -> Head {
        let s = self.a.head_scale;
        Head {
            cx: HEAD.0 + self.a.head_offset.0,
            cy: HEAD.1 + self.a.head_offset.1 + self.pose.pitch * 0.02,
            rx: HEAD_RADII.0 * s,
            ry: HEAD_RADII.1 * s,
            roll: self.a.head_roll,
        }
    }

    fn hair_back(&self, c: &mut Canvas, head: &Head, p: &Person) {
        if p.hair_style == HairStyle::Long {
            let hair = self.tone(&p.hair);
            let (x, y) = head.at(0.0, 0.45);
            c.fill(
                &Shape::Ellipse {
                    cx: x,
                    cy: y,
                    rx: head.rx * 1.2,
                    ry: head.ry * 1.15,
                    angle: head.roll,
                },
                Paint::Solid(hair),
                1.0,
            );
        }
    }

    /// Hair on the top of the head; `yaw` shows more of it on the side the face turns away from.
    fn hair_top(&self, c: &mut Canvas, head: &Head, p: &Person, yaw: f32) {
        let hair = match p.hair_style {
            HairStyle::Bald => return,
            HairStyle::Cap => self.tone(&self.a.occluder_colour),
            _ => self.tone(&p.hair),
        };
        let pitch = if std::ptr::eq(p, &self.a.driver) {
            self.pose.pitch
        } else {
            0.0
        };
        let (x, y) = head.at(-yaw * 0.25, -0.42 + pitch * 0.14);
        let ry = if p.hair_style == HairStyle::Cap {
            0.62
        } else {
            0.55
        };
        c.fill(
            &Shape::Ellipse {
                cx: x,
                cy: y,
                rx: head.rx * 1.02,
                ry: head.ry * ry,
                angle: head.roll,
            },
            Paint::Solid(hair),
            1.0,
        );
        if p.hair_style == HairStyle::Cap {
            let (bx, by) = head.at(yaw * 0.4, -0.12);
            c.fill(
                &Shape::Ellipse {
                    cx: bx,
                    cy: by,
                    rx: head.rx * 0.95,
                    ry: head.ry * 0.12,
                    angle: head.roll,
                },
                Paint::Solid(shade(hair, 0.7)),
                1.0,
            );
        }
    }

    fn head(&self, c: &mut Canvas, head: &Head, trace: &mut Vec<Part>) {
        let p = &self.a.driver;
        let skin = self.tone(&p.skin);
        let hair = self.tone(&p.hair);
        let (yaw, pitch) = (self.pose.yaw, self.pose.pitch);
        trace.push(Part::DriverHead);
        self.hair_back(c, head, p);
        // The skull, then the ear on the side the face turns away from.
        let (sx, sy) = head.at(0.0, 0.0);
        c.fill(
            &Shape::Ellipse {
                cx: sx,
                cy: sy,
                rx: head.rx,
                ry: head.ry,
                angle: head.roll,
            },
            Paint::Solid(shade(skin, 0.88)),
            1.0,
        );
        for side in [-1.0f32, 1.0] {
            let visible = 1.0 - (side * yaw).max(0.0);
            if visible > 0.2 {
                let (ex, ey) = head.at(
                    side * (0.98 - 0.1 * (side * yaw).min(0.0)),
                    0.05 + pitch * 0.1,
                );
                c.fill(
                    &Shape::Ellipse {
                        cx: ex,
                        cy: ey,
                        rx: head.rx * 0.14 * visible,
                        ry: head.ry * 0.2,
                        angle: head.roll,
                    },
                    Paint::Solid(shade(skin, 0.8)),
                    1.0,
                );
            }
        }
        // Face: shifted towards the turn and down with the pitch, so the skull shows behind it.
        let (fx, fy) = head.at(yaw * 0.3, 0.08 + pitch * 0.16);
        let face_rx = head.rx * (0.9 - 0.18 * yaw.abs());
        let light_side = Paint::Linear {
            p0: (fx - face_rx, fy),
            c0: shade(skin, 1.05),
            p1: (fx + face_rx, fy),
            c1: shade(skin, 0.95),
        };
        c.fill(
            &Shape::Ellipse {
                cx: fx,
                cy: fy,
                rx: face_rx,
                ry: head.ry * 0.88,
                angle: head.roll,
            },
            light_side,
            1.0,
        );
        self.hair_top(c, head, p, yaw);
        if self.labels.face == Face::Occluded {
            // Hidden under the occluder: nothing of the face may leak through its edges.
            return;
        }
        // Face features in head units: they move further than the face outline (a turned head).
        let feat_x = yaw * 0.5;
        let eye_y = -0.1 + pitch * 0.42;
        let spacing = 0.4 * (1.0 - 0.3 * yaw.abs());
        for side in [-1.0f32, 1.0] {
            // The eye on the side the head turns towards is foreshortened.
            let far = (side * yaw).max(0.0);
            let width = 0.25 * (1.0 - 0.45 * far);
            let (ex, ey) = head.at(feat_x + side * spacing, eye_y);
            let (bx, by) = head.at(feat_x + side * spacing, eye_y - 0.17 + pitch * 0.03);
            c.fill(
                &Shape::Stroke {
                    points: vec![
                        (bx - width * head.rx, by + 0.01),
                        (bx + width * head.rx * 0.9, by),
                    ],
                    r: head.ry * 0.03,
                },
                Paint::Solid(shade(hair, 0.9)),
                1.0,
            );
            self.eye(c, head, (ex, ey), width * head.rx, trace);
        }
        // Nose: bridge to a tip that points where the head turns.
        let (nx0, ny0) = head.at(feat_x * 0.95, eye_y + 0.05);
        let (nx1, ny1) = head.at(feat_x * 1.25 + yaw * 0.12, eye_y + 0.33 - pitch * 0.04);
        c.fill(
            &Shape::Stroke {
                points: vec![(nx0, ny0), (nx1, ny1)],
                r: head.rx * 0.07,
            },
            Paint::Solid(shade(skin, 0.82)),
            1.0,
        );
        c.fill(
            &Shape::Ellipse {
                cx: nx1,
                cy: ny1 + 0.004,
                rx: head.rx * 0.12,
                ry: head.ry * 0.05,
                angle: head.roll,
            },
            Paint::Solid(shade(skin, 0.7)),
            1.0,
        );
        self.mouth(c, head, feat_x, eye_y + 0.52 - pitch * 0.06, trace);
        if self.labels.sunglasses {
            self.sunglasses(c, head, feat_x, eye_y, spacing, trace);
        }
    }

    fn eye(
        &self,
        c: &mut Canvas,
        head: &Head,
        (ex, ey): (f32, f32),
        half_width: f32,
        trace: &mut Vec<Part>,
    ) {
        let skin = self.tone(&self.a.driver.skin);
        let lash = shade(self.tone(&self.a.driver.hair), 0.4).map(|v| v.min(0.12));
        let angle = head.roll;
        if self.labels.eyes == Eyes::Closed {
            // A lid of darker skin and a lash line curving down; no white, no pupil.
            c.fill(
                &Shape::Ellipse {
                    cx: ex,
                    cy: ey,
                    rx: half_width,
                    ry: head.ry * 0.075,
                    angle,
                },
                Paint::Solid(shade(skin, 0.8)),
                1.0,
            );
            let pts: Vec<(f32, f32)> = (0..=6)
                .map(|i| {
                    let t = i as f32 / 3.0 - 1.0;
                    (ex + t * half_width, ey + head.ry * 0.03 * (1.0 - t * t))
                })
                .collect();
            c.fill(
                &Shape::Stroke {
                    points: pts,
                    r: head.ry * 0.016,
                },
                Paint::Solid(lash),
                1.0,
            );
            trace.push(Part::ClosedLid);
            return;
        }
        // Looking down lowers the upper lid, but an open eye always shows white and iris.
        let open = 1.0 - 0.4 * self.pose.pitch.clamp(0.0, 1.0);
        let eh = head.ry * 0.1 * open;
        let sclera = match self.lighting {
            Lighting::Day => [0.95, 0.94, 0.92],
            Lighting::Night => [0.9; 3],
        };
        c.fill(
            &Shape::Ellipse {
                cx: ex,
                cy: ey,
                rx: half_width,
                ry: eh,
                angle,
            },
            Paint::Solid(sclera),
            1.0,
        );
        trace.push(Part::Sclera);
        let ir = eh * 0.95;
        let px = ex + self.pose.eye_dx * (half_width - ir) * 0.8;
        let py = ey + self.pose.eye_dy * eh * 0.45;
        c.fill(
            &Shape::Ellipse {
                cx: px,
                cy: py,
                rx: ir.min(half_width * 0.6),
                ry: ir,
                angle,
            },
            Paint::Solid(self.tone(&self.a.iris)),
            1.0,
        );
        c.fill(
            &Shape::Ellipse {
                cx: px,
                cy: py,
                rx: ir * 0.5,
                ry: ir * 0.5,
                angle,
            },
            Paint::Solid([0.02; 3]),
            1.0,
        );
        trace.push(Part::Pupil);
        let pts: Vec<(f32, f32)> = (0..=6)
            .map(|i| {
                let t = i as f32 / 3.0 - 1.0;
                (ex + t * half_width * 1.05, ey - eh * (1.0 - t * t).sqrt())
            })
            .collect();
        c.fill(
            &Shape::Stroke {
                points: pts,
                r: head.ry * 0.014,
            },
            Paint::Solid(lash),
            1.0,
        );
    }

    fn mouth(&self, c: &mut Canvas, head: &Head, x: f32, y: f32, trace: &mut Vec<Part>) {
        let lips = self.tone(&self.a.driver.lips);
        let (mx, my) = head.at(x, y);
        let open = self.pose.mouth.clamp(0.0, 1.0);
        if self.labels.yawning {
            let (rx, ry) = (head.rx * 0.26, head.ry * 0.24 * open);
            c.fill(
                &Shape::Ellipse {
                    cx: mx,
                    cy: my + ry * 0.3,
                    rx: rx * 1.15,
                    ry: ry * 1.15,
                    angle: head.roll,
                },
                Paint::Solid(lips),
                1.0,
            );
            c.fill(
                &Shape::Ellipse {
                    cx: mx,
                    cy: my + ry * 0.3,
                    rx,
                    ry,
                    angle: head.roll,
                },
                Paint::Solid([0.08, 0.03, 0.03]),
                1.0,
            );
            c.fill(
                &Shape::Ellipse {
                    cx: mx,
                    cy: my + ry * 0.3 - ry * 0.8,
                    rx: rx * 0.7,
                    ry: ry * 0.15,
                    angle: head.roll,
                },
                Paint::Solid([0.85; 3]),
                0.8,
            );
            trace.push(Part::YawningMouth);
        } else {
            let h = head.ry * (0.035 + 0.04 * open);
            c.fill(
                &Shape::Ellipse {
                    cx: mx,
                    cy: my,
                    rx: head.rx * 0.24,
                    ry: h,
                    angle: head.roll,
                },
                Paint::Solid(lips),
                1.0,
            );
            c.fill(
                &Shape::Stroke {
                    points: vec![(mx - head.rx * 0.2, my), (mx + head.rx * 0.2, my)],
                    r: head.ry * 0.012,
                },
                Paint::Solid(shade(lips, 0.5)),
                1.0,
            );
        }
    }

    fn sunglasses(
        &self,
        c: &mut Canvas,
        head: &Head,
        feat_x: f32,
        eye_y: f32,
        spacing: f32,
        trace: &mut Vec<Part>,
    ) {
        let glass = self.tone(&self.a.sunglasses);
        // Near-infrared light passes through most sunglasses: the camera sees the eyes at night.
        let alpha = match self.lighting {
            Lighting::Day => 0.96,
            Lighting::Night => 0.45,
        };
        let mut centres = Vec::new();
        for side in [-1.0f32, 1.0] {
            let far = (side * self.pose.yaw).max(0.0);
            let (gx, gy) = head.at(feat_x + side * spacing, eye_y);
            let hw = head.rx * 0.3 * (1.0 - 0.45 * far);
            c.fill(
                &Shape::RoundRect {
                    cx: gx,
                    cy: gy,
                    hw,
                    hh: head.ry * 0.13,
                    r: head.ry * 0.06,
                    angle: head.roll,
                },
                Paint::Solid(glass),
                alpha,
            );
            centres.push((gx, gy, hw));
        }
        let frame = shade(glass, 0.5);
        let (l, r) = (centres[0], centres[1]);
        c.fill(
            &Shape::Stroke {
                points: vec![(l.0 + l.2, l.1), (r.0 - r.2, r.1)],
                r: head.ry * 0.02,
            },
            Paint::Solid(frame),
            1.0,
        );
        for (gx, gy, hw) in [(l.0 - l.2, l.1, -1.0), (r.0 + r.2, r.1, 1.0)] {
            let (tx, ty) = head.at(hw * 0.97, -0.06);
            c.fill(
                &Shape::Stroke {
                    points: vec![(gx, gy), (tx, ty)],
                    r: head.ry * 0.018,
                },
                Paint::Solid(frame),
                1.0,
            );
        }
        trace.push(Part::Sunglasses);
    }

    fn phone_in_hand(&self, c: &mut Canvas, trace: &mut Vec<Part>) {
        let hx = HEAD.0 + self.a.head_offset.0;
        let side = -self.a.wheel_hand;
        let (px, py) = (hx + side * 0.08, 0.72);
        let skin = self.tone(&self.a.driver.skin);
        let sleeve = self.tone(&self.a.driver.clothing);
        c.fill(
            &Shape::Stroke {
                points: vec![(px, py + 0.07), (px + side * 0.12, 1.05)],
                r: 0.045,
            },
            Paint::Solid(shade(sleeve, 0.92)),
            1.0,
        );
        self.phone(c, px, py, 0.045, 0.08, side * 0.2);
        c.fill(
            &Shape::Ellipse {
                cx: px + side * 0.01,
                cy: py + 0.06,
                rx: 0.05,
                ry: 0.038,
                angle: side * 0.3,
            },
            Paint::Solid(skin),
            1.0,
        );
        c.fill(
            &Shape::Stroke {
                points: vec![
                    (px - side * 0.035, py + 0.04),
                    (px - side * 0.04, py - 0.01),
                ],
                r: 0.011,
            },
            Paint::Solid(shade(skin, 0.95)),
            1.0,
        );
        trace.push(Part::Phone);
    }

    fn phone_at_ear(&self, c: &mut Canvas, head: &Head, trace: &mut Vec<Part>) {
        let side = self.a.ear_side;
        let (px, py) = head.at(side * 1.05, 0.1);
        let skin = self.tone(&self.a.driver.skin);
        let sleeve = self.tone(&self.a.driver.clothing);
        c.fill(
            &Shape::Stroke {
                points: vec![(px + side * 0.03, py + 0.08), (px + side * 0.13, py + 0.42)],
                r: 0.045,
            },
            Paint::Solid(shade(sleeve, 0.92)),
            1.0,
        );
        self.phone(c, px, py, 0.03, 0.085, side * 0.25);
        c.fill(
            &Shape::Ellipse {
                cx: px + side * 0.025,
                cy: py + 0.055,
                rx: 0.045,
                ry: 0.05,
                angle: side * 0.4,
            },
            Paint::Solid(skin),
            1.0,
        );
        trace.push(Part::Phone);
    }

    fn phone(&self, c: &mut Canvas, x: f32, y: f32, hw: f32, hh: f32, angle: f32) {
        let body = self.tone(&self.a.phone);
        let edge = if body[0] > 0.5 {
            shade(body, 0.6)
        } else {
            shade(body, 2.5).map(|v| v.max(0.25))
        };
        c.fill(
            &Shape::RoundRect {
                cx: x,
                cy: y,
                hw: hw + 0.006,
                hh: hh + 0.006,
                r: 0.014,
                angle,
            },
            Paint::Solid(edge),
            1.0,
        );
        c.fill(
            &Shape::RoundRect {
                cx: x,
                cy: y,
                hw,
                hh,
                r: 0.01,
                angle,
            },
            Paint::Solid(body),
            1.0,
        );
        let (s, co) = angle.sin_cos();
        let (lx, ly) = (-hw * 0.5, -hh * 0.7);
        c.fill(
            &Shape::Ellipse {
                cx: x + lx * co - ly * s,
                cy: y + lx * s + ly * co,
                rx: 0.008,
                ry: 0.008,
                angle: 0.0,
            },
            Paint::Solid(edge),
            1.0,
        );
    }

    fn occluder(&self, c: &mut Canvas, head: &Head, trace: &mut Vec<Part>) {
        let colour = self.tone(&self.a.occluder_colour);
        let (fx, fy) = head.at(self.pose.yaw * 0.3, 0.1);
        match self.a.occluder {
            Occluder::Hand => {
                let skin = self.tone(&self.a.driver.skin);
                let sleeve = self.tone(&self.a.driver.clothing);
                c.fill(
                    &Shape::Stroke {
                        points: vec![(fx, fy + head.ry * 0.6), (fx + 0.12, 1.05)],
                        r: 0.05,
                    },
                    Paint::Solid(sleeve),
                    1.0,
                );
                for k in 0..4 {
                    let dx = (k as f32 - 1.5) * head.rx * 0.36;
                    c.fill(
                        &Shape::Stroke {
                            points: vec![(fx + dx, fy), (fx + dx * 1.15, fy - head.ry * 0.95)],
                            r: head.rx * 0.15,
                        },
                        Paint::Solid(skin),
                        1.0,
                    );
                }
                c.fill(
                    &Shape::Ellipse {
                        cx: fx,
                        cy: fy + head.ry * 0.1,
                        rx: head.rx * 0.92,
                        ry: head.ry * 0.8,
                        angle: 0.1,
                    },
                    Paint::Solid(shade(skin, 0.97)),
                    1.0,
                );
            }
            Occluder::Object => {
                let paint = Paint::Linear {
                    p0: (fx, fy - head.ry),
                    c0: colour,
                    p1: (fx, fy + head.ry),
                    c1: shade(colour, 0.8),
                };
                c.fill(
                    &Shape::RoundRect {
                        cx: fx,
                        cy: fy,
                        hw: head.rx * 1.15,
                        hh: head.ry * 0.95,
                        r: 0.02,
                        angle: head.roll * 2.0,
                    },
                    paint,
                    1.0,
                );
            }
        }
        trace.push(Part::Occluder);
    }

    /// Camera response: light gradient or illuminator falloff, then optics blur.
    fn finish(&self, c: &mut Canvas) {
        let a = self.a;
        match self.lighting {
            Lighting::Day => {
                let (dx, dy) = a.light_direction;
                let (e, s) = (a.exposure, a.light_strength);
                c.light(|x, y| (e * (1.0 + s * ((x - 0.5) * dx + (y - 0.5) * dy))).max(0.05));
            }
            Lighting::Night => {
                // The near-infrared illuminator sits next to the camera: bright centre, dark edges.
                let (e, s) = (a.exposure, 1.2 + a.light_strength);
                let (hx, hy) = (HEAD.0 + a.head_offset.0, HEAD.1 + 0.1);
                c.light(|x, y| (e * (1.15 - s * ((x - hx).powi(2) + (y - hy).powi(2)))).max(0.05));
            }
        }
        c.blur(a.blur * c.width.min(c.height) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels_other_seed_other_pixels() {
        let a = Scene::sample(42, 3, Variation::Train).render(96, 96);
        let b = Scene::sample(42, 3, Variation::Train).render(96, 96);
        let c = Scene::sample(43, 3, Variation::Train).render(96, 96);
        let d = Scene::sample(42, 4, Variation::Train).render(96, 96);
        assert_eq!(a, b);
        assert_ne!(a.data, c.data);
        assert_ne!(a.data, d.data);
    }

    #[test]
    fn any_resolution_and_the_right_format() {
        for (w, h) in [(1, 1), (64, 48), (33, 100)] {
            let img = Scene::sample(1, 0, Variation::Shifted).render(w, h);
            let channels = if img.format == PixelFormat::Grey {
                1
            } else {
                3
            };
            assert_eq!(img.data.len(), (w * h) as usize * channels);
            assert_eq!(img.to_rgb().len(), (w * h) as usize * 3);
        }
    }

    #[test]
    fn drawn_parts_match_the_labels() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..400 {
            let scene = Scene::sample(
                5,
                i,
                if i % 2 == 0 {
                    Variation::Train
                } else {
                    Variation::Shifted
                },
            );
            let mut parts = Vec::new();
            scene.render_traced(24, 24, &mut parts);
            let l = scene.labels;
            assert_eq!(
                l,
                l.normalised(),
                "sampled labels must already be consistent"
            );
            let count = |p: Part| parts.iter().filter(|&&q| q == p).count();
            let visible = l.face == Face::Visible;
            assert_eq!(
                count(Part::Pupil),
                if visible && l.eyes == Eyes::Open {
                    2
                } else {
                    0
                },
                "{l:?}"
            );
            assert_eq!(count(Part::Sclera), count(Part::Pupil));
            assert_eq!(
                count(Part::ClosedLid),
                if visible && l.eyes == Eyes::Closed {
                    2
                } else {
                    0
                },
                "{l:?}"
            );
            assert_eq!(count(Part::HandOnWheel), usize::from(l.hands_on_wheel));
            assert_eq!(count(Part::Phone), usize::from(l.phone != Phone::None));
            assert_eq!(count(Part::BeltAcrossChest), usize::from(l.seat_belt));
            assert_eq!(count(Part::Sunglasses), usize::from(l.sunglasses));
            assert_eq!(count(Part::YawningMouth), usize::from(l.yawning));
            assert_eq!(count(Part::PassengerHead), usize::from(l.passenger));
            assert_eq!(count(Part::DriverHead), usize::from(l.face != Face::Absent));
            assert_eq!(count(Part::Occluder), usize::from(l.face == Face::Occluded));
            // Nothing drawn after the occluder can show the face again.
            if let Some(pos) = parts.iter().position(|&p| p == Part::Occluder) {
                assert_eq!(pos, parts.len() - 1);
            }
            seen.insert((l.face, l.phone, l.hands_on_wheel));
        }
        // The sampler reaches the combinations the probes need.
        assert!(seen.len() >= 9, "{seen:?}");
    }

    /// Closed eyes draw no white and no pupil in the eye region; open ones do.
    #[test]
    fn eye_pixels_follow_the_eye_label() {
        let mut scene = Scene::sample(11, 0, Variation::Train);
        scene.labels = SceneLabels {
            sunglasses: false,
            ..SceneLabels::attentive()
        };
        scene.appearance.noise = 0.0;
        scene.appearance.blur = 0.0;
        scene.appearance.exposure = 1.0;
        scene.appearance.light_strength = 0.0;
        scene.appearance.zoom = 1.0;
        scene.appearance.shift = (0.0, 0.0);
        scene.appearance.camera_roll = 0.0;
        scene.appearance.head_roll = 0.0;
        scene.pose = Pose::for_labels(&scene.labels, [0.0; 4]);
        let size = 256u32;
        let head = Painter {
            labels: &scene.labels,
            a: &scene.appearance,
            pose: &scene.pose,
            lighting: Lighting::Day,
        }
        .head_geometry();
        let eye_box = |img: &SceneImage| {
            let (ex, ey) = head.at(-0.4, -0.1);
            let (cx, cy) = ((ex * size as f32) as i64, (ey * size as f32) as i64);
            let mut whites = 0;
            let mut blacks = 0;
            for y in cy - 4..=cy + 4 {
                for x in cx - 8..=cx + 8 {
                    let i = (y as usize * size as usize + x as usize) * 3;
                    let p = &img.data[i..i + 3];
                    whites += usize::from(p.iter().all(|&v| v > 220));
                    blacks += usize::from(p.iter().all(|&v| v < 20));
                }
            }
            (whites, blacks)
        };
        let (w_open, b_open) = eye_box(&scene.render(size, size));
        scene.labels.eyes = Eyes::Closed;
        let (w_closed, b_closed) = eye_box(&scene.render(size, size));
        assert!(
            w_open > 10 && b_open > 2,
            "open eye: {w_open} white, {b_open} black pixels"
        );
        assert_eq!(
            (w_closed, b_closed),
            (0, 0),
            "closed eye shows white or pupil pixels"
        );
    }
}
