//! The submit / reap loop over one io_uring.
//!
//! A batch is driven to completion inside one call: at most `qd` requests
//! are in flight, each in a slot whose index is the SQE's `user_data`. A
//! slot holds what the kernel reads while the request is in flight (the
//! iovec array, a bounce buffer for misaligned memory) and is reused only
//! after its CQE has been reaped. The callers' buffers are borrowed for the
//! whole call, and the call does not return while any slot is in flight,
//! so every buffer outlives its completion.

use crate::align::AlignedBuf;
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

/// One request in flight.
#[derive(Default)]
struct Slot {
    /// Index of the request in the batch.
    req: usize,
    /// Bytes already transferred (earlier short completions).
    done: u64,
    /// Bytes the request moves.
    total: u64,
    /// The iovec array of the current SQE; the kernel reads it until the CQE.
    iov: Vec<libc::iovec>,
    /// Aligned copy of the data when a segment's address is misaligned.
    bounce: Option<AlignedBuf>,
    /// EINTR/EAGAIN/EBUSY resubmissions so far.
    retries: u32,
}

// SAFETY: the raw pointers in `iov` are only dereferenced by the kernel while
// `Ring::run` holds the borrowed buffers; between calls they are stale and
// never read (each SQE rebuilds them). The ring is used under a Mutex.
unsafe impl Send for Slot {}

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
    slots: Vec<Slot>,
    free: Vec<usize>,
    cqes: Vec<(u64, i32)>,
    /// `(address, length)` of each registered buffer, by buffer index; empty
    /// when none are registered.
    fixed_bufs: Vec<(usize, usize)>,
    /// ReadFixed/WriteFixed SQEs pushed so far.
    pub(super) fixed_sqes: u64,
}

impl Ring {
    /// Wraps `ring`; at most `qd` requests in flight, SQEs handed to the
    /// kernel at least every `batch` pushes.
    pub(super) fn new(ring: IoUring, target: Target, qd: usize, batch: usize) -> Self {
        Ring {
            ring,
            target,
            batch: batch.clamp(1, qd),
            slots: (0..qd).map(|_| Slot::default()).collect(),
            free: (0..qd).rev().collect(),
            cqes: Vec::with_capacity(2 * qd),
            fixed_bufs: Vec::new(),
            fixed_sqes: 0,
        }
    }

    /// Runs every request of `batch` whose `result` is still `None` and
    /// returns when all have completed (each with its result set).
    pub(super) fn run(&mut self, batch: &mut [IoRequest<'_>], ctx: &Ctx<'_>) {
        let mut next = 0;
        let mut inflight = 0;
        let mut unsubmitted = 0;
        loop {
            while next < batch.len() && !self.free.is_empty() {
                let ri = next;
                next += 1;
                if batch[ri].result.is_some() {
                    continue;
                }
                if batch[ri].bufs.is_empty() {
                    batch[ri].result = Some(Ok(()));
                    continue;
                }
                let Some(si) = self.free.pop() else { break };
                self.start(si, ri, &batch[ri], ctx);
                self.push(si, batch);
                inflight += 1;
                unsubmitted += 1;
                if unsubmitted >= self.batch {
                    self.enter(0);
                    unsubmitted = 0;
                }
            }
            if inflight == 0 {
                break;
            }
            self.enter(1);
            unsubmitted = 0;
            inflight -= self.reap(batch, ctx);
        }
    }

    /// Fills slot `si` for request `ri` (bounce buffer if its memory is not
    /// aligned for O_DIRECT).
    fn start(&mut self, si: usize, ri: usize, req: &IoRequest<'_>, ctx: &Ctx<'_>) {
        let slot = &mut self.slots[si];
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
        let slot = &mut self.slots[si];
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
        // reaped. `run` returns only when no slot is in flight, so all of it
        // outlives the completion. A fixed SQE's memory also lies inside a
        // registered buffer, which the device owns and frees only after
        // the ring (see `UringDevice::register_buffers`).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // SQ full of not yet submitted entries: hand them over.
            self.enter(0);
        }
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

    /// Handles every CQE ready; returns how many requests finished.
    fn reap(&mut self, batch: &mut [IoRequest<'_>], ctx: &Ctx<'_>) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        let mut finished = 0;
        for &(tag, res) in &cqes {
            let si = tag as usize;
            // Only slot indices are ever submitted by `run`.
            if si < self.slots.len() && self.complete(si, res, batch, ctx) {
                finished += 1;
            }
        }
        cqes.clear();
        self.cqes = cqes;
        finished
    }

    /// Applies one CQE to slot `si`; true when its request is finished.
    fn complete(
        &mut self,
        si: usize,
        res: i32,
        batch: &mut [IoRequest<'_>],
        ctx: &Ctx<'_>,
    ) -> bool {
        let slot = &mut self.slots[si];
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
            Outcome::Resubmit => {
                self.push(si, batch);
                false
            }
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
                self.release(si);
                true
            }
            Outcome::Fail(e) => {
                let req = &mut batch[slot.req];
                let op = if is_read { IoKind::Read } else { IoKind::Write };
                let at = req.offset + slot.done;
                req.result = Some(Err(Error::io(op, at, slot.total - slot.done, e)));
                self.release(si);
                true
            }
        }
    }

    fn release(&mut self, si: usize) {
        let slot = &mut self.slots[si];
        slot.bounce = None;
        slot.iov.clear();
        self.free.push(si);
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
