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
//! [`Ring::stream`] runs the same loop over a stream of owned writes
//! instead of a borrowed batch (the two are [`Feed`]s): there the slot owns
//! the write while it is in flight, and the same guard drains the ring
//! before the slots (and the writes' buffers) can be freed. A panic in the
//! stream's own callbacks (`next_write`, `complete`) unwinds through that
//! guard too.
//!
//! Miri: the slot bookkeeping ([`super::slots`]) and the segment code
//! (`device::segments`) are plain Rust and their tests run under
//! `cargo +nightly miri test -p bufwrite-engine --lib`. Miri cannot run
//! io_uring_setup or io_uring_enter, nor see the kernel's reads and writes
//! of SQE memory, so the loop itself, the guard, and the lifetime of the
//! buffers the kernel touches are covered by the tests on real rings
//! (marked `cfg_attr(miri, ignore)`), not by Miri.

use super::slots::{Slot, Slots};
use crate::device::segments::{self, Errno, MAX_RETRIES};
use crate::device::{check_request, IoBufs, IoCounters, IoRequest, OwnedWrite, WriteStream};
use crate::error::{Error, IoKind, Result};
use io_uring::{opcode, squeue, types, IoUring};
use smallvec::smallvec;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// ReadFixed/WriteFixed SQEs pushed, over every ring of the device.
    pub fixed_sqes: &'a AtomicU64,
}

/// What a write of a stream is checked against before it is submitted
/// (the device's geometry, as [`check_request`] wants it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Device size in bytes.
    pub size: u64,
    /// Logical block size.
    pub lbs: u32,
    /// Writes are refused.
    pub read_only: bool,
}

/// Where the requests [`Ring::drive`] runs come from and where their
/// results go: a borrowed batch ([`Ring::run`]) or a stream of owned writes
/// ([`Ring::stream`]). The loop itself (slots, SQE batching, short
/// transfers, retries, the unwind guard) is the same for both.
trait Feed {
    /// Sets `slot` up for the next request to start and returns true, or
    /// returns false when there is none (the loop then stops asking).
    /// Requests that need no I/O (already failed, empty) are finished here,
    /// without taking the slot.
    fn start(&mut self, slot: &mut Slot, ctx: &Ctx<'_>) -> bool;

    /// Points `slot.iov` at the bytes of the slot's request from
    /// `slot.done` on (only for slots without a bounce buffer).
    fn fill(&mut self, slot: &mut Slot);

    /// The slot's request has finished with `result` (reaped, not in
    /// flight).
    fn finish(&mut self, slot: &mut Slot, result: Result<()>);
}

/// A borrowed batch: requests start in order, results go into them.
struct BatchFeed<'b, 'a> {
    batch: &'b mut [IoRequest<'a>],
    next: usize,
}

impl Feed for BatchFeed<'_, '_> {
    fn start(&mut self, slot: &mut Slot, ctx: &Ctx<'_>) -> bool {
        while self.next < self.batch.len() {
            let ri = self.next;
            self.next += 1;
            let req = &mut self.batch[ri];
            if req.result.is_some() {
                continue;
            }
            if req.bufs.is_empty() {
                req.result = Some(Ok(()));
                continue;
            }
            let bounce = segments::needs_bounce(&req.bufs, ctx.mem_align)
                .then(|| segments::bounce_for(&req.bufs));
            let is_read = matches!(req.bufs, IoBufs::Read(_));
            slot.begin(ri, req.offset, is_read, req.bufs.len(), bounce);
            return true;
        }
        false
    }

    fn fill(&mut self, slot: &mut Slot) {
        fill_iov(&mut slot.iov, &mut self.batch[slot.req].bufs, slot.done);
    }

    fn finish(&mut self, slot: &mut Slot, result: Result<()>) {
        let req = &mut self.batch[slot.req];
        if let (true, Some(b), IoBufs::Read(segs)) =
            (result.is_ok(), slot.bounce.as_ref(), &mut req.bufs)
        {
            segments::scatter(b, segs);
        }
        req.result = Some(result);
    }
}

