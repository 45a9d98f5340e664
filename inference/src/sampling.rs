//! Token choice (greedy, seeded temperature / top-k / top-p sampling), log-softmax, and the
//! UTF-8-safe incremental detokenizer used for streaming.

use crate::types::Sampling;

/// splitmix64: small, seedable, reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the first maximum (numpy's argmax tie rule); NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// log softmax(logits)[index], computed in f64.
pub fn log_prob(logits: &[f32], index: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits
        .get(index as usize)
        .map(|&v| v as f64 - max - sum.ln())
        .unwrap_or(f64::NEG_INFINITY)
}

/// Chooses tokens; keeps its scratch buffer so sampling does not allocate per token.
#[derive(Debug)]
pub struct Sampler {
    mode: Sampling,
    rng: Rng,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(mode: Sampling) -> Sampler {
        let seed = match &mode {
            Sampling::Sample { seed, .. } => *seed,
            Sampling::Greedy => 0,
        };
        Sampler {
            mode,
            rng: Rng::new(seed),
            scratch: Vec::new(),
        }
    }

    pub fn validate(mode: &Sampling) -> Result<(), String> {
        if let Sampling::Sample {
            temperature, top_p, ..
        } = mode
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(format!(
                    "temperature {temperature} must be > 0 (use Greedy for 0)"
                ));
            }
            if !(*top_p > 0.0 && *top_p <= 1.0) {
                return Err(format!("top_p {top_p} must be in (0, 1]"));
            }
        }
        Ok(())
    }

    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        let (temperature, top_k, top_p) = match self.mode {
            Sampling::Greedy => return argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
                ..
            } => (temperature, top_k, top_p),
        };
        let s = &mut self.scratch;
        s.clear();
        s.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, &v)| (v / temperature, i as u32)),
        );
        if s.is_empty() {
            return 0;
        }
        let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if top_k > 0 && top_k < s.len() {
            s.select_nth_unstable_by(top_k - 1, desc);
            s.truncate(top_k);
        }
        s.sort_unstable_by(desc);
        let max = s[0].0;
        let mut total = 0f64;
        for e in s.iter_mut() {
            let p = ((e.0 - max) as f64).exp();
            e.0 = p as f32;
            total += p;
        }
        if top_p < 1.0 {
            let mut cum = 0f64;
            let mut keep = s.len();
            for (i, e) in s.iter().enumerate() {
                cum += e.0 as f64 / total;
                if cum >= top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            s.truncate(keep);
            total = s.iter().map(|e| e.0 as f64).sum();
        }
        let mut r = self.rng.next_f64() * total;
        for e in s.iter() {
            r -= e.0 as f64;
            if r < 0.0 {
                return e.1;
            }
        }
        s[s.len() - 1].1
    }
}

/// Turns a growing token sequence into text deltas without ever emitting half a UTF-8 character:
/// text is released only when decoding the pending tokens no longer ends in U+FFFD.
#[derive(Debug, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    pub fn new() -> Detokenizer {
        Detokenizer::default()
    }

    /// Adds a token; returns the newly completed text (may be empty).
    pub fn push(&mut self, tok: &tokenizers::Tokenizer, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let before = tok
            .decode(&self.ids[self.prefix_offset..self.read_offset], true)
            .map_err(|e| e.to_string())?;
        let now = tok
            .decode(&self.ids[self.prefix_offset..], true)
            .map_err(|e| e.to_string())?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            // Decoding with more context can re-render earlier text (e.g. leading-space rules); emit
            // only what extends the earlier rendering.
            let delta = match now.strip_prefix(before.as_str()) {
                Some(d) => d.to_string(),
                None => now
                    .get(before.len()..)
                    .map(str::to_string)
                    .unwrap_or_default(),
            };
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            return Ok(delta);
        }
        Ok(String::new())
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `stops` — text that must
/// be held back while streaming because it may turn into a stop string.
pub fn stop_overlap(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let mode = Sampling::Sample {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(mode.clone());
            (0..50).map(|_| s.choose(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(mode);
            (0..50).map(|_| s.choose(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t == 3 || t == 4));
        assert!(a.contains(&3) && a.contains(&4));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let logits = [10.0f32, 0.0, 0.0, 0.0];
        let mut s = Sampler::new(Sampling::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 1,
        });
        assert!((0..100).all(|_| s.choose(&logits) == 0));
    }

    #[test]
    fn log_prob_normalises() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f64 = (0..3).map(|i| log_prob(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn stop_overlap_finds_partial_stop_strings() {
        let stops = vec!["</s>".to_string(), "END".to_string()];
        assert_eq!(stop_overlap("hello </", &stops), 2);
        assert_eq!(stop_overlap("hello EN", &stops), 2);
        assert_eq!(stop_overlap("hello", &stops), 0);
    }
}
