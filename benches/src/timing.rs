//! Sample timing shared by every command that reports usecs/call.
//!
//! A userspace call can be shorter than the clock's own cost, so a sample
//! times a batch of calls and divides; the batch is calibrated so that a
//! sample takes about [`SAMPLE_TARGET`]. Samples are summarised as median,
//! min and max, the figures every result carries.

use serde::Serialize;
use std::time::{Duration, Instant};

/// How long a sample should take when no batch size is given.
pub const SAMPLE_TARGET: Duration = Duration::from_millis(1);

/// usecs/call over a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// The median sample (the mean of the middle two for an even count).
    pub median: f64,
    /// The fastest sample.
    pub min: f64,
    /// The slowest sample.
    pub max: f64,
}

/// Median, min and max of `samples`; NaN for all three when there are none.
pub fn summary(samples: &[f64]) -> Summary {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Summary {
        median,
        min: s.first().copied().unwrap_or(f64::NAN),
        max: s.last().copied().unwrap_or(f64::NAN),
    }
}

/// usecs per call of a sample that took `t` for `calls` calls.
pub fn usecs_per_call(t: Duration, calls: u64) -> f64 {
    t.as_secs_f64() * 1e6 / calls.max(1) as f64
}

/// Calls per sample so that a sample takes about `target`. `time(n)` runs
/// `n` calls and returns how long they took. The count doubles until a
/// trial takes a quarter of `target` (which also warms the path up); then
/// the fastest of a few trials sets the rate, so that one disturbed trial
/// on a shared machine does not shrink every sample.
pub fn calibrate<E>(
    mut time: impl FnMut(u64) -> Result<Duration, E>,
    target: Duration,
) -> Result<u64, E> {
    let mut n = 1u64;
    let mut t = time(n)?;
    while t < target / 4 && n < 1 << 24 {
        n *= 2;
        t = time(n)?;
    }
    for _ in 0..3 {
        t = t.min(time(n)?);
    }
    let per_call = t.as_secs_f64().max(1e-12) / n as f64;
    Ok(((target.as_secs_f64() / per_call) as u64).max(1))
}

/// usecs/call of a bare copy of `size` bytes into the start of a cached
/// 2 MiB buffer: the floor that any write path's copy into a folio sits on.
/// Timed as the paths are (calibrated batches, `runs` samples).
pub fn memcpy_floor(size: usize, runs: u32, batch: Option<u64>) -> Summary {
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; (2 << 20).max(size)];
    let mut run = |n: u64| -> Result<Duration, std::convert::Infallible> {
        let start = Instant::now();
        for _ in 0..n {
            dst[..size].copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        Ok(start.elapsed())
    };
    let Ok(n) = batch.map_or_else(|| calibrate(&mut run, SAMPLE_TARGET), Ok);
    let samples: Vec<f64> = (0..runs)
        .map(|_| {
            let Ok(t) = run(n);
            usecs_per_call(t, n)
        })
        .collect();
    summary(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = summary(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(summary(&[]).median.is_nan());
    }

    #[test]
    fn calibration_grows_the_batch_until_a_sample_is_long_enough() {
        // A fake clock: every call "takes" 1 us.
        let calls = |n: u64| Ok::<_, ()>(Duration::from_micros(n));
        assert_eq!(calibrate(calls, Duration::from_millis(1)), Ok(1000));
        let err = calibrate(|_| Err::<Duration, _>("boom"), SAMPLE_TARGET);
        assert_eq!(err, Err("boom"));
    }

    #[test]
    fn memcpy_floor_is_a_positive_time() {
        let s = memcpy_floor(1024, 3, Some(10));
        assert!(s.min > 0.0 && s.min <= s.median && s.median <= s.max);
    }
}
