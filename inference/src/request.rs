//! The request path both model formats share, over the `Backend` trait each implements (encode a
//! frame's prefix, token ids, feed, save/restore decoder state): `encode_frame`, `probe`,
//! `generate` and `generate_ids`, probe scoring, and the decoding loop (sampling, stop tokens and
//! strings, streaming). `engine` calls these; `bundle_engine` and `published` implement `Backend`.
//!
//! Safety first: a generation holds the engine for many decoder steps, so between two of its tokens
//! (and between its frame prefix and its prompt, and between two prefill calls of a long prompt) it
//! asks its `Preempt` source for a waiting safety request. One that is waiting runs at once: the generation's decoder state is moved aside
//! (`Backend::suspend`), the probes run from their own frame, and the state is put back
//! (`Backend::resume`) before the next token, which is therefore the same as without the pause.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::probes::Probe;
use crate::sampling::{Detokenizer, Sampler, log_prob, stop_overlap};
use crate::types::{
    FinishReason, Frame, GenerateParams, Generation, ProbeAnswer, ProbeOutcome, Timings,
};

/// A safety request that runs inside a generation, between two of its tokens.
pub struct Preemption {
    pub frame: Frame,
    pub probes: Vec<Probe>,
    /// Receives the probes' outcome (called on the thread running the engine).
    pub done: Box<dyn FnOnce(Result<ProbeOutcome>) + Send>,
}

/// Asked by a running generation, between two tokens, for a safety request to run first (`None`:
/// nothing is waiting). The `Worker` hands out its queued safety jobs this way.
pub type Preempt<'a> = &'a mut dyn FnMut() -> Option<Preemption>;

/// What the decoding loop needs from a model whose logits are ready for the next token.
pub(crate) trait Decode {
    fn logits(&self) -> &[f32];
    fn feed_token(&mut self, tok: u32) -> Result<()>;
    /// Whether one more token fits the context.
    fn has_room(&self) -> bool;
    fn tokenizer(&self) -> &tokenizers::Tokenizer;
    /// The model's own stop tokens (eos, end of turn).
    fn stop_ids(&self) -> &[u32];
}

/// What a model format provides for the requests (encode, probe, generate) run here, once for both.
pub(crate) trait Backend: Decode {
    /// The decoder state after a question, kept to return to before each multi-token answer.
    type Mark: Default;
    /// A new request: clears the per-request counters (time inside `Session::run`).
    fn begin(&mut self);
    /// Encodes the frame's image + prompt prefix unless this frame (by id) is already encoded.
    fn ensure_prefix(&mut self, frame: &Frame, timings: &mut Timings) -> Result<()>;
    /// Fills the request's totals into `timings`.
    fn finish(&self, timings: &mut Timings, start: Instant);
    /// Token ids of a probe question or HMI question (what follows the image) / of an answer,
    /// cached per text.
    fn question_ids(&mut self, question: &str) -> Result<Arc<[u32]>>;
    fn answer_ids(&mut self, answer: &str) -> Result<Arc<[u32]>>;
    /// Back to the state right after the frame's prefix.
    fn restore_prefix(&mut self) -> Result<()>;
    /// An empty context: no frame prefix, position 0 (a request of token ids alone).
    fn clear(&mut self) -> Result<()>;
    fn feed_ids(&mut self, ids: &[u32]) -> Result<()>;
    /// How many prompt tokens are fed at a time when a generation's prompt may be paused for a
    /// safety request between two parts: a multiple of the prefill width, so that feeding the
    /// parts makes the same decoder calls as feeding the prompt at once.
    fn prompt_piece(&self) -> usize;
    fn mark(&mut self, into: &mut Self::Mark);
    fn back_to(&mut self, mark: &Self::Mark);
    /// Scratch buffers reused from one probe request to the next (question logits, mark).
    fn take_scratch(&mut self) -> (Vec<f32>, Self::Mark) {
        (Vec::new(), Self::Mark::default())
    }
    fn keep_scratch(&mut self, _q_logits: Vec<f32>, _mark: Self::Mark) {}
    /// Everything a request in progress has in the decoder (context, frame prefix, last logits,
    /// counters), moved out so that another request can run.
    type Suspended;
    fn suspend(&mut self) -> Self::Suspended;
    /// Puts a suspended request's decoder state back, as it was (fails only when the buffers to
    /// put it into cannot be allocated).
    fn resume(&mut self, suspended: Self::Suspended) -> Result<()>;
}

pub(crate) fn encode_frame<M: Backend>(m: &mut M, frame: &Frame) -> Result<Timings> {
    let start = Instant::now();
    m.begin();
    let mut timings = Timings::default();
    m.ensure_prefix(frame, &mut timings)?;
    m.finish(&mut timings, start);
    Ok(timings)
}

