//! Folios: the page-cache unit, 2^order pages of 4 KiB with one aligned data
//! buffer, folio-level flags and the write path's private per-block state.

use crate::align::AlignedBuf;
use crate::folio_state::FolioState;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Page size: the unit folio orders count in.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Largest folio order (2 MiB folios, the PMD size on x86-64).
pub const MAX_ORDER: u8 = 9;

/// Bytes in a folio of `order`.
pub const fn folio_size(order: u8) -> usize {
    PAGE_SIZE << order
}

/// Folio-level flags. "Locked" is not a bit here: a folio is locked while
/// its [`FolioGuard`] is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolioFlags(u8);

impl FolioFlags {
    /// Every byte of the folio is valid in memory.
    pub const UPTODATE: FolioFlags = FolioFlags(1);
    /// The folio holds data not yet written back.
    pub const DIRTY: FolioFlags = FolioFlags(2);
    /// The last writeback of this folio failed.
    pub const ERROR: FolioFlags = FolioFlags(8);

    /// True when every bit of `f` is set.
    pub fn contains(self, f: FolioFlags) -> bool {
        self.0 & f.0 == f.0
    }

    /// Sets or clears the bits of `f`.
    pub fn set(&mut self, f: FolioFlags, on: bool) {
        if on {
            self.0 |= f.0
        } else {
            self.0 &= !f.0
        }
    }
}

/// Per-block state a write path keeps on a folio (the kernel's
/// `folio->private`): never both kinds at once.
#[derive(Default)]
pub enum FolioPrivate {
    /// No per-block state: folio flags describe every block.
    #[default]
    None,
    /// The iomap path's sub-block bitmaps.
    Iomap(FolioState),
    /// Another path's state (the buffer-head ring lives here).
    Other(Box<dyn Any + Send>),
}

impl std::fmt::Debug for FolioPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FolioPrivate::None => f.write_str("None"),
            FolioPrivate::Iomap(s) => f.debug_tuple("Iomap").field(s).finish(),
            FolioPrivate::Other(_) => f.write_str("Other(..)"),
        }
    }
}

/// The lockable contents of a folio.
#[derive(Debug)]
pub struct FolioData {
    /// First page index (file offset / 4096); a multiple of 2^order.
    pub index: u64,
    /// Folio order.
    pub order: u8,
    /// The data, `folio_size(order)` bytes, 4096-aligned.
    pub data: AlignedBuf,
    /// Folio flags.
    pub flags: FolioFlags,
    /// The write path's per-block state.
    pub private: FolioPrivate,
    /// True while the page cache holds this folio; cleared, under this
    /// lock, when truncate or drop_caches removes it. A writer that reached
    /// the folio through its [`FolioHint`](crate::page_cache::FolioHint)
    /// (without the cache's index lock) checks it after locking, so it never
    /// writes into a folio writeback can no longer find.
    pub(crate) in_cache: bool,
}

impl FolioData {
    /// File offset of the folio's first byte.
    pub fn pos(&self) -> u64 {
        self.index << PAGE_SHIFT
    }

    /// Folio size in bytes.
    pub fn size(&self) -> usize {
        folio_size(self.order)
    }

    /// True when every block is valid in memory.
    pub fn uptodate(&self) -> bool {
        self.flags.contains(FolioFlags::UPTODATE)
    }

    /// True when the folio holds unwritten-back data.
    pub fn dirty(&self) -> bool {
        self.flags.contains(FolioFlags::DIRTY)
    }

    /// The iomap state, if attached.
    pub fn iomap_state(&self) -> Option<&FolioState> {
        match &self.private {
            FolioPrivate::Iomap(s) => Some(s),
            _ => None,
        }
    }
}

