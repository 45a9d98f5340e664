//! What the benchmark examples share: timing helpers, a synthetic camera frame, and the meter of
//! the cores other processes use meanwhile (a row measured beside other work is not comparable).

#![allow(dead_code, reason = "each example uses a subset")]

use std::time::{Duration, Instant};

use autoneural_inference::{Frame, PixelLayout};

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A comma-separated list of numbers (`--lengths 8,40,100`).
pub fn list(value: std::ffi::OsString) -> anyhow::Result<Vec<usize>> {
    let text = value
        .into_string()
        .map_err(|v| anyhow::anyhow!("not UTF-8: {v:?}"))?;
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("`{s}` in `{text}`: {e}"))
        })
        .collect()
}

pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// A 640x480 gradient frame; `shift` changes its content (a new camera frame).
pub fn frame(id: u64, shift: u32) -> Frame {
    let (w, h) = (640u32, 480u32);
    let data: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                [
                    ((x + shift) % 256) as u8,
                    ((y + 2 * shift) % 256) as u8,
                    128,
                ]
            })
        })
        .collect();
    Frame::new(id, w, h, PixelLayout::Rgb8, data)
}

/// CPU time of the whole machine and of this process, to tell what others used meanwhile.
pub struct CpuMeter {
    wall: Instant,
    busy: f64,
    own: f64,
}

impl CpuMeter {
    fn ticks() -> (f64, f64) {
        let hz = 100.0; // USER_HZ on Linux
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: f64 = cpu.iter().sum();
        let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
        let after = own.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let own = field(11) + field(12);
        ((total - idle) / hz, own / hz)
    }
    pub fn start() -> CpuMeter {
        let (busy, own) = Self::ticks();
        CpuMeter {
            wall: Instant::now(),
            busy,
            own,
        }
    }
    /// Cores used by other processes since `start`.
    pub fn others(&self) -> f64 {
        let (busy, own) = Self::ticks();
        let wall = self.wall.elapsed().as_secs_f64().max(1e-3);
        ((busy - self.busy) - (own - self.own)).max(0.0) / wall
    }
}