pub(crate) fn probe<M: Backend>(
    m: &mut M,
    frame: &Frame,
    probes: &[Probe],
) -> Result<ProbeOutcome> {
    let start = Instant::now();
    m.begin();
    let mut timings = Timings::default();
    m.ensure_prefix(frame, &mut timings)?;
    let t_probe = Instant::now();
    let (mut q_logits, mut mark) = m.take_scratch();
    let res = score_probes(m, probes, &mut timings, &mut q_logits, &mut mark);
    m.keep_scratch(q_logits, mark);
    let answers = res?;
    timings.probe = t_probe.elapsed();
    m.finish(&mut timings, start);
    Ok(ProbeOutcome {
        frame_id: frame.id,
        answers,
        timings,
    })
}

pub(crate) fn generate<M: Backend>(
    m: &mut M,
    frame: &Frame,
    question: &str,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
    preempt: Preempt,
) -> Result<Generation> {
    let start = Instant::now();
    m.begin();
    let mut timings = Timings::default();
    let q_ids = m.question_ids(question)?;
    m.ensure_prefix(frame, &mut timings)?;
    m.restore_prefix()?;
    run_preemptions(m, &mut *preempt, &mut timings)?;
    let stop = Interrupts { cancel, preempt };
    prompt_and_decode(m, &q_ids, params, on_text, stop, start, timings)
}

/// What a running generation checks between two tokens.
struct Interrupts<'a, 'p> {
    /// Stop now (the caller went away or cancelled).
    cancel: &'a AtomicBool,
    /// Pause for a waiting safety request.
    preempt: Preempt<'p>,
}

/// Runs every waiting safety request with the current request's decoder state moved aside, then
/// puts it back. A failing probe fails its own request, never the generation (which fails only if
/// its state cannot be put back).
fn run_preemptions<M: Backend>(m: &mut M, preempt: Preempt, timings: &mut Timings) -> Result<()> {
    let mut suspended = None;
    let t = Instant::now();
    while let Some(p) = preempt() {
        if suspended.is_none() {
            suspended = Some(m.suspend());
        }
        let outcome = probe(m, &p.frame, &p.probes);
        (p.done)(outcome);
        timings.preemptions += 1;
    }
    if let Some(s) = suspended {
        m.resume(s)?;
        timings.preempted += t.elapsed();
    }
    Ok(())
}

/// Generation from token ids alone, in an empty context (no frame, no template).
pub(crate) fn generate_ids<M: Backend>(
    m: &mut M,
    ids: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
    cancel: &AtomicBool,
) -> Result<Generation> {
    if ids.is_empty() {
        return Err(Error::Prompt("the prompt has no token".into()));
    }
    let start = Instant::now();
    m.begin();
    m.clear()?;
    let stop = Interrupts {
        cancel,
        preempt: &mut || None,
    };
    prompt_and_decode(m, ids, params, on_text, stop, start, Timings::default())
}

/// Feeds the prompt `ids` from the current state, then decodes the answer.
fn prompt_and_decode<M: Backend>(
    m: &mut M,
    ids: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
    stop: Interrupts,
    start: Instant,
    mut timings: Timings,
) -> Result<Generation> {
    let t = Instant::now();
    let paused_before = timings.preempted;
    let piece = m.prompt_piece().max(1);
    let mut fed = 0;
    for part in ids.chunks(piece) {
        if fed > 0 {
            if stop.cancel.load(Ordering::Relaxed) {
                break; // decode() sees it before sampling: the generation ends `Cancelled`
            }
            run_preemptions(m, &mut *stop.preempt, &mut timings)?;
        }
        m.feed_ids(part).map_err(|e| match e {
            // what the whole prompt needs, not just this part
            Error::ContextFull { needed, capacity } => Error::ContextFull {
                needed: needed + ids.len() - fed - part.len(),
                capacity,
            },
            e => e,
        })?;
        fed += part.len();
    }
    timings.prefill = t
        .elapsed()
        .saturating_sub(timings.preempted.saturating_sub(paused_before));
    timings.prefill_tokens = fed;
    let (text, tokens, finish) = decode(m, params, on_text, stop, start, &mut timings)?;
    m.finish(&mut timings, start);
    Ok(Generation {
        text,
        tokens,
        finish,
        timings,
    })
}

/// Scores every probe from the shared prefix (ARCHITECTURE.md "Probe scoring"): per probe the
/// question once, then each answer's tokens' log-probabilities (the first from the question's
/// logits; later ones by feeding the answer from the question's state). `q_logits` and `mark` are
/// the caller's reusable buffers.
fn score_probes<M: Backend>(
    m: &mut M,
    probes: &[Probe],
    timings: &mut Timings,
    q_logits: &mut Vec<f32>,
    mark: &mut M::Mark,
) -> Result<Vec<ProbeAnswer>> {
    let mut answers = Vec::with_capacity(probes.len());
    for probe in probes {
        let q_ids = m.question_ids(&probe.question)?;
        m.restore_prefix()?;
        let t = Instant::now();
        m.feed_ids(&q_ids)?;
        timings.prefill += t.elapsed();
        timings.prefill_tokens += q_ids.len();
        q_logits.clear();
        q_logits.extend_from_slice(m.logits());
        m.mark(mark);
        let mut scores = Vec::with_capacity(probe.answers.len());
        for answer in &probe.answers {
            let ids = m.answer_ids(answer)?;
            let mut score = log_prob(q_logits, ids[0]);
            if ids.len() > 1 {
                m.back_to(mark);
                for k in 1..ids.len() {
                    m.feed_ids(&ids[k - 1..k])?;
                    score += log_prob(m.logits(), ids[k]);
                }
            }
            scores.push(score);
        }
        answers.push(probe_answer(probe, &scores));
    }
    Ok(answers)
}

