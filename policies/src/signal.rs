//! The two building blocks of every rule: a smoothed, debounced field and a condition timer.
//!
//! Smoothing decides *whether* a field changed; the raw samples decide *when*. A [`FieldSignal`]
//! filters a field's probability and turns it into a debounced boolean (thresholds with
//! hysteresis), and reports the raw "evidence" of each sample (raw probability >= threshold). A
//! [`Timer`] times how long a debounced condition has held: when the condition flips, its onset is
//! backdated to the first raw sample of the current evidence run, and while the raw samples
//! contradict the condition its held time stops growing. So an isolated noisy frame changes
//! nothing, yet a real 3.0 s glance is timed as 3.0 s, not 3.0 s plus the filter's delay.
//!
//! Unknown samples (invalid observation, face not visible, field absent) and gaps pause a timer:
//! its clock only runs over intervals whose start sample was known, so missing data neither
//! counts towards a condition nor against it ("missing data is never attentive").

use std::time::Duration;

use crate::rules::{Smoothing, Threshold};

/// A debounced boolean and the raw evidence of the latest sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub state: bool,
    pub evidence: bool,
}

impl Sample {
    pub fn not(self) -> Sample {
        Sample {
            state: !self.state,
            evidence: !self.evidence,
        }
    }

    /// Three-valued OR: true if either known sample is true, false if both are known and false.
    pub fn or(a: Option<Sample>, b: Option<Sample>) -> Option<Sample> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Sample {
                state: a.state || b.state,
                evidence: a.evidence || b.evidence,
            }),
            (Some(x), None) | (None, Some(x)) if x.state => Some(x),
            _ => None,
        }
    }

    /// `a` unless `b`: true while `a` is true and `b` false; `a` as it is while `b` is unknown.
    pub fn unless(a: Option<Sample>, b: Option<Sample>) -> Option<Sample> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Sample {
                state: a.state && !b.state,
                evidence: a.evidence && !b.evidence,
            }),
            (a, _) => a,
        }
    }

    pub fn constant(value: bool) -> Sample {
        Sample {
            state: value,
            evidence: value,
        }
    }
}

/// One field's filtered probability and debounced value.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSignal {
    filtered: Option<f32>,
    state: Option<bool>,
    /// Whether the previous sample was known (the filter's dt is only meaningful then).
    known: bool,
}

impl FieldSignal {
    /// Feeds one sample. `dt` is the time since the previous sample when that interval was not
    /// a gap. Returns the debounced value, or `None` while unknown.
    pub fn update(
        &mut self,
        raw: Option<f32>,
        dt: Option<Duration>,
        smoothing: &Smoothing,
        threshold: Threshold,
    ) -> Option<Sample> {
        let Some(raw) = raw else {
            self.known = false;
            return None;
        };
        let weight = match (self.filtered, dt) {
            (None, _) => 1.0,
            (Some(_), Some(dt)) if self.known => {
                let tau = smoothing.time_constant.as_secs_f64();
                if tau == 0.0 {
                    1.0
                } else {
                    (1.0 - (-dt.as_secs_f64() / tau).exp()) as f32
                }
            }
            // Resuming after unknown data or a gap: the sample gets the largest single weight.
            (Some(_), _) => 1.0,
        }
        .min(smoothing.max_step);
        let filtered = match self.filtered {
            None => raw,
            Some(previous) => previous + weight * (raw - previous),
        };
        self.filtered = Some(filtered);
        self.known = true;
        if filtered >= threshold.on() {
            self.state = Some(true);
        } else if filtered <= threshold.off() {
            self.state = Some(false);
        }
        self.state.map(|state| Sample {
            state,
            evidence: raw >= threshold.threshold,
        })
    }

    /// The filtered probability, while known.
    pub fn probability(&self) -> Option<f32> {
        if self.known { self.filtered } else { None }
    }

    /// The debounced value, while known.
    pub fn value(&self) -> Option<bool> {
        if self.known { self.state } else { None }
    }
}

/// A point in time on both clocks: the timer's paused clock and the observation timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub clock: Duration,
    pub wall: Duration,
}

/// A finished period of one value (used for VATS glances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Period {
    pub value: bool,
    pub start: Stamp,
    pub end: Stamp,
}

impl Period {
    pub fn held(&self) -> Duration {
        self.end.clock.saturating_sub(self.start.clock)
    }
}

/// Times how long a condition has held, on a clock that pauses while the condition is unknown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timer {
    /// Known time: advanced only over intervals that start with a known sample.
    clock: Duration,
    /// The observation timestamp at which `clock` was last advanced.
    clock_wall: Duration,
    known: bool,
    state: Option<bool>,
    onset: Stamp,
    evidence: Option<bool>,
    evidence_since: Stamp,
}

