//! Regions of interest as the MediaPipe graphs define them: a rotated rectangle in coordinates
//! normalised to the image (x / width, y / height), and the mapping of a model's output points
//! from the crop back into the image.

use std::f32::consts::PI;

/// A point normalised to the image: x / width, y / height; z is depth in units of x (MediaPipe's
/// convention: smaller is closer to the camera).
pub type Point3 = [f32; 3];

/// An axis-aligned box normalised to the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        self.xmax - self.xmin
    }
    pub fn height(&self) -> f32 {
        self.ymax - self.ymin
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Intersection over union; 0 for boxes that do not overlap.
    pub fn iou(&self, other: &BBox) -> f32 {
        let ix = self.xmax.min(other.xmax) - self.xmin.max(other.xmin);
        let iy = self.ymax.min(other.ymax) - self.ymin.max(other.ymin);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// The smallest box holding every point.
    pub fn around(points: impl IntoIterator<Item = (f32, f32)>) -> Option<BBox> {
        let mut b: Option<BBox> = None;
        for (x, y) in points {
            b = Some(match b {
                None => BBox {
                    xmin: x,
                    ymin: y,
                    xmax: x,
                    ymax: y,
                },
                Some(b) => BBox {
                    xmin: b.xmin.min(x),
                    ymin: b.ymin.min(y),
                    xmax: b.xmax.max(x),
                    ymax: b.ymax.max(y),
                },
            });
        }
        b
    }
}

/// A rotated rectangle normalised to the image; `rotation` in radians, clockwise on screen (image
/// y points down), in [-pi, pi).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub x_center: f32,
    pub y_center: f32,
    pub width: f32,
    pub height: f32,
    pub rotation: f32,
}

impl Roi {
    /// A square region around `bbox`, `scale` times its longer side in pixels, turned so that the
    /// line from `a` to `b` (pixel coordinates) is horizontal — MediaPipe's detection-to-rect
    /// with `SQUARE_LONG` sizing.
    pub fn square_around(
        bbox: &BBox,
        image: (u32, u32),
        a: (f32, f32),
        b: (f32, f32),
        scale: f32,
    ) -> Roi {
        let (w, h) = (image.0 as f32, image.1 as f32);
        let long = (bbox.width() * w).max(bbox.height() * h);
        let angle = -(a.1 - b.1).atan2(b.0 - a.0);
        Roi {
            x_center: bbox.xmin + bbox.width() / 2.0,
            y_center: bbox.ymin + bbox.height() / 2.0,
            width: long / w * scale,
            height: long / h * scale,
            rotation: normalize_angle(angle),
        }
    }

    /// The four corners in pixels: top-left, top-right, bottom-right, bottom-left of the
    /// unrotated rectangle, turned about the centre.
    pub fn corners_px(&self, image: (u32, u32)) -> [(f32, f32); 4] {
        let (iw, ih) = (image.0 as f32, image.1 as f32);
        let (cx, cy) = (self.x_center * iw, self.y_center * ih);
        let (hw, hh) = (self.width * iw / 2.0, self.height * ih / 2.0);
        let (s, c) = self.rotation.sin_cos();
        [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
            .map(|(x, y)| (cx + x * c - y * s, cy + x * s + y * c))
    }

    /// Size in pixels, truncated like the reference (`int(width)`).
    pub fn size_px(&self, image: (u32, u32)) -> (u32, u32) {
        let w = (self.width * image.0 as f32).max(1.0) as u32;
        let h = (self.height * image.1 as f32).max(1.0) as u32;
        (w, h)
    }

    /// Maps points a model produced on a `tensor` sized crop of this region back into normalised
    /// image coordinates. `flip` undoes a horizontally mirrored crop; `pad` is the letterbox
    /// padding (left/right, top/bottom) as a fraction of the tensor.
    pub fn project(
        &self,
        raw: &[f32],
        tensor: (u32, u32),
        pad: (f32, f32),
        flip: bool,
    ) -> Vec<Point3> {
        let (tw, th) = (tensor.0 as f32, tensor.1 as f32);
        let (hs, vs) = (1.0 - 2.0 * pad.0, 1.0 - 2.0 * pad.1);
        let (s, c) = self.rotation.sin_cos();
        raw.chunks_exact(3)
            .map(|p| {
                let mut x = p[0] / tw;
                let mut y = p[1] / th;
                let mut z = p[2] / tw;
                if flip {
                    x = 1.0 - x;
                }
                x = (x - pad.0) / hs;
                y = (y - pad.1) / vs;
                z /= hs;
                let (x, y) = (x - 0.5, y - 0.5);
                [
                    (x * c - y * s) * self.width + self.x_center,
                    (x * s + y * c) * self.height + self.y_center,
                    z * self.width,
                ]
            })
            .collect()
    }
}

/// An angle brought into [-pi, pi).
pub fn normalize_angle(a: f32) -> f32 {
    a - 2.0 * PI * ((a + PI) / (2.0 * PI)).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BBox {
            xmin: 0.0,
            ymin: 0.0,
            xmax: 2.0,
            ymax: 1.0,
        };
        let b = BBox { xmin: 1.0, ..a };
        let far = BBox {
            xmin: 5.0,
            xmax: 6.0,
            ..a
        };
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&far), 0.0);
        assert!((a.iou(&b) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_level_pair_of_eyes_gives_no_rotation_and_a_tilted_one_turns_the_roi() {
        let bbox = BBox {
            xmin: 0.4,
            ymin: 0.4,
            xmax: 0.6,
            ymax: 0.6,
        };
        let level = Roi::square_around(&bbox, (100, 100), (45.0, 50.0), (55.0, 50.0), 1.5);
        assert!(level.rotation.abs() < 1e-6);
        assert!((level.width - 0.3).abs() < 1e-6);
        // right eye lower on screen: the head is tilted clockwise
        let tilted = Roi::square_around(&bbox, (100, 100), (45.0, 45.0), (55.0, 55.0), 1.0);
        assert!(
            (tilted.rotation - PI / 4.0).abs() < 1e-5,
            "{}",
            tilted.rotation
        );
    }

    #[test]
    fn projecting_the_crop_corners_gives_the_roi_corners() {
        let roi = Roi {
            x_center: 0.5,
            y_center: 0.4,
            width: 0.2,
            height: 0.3,
            rotation: 0.3,
        };
        let px = roi.corners_px((200, 100));
        let raw = [0.0, 0.0, 0.0, 64.0, 0.0, 0.0, 64.0, 64.0, 0.0];
        let pts = roi.project(&raw, (64, 64), (0.0, 0.0), false);
        // project() rotates in normalised coordinates (as the reference does), corners_px() in
        // pixels; for a square image the two agree
        let sq = Roi { height: 0.2, ..roi };
        let px_sq = sq.corners_px((100, 100));
        let pts_sq = sq.project(&raw, (64, 64), (0.0, 0.0), false);
        for (p, c) in pts_sq.iter().zip(px_sq.iter()) {
            assert!((p[0] * 100.0 - c.0).abs() < 1e-3 && (p[1] * 100.0 - c.1).abs() < 1e-3);
        }
        assert_eq!(pts.len(), 3);
        assert!(px[0].0 < px[1].0);
    }
}
