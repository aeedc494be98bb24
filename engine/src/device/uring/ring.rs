//! The submit / reap loop over one io_uring.
//!
//! A batch is driven to completion inside one call: at most `qd` requests
//! are in flight, each in a slot whose index is the SQE's `user_data`. A
//! slot holds what the kernel reads while the request is in flight (the
//! iovec array, a bounce buffer for misaligned memory) and is reused only
//! after its CQE has been reaped (the table is [`super::slots`]).
//!
//! Soundness rests on one rule: [`Ring::run`] never lets go of the callers'
//! buffers while the kernel may still use them. It borrows them for the
//! whole call, and it leaves the call, by returning *or by unwinding*, only
//! once no slot is in flight. Returning is the loop's own condition.
//! Unwinding (a bug's panic, an index out of range, an allocation failure
//! under `panic`-on-OOM) would otherwise drop the borrow at once and let
//! the caller free or reuse memory a Read SQE is still filling; a drop
//! guard ([`Drain`]) therefore blocks in io_uring_enter until every
//! in-flight CQE has arrived before the unwinding goes on, and aborts the
//! process if the kernel stops answering (see [`Ring::drain`]).
//!
//! Miri: the slot bookkeeping ([`super::slots`]) and the segment code
//! (`device::segments`) are plain Rust and their tests run under
//! `cargo +nightly miri test -p bufwrite-engine --lib`. Miri cannot run
//! io_uring_setup or io_uring_enter, nor see the kernel's reads and writes
//! of SQE memory, so the loop itself, the guard, and the lifetime of the
//! buffers the kernel touches are covered by the tests on real rings
//! (marked `cfg_attr(miri, ignore)`), not by Miri.

use super::slots::Slots;
use crate::device::segments::{self, Errno, MAX_RETRIES};
use crate::device::{IoBufs, IoCounters, IoRequest};
use crate::error::{Error, IoKind};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;

/// Most bytes one Read/Write SQE asks for; a longer request continues as a
/// short transfer would. A multiple of every logical block size.
const MAX_SQE_BYTES: u64 = 1 << 30;
/// `user_data` of a flush; slot indices never reach it.
const FLUSH_TAG: u64 = u64::MAX;

/// How SQEs name the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A plain descriptor.
    Fd(RawFd),
    /// Index 0 of the ring's registered files (saves the fd lookup per I/O).
    Fixed,
}

/// Builds an opcode with the target as its file argument.
macro_rules! on_target {
    ($target:expr, |$fd:ident| $build:expr) => {
        match $target {
            Target::Fd(raw) => {
                let $fd = types::Fd(raw);
                $build
            }
            Target::Fixed => {
                let $fd = types::Fixed(0);
                $build
            }
        }
    };
}

/// What the completion of one request needs from the device.
pub(super) struct Ctx<'a> {
    /// Buffer address alignment for O_DIRECT.
    pub mem_align: usize,
    /// Where completed requests are counted.
    pub counters: &'a IoCounters,
}

/// What a CQE means for its request.
enum Outcome {
    Resubmit,
    Done,
    Fail(io::Error),
}

/// A ring and its slots. One submitter at a time (the device keeps it in a
/// Mutex): enough for this prototype, where a batch already fills the queue.
pub(super) struct Ring {
    ring: IoUring,
    target: Target,
    batch: usize,
    slots: Slots,
    /// CQEs taken off the ring, by slot index, awaiting processing.
    cqes: Vec<(usize, i32)>,
    /// `(address, length)` of each registered buffer, by buffer index; empty
    /// when none are registered.
    fixed_bufs: Vec<(usize, usize)>,
    /// ReadFixed/WriteFixed SQEs pushed so far.
    pub(super) fixed_sqes: u64,
    /// Test hook: where to panic inside the loop.
    #[cfg(test)]
    pub(super) panic_at: Option<PanicAt>,
    /// Test hook: slots in flight when the hook fired.
    #[cfg(test)]
    pub(super) in_flight_at_panic: Option<usize>,
}

/// Where the test hook makes [`Ring::run`] panic: after the n-th SQE is
/// queued, or while processing the n-th CQE (counted from 1, per run).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(super) enum PanicAt {
    /// After queueing the n-th SQE, before the next one.
    Push(u32),
    /// At the start of the n-th completion's processing.
    Complete(u32),
}

