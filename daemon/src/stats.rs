//! Latency statistics per pipeline stage over a bounded window of recent samples.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The timed stages of the pipeline, in the order a frame passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Frame capture (driver timestamp) until the observation is published.
    CaptureToObservation,
    /// Frame conversion and the vision graph.
    Vision,
    /// All safety probes of one frame (decoder steps from the shared prefix).
    Probes,
    /// The policy engine for one observation.
    Policies,
    /// One description refresh.
    Description,
    /// One HMI question, from the call to the answer.
    HmiAnswer,
    /// The face pipeline on one frame.
    Face,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::CaptureToObservation,
        Stage::Vision,
        Stage::Probes,
        Stage::Policies,
        Stage::Description,
        Stage::HmiAnswer,
        Stage::Face,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::CaptureToObservation => "capture_to_observation",
            Stage::Vision => "vision",
            Stage::Probes => "probes",
            Stage::Policies => "policies",
            Stage::Description => "description",
            Stage::HmiAnswer => "hmi_answer",
            Stage::Face => "face",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bounded window of samples: the newest `capacity` are kept.
#[derive(Debug, Clone)]
pub struct Window {
    samples: VecDeque<f64>,
    capacity: usize,
    total: u64,
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            total: 0,
        }
    }

    pub fn push(&mut self, d: Duration) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(d.as_secs_f64() * 1000.0);
        self.total += 1;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.samples.len() == self.capacity
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Samples ever pushed (not only those still in the window).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The q-quantile (0..=1) in milliseconds by the nearest-rank method; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.samples.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

/// One stage's summary as published on D-Bus.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary {
    pub stage: Stage,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples: u64,
}

/// Statistics for every stage (shared between the pipeline and the D-Bus diagnostics).
#[derive(Debug, Clone)]
pub struct LatencyStats {
    windows: Vec<(Stage, Window)>,
}

impl LatencyStats {
    pub fn new(capacity: usize) -> Self {
        Self {
            windows: Stage::ALL
                .iter()
                .map(|&s| (s, Window::new(capacity)))
                .collect(),
        }
    }

    pub fn record(&mut self, stage: Stage, d: Duration) {
        if let Some((_, w)) = self.windows.iter_mut().find(|(s, _)| *s == stage) {
            w.push(d);
        }
    }

    pub fn window(&self, stage: Stage) -> Option<&Window> {
        self.windows
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, w)| w)
    }

    /// Stages with at least one sample.
    pub fn summary(&self) -> Vec<StageSummary> {
        self.windows
            .iter()
            .filter_map(|(stage, w)| {
                Some(StageSummary {
                    stage: *stage,
                    p50_ms: w.quantile_ms(0.5)?,
                    p99_ms: w.quantile_ms(0.99)?,
                    samples: w.total(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut w = Window::new(100);
        for i in 1..=100 {
            w.push(Duration::from_millis(i));
        }
        assert_eq!(w.quantile_ms(0.5), Some(50.0));
        assert_eq!(w.quantile_ms(0.99), Some(99.0));
        assert_eq!(w.quantile_ms(1.0), Some(100.0));
        assert_eq!(Window::new(4).quantile_ms(0.5), None);
    }

    #[test]
    fn window_keeps_only_the_newest_samples() {
        let mut w = Window::new(3);
        for ms in [100, 1, 2, 3] {
            w.push(Duration::from_millis(ms));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.total(), 4);
        assert_eq!(w.quantile_ms(1.0), Some(3.0));
    }

    #[test]
    fn summary_lists_only_measured_stages() {
        let mut s = LatencyStats::new(10);
        s.record(Stage::Probes, Duration::from_millis(7));
        let sum = s.summary();
        assert_eq!(sum.len(), 1);
        assert_eq!(sum[0].stage, Stage::Probes);
        assert_eq!(sum[0].p99_ms, 7.0);
    }
}
