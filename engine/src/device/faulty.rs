//! `Faulty`: a wrapper over any device that injects I/O errors and models
//! a crash, for reliability tests of the write paths.
//!
//! Faults: reads or writes overlapping a device byte range fail; the next N
//! reads, writes or flushes fail. An injected failure is an `EIO` that
//! reaches the caller as [`Error::Io`] with the request's operation, offset
//! and length; nothing of that request reaches the inner device.
//!
//! Crash model: every write completed since the last successful flush is
//! logged. [`Faulty::crash`] hands that log over; with [`CrashMode::Lose`]
//! it also puts back the bytes those writes overwrote, so the device holds
//! what it held at the last flush (a crash that lost the volatile cache).

use super::{check_request, BlockDevice, IoBufs, IoCounters, IoRequest, IoStats};
use crate::align::AlignedBuf;
use crate::error::{Error, IoKind, Result};
use smallvec::SmallVec;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

/// What [`Faulty::crash`] does to the writes that were not flushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CrashMode {
    /// Only report them: the device keeps the bytes (they happened to
    /// reach the media).
    #[default]
    Keep,
    /// Undo them: restore the bytes each write overwrote. Costs a read of
    /// the old bytes before every write (hidden from [`BlockDevice::stats`]).
    Lose,
}

/// A write completed on the inner device but not yet flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnflushedWrite {
    /// Device byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// How many failures were injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Failed read requests.
    pub reads: u64,
    /// Failed write requests.
    pub writes: u64,
    /// Failed flushes.
    pub flushes: u64,
}

#[derive(Debug, Default)]
struct State {
    read_ranges: Vec<Range<u64>>,
    write_ranges: Vec<Range<u64>>,
    next_reads: u64,
    next_writes: u64,
    next_flushes: u64,
    mode: CrashMode,
    unflushed: Vec<UnflushedWrite>,
    /// Pre-write bytes, oldest first (`CrashMode::Lose` only).
    undo: Vec<(u64, AlignedBuf)>,
    injected: FaultStats,
}

/// A [`BlockDevice`] that forwards to an inner device and injects faults.
/// Thread-safe: faults may be armed or healed while I/O is running.
pub struct Faulty {
    inner: Arc<dyn BlockDevice>,
    state: Mutex<State>,
    /// I/O the wrapper itself did on the inner device (crash-model reads
    /// and restores), subtracted from the forwarded stats.
    own_io: IoCounters,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner.describe())
            .field("state", &*self.lock())
            .finish()
    }
}