/// Unwind guard of [`Ring::run`]: dropped with slots still in flight or
/// taken (only possible while a panic unwinds out of the loop), it waits
/// for every in-flight one before the borrowed buffers can go, and frees
/// them all. Freeing matters even when nothing is in flight: a slot whose
/// CQE was taken but whose request was never finished would otherwise
/// stay off the free list for good, and once all were lost `run` would
/// return with its requests never started.
struct Drain<'r> {
    ring: &'r mut Ring,
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        if !self.ring.slots.all_free() {
            self.ring.drain();
        }
    }
}

impl Ring {
    /// Wraps `ring`; at most `qd` requests in flight, SQEs handed to the
    /// kernel at least every `batch` pushes.
    pub(super) fn new(ring: IoUring, target: Target, qd: usize, batch: usize) -> Self {
        Ring {
            ring,
            target,
            batch: batch.clamp(1, qd),
            slots: Slots::new(qd),
            cqes: Vec::with_capacity(2 * qd),
            fixed_bufs: Vec::new(),
            fixed_sqes: 0,
            #[cfg(test)]
            panic_at: None,
            #[cfg(test)]
            in_flight_at_panic: None,
        }
    }

    /// Slots whose SQE the kernel may still be working on; 0 between calls.
    pub(super) fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// Runs every request of `batch` whose `result` is still `None` and
    /// returns when all have completed (each with its result set).
    ///
    /// If a panic unwinds out of the loop, the [`Drain`] guard first waits
    /// for every request in flight (their requests are left with whatever
    /// result they had; the batch is not to be trusted after a panic), so
    /// no SQE outlives the borrow of `batch`.
    pub(super) fn run(&mut self, batch: &mut [IoRequest<'_>], ctx: &Ctx<'_>) {
        let guard = Drain { ring: self };
        guard.ring.drive(batch, ctx);
        // Returning normally, nothing is in flight and the guard does nothing.
    }

    /// Drains every in-flight slot, blocking: submits what is still
    /// queued, waits for CQEs and throws their results away, then frees
    /// every slot (in flight or only taken). Only the unwind guard calls
    /// it.
    ///
    /// If io_uring_enter keeps failing with an error that is not EINTR,
    /// EAGAIN or EBUSY (the ring itself is broken), the kernel's use of the
    /// buffers can be neither awaited nor ruled out, and unwinding on would
    /// hand memory the kernel may still write to back to the allocator: the
    /// process aborts instead (after about a second of retries).
    fn drain(&mut self) {
        const MAX_FAILED_ENTERS: u32 = 1000;
        let mut failed = 0;
        while self.slots.in_flight() > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                let transient = e.raw_os_error().is_some_and(segments::is_transient);
                if !transient {
                    failed += 1;
                    if failed > MAX_FAILED_ENTERS {
                        eprintln!(
                            "bufwrite: io_uring_enter keeps failing ({e}) with {} requests in \
                             flight during a panic; aborting rather than freeing their buffers",
                            self.slots.in_flight()
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            for c in self.ring.completion() {
                self.slots.reaped(c.user_data());
            }
        }
        self.cqes.clear();
        self.slots.reset();
    }

    /// The loop of [`Ring::run`], without its guard.
    fn drive(&mut self, batch: &mut [IoRequest<'_>], ctx: &Ctx<'_>) {
        let mut next = 0;
        let mut unsubmitted = 0;
        #[cfg(test)]
        let (mut pushes, mut completions) = (0u32, 0u32);
        loop {
            while next < batch.len() && self.slots.has_free() {
                let ri = next;
                next += 1;
                if batch[ri].result.is_some() {
                    continue;
                }
                if batch[ri].bufs.is_empty() {
                    batch[ri].result = Some(Ok(()));
                    continue;
                }
                let Some(si) = self.slots.acquire() else {
                    break;
                };
                self.start(si, ri, &batch[ri], ctx);
                self.push(si, batch);
                #[cfg(test)]
                {
                    pushes += 1;
                    self.test_panic(PanicAt::Push(pushes));
                }
                unsubmitted += 1;
                if unsubmitted >= self.batch {
                    self.enter(0);
                    unsubmitted = 0;
                }
            }
            if self.slots.in_flight() == 0 {
                break;
            }
            self.enter(1);
            unsubmitted = 0;
            self.reap(
                batch,
                ctx,
                #[cfg(test)]
                &mut completions,
            );
        }
    }

    /// Test hook: panics when `at` is where the test asked for a panic.
    #[cfg(test)]
    fn test_panic(&mut self, at: PanicAt) {
        let hit = match (self.panic_at, at) {
            (Some(PanicAt::Push(n)), PanicAt::Push(i)) => n == i,
            (Some(PanicAt::Complete(n)), PanicAt::Complete(i)) => n == i,
            _ => false,
        };
        if hit {
            self.panic_at = None;
            self.in_flight_at_panic = Some(self.slots.in_flight());
            panic!("test hook: panic at {at:?}");
        }
    }

    /// Fills slot `si` for request `ri` (bounce buffer if its memory is not
    /// aligned for O_DIRECT).
    fn start(&mut self, si: usize, ri: usize, req: &IoRequest<'_>, ctx: &Ctx<'_>) {
        let slot = self.slots.get_mut(si);
        slot.req = ri;
        slot.done = 0;
        slot.total = req.bufs.len();
        slot.retries = 0;
        slot.bounce = segments::needs_bounce(&req.bufs, ctx.mem_align)
            .then(|| segments::bounce_for(&req.bufs));
    }

    /// Queues the SQE for the rest of slot `si`'s request.
    fn push(&mut self, si: usize, batch: &mut [IoRequest<'_>]) {
        let target = self.target;
        let slot = self.slots.get_mut(si);
        let req = &mut batch[slot.req];
        let offset = req.offset + slot.done;
        let rest = (slot.total - slot.done).min(MAX_SQE_BYTES) as u32;
        let is_read = matches!(req.bufs, IoBufs::Read(_));
        let entry = if let Some(b) = slot.bounce.as_mut() {
            let ptr = b[slot.done as usize..].as_mut_ptr();
            rw_entry(target, is_read, ptr, rest, offset)
        } else {
            fill_iov(&mut slot.iov, &mut req.bufs, slot.done);
            match slot.iov.as_slice() {
                [one] => {
                    let len = (one.iov_len as u64).min(MAX_SQE_BYTES) as u32;
                    let ptr = one.iov_base.cast();
                    match fixed_index(&self.fixed_bufs, ptr as usize, len as usize) {
                        Some(bi) => {
                            self.fixed_sqes += 1;
                            fixed_entry(target, is_read, ptr, len, bi, offset)
                        }
                        None => rw_entry(target, is_read, ptr, len, offset),
                    }
                }
                many => rwv_entry(target, is_read, many.as_ptr(), many.len() as u32, offset),
            }
        };
        let entry = entry.user_data(si as u64);
        // SAFETY: the SQE points at (a) the request's buffers, borrowed by
        // `run` for its whole duration, (b) this slot's iovec array or bounce
        // buffer, which are not touched again until this SQE's CQE has been
        // taken. The slot is marked in flight right after the push, with
        // nothing in between that can panic, and `run` leaves only when no
        // slot is in flight: by returning (its loop's condition) or by
        // unwinding through its `Drain` guard, which waits for every CQE
        // first (or aborts). So all of it outlives the completion. A fixed
        // SQE's memory also lies inside a registered buffer, which the
        // device owns and frees only after the ring (see
        // `UringDevice::register_buffers`).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // SQ full of not yet submitted entries: hand them over.
            self.enter(0);
        }
        self.slots.submitted(si);
    }

    /// Enters the kernel to submit queued SQEs and wait for `want` CQEs.
    /// EINTR is retried; EAGAIN/EBUSY (CQ full, or no memory for requests)
    /// return so that the caller reaps and enters again. Any other error
    /// cannot be returned while the kernel may own buffers: wait a little
    /// and let the caller's loop enter again.
    fn enter(&mut self, want: usize) {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return,
                Err(e) => match e.raw_os_error() {
                    Some(errno) if segments::classify(errno) == Errno::Interrupted => continue,
                    Some(errno) if segments::classify(errno) == Errno::Busy => return,
                    _ => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        return;
                    }
                },
            }
        }
    }

    /// Handles every CQE ready. Each is marked reaped as it is taken off
    /// the ring, before any is processed, so that a panic while processing
    /// one leaves the in-flight count exact for the guard.
    fn reap(
        &mut self,
        batch: &mut [IoRequest<'_>],
        ctx: &Ctx<'_>,
        #[cfg(test)] completions: &mut u32,
    ) {
        let mut cqes = std::mem::take(&mut self.cqes);
        for c in self.ring.completion() {
            // Only slot indices are ever submitted by `run`; others are ignored.
            if let Some(si) = self.slots.reaped(c.user_data()) {
                cqes.push((si, c.result()));
            }
        }
        for &(si, res) in &cqes {
            #[cfg(test)]
            {
                *completions += 1;
                self.test_panic(PanicAt::Complete(*completions));
            }
            self.complete(si, res, batch, ctx);
        }
        cqes.clear();
        self.cqes = cqes;
    }

    /// Applies one CQE to slot `si`: resubmits the rest, or finishes the
    /// request and frees the slot.
    fn complete(&mut self, si: usize, res: i32, batch: &mut [IoRequest<'_>], ctx: &Ctx<'_>) {
        let slot = self.slots.get_mut(si);
        let is_read = matches!(batch[slot.req].bufs, IoBufs::Read(_));
        let outcome = if res < 0 {
            let errno = -res;
            if segments::is_transient(errno) && slot.retries < MAX_RETRIES {
                slot.retries += 1;
                Outcome::Resubmit
            } else {
                Outcome::Fail(io::Error::from_raw_os_error(errno))
            }
        } else if res == 0 {
            Outcome::Fail(if is_read {
                io::Error::new(io::ErrorKind::UnexpectedEof, "read returned no bytes")
            } else {
                io::Error::new(io::ErrorKind::WriteZero, "write returned no bytes")
            })
        } else {
            slot.done = (slot.done + res as u64).min(slot.total);
            if slot.done < slot.total {
                Outcome::Resubmit
            } else {
                Outcome::Done
            }
        };
        match outcome {
            Outcome::Resubmit => self.push(si, batch),
            Outcome::Done => {
                let req = &mut batch[slot.req];
                if let (Some(b), IoBufs::Read(segs)) = (slot.bounce.as_ref(), &mut req.bufs) {
                    segments::scatter(b, segs);
                }
                if is_read {
                    ctx.counters.record_read(slot.total);
                } else {
                    ctx.counters.record_write(slot.total);
                }
                req.result = Some(Ok(()));
                self.slots.release(si);
            }
            Outcome::Fail(e) => {
                let req = &mut batch[slot.req];
                let op = if is_read { IoKind::Read } else { IoKind::Write };
                let at = req.offset + slot.done;
                req.result = Some(Err(Error::io(op, at, slot.total - slot.done, e)));
                self.slots.release(si);
            }
        }
    }

    /// Drops the registered file table (synchronously, unlike the ring's
    /// own teardown).
    pub(super) fn unregister_files(&mut self) -> io::Result<()> {
        self.ring.submitter().unregister_files()
    }

    /// Registers `bufs` (buffer index = position) so that single-segment
    /// requests inside one of them go out as ReadFixed/WriteFixed. On error
    /// nothing is registered and every request stays a plain Read/Write.
    ///
    /// # Safety
    /// The memory of every iovec must stay allocated, and unmoved, until
    /// [`Ring::unregister_buffers`] returns or the ring is dropped: the
    /// kernel pins those pages and a fixed SQE is served from them.
    pub(super) unsafe fn register_buffers(&mut self, bufs: &[libc::iovec]) -> io::Result<()> {
        if !self.fixed_bufs.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        // SAFETY: the caller keeps the memory alive and in place for as long
        // as it is registered (this function's contract).
        unsafe { self.ring.submitter().register_buffers(bufs) }?;
        self.fixed_bufs = bufs
            .iter()
            .map(|v| (v.iov_base as usize, v.iov_len))
            .collect();
        Ok(())
    }

    /// Drops the registered buffers (synchronously); later requests are
    /// plain Read/Write SQEs. Called with nothing in flight.
    pub(super) fn unregister_buffers(&mut self) -> io::Result<()> {
        if self.fixed_bufs.is_empty() {
            return Ok(());
        }
        self.fixed_bufs.clear();
        self.ring.submitter().unregister_buffers()
    }

    /// An fsync (DATASYNC) of the file; on a block device, a cache flush.
    /// Called with nothing in flight, so it covers every completed write.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let mut retries = 0;
        loop {
            let fsync = on_target!(self.target, |fd| opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build());
            let entry = fsync.user_data(FLUSH_TAG);
            // SAFETY: an fsync SQE points at no memory.
            while unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.enter(0);
            }
            let res = self.wait_for(FLUSH_TAG);
            if res >= 0 {
                return Ok(());
            }
            let errno = -res;
            if !segments::is_transient(errno) || retries >= MAX_RETRIES {
                return Err(io::Error::from_raw_os_error(errno));
            }
            retries += 1;
        }
    }

    /// Enters until the CQE tagged `tag` arrives; returns its result.
    fn wait_for(&mut self, tag: u64) -> i32 {
        loop {
            self.enter(1);
            let found = self
                .ring
                .completion()
                .find(|c| c.user_data() == tag)
                .map(|c| c.result());
            if let Some(res) = found {
                return res;
            }
        }
    }
}

/// A Read or Write SQE of `len` bytes at `ptr`, device offset `off`.
fn rw_entry(target: Target, is_read: bool, ptr: *mut u8, len: u32, off: u64) -> squeue::Entry {
    if is_read {
        on_target!(target, |fd| opcode::Read::new(fd, ptr, len)
            .offset(off)
            .build())
    } else {
        on_target!(target, |fd| opcode::Write::new(fd, ptr, len)
            .offset(off)
            .build())
    }
}

/// Index of the registered buffer that holds all of `addr .. addr + len`.
fn fixed_index(fixed: &[(usize, usize)], addr: usize, len: usize) -> Option<u16> {
    let end = addr.checked_add(len)?;
    fixed
        .iter()
        .position(|&(base, blen)| addr >= base && end <= base + blen)
        .and_then(|i| u16::try_from(i).ok())
}

/// A ReadFixed or WriteFixed SQE of `len` bytes at `ptr` (inside registered
/// buffer `bi`), device offset `off`.
fn fixed_entry(
    target: Target,
    is_read: bool,
    ptr: *mut u8,
    len: u32,
    bi: u16,
    off: u64,
) -> squeue::Entry {
    if is_read {
        on_target!(target, |fd| opcode::ReadFixed::new(fd, ptr, len, bi)
            .offset(off)
            .build())
    } else {
        on_target!(target, |fd| opcode::WriteFixed::new(fd, ptr, len, bi)
            .offset(off)
            .build())
    }
}

/// A Readv or Writev SQE over `cnt` iovecs at `iov`, device offset `off`.
fn rwv_entry(
    target: Target,
    is_read: bool,
    iov: *const libc::iovec,
    cnt: u32,
    off: u64,
) -> squeue::Entry {
    if is_read {
        on_target!(target, |fd| opcode::Readv::new(fd, iov, cnt)
            .offset(off)
            .build())
    } else {
        on_target!(target, |fd| opcode::Writev::new(fd, iov, cnt)
            .offset(off)
            .build())
    }
}

/// Points `iov` at the request's segments from byte `skip` on (the part a
/// short transfer left), at most
/// [`segments::MAX_IOVECS`] of them ([`segments::tail`]).
fn fill_iov(iov: &mut Vec<libc::iovec>, bufs: &mut IoBufs<'_>, skip: u64) {
    iov.clear();
    let entry = |ptr: *mut u8, len: usize| libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    match bufs {
        IoBufs::Read(segs) => {
            iov.extend(segments::tail_mut(segs, skip).map(|s| entry(s.as_mut_ptr(), s.len())))
        }
        // The kernel only reads through a write's iovec; the cast to *mut is
        // what the iovec type demands.
        IoBufs::Write(segs) => {
            iov.extend(segments::tail(segs, skip).map(|s| entry(s.as_ptr().cast_mut(), s.len())))
        }
    }
}
