//! The LFM2-VL image processor, as transformers' `Lfm2VlImageProcessor` does it (a published model's
//! `preprocessor_config.json`): smart resize to a multiple of `encoder_patch_size * downsample_factor`
//! within [min_image_tokens, max_image_tokens], tiling of large images into `tile_size` tiles plus a
//! thumbnail, rescale + normalise, channel-last patches of `encoder_patch_size`², and the image-token
//! string that stands for the image in the prompt.
//!
//! Resampling is Pillow's (= torchvision's antialiased uint8 path) through `fast_image_resize`'s
//! convolution filters, on 8-bit RGB. Each tile and the thumbnail is one "piece": the vision graph
//! runs on it with its own `spatial_shapes` and no padding.

use fast_image_resize as fr;
use serde_json::Value;

use crate::error::FrameError;
use crate::preprocess::{FrameRef, PixelLayout};

/// The processor's settings; every key of `preprocessor_config.json` that matters, with
/// transformers' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    pub downsample_factor: usize,
    pub do_image_splitting: bool,
    pub min_tiles: usize,
    pub max_tiles: usize,
    pub use_thumbnail: bool,
    pub min_image_tokens: usize,
    pub max_image_tokens: usize,
    pub encoder_patch_size: usize,
    pub tile_size: usize,
    pub max_pixels_tolerance: f64,
    /// PIL resample code: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic.
    pub resample: u8,
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// `<|image_start|>` / row-col / `<|image_end|>` tokens around the image tokens.
    pub use_image_special_tokens: bool,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            downsample_factor: 2,
            do_image_splitting: true,
            min_tiles: 2,
            max_tiles: 10,
            use_thumbnail: true,
            min_image_tokens: 64,
            max_image_tokens: 256,
            encoder_patch_size: 16,
            tile_size: 512,
            max_pixels_tolerance: 2.0,
            resample: 2,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            use_image_special_tokens: true,
        }
    }
}