/// A stream of owned writes: each is checked, moved into its slot for as
/// long as it is in flight, and handed back to the stream on completion.
struct StreamFeed<'s> {
    stream: &'s mut dyn WriteStream,
    limits: Limits,
}

impl StreamFeed<'_> {
    /// Why `w` cannot be submitted, if it cannot ([`check_request`]'s
    /// rules, and a length inside its buffer).
    fn check(&self, w: &OwnedWrite) -> Result<()> {
        let Some(bytes) = w.buf.get(..w.len) else {
            return Err(Error::InvalidArgument(format!(
                "write of {} bytes at {} from a buffer of {}",
                w.len,
                w.offset,
                w.buf.len()
            )));
        };
        let l = self.limits;
        check_request(
            &IoRequest::write(w.offset, bytes),
            l.size,
            l.lbs,
            l.read_only,
        )
    }
}

impl Feed for StreamFeed<'_> {
    fn start(&mut self, slot: &mut Slot, ctx: &Ctx<'_>) -> bool {
        loop {
            let Some(w) = self.stream.next_write() else {
                return false;
            };
            // A bad or empty write completes at once, without I/O; this is
            // the device loop, not a callback, so `complete` is not
            // re-entered.
            if let Err(e) = self.check(&w) {
                self.stream.complete(w, Err(e));
                continue;
            }
            if w.len == 0 {
                self.stream.complete(w, Ok(()));
                continue;
            }
            let bounce = {
                let bufs = IoBufs::Write(smallvec![&w.buf[..w.len]]);
                segments::needs_bounce(&bufs, ctx.mem_align).then(|| segments::bounce_for(&bufs))
            };
            slot.begin(0, w.offset, false, w.len as u64, bounce);
            slot.owned = Some(w);
            return true;
        }
    }

    fn fill(&mut self, slot: &mut Slot) {
        slot.iov.clear();
        if let Some(w) = &slot.owned {
            let rest = &w.buf[slot.done as usize..w.len];
            // The kernel only reads through a write's iovec.
            slot.iov.push(libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            });
        }
    }

    fn finish(&mut self, slot: &mut Slot, result: Result<()>) {
        if let Some(w) = slot.owned.take() {
            self.stream.complete(w, result);
        }
    }
}

/// What a CQE means for its request.
enum Outcome {
    Resubmit,
    Done,
    Fail(io::Error),
}

