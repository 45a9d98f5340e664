//! A small floating-point RGB canvas that fills anti-aliased shapes described by signed distance
//! functions, then finishes the picture like a camera would: lighting, blur, sensor noise, 8 bits.
//!
//! Shapes are given in *scene units* (the scene is drawn in a unit square); the canvas maps them to
//! pixels, so the same scene renders at any resolution with the same geometry.

use super::rng::Rng;

pub type Rgb = [f32; 3];

/// A shape, in scene units. Every variant has a signed distance (negative inside).
#[derive(Debug, Clone)]
pub enum Shape {
    /// Ellipse with radii `rx`, `ry`, rotated by `angle` radians.
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        angle: f32,
    },
    /// Elliptical ring: points within `half_width` of the ellipse outline.
    Ring {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        half_width: f32,
    },
    /// Rectangle with rounded corners, half extents `hw`, `hh`, corner radius `r`, rotated.
    RoundRect {
        cx: f32,
        cy: f32,
        hw: f32,
        hh: f32,
        r: f32,
        angle: f32,
    },
    /// A thick polyline: every point within `r` of any segment.
    Stroke { points: Vec<(f32, f32)>, r: f32 },
    /// A convex polygon (either winding).
    Polygon(Vec<(f32, f32)>),
}

impl Shape {
    /// Axis-aligned bounds (x0, y0, x1, y1), in scene units, generous by the shape's reach.
    fn bounds(&self) -> (f32, f32, f32, f32) {
        match self {
            Shape::Ellipse { cx, cy, rx, ry, .. } => {
                let r = rx.max(*ry);
                (cx - r, cy - r, cx + r, cy + r)
            }
            Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                half_width,
            } => (
                cx - rx - half_width,
                cy - ry - half_width,
                cx + rx + half_width,
                cy + ry + half_width,
            ),
            Shape::RoundRect { cx, cy, hw, hh, .. } => {
                let r = (hw * hw + hh * hh).sqrt();
                (cx - r, cy - r, cx + r, cy + r)
            }
            Shape::Stroke { points, r } => points_bounds(points, *r),
            Shape::Polygon(points) => points_bounds(points, 0.0),
        }
    }

    /// Signed distance from (x, y), in scene units. Exact for strokes, rects and polygons inside;
    /// a first-order estimate for ellipses (good to a fraction of a pixel near the outline, which is
    /// all anti-aliasing needs).
    fn distance(&self, x: f32, y: f32) -> f32 {
        match self {
            Shape::Ellipse {
                cx,
                cy,
                rx,
                ry,
                angle,
            } => {
                let (lx, ly) = rotate(x - cx, y - cy, -angle);
                ellipse_distance(lx, ly, *rx, *ry)
            }
            Shape::Ring {
                cx,
                cy,
                rx,
                ry,
                half_width,
            } => ellipse_distance(x - cx, y - cy, *rx, *ry).abs() - half_width,
            Shape::RoundRect {
                cx,
                cy,
                hw,
                hh,
                r,
                angle,
            } => {
                let (lx, ly) = rotate(x - cx, y - cy, -angle);
                let qx = lx.abs() - hw + r;
                let qy = ly.abs() - hh + r;
                let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
                outside + qx.max(qy).min(0.0) - r
            }
            Shape::Stroke { points, r } => {
                let mut best = f32::MAX;
                for pair in points.windows(2) {
                    best = best.min(segment_distance(x, y, pair[0], pair[1]));
                }
                if points.len() == 1 {
                    best = ((x - points[0].0).powi(2) + (y - points[0].1).powi(2)).sqrt();
                }
                best - r
            }
            Shape::Polygon(points) => convex_polygon_distance(x, y, points),
        }
    }
}

