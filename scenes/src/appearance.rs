//! Who is in the car and how the camera sees them: colours, shapes, placement, light, noise.
//!
//! Two distributions: `Train` (what the default model learns from) and `Shifted` (colours drawn from
//! palettes the training set never uses, harsher lighting, stronger noise and blur) to measure how
//! the model generalises.

use super::canvas::Rgb;
use super::labels::Lighting;
use super::rng::Rng;

/// Which distribution to draw appearances from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variation {
    Train,
    Shifted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HairStyle {
    Short,
    Long,
    Bald,
    Cap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occluder {
    /// The driver's hand over the face.
    Hand,
    /// Something held up or hanging in front of the camera (cloth, map, visor).
    Object,
}

/// A colour as the day (RGB) camera and as the night (near-infrared, grey) camera sees it; the two
/// are unrelated because near-infrared reflectance does not follow visible colour.
#[derive(Debug, Clone, Copy)]
pub struct Tone {
    pub day: Rgb,
    pub nir: f32,
}

impl Tone {
    pub fn get(&self, lighting: Lighting) -> Rgb {
        match lighting {
            Lighting::Day => self.day,
            Lighting::Night => [self.nir; 3],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    pub skin: Tone,
    pub hair: Tone,
    pub hair_style: HairStyle,
    pub clothing: Tone,
    pub lips: Tone,
}

/// Everything about a frame's look that is not a label.
#[derive(Debug, Clone)]
pub struct Appearance {
    pub driver: Person,
    pub passenger: Person,
    pub iris: Tone,
    pub cabin: Tone,
    pub seat: Tone,
    pub wheel: Tone,
    pub belt: Tone,
    pub phone: Tone,
    pub sunglasses: Tone,
    pub occluder_colour: Tone,
    pub occluder: Occluder,
    /// Which side of the head a phone at the ear is on (-1 image left, +1 image right).
    pub ear_side: f32,
    /// Which hand stays on the wheel when only one does (-1 image left, +1 image right).
    pub wheel_hand: f32,
    /// Head placement: offset from the nominal centre (scene units), scale, roll (radians).
    pub head_offset: (f32, f32),
    pub head_scale: f32,
    pub head_roll: f32,
    /// Camera placement jitter: zoom, shift (scene units), roll (radians).
    pub zoom: f32,
    pub shift: (f32, f32),
    pub camera_roll: f32,
    /// Light: overall exposure, and a linear gradient across the frame (direction, strength).
    pub exposure: f32,
    pub light_direction: (f32, f32),
    pub light_strength: f32,
    /// Sensor noise standard deviation (0..1 scale) and optical blur (fraction of the image size).
    pub noise: f32,
    pub blur: f32,
    /// Seed of the sensor-noise pattern.
    pub noise_seed: u64,
}

const SKIN_TRAIN: [Rgb; 7] = [
    [0.96, 0.80, 0.69],
    [0.91, 0.72, 0.58],
    [0.84, 0.63, 0.48],
    [0.74, 0.53, 0.39],
    [0.60, 0.42, 0.30],
    [0.45, 0.31, 0.22],
    [0.33, 0.22, 0.16],
];
/// Tones between and beyond the training ones, with tints the training set never shows.
const SKIN_SHIFTED: [Rgb; 5] = [
    [0.98, 0.86, 0.80],
    [0.80, 0.62, 0.40],
    [0.68, 0.50, 0.44],
    [0.52, 0.38, 0.25],
    [0.27, 0.18, 0.14],
];
const HAIR_TRAIN: [Rgb; 6] = [
    [0.06, 0.05, 0.05],
    [0.20, 0.13, 0.08],
    [0.38, 0.25, 0.14],
    [0.78, 0.64, 0.38],
    [0.62, 0.62, 0.62],
    [0.50, 0.20, 0.10],
];
const HAIR_SHIFTED: [Rgb; 4] = [
    [0.15, 0.25, 0.65],
    [0.85, 0.35, 0.60],
    [0.20, 0.55, 0.30],
    [0.92, 0.92, 0.90],
];
const CLOTHING_TRAIN: [Rgb; 8] = [
    [0.12, 0.16, 0.32],
    [0.45, 0.45, 0.47],
    [0.88, 0.88, 0.86],
    [0.08, 0.08, 0.09],
    [0.62, 0.12, 0.12],
    [0.30, 0.36, 0.20],
    [0.76, 0.68, 0.52],
    [0.45, 0.62, 0.82],
];
const CLOTHING_SHIFTED: [Rgb; 5] = [
    [0.55, 0.20, 0.65],
    [0.95, 0.50, 0.10],
    [0.10, 0.55, 0.55],
    [0.90, 0.85, 0.15],
    [0.95, 0.45, 0.70],
];
const SEAT_TRAIN: [Rgb; 3] = [[0.10, 0.10, 0.11], [0.32, 0.32, 0.34], [0.70, 0.64, 0.54]];
const SEAT_SHIFTED: [Rgb; 2] = [[0.40, 0.24, 0.14], [0.50, 0.10, 0.10]];
const CABIN_TRAIN: [Rgb; 3] = [[0.20, 0.20, 0.22], [0.50, 0.48, 0.45], [0.74, 0.72, 0.68]];
const CABIN_SHIFTED: [Rgb; 2] = [[0.35, 0.25, 0.20], [0.22, 0.28, 0.40]];
const IRIS: [Rgb; 4] = [
    [0.30, 0.18, 0.08],
    [0.20, 0.35, 0.55],
    [0.30, 0.42, 0.25],
    [0.12, 0.08, 0.05],
];
const BELT: [Rgb; 3] = [[0.10, 0.10, 0.10], [0.35, 0.35, 0.37], [0.62, 0.58, 0.50]];
const PHONE: [Rgb; 4] = [
    [0.05, 0.05, 0.06],
    [0.85, 0.85, 0.88],
    [0.15, 0.25, 0.50],
    [0.70, 0.20, 0.25],
];
const OBJECT: [Rgb; 4] = [
    [0.85, 0.82, 0.70],
    [0.25, 0.45, 0.70],
    [0.60, 0.20, 0.20],
    [0.35, 0.35, 0.30],
];

fn luma(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn jitter(c: Rgb, amount: f32, rng: &mut Rng) -> Rgb {
    let k = 1.0 + rng.range(-amount, amount);
    c.map(|v| (v * k + rng.range(-amount, amount) * 0.3).clamp(0.0, 1.0))
}

fn pick(rng: &mut Rng, palette: &[Rgb]) -> Rgb {
    palette[rng.below(palette.len())]
}

fn person(rng: &mut Rng, variation: Variation) -> Person {
    let shifted = variation == Variation::Shifted;
    let skin = jitter(
        pick(rng, if shifted { &SKIN_SHIFTED } else { &SKIN_TRAIN }),
        0.05,
        rng,
    );
    let hair = jitter(
        pick(rng, if shifted { &HAIR_SHIFTED } else { &HAIR_TRAIN }),
        0.08,
        rng,
    );
    let clothing = jitter(
        pick(
            rng,
            if shifted {
                &CLOTHING_SHIFTED
            } else {
                &CLOTHING_TRAIN
            },
        ),
        0.1,
        rng,
    );
    let hair_style = [
        HairStyle::Short,
        HairStyle::Long,
        HairStyle::Bald,
        HairStyle::Cap,
    ][rng.weighted(&[4.0, 3.0, 1.0, 1.0])];
    let lips = [skin[0] * 0.8 + 0.08, skin[1] * 0.55, skin[2] * 0.55];
    Person {
        skin: Tone {
            day: skin,
            nir: rng.range(0.58, 0.8),
        },
        hair: Tone {
            day: hair,
            nir: rng.range(0.12, 0.45),
        },
        hair_style,
        clothing: Tone {
            day: clothing,
            nir: rng.range(0.15, 0.85),
        },
        lips: Tone {
            day: lips,
            nir: 0.0,
        },
    }
}

impl Appearance {
    pub fn sample(rng: &mut Rng, variation: Variation) -> Self {
        let shifted = variation == Variation::Shifted;
        let mut driver = person(rng, variation);
        driver.lips.nir = driver.skin.nir * 0.85;
        let mut passenger = person(rng, variation);
        passenger.lips.nir = passenger.skin.nir * 0.85;
        // A belt must differ from the clothing under it, in both cameras, or it would be invisible.
        let mut belt = jitter(pick(rng, &BELT), 0.05, rng);
        for candidate in BELT {
            if (luma(belt) - luma(driver.clothing.day)).abs() >= 0.2 {
                break;
            }
            belt = candidate;
        }
        let clothing_nir = driver.clothing.nir;
        let belt_nir = if clothing_nir > 0.45 {
            rng.range(0.08, 0.22)
        } else {
            rng.range(0.6, 0.8)
        };
        let seat = jitter(
            pick(rng, if shifted { &SEAT_SHIFTED } else { &SEAT_TRAIN }),
            0.05,
            rng,
        );
        let cabin = jitter(
            pick(
                rng,
                if shifted {
                    &CABIN_SHIFTED
                } else {
                    &CABIN_TRAIN
                },
            ),
            0.05,
            rng,
        );
        let strength = if shifted {
            rng.range(0.5, 1.0)
        } else {
            rng.range(0.0, 0.5)
        };
        let angle = rng.range(0.0, std::f32::consts::TAU);
        Appearance {
            driver,
            passenger,
            iris: Tone {
                day: pick(rng, &IRIS),
                nir: rng.range(0.25, 0.45),
            },
            cabin: Tone {
                day: cabin,
                nir: rng.range(0.12, 0.3),
            },
            seat: Tone {
                day: seat,
                nir: rng.range(0.1, 0.3),
            },
            wheel: Tone {
                day: jitter([0.08, 0.08, 0.09], 0.3, rng),
                nir: rng.range(0.06, 0.16),
            },
            belt: Tone {
                day: belt,
                nir: belt_nir,
            },
            phone: Tone {
                day: pick(rng, &PHONE),
                nir: rng.range(0.05, 0.2),
            },
            sunglasses: Tone {
                day: jitter([0.05, 0.05, 0.06], 0.3, rng),
                nir: rng.range(0.02, 0.1),
            },
            occluder_colour: Tone {
                day: pick(rng, &OBJECT),
                nir: rng.range(0.3, 0.9),
            },
            occluder: if rng.chance(0.5) {
                Occluder::Hand
            } else {
                Occluder::Object
            },
            ear_side: if rng.chance(0.5) { -1.0 } else { 1.0 },
            wheel_hand: if rng.chance(0.5) { -1.0 } else { 1.0 },
            head_offset: (rng.range(-0.06, 0.06), rng.range(-0.04, 0.04)),
            head_scale: rng.range(0.88, 1.12),
            head_roll: rng.range(-0.12, 0.12),
            zoom: rng.range(0.92, 1.08),
            shift: (rng.range(-0.035, 0.035), rng.range(-0.035, 0.035)),
            camera_roll: rng.range(-0.05, 0.05),
            exposure: if shifted {
                rng.range(0.6, 1.35)
            } else {
                rng.range(0.8, 1.15)
            },
            light_direction: (angle.cos(), angle.sin()),
            light_strength: strength,
            noise: if shifted {
                rng.range(0.03, 0.07)
            } else {
                rng.range(0.0, 0.03)
            },
            blur: if shifted {
                rng.range(0.004, 0.009)
            } else {
                rng.range(0.0, 0.005)
            },
            noise_seed: rng.next_u64(),
        }
    }
}