/// A folio in the page cache. Its mutex is the folio lock.
#[derive(Debug)]
pub struct Folio {
    index: u64,
    order: u8,
    /// How many of the strong references are writers' hints
    /// ([`FolioHint`](crate::page_cache::FolioHint)), so drop_caches can
    /// tell a hint, which checks `in_cache` under the lock, from a user
    /// that found the folio and has not locked it yet.
    hint_refs: AtomicUsize,
    /// Writeback I/Os in flight over this folio: the kernel's
    /// `PG_writeback` (set while nonzero). Raised under the folio lock when
    /// writeback queues a run, lowered at completion without it, so a
    /// completion never waits for a writer holding the lock.
    wb_pending: AtomicU32,
    /// Touched since reclaim last looked (`PG_referenced`): the LRU gives
    /// it a second round instead of evicting it.
    accessed: AtomicBool,
    inner: Mutex<FolioData>,
}

/// A locked folio.
pub type FolioGuard<'a> = MutexGuard<'a, FolioData>;

impl Folio {
    /// A new, clean, not-uptodate folio of `order` at page `index` (which
    /// must be a multiple of 2^order). Its memory comes from [`buffer_pool`]
    /// and may hold an earlier folio's bytes: nothing reads a block before
    /// it is uptodate (read from the device, zeroed, or fully written), as
    /// with the kernel's page allocator, which does not zero page-cache pages.
    pub fn new(index: u64, order: u8) -> Self {
        debug_assert!(order <= MAX_ORDER && index.is_multiple_of(1u64 << order));
        Folio {
            index,
            order,
            hint_refs: AtomicUsize::new(0),
            wb_pending: AtomicU32::new(0),
            accessed: AtomicBool::new(false),
            inner: Mutex::new(FolioData {
                index,
                order,
                data: buffer_pool::take(order),
                flags: FolioFlags::default(),
                private: FolioPrivate::None,
                // Created to be inserted at once, under the index's write lock.
                in_cache: true,
            }),
        }
    }

    /// First page index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Order.
    pub fn order(&self) -> u8 {
        self.order
    }

    /// Number of pages.
    pub fn nr_pages(&self) -> u64 {
        1u64 << self.order
    }

    /// File offset of the first byte.
    pub fn pos(&self) -> u64 {
        self.index << PAGE_SHIFT
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        folio_size(self.order)
    }

