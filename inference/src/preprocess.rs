//! Frame -> `pixel_values`: SIMD resize (fast_image_resize, bilinear) to the model's square input,
//! then per-channel normalisation `(v/255 - mean) / std` through a 256-entry lookup table, written
//! planar (CHW) straight into the vision graph's input buffer. The resize buffers are kept, so after
//! the first frame of a given size no allocation happens per frame.

use fast_image_resize as fr;

use crate::error::FrameError;

/// How the pixels of a frame the model takes are packed: 8 bits per channel, rows tightly packed.
///
/// Not `autoneural_camera::PixelFormat`, which names what sources produce (YUYV, NV12, MJPEG, ...):
/// camera's `Converter` turns any of those into one of these two (its `Channels::Rgb` /
/// `Channels::Mono`). This crate must not depend on the camera crate (frames flow camera ->
/// inference), so it owns the layout it accepts, and the daemon maps the converter's channels onto
/// it in one place (`daemon/src/adapters/camera.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelLayout {
    /// 3 bytes per pixel, R G B.
    Rgb8,
    /// 1 byte per pixel (near-infrared cameras); replicated to the 3 channels the graph takes.
    Mono8,
}

impl PixelLayout {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelLayout::Rgb8 => 3,
            PixelLayout::Mono8 => 1,
        }
    }
}

/// A borrowed frame; rows are tightly packed (`width * bytes_per_pixel` bytes each).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub width: u32,
    pub height: u32,
    pub format: PixelLayout,
    pub data: &'a [u8],
}

pub const MAX_SIDE: u32 = 16384;

impl FrameRef<'_> {
    pub fn validate(&self) -> Result<(), FrameError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 {
            return Err(FrameError::Empty { width, height });
        }
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(FrameError::TooLarge { width, height });
        }
        let expected = width as usize * height as usize * self.format.bytes_per_pixel();
        if self.data.len() != expected {
            return Err(FrameError::SizeMismatch {
                width,
                height,
                format: self.format,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Reusable preprocessing state for one model input size.
pub struct Preprocessor {
    size: u32,
    /// lut[c][v] = (v/255 - mean[c]) / std[c]
    lut: [[f32; 256]; 3],
    resizer: fr::Resizer,
    rgb: Vec<u8>,
    mono: Vec<u8>,
}

impl Preprocessor {
    pub fn new(size: u32, mean: [f32; 3], std: [f32; 3]) -> Preprocessor {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, entry) in table.iter_mut().enumerate() {
                *entry = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        let n = size as usize * size as usize;
        Preprocessor {
            size,
            lut,
            resizer: fr::Resizer::new(),
            rgb: vec![0; n * 3],
            mono: vec![0; n],
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Writes the normalised planar [3, S, S] image into `out` (len 3*S*S).
    pub fn run(&mut self, frame: &FrameRef<'_>, out: &mut [f32]) -> Result<(), FrameError> {
        frame.validate()?;
        let s = self.size as usize;
        let plane = s * s;
        debug_assert_eq!(out.len(), 3 * plane);
        match frame.format {
            PixelLayout::Rgb8 => {
                let src = at_size(
                    &mut self.resizer,
                    frame,
                    self.size,
                    fr::PixelType::U8x3,
                    &mut self.rgb,
                )?;
                let (r, rest) = out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                for (i, px) in src.chunks_exact(3).enumerate() {
                    r[i] = self.lut[0][px[0] as usize];
                    g[i] = self.lut[1][px[1] as usize];
                    b[i] = self.lut[2][px[2] as usize];
                }
            }
            PixelLayout::Mono8 => {
                let src = at_size(
                    &mut self.resizer,
                    frame,
                    self.size,
                    fr::PixelType::U8,
                    &mut self.mono,
                )?;
                for c in 0..3 {
                    let lut = &self.lut[c];
                    for (o, &v) in out[c * plane..(c + 1) * plane].iter_mut().zip(src) {
                        *o = lut[v as usize];
                    }
                }
            }
        }
        Ok(())
    }
}

/// The frame's pixels at `size` x `size`: the frame itself when it already is, else its bilinear
/// resize into `buffer`.
fn at_size<'a>(
    resizer: &mut fr::Resizer,
    frame: &FrameRef<'a>,
    size: u32,
    pt: fr::PixelType,
    buffer: &'a mut [u8],
) -> Result<&'a [u8], FrameError> {
    if frame.width == size && frame.height == size {
        return Ok(frame.data);
    }
    resize(resizer, frame, size, pt, buffer)?;
    Ok(buffer)
}

fn resize(
    resizer: &mut fr::Resizer,
    frame: &FrameRef<'_>,
    size: u32,
    pt: fr::PixelType,
    dst: &mut [u8],
) -> Result<(), FrameError> {
    let opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    let err = |e: &dyn std::fmt::Display| FrameError::Resize {
        message: e.to_string(),
    };
    let src = fr::images::ImageRef::new(frame.width, frame.height, frame.data, pt)
        .map_err(|e| err(&e))?;
    let mut dst = fr::images::Image::from_slice_u8(size, size, dst, pt).map_err(|e| err(&e))?;
    resizer.resize(&src, &mut dst, &opts).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_rgb_is_normalised_planar() {
        let mut p = Preprocessor::new(2, [0.5; 3], [0.5; 3]);
        let data = [0u8, 255, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255];
        let mut out = vec![0f32; 12];
        p.run(
            &FrameRef {
                width: 2,
                height: 2,
                format: PixelLayout::Rgb8,
                data: &data,
            },
            &mut out,
        )
        .unwrap();
        // R plane, G plane, B plane
        assert_eq!(&out[0..4], &[-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(&out[4..8], &[1.0, -1.0, -1.0, 1.0]);
        assert_eq!(&out[8..12], &[-1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn mono_is_replicated_and_resized() {
        let mut p = Preprocessor::new(4, [0.0; 3], [1.0; 3]);
        let data = vec![255u8; 8 * 6];
        let mut out = vec![0f32; 3 * 16];
        p.run(
            &FrameRef {
                width: 8,
                height: 6,
                format: PixelLayout::Mono8,
                data: &data,
            },
            &mut out,
        )
        .unwrap();
        assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn wrong_sizes_are_typed_errors() {
        let mut p = Preprocessor::new(4, [0.0; 3], [1.0; 3]);
        let mut out = vec![0f32; 3 * 16];
        let short = FrameRef {
            width: 4,
            height: 4,
            format: PixelLayout::Rgb8,
            data: &[0u8; 47],
        };
        assert!(matches!(
            p.run(&short, &mut out),
            Err(FrameError::SizeMismatch {
                expected: 48,
                actual: 47,
                ..
            })
        ));
        let empty = FrameRef {
            width: 0,
            height: 4,
            format: PixelLayout::Mono8,
            data: &[],
        };
        assert!(matches!(
            p.run(&empty, &mut out),
            Err(FrameError::Empty { .. })
        ));
    }
}