impl ProcessorConfig {
    /// Reads the settings from the image processor's JSON, then the processor's, then (older
    /// releases) the model's `config.json`; a key none of them has keeps transformers' default.
    /// Errors name the key.
    pub fn from_json(sources: &[&Value]) -> Result<ProcessorConfig, String> {
        let find = |key: &str| {
            sources
                .iter()
                .find_map(|s| s.get(key).filter(|v| !v.is_null()))
        };
        let mut c = ProcessorConfig::default();
        let usize_of = |key: &str, into: &mut usize| -> Result<(), String> {
            if let Some(v) = find(key) {
                *into = v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("`{key}` must be a positive integer, not {v}"))?
                    as usize;
            }
            Ok(())
        };
        let bool_of = |key: &str, into: &mut bool| -> Result<(), String> {
            if let Some(v) = find(key) {
                *into = v
                    .as_bool()
                    .ok_or_else(|| format!("`{key}` must be true or false, not {v}"))?;
            }
            Ok(())
        };
        usize_of("downsample_factor", &mut c.downsample_factor)?;
        bool_of("do_image_splitting", &mut c.do_image_splitting)?;
        usize_of("min_tiles", &mut c.min_tiles)?;
        usize_of("max_tiles", &mut c.max_tiles)?;
        bool_of("use_thumbnail", &mut c.use_thumbnail)?;
        usize_of("min_image_tokens", &mut c.min_image_tokens)?;
        usize_of("max_image_tokens", &mut c.max_image_tokens)?;
        if find("encoder_patch_size").is_some() {
            usize_of("encoder_patch_size", &mut c.encoder_patch_size)?;
        } else {
            usize_of("patch_size", &mut c.encoder_patch_size)?;
        }
        usize_of("tile_size", &mut c.tile_size)?;
        if let Some(v) = find("max_pixels_tolerance") {
            c.max_pixels_tolerance = v.as_f64().filter(|x| *x > 0.0).ok_or_else(|| {
                format!("`max_pixels_tolerance` must be a positive number, not {v}")
            })?;
        }
        if let Some(v) = find("resample") {
            c.resample = v.as_u64().filter(|&n| n <= 3).ok_or_else(|| {
                format!("`resample` must be 0-3 (nearest, lanczos, bilinear, bicubic), not {v}")
            })? as u8;
        }
        bool_of("do_rescale", &mut c.do_rescale)?;
        if let Some(v) = find("rescale_factor") {
            c.rescale_factor = v
                .as_f64()
                .ok_or_else(|| format!("`rescale_factor` must be a number, not {v}"))?
                as f32;
        }
        bool_of("do_normalize", &mut c.do_normalize)?;
        for (key, into) in [
            ("image_mean", &mut c.image_mean),
            ("image_std", &mut c.image_std),
        ] {
            if let Some(v) = find(key) {
                *into = triple(v).ok_or_else(|| format!("`{key}` must be 3 numbers, not {v}"))?;
            }
        }
        if c.image_std.contains(&0.0) {
            return Err("`image_std` has a zero".into());
        }
        bool_of("use_image_special_tokens", &mut c.use_image_special_tokens)?;
        if c.do_image_splitting && c.min_tiles > c.max_tiles {
            return Err(format!(
                "`min_tiles` ({}) is larger than `max_tiles` ({})",
                c.min_tiles, c.max_tiles
            ));
        }
        if c.min_image_tokens > c.max_image_tokens {
            return Err(format!(
                "`min_image_tokens` ({}) is larger than `max_image_tokens` ({})",
                c.min_image_tokens, c.max_image_tokens
            ));
        }
        Ok(c)
    }

    fn factor(&self) -> usize {
        self.encoder_patch_size * self.downsample_factor
    }

    /// The single-image (or thumbnail) size: (height, width), multiples of the patch*downsample
    /// factor, aspect kept, pixel count within the token bounds.
    pub fn smart_resize(&self, height: usize, width: usize) -> (usize, usize) {
        let f = self.factor();
        let per_token = (self.factor() * self.factor()) as f64;
        let min_pixels = self.min_image_tokens as f64 * per_token;
        let max_pixels = self.max_image_tokens as f64 * per_token;
        let (h, w) = (height as f64, width as f64);
        let mut h_bar = f.max(round_by_factor(h, f));
        let mut w_bar = f.max(round_by_factor(w, f));
        if (h_bar * w_bar) as f64 > max_pixels {
            let beta = (h * w / max_pixels).sqrt();
            h_bar = f.max(((h / beta / f as f64).floor() as usize) * f);
            w_bar = f.max(((w / beta / f as f64).floor() as usize) * f);
        } else if ((h_bar * w_bar) as f64) < min_pixels {
            let beta = (min_pixels / (h * w)).sqrt();
            h_bar = ((h * beta / f as f64).ceil() as usize) * f;
            w_bar = ((w * beta / f as f64).ceil() as usize) * f;
        }
        (h_bar, w_bar)
    }

    fn too_large(&self, height: usize, width: usize) -> bool {
        let (p, f) = (self.encoder_patch_size, self.factor());
        let h_bar = p.max(round_by_factor(height as f64, f));
        let w_bar = p.max(round_by_factor(width as f64, f));
        (h_bar * w_bar) as f64
            > self.max_image_tokens as f64 * (f * f) as f64 * self.max_pixels_tolerance
    }

    /// (columns, rows) of the tile grid whose aspect ratio is closest to the image's.
    pub fn grid(&self, height: usize, width: usize) -> (usize, usize) {
        let mut ratios: Vec<(usize, usize)> = Vec::new();
        for n in self.min_tiles..=self.max_tiles {
            for w in 1..=n {
                for h in 1..=n {
                    let t = w * h;
                    if (self.min_tiles..=self.max_tiles).contains(&t) && !ratios.contains(&(w, h)) {
                        ratios.push((w, h));
                    }
                }
            }
        }
        // transformers sorts the de-duplicated set by area (a stable sort over set order, which is
        // not defined); within one area, ties are broken below exactly as it does.
        ratios.sort_by_key(|&(w, h)| w * h);
        let aspect = width as f64 / height as f64;
        let area = (width * height) as f64;
        let mut best = (1, 1);
        let mut best_diff = f64::INFINITY;
        for (w, h) in ratios {
            let diff = (aspect - w as f64 / h as f64).abs();
            if diff < best_diff {
                best_diff = diff;
                best = (w, h);
            } else if diff == best_diff {
                let target = (self.tile_size * self.tile_size * w * h) as f64;
                if area > 0.5 * target {
                    best = (w, h);
                }
            }
        }
        best
    }

    /// Image tokens a piece of `h` x `w` pixels becomes.
    pub fn tokens_for(&self, h: usize, w: usize) -> usize {
        let ds = self.downsample_factor;
        let p = self.encoder_patch_size;
        (h / p).div_ceil(ds) * (w / p).div_ceil(ds)
    }
}