impl Faulty {
    /// Wraps `inner` with no faults armed and [`CrashMode::Keep`].
    pub fn new(inner: Arc<dyn BlockDevice>) -> Faulty {
        Faulty {
            inner,
            state: Mutex::new(State::default()),
            own_io: IoCounters::default(),
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails every read request that overlaps device bytes `range`, until
    /// healed.
    pub fn fail_reads_in(&self, range: Range<u64>) {
        self.lock().read_ranges.push(range);
    }

    /// Fails every write request that overlaps device bytes `range`, until
    /// healed.
    pub fn fail_writes_in(&self, range: Range<u64>) {
        self.lock().write_ranges.push(range);
    }

    /// Fails the next `n` read requests (on top of any still armed).
    pub fn fail_next_reads(&self, n: u64) {
        let mut s = self.lock();
        s.next_reads = s.next_reads.saturating_add(n);
    }

    /// Fails the next `n` write requests (on top of any still armed).
    pub fn fail_next_writes(&self, n: u64) {
        let mut s = self.lock();
        s.next_writes = s.next_writes.saturating_add(n);
    }

    /// Fails the next `n` flushes (on top of any still armed).
    pub fn fail_next_flushes(&self, n: u64) {
        let mut s = self.lock();
        s.next_flushes = s.next_flushes.saturating_add(n);
    }

    /// Disarms every fault. The injected counts, the crash log and the
    /// crash mode are kept.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.read_ranges.clear();
        s.write_ranges.clear();
        s.next_reads = 0;
        s.next_writes = 0;
        s.next_flushes = 0;
    }

    /// Failures injected so far.
    pub fn injected(&self) -> FaultStats {
        self.lock().injected
    }

    /// Chooses what [`crash`](Faulty::crash) does. Switching to `Lose`
    /// only covers writes submitted from then on.
    pub fn set_crash_mode(&self, mode: CrashMode) {
        let mut s = self.lock();
        s.mode = mode;
        if mode == CrashMode::Keep {
            s.undo.clear();
        }
    }

    /// Writes completed since the last successful flush, oldest first.
    pub fn unflushed(&self) -> Vec<UnflushedWrite> {
        self.lock().unflushed.clone()
    }

    /// Simulates a crash: returns the writes not yet flushed and forgets
    /// them; with [`CrashMode::Lose`] first restores the bytes they
    /// overwrote, newest first, so the device is as at the last flush.
    pub fn crash(&self) -> Result<Vec<UnflushedWrite>> {
        let (lost, undo) = {
            let mut s = self.lock();
            (
                std::mem::take(&mut s.unflushed),
                std::mem::take(&mut s.undo),
            )
        };
        for (offset, old) in undo.iter().rev() {
            self.inner.write_at(*offset, old)?;
            self.own_io.record_write(old.len() as u64);
        }
        Ok(lost)
    }

    /// Decides whether `req` gets an injected failure. Requests the inner
    /// device would refuse anyway are left to it, so they keep their own
    /// error and use up no fault.
    fn inject(&self, req: &IoRequest<'_>) -> Option<Error> {
        let inner = &self.inner;
        let valid = check_request(
            req,
            inner.size(),
            inner.logical_block_size(),
            inner.read_only(),
        );
        if valid.is_err() {
            return None;
        }
        let (op, offset, len) = (req.bufs.kind(), req.offset, req.bufs.len());
        let mut s = self.lock();
        let s = &mut *s;
        let (ranges, next, count) = match op {
            IoKind::Write => (&s.write_ranges, &mut s.next_writes, &mut s.injected.writes),
            _ => (&s.read_ranges, &mut s.next_reads, &mut s.injected.reads),
        };
        let hit = ranges.iter().any(|r| overlaps(r, offset, len)) || take_one(next);
        hit.then(|| {
            *count += 1;
            Error::io(op, offset, len, eio())
        })
    }

    /// In `Lose` mode, saves the bytes a write is about to overwrite.
    fn save_undo(&self, req: &IoRequest<'_>) -> Result<()> {
        if req.bufs.kind() != IoKind::Write || self.lock().mode != CrashMode::Lose {
            return Ok(());
        }
        let len = usize::try_from(req.bufs.len()).map_err(|_| Error::RangeOverflow {
            offset: req.offset,
            len: req.bufs.len(),
        })?;
        let mut old = AlignedBuf::zeroed(len);
        self.inner.read_at(req.offset, &mut old)?;
        self.own_io.record_read(len as u64);
        self.lock().undo.push((req.offset, old));
        Ok(())
    }

    /// Takes `req` for forwarding, or fails it here.
    fn admit(&self, req: &IoRequest<'_>) -> Result<()> {
        match self.inject(req) {
            Some(e) => Err(e),
            None => self.save_undo(req),
        }
    }

    fn log_write(&self, offset: u64, len: u64) {
        self.lock().unflushed.push(UnflushedWrite { offset, len });
    }
}

impl BlockDevice for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }

    fn describe(&self) -> String {
        format!("faulty over {}", self.inner.describe())
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
        let mut fwd = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        for (i, req) in batch.iter_mut().enumerate() {
            match self.admit(req) {
                Err(e) => req.result = Some(Err(e)),
                Ok(()) => {
                    slots.push(i);
                    fwd.push(detach(req));
                }
            }
        }
        if fwd.is_empty() {
            return;
        }
        self.inner.submit(&mut fwd);
        for (i, mut done) in slots.into_iter().zip(fwd) {
            let res = done.take_result();
            if res.is_ok() && done.bufs.kind() == IoKind::Write {
                self.log_write(done.offset, done.bufs.len());
            }
            batch[i].bufs = done.bufs;
            batch[i].result = Some(res);
        }
    }

    fn flush(&self) -> Result<()> {
        let (logged, saved) = {
            let mut s = self.lock();
            if take_one(&mut s.next_flushes) {
                s.injected.flushes += 1;
                return Err(Error::io(IoKind::Flush, 0, 0, eio()));
            }
            (s.unflushed.len(), s.undo.len())
        };
        self.inner.flush()?;
        // Only what was logged before the flush began is known durable.
        let mut s = self.lock();
        let logged = logged.min(s.unflushed.len());
        let saved = saved.min(s.undo.len());
        s.unflushed.drain(..logged);
        s.undo.drain(..saved);
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.inner.stats() - self.own_io.snapshot()
    }
}

/// Moves a request's buffers into a new request for the inner device; the
/// caller puts them back when it completes.
fn detach<'a>(req: &mut IoRequest<'a>) -> IoRequest<'a> {
    let empty = match req.bufs {
        IoBufs::Read(_) => IoBufs::Read(SmallVec::new()),
        IoBufs::Write(_) => IoBufs::Write(SmallVec::new()),
    };
    IoRequest {
        offset: req.offset,
        bufs: std::mem::replace(&mut req.bufs, empty),
        result: None,
    }
}

