//! Buffer heads: the per-block state of the legacy path, laid out as the
//! kernel's `struct buffer_head` and operated on as the kernel does.
//!
//! The layout is the one of Linux 6.18 on x86-64 (`include/linux/buffer_head.h`;
//! checked against the BTF of the running 6.18.44 kernel with
//! `bpftool btf dump file /sys/kernel/btf/vmlinux`: `STRUCT 'buffer_head'
//! size=104 vlen=13`). Thirteen fields, the same order and sizes, 104 bytes,
//! so that a walk over a folio's heads touches as much memory as the
//! kernel's walk and a cached GiB carries as much head metadata. Fields the
//! model has no use for are kept, zero, for that footprint.
//!
//! The state word is atomic because the kernel's is: tests are plain loads
//! (`test_bit`), sets and clears are locked read-modify-write bit
//! operations (`set_bit` / `clear_bit`, `lock or` / `lock and` on x86), and
//! the `set_buffer_*` helpers test before they set so that a bit already
//! set costs a load, not a locked operation (commit 60f91826ca62, "buffer:
//! Avoid setting buffer bits that are already set"; for the uptodate bit
//! the same early return plus the barrier before the first set, Linus
//! Torvalds' 2022 fix "fs: only do a memory barrier for the first
//! set_buffer_uptodate()", commit 2f79cdfe58c1). Clears are unconditional,
//! as `clear_buffer_*` is.

use bufwrite_engine::{BlockMapping, BlockSize, DevAddr, DiskBlock, Error, ExtentKind, Result};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

/// A set of buffer-head state bits (a value of `b_state`). The bit numbers
/// are the kernel's `enum bh_state_bits` in 6.18.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BhState(usize);

impl BhState {
    /// `BH_Uptodate`: the block's bytes in the folio are valid.
    pub const UPTODATE: BhState = BhState(1 << 0);
    /// `BH_Dirty`: must be written back (only meaningful with MAPPED and UPTODATE).
    pub const DIRTY: BhState = BhState(1 << 1);
    /// `BH_Lock`: under I/O (the kernel also sleeps on it); set around a read-in.
    pub const LOCK: BhState = BhState(1 << 2);
    /// `BH_Req`: has been submitted for I/O at least once.
    pub const REQ: BhState = BhState(1 << 3);
    /// `BH_Mapped`: `b_blocknr` is valid, the block has a place on the device.
    pub const MAPPED: BhState = BhState(1 << 4);
    /// `BH_New`: just created by get_block; bytes the write does not cover must be zeroed.
    pub const NEW: BhState = BhState(1 << 5);
    /// `BH_Async_Read`: under a read whose completion makes it uptodate.
    pub const ASYNC_READ: BhState = BhState(1 << 6);
    /// `BH_Delay`: delayed allocation, reserved but no disk block yet.
    pub const DELAY: BhState = BhState(1 << 8);
    /// `BH_Unwritten`: allocated but not written on disk, reads must see zeroes.
    pub const UNWRITTEN: BhState = BhState(1 << 11);

    /// No bits set.
    pub const fn empty() -> Self {
        BhState(0)
    }

    /// The raw word, as `b_state` holds it.
    pub const fn bits(self) -> usize {
        self.0
    }

    /// True when every bit of `f` is set.
    #[inline]
    pub const fn contains(self, f: BhState) -> bool {
        self.0 & f.0 == f.0
    }

    /// True when any bit of `f` is set.
    #[inline]
    pub const fn intersects(self, f: BhState) -> bool {
        self.0 & f.0 != 0
    }

    /// Sets the bits of `f`.
    #[inline]
    pub fn insert(&mut self, f: BhState) {
        self.0 |= f.0;
    }

    /// Clears the bits of `f`.
    #[inline]
    pub fn remove(&mut self, f: BhState) {
        self.0 &= !f.0;
    }
}