fn round_by_factor(x: f64, f: usize) -> usize {
    // Python's round() rounds half to even.
    let q = x / f as f64;
    let r = q.round();
    let r = if (q - q.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    (r.max(0.0) as usize) * f
}

fn triple(v: &Value) -> Option<[f32; 3]> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| [x as f32; 3]),
        Value::Array(a) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64()? as f32;
            }
            Some(out)
        }
        _ => None,
    }
}

/// One encoder input: a tile or the (thumbnail) image, as patches.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Patches down and across (`spatial_shapes`).
    pub patches_h: usize,
    pub patches_w: usize,
    /// `patches_h * patches_w` rows of `patch² * 3` values, row-major patches, each patch
    /// (y, x, channel) with the channel fastest.
    pub pixels: Vec<f32>,
}

/// What an image became: its pieces (tiles row by row, then the thumbnail; or one image) and the
/// tokens that stand for it in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    pub pieces: Vec<Piece>,
    pub rows: usize,
    pub cols: usize,
    /// The single image's / thumbnail's size after smart resize: (height, width).
    pub resized: (usize, usize),
    /// Image tokens per piece, in piece order (what the vision graph returns for each).
    pub tokens: Vec<usize>,
}

/// Names of the special tokens the expansion uses (from the tokenizer).
#[derive(Debug, Clone)]
pub struct ImageTokens {
    pub image: String,
    pub start: String,
    pub end: String,
    pub thumbnail: String,
}

impl Default for ImageTokens {
    fn default() -> Self {
        ImageTokens {
            image: "<image>".into(),
            start: "<|image_start|>".into(),
            end: "<|image_end|>".into(),
            thumbnail: "<|img_thumbnail|>".into(),
        }
    }
}

impl ProcessedImage {
    /// The text that replaces the single `<image>` of the rendered chat template.
    pub fn placeholder(&self, cfg: &ProcessorConfig, t: &ImageTokens) -> String {
        let special = cfg.use_image_special_tokens;
        let mut s = String::new();
        if special {
            s.push_str(&t.start);
        }
        if self.rows > 1 || self.cols > 1 {
            let per_tile = cfg.tokens_for(cfg.tile_size, cfg.tile_size);
            for r in 0..self.rows {
                for c in 0..self.cols {
                    if special {
                        s.push_str(&format!("<|img_row_{}_col_{}|>", r + 1, c + 1));
                    }
                    s.push_str(&t.image.repeat(per_tile));
                }
            }
            if cfg.use_thumbnail {
                if special {
                    s.push_str(&t.thumbnail);
                }
                s.push_str(
                    &t.image
                        .repeat(cfg.tokens_for(self.resized.0, self.resized.1)),
                );
            }
        } else {
            s.push_str(
                &t.image
                    .repeat(cfg.tokens_for(self.resized.0, self.resized.1)),
            );
        }
        if special {
            s.push_str(&t.end);
        }
        s
    }

    pub fn total_tokens(&self) -> usize {
        self.tokens.iter().sum()
    }
}

/// Runs the processor on frames; keeps its resizer and buffers.
pub struct ImageProcessor {
    pub config: ProcessorConfig,
    resizer: fr::Resizer,
    lut: [[f32; 256]; 3],
}