fn overlaps(r: &Range<u64>, offset: u64, len: u64) -> bool {
    len > 0 && offset < r.end && r.start < offset.saturating_add(len)
}

/// Uses up one of a "fail the next N" budget; true when one was left.
fn take_one(n: &mut u64) -> bool {
    let had = *n > 0;
    *n = n.saturating_sub(1);
    had
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::Mem;

    fn faulty(size: u64) -> (Arc<Mem>, Faulty) {
        let mem = Arc::new(Mem::new(size));
        let f = Faulty::new(mem.clone());
        (mem, f)
    }

    #[test]
    fn range_faults_hit_only_overlapping_requests() {
        let (mem, f) = faulty(8192);
        f.fail_writes_in(1024..1025);
        assert!(f.write_at(0, &[1u8; 1024]).is_ok());
        let err = f.write_at(512, &[2u8; 1024]).unwrap_err();
        assert!(matches!(
            err,
            Error::Io {
                op: IoKind::Write,
                offset: 512,
                len: 1024,
                ..
            }
        ));
        assert!(f.write_at(1536, &[3u8; 512]).is_ok());
        assert_eq!(
            mem.snapshot(512, 1024),
            [&[1u8; 512][..], &[0u8; 512][..]].concat()
        );
        assert_eq!(f.injected().writes, 1);
        f.heal();
        assert!(f.write_at(512, &[2u8; 1024]).is_ok());
    }

    #[test]
    fn next_n_faults_are_used_up() {
        let (_mem, f) = faulty(4096);
        f.fail_next_reads(1);
        f.fail_next_reads(1);
        f.fail_next_flushes(1);
        let mut buf = [0u8; 512];
        assert!(f.read_at(0, &mut buf).is_err());
        assert!(f.read_at(0, &mut buf).is_err());
        assert!(f.read_at(0, &mut buf).is_ok());
        assert!(matches!(
            f.flush(),
            Err(Error::Io {
                op: IoKind::Flush,
                ..
            })
        ));
        assert!(f.flush().is_ok());
        assert_eq!(
            f.injected(),
            FaultStats {
                reads: 2,
                writes: 0,
                flushes: 1
            }
        );
        assert_eq!((f.stats().reads, f.stats().flushes), (1, 1));
    }

    #[test]
    fn invalid_requests_keep_their_own_error_and_use_no_fault() {
        let (_mem, f) = faulty(4096);
        f.fail_next_writes(1);
        assert!(matches!(
            f.write_at(100, &[0u8; 512]),
            Err(Error::Misaligned { .. })
        ));
        assert!(f.write_at(0, &[0u8; 512]).is_err());
        assert_eq!(f.injected().writes, 1);
    }

    #[test]
    fn crash_keep_reports_and_lose_restores() {
        let (mem, f) = faulty(8192);
        f.write_at(0, &[1u8; 1024]).unwrap();
        f.flush().unwrap();
        assert!(f.unflushed().is_empty());
        f.set_crash_mode(CrashMode::Lose);
        f.write_at(512, &[2u8; 512]).unwrap();
        f.write_at(0, &[3u8; 1024]).unwrap();
        let before = f.stats();
        assert_eq!((before.reads, before.writes), (0, 3));
        let lost = f.crash().unwrap();
        assert_eq!(
            lost,
            [
                UnflushedWrite {
                    offset: 512,
                    len: 512
                },
                UnflushedWrite {
                    offset: 0,
                    len: 1024
                }
            ]
        );
        assert_eq!(mem.snapshot(0, 1024), vec![1u8; 1024]);
        assert_eq!(f.stats(), before);
        f.set_crash_mode(CrashMode::Keep);
        f.write_at(0, &[4u8; 512]).unwrap();
        assert_eq!(f.crash().unwrap().len(), 1);
        assert_eq!(mem.snapshot(0, 512), vec![4u8; 512]);
    }

    #[test]
    fn a_failed_write_is_not_logged_and_flush_clears_the_log() {
        let (_mem, f) = faulty(4096);
        f.fail_next_writes(1);
        assert!(f.write_at(0, &[1u8; 512]).is_err());
        f.write_at(512, &[1u8; 512]).unwrap();
        assert_eq!(
            f.unflushed(),
            [UnflushedWrite {
                offset: 512,
                len: 512
            }]
        );
        f.flush().unwrap();
        assert!(f.crash().unwrap().is_empty());
    }
}