/// A ring and its slots. One submitter at a time: the device keeps a pool
/// of rings and lends each to one caller (see `UringDevice::ring`).
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
    /// True once registering the device's buffers with this ring was
    /// tried (whatever the outcome): it is tried once per ring.
    pub(super) buffers_tried: bool,
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
            buffers_tried: false,
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
        let mut feed = BatchFeed { batch, next: 0 };
        let guard = Drain { ring: self };
        guard.ring.drive(&mut feed, ctx);
        // Returning normally, nothing is in flight and the guard does nothing.
    }

    /// Runs every write of `stream`, up to the queue depth in flight,
    /// and returns once the stream is dry and every write has completed.
    /// Each completion goes to `stream.complete` as soon as it is reaped,
    /// before the next write is pulled; a write that fails `limits` (or is
    /// empty) completes at once without being submitted.
    ///
    /// Each write is owned by its slot while in flight. If `next_write` or
    /// `complete` panics, the [`Drain`] guard waits for every SQE in flight
    /// and only then drops the slots' writes (they are not handed back), so
    /// no buffer is freed while the kernel may still read it.
    pub(super) fn stream(&mut self, stream: &mut dyn WriteStream, limits: Limits, ctx: &Ctx<'_>) {
        let mut feed = StreamFeed { stream, limits };
        let guard = Drain { ring: self };
        guard.ring.drive(&mut feed, ctx);
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

    /// The loop of [`Ring::run`] and [`Ring::stream`], without their guard.
    fn drive<F: Feed>(&mut self, feed: &mut F, ctx: &Ctx<'_>) {
        let mut more = true;
        let mut unsubmitted = 0;
        #[cfg(test)]
        let (mut pushes, mut completions) = (0u32, 0u32);
        loop {
            while more && self.slots.has_free() {
                let Some(si) = self.slots.acquire() else {
                    break;
                };
                if !feed.start(self.slots.get_mut(si), ctx) {
                    self.slots.release(si);
                    more = false;
                    break;
                }
                self.push(si, feed, ctx);
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
                feed,
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

    /// Queues the SQE for the rest of slot `si`'s request.
    fn push<F: Feed>(&mut self, si: usize, feed: &mut F, ctx: &Ctx<'_>) {
        let target = self.target;
        let slot = self.slots.get_mut(si);
        let offset = slot.offset + slot.done;
        let rest = (slot.total - slot.done).min(MAX_SQE_BYTES) as u32;
        let is_read = slot.is_read;
        let entry = if let Some(b) = slot.bounce.as_mut() {
            let ptr = b[slot.done as usize..].as_mut_ptr();
            rw_entry(target, is_read, ptr, rest, offset)
        } else {
            feed.fill(slot);
            match slot.iov.as_slice() {
                [one] => {
                    let len = (one.iov_len as u64).min(MAX_SQE_BYTES) as u32;
                    let ptr = one.iov_base.cast();
                    match fixed_index(&self.fixed_bufs, ptr as usize, len as usize) {
                        Some(bi) => {
                            ctx.fixed_sqes.fetch_add(1, Ordering::Relaxed);
                            fixed_entry(target, is_read, ptr, len, bi, offset)
                        }
                        None => rw_entry(target, is_read, ptr, len, offset),
                    }
                }
                many => rwv_entry(target, is_read, many.as_ptr(), many.len() as u32, offset),
            }
        };
        let entry = entry.user_data(si as u64);
        // SAFETY: the SQE points at (a) the request's buffers: a batch's,
        // borrowed by `run` for its whole duration, or a stream's write,
        // owned by this slot (moved out only by `finish`, after its CQE was
        // taken, or dropped by `Slots::reset`, after every CQE was), whose
        // heap memory does not move with it; (b) this slot's iovec array or
        // bounce buffer, which are not touched again until this SQE's CQE
        // has been taken. The slot is marked in flight right after the push,
        // with nothing in between that can panic, and `run`/`stream` leave
        // only when no slot is in flight: by returning (the loop's
        // condition) or by unwinding through their `Drain` guard, which
        // waits for every CQE first (or aborts). So all of it outlives the
        // completion. A fixed
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
    fn reap<F: Feed>(&mut self, feed: &mut F, ctx: &Ctx<'_>, #[cfg(test)] completions: &mut u32) {
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
            self.complete(si, res, feed, ctx);
        }
        cqes.clear();
        self.cqes = cqes;
    }

    /// Applies one CQE to slot `si`: resubmits the rest, or finishes the
    /// request and frees the slot.
    fn complete<F: Feed>(&mut self, si: usize, res: i32, feed: &mut F, ctx: &Ctx<'_>) {
        let slot = self.slots.get_mut(si);
        let is_read = slot.is_read;
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
            Outcome::Resubmit => self.push(si, feed, ctx),
            Outcome::Done => {
                if is_read {
                    ctx.counters.record_read(slot.total);
                } else {
                    ctx.counters.record_write(slot.total);
                }
                feed.finish(slot, Ok(()));
                self.slots.release(si);
            }
            Outcome::Fail(e) => {
                let op = if is_read { IoKind::Read } else { IoKind::Write };
                let at = slot.offset + slot.done;
                let err = Error::io(op, at, slot.total - slot.done, e);
                feed.finish(slot, Err(err));
                self.slots.release(si);
            }
        }
    }

    /// True when SQEs name the registered file.
    pub(super) fn fixed_file(&self) -> bool {
        self.target == Target::Fixed
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
