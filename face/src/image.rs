//! Turning a packed RGB frame into the networks' input tensors (NCHW f32), the way the reference
//! implementation prepares them:
//! - detector: the whole frame letterboxed to a square (black bars), resized with an area-aware
//!   bilinear filter (Pillow's `BILINEAR` resize; fast_image_resize implements the same
//!   convolution);
//! - landmarks: the rotated face region sampled bilinearly straight into the tensor (Pillow's
//!   perspective transform: pixel centres, black outside the frame);
//! - iris: the rotated eye region sampled at its own pixel size, then resized like the detector's
//!   input, mirrored for the right eye.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::FaceError;
use crate::geometry::Roi;

/// A packed 8-bit RGB image (rows of `width * 3` bytes, no padding).
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

impl<'a> RgbImage<'a> {
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self, FaceError> {
        let want = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != want {
            return Err(FaceError::Image(format!(
                "{width}x{height} RGB needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// Reusable buffers for the tensors of one pipeline (nothing is allocated per frame once the
/// sizes have been seen).
#[derive(Default)]
pub struct TensorMaker {
    resizer: Resizer,
    square: Vec<u8>,
    crop: Vec<u8>,
    small: Vec<u8>,
}

/// The letterbox padding the detector input got, as a fraction of the tensor (left = right,
/// top = bottom).
pub type Padding = (f32, f32);

impl TensorMaker {
    /// The detector's input: the frame letterboxed to a square, resized to `size`.
    pub fn letterboxed(
        &mut self,
        img: &RgbImage,
        size: u32,
        range: [f32; 2],
        out: &mut Vec<f32>,
    ) -> Result<Padding, FaceError> {
        let (w, h) = (img.width as f32, img.height as f32);
        let aspect = h / w;
        // The reference pads the shorter side to a square, in whole pixels.
        let (sq_w, sq_h, pad_x, pad_y) = if aspect < 1.0 {
            let pad_y = (1.0 - aspect) / 2.0;
            (img.width, img.width, 0.0, pad_y)
        } else {
            let pad_x = (1.0 - 1.0 / aspect) / 2.0;
            (img.height, img.height, pad_x, 0.0)
        };
        let off_x = (pad_x * sq_w as f32) as usize;
        let off_y = (pad_y * sq_h as f32) as usize;
        self.square.clear();
        self.square.resize(sq_w as usize * sq_h as usize * 3, 0);
        let row = img.width as usize * 3;
        let dst_row = sq_w as usize * 3;
        for y in 0..img.height as usize {
            let dy = y + off_y;
            if dy >= sq_h as usize {
                break;
            }
            let start = dy * dst_row + off_x * 3;
            let n = row.min(dst_row - off_x * 3);
            self.square[start..start + n].copy_from_slice(&img.data[y * row..y * row + n]);
        }
        let sq = std::mem::take(&mut self.square);
        let r = self.resize(&sq, (sq_w, sq_h), size);
        self.square = sq;
        r?;
        to_tensor(&self.small, size, range, false, out);
        Ok((pad_x, pad_y))
    }

    /// A rotated region sampled bilinearly into a `size` x `size` tensor.
    pub fn warped(
        &mut self,
        img: &RgbImage,
        roi: &Roi,
        size: u32,
        range: [f32; 2],
        out: &mut Vec<f32>,
    ) {
        warp(img, roi, (size, size), &mut self.crop);
        to_tensor(&self.crop, size, range, false, out);
    }

    /// A rotated region sampled at its own pixel size, resized to `size` (the iris input);
    /// `flip` mirrors it horizontally.
    pub fn warped_resized(
        &mut self,
        img: &RgbImage,
        roi: &Roi,
        size: u32,
        range: [f32; 2],
        flip: bool,
        out: &mut Vec<f32>,
    ) -> Result<(), FaceError> {
        let px = roi.size_px(img.size());
        let mut crop = std::mem::take(&mut self.crop);
        warp(img, roi, px, &mut crop);
        let r = self.resize(&crop, px, size);
        self.crop = crop;
        r?;
        to_tensor(&self.small, size, range, flip, out);
        Ok(())
    }

    fn resize(&mut self, src: &[u8], (w, h): (u32, u32), size: u32) -> Result<(), FaceError> {
        let fail =
            |e: &dyn std::fmt::Display| FaceError::Image(format!("resize {w}x{h} -> {size}: {e}"));
        let src = ImageRef::new(w, h, src, PixelType::U8x3).map_err(|e| fail(&e))?;
        self.small.clear();
        self.small.resize(size as usize * size as usize * 3, 0);
        let mut dst = Image::from_slice_u8(size, size, &mut self.small, PixelType::U8x3)
            .map_err(|e| fail(&e))?;
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        self.resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| fail(&e))
    }
}

/// Samples the rotated region into `out` (packed RGB, `size` pixels): output pixel centre
/// (u + 0.5, v + 0.5) maps onto the region's rectangle; bilinear between the four nearest source
/// pixels (clamped at the border); black where the centre falls outside the frame.
fn warp(img: &RgbImage, roi: &Roi, (ow, oh): (u32, u32), out: &mut Vec<u8>) {
    let [p0, p1, _, p3] = roi.corners_px(img.size());
    let (ux, uy) = ((p1.0 - p0.0) / ow as f32, (p1.1 - p0.1) / ow as f32);
    let (vx, vy) = ((p3.0 - p0.0) / oh as f32, (p3.1 - p0.1) / oh as f32);
    out.clear();
    out.resize(ow as usize * oh as usize * 3, 0);
    let (iw, ih) = (img.width as i64, img.height as i64);
    let row = img.width as usize * 3;
    let mut o = 0;
    for v in 0..oh {
        let fv = v as f32 + 0.5;
        for u in 0..ow {
            let fu = u as f32 + 0.5;
            let xin = p0.0 + fu * ux + fv * vx;
            let yin = p0.1 + fu * uy + fv * vy;
            if xin >= 0.0 && yin >= 0.0 && xin < iw as f32 && yin < ih as f32 {
                let (x, y) = (xin - 0.5, yin - 0.5);
                let (xf, yf) = (x.floor(), y.floor());
                let (dx, dy) = (x - xf, y - yf);
                let clamp_x = |x: i64| x.clamp(0, iw - 1) as usize * 3;
                let clamp_y = |y: i64| y.clamp(0, ih - 1) as usize * row;
                let (x0, x1) = (clamp_x(xf as i64), clamp_x(xf as i64 + 1));
                let (y0, y1) = (clamp_y(yf as i64), clamp_y(yf as i64 + 1));
                for c in 0..3 {
                    let a = img.data[y0 + x0 + c] as f32;
                    let b = img.data[y0 + x1 + c] as f32;
                    let d = img.data[y1 + x0 + c] as f32;
                    let e = img.data[y1 + x1 + c] as f32;
                    let top = a + (b - a) * dx;
                    let bottom = d + (e - d) * dx;
                    out[o + c] = (top + (bottom - top) * dy).round().clamp(0.0, 255.0) as u8;
                }
            }
            o += 3;
        }
    }
}

/// Packed RGB `size` x `size` -> NCHW f32 with values mapped linearly from [0, 255] onto `range`.
fn to_tensor(rgb: &[u8], size: u32, range: [f32; 2], flip: bool, out: &mut Vec<f32>) {
    let n = size as usize;
    let plane = n * n;
    out.clear();
    out.resize(3 * plane, 0.0);
    let scale = (range[1] - range[0]) / 255.0;
    for y in 0..n {
        for x in 0..n {
            let sx = if flip { n - 1 - x } else { x };
            let s = (y * n + sx) * 3;
            for c in 0..3 {
                out[c * plane + y * n + x] = rgb[s + c] as f32 * scale + range[0];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 128]);
            }
        }
        v
    }

    #[test]
    fn an_unrotated_full_frame_roi_reproduces_the_frame() {
        let data = gradient(32, 32);
        let img = RgbImage::new(32, 32, &data).unwrap();
        let roi = Roi {
            x_center: 0.5,
            y_center: 0.5,
            width: 1.0,
            height: 1.0,
            rotation: 0.0,
        };
        let mut out = Vec::new();
        warp(&img, &roi, (32, 32), &mut out);
        assert_eq!(out, data);
    }

    #[test]
    fn a_wide_frame_is_letterboxed_top_and_bottom() {
        let data = vec![255u8; 64 * 32 * 3];
        let img = RgbImage::new(64, 32, &data).unwrap();
        let mut t = TensorMaker::default();
        let mut out = Vec::new();
        let pad = t.letterboxed(&img, 16, [-1.0, 1.0], &mut out).unwrap();
        assert_eq!(pad, (0.0, 0.25));
        // first row black (-1), middle row white (+1)
        assert!((out[0] + 1.0).abs() < 1e-6);
        assert!((out[8 * 16] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_flipped_tensor_mirrors_columns() {
        let data = gradient(4, 4);
        let mut a = Vec::new();
        let mut b = Vec::new();
        to_tensor(&data, 4, [0.0, 1.0], false, &mut a);
        to_tensor(&data, 4, [0.0, 1.0], true, &mut b);
        assert_eq!(a[0], b[3]);
        assert_eq!(a[5], b[6]);
    }

    #[test]
    fn a_short_buffer_is_an_error_not_a_panic() {
        assert!(RgbImage::new(10, 10, &[0u8; 10]).is_err());
        assert!(RgbImage::new(0, 10, &[]).is_err());
    }
}
