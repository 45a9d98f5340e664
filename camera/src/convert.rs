//! Conversion of frames into the model's input: packed 8-bit RGB (HWC) or mono, resized with
//! fast_image_resize's SIMD kernels.
//!
//! A [`Converter`] owns every buffer it needs and reuses them, so after the first frame of a given
//! size no conversion allocates (the JPEG decoder's own tables excepted: zune-jpeg builds them per
//! image). Every input is checked before it is touched: a truncated buffer, a stride smaller than a
//! row, a zero or absurd size, or an undecodable JPEG gives a [`ConvertError`], never a panic.
//!
//! Colour: YUYV and NV12 are BT.601 limited range (what V4L2 reports for SD/webcam YUV); JPEG is
//! JFIF full range (decoded by zune-jpeg, chosen over `image` by measurement, see
//! bench/camera-conversions.md); Y16 keeps its high byte; mono output from YUV is expanded to full
//! range so it matches a GREY camera's values.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{Frame, PixelFormat};

/// Frames larger than this in either dimension are refused (a guard against corrupt headers asking
/// for gigabytes).
pub const MAX_DIMENSION: u32 = 8192;

/// The channels the model wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Packed R, G, B (mono sources are replicated to three channels).
    Rgb,
    /// One luminance channel.
    Mono,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::Rgb => 3,
            Channels::Mono => 1,
        }
    }
}

/// How the frame's aspect ratio is mapped onto the output's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The whole frame, scaled independently in x and y.
    Stretch,
    /// The largest centred region with the output's aspect ratio, scaled uniformly.
    CenterCrop,
}

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    /// Area-aware bilinear (the kernel widens when shrinking): the default, good and fast.
    Bilinear,
    Lanczos3,
}

/// What a [`Converter`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    pub width: u32,
    pub height: u32,
    pub channels: Channels,
    pub fit: Fit,
    pub filter: Filter,
}

impl OutputSpec {
    /// A square model input, stretched, bilinear.
    pub fn square(size: u32, channels: Channels) -> OutputSpec {
        OutputSpec {
            width: size,
            height: size,
            channels,
            fit: Fit::Stretch,
            filter: Filter::Bilinear,
        }
    }

    /// Bytes of one converted image (`width * height * channels`).
    pub fn len(&self) -> usize {
        self.width as usize * self.height as usize * self.channels.count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a frame could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid size {width}x{height} (must be 1..={MAX_DIMENSION} in each dimension)")]
    BadSize { width: u32, height: u32 },
    #[error("{format} stride {stride} is smaller than a row ({min} bytes)")]
    BadStride {
        format: PixelFormat,
        stride: u32,
        min: u64,
    },
    #[error("{format} frame truncated: {got} bytes, need {need}")]
    Truncated {
        format: PixelFormat,
        need: u64,
        got: usize,
    },
    #[error("corrupt JPEG: {0}")]
    Jpeg(String),
    #[error("resize failed: {0}")]
    Resize(String),
}

impl ConvertError {
    /// True when the frame's content is bad (drop and count it) rather than its geometry.
    pub fn is_corrupt_frame(&self) -> bool {
        matches!(self, ConvertError::Jpeg(_) | ConvertError::Truncated { .. })
    }
}

/// Converts frames of any [`PixelFormat`] into one [`OutputSpec`], reusing its buffers.
pub struct Converter {
    spec: OutputSpec,
    resizer: Resizer,
    options: ResizeOptions,
    /// Full-resolution intermediate (RGB or luma) for formats that need a colour conversion.
    full: Vec<u8>,
    /// Resized luma before replication to RGB.
    mono: Vec<u8>,
    out: Vec<u8>,
}

impl Converter {
    pub fn new(spec: OutputSpec) -> Result<Converter, ConvertError> {
        check_size(spec.width, spec.height)?;
        let algorithm = match spec.filter {
            Filter::Nearest => ResizeAlg::Nearest,
            Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Filter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        };
        let mut options = ResizeOptions::new().resize_alg(algorithm);
        if spec.fit == Fit::CenterCrop {
            options = options.fit_into_destination(Some((0.5, 0.5)));
        }
        Ok(Converter {
            spec,
            resizer: Resizer::new(),
            options,
            full: Vec::new(),
            mono: Vec::new(),
            out: vec![0; spec.len()],
        })
    }

