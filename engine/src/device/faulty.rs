//! `Faulty`: a wrapper over any device that injects I/O errors and models
//! a crash, for reliability tests of the write paths.
//!
//! Faults: reads or writes overlapping a device byte range fail; the next N
//! reads, writes or flushes fail. By default an injected failure is an
//! `EIO` that reaches the caller as [`Error::Io`] with the request's
//! operation, offset and length, and nothing of that request reaches the
//! inner device. Writes and flushes can also fail the ways real devices
//! do ([`WriteFault`], [`FlushFault`]), armed by range or by count alike:
//!
//! - ENOSPC, nothing written (a thin-provisioned or file-backed device that
//!   ran out of space);
//! - a torn write: only the first N logical blocks of the request land,
//!   then it fails with EIO, which says nothing of how much landed (a
//!   device that lost power or hit a bad sector part-way);
//! - a short write: the first N blocks land and the device says so; the
//!   request fails with [`ShortWrite::into_error`]'s error, which carries
//!   the offset of the first byte that did not land and, as its source,
//!   how much did. Bytes past it are not written;
//! - a flush failing with EIO or ENOSPC, by count or while an unflushed
//!   write overlaps a range; the writes since the last good flush stay
//!   unflushed, so [`Faulty::crash`] treats them as such.
//!
//! The landed prefix of a torn or short write did reach the device: it is
//! logged as an unflushed write (and undone by a `Lose` crash) like any
//! other.
//!
//! A write delay ([`Faulty::set_write_delay`]) slows every write request
//! before it is forwarded, so tests can act while writeback is in flight
//! (a folio under writeback, a writer throttled behind a slow device).
//!
//! Crash model: every write completed since the last successful flush is
//! logged. [`Faulty::crash`] hands that log over; with [`CrashMode::Lose`]
//! it also puts back the bytes those writes overwrote, so the device holds
//! what it held at the last flush (a crash that lost the volatile cache).

use super::{check_request, BlockDevice, IoBufs, IoCounters, IoRequest, IoStats, ShortWrite};
use crate::align::AlignedBuf;
use crate::error::{Error, IoKind, Result};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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

/// What an armed write fault does to a write request it hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteFault {
    /// Fails with EIO; nothing lands. What [`Faulty::fail_writes_in`] and
    /// [`Faulty::fail_next_writes`] arm.
    #[default]
    Eio,
    /// Fails with ENOSPC; nothing lands.
    NoSpace,
    /// The first `blocks` logical blocks land (all of them, for a request
    /// no longer), then the request fails with EIO.
    Torn {
        /// Logical blocks that land.
        blocks: u64,
    },
    /// The first `blocks` logical blocks land (at most one block fewer
    /// than asked, so the write is always short) and the request fails as
    /// a [`ShortWrite`].
    Short {
        /// Logical blocks that land.
        blocks: u64,
    },
}

/// What an armed flush fault returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlushFault {
    /// EIO (a device that could not write back its cache).
    #[default]
    Eio,
    /// ENOSPC (a thin or file-backed device out of space at writeback).
    NoSpace,
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
    /// Failed write requests, of every kind below.
    pub writes: u64,
    /// Failed flushes, of every kind.
    pub flushes: u64,
    /// Of `writes`: torn ([`WriteFault::Torn`]).
    pub torn_writes: u64,
    /// Of `writes`: short ([`WriteFault::Short`]).
    pub short_writes: u64,
    /// Of `writes`: ENOSPC ([`WriteFault::NoSpace`]).
    pub no_space_writes: u64,
    /// Of `flushes`: ENOSPC ([`FlushFault::NoSpace`]).
    pub no_space_flushes: u64,
}

/// A "fail the next N" budget per fault kind, used up oldest first.
type Budget<F> = VecDeque<(u64, F)>;

