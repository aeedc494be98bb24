//! The ring's slot table: which slots are free, which are in flight, and
//! what each one keeps alive for the kernel.
//!
//! A slot is *in flight* from the moment its SQE is in the submission
//! queue until its CQE has been taken off the completion queue: exactly
//! the time during which the kernel may read or write the memory the SQE
//! points at. That count is what the unwind guard of
//! [`Ring::run`](super::ring::Ring::run) waits on, so it is kept here, in
//! plain Rust with no syscall, where its tests also run under Miri.

use crate::align::AlignedBuf;
use crate::device::OwnedWrite;

/// One request's state while the ring drives it.
#[derive(Default)]
pub(super) struct Slot {
    /// Index of the request in the batch (0 for a stream's write).
    pub req: usize,
    /// Device offset of the request's first byte.
    pub offset: u64,
    /// A read (else a write).
    pub is_read: bool,
    /// Bytes already transferred (earlier short completions).
    pub done: u64,
    /// Bytes the request moves.
    pub total: u64,
    /// The iovec array of the current SQE; the kernel reads it until the CQE.
    pub iov: Vec<libc::iovec>,
    /// Aligned copy of the data when a segment's address is misaligned.
    pub bounce: Option<AlignedBuf>,
    /// EINTR/EAGAIN/EBUSY resubmissions so far.
    pub retries: u32,
    /// A stream's write, owned by the slot while it is in flight (its
    /// buffer is what the SQE points at); `None` for a batch's request.
    pub owned: Option<OwnedWrite>,
}

impl Slot {
    /// Sets the slot up for a request (request `req` of a batch, or 0) of
    /// `total` bytes at `offset`, nothing transferred yet.
    pub(super) fn begin(
        &mut self,
        req: usize,
        offset: u64,
        is_read: bool,
        total: u64,
        bounce: Option<AlignedBuf>,
    ) {
        self.req = req;
        self.offset = offset;
        self.is_read = is_read;
        self.done = 0;
        self.total = total;
        self.retries = 0;
        self.bounce = bounce;
        self.owned = None;
    }
}

// SAFETY: the raw pointers in `iov` are only dereferenced by the kernel
// while their slot is in flight, and a slot is in flight only inside
// `Ring::run` or `Ring::stream`, which do not return or unwind past their
// guard before every slot has been reaped; between calls they are stale and
// never read (each SQE rebuilds them). A ring has one user at a time (the
// device lends it out of its pool). The other fields are Send.
unsafe impl Send for Slot {}

/// The slots of one ring, `qd` of them.
pub(super) struct Slots {
    slots: Vec<Slot>,
    /// Free slot indices; the lowest is handed out first.
    free: Vec<usize>,
    /// Per slot: SQE queued, CQE not yet taken.
    in_flight: Vec<bool>,
    /// How many of `in_flight` are true.
    count: usize,
}

impl Slots {
    /// `qd` free slots.
    pub(super) fn new(qd: usize) -> Self {
        Slots {
            slots: (0..qd).map(|_| Slot::default()).collect(),
            free: (0..qd).rev().collect(),
            in_flight: vec![false; qd],
            count: 0,
        }
    }

    /// True when a slot is free.
    pub(super) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Takes a free slot, or `None` when all are taken.
    pub(super) fn acquire(&mut self) -> Option<usize> {
        self.free.pop()
    }

    /// Slot `si`.
    pub(super) fn get_mut(&mut self, si: usize) -> &mut Slot {
        &mut self.slots[si]
    }

    /// Records that slot `si`'s SQE is now in the submission queue.
    pub(super) fn submitted(&mut self, si: usize) {
        debug_assert!(!self.in_flight[si], "slot {si} queued twice");
        if !self.in_flight[si] {
            self.in_flight[si] = true;
            self.count += 1;
        }
    }

    /// Records that the CQE tagged `tag` was taken off the completion
    /// queue; returns its slot, or `None` for a tag that names no slot in
    /// flight (which `run` never submits).
    pub(super) fn reaped(&mut self, tag: u64) -> Option<usize> {
        let si = usize::try_from(tag).ok()?;
        let flag = self.in_flight.get_mut(si)?;
        if !*flag {
            return None;
        }
        *flag = false;
        self.count -= 1;
        Some(si)
    }

    /// Slots whose SQE the kernel may still be working on.
    pub(super) fn in_flight(&self) -> usize {
        self.count
    }

    /// Puts slot `si` (reaped, request finished) back on the free list
    /// and drops what it held.
    pub(super) fn release(&mut self, si: usize) {
        debug_assert!(!self.in_flight[si], "slot {si} released in flight");
        let slot = &mut self.slots[si];
        slot.bounce = None;
        slot.owned = None;
        slot.iov.clear();
        self.free.push(si);
    }

    /// Frees every slot, after a run that did not finish its requests (a
    /// panic): called only once nothing is in flight, so the bounce
    /// buffers, owned writes and iovec arrays it drops are the kernel's no
    /// longer.
    pub(super) fn reset(&mut self) {
        debug_assert_eq!(self.count, 0, "reset with slots in flight");
        for slot in &mut self.slots {
            slot.bounce = None;
            slot.owned = None;
            slot.iov.clear();
        }
        self.free.clear();
        self.free.extend((0..self.slots.len()).rev());
    }

    /// True when every slot is free and none is in flight: the state
    /// between two runs.
    pub(super) fn all_free(&self) -> bool {
        self.count == 0 && self.free.len() == self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_in_flight_from_queueing_to_reaping() {
        let mut s = Slots::new(2);
        let a = s.acquire().unwrap();
        let b = s.acquire().unwrap();
        assert_eq!((a, b), (0, 1));
        assert!(s.acquire().is_none());
        s.submitted(a);
        s.submitted(b);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.reaped(b as u64), Some(b));
        assert_eq!(s.reaped(b as u64), None, "a CQE is taken once");
        assert_eq!(s.in_flight(), 1);
        s.release(b);
        assert_eq!(s.acquire(), Some(b));
    }

    #[test]
    fn unknown_tags_are_ignored() {
        let mut s = Slots::new(2);
        assert_eq!(s.reaped(0), None, "not in flight");
        assert_eq!(s.reaped(7), None);
        assert_eq!(s.reaped(u64::MAX), None);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn reset_frees_slots_a_panic_left_taken() {
        let mut s = Slots::new(3);
        let a = s.acquire().unwrap();
        s.get_mut(a).bounce = Some(AlignedBuf::zeroed(512));
        s.get_mut(a).owned = Some(OwnedWrite {
            offset: 0,
            buf: AlignedBuf::zeroed(512),
            len: 512,
            tag: 1,
        });
        s.get_mut(a).iov.push(libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        s.submitted(a);
        let _taken_not_queued = s.acquire().unwrap();
        assert!(!s.all_free());
        s.reaped(a as u64);
        s.reset();
        assert!(s.all_free());
        assert!(s.get_mut(a).bounce.is_none() && s.get_mut(a).iov.is_empty());
        assert!(s.get_mut(a).owned.is_none());
        assert_eq!(s.acquire(), Some(0));
    }
}