    pub fn spec(&self) -> &OutputSpec {
        &self.spec
    }

    /// Converts a frame; the result (`spec().len()` bytes, packed HWC) lives until the next call.
    pub fn convert(&mut self, frame: &Frame) -> Result<&[u8], ConvertError> {
        self.convert_raw(
            frame.format,
            frame.width,
            frame.height,
            frame.stride,
            &frame.data,
        )
    }

    /// Like [`Converter::convert`] for pixels that are not in a [`Frame`].
    /// For MJPEG, `width`, `height` and `stride` are ignored: the JPEG's header decides.
    pub fn convert_raw(
        &mut self,
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: u32,
        data: &[u8],
    ) -> Result<&[u8], ConvertError> {
        let mono = self.spec.channels == Channels::Mono;
        if format == PixelFormat::Mjpeg {
            let (w, h) = decode_jpeg(data, self.spec.channels, &mut self.full)?;
            let len = w as usize * h as usize * self.spec.channels.count();
            self.resize_full(w, h, len)?;
            return Ok(&self.out);
        }
        check_frame(format, width, height, stride, data.len())?;
        let (w, h, s) = (width as usize, height as usize, stride as usize);
        match (format, mono) {
            // Formats whose pixels already are the wanted type: resize straight from the frame
            // when its rows are contiguous.
            (PixelFormat::Grey, _) if s == w => self.resize(&data[..w * h], w, h, 1)?,
            (PixelFormat::Rgb24, false) if s == w * 3 => {
                self.resize(&data[..w * h * 3], w, h, 3)?
            }
            (PixelFormat::Grey, _) => {
                copy_rows(data, w, h, s, grow(&mut self.full, w * h))?;
                self.resize_full(width, height, w * h)?
            }
            (PixelFormat::Rgb24, false) => {
                copy_rows(data, w * 3, h, s, grow(&mut self.full, w * h * 3))?;
                self.resize_full(width, height, w * h * 3)?
            }
            (PixelFormat::Rgb24, true) => {
                rgb_to_luma(data, w, h, s, grow(&mut self.full, w * h))?;
                self.resize_full(width, height, w * h)?
            }
            (PixelFormat::Y16, _) => {
                y16_to_grey(data, w, h, s, grow(&mut self.full, w * h))?;
                self.resize_full(width, height, w * h)?
            }
            (PixelFormat::Yuyv, false) => {
                yuyv_to_rgb(data, w, h, s, grow(&mut self.full, w * h * 3))?;
                self.resize_full(width, height, w * h * 3)?
            }
            (PixelFormat::Yuyv, true) => {
                yuyv_to_luma(data, w, h, s, grow(&mut self.full, w * h))?;
                self.resize_full(width, height, w * h)?
            }
            (PixelFormat::Nv12, false) => {
                nv12_to_rgb(data, w, h, s, grow(&mut self.full, w * h * 3))?;
                self.resize_full(width, height, w * h * 3)?
            }
            (PixelFormat::Nv12, true) => {
                nv12_to_luma(data, w, h, s, grow(&mut self.full, w * h))?;
                self.resize_full(width, height, w * h)?
            }
            // Decoded above, before the raw-geometry checks.
            (PixelFormat::Mjpeg, _) => {}
        }
        Ok(&self.out)
    }

    /// Resizes the first `len` bytes of the intermediate buffer (`len / (w*h)` channels).
    fn resize_full(&mut self, w: u32, h: u32, len: usize) -> Result<(), ConvertError> {
        let full = std::mem::take(&mut self.full);
        let channels = len / (w as usize * h as usize).max(1);
        let result = self.resize(&full[..len], w as usize, h as usize, channels);
        self.full = full;
        result
    }