impl Timer {
    /// Moves time on to `now`: the previous sample holds over the interval unless it was unknown
    /// or the interval is a gap.
    pub fn advance(&mut self, dt: Duration, now: Duration, interval_known: bool) {
        if self.known && interval_known {
            self.clock += dt;
            self.clock_wall = now;
        }
    }

    /// Feeds the sample observed at `now` (after [`Timer::advance`]). Returns the period that
    /// ended when the condition flipped.
    pub fn sample(&mut self, now: Duration, sample: Option<Sample>) -> Option<Period> {
        let Some(sample) = sample else {
            self.known = false;
            return None;
        };
        if !self.known {
            self.clock_wall = now;
        }
        self.known = true;
        let stamp = Stamp {
            clock: self.clock,
            wall: now,
        };
        if self.evidence != Some(sample.evidence) {
            self.evidence = Some(sample.evidence);
            self.evidence_since = stamp;
        }
        if self.state == Some(sample.state) {
            return None;
        }
        // Backdate the flip to the start of the raw evidence run that supports it.
        let onset = if sample.evidence == sample.state {
            self.evidence_since
        } else {
            stamp
        };
        let ended = self.state.map(|value| Period {
            value,
            start: self.onset,
            end: onset,
        });
        self.state = Some(sample.state);
        self.onset = onset;
        ended
    }

    /// The condition now; `None` while unknown.
    pub fn current(&self) -> Option<bool> {
        if self.known { self.state } else { None }
    }

    /// The last known value of the condition, even while paused.
    pub fn last_known(&self) -> Option<bool> {
        self.state
    }

    pub fn is_known(&self) -> bool {
        self.known
    }

    /// How long the current value has held (known time; frozen while the raw samples contradict
    /// it).
    pub fn held(&self) -> Duration {
        self.current_period()
            .map_or(Duration::ZERO, |period| period.held())
    }

    /// The period of the current value up to now.
    pub fn current_period(&self) -> Option<Period> {
        let value = self.state?;
        let end = if self.evidence == Some(value) {
            Stamp {
                clock: self.clock,
                wall: self.clock_wall,
            }
        } else {
            self.evidence_since
        };
        Some(Period {
            value,
            start: self.onset,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn smoothing() -> Smoothing {
        Smoothing {
            time_constant: ms(300),
            max_step: 0.5,
        }
    }

    fn threshold() -> Threshold {
        Threshold {
            threshold: 0.5,
            hysteresis: 0.1,
        }
    }

    #[test]
    fn one_noisy_sample_does_not_flip_a_settled_field() {
        for dt in [ms(33), ms(100), ms(500), ms(2000)] {
            let mut signal = FieldSignal::default();
            for _ in 0..20 {
                signal.update(Some(1.0), Some(dt), &smoothing(), threshold());
            }
            let s = signal.update(Some(0.0), Some(dt), &smoothing(), threshold());
            assert_eq!(s.map(|s| s.state), Some(true), "dt {dt:?}");
            assert_eq!(s.map(|s| s.evidence), Some(false));
        }
    }

    #[test]
    fn timer_backdates_to_the_raw_onset_and_freezes_on_contrary_evidence() {
        let mut timer = Timer::default();
        let mut t = Duration::ZERO;
        let step = ms(100);
        // False for a while, then raw true from t = 1.0 s but the filter confirms 0.2 s later.
        for i in 0..30 {
            if i > 0 {
                timer.advance(step, t, true);
            }
            let raw = i >= 10;
            let state = i >= 12;
            timer.sample(
                t,
                Some(Sample {
                    state,
                    evidence: raw,
                }),
            );
            t += step;
        }
        // Last sample at 2.9 s; true since 1.0 s.
        assert_eq!(timer.held(), ms(1900));
        // A contrary raw sample freezes the held time at its own timestamp.
        timer.advance(step, t, true);
        timer.sample(
            t,
            Some(Sample {
                state: true,
                evidence: false,
            }),
        );
        assert_eq!(timer.held(), ms(2000));
        timer.advance(step, t + step, true);
        assert_eq!(timer.held(), ms(2000));
    }

    #[test]
    fn unknown_samples_pause_the_clock() {
        let mut timer = Timer::default();
        timer.sample(ms(0), Some(Sample::constant(true)));
        timer.advance(ms(100), ms(100), true);
        timer.sample(ms(100), None);
        timer.advance(ms(5000), ms(5100), true);
        assert_eq!(timer.current(), None);
        timer.sample(ms(5100), Some(Sample::constant(true)));
        timer.advance(ms(100), ms(5200), true);
        assert_eq!(timer.held(), ms(200));
    }
}
