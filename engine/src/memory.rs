//! The memory of one mount's page cache: the budget, the LRU, dirty and
//! writeback accounting, dirty throttling (`balance_dirty_pages`) and
//! reclaim. The flusher thread that serves it lives in [`crate::flusher`].
//!
//! Every file of a mount charges its folios to one [`MemShared`]: a folio
//! is charged when it is created and uncharged when reclaim, truncate or
//! drop_caches removes it. Creating a folio past the budget reclaims clean
//! folios first, in LRU order: the LRU is a CLOCK (second chance, the
//! approximation the kernel's active/inactive lists also make): a folio
//! touched since the hand last passed it has its accessed bit cleared and
//! goes round again; one that is dirty, under writeback, locked, in use, or
//! whose written data still waits for its completion stays. When nothing
//! can go, reclaim wakes the flusher to write dirty data back, makes
//! pinned completions durable, and waits for progress; a write never fails
//! for want of memory (after [`RECLAIM_PATIENCE`] the folio is created over
//! budget and counted in [`MemStats::overcommits`]).
//!
//! Nothing here is on the cached-overwrite path: a hit touches only the
//! folio's accessed bit. New folios are charged with one atomic add and
//! join the LRU in batches ([`LRU_BATCH`]) from a per-file list, as the
//! kernel's per-CPU `folio_batch` does, so the LRU lock is taken once per
//! batch. The dirty and writeback byte counts change on a folio's
//! clean-to-dirty edge and at writeback start and end, not per write.

use crate::address_space::AddressSpace;
use crate::folio::Folio;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// New folios a file gathers before adding them to the LRU in one go.
pub const LRU_BATCH: usize = 16;
/// Bytes of new folios a file gathers at most before adding them to the
/// LRU: folios in a batch are out of reclaim's reach.
pub const LRU_BATCH_BYTES: usize = 256 << 10;
/// How long a folio allocation keeps reclaiming and waiting for writeback
/// before it goes over budget rather than fail or hang.
pub const RECLAIM_PATIENCE: Duration = Duration::from_secs(2);
/// Reclaim's retries, 200 us apart, when nothing is dirty and nothing could
/// be evicted (every folio briefly in use), before it goes over budget.
const IDLE_RETRIES: u32 = 10;
/// Longest single throttling pause (the kernel's MAX_PAUSE is 200 ms).
pub const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The limits of one mount's cache, in bytes and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most bytes of folio data the cache holds (reclaim keeps it below).
    pub budget: u64,
    /// Dirty (and under writeback) bytes past which the flusher writes
    /// back in the background (`dirty_background_bytes`).
    pub dirty_background: u64,
    /// Dirty bytes past which writers wait for writeback
    /// (`dirty_bytes`); between the midpoint of the two limits and this one
    /// they are slowed in proportion.
    pub dirty_limit: u64,
    /// Dirty data older than this is written back by the flusher even under
    /// the background limit (`dirty_expire_centisecs`, 30 s).
    pub dirty_expire: Duration,
    /// How often the flusher wakes on its own (`dirty_writeback_centisecs`, 5 s).
    pub writeback_interval: Duration,
    /// Whether a flusher thread runs. Without one, dirty data is written
    /// back only by fsync, `File::writeback`, close, and reclaim.
    pub flusher: bool,
}

impl CacheLimits {
    /// Limits for a budget of `budget` bytes, the dirty limits at the
    /// kernel's default ratios of it (10 % and 20 %).
    pub fn with_budget(budget: u64) -> CacheLimits {
        let budget = budget.max(MIN_BUDGET);
        CacheLimits {
            budget,
            dirty_background: budget / 10,
            dirty_limit: budget / 5,
            ..CacheLimits::default()
        }
    }

    /// Checks that the limits make sense together.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: String| Err(crate::Error::InvalidArgument(what));
        if self.budget < MIN_BUDGET {
            return bad(format!(
                "cache budget {} bytes is below the minimum of {MIN_BUDGET}",
                self.budget
            ));
        }
        if self.dirty_background == 0 || self.dirty_limit == 0 {
            return bad("dirty limits must be above 0 bytes".into());
        }
        if self.dirty_background > self.dirty_limit {
            return bad(format!(
                "dirty background limit {} is above the dirty limit {}",
                self.dirty_background, self.dirty_limit
            ));
        }
        if self.dirty_limit > self.budget {
            return bad(format!(
                "dirty limit {} is above the cache budget {}",
                self.dirty_limit, self.budget
            ));
        }
        if self.writeback_interval.is_zero() {
            return bad("the flusher's interval must be above 0".into());
        }
        Ok(())
    }
}