fn points_bounds(points: &[(f32, f32)], pad: f32) -> (f32, f32, f32, f32) {
    let mut b = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &(x, y) in points {
        b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    (b.0 - pad, b.1 - pad, b.2 + pad, b.3 + pad)
}

fn rotate(x: f32, y: f32, angle: f32) -> (f32, f32) {
    let (s, c) = angle.sin_cos();
    (x * c - y * s, x * s + y * c)
}

fn ellipse_distance(x: f32, y: f32, rx: f32, ry: f32) -> f32 {
    let (rx, ry) = (rx.max(1e-6), ry.max(1e-6));
    let k = ((x / rx).powi(2) + (y / ry).powi(2)).sqrt();
    if k < 1e-6 {
        return -rx.min(ry);
    }
    let grad = ((x / (rx * rx)).powi(2) + (y / (ry * ry)).powi(2)).sqrt() / k;
    (k - 1.0) / grad.max(1e-6)
}

fn segment_distance(x: f32, y: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((x - a.0) * dx + (y - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((x - a.0 - t * dx).powi(2) + (y - a.1 - t * dy).powi(2)).sqrt()
}

fn convex_polygon_distance(x: f32, y: f32, points: &[(f32, f32)]) -> f32 {
    let n = points.len();
    if n < 3 {
        return f32::MAX;
    }
    let area: f32 = (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    let sign = if area >= 0.0 { 1.0 } else { -1.0 };
    let mut d = f32::MIN;
    for i in 0..n {
        let (a, b) = (points[i], points[(i + 1) % n]);
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let len = (ex * ex + ey * ey).sqrt().max(1e-9);
        // Outward normal for a counter-clockwise (positive area) polygon is (ey, -ex).
        let dist = sign * ((x - a.0) * ey - (y - a.1) * ex) / len;
        d = d.max(dist);
    }
    d
}

/// How a shape is coloured.
#[derive(Debug, Clone, Copy)]
pub enum Paint {
    Solid(Rgb),
    /// Linear gradient from colour `c0` at `p0` to `c1` at `p1` (scene units), clamped outside.
    Linear {
        p0: (f32, f32),
        c0: Rgb,
        p1: (f32, f32),
        c1: Rgb,
    },
}

impl Paint {
    fn at(&self, x: f32, y: f32) -> Rgb {
        match *self {
            Paint::Solid(c) => c,
            Paint::Linear { p0, c0, p1, c1 } => {
                let (dx, dy) = (p1.0 - p0.0, p1.1 - p0.1);
                let len2 = (dx * dx + dy * dy).max(1e-9);
                let t = (((x - p0.0) * dx + (y - p0.1) * dy) / len2).clamp(0.0, 1.0);
                [
                    c0[0] + (c1[0] - c0[0]) * t,
                    c0[1] + (c1[1] - c0[1]) * t,
                    c0[2] + (c1[2] - c0[2]) * t,
                ]
            }
        }
    }
}

/// Maps scene units to pixels: pixel = origin + scene * scale, with a small rotation (camera roll).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub scale: f32,
    pub origin: (f32, f32),
    pub roll: f32,
}

impl View {
    /// The unit square fitted into a `width` x `height` image, zoomed by `zoom` about the centre and
    /// moved by `shift` (scene units), rolled by `roll` radians.
    pub fn fit(width: usize, height: usize, zoom: f32, shift: (f32, f32), roll: f32) -> Self {
        let scale = width.min(height) as f32 * zoom;
        let origin = (
            width as f32 / 2.0 - (0.5 + shift.0) * scale,
            height as f32 / 2.0 - (0.5 + shift.1) * scale,
        );
        View {
            scale,
            origin,
            roll,
        }
    }

    fn to_scene(self, px: f32, py: f32) -> (f32, f32) {
        let (x, y) = (
            (px - self.origin.0) / self.scale,
            (py - self.origin.1) / self.scale,
        );
        let (x, y) = rotate(x - 0.5, y - 0.5, -self.roll);
        (x + 0.5, y + 0.5)
    }

    fn to_pixel(self, x: f32, y: f32) -> (f32, f32) {
        let (x, y) = rotate(x - 0.5, y - 0.5, self.roll);
        (
            self.origin.0 + (x + 0.5) * self.scale,
            self.origin.1 + (y + 0.5) * self.scale,
        )
    }
}

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<Rgb>,
    view: View,
}

impl Canvas {
    pub fn new(width: usize, height: usize, view: View) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![[0.0; 3]; width * height],
            view,
        }
    }

    #[cfg(test)]
    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }

    /// Fills the whole canvas.
    pub fn clear(&mut self, paint: Paint) {
        let view = self.view;
        for py in 0..self.height {
            for px in 0..self.width {
                let (x, y) = view.to_scene(px as f32 + 0.5, py as f32 + 0.5);
                self.pixels[py * self.width + px] = paint.at(x, y);
            }
        }
    }

    /// Blends `shape` painted with `paint` at opacity `alpha`, anti-aliased over about one pixel.
    pub fn fill(&mut self, shape: &Shape, paint: Paint, alpha: f32) {
        let (bx0, by0, bx1, by1) = shape.bounds();
        // Bounds of the rotated box in pixels.
        let corners =
            [(bx0, by0), (bx1, by0), (bx0, by1), (bx1, by1)].map(|(x, y)| self.view.to_pixel(x, y));
        let mut px0 = f32::MAX;
        let mut py0 = f32::MAX;
        let mut px1 = f32::MIN;
        let mut py1 = f32::MIN;
        for (x, y) in corners {
            px0 = px0.min(x);
            py0 = py0.min(y);
            px1 = px1.max(x);
            py1 = py1.max(y);
        }
        let x0 = (px0 - 1.0).floor().max(0.0) as usize;
        let y0 = (py0 - 1.0).floor().max(0.0) as usize;
        let x1 = ((px1 + 2.0).ceil().max(0.0) as usize).min(self.width);
        let y1 = ((py1 + 2.0).ceil().max(0.0) as usize).min(self.height);
        let scale = self.view.scale;
        for py in y0..y1 {
            for px in x0..x1 {
                let (x, y) = self.view.to_scene(px as f32 + 0.5, py as f32 + 0.5);
                let d = shape.distance(x, y) * scale;
                let coverage = (0.5 - d).clamp(0.0, 1.0) * alpha;
                if coverage <= 0.0 {
                    continue;
                }
                let c = paint.at(x, y);
                let p = &mut self.pixels[py * self.width + px];
                for k in 0..3 {
                    p[k] += (c[k] - p[k]) * coverage;
                }
            }
        }
    }

    /// Multiplies every pixel by `gain(x, y)` (scene units): exposure, light gradients, vignetting.
    pub fn light(&mut self, gain: impl Fn(f32, f32) -> f32) {
        let view = self.view;
        for py in 0..self.height {
            for px in 0..self.width {
                let (x, y) = view.to_scene(px as f32 + 0.5, py as f32 + 0.5);
                let g = gain(x, y);
                let p = &mut self.pixels[py * self.width + px];
                for c in p.iter_mut() {
                    *c *= g;
                }
            }
        }
    }

    /// Approximately Gaussian blur with standard deviation `sigma` pixels (optics, focus).
    pub fn blur(&mut self, sigma: f32) {
        if sigma < 0.25 {
            return;
        }
        if sigma < 1.0 {
            // 3-tap kernel [w, 1-2w, w] has variance 2w.
            let w = (sigma * sigma / 2.0).min(1.0 / 3.0);
            self.convolve3(w, true);
            self.convolve3(w, false);
        } else {
            // Two box passes of radius r have variance 2 r (r + 1) / 3.
            let r = ((-1.0 + (1.0 + 6.0 * sigma * sigma).sqrt()) / 2.0)
                .round()
                .max(1.0) as usize;
            for _ in 0..2 {
                self.box_pass(r, true);
                self.box_pass(r, false);
            }
        }
    }

    fn convolve3(&mut self, w: f32, horizontal: bool) {
        let (n, lines, step, line_step) = self.lines(horizontal);
        let mut buf = vec![[0.0f32; 3]; n];
        for line in 0..lines {
            let base = line * line_step;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.pixels[base + i * step];
            }
            for i in 0..n {
                let a = buf[i.saturating_sub(1)];
                let c = buf[(i + 1).min(n - 1)];
                let m = buf[i];
                let p = &mut self.pixels[base + i * step];
                for k in 0..3 {
                    p[k] = w * (a[k] + c[k]) + (1.0 - 2.0 * w) * m[k];
                }
            }
        }
    }

    fn box_pass(&mut self, r: usize, horizontal: bool) {
        let (n, lines, step, line_step) = self.lines(horizontal);
        let mut buf = vec![[0.0f32; 3]; n];
        let norm = 1.0 / (2 * r + 1) as f32;
        for line in 0..lines {
            let base = line * line_step;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.pixels[base + i * step];
            }
            // Running sum with edge clamping.
            let at = |i: isize| buf[i.clamp(0, n as isize - 1) as usize];
            let mut sum = [0.0f32; 3];
            for i in -(r as isize)..=(r as isize) {
                let v = at(i);
                for k in 0..3 {
                    sum[k] += v[k];
                }
            }
            for i in 0..n {
                let p = &mut self.pixels[base + i * step];
                for k in 0..3 {
                    p[k] = sum[k] * norm;
                }
                let add = at(i as isize + r as isize + 1);
                let sub = at(i as isize - r as isize);
                for k in 0..3 {
                    sum[k] += add[k] - sub[k];
                }
            }
        }
    }

    /// (pixels per line, number of lines, stride between pixels, stride between lines).
    fn lines(&self, horizontal: bool) -> (usize, usize, usize, usize) {
        if horizontal {
            (self.width, self.height, 1, self.width)
        } else {
            (self.height, self.width, self.width, 1)
        }
    }

    /// Quantises to packed RGB8 with additive sensor noise of standard deviation `noise` (0..1 scale).
    pub fn to_rgb8(&self, noise: f32, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pixels.len() * 3);
        for p in &self.pixels {
            let n = gaussianish(rng) * noise;
            // Luminance noise plus a little chroma noise, like a real sensor after demosaicing.
            for &c in p {
                let chroma = (rng.unit() - 0.5) * noise * 0.5;
                out.push(quantise(c + n + chroma));
            }
        }
        out
    }

    /// Quantises the first channel to 8-bit grey (the scene was painted in greys) with noise.
    pub fn to_grey8(&self, noise: f32, rng: &mut Rng) -> Vec<u8> {
        self.pixels
            .iter()
            .map(|p| quantise(p[0] + gaussianish(rng) * noise))
            .collect()
    }
}

