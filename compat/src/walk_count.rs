//! Counting the buffer heads a write's walks visit, outside the timed path.
//!
//! Heads walked per call is the figure that explains the buffer-head
//! path's cost, but counting them is work the iomap path does not do. So
//! counting is a type parameter of [`BufferHeadPath`](crate::BufferHeadPath),
//! not a runtime switch or a cargo feature: the path that benchmarks time is
//! `BufferHeadPath<NoCount>`, whose counter calls are empty inline functions
//! and compile to nothing, and a report gets its head counts from a second,
//! untimed pass over a `BufferHeadPath<Arc<WalkCounter>>` doing the same
//! calls on the same kind of file.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Where a buffer-head path reports the heads its walks visited.
pub trait WalkCount: Send + Sync + std::fmt::Debug + 'static {
    /// True when this counter records anything (false for [`NoCount`]).
    const COUNTS: bool;
    /// `n` heads visited by one write_begin walk.
    fn write_begin(&self, n: usize);
    /// `n` heads visited by one commit walk.
    fn commit(&self, n: usize);
}

/// No counting: the configuration every timed run uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoCount;

impl WalkCount for NoCount {
    const COUNTS: bool = false;
    #[inline(always)]
    fn write_begin(&self, _: usize) {}
    #[inline(always)]
    fn commit(&self, _: usize) {}
}

/// How many buffer heads the counted writes visited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Heads visited by write_begin.
    pub write_begin: u64,
    /// Heads visited by commit (write_end).
    pub commit: u64,
}

impl WalkStats {
    /// Both walks together.
    pub fn total(&self) -> u64 {
        self.write_begin + self.commit
    }
}

/// Counters for the untimed counting pass; the caller keeps a clone of the
/// `Arc` to read them.
///
/// Writes to one file are serialised by the `File`'s write lock, so a
/// relaxed load and store is enough (no locked read-modify-write); readers on
/// other threads may see a slightly stale value.
#[derive(Debug, Default)]
pub struct WalkCounter {
    write_begin: AtomicU64,
    commit: AtomicU64,
}

impl WalkCounter {
    /// A counter at zero, ready to hand to
    /// [`BufferHeadPath::counting`](crate::BufferHeadPath::counting).
    pub fn new() -> Arc<WalkCounter> {
        Arc::new(WalkCounter::default())
    }

    /// The heads counted since the last reset.
    pub fn stats(&self) -> WalkStats {
        WalkStats {
            write_begin: self.write_begin.load(Relaxed),
            commit: self.commit.load(Relaxed),
        }
    }

    /// Sets both counts back to zero.
    pub fn reset(&self) {
        self.write_begin.store(0, Relaxed);
        self.commit.store(0, Relaxed);
    }

    #[inline]
    fn add(counter: &AtomicU64, n: usize) {
        counter.store(counter.load(Relaxed) + n as u64, Relaxed);
    }
}

impl WalkCount for Arc<WalkCounter> {
    const COUNTS: bool = true;
    #[inline]
    fn write_begin(&self, n: usize) {
        WalkCounter::add(&self.write_begin, n);
    }
    #[inline]
    fn commit(&self, n: usize) {
        WalkCounter::add(&self.commit, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_and_resets_and_nocount_holds_nothing() {
        let c = WalkCounter::new();
        c.write_begin(3);
        c.commit(4);
        c.write_begin(1);
        assert_eq!(c.stats().total(), 8);
        assert_eq!(c.stats().write_begin, 4);
        c.reset();
        assert_eq!(c.stats(), WalkStats::default());
        assert_eq!(size_of::<NoCount>(), 0);
        const { assert!(!NoCount::COUNTS && <Arc<WalkCounter>>::COUNTS) };
    }
}