/// Smallest budget accepted. A budget smaller than the largest folio
/// works (each new folio of that size evicts the others first) but is
/// mostly for tests that want reclaim all the time.
pub const MIN_BUDGET: u64 = 64 << 10;

impl Default for CacheLimits {
    /// A 1 GiB budget, dirty limits at 10 % / 20 % of it, the kernel's
    /// 30 s expiry and 5 s flusher interval, flusher on.
    fn default() -> Self {
        CacheLimits {
            budget: 1 << 30,
            dirty_background: (1 << 30) / 10,
            dirty_limit: (1 << 30) / 5,
            dirty_expire: Duration::from_secs(30),
            writeback_interval: Duration::from_secs(5),
            flusher: true,
        }
    }
}

/// A snapshot of a mount's cache memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Bytes of folio data cached now.
    pub cached: u64,
    /// Most bytes cached at once.
    pub peak_cached: u64,
    /// Bytes in dirty folios now.
    pub dirty: u64,
    /// Bytes in folios under writeback now.
    pub writeback: u64,
    /// Most dirty + writeback bytes at once.
    pub peak_dirty: u64,
    /// Folios reclaimed (evicted clean).
    pub reclaimed: u64,
    /// Folios created over budget after reclaim could not make room.
    pub overcommits: u64,
    /// Writers paused by dirty throttling, and the total pause.
    pub throttled: u64,
    /// Total time writers spent paused, in microseconds.
    pub throttled_us: u64,
    /// Background writeback passes the flusher ran.
    pub flusher_passes: u64,
    /// Bytes the flusher wrote back.
    pub flusher_bytes: u64,
}

/// One entry of the LRU: a folio and the address space holding it (weak:
/// the LRU keeps neither alive).
struct LruEntry {
    folio: Weak<Folio>,
    mapping: Weak<AddressSpace>,
}

/// What the flusher is asked to do beyond its timer.
#[derive(Debug, Default)]
pub(crate) struct FlusherWork {
    /// Reclaim needs memory: write back what is dirty, complete what waits.
    pub pressure: bool,
    /// Over the background limit.
    pub background: bool,
    /// The mount is going: the thread ends.
    pub shutdown: bool,
}

/// The shared state of one mount's cache memory (module docs).
pub struct MemShared {
    limits: CacheLimits,
    cached: AtomicU64,
    peak_cached: AtomicU64,
    dirty: AtomicU64,
    writeback: AtomicU64,
    peak_dirty: AtomicU64,
    reclaimed: AtomicU64,
    overcommits: AtomicU64,
    throttled: AtomicU64,
    throttled_us: AtomicU64,
    pub(crate) flusher_passes: AtomicU64,
    pub(crate) flusher_bytes: AtomicU64,
    /// Writeback throughput seen lately, bytes per second (an estimate for
    /// the throttle's pause; 0 until measured).
    write_bw: AtomicU64,
    lru: Mutex<VecDeque<LruEntry>>,
    /// The address spaces of the mount, for the flusher and reclaim.
    inodes: Mutex<Vec<Weak<AddressSpace>>>,
    pub(crate) work: Mutex<FlusherWork>,
    pub(crate) work_cv: Condvar,
    /// Bumped and notified when writeback ends or memory is freed:
    /// throttled writers and reclaim wait on it.
    progress: Mutex<u64>,
    progress_cv: Condvar,
    has_flusher: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for MemShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemShared")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn raise_peak(peak: &AtomicU64, v: u64) {
    peak.fetch_max(v, Ordering::Relaxed);
}