impl std::fmt::Debug for ImageProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageProcessor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ImageProcessor {
    pub fn new(config: ProcessorConfig) -> ImageProcessor {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, entry) in table.iter_mut().enumerate() {
                let mut x = v as f32;
                if config.do_rescale {
                    x *= config.rescale_factor;
                }
                if config.do_normalize {
                    x = (x - config.image_mean[c]) / config.image_std[c];
                }
                *entry = x;
            }
        }
        ImageProcessor {
            config,
            resizer: fr::Resizer::new(),
            lut,
        }
    }

    /// The frame as pieces (tiling only when `splitting` and the image is large; the caller
    /// decides `splitting`, normally from `do_image_splitting`).
    pub fn process(
        &mut self,
        frame: &FrameRef<'_>,
        splitting: bool,
    ) -> Result<ProcessedImage, FrameError> {
        frame.validate()?;
        let rgb: std::borrow::Cow<'_, [u8]> = match frame.format {
            PixelLayout::Rgb8 => frame.data.into(),
            PixelLayout::Mono8 => frame.data.iter().flat_map(|&v| [v, v, v]).collect(),
        };
        let (w, h) = (frame.width as usize, frame.height as usize);
        let c = self.config.clone();
        let splitting = splitting && !(c.min_tiles == 1 && c.max_tiles == 1);
        let resized = c.smart_resize(h, w);
        let mut pieces = Vec::new();
        let (mut rows, mut cols) = (1, 1);
        if splitting && c.too_large(h, w) {
            let (gw, gh) = c.grid(h, w);
            let t = c.tile_size;
            let big = self.resize(&rgb, w, h, gw * t, gh * t)?;
            for r in 0..gh {
                for col in 0..gw {
                    let mut tile = Vec::with_capacity(t * t * 3);
                    for y in r * t..(r + 1) * t {
                        let row = (y * gw * t + col * t) * 3;
                        tile.extend_from_slice(&big[row..row + t * 3]);
                    }
                    pieces.push(self.patches(&tile, t, t));
                }
            }
            (rows, cols) = (gh, gw);
            if c.use_thumbnail && gw * gh != 1 {
                let thumb = self.resize(&rgb, w, h, resized.1, resized.0)?;
                pieces.push(self.patches(&thumb, resized.0, resized.1));
            }
        } else {
            let img = self.resize(&rgb, w, h, resized.1, resized.0)?;
            pieces.push(self.patches(&img, resized.0, resized.1));
        }
        let ds = self.config.downsample_factor;
        let tokens = pieces
            .iter()
            .map(|p| p.patches_h.div_ceil(ds) * p.patches_w.div_ceil(ds))
            .collect();
        Ok(ProcessedImage {
            pieces,
            rows,
            cols,
            resized,
            tokens,
        })
    }

    fn resize(
        &mut self,
        rgb: &[u8],
        w: usize,
        h: usize,
        to_w: usize,
        to_h: usize,
    ) -> Result<Vec<u8>, FrameError> {
        if (w, h) == (to_w, to_h) {
            return Ok(rgb.to_vec());
        }
        let err = |e: &dyn std::fmt::Display| FrameError::Resize {
            message: e.to_string(),
        };
        let filter = match self.config.resample {
            0 => fr::ResizeAlg::Nearest,
            1 => fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3),
            3 => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
            _ => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
        };
        let src = fr::images::ImageRef::new(w as u32, h as u32, rgb, fr::PixelType::U8x3)
            .map_err(|e| err(&e))?;
        let mut dst = fr::images::Image::new(to_w as u32, to_h as u32, fr::PixelType::U8x3);
        self.resizer
            .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(filter))
            .map_err(|e| err(&e))?;
        Ok(dst.into_vec())
    }

    fn patches(&self, rgb: &[u8], h: usize, w: usize) -> Piece {
        let p = self.config.encoder_patch_size;
        let (ph, pw) = (h / p, w / p);
        let mut pixels = Vec::with_capacity(ph * pw * p * p * 3);
        for py in 0..ph {
            for px in 0..pw {
                for y in py * p..(py + 1) * p {
                    let row = (y * w + px * p) * 3;
                    for (i, &v) in rgb[row..row + p * 3].iter().enumerate() {
                        pixels.push(self.lut[i % 3][v as usize]);
                    }
                }
            }
        }
        Piece {
            patches_h: ph,
            patches_w: pw,
            pixels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_keeps_the_token_bounds() {
        let c = ProcessorConfig::default();
        // A VGA camera frame: too many pixels for 256 tokens, scaled down keeping the aspect.
        assert_eq!(c.smart_resize(480, 640), (416, 576));
        assert!(c.tokens_for(416, 576) <= 256);
        // A tiny image is scaled up to at least 64 tokens.
        let (h, w) = c.smart_resize(48, 64);
        assert!(c.tokens_for(h, w) >= 64, "{h}x{w}");
        assert_eq!((h % 32, w % 32), (0, 0));
        // Exactly the limit stays.
        assert_eq!(c.smart_resize(512, 512), (512, 512));
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(round_by_factor(16.0, 32), 0); // 0.5 -> 0
        assert_eq!(round_by_factor(48.0, 32), 64); // 1.5 -> 2
        assert_eq!(round_by_factor(80.0, 32), 64); // 2.5 -> 2
    }

    #[test]
    fn large_images_tile_with_a_thumbnail_and_small_ones_do_not() {
        let c = ProcessorConfig::default();
        assert!(!c.too_large(480, 640));
        assert!(c.too_large(720, 1280));
        assert_eq!(c.grid(720, 1280), (2, 1));
        let mut p = ImageProcessor::new(c.clone());
        let data = vec![128u8; 1280 * 720 * 3];
        let frame = FrameRef {
            width: 1280,
            height: 720,
            format: PixelLayout::Rgb8,
            data: &data,
        };
        let out = p.process(&frame, true).unwrap();
        assert_eq!((out.rows, out.cols, out.pieces.len()), (1, 2, 3));
        assert_eq!(out.tokens[..2], [256, 256]);
        let text = out.placeholder(&c, &ImageTokens::default());
        assert_eq!(text.matches("<image>").count(), out.total_tokens());
        assert!(text.starts_with("<|image_start|><|img_row_1_col_1|><image>"));
        assert!(text.contains("<|img_row_1_col_2|>") && text.contains("<|img_thumbnail|>"));
        // Grey 128 normalises to 128/255*2-1.
        assert!((out.pieces[0].pixels[0] - (128.0 / 255.0 * 2.0 - 1.0)).abs() < 1e-6);

        let single = p.process(&frame, false).unwrap();
        assert_eq!(single.pieces.len(), 1);
        assert_eq!(
            single
                .placeholder(&c, &ImageTokens::default())
                .matches("<image>")
                .count(),
            single.total_tokens()
        );
    }

    #[test]
    fn patches_are_channel_last_row_major() {
        let c = ProcessorConfig {
            do_normalize: false,
            do_rescale: false,
            encoder_patch_size: 2,
            ..ProcessorConfig::default()
        };
        let p = ImageProcessor::new(c);
        // 4x2 image (w=4, h=2): pixel value = x*10 + y, channels c, c+1, c+2.
        let mut rgb = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                let v = x * 10 + y;
                rgb.extend_from_slice(&[v, v + 100, v + 200]);
            }
        }
        let piece = p.patches(&rgb, 2, 4);
        assert_eq!((piece.patches_h, piece.patches_w), (1, 2));
        // Second patch starts at x=2: (2,0) (3,0) (2,1) (3,1), channel fastest.
        let second = &piece.pixels[12..24];
        assert_eq!(&second[..6], &[20.0, 120.0, 220.0, 30.0, 130.0, 230.0]);
        assert_eq!(&second[6..9], &[21.0, 121.0, 221.0]);
    }

    #[test]
    fn config_errors_name_the_key() {
        let v: Value = serde_json::json!({"max_image_tokens": "many"});
        let e = ProcessorConfig::from_json(&[&v]).unwrap_err();
        assert!(e.contains("max_image_tokens"), "{e}");
        let a: Value = serde_json::json!({"min_image_tokens": 32});
        let b: Value = serde_json::json!({"min_image_tokens": 64, "tile_size": 256});
        let c = ProcessorConfig::from_json(&[&a, &b]).unwrap();
        assert_eq!((c.min_image_tokens, c.tile_size), (32, 256));
    }
}