    /// Locks the folio. A poisoned lock (a panic while it was held) is
    /// taken over: the flags and bitmaps are only ever changed together with
    /// the data they describe, in non-panicking code.
    pub fn lock(&self) -> FolioGuard<'_> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the folio if nobody holds it.
    pub fn try_lock(&self) -> Option<FolioGuard<'_>> {
        self.inner.try_lock().ok()
    }

    /// A hint took a strong reference: called after the `Arc` clone, so
    /// the count of hints never exceeds the hints' share of the strong
    /// count (drop_caches discounts them).
    pub(crate) fn hint_acquire(&self) {
        self.hint_refs.fetch_add(1, Ordering::Relaxed);
    }

    /// A hint is about to drop its strong reference: called before the
    /// `Arc` drop, whose release decrement then publishes this one to
    /// whoever reads the strong count with an acquire fence after it.
    pub(crate) fn hint_release(&self) {
        self.hint_refs.fetch_sub(1, Ordering::Release);
    }

    /// True while a writeback I/O over the folio is in flight
    /// (`folio_test_writeback`).
    #[inline]
    pub fn under_writeback(&self) -> bool {
        self.wb_pending.load(Ordering::Acquire) != 0
    }

    /// One more writeback I/O over the folio; true when it was the first
    /// (the folio just went under writeback). Called with the folio locked.
    pub(crate) fn start_writeback_io(&self) -> bool {
        self.wb_pending.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// One writeback I/O over the folio ended; true when it was the last
    /// (`folio_end_writeback`).
    pub(crate) fn end_writeback_io(&self) -> bool {
        self.wb_pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Marks the folio used (`folio_mark_accessed`): a load, and a store
    /// only when the bit was clear, so a hot folio's line is not written
    /// on every access.
    #[inline]
    pub fn mark_accessed(&self) {
        if !self.accessed.load(Ordering::Relaxed) {
            self.accessed.store(true, Ordering::Relaxed);
        }
    }

    /// Clears the accessed bit, returning whether it was set (the LRU's
    /// second-chance test).
    pub(crate) fn test_clear_accessed(&self) -> bool {
        self.accessed.swap(false, Ordering::Relaxed)
    }

    /// Strong references held by hints (see [`hint_acquire`](Self::hint_acquire)).
    pub(crate) fn hint_refs(&self) -> usize {
        self.hint_refs.load(Ordering::Acquire)
    }
}

impl Drop for Folio {
    fn drop(&mut self) {
        let data = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        buffer_pool::give(
            self.order,
            std::mem::replace(&mut data.data, AlignedBuf::zeroed(0)),
        );
    }
}

/// Freed folio buffers kept for reuse, per order.
///
/// Allocating a 2 MiB folio from the system costs an mmap and 512 page
/// faults (about 1.7 ms per cold write here, measured by `bufwrite sweep
/// cold`), which would swamp the read-in a cold write is about; the kernel
/// takes folios from free lists instead. All orders together keep at most
/// [`POOL_BYTES`](buffer_pool::POOL_BYTES), so an idle process holds little.
pub mod buffer_pool {
    use super::{folio_size, MAX_ORDER};
    use crate::align::AlignedBuf;
    use std::sync::Mutex;

    /// Most bytes of free buffers kept, all orders together.
    pub const POOL_BYTES: usize = 64 << 20;

    static FREE: Mutex<[Vec<AlignedBuf>; MAX_ORDER as usize + 1]> =
        Mutex::new([const { Vec::new() }; MAX_ORDER as usize + 1]);

    /// A buffer for a folio of `order`: a freed one if any, else a new one.
    pub fn take(order: u8) -> AlignedBuf {
        let reused = FREE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(usize::from(order))
            .and_then(Vec::pop);
        let mut buf = reused.unwrap_or_else(|| AlignedBuf::zeroed(folio_size(order)));
        poison(&mut buf);
        buf
    }

    /// Returns a folio's buffer for reuse (dropped when the pool is full).
    pub fn give(order: u8, buf: AlignedBuf) {
        if buf.len() != folio_size(order) {
            return;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = free
            .iter()
            .enumerate()
            .map(|(o, list)| list.len() * folio_size(o as u8))
            .sum();
        if kept + buf.len() <= POOL_BYTES {
            if let Some(list) = free.get_mut(usize::from(order)) {
                list.push(buf);
            }
        }
    }

    /// In debug builds (the tests), new folio memory is filled with a
    /// pattern, so a block exposed before it is uptodate shows up as junk
    /// instead of passing as zeroes.
    fn poison(buf: &mut AlignedBuf) {
        if cfg!(debug_assertions) {
            buf.fill(0xd5);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_and_flags() {
        let f = Folio::new(512, 9);
        assert_eq!(f.pos(), 2 << 20);
        assert_eq!(f.size(), 2 << 20);
        let mut g = f.lock();
        assert!(!g.uptodate());
        g.flags.set(FolioFlags::UPTODATE, true);
        g.flags.set(FolioFlags::DIRTY, true);
        assert!(g.uptodate() && g.dirty());
        g.flags.set(FolioFlags::DIRTY, false);
        assert!(!g.dirty());
        assert_eq!(g.data.as_ptr() as usize % 4096, 0);
        drop(g);
        assert!(f.try_lock().is_some());
    }

    #[test]
    fn pool_hands_out_aligned_poisoned_buffers() {
        buffer_pool::give(1, AlignedBuf::zeroed(folio_size(1)));
        // A buffer of the wrong size is dropped, never handed out for order 1.
        buffer_pool::give(1, AlignedBuf::zeroed(100));
        for _ in 0..3 {
            let b = buffer_pool::take(1);
            assert_eq!(b.len(), folio_size(1));
            assert_eq!(b.as_ptr() as usize % 4096, 0);
            if cfg!(debug_assertions) {
                assert!(b.iter().all(|&x| x == 0xd5));
            }
        }
    }
}