#[derive(Debug, Default)]
struct State {
    read_ranges: Vec<Range<u64>>,
    write_ranges: Vec<(Range<u64>, WriteFault)>,
    /// Flushes fail while an unflushed write overlaps one of these.
    flush_ranges: Vec<(Range<u64>, FlushFault)>,
    next_reads: u64,
    next_writes: Budget<WriteFault>,
    next_flushes: Budget<FlushFault>,
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
    /// Nanoseconds each forwarded write request sleeps first (0: none).
    /// An atomic, not in `State`: the sleep must not hold the lock.
    write_delay_ns: AtomicU64,
    /// Write requests that slept the delay.
    delayed_writes: AtomicU64,
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
            write_delay_ns: AtomicU64::new(0),
            delayed_writes: AtomicU64::new(0),
        }
    }

    /// Makes every write request sleep `d` before it is forwarded to the
    /// inner device (a slow device: tests use it to act while writeback
    /// is in flight); `Duration::ZERO` turns it off. Requests failed by an
    /// injected fault are not delayed. Reads and flushes never are.
    pub fn set_write_delay(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.write_delay_ns.store(ns, Ordering::Relaxed);
    }

    /// Write requests delayed by [`set_write_delay`](Faulty::set_write_delay) so far.
    pub fn delayed_writes(&self) -> u64 {
        self.delayed_writes.load(Ordering::Relaxed)
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
        self.fail_writes_in_with(range, WriteFault::Eio);
    }

    /// Applies `fault` to every write request that overlaps device bytes
    /// `range`, until healed. The first armed range a request overlaps
    /// decides.
    pub fn fail_writes_in_with(&self, range: Range<u64>, fault: WriteFault) {
        self.lock().write_ranges.push((range, fault));
    }

    /// Applies `fault` to the next `n` write requests (after any budget
    /// still armed is used up).
    pub fn fail_next_writes_with(&self, n: u64, fault: WriteFault) {
        if n > 0 {
            self.lock().next_writes.push_back((n, fault));
        }
    }

    /// Fails every flush with `fault` while a write not yet flushed
    /// overlaps device bytes `range` (the device cannot make that region
    /// durable), until healed or until a crash forgets the write.
    pub fn fail_flushes_over(&self, range: Range<u64>, fault: FlushFault) {
        self.lock().flush_ranges.push((range, fault));
    }

    /// Fails the next `n` flushes with `fault` (after any budget still
    /// armed is used up).
    pub fn fail_next_flushes_with(&self, n: u64, fault: FlushFault) {
        if n > 0 {
            self.lock().next_flushes.push_back((n, fault));
        }
    }

    /// Fails the next `n` read requests (on top of any still armed).
    pub fn fail_next_reads(&self, n: u64) {
        let mut s = self.lock();
        s.next_reads = s.next_reads.saturating_add(n);
    }

    /// Fails the next `n` write requests (on top of any still armed).
    pub fn fail_next_writes(&self, n: u64) {
        self.fail_next_writes_with(n, WriteFault::Eio);
    }

    /// Fails the next `n` flushes (on top of any still armed).
    pub fn fail_next_flushes(&self, n: u64) {
        self.fail_next_flushes_with(n, FlushFault::Eio);
    }

    /// Disarms every fault. The injected counts, the crash log and the
    /// crash mode are kept.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.read_ranges.clear();
        s.write_ranges.clear();
        s.flush_ranges.clear();
        s.next_reads = 0;
        s.next_writes.clear();
        s.next_flushes.clear();
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

    /// Decides whether `req` gets an injected fault. Requests the inner
    /// device would refuse anyway are left to it, so they keep their own
    /// error and use up no fault.
    fn inject(&self, req: &IoRequest<'_>) -> Option<Hit> {
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
        if op != IoKind::Write {
            let hit = s.read_ranges.iter().any(|r| overlaps(r, offset, len))
                || take_one(&mut s.next_reads);
            return hit.then(|| {
                s.injected.reads += 1;
                Hit::Fail(Error::io(op, offset, len, eio()))
            });
        }
        let fault = s
            .write_ranges
            .iter()
            .find(|(r, _)| overlaps(r, offset, len))
            .map(|&(_, f)| f)
            .or_else(|| take_from(&mut s.next_writes))?;
        let st = &mut s.injected;
        st.writes += 1;
        let lbs = u64::from(inner.logical_block_size().max(1));
        Some(match fault {
            WriteFault::Eio => Hit::Fail(Error::io(op, offset, len, eio())),
            WriteFault::NoSpace => {
                st.no_space_writes += 1;
                Hit::Fail(Error::io(op, offset, len, errno(libc::ENOSPC)))
            }
            WriteFault::Torn { blocks } => {
                st.torn_writes += 1;
                Hit::Prefix {
                    landed: blocks.saturating_mul(lbs).min(len),
                    error: Error::io(op, offset, len, eio()),
                }
            }
            WriteFault::Short { blocks } => {
                st.short_writes += 1;
                // Valid writes are whole blocks, so this leaves at least one
                // unwritten (an empty write, hit by a count, lands nothing).
                let landed = blocks.saturating_mul(lbs).min(len.saturating_sub(lbs));
                let short = ShortWrite {
                    offset,
                    requested: len,
                    written: landed,
                };
                Hit::Prefix {
                    landed,
                    error: short.into_error(),
                }
            }
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

    /// Takes `req` for forwarding whole, or only a prefix of it, or fails
    /// it here.
    fn admit<'a>(&self, req: &IoRequest<'a>) -> Admit<'a> {
        match self.inject(req) {
            None => match self.save_undo(req) {
                Ok(()) => Admit::Whole,
                Err(e) => Admit::Fail(e),
            },
            Some(Hit::Fail(e)) => Admit::Fail(e),
            Some(Hit::Prefix { landed, error }) => {
                let IoBufs::Write(segs) = &req.bufs else {
                    // Only writes get a prefix fault.
                    return Admit::Fail(error);
                };
                if landed == 0 {
                    return Admit::Fail(error);
                }
                let prefix = IoRequest::writev(req.offset, prefix_of(segs, landed));
                match self.save_undo(&prefix) {
                    Ok(()) => Admit::Prefix(prefix, error),
                    Err(e) => Admit::Fail(e),
                }
            }
        }
    }

    /// Sleeps the write delay once per write request about to be forwarded.
    fn delay_writes(&self, fwd: &[IoRequest<'_>]) {
        let ns = self.write_delay_ns.load(Ordering::Relaxed);
        if ns == 0 {
            return;
        }
        let writes = fwd
            .iter()
            .filter(|r| r.bufs.kind() == IoKind::Write)
            .count();
        for _ in 0..writes {
            std::thread::sleep(Duration::from_nanos(ns));
            self.delayed_writes.fetch_add(1, Ordering::Relaxed);
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
        // Per forwarded request: its index in `batch`, and the injected
        // error it ends with once its prefix has landed (`None`: whole).
        let mut slots = Vec::with_capacity(batch.len());
        for (i, req) in batch.iter_mut().enumerate() {
            match self.admit(req) {
                Admit::Fail(e) => req.result = Some(Err(e)),
                Admit::Whole => {
                    slots.push((i, None));
                    fwd.push(detach(req));
                }
                Admit::Prefix(prefix, error) => {
                    slots.push((i, Some(error)));
                    fwd.push(prefix);
                }
            }
        }
        if fwd.is_empty() {
            return;
        }
        self.delay_writes(&fwd);
        self.inner.submit(&mut fwd);
        for ((i, injected), mut done) in slots.into_iter().zip(fwd) {
            let res = done.take_result();
            if res.is_ok() && done.bufs.kind() == IoKind::Write {
                self.log_write(done.offset, done.bufs.len());
            }
            batch[i].result = Some(match injected {
                None => {
                    batch[i].bufs = done.bufs;
                    res
                }
                // The prefix landed: the request fails as armed. If the
                // prefix itself failed, that real error is the answer.
                Some(error) => res.and(Err(error)),
            });
        }
    }

    fn flush(&self) -> Result<()> {
        let (logged, saved) = {
            let mut s = self.lock();
            let s = &mut *s;
            let unflushed = &s.unflushed;
            let fault = s
                .flush_ranges
                .iter()
                .find(|(r, _)| unflushed.iter().any(|w| overlaps(r, w.offset, w.len)))
                .map(|&(_, f)| f)
                .or_else(|| take_from(&mut s.next_flushes));
            if let Some(fault) = fault {
                // The writes since the last good flush stay logged (and
                // their undo saved): a crash now loses them.
                s.injected.flushes += 1;
                let source = match fault {
                    FlushFault::Eio => eio(),
                    FlushFault::NoSpace => {
                        s.injected.no_space_flushes += 1;
                        errno(libc::ENOSPC)
                    }
                };
                return Err(Error::io(IoKind::Flush, 0, 0, source));
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

/// An injected fault, decided for one request.
enum Hit {
    /// Fail it here; nothing reaches the inner device.
    Fail(Error),
    /// Write its first `landed` bytes, then fail it with `error`.
    Prefix { landed: u64, error: Error },
}

/// What [`Faulty::submit`] does with one request.
enum Admit<'a> {
    /// Forward it as it is.
    Whole,
    /// Forward this prefix of it, then fail it with the error.
    Prefix(IoRequest<'a>, Error),
    /// Fail it with the error.
    Fail(Error),
}

/// The first `len` bytes of a scatter list, as a scatter list.
fn prefix_of<'a>(segs: &[&'a [u8]], len: u64) -> SmallVec<[&'a [u8]; 4]> {
    let mut left = len;
    let mut out = SmallVec::new();
    for &s in segs {
        if left == 0 {
            break;
        }
        let n = (s.len() as u64).min(left);
        // n <= s.len(), a usize.
        out.push(&s[..n as usize]);
        left -= n;
    }
    out
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

/// Uses up one of the oldest "fail the next N" budget; its fault when one
/// was left.
fn take_from<F: Copy>(budget: &mut Budget<F>) -> Option<F> {
    let (n, fault) = budget.front_mut()?;
    let fault = *fault;
    *n -= 1;
    if *n == 0 {
        budget.pop_front();
    }
    Some(fault)
}

fn eio() -> io::Error {
    errno(libc::EIO)
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
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
                flushes: 1,
                torn_writes: 0,
                short_writes: 0,
                no_space_writes: 0,
                no_space_flushes: 0,
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

    /// 4 blocks of `byte` (Mem's logical block is 512).
    fn blocks(byte: u8) -> Vec<u8> {
        vec![byte; 2048]
    }

    #[test]
    fn a_torn_write_lands_exactly_its_prefix_then_fails_with_eio() {
        let (mem, f) = faulty(8192);
        f.write_at(0, &vec![1u8; 4096]).unwrap();
        f.flush().unwrap();
        f.set_crash_mode(CrashMode::Lose);
        f.fail_next_writes_with(1, WriteFault::Torn { blocks: 3 });
        let err = f.write_at(1024, &blocks(2)).unwrap_err();
        match &err {
            Error::Io {
                op: IoKind::Write,
                offset: 1024,
                len: 2048,
                source,
            } => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        assert_eq!(ShortWrite::of(&err), None, "a torn write says nothing");
        let after = mem.snapshot(0, 4096);
        assert_eq!(after[..1024], [1u8; 1024]);
        assert_eq!(after[1024..2560], [2u8; 1536], "three blocks landed");
        assert_eq!(after[2560..], [1u8; 1536], "the fourth did not");
        assert_eq!(
            f.unflushed(),
            [UnflushedWrite {
                offset: 1024,
                len: 1536
            }]
        );
        let st = f.injected();
        assert_eq!((st.writes, st.torn_writes), (1, 1));
        // The landed prefix is undone by a crash like any unflushed write.
        f.crash().unwrap();
        assert_eq!(mem.snapshot(0, 4096), vec![1u8; 4096]);
    }

    #[test]
    fn a_torn_write_over_a_range_with_no_block_landing_writes_nothing() {
        let (mem, f) = faulty(8192);
        f.fail_writes_in_with(4096..4097, WriteFault::Torn { blocks: 0 });
        assert!(f.write_at(3584, &blocks(5)).is_err());
        assert_eq!(mem.snapshot(0, 8192), vec![0u8; 8192]);
        assert!(f.unflushed().is_empty());
        // A tear of more blocks than the request has lands all of it.
        f.heal();
        f.fail_next_writes_with(1, WriteFault::Torn { blocks: 99 });
        assert!(f.write_at(0, &blocks(6)).is_err());
        assert_eq!(mem.snapshot(0, 2048), blocks(6));
        assert_eq!(f.injected().torn_writes, 2);
    }

    #[test]
    fn a_short_write_reports_how_much_landed_and_writes_no_more() {
        let (mem, f) = faulty(8192);
        f.fail_writes_in_with(0..8192, WriteFault::Short { blocks: 1 });
        let err = f.write_at(512, &blocks(3)).unwrap_err();
        assert!(matches!(
            err,
            Error::Io {
                op: IoKind::Write,
                offset: 1024,
                len: 1536,
                ..
            }
        ));
        assert_eq!(
            ShortWrite::of(&err),
            Some(&ShortWrite {
                offset: 512,
                requested: 2048,
                written: 512
            })
        );
        let after = mem.snapshot(0, 4096);
        assert_eq!(after[512..1024], [3u8; 512]);
        assert!(after[1024..].iter().all(|&b| b == 0), "nothing past it");
        assert!(after[..512].iter().all(|&b| b == 0));
        // At most one block fewer than asked: always short.
        let err = f.write_at(4096, &[4u8; 512]).unwrap_err();
        assert_eq!(ShortWrite::of(&err).map(|s| s.written), Some(0));
        let st = f.injected();
        assert_eq!((st.writes, st.short_writes), (2, 2));
        assert_eq!(
            f.unflushed(),
            [UnflushedWrite {
                offset: 512,
                len: 512
            }]
        );
    }

    #[test]
    fn enospc_on_write_writes_nothing() {
        let (mem, f) = faulty(8192);
        f.fail_next_writes_with(2, WriteFault::NoSpace);
        f.fail_next_writes(1);
        for errno in [libc::ENOSPC, libc::ENOSPC, libc::EIO] {
            match f.write_at(0, &blocks(5)) {
                Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(errno)),
                other => panic!("{other:?}"),
            }
        }
        f.write_at(2048, &blocks(6)).unwrap();
        assert_eq!(mem.snapshot(0, 2048), vec![0u8; 2048]);
        let st = f.injected();
        assert_eq!((st.writes, st.no_space_writes), (3, 2));
        f.fail_writes_in_with(100..101, WriteFault::NoSpace);
        assert!(f.write_at(0, &[1u8; 512]).is_err());
        assert!(f.write_at(512, &[1u8; 512]).is_ok());
        assert_eq!(f.injected().no_space_writes, 3);
    }

    #[test]
    fn a_failed_flush_keeps_the_writes_since_the_last_good_one_unflushed() {
        for fault in [FlushFault::Eio, FlushFault::NoSpace] {
            let (mem, f) = faulty(8192);
            f.set_crash_mode(CrashMode::Lose);
            f.write_at(0, &blocks(1)).unwrap();
            f.flush().unwrap();
            f.write_at(2048, &blocks(2)).unwrap();
            f.write_at(0, &blocks(3)).unwrap();
            f.fail_next_flushes_with(1, fault);
            let want = match fault {
                FlushFault::Eio => libc::EIO,
                FlushFault::NoSpace => libc::ENOSPC,
            };
            match f.flush() {
                Err(Error::Io {
                    op: IoKind::Flush,
                    source,
                    ..
                }) => assert_eq!(source.raw_os_error(), Some(want)),
                other => panic!("{other:?}"),
            }
            assert_eq!(f.unflushed().len(), 2);
            let lost = f.crash().unwrap();
            assert_eq!(
                lost,
                [
                    UnflushedWrite {
                        offset: 2048,
                        len: 2048
                    },
                    UnflushedWrite {
                        offset: 0,
                        len: 2048
                    }
                ]
            );
            assert_eq!(mem.snapshot(0, 2048), blocks(1));
            assert_eq!(mem.snapshot(2048, 2048), vec![0u8; 2048]);
            let st = f.injected();
            assert_eq!(st.flushes, 1);
            assert_eq!(st.no_space_flushes, u64::from(fault == FlushFault::NoSpace));
        }
    }

    #[test]
    fn a_flush_fails_while_an_unflushed_write_overlaps_its_range() {
        let (_mem, f) = faulty(8192);
        f.fail_flushes_over(4096..8192, FlushFault::NoSpace);
        f.write_at(0, &blocks(1)).unwrap();
        f.flush().unwrap();
        f.write_at(4096, &blocks(2)).unwrap();
        assert!(f.flush().is_err());
        assert!(f.flush().is_err(), "armed until healed");
        assert_eq!(f.injected().no_space_flushes, 2);
        assert_eq!(f.crash().unwrap().len(), 1);
        f.flush().unwrap();
        f.write_at(4096, &blocks(2)).unwrap();
        f.heal();
        f.flush().unwrap();
        assert!(f.unflushed().is_empty());
    }

    /// Every forwarded write request sleeps the delay (sleep returns no
    /// sooner than asked, so the lower bound cannot fail spuriously);
    /// reads, flushes and writes failed by a fault are not delayed; zero
    /// turns it off; the bytes land as without it.
    #[test]
    fn a_write_delay_slows_each_forwarded_write_only() {
        let (mem, f) = faulty(8192);
        let d = Duration::from_millis(30);
        f.set_write_delay(d);
        let t = std::time::Instant::now();
        let (a, b) = ([1u8; 512], [2u8; 1024]);
        let mut batch = [IoRequest::write(0, &a), IoRequest::write(2048, &b)];
        f.submit(&mut batch);
        assert!(batch.iter_mut().all(|r| r.take_result().is_ok()));
        assert!(t.elapsed() >= 2 * d, "one delay per write request");
        assert_eq!(f.delayed_writes(), 2);
        assert_eq!(mem.snapshot(0, 512), vec![1u8; 512]);
        assert_eq!(mem.snapshot(2048, 1024), vec![2u8; 1024]);
        let mut buf = [0u8; 512];
        f.read_at(0, &mut buf).unwrap();
        f.flush().unwrap();
        f.fail_next_writes(1);
        assert!(f.write_at(0, &[3u8; 512]).is_err());
        assert_eq!(f.delayed_writes(), 2, "reads, flushes, failed writes: none");
        f.set_write_delay(Duration::ZERO);
        f.write_at(0, &[4u8; 512]).unwrap();
        assert_eq!(f.delayed_writes(), 2);
        assert_eq!(mem.snapshot(0, 512), vec![4u8; 512]);
    }
}
