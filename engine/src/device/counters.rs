//! Per-device I/O counters, so tests and benches can show what I/O a write caused.

use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters kept by a backend. Relaxed atomics: they are statistics, not
/// synchronisation.
#[derive(Debug, Default)]
pub struct IoCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    flushes: AtomicU64,
}

impl IoCounters {
    /// Counts one completed read request of `bytes`.
    pub fn record_read(&self, bytes: u64) {
        self.reads.fetch_add(1, Relaxed);
        self.bytes_read.fetch_add(bytes, Relaxed);
    }

    /// Counts one completed write request of `bytes`.
    pub fn record_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Relaxed);
        self.bytes_written.fetch_add(bytes, Relaxed);
    }

    /// Counts one flush.
    pub fn record_flush(&self) {
        self.flushes.fetch_add(1, Relaxed);
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> IoStats {
        IoStats {
            reads: self.reads.load(Relaxed),
            writes: self.writes.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
        }
    }
}

/// A snapshot of a device's I/O counters. Subtract two to get the I/O done
/// in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Completed read requests.
    pub reads: u64,
    /// Completed write requests.
    pub writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Flushes.
    pub flushes: u64,
}

impl Sub for IoStats {
    type Output = IoStats;
    fn sub(self, rhs: IoStats) -> IoStats {
        IoStats {
            reads: self.reads.saturating_sub(rhs.reads),
            writes: self.writes.saturating_sub(rhs.writes),
            bytes_read: self.bytes_read.saturating_sub(rhs.bytes_read),
            bytes_written: self.bytes_written.saturating_sub(rhs.bytes_written),
            flushes: self.flushes.saturating_sub(rhs.flushes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_deltas() {
        let c = IoCounters::default();
        c.record_read(4096);
        let a = c.snapshot();
        c.record_write(1024);
        c.record_write(2048);
        c.record_flush();
        let d = c.snapshot() - a;
        assert_eq!(
            d,
            IoStats {
                reads: 0,
                writes: 2,
                bytes_read: 0,
                bytes_written: 3072,
                flushes: 1
            }
        );
    }
}