impl MemShared {
    /// Memory under `limits` (validated by the caller), with no flusher yet.
    pub fn new(limits: CacheLimits) -> Arc<MemShared> {
        Arc::new(MemShared {
            limits,
            cached: AtomicU64::new(0),
            peak_cached: AtomicU64::new(0),
            dirty: AtomicU64::new(0),
            writeback: AtomicU64::new(0),
            peak_dirty: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            overcommits: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            throttled_us: AtomicU64::new(0),
            flusher_passes: AtomicU64::new(0),
            flusher_bytes: AtomicU64::new(0),
            write_bw: AtomicU64::new(0),
            lru: Mutex::new(VecDeque::new()),
            inodes: Mutex::new(Vec::new()),
            work: Mutex::new(FlusherWork::default()),
            work_cv: Condvar::new(),
            progress: Mutex::new(0),
            progress_cv: Condvar::new(),
            has_flusher: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &CacheLimits {
        &self.limits
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MemStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemStats {
            cached: r(&self.cached),
            peak_cached: r(&self.peak_cached),
            dirty: r(&self.dirty),
            writeback: r(&self.writeback),
            peak_dirty: r(&self.peak_dirty),
            reclaimed: r(&self.reclaimed),
            overcommits: r(&self.overcommits),
            throttled: r(&self.throttled),
            throttled_us: r(&self.throttled_us),
            flusher_passes: r(&self.flusher_passes),
            flusher_bytes: r(&self.flusher_bytes),
        }
    }

    /// Milliseconds since this memory was made (never 0: 0 means "clean"
    /// in the inodes' dirtied-when stamps).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn set_has_flusher(&self) {
        self.has_flusher.store(true, Ordering::Relaxed);
    }

    /// Registers an address space (its files' folios charge here).
    pub(crate) fn register(&self, mapping: Weak<AddressSpace>) {
        let mut v = lock(&self.inodes);
        v.retain(|w| w.strong_count() > 0);
        v.push(mapping);
    }

    /// The live address spaces.
    pub(crate) fn inodes(&self) -> Vec<Arc<AddressSpace>> {
        let mut v = lock(&self.inodes);
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(Weak::upgrade).collect()
    }

    /// Charges a new folio of `size` bytes, reclaiming first when the
    /// budget would be passed (module docs). Called with no folio locked.
    pub(crate) fn charge(&self, size: u64) {
        if self.cached.load(Ordering::Relaxed) + size > self.limits.budget {
            self.make_room(size);
        }
        let now = self.cached.fetch_add(size, Ordering::Relaxed) + size;
        raise_peak(&self.peak_cached, now);
    }

    /// Uncharges a removed folio.
    pub(crate) fn uncharge(&self, size: u64) {
        self.cached.fetch_sub(size, Ordering::Relaxed);
    }

    /// Adds a file's batch of new folios to the LRU's tail.
    pub(crate) fn lru_add(&self, mapping: &Weak<AddressSpace>, folios: &mut Vec<Weak<Folio>>) {
        let mut lru = lock(&self.lru);
        // Entries of folios truncate or a closed file removed linger until
        // the hand passes them; without reclaim it never does, so prune
        // when they clearly outnumber the folios cached.
        let live = self.cached.load(Ordering::Relaxed) / 4096;
        if lru.len() as u64 > 2 * live + 4096 {
            lru.retain(|e| e.folio.strong_count() > 0);
        }
        lru.extend(folios.drain(..).map(|folio| LruEntry {
            folio,
            mapping: Weak::clone(mapping),
        }));
    }

    /// A folio went from clean to dirty.
    pub(crate) fn account_dirtied(&self, size: u64) {
        let d = self.dirty.fetch_add(size, Ordering::Relaxed) + size;
        raise_peak(&self.peak_dirty, d + self.writeback.load(Ordering::Relaxed));
    }

    /// A dirty folio was cleaned (written, truncated or invalidated).
    pub(crate) fn account_cleaned(&self, size: u64) {
        self.dirty.fetch_sub(size, Ordering::Relaxed);
    }

    /// A folio went under writeback.
    pub(crate) fn account_writeback_start(&self, size: u64) {
        let w = self.writeback.fetch_add(size, Ordering::Relaxed) + size;
        raise_peak(&self.peak_dirty, w + self.dirty.load(Ordering::Relaxed));
    }

    /// A folio's writeback ended: throttled writers and reclaim may go on.
    pub(crate) fn account_writeback_end(&self, size: u64) {
        self.writeback.fetch_sub(size, Ordering::Relaxed);
        self.notify_progress();
    }

    /// Records a writeback pass's throughput for the throttle.
    pub(crate) fn record_bandwidth(&self, bytes: u64, took: Duration) {
        let secs = took.as_secs_f64();
        if bytes < (1 << 20) || secs <= 0.0 {
            return;
        }
        let bw = (bytes as f64 / secs) as u64;
        let old = self.write_bw.load(Ordering::Relaxed);
        let new = if old == 0 { bw } else { (old * 3 + bw) / 4 };
        self.write_bw.store(new, Ordering::Relaxed);
    }

    /// Dirty plus under-writeback bytes: what the limits are about (the
    /// kernel counts NR_FILE_DIRTY + NR_WRITEBACK the same way).
    pub fn nr_dirty(&self) -> u64 {
        self.dirty.load(Ordering::Relaxed) + self.writeback.load(Ordering::Relaxed)
    }

    fn notify_progress(&self) {
        *lock(&self.progress) += 1;
        self.progress_cv.notify_all();
    }

    /// Waits up to `timeout` for writeback or reclaim to make progress.
    fn wait_progress(&self, timeout: Duration) {
        let g = lock(&self.progress);
        let seen = *g;
        let _ = self
            .progress_cv
            .wait_timeout_while(g, timeout, |gen| *gen == seen);
    }

    /// Wakes the flusher for background writeback or memory pressure.
    pub(crate) fn wake_flusher(&self, pressure: bool) {
        let mut w = lock(&self.work);
        if pressure {
            w.pressure = true;
        } else {
            w.background = true;
        }
        drop(w);
        self.work_cv.notify_all();
    }

    /// `balance_dirty_pages`: called after a write dirtied `written`
    /// bytes, with no lock held. Under the background limit it returns at
    /// once (one load of two counters). Over it the flusher is woken; past
    /// the midpoint between the limits the writer sleeps in proportion to
    /// how close it is to the hard limit (its bytes at the writeback rate
    /// scaled by that closeness, at most [`MAX_PAUSE`]); at the hard limit
    /// it waits until writeback brings the count below it.
    #[inline]
    pub fn balance_dirty(&self, written: u64) {
        if self.nr_dirty() > self.limits.dirty_background {
            self.balance_dirty_slow(written);
        }
    }

    #[cold]
    #[inline(never)]
    fn balance_dirty_slow(&self, written: u64) {
        let l = &self.limits;
        let nr = self.nr_dirty();
        self.wake_flusher(false);
        let freerun = l.dirty_background + (l.dirty_limit - l.dirty_background) / 2;
        if nr <= freerun {
            return;
        }
        let start = Instant::now();
        if nr < l.dirty_limit {
            // pos_ratio: 1 at the midpoint, falling to 0 at the limit.
            let ratio = (l.dirty_limit - nr) as f64 / (l.dirty_limit - freerun).max(1) as f64;
            let bw = match self.write_bw.load(Ordering::Relaxed) {
                0 => 100 << 20,
                b => b,
            } as f64;
            let rate = (bw * ratio).max(1.0);
            let pause = Duration::from_secs_f64(written as f64 / rate).min(MAX_PAUSE);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        } else {
            while self.nr_dirty() >= l.dirty_limit {
                if !self.has_flusher.load(Ordering::Relaxed) {
                    // Nobody would write it back: the caller's own
                    // writeback has to (see `File::write`).
                    break;
                }
                self.wake_flusher(false);
                self.wait_progress(Duration::from_millis(50));
            }
        }
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.throttled_us
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// True when a writer must write back itself (no flusher runs) because
    /// the hard limit is reached.
    pub(crate) fn needs_own_writeback(&self) -> bool {
        !self.has_flusher.load(Ordering::Relaxed) && self.nr_dirty() >= self.limits.dirty_limit
    }

    /// Reclaims until `size` more bytes fit in the budget, or gives up
    /// after [`RECLAIM_PATIENCE`] (the folio then goes over budget).
    fn make_room(&self, size: u64) {
        let fits = |s: &Self| s.cached.load(Ordering::Relaxed) + size <= s.limits.budget;
        let deadline = Instant::now() + RECLAIM_PATIENCE;
        let mut completed_pending = false;
        let mut drained = false;
        let mut idle_retries = 0;
        loop {
            // Two sweeps: the first may only clear accessed bits.
            self.shrink(size);
            self.shrink(size);
            if fits(self) {
                return;
            }
            // New folios wait in per-file batches the sweeps cannot see;
            // under a small budget those can be all of it
            // (lru_add_drain_all): drain them, once, and sweep again.
            if !drained {
                drained = true;
                for m in self.inodes() {
                    m.cache.lru_drain();
                }
                continue;
            }
            // Folios pinned by completions that wait for a flush: make
            // them durable, once, and try again.
            if !completed_pending {
                completed_pending = true;
                for m in self.inodes() {
                    if m.has_pending_io() {
                        let _ = m.flush_pending_io();
                    }
                }
                continue;
            }
            // Nothing dirty or in flight: what is left is in use (locked,
            // referenced by a reader or a writer about to lock it). That
            // passes in microseconds: a few short retries, then over budget
            // rather than wait for what may never be released.
            if self.nr_dirty() == 0 {
                idle_retries += 1;
                if idle_retries > IDLE_RETRIES {
                    self.overcommits.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            if Instant::now() >= deadline {
                self.overcommits.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if self.has_flusher.load(Ordering::Relaxed) {
                self.wake_flusher(true);
                self.wait_progress(Duration::from_millis(20));
            } else {
                // No flusher: write back the oldest dirty inode here.
                if let Some(m) = self
                    .inodes()
                    .into_iter()
                    .filter(|m| m.dirtied_when() != 0)
                    .min_by_key(|m| m.dirtied_when())
                {
                    let _ = crate::writeback::background(&m, None);
                    let _ = m.flush_pending_io();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            completed_pending = false;
        }
    }

    /// One sweep of the clock hand over up to the whole LRU: evicts clean,
    /// idle folios until `want` bytes are free under the budget.
    fn shrink(&self, want: u64) {
        let fits = |s: &Self| s.cached.load(Ordering::Relaxed) + want <= s.limits.budget;
        let mut budget = lock(&self.lru).len();
        while budget > 0 && !fits(self) {
            let batch: Vec<LruEntry> = {
                let mut lru = lock(&self.lru);
                let n = budget.min(32).min(lru.len());
                lru.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            budget -= batch.len();
            let mut back = Vec::new();
            for e in batch {
                let (Some(folio), Some(mapping)) = (e.folio.upgrade(), e.mapping.upgrade()) else {
                    // Gone already: truncated, dropped, or its file closed.
                    continue;
                };
                if fits(self) || folio.test_clear_accessed() {
                    back.push(e);
                    continue;
                }
                let size = folio.size() as u64;
                if mapping.evict(folio) {
                    self.uncharge(size);
                    self.reclaimed.fetch_add(1, Ordering::Relaxed);
                } else {
                    back.push(e);
                }
            }
            lock(&self.lru).extend(back);
        }
        self.notify_progress();
    }

    /// The flusher: ends the thread's loop.
    pub(crate) fn shutdown(&self) {
        lock(&self.work).shutdown = true;
        self.work_cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_validate() {
        assert!(CacheLimits::default().validate().is_ok());
        let l = CacheLimits::with_budget(64 << 20);
        assert_eq!(l.dirty_background, (64 << 20) / 10);
        assert_eq!(l.dirty_limit, (64 << 20) / 5);
        assert!(l.validate().is_ok());
        let bad = CacheLimits {
            dirty_background: l.dirty_limit + 1,
            ..l
        };
        assert!(bad.validate().is_err());
        let bad = CacheLimits {
            budget: 1 << 20,
            ..l
        };
        assert!(bad.validate().is_err());
        let bad = CacheLimits {
            dirty_limit: l.budget + 1,
            ..l
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn accounting_and_peaks() {
        let m = MemShared::new(CacheLimits::with_budget(64 << 20));
        m.charge(4096);
        m.account_dirtied(4096);
        m.account_writeback_start(4096);
        m.account_cleaned(4096);
        assert_eq!(m.nr_dirty(), 4096);
        m.account_writeback_end(4096);
        m.uncharge(4096);
        let s = m.stats();
        assert_eq!((s.cached, s.dirty, s.writeback), (0, 0, 0));
        assert_eq!((s.peak_cached, s.peak_dirty), (4096, 8192));
    }

    #[test]
    fn under_the_background_limit_writers_do_not_wait() {
        let m = MemShared::new(CacheLimits::with_budget(64 << 20));
        m.account_dirtied(1 << 20);
        m.balance_dirty(1 << 20);
        assert_eq!(m.stats().throttled, 0);
        assert!(!lock(&m.work).background);
    }
}
