//! Vehicle signals the daemon cannot see through its camera: the speed, reported over D-Bus by the
//! vehicle gateway (`org.autoneural.Cockpit1.Vehicle.SetSpeed`, allowed to the
//! `autoneural-vehicle` group only).
//!
//! The speed gates the policies' `speed_gated` rules (below `speed_gate.min_speed_kmh` a distracted
//! glance is not an alert) and the face pipeline's calibration of the driver's neutral gaze (learned
//! only while driving above `calibration.min_speed_kmh`). A speed older than
//! `vehicle.speed_max_age_ms` is unknown: the gateway stopped reporting, so the rules run ungated
//! (the safe side) and calibration learns ungated, as in an install without a gateway. Never a
//! stale speed.

use std::sync::Mutex;
use std::time::Duration;

/// The highest speed a report may carry, km/h (anything above is a broken sender).
pub const MAX_SPEED_KMH: f64 = 400.0;

/// What the vehicle said, as of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VehicleState {
    /// km/h; None when no fresh report exists.
    pub speed_kmh: Option<f32>,
}

/// A report the daemon refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("speed must be a number in 0..={MAX_SPEED_KMH} km/h, got {0}")]
pub struct InvalidSpeed(pub f64);

/// The latest report and when it arrived (CLOCK_MONOTONIC), shared by the D-Bus object that
/// writes it and the pipeline that reads it once per frame.
#[derive(Debug)]
pub struct VehicleSignals {
    speed: Mutex<Option<(f32, Duration)>>,
    max_age: Duration,
}

impl VehicleSignals {
    pub fn new(max_age: Duration) -> Self {
        Self {
            speed: Mutex::new(None),
            max_age,
        }
    }

    /// Records a speed report received at `at`.
    pub fn set_speed(&self, kmh: f64, at: Duration) -> Result<(), InvalidSpeed> {
        if !(kmh.is_finite() && (0.0..=MAX_SPEED_KMH).contains(&kmh)) {
            return Err(InvalidSpeed(kmh));
        }
        let mut s = match self.speed.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *s = Some((kmh as f32, at));
        Ok(())
    }

    /// The vehicle as of `t`: the latest report unless it is older than the maximum age.
    /// A report that arrived after `t` (the frame waited in the pipeline) counts as fresh.
    pub fn at(&self, t: Duration) -> VehicleState {
        let s = match self.speed.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        };
        VehicleState {
            speed_kmh: s
                .filter(|(_, at)| t.saturating_sub(*at) <= self.max_age)
                .map(|(kmh, _)| kmh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn no_report_means_unknown() {
        let v = VehicleSignals::new(ms(1000));
        assert_eq!(v.at(ms(5000)).speed_kmh, None);
    }

    #[test]
    fn a_report_is_fresh_until_its_maximum_age() {
        let v = VehicleSignals::new(ms(1000));
        v.set_speed(50.0, ms(10_000)).unwrap();
        assert_eq!(v.at(ms(9_000)).speed_kmh, Some(50.0));
        assert_eq!(v.at(ms(11_000)).speed_kmh, Some(50.0));
        assert_eq!(v.at(ms(11_001)).speed_kmh, None);
        v.set_speed(0.0, ms(11_500)).unwrap();
        assert_eq!(v.at(ms(11_600)).speed_kmh, Some(0.0));
    }

    #[test]
    fn impossible_speeds_are_refused_and_keep_the_last_report() {
        let v = VehicleSignals::new(ms(1000));
        v.set_speed(30.0, ms(0)).unwrap();
        for bad in [-1.0, f64::NAN, f64::INFINITY, 400.5] {
            let e = v.set_speed(bad, ms(10)).unwrap_err();
            assert!(e.to_string().contains("0..=400"), "{e}");
        }
        assert_eq!(v.at(ms(20)).speed_kmh, Some(30.0));
    }
}