    /// Resizes a packed 1- or 3-channel image into `out`, replicating mono to RGB if wanted.
    fn resize(
        &mut self,
        src: &[u8],
        w: usize,
        h: usize,
        channels: usize,
    ) -> Result<(), ConvertError> {
        let pixel = if channels == 3 {
            PixelType::U8x3
        } else {
            PixelType::U8
        };
        let src = ImageRef::new(w as u32, h as u32, src, pixel)
            .map_err(|e| ConvertError::Resize(e.to_string()))?;
        let (ow, oh) = (self.spec.width, self.spec.height);
        let replicate = channels == 1 && self.spec.channels == Channels::Rgb;
        let dst_buf = if replicate {
            grow(&mut self.mono, ow as usize * oh as usize)
        } else {
            &mut self.out[..]
        };
        let mut dst = Image::from_slice_u8(ow, oh, dst_buf, pixel)
            .map_err(|e| ConvertError::Resize(e.to_string()))?;
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .map_err(|e| ConvertError::Resize(e.to_string()))?;
        if replicate {
            let n = ow as usize * oh as usize;
            grey_to_rgb(&self.mono[..n], &mut self.out);
        }
        Ok(())
    }
}

/// Makes `buf` at least `len` long (allocating only when it grows) and returns its first `len` bytes.
/// A buffer more than twice as long as needed is replaced: one huge frame must not keep its
/// intermediate buffers resident for the rest of the run.
fn grow(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() > len.saturating_mul(2) {
        *buf = vec![0; len];
    } else if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

fn check_size(width: u32, height: u32) -> Result<(), ConvertError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(ConvertError::BadSize { width, height });
    }
    Ok(())
}

/// Checks that `len` bytes with rows `stride` apart hold a `width` x `height` frame of `format`.
/// The last row of each plane only needs its pixels, not a full stride.
pub fn check_frame(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    len: usize,
) -> Result<(), ConvertError> {
    check_size(width, height)?;
    let Some(min) = format.min_stride(width) else {
        return Ok(());
    };
    if u64::from(stride) < min {
        return Err(ConvertError::BadStride {
            format,
            stride,
            min,
        });
    }
    let slack = u64::from(stride) - min;
    let need = match format.frame_len(stride, height) {
        // Two planes, each may end early on its last row.
        Some(full) if format == PixelFormat::Nv12 => full - 2 * slack,
        Some(full) => full - slack,
        None => 0,
    };
    if (len as u64) < need {
        return Err(ConvertError::Truncated {
            format,
            need,
            got: len,
        });
    }
    Ok(())
}

/// Row `y` of a plane starting at `base`: exactly `row_len` bytes.
fn row(
    src: &[u8],
    base: usize,
    y: usize,
    stride: usize,
    row_len: usize,
) -> Result<&[u8], ConvertError> {
    let start = base + y * stride;
    src.get(start..start + row_len)
        .ok_or(ConvertError::Resize(format!(
            "row {y} outside the buffer (checked sizes disagree)"
        )))
}

/// Copies `h` rows of `row_len` bytes, `stride` apart, into a packed buffer.
pub fn copy_rows(
    src: &[u8],
    row_len: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    for (y, out) in dst.chunks_exact_mut(row_len).take(h).enumerate() {
        out.copy_from_slice(row(src, 0, y, stride, row_len)?);
    }
    Ok(())
}

/// BT.601 limited-range Y'CbCr to 8-bit RGB in 8.8 fixed point (`u`, `v` already minus 128).
#[inline(always)]
fn ycbcr(y: u8, u: i32, v: i32) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 298 + 128;
    let clamp = |x: i32| (x >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * v),
        clamp(c - 100 * u - 208 * v),
        clamp(c + 516 * u),
    ]
}

/// Limited-range luma (16..235) to full range (0..255).
static LIMITED_TO_FULL: [u8; 256] = {
    let mut lut = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let v = ((i as i32 - 16) * 255 * 2 + 219) / (219 * 2);
        lut[i] = if v < 0 {
            0
        } else if v > 255 {
            255
        } else {
            v as u8
        };
        i += 1;
    }
    lut
};

