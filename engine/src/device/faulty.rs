//! `Faulty`: a device wrapper that injects I/O errors and models a crash,
//! for reliability tests.
//!
//! Faults are armed and cleared at run time from any thread. A request that
//! is failed by injection never reaches the inner device, so the inner
//! device's counters (which `Faulty` reports as its own) show only the I/O
//! that really happened.

use super::{check_request, BlockDevice, IoBufs, IoRequest, IoStats};
use crate::align::AlignedBuf;
use crate::error::{Error, IoKind, Result};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// The armed faults.
#[derive(Debug, Default)]
struct Faults {
    read_ranges: Vec<Range<u64>>,
    write_ranges: Vec<Range<u64>>,
    next_reads: u64,
    next_writes: u64,
    next_flushes: u64,
}

impl Faults {
    /// Decides whether `req` fails, consuming a "fail the next N" count.
    fn should_fail(&mut self, kind: IoKind, range: Range<u64>) -> bool {
        let (ranges, next) = match kind {
            IoKind::Read => (&self.read_ranges, &mut self.next_reads),
            _ => (&self.write_ranges, &mut self.next_writes),
        };
        if ranges.iter().any(|r| overlaps(r, &range)) {
            return true;
        }
        take_one(next)
    }
}

/// One write since the last flush: where it went and what was there before.
#[derive(Debug)]
struct Undo {
    offset: u64,
    before: AlignedBuf,
}

/// A [`BlockDevice`] that fails chosen requests with EIO and can forget
/// unflushed writes, over any inner device.
pub struct Faulty {
    inner: Arc<dyn BlockDevice>,
    faults: Mutex<Faults>,
    /// `Some` when the crash model is on: the pre-images of the writes
    /// since the last successful flush, oldest first.
    unflushed: Option<Mutex<Vec<Undo>>>,
    injected: AtomicU64,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner.describe())
            .field("faults", &*self.faults())
            .field("injected", &self.injected())
            .finish()
    }
}