impl std::ops::BitOr for BhState {
    type Output = BhState;
    fn bitor(self, rhs: BhState) -> BhState {
        BhState(self.0 | rhs.0)
    }
}

/// `struct list_head`: two pointers. Here only for `b_assoc_buffers`, which
/// the model never links (see [`BufferHead`]).
#[repr(C)]
#[derive(Debug, Default)]
struct ListHead {
    next: usize,
    prev: usize,
}

/// The completion callback type of `b_end_io` (`bh_end_io_t`): the head and
/// whether the I/O succeeded.
pub type EndIo = fn(&BufferHead, bool);

/// One block of a folio: `struct buffer_head`, field for field.
///
/// Heads are handed out by shared reference only (the ring's walks yield
/// `&BufferHead`): every field a walk changes is interior-mutable, as in
/// the kernel, where heads are shared and changed with atomic bit
/// operations under the folio lock. That also keeps the ring link, which
/// lives inside the head as `b_this_page` does, out of reach: nobody holds
/// a `&mut BufferHead` of a ring's node, so nobody can overwrite or swap it.
#[repr(C)]
pub struct BufferHead {
    /// `b_state` (unsigned long): the [`BhState`] bits, changed only with
    /// atomic operations.
    b_state: AtomicUsize,
    /// `b_this_page`: the next head of the folio, the ring link. Written
    /// only by `ring.rs` while it builds a ring, before any reference to the
    /// node exists; dangling in a head that belongs to no ring.
    pub(crate) b_this_page: NonNull<BufferHead>,
    /// `b_folio` (union with `b_page`): the owning folio. The kernel keeps
    /// a pointer; the model's folios move with their page-cache entry, so
    /// this holds the folio's index (its first page number, `folio->index`).
    b_folio: usize,
    /// `b_blocknr` (sector_t): disk block number in units of `b_size`
    /// (valid when MAPPED). Plain, as in the kernel: get_block stores it
    /// under the folio lock. A [`DiskBlock`], so that neither a byte address
    /// nor a file block can be stored here by mistake.
    b_blocknr: Cell<DiskBlock>,
    /// `b_size` (size_t): block size in bytes.
    b_size: usize,
    /// `b_data` (char *): where the block's bytes are. The kernel points
    /// into the folio's memory; the folio buffer here belongs to the
    /// engine's folio and can be swapped out underneath the ring, so this
    /// holds the byte offset into it (what the kernel's `bh_offset()`
    /// derives from the pointer).
    b_data: usize,
    /// `b_bdev`: the block device. One device per inode here, so always 0;
    /// kept for the head's size.
    b_bdev: usize,
    /// `b_end_io`: the I/O completion callback. The model completes I/O
    /// inline, so always `None` (a null pointer); kept for the head's size.
    b_end_io: Option<EndIo>,
    /// `b_private`: reserved for `b_end_io`; always 0, kept for the size.
    b_private: usize,
    /// `b_assoc_buffers`: links metadata buffers to the inode they belong
    /// to (`mark_buffer_dirty_inode`); data heads never use it. Zero, kept
    /// for the size.
    b_assoc_buffers: ListHead,
    /// `b_assoc_map`: the mapping of `b_assoc_buffers`; 0, kept for the size.
    b_assoc_map: usize,
    /// `b_count` (atomic_t): references held by I/O in flight (`get_bh` /
    /// `put_bh` around a read-in).
    b_count: AtomicU32,
    /// `b_uptodate_lock` (spinlock_t, 4 bytes without lock debugging):
    /// the kernel takes it in the first head of a folio to serialise
    /// async-read completions across the folio's heads. The model
    /// completes a folio's reads in one pass under the folio lock, so it is
    /// never taken; kept, 0, for the size.
    b_uptodate_lock: AtomicU32,
}

/// The size of `struct buffer_head` on x86-64 in Linux 6.18.
pub const KERNEL_BUFFER_HEAD_SIZE: usize = 104;