/// YUYV (Y0 U Y1 V) to packed RGB. `dst` is `w * h * 3` bytes; an odd last pixel uses Y0.
pub fn yuyv_to_rgb(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let row_len = w.div_ceil(2) * 4;
    for (y, out) in dst.chunks_exact_mut(w * 3).take(h).enumerate() {
        let line = row(src, 0, y, stride, row_len)?;
        let mut pairs = out.chunks_exact_mut(6);
        for (px, yuyv) in (&mut pairs).zip(line.chunks_exact(4)) {
            let (u, v) = (i32::from(yuyv[1]) - 128, i32::from(yuyv[3]) - 128);
            px[..3].copy_from_slice(&ycbcr(yuyv[0], u, v));
            px[3..].copy_from_slice(&ycbcr(yuyv[2], u, v));
        }
        let rest = pairs.into_remainder();
        if rest.len() == 3 {
            let last = &line[row_len - 4..];
            rest.copy_from_slice(&ycbcr(
                last[0],
                i32::from(last[1]) - 128,
                i32::from(last[3]) - 128,
            ));
        }
    }
    Ok(())
}

/// YUYV to full-range luma. `dst` is `w * h` bytes.
pub fn yuyv_to_luma(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let row_len = w.div_ceil(2) * 4;
    for (y, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let line = row(src, 0, y, stride, row_len)?;
        for (i, px) in out.iter_mut().enumerate() {
            *px = LIMITED_TO_FULL[usize::from(line[i * 2])];
        }
    }
    Ok(())
}

/// NV12 (Y plane, then interleaved U/V at half resolution, same stride) to packed RGB.
pub fn nv12_to_rgb(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let chroma_base = stride * h;
    let chroma_len = w.div_ceil(2) * 2;
    for (y, out) in dst.chunks_exact_mut(w * 3).take(h).enumerate() {
        let luma = row(src, 0, y, stride, w)?;
        let chroma = row(src, chroma_base, y / 2, stride, chroma_len)?;
        let mut pairs = out.chunks_exact_mut(6);
        for ((px, yy), uv) in (&mut pairs)
            .zip(luma.chunks_exact(2))
            .zip(chroma.chunks_exact(2))
        {
            let (u, v) = (i32::from(uv[0]) - 128, i32::from(uv[1]) - 128);
            px[..3].copy_from_slice(&ycbcr(yy[0], u, v));
            px[3..].copy_from_slice(&ycbcr(yy[1], u, v));
        }
        let rest = pairs.into_remainder();
        if rest.len() == 3 {
            let uv = &chroma[chroma_len - 2..];
            rest.copy_from_slice(&ycbcr(
                luma[w - 1],
                i32::from(uv[0]) - 128,
                i32::from(uv[1]) - 128,
            ));
        }
    }
    Ok(())
}

/// NV12's luma plane to full-range luma.
pub fn nv12_to_luma(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    for (y, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let luma = row(src, 0, y, stride, w)?;
        for (o, &l) in out.iter_mut().zip(luma) {
            *o = LIMITED_TO_FULL[usize::from(l)];
        }
    }
    Ok(())
}

/// 16-bit little-endian luminance to 8 bits (the high byte).
pub fn y16_to_grey(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    for (y, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let line = row(src, 0, y, stride, w * 2)?;
        for (o, px) in out.iter_mut().zip(line.chunks_exact(2)) {
            *o = px[1];
        }
    }
    Ok(())
}

/// Packed RGB to full-range BT.601 luma.
pub fn rgb_to_luma(
    src: &[u8],
    w: usize,
    h: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    for (y, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        let line = row(src, 0, y, stride, w * 3)?;
        for (o, px) in out.iter_mut().zip(line.chunks_exact(3)) {
            let l = 77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2]) + 128;
            *o = (l >> 8) as u8;
        }
    }
    Ok(())
}

/// Replicates luma into three channels (`dst` is at least `3 * src.len()`).
pub fn grey_to_rgb(src: &[u8], dst: &mut [u8]) {
    for (o, &l) in dst.chunks_exact_mut(3).zip(src) {
        o.copy_from_slice(&[l, l, l]);
    }
}