impl Faulty {
    /// Wraps `inner` with no fault armed and the crash model off.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Self {
        Faulty {
            inner,
            faults: Mutex::new(Faults::default()),
            unflushed: None,
            injected: AtomicU64::new(0),
        }
    }

    /// Turns the crash model on: every write first reads the bytes it will
    /// overwrite (those reads show in [`stats`](BlockDevice::stats)), so
    /// that [`crash_lose_unflushed`](Faulty::crash_lose_unflushed) can put
    /// them back.
    pub fn with_crash_model(mut self) -> Self {
        self.unflushed = Some(Mutex::new(Vec::new()));
        self
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    /// Fails every read that overlaps the device bytes `range`, until healed.
    pub fn fail_reads_in(&self, range: Range<u64>) {
        self.faults().read_ranges.push(range);
    }

    /// Fails every write that overlaps the device bytes `range`, until healed.
    pub fn fail_writes_in(&self, range: Range<u64>) {
        self.faults().write_ranges.push(range);
    }

    /// Fails the next `n` read requests (in addition to any already armed).
    pub fn fail_next_reads(&self, n: u64) {
        self.faults().next_reads += n;
    }

    /// Fails the next `n` write requests.
    pub fn fail_next_writes(&self, n: u64) {
        self.faults().next_writes += n;
    }

    /// Fails the next `n` flushes.
    pub fn fail_next_flushes(&self, n: u64) {
        self.faults().next_flushes += n;
    }

    /// Clears every armed fault. The injected-failure count is kept.
    pub fn heal(&self) {
        *self.faults() = Faults::default();
    }

    /// How many requests and flushes have been failed by injection.
    pub fn injected(&self) -> u64 {
        self.injected.load(Relaxed)
    }

    /// Simulates a crash: every write since the last successful flush is
    /// undone (newest first, so the oldest pre-image wins), as if the
    /// device lost its volatile cache. Returns how many writes were undone.
    /// Fails with `Unsupported` when the crash model is off.
    pub fn crash_lose_unflushed(&self) -> Result<usize> {
        let Some(log) = &self.unflushed else {
            return Err(Error::Unsupported(
                "crash model is off (use Faulty::with_crash_model)".into(),
            ));
        };
        let mut log = lock(log);
        let n = log.len();
        while let Some(undo) = log.pop() {
            self.inner.write_at(undo.offset, &undo.before)?;
        }
        Ok(n)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// Fails the requests that are invalid or chosen by a fault, leaving
    /// `result` unset on the others.
    fn screen(&self, batch: &mut [IoRequest<'_>]) {
        let (size, lbs, ro) = (
            self.inner.size(),
            self.inner.logical_block_size(),
            self.inner.read_only(),
        );
        let mut faults = self.faults();
        for req in batch.iter_mut() {
            // An invalid request gets its real error and uses up no fault.
            if let Err(e) = check_request(req, size, lbs, ro) {
                req.result = Some(Err(e));
                continue;
            }
            let (kind, len) = (req.bufs.kind(), req.bufs.len());
            if faults.should_fail(kind, req.offset..req.offset + len) {
                self.injected.fetch_add(1, Relaxed);
                req.result = Some(Err(Error::io(kind, req.offset, len, eio())));
            }
        }
    }

    /// Records the pre-image of every write about to go to the device.
    fn save_pre_images(&self, batch: &[IoRequest<'_>], log: &mut Vec<Undo>) -> Result<()> {
        for req in batch {
            if let IoBufs::Write(_) = req.bufs {
                let len = usize::try_from(req.bufs.len()).map_err(|_| Error::RangeOverflow {
                    offset: req.offset,
                    len: req.bufs.len(),
                })?;
                let mut before = AlignedBuf::zeroed(len);
                self.inner.read_at(req.offset, &mut before)?;
                log.push(Undo {
                    offset: req.offset,
                    before,
                });
            }
        }
        Ok(())
    }

    /// Sends the requests without a result to the inner device as one batch.
    fn forward(&self, batch: &mut [IoRequest<'_>]) {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].result.is_none())
            .collect();
        if pending.len() == batch.len() {
            return self.forward_all(batch);
        }
        // Move the survivors into a batch of their own, so the inner device
        // still sees one submission, then move them back.
        let mut sub: Vec<IoRequest<'_>> = pending
            .iter()
            .map(|&i| std::mem::replace(&mut batch[i], IoRequest::write(0, &[])))
            .collect();
        self.forward_all(&mut sub);
        for (&i, req) in pending.iter().zip(sub) {
            batch[i] = req;
        }
    }

    fn forward_all(&self, batch: &mut [IoRequest<'_>]) {
        if batch.is_empty() {
            return;
        }
        let Some(log) = &self.unflushed else {
            return self.inner.submit(batch);
        };
        // Held across the submit so that a pre-image and its write cannot
        // interleave with another thread's.
        let mut log = lock(log);
        if let Err(e) = self.save_pre_images(batch, &mut log) {
            fail_all(batch, &e);
            return;
        }
        self.inner.submit(batch);
    }
}

impl BlockDevice for Faulty {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        self.screen(batch);
        self.forward(batch);
    }

    fn flush(&self) -> Result<()> {
        if take_one(&mut self.faults().next_flushes) {
            self.injected.fetch_add(1, Relaxed);
            return Err(Error::io(IoKind::Flush, 0, 0, eio()));
        }
        match &self.unflushed {
            Some(log) => {
                let mut log = lock(log);
                self.inner.flush()?;
                log.clear();
                Ok(())
            }
            None => self.inner.flush(),
        }
    }

    /// The inner device's counters: injected failures never reach it.
    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Decrements a "fail the next N" count; true when one was taken.
fn take_one(n: &mut u64) -> bool {
    let armed = *n > 0;
    *n = n.saturating_sub(1);
    armed
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Fails every request of `batch` with a copy of `e` (the pre-image read
/// failed, so none of them may reach the device untracked).
fn fail_all(batch: &mut [IoRequest<'_>], e: &Error) {
    for req in batch.iter_mut() {
        let (kind, len) = (req.bufs.kind(), req.bufs.len());
        let source = io::Error::other(format!("crash model could not save a pre-image: {e}"));
        req.result = Some(Err(Error::io(kind, req.offset, len, source)));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not hide the faults.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::Mem;

    #[test]
    fn next_n_counts_down_and_heal_clears() {
        let f = Faulty::new(Arc::new(Mem::new(8192)));
        f.fail_next_writes(2);
        assert!(f.write_at(0, &[1; 512]).is_err());
        assert!(f.write_at(0, &[1; 512]).is_err());
        f.write_at(0, &[1; 512]).unwrap();
        f.fail_reads_in(1024..1025);
        let mut b = [0u8; 512];
        f.read_at(512, &mut b).unwrap();
        assert!(f.read_at(1024, &mut b).is_err());
        f.heal();
        f.read_at(1024, &mut b).unwrap();
        assert_eq!(f.injected(), 3);
        let s = f.stats();
        assert_eq!((s.reads, s.writes), (2, 1));
    }

    #[test]
    fn invalid_requests_use_up_no_fault() {
        let f = Faulty::new(Arc::new(Mem::new(4096)));
        f.fail_next_writes(1);
        assert!(matches!(
            f.write_at(100, &[0; 512]),
            Err(Error::Misaligned { .. })
        ));
        assert!(matches!(f.write_at(0, &[0; 512]), Err(Error::Io { .. })));
        assert_eq!(f.injected(), 1);
    }
}