/// Samples tokens until a stop, the length limit, a full context or `cancel`; streams the text
/// (never a prefix of a stop string); lets waiting safety requests run before each token. Sets
/// `ttft`, `decode`, `decode_tokens` in `timings`.
fn decode<M: Backend>(
    m: &mut M,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
    stop: Interrupts,
    start: Instant,
    timings: &mut Timings,
) -> Result<(String, Vec<u32>, FinishReason)> {
    let mut stops: Vec<u32> = params.stop_tokens.clone();
    if params.use_bundle_stop_tokens {
        stops.extend_from_slice(m.stop_ids());
    }
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut detok = Detokenizer::new();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut emitted = 0usize;
    let mut decode_start = None;
    let mut paused_before = Duration::ZERO;
    let finish = loop {
        if stop.cancel.load(Ordering::Relaxed) {
            break FinishReason::Cancelled;
        }
        run_preemptions(m, &mut *stop.preempt, timings)?;
        if tokens.len() >= params.max_tokens {
            break FinishReason::Length;
        }
        let tok = sampler.choose(m.logits());
        if decode_start.is_none() {
            timings.ttft = Some(start.elapsed());
            decode_start = Some(Instant::now());
            paused_before = timings.preempted;
        }
        if stops.contains(&tok) {
            break FinishReason::Stop;
        }
        tokens.push(tok);
        let delta = detok.push(m.tokenizer(), tok).map_err(Error::Prompt)?;
        text.push_str(&delta);
        if let Some(cut) = find_stop(&text, emitted, &params.stop_strings) {
            text.truncate(cut);
            break FinishReason::Stop;
        }
        let safe = text.len() - stop_overlap(&text, &params.stop_strings);
        if safe > emitted {
            on_text(&text[emitted..safe]);
            emitted = safe;
        }
        if tokens.len() >= params.max_tokens {
            break FinishReason::Length;
        }
        if !m.has_room() {
            break FinishReason::ContextFull;
        }
        m.feed_token(tok)?;
    };
    if text.len() > emitted {
        on_text(&text[emitted..]);
    }
    if let Some(d) = decode_start {
        let paused = timings.preempted.saturating_sub(paused_before);
        timings.decode = d.elapsed().saturating_sub(paused);
        timings.decode_tokens = tokens.len().saturating_sub(1);
    }
    Ok((text, tokens, finish))
}

/// Byte index where the first stop string starts, searching the not-yet-emitted tail.
fn find_stop(text: &str, emitted: usize, stops: &[String]) -> Option<usize> {
    let from = emitted.saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
    let from = (0..=from)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min()
}

/// A probe's answer from the log-probability of each of its answers: normalised over the answer
/// set; the field's probability is the sum over the positive answers.
fn probe_answer(probe: &Probe, scores: &[f64]) -> ProbeAnswer {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    let probabilities: Vec<(String, f32)> = probe
        .answers
        .iter()
        .zip(&exps)
        .map(|(a, e)| (a.clone(), (e / total) as f32))
        .collect();
    let best = exps
        .iter()
        .enumerate()
        .fold(0, |b, (i, e)| if *e > exps[b] { i } else { b });
    let field_probability = probe
        .answers
        .iter()
        .zip(&exps)
        .filter(|(a, _)| probe.positive.contains(a))
        .map(|(_, e)| e / total)
        .sum::<f64>() as f32;
    ProbeAnswer {
        id: probe.id.clone(),
        field: probe.field.clone(),
        answer: probe.answers[best].clone(),
        probabilities,
        field_probability,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_stop_sees_strings_straddling_the_emitted_boundary() {
        let stops = vec!["STOP".to_string()];
        assert_eq!(find_stop("abcSTOPx", 5, &stops), Some(3));
        assert_eq!(find_stop("abc", 0, &stops), None);
    }

    #[test]
    fn probe_answer_normalises_over_the_answer_set() {
        let probe = Probe {
            id: "p".into(),
            question: "q".into(),
            answers: vec!["a".into(), "b".into(), "c".into()],
            field: "f".into(),
            positive: vec!["b".into(), "c".into()],
        };
        let a = probe_answer(&probe, &[-1.0, -2.0, -3.0]);
        assert_eq!(a.answer, "a");
        let total: f32 = a.probabilities.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((a.field_probability - (1.0 - a.probabilities[0].1)).abs() < 1e-6);
    }
}