/// Decodes a JPEG into `buf` as RGB or luma with zune-jpeg; returns its size.
/// Guards against decoder panics too: a corrupt camera frame must never take the process down.
pub fn decode_jpeg(
    data: &[u8],
    channels: Channels,
    buf: &mut Vec<u8>,
) -> Result<(u32, u32), ConvertError> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
        return Err(ConvertError::Jpeg("no JPEG start-of-image marker".into()));
    }
    let colorspace = match channels {
        Channels::Rgb => ColorSpace::RGB,
        Channels::Mono => ColorSpace::Luma,
    };
    let options = DecoderOptions::default()
        .set_max_width(MAX_DIMENSION as usize)
        .set_max_height(MAX_DIMENSION as usize)
        .jpeg_set_out_colorspace(colorspace);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
        decoder
            .decode_headers()
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        let (w, h) = decoder
            .dimensions()
            .ok_or_else(|| ConvertError::Jpeg("no dimensions".into()))?;
        let (w, h) = (w as u32, h as u32);
        check_size(w, h)?;
        let len = w as usize * h as usize * channels.count();
        decoder
            .decode_into(grow(buf, len))
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        Ok((w, h))
    }));
    decoded.unwrap_or_else(|_| Err(ConvertError::Jpeg("the decoder panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[u8], b: &[u8], tol: u8) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tol)
    }

    /// A converter that keeps the frame's size (so values are checked without resampling).
    fn same_size(w: u32, h: u32, channels: Channels) -> Converter {
        let mut spec = OutputSpec::square(w, channels);
        spec.height = h;
        spec.filter = Filter::Nearest;
        Converter::new(spec).expect("valid spec")
    }

    // BT.601 limited-range codes of 100 % colours: (Y, U, V) -> RGB.
    const WHITE: (u8, u8, u8) = (235, 128, 128);
    const BLACK: (u8, u8, u8) = (16, 128, 128);
    const RED: (u8, u8, u8) = (81, 90, 240);
    const BLUE: (u8, u8, u8) = (41, 240, 110);

    #[test]
    fn one_huge_frame_does_not_keep_its_intermediate_buffer() {
        let mut c = Converter::new(OutputSpec::square(16, Channels::Rgb)).unwrap();
        let (bw, bh) = (1600u32, 1200u32);
        let big = vec![128u8; (bw * bh * 2) as usize];
        c.convert_raw(PixelFormat::Yuyv, bw, bh, bw * 2, &big)
            .unwrap();
        assert!(c.full.len() >= (bw * bh * 3) as usize);
        let small = vec![128u8; 64 * 48 * 2];
        c.convert_raw(PixelFormat::Yuyv, 64, 48, 128, &small)
            .unwrap();
        assert_eq!(c.full.len(), 64 * 48 * 3);
    }

    #[test]
    fn yuyv_odd_width_with_padded_stride_gives_known_colours() {
        // 3x2, stride 12 (+4 padding bytes of garbage). Row 0: white, black | red(odd last).
        // Row 1: blue, blue | white.
        let (w, k, r, b) = (WHITE, BLACK, RED, BLUE);
        let data = [
            w.0, w.1, k.0, w.2, r.0, r.1, 0, r.2, 9, 9, 9, 9, //
            b.0, b.1, b.0, b.2, w.0, w.1, 0, w.2, 9, 9, 9, 9,
        ];
        // The first pair shares chroma, so use pixels whose chroma agrees: (white, black) share U/V.
        let mut c = same_size(3, 2, Channels::Rgb);
        let out = c
            .convert_raw(PixelFormat::Yuyv, 3, 2, 12, &data)
            .expect("converts");
        let want = [
            255, 255, 255, 0, 0, 0, 255, 0, 0, //
            0, 0, 255, 0, 0, 255, 255, 255, 255,
        ];
        assert!(close(out, &want, 2), "{out:?}");
        let mut m = same_size(3, 2, Channels::Mono);
        let luma = m
            .convert_raw(PixelFormat::Yuyv, 3, 2, 12, &data)
            .expect("converts");
        assert_eq!(luma[..2], [255, 0]);
    }

    #[test]
    fn nv12_odd_size_uses_the_shared_chroma() {
        // 3x3, stride 4: 3 luma rows, 2 chroma rows (U,V pairs for columns 0-1 and 2).
        let data = [
            RED.0, RED.0, BLUE.0, 0, //
            RED.0, RED.0, BLUE.0, 0, //
            WHITE.0, WHITE.0, BLACK.0, 0, //
            RED.1, RED.2, BLUE.1, BLUE.2, //
            128, 128, 128, 128,
        ];
        let mut c = same_size(3, 3, Channels::Rgb);
        let out = c
            .convert_raw(PixelFormat::Nv12, 3, 3, 4, &data)
            .expect("converts");
        let want = [
            255, 0, 0, 255, 0, 0, 0, 0, 255, //
            255, 0, 0, 255, 0, 0, 0, 0, 255, //
            255, 255, 255, 255, 255, 255, 0, 0, 0,
        ];
        assert!(close(out, &want, 2), "{out:?}");
        let mut m = same_size(3, 3, Channels::Mono);
        let luma = m
            .convert_raw(PixelFormat::Nv12, 3, 3, 4, &data)
            .expect("converts");
        assert_eq!(luma[6..], [255, 255, 0]);
    }

    #[test]
    fn grey_and_y16_replicate_to_rgb_and_respect_stride() {
        let grey = [10, 20, 30, 0, 40, 50, 60, 0];
        let mut c = same_size(3, 2, Channels::Rgb);
        let out = c
            .convert_raw(PixelFormat::Grey, 3, 2, 4, &grey)
            .expect("converts");
        assert_eq!(
            out,
            [
                10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40, 50, 50, 50, 60, 60, 60
            ]
        );
        // Y16 little-endian: the high byte is what is kept.
        let y16 = [0xFF, 0x12, 0x00, 0xAB, 0x34, 0x00];
        let mut m = same_size(3, 1, Channels::Mono);
        assert_eq!(
            m.convert_raw(PixelFormat::Y16, 3, 1, 6, &y16)
                .expect("converts"),
            [0x12, 0xAB, 0x00]
        );
    }

    #[test]
    fn rgb_to_mono_uses_bt601_weights() {
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let mut m = same_size(4, 1, Channels::Mono);
        let out = m
            .convert_raw(PixelFormat::Rgb24, 4, 1, 12, &rgb)
            .expect("converts");
        assert_eq!(out, [77, 149, 29, 255]);
    }

    #[test]
    fn bad_geometry_is_an_error_not_a_panic() {
        let mut c = Converter::new(OutputSpec::square(8, Channels::Rgb)).expect("spec");
        let err = c
            .convert_raw(PixelFormat::Yuyv, 4, 4, 8, &[0; 31])
            .unwrap_err();
        assert_eq!(
            err,
            ConvertError::Truncated {
                format: PixelFormat::Yuyv,
                need: 32,
                got: 31
            }
        );
        let err = c
            .convert_raw(PixelFormat::Yuyv, 4, 4, 6, &[0; 64])
            .unwrap_err();
        assert!(matches!(err, ConvertError::BadStride { min: 8, .. }));
        let err = c
            .convert_raw(PixelFormat::Nv12, 4, 4, 4, &[0; 23])
            .unwrap_err();
        assert!(matches!(err, ConvertError::Truncated { need: 24, .. }));
        let err = c.convert_raw(PixelFormat::Grey, 0, 4, 0, &[]).unwrap_err();
        assert!(matches!(err, ConvertError::BadSize { .. }));
        let err = c
            .convert_raw(PixelFormat::Y16, 100_000, 1, 200_000, &[])
            .unwrap_err();
        assert!(matches!(err, ConvertError::BadSize { .. }));
        // A last row that ends without its stride padding is complete.
        assert!(c.convert_raw(PixelFormat::Grey, 3, 2, 8, &[0; 11]).is_ok());
        assert!(Converter::new(OutputSpec::square(0, Channels::Mono)).is_err());
    }

    #[test]
    fn corrupt_and_truncated_jpegs_are_errors() {
        let mut c = Converter::new(OutputSpec::square(8, Channels::Rgb)).expect("spec");
        for junk in [
            &[][..],
            &[0xFF, 0xD8][..],
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 1, 2][..],
            &[1, 2, 3, 4, 5][..],
        ] {
            let err = c
                .convert_raw(PixelFormat::Mjpeg, 0, 0, 0, junk)
                .unwrap_err();
            assert!(err.is_corrupt_frame(), "{err}");
        }
        let jpeg = test_jpeg(16, 8);
        let err = c.convert_raw(PixelFormat::Mjpeg, 0, 0, 0, &jpeg[..jpeg.len() / 3]);
        // A truncated scan may decode as partially grey (decoders pad) or fail; it must not panic.
        drop(err);
    }

    /// A 16x8 JPEG: left half red, right half blue (encoded with the `image` crate).
    fn test_jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut img = image::RgbImage::new(w, h);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < w / 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            };
        }
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .expect("encode");
        out
    }

    #[test]
    fn mjpeg_decodes_to_the_encoded_colours() {
        let jpeg = test_jpeg(16, 8);
        let mut c = Converter::new(OutputSpec {
            width: 4,
            height: 2,
            ..OutputSpec::square(4, Channels::Rgb)
        })
        .expect("spec");
        let out = c
            .convert_raw(PixelFormat::Mjpeg, 0, 0, 0, &jpeg)
            .expect("decodes");
        assert!(close(&out[..3], &[255, 0, 0], 12), "{out:?}");
        assert!(close(&out[9..12], &[0, 0, 255], 12), "{out:?}");
        let mut m = Converter::new(OutputSpec::square(4, Channels::Mono)).expect("spec");
        let luma = m
            .convert_raw(PixelFormat::Mjpeg, 0, 0, 0, &jpeg)
            .expect("decodes");
        assert!(
            luma[0].abs_diff(76) <= 12 && luma[3].abs_diff(29) <= 12,
            "{luma:?}"
        );
    }

    #[test]
    fn resizing_keeps_regions_and_center_crop_cuts_the_sides() {
        // 8x4 RGB: columns 0-1 black, 2-3 red, 4-5 blue, 6-7 black.
        let mut rgb = Vec::new();
        for _ in 0..4 {
            for x in 0..8 {
                rgb.extend_from_slice(match x / 2 {
                    1 => &[255, 0, 0],
                    2 => &[0, 0, 255],
                    _ => &[0, 0, 0],
                });
            }
        }
        let mut stretch = Converter::new(OutputSpec {
            width: 4,
            height: 2,
            ..OutputSpec::square(4, Channels::Rgb)
        })
        .expect("spec");
        let out = stretch
            .convert_raw(PixelFormat::Rgb24, 8, 4, 24, &rgb)
            .expect("resizes");
        // Bilinear blends neighbours a little; each output pixel keeps its region's colour.
        let kinds: Vec<char> = out[..12].chunks(3).map(kind).collect();
        assert_eq!(kinds, ['k', 'r', 'b', 'k'], "{out:?}");
        let mut crop = Converter::new(OutputSpec {
            fit: Fit::CenterCrop,
            ..OutputSpec::square(2, Channels::Rgb)
        })
        .expect("spec");
        let out = crop
            .convert_raw(PixelFormat::Rgb24, 8, 4, 24, &rgb)
            .expect("resizes");
        let kinds: Vec<char> = out[..6].chunks(3).map(kind).collect();
        assert_eq!(kinds, ['r', 'b'], "{out:?}");
    }

    /// Classifies a pixel as black, red, blue or other.
    fn kind(px: &[u8]) -> char {
        match (px[0] > 150, px[1] > 64, px[2] > 150) {
            _ if px.iter().all(|&c| c < 64) => 'k',
            (true, false, false) => 'r',
            (false, false, true) => 'b',
            _ => '?',
        }
    }

    #[test]
    fn buffers_are_reused_after_the_first_frame() {
        let data = vec![128u8; 64 * 48 * 2];
        let mut c = Converter::new(OutputSpec::square(16, Channels::Rgb)).expect("spec");
        let first = c
            .convert_raw(PixelFormat::Yuyv, 64, 48, 128, &data)
            .expect("ok")
            .as_ptr();
        let full = c.full.as_ptr();
        let second = c
            .convert_raw(PixelFormat::Yuyv, 64, 48, 128, &data)
            .expect("ok")
            .as_ptr();
        assert_eq!((first, full), (second, c.full.as_ptr()));
    }
}