const _: () = assert!(size_of::<BufferHead>() == KERNEL_BUFFER_HEAD_SIZE);
const _: () = assert!(std::mem::offset_of!(BufferHead, b_this_page) == 8);
const _: () = assert!(std::mem::offset_of!(BufferHead, b_count) == 96);

impl std::fmt::Debug for BufferHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferHead")
            .field("state", &self.state())
            .field("folio", &self.b_folio)
            .field("blocknr", &self.b_blocknr.get())
            .field("size", &self.b_size)
            .field("offset", &self.b_data)
            .field("count", &self.count())
            .finish()
    }
}

impl BufferHead {
    /// A head for the block at byte `offset` of folio `folio` (its index),
    /// with state `state`, belonging to no ring yet.
    pub fn new(folio: usize, offset: usize, size: usize, state: BhState) -> Self {
        BufferHead {
            b_state: AtomicUsize::new(state.0),
            b_this_page: NonNull::dangling(),
            b_folio: folio,
            b_blocknr: Cell::new(DiskBlock::new(0)),
            b_size: size,
            b_data: offset,
            b_bdev: 0,
            b_end_io: None,
            b_private: 0,
            b_assoc_buffers: ListHead::default(),
            b_assoc_map: 0,
            b_count: AtomicU32::new(0),
            b_uptodate_lock: AtomicU32::new(0),
        }
    }

    /// All state bits, in one load.
    #[inline]
    pub fn state(&self) -> BhState {
        BhState(self.b_state.load(Ordering::Relaxed))
    }

    /// `test_bit`: true when every bit of `f` is set (a plain load).
    #[inline]
    pub fn test(&self, f: BhState) -> bool {
        self.state().contains(f)
    }

    /// `set_buffer_*`: sets `f` unless it is already set. The test comes
    /// first so that a set bit costs a load, not a locked operation.
    #[inline]
    pub fn set(&self, f: BhState) {
        if !self.test(f) {
            self.b_state.fetch_or(f.0, Ordering::Relaxed);
        }
    }

    /// `clear_buffer_*`: clears `f`, always with the locked operation (the
    /// kernel's clear helpers do not test first).
    #[inline]
    pub fn clear(&self, f: BhState) {
        self.b_state.fetch_and(!f.0, Ordering::Relaxed);
    }

    /// `buffer_uptodate`: valid in memory (`test_bit_acquire`, a plain load
    /// on x86).
    #[inline]
    pub fn uptodate(&self) -> bool {
        self.b_state.load(Ordering::Acquire) & BhState::UPTODATE.0 != 0
    }

    /// `set_buffer_uptodate`: an uptodate head costs one load; otherwise
    /// the bit is set with release ordering, the barrier that pairs with
    /// [`uptodate`](Self::uptodate)'s acquire.
    #[inline]
    pub fn set_uptodate(&self) {
        if self.test(BhState::UPTODATE) {
            return;
        }
        self.b_state
            .fetch_or(BhState::UPTODATE.0, Ordering::Release);
    }

    /// `mark_buffer_dirty`, less the folio and inode bookkeeping (the
    /// caller dirties the folio): an already dirty head costs a load, a
    /// full barrier and a second load; a clean one the locked
    /// test-and-set. Returns true when this call dirtied the head.
    #[inline]
    pub fn mark_dirty(&self) -> bool {
        if self.dirty() {
            fence(Ordering::SeqCst);
            if self.dirty() {
                return false;
            }
        }
        self.b_state.fetch_or(BhState::DIRTY.0, Ordering::AcqRel) & BhState::DIRTY.0 == 0
    }

    /// Has a disk block.
    #[inline]
    pub fn mapped(&self) -> bool {
        self.test(BhState::MAPPED)
    }

    /// Needs writing back.
    #[inline]
    pub fn dirty(&self) -> bool {
        self.test(BhState::DIRTY)
    }