/// Roughly standard normal: sum of three uniforms from one draw, rescaled to unit variance.
fn gaussianish(rng: &mut Rng) -> f32 {
    let v = rng.next_u64();
    let u = |s: u32| ((v >> s) & 0x1f_ffff) as f32 / 2_097_152.0;
    (u(0) + u(21) + u(42) - 1.5) * 2.0
}

fn quantise(v: f32) -> u8 {
    (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipse_covers_its_inside_and_not_its_outside() {
        let mut c = Canvas::new(64, 64, View::fit(64, 64, 1.0, (0.0, 0.0), 0.0));
        c.fill(
            &Shape::Ellipse {
                cx: 0.5,
                cy: 0.5,
                rx: 0.25,
                ry: 0.125,
                angle: 0.0,
            },
            Paint::Solid([1.0; 3]),
            1.0,
        );
        assert_eq!(c.pixel(32, 32), [1.0; 3]);
        assert_eq!(c.pixel(32, 22), [0.0; 3]);
        assert_eq!(c.pixel(46, 32), [1.0; 3]);
        assert_eq!(c.pixel(50, 32), [0.0; 3]);
    }

    #[test]
    fn polygon_either_winding_and_stroke_distance() {
        let sq = vec![(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75)];
        let rev: Vec<_> = sq.iter().rev().copied().collect();
        for pts in [sq, rev] {
            let d = Shape::Polygon(pts);
            assert!((d.distance(0.5, 0.5) + 0.25).abs() < 1e-5);
            assert!((d.distance(1.0, 0.5) - 0.25).abs() < 1e-5);
        }
        let s = Shape::Stroke {
            points: vec![(0.0, 0.0), (1.0, 0.0)],
            r: 0.1,
        };
        assert!((s.distance(0.5, 0.3) - 0.2).abs() < 1e-5);
    }

    #[test]
    fn blur_keeps_mean_and_spreads_an_edge() {
        let mut c = Canvas::new(32, 8, View::fit(32, 8, 1.0, (0.0, 0.0), 0.0));
        for y in 0..8 {
            for x in 16..32 {
                c.pixels[y * 32 + x] = [1.0; 3];
            }
        }
        let before: f32 = c.pixels.iter().map(|p| p[0]).sum();
        c.blur(2.0);
        let after: f32 = c.pixels.iter().map(|p| p[0]).sum();
        assert!((before - after).abs() < 0.5);
        assert!(c.pixel(15, 4)[0] > 0.1 && c.pixel(16, 4)[0] < 0.9);
    }
}