    /// `get_bh`: one more reference (held by I/O in flight).
    #[inline]
    pub fn get(&self) {
        self.b_count.fetch_add(1, Ordering::Relaxed);
    }

    /// `put_bh`: drops a reference taken by [`get`](Self::get).
    #[inline]
    pub fn put(&self) {
        self.b_count.fetch_sub(1, Ordering::Release);
    }

    /// `b_count`: references held.
    pub fn count(&self) -> u32 {
        self.b_count.load(Ordering::Relaxed)
    }

    /// `b_folio`: the index of the owning folio.
    pub fn folio(&self) -> usize {
        self.b_folio
    }

    /// `b_blocknr`: the disk block (valid when MAPPED).
    #[inline]
    pub fn blocknr(&self) -> DiskBlock {
        self.b_blocknr.get()
    }

    /// `b_size`: the block size in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        self.b_size
    }

    /// `bh_offset()`: the block's byte offset in the folio (`b_data`).
    #[inline]
    pub fn offset(&self) -> usize {
        self.b_data
    }

    /// Folio byte range `[start, end)` of the block.
    #[inline]
    pub fn range(&self) -> (usize, usize) {
        (self.b_data, self.b_data + self.b_size)
    }

    /// True when the block lies entirely outside folio bytes `[from, to)`.
    #[inline]
    pub fn outside(&self, from: usize, to: usize) -> bool {
        let (start, end) = self.range();
        end <= from || start >= to
    }

    /// Device byte address of the block (valid when MAPPED). `bs` is the
    /// ring's block size, which `b_size` holds in bytes; taking it as a
    /// [`BlockSize`] makes the conversion a shift with no check per call.
    #[inline]
    pub fn addr(&self, bs: BlockSize) -> DevAddr {
        debug_assert_eq!(bs.as_usize(), self.b_size);
        DevAddr::of(self.blocknr(), bs)
    }

    /// Records a get_block answer, as ext4's get_block sets the bits: a
    /// mapped block gets its number; unwritten and delalloc blocks are
    /// mapped but New (their uncovered bytes must be zeroed); a hole stays
    /// unmapped. A device address that is not block aligned is refused
    /// rather than rounded. The bits go in with one atomic OR, as ext4's
    /// `ext4_update_bh_state` puts all mapping flags in with one
    /// compare-and-swap. `bs` is the ring's block size (`b_size`).
    pub fn map(&self, m: &BlockMapping, bs: BlockSize) -> Result<()> {
        debug_assert_eq!(bs.as_usize(), self.b_size);
        let mut bits = match m.kind {
            ExtentKind::Hole => return Ok(()),
            ExtentKind::Mapped => BhState::MAPPED,
            ExtentKind::Unwritten => BhState::MAPPED | BhState::UNWRITTEN | BhState::NEW,
            ExtentKind::Delalloc => BhState::MAPPED | BhState::DELAY | BhState::NEW,
        };
        let Some(block) = m.addr.block(bs) else {
            return Err(Error::InvalidArgument(format!(
                "get_block returned device address {} not aligned to the block size {bs}",
                m.addr
            )));
        };
        self.b_blocknr.set(block);
        if m.new {
            bits.insert(BhState::NEW);
        }
        self.b_state.fetch_or(bits.0, Ordering::Relaxed);
        Ok(())
    }

    /// Sets `b_blocknr`: writeback gives a delayed head the block its
    /// allocation chose (the head stays MAPPED).
    #[inline]
    pub fn set_blocknr(&self, block: DiskBlock) {
        self.b_blocknr.set(block);
    }

    /// True when the block's bytes cannot come from the device and read as
    /// zeroes instead: no disk block, unwritten, delalloc or just created.
    #[inline]
    pub fn reads_as_zero(&self) -> bool {
        let s = self.state();
        !s.contains(BhState::MAPPED)
            || s.intersects(BhState::NEW | BhState::UNWRITTEN | BhState::DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_bits() {
        let mut s = BhState::UPTODATE | BhState::DIRTY;
        assert!(s.contains(BhState::UPTODATE) && s.intersects(BhState::DIRTY | BhState::NEW));
        s.remove(BhState::DIRTY);
        assert!(!s.contains(BhState::DIRTY));
        s.insert(BhState::MAPPED);
        assert!(s.contains(BhState::MAPPED | BhState::UPTODATE));
        // The kernel's bit numbers.
        assert_eq!(BhState::NEW.bits(), 1 << 5);
        assert_eq!(BhState::UNWRITTEN.bits(), 1 << 11);
    }

    #[test]
    fn layout_is_the_kernels() {
        use std::mem::offset_of;
        assert_eq!(size_of::<BufferHead>(), 104);
        let offsets = [
            offset_of!(BufferHead, b_state),
            offset_of!(BufferHead, b_this_page),
            offset_of!(BufferHead, b_folio),
            offset_of!(BufferHead, b_blocknr),
            offset_of!(BufferHead, b_size),
            offset_of!(BufferHead, b_data),
            offset_of!(BufferHead, b_bdev),
            offset_of!(BufferHead, b_end_io),
            offset_of!(BufferHead, b_private),
            offset_of!(BufferHead, b_assoc_buffers),
            offset_of!(BufferHead, b_assoc_map),
            offset_of!(BufferHead, b_count),
            offset_of!(BufferHead, b_uptodate_lock),
        ];
        // bits_offset / 8 of each member in the kernel's BTF.
        assert_eq!(offsets, [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 88, 96, 100]);
    }

    #[test]
    fn set_clear_and_dirty_follow_the_kernel_helpers() {
        let bh = BufferHead::new(3, 0, 4096, BhState::empty());
        assert_eq!(bh.folio(), 3);
        bh.set(BhState::NEW);
        bh.set(BhState::NEW);
        assert!(bh.test(BhState::NEW));
        bh.clear(BhState::NEW);
        bh.clear(BhState::NEW);
        assert!(!bh.test(BhState::NEW));
        bh.set_uptodate();
        assert!(bh.uptodate());
        assert!(bh.mark_dirty());
        assert!(!bh.mark_dirty());
        assert!(bh.dirty());
        bh.get();
        assert_eq!(bh.count(), 1);
        bh.put();
        assert_eq!(bh.count(), 0);
    }

    #[test]
    fn map_sets_bits_from_the_mapping() {
        let bh = BufferHead::new(0, 4096, 4096, BhState::empty());
        assert_eq!(bh.range(), (4096, 8192));
        assert!(bh.outside(0, 4096) && bh.outside(8192, 9000) && !bh.outside(8191, 9000));
        let m = |kind, addr, new| BlockMapping {
            kind,
            addr: DevAddr::new(addr),
            new,
        };
        let (k1, k4) = (BlockSize::new(1024).unwrap(), BlockSize::new(4096).unwrap());
        bh.map(&m(ExtentKind::Hole, 0, false), k4).unwrap();
        assert!(!bh.mapped() && bh.reads_as_zero());
        bh.map(&m(ExtentKind::Mapped, 8192, false), k4).unwrap();
        assert!(bh.mapped() && !bh.reads_as_zero());
        assert_eq!((bh.blocknr().get(), bh.addr(k4).get()), (2, 8192));
        let u = BufferHead::new(0, 0, 1024, BhState::empty());
        u.map(&m(ExtentKind::Unwritten, 1024, false), k1).unwrap();
        assert!(u.test(BhState::UNWRITTEN | BhState::NEW) && u.reads_as_zero());
        let d = BufferHead::new(0, 0, 1024, BhState::empty());
        assert!(d.map(&m(ExtentKind::Mapped, 1000, false), k1).is_err());
        d.map(&m(ExtentKind::Mapped, 2048, true), k1).unwrap();
        assert!(d.test(BhState::NEW));
    }
}
