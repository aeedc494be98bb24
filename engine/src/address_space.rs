//! The address space of one file: its page cache, its mapper (the
//! filesystem's side, which owns i_size) and the device under it.
//!
//! The kernel splits this between `struct address_space` (the page cache
//! of a file, `mapping->i_mapping`, with the folios in `i_pages`) and the host
//! `struct mapping` it belongs to (i_size, i_blkbits, the filesystem's
//! operations). bufwrite keeps them in one [`AddressSpace`] because nothing
//! here needs one without the other; the on-disk mapping of ext4 is a
//! different thing and stays `bufwrite_ext4::AddressSpace`.

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::folio::{Folio, FolioData};
use crate::mapping::Mapper;
use crate::page_cache::PageCache;
use crate::units::{BlockSize, DevAddr, FilePos};
use crate::write_path::WritePath;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// One file's address space: the kernel's `struct address_space` (the
/// page cache) together with the parts of its host `struct inode` the write
/// paths use (i_size and the block size, through the mapper). What a write
/// path shares with the engine.
pub struct AddressSpace {
    /// The file's page cache.
    pub cache: PageCache,
    /// The filesystem side (mapping, i_size).
    pub mapper: Arc<dyn Mapper>,
    /// The device under the file.
    pub device: Arc<dyn BlockDevice>,
    /// The write path (the kernel's `a_ops`): writeback started by the
    /// flusher or reclaim, which have no `File`, goes through it.
    a_ops: Box<dyn WritePath>,
    /// Writeback errors not yet seen by every open file (errseq).
    wb_err: Mutex<ErrSeq>,
    /// Bumped and notified when a folio's writeback ends
    /// (`folio_wait_writeback` waits on it).
    wb_done: Mutex<u64>,
    wb_done_cv: Condvar,
    /// When the inode went from clean to dirty, in the memory's
    /// milliseconds (0: clean): the flusher's expiry and its order.
    dirtied_when: AtomicU64,
    /// The mapper's block size, read once: the hot path asks for it per
    /// folio and a virtual call there cost more than the load.
    block_size: BlockSize,
    /// File ranges written back whose completion (`Mapper::end_io`) waits
    /// for a device flush that succeeded: a failed flush keeps them here
    /// and the next writeback tries again, so an unwritten extent is never
    /// converted before its data is durable, and never forgotten.
    pending_end_io: Mutex<Pending>,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("block_size", &self.block_size)
            .field("size", &self.size())
            .field("device", &self.device.describe())
            .finish_non_exhaustive()
    }
}

/// Completed writeback ranges waiting for a flush before their end_io.
#[derive(Debug, Default)]
struct Pending {
    ranges: Vec<Range<u64>>,
    /// `ranges` is sorted and merged.
    sorted: bool,
}

impl Pending {
    /// Sorts and merges the ranges (one end_io per contiguous file range).
    fn normalize(&mut self) {
        if self.sorted {
            return;
        }
        self.ranges.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.ranges = merged;
        self.sorted = true;
    }

    /// True when some range overlaps `[start, end)`; the ranges must be
    /// normalized.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges.get(i).is_some_and(|r| r.start < end)
    }
}

/// The errseq of an address space: a counter of writeback errors and the
/// last one, which each open file reports once.
#[derive(Debug, Default)]
struct ErrSeq {
    seq: u64,
    last: Option<(u64, Arc<Error>)>,
}

impl AddressSpace {
    /// The address space of one file: its cache, mapper, device and write
    /// path. The block size is the mapper's, so the two cannot disagree.
    /// It registers with the cache's memory (the flusher and reclaim find
    /// it there).
    pub fn new(
        cache: PageCache,
        mapper: Arc<dyn Mapper>,
        device: Arc<dyn BlockDevice>,
        a_ops: Box<dyn WritePath>,
    ) -> Arc<Self> {
        let block_size = mapper.block_size();
        let mapping = Arc::new_cyclic(|weak| {
            cache.set_owner(std::sync::Weak::clone(weak));
            AddressSpace {
                cache,
                mapper,
                device,
                a_ops,
                wb_err: Mutex::new(ErrSeq::default()),
                wb_done: Mutex::new(0),
                wb_done_cv: Condvar::new(),
                dirtied_when: AtomicU64::new(0),
                block_size,
                pending_end_io: Mutex::new(Pending::default()),
            }
        });
        mapping.cache.memory().register(Arc::downgrade(&mapping));
        mapping
    }

    /// The write path.
    #[inline]
    pub fn write_path(&self) -> &dyn WritePath {
        self.a_ops.as_ref()
    }

    /// When the inode became dirty (memory milliseconds; 0 when clean).
    pub fn dirtied_when(&self) -> u64 {
        self.dirtied_when.load(Ordering::Relaxed)
    }

    /// Called by writeback when a pass left no dirty folio.
    pub(crate) fn clear_dirtied_when(&self) {
        if self.cache.nr_dirty() == 0 {
            self.dirtied_when.store(0, Ordering::Relaxed);
        }
    }

    /// Records a writeback error for every open file to see once.
    pub fn record_wb_error(&self, file_offset: u64, err: Error) {
        let mut e = self.wb_err.lock().unwrap_or_else(|e| e.into_inner());
        e.seq += 1;
        e.last = Some((file_offset, Arc::new(err)));
    }

    /// The errseq counter now (a file samples it at open).
    pub fn wb_err_seq(&self) -> u64 {
        self.wb_err.lock().unwrap_or_else(|e| e.into_inner()).seq
    }

    /// `file_check_and_advance_wb_err`: the error recorded since `seen`
    /// (a file's sample), once; `seen` moves to now.
    pub fn check_and_advance_wb_err(&self, seen: &AtomicU64) -> Option<Error> {
        let e = self.wb_err.lock().unwrap_or_else(|e| e.into_inner());
        let old = seen.swap(e.seq, Ordering::AcqRel);
        if old >= e.seq {
            return None;
        }
        e.last
            .as_ref()
            .map(|(file_offset, source)| Error::WritebackEarlier {
                file_offset: *file_offset,
                source: Arc::clone(source),
            })
    }

    /// Ends one writeback I/O over `folio`; the last one ends its
    /// writeback (untagged, accounted, waiters woken).
    pub(crate) fn end_folio_writeback(&self, folio: &Folio) {
        if folio.end_writeback_io() {
            self.cache.untag_writeback(folio);
            *self.wb_done.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            self.wb_done_cv.notify_all();
        }
    }

    /// `folio_wait_writeback`: returns once `folio` is not under writeback.
    /// Call with no folio locked.
    pub fn wait_on_writeback(&self, folio: &Folio) {
        let mut g = self.wb_done.lock().unwrap_or_else(|e| e.into_inner());
        while folio.under_writeback() {
            g = self
                .wb_done_cv
                .wait_timeout(g, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the writeback of every folio over file bytes `[from, to)`
    /// (`filemap_fdatawait_range`).
    pub fn wait_writeback_range(&self, from: u64, to: u64) {
        for f in self.cache.tagged(from, to, true) {
            self.wait_on_writeback(&f);
        }
    }

    /// Reclaim's eviction of one clean, idle folio; the pages whose data
    /// waits for its completion stay (see [`drop_clean`](Self::drop_clean)).
    pub(crate) fn evict(&self, folio: Arc<Folio>) -> bool {
        let mut pending = self.pending();
        pending.normalize();
        let pending = &*pending;
        self.cache
            .evict(&folio, |start, end| pending.overlaps(start, end))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending_end_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes the device and completes what waited for it: memory
    /// pressure's way to unpin folios whose conversion waits (and the
    /// flusher's, for completions older than the expiry).
    pub fn flush_pending_io(&self) -> Result<()> {
        if !self.has_pending_io() {
            return Ok(());
        }
        self.device.flush()?;
        self.complete_pending_io()
    }

    /// Records file ranges whose writeback I/O completed, for
    /// [`complete_pending_io`](Self::complete_pending_io) after the flush.
    /// O(1) per range: the list is sorted and merged when it is next read.
    pub fn add_pending_end_io(&self, ranges: impl IntoIterator<Item = Range<u64>>) {
        let mut p = self.pending();
        p.ranges.extend(ranges);
        p.sorted = p.ranges.len() <= 1;
    }

    /// The device flush after the data succeeded: tells the mapper about
    /// every pending completed range (`Mapper::end_io`), one call per
    /// contiguous file range. A range whose end_io fails stays pending,
    /// with those after it.
    pub fn complete_pending_io(&self) -> Result<()> {
        let mut p = self.pending();
        p.normalize();
        let mut done = 0;
        let mut res = Ok(());
        for r in &p.ranges {
            if let Err(e) = self.mapper.end_io(FilePos::new(r.start), r.end - r.start) {
                res = Err(e);
                break;
            }
            done += 1;
        }
        p.ranges.drain(..done);
        res
    }

    /// True while a written range overlapping file bytes `[from, to)`
    /// waits for its completion (the mapper does not know yet that those
    /// blocks hold data).
    pub fn pending_io_overlaps(&self, from: u64, to: u64) -> bool {
        let mut p = self.pending();
        p.normalize();
        p.overlaps(from, to)
    }

    /// True while some written range waits for its completion.
    pub fn has_pending_io(&self) -> bool {
        !self.pending().ranges.is_empty()
    }

    /// Drops the clean folios (drop_caches) but those whose written data
    /// waits for its completion: until `end_io` the mapper may still read
    /// them as unwritten (zeroes), so the cache is the only copy a reader
    /// sees. Returns how many were dropped.
    pub fn drop_clean(&self) -> usize {
        let mut pending = self.pending();
        pending.normalize();
        let pending = &*pending;
        self.cache
            .drop_clean_keeping(|start, end| pending.overlaps(start, end))
    }

    /// Forgets pending completions over `[from, to)`: truncate and punch
    /// dropped those blocks, and a late end_io must not bring their old
    /// data back.
    pub fn forget_pending_io(&self, from: u64, to: u64) {
        let mut p = self.pending();
        let mut kept = Vec::with_capacity(p.ranges.len());
        for r in p.ranges.drain(..) {
            if r.end <= from || r.start >= to {
                kept.push(r);
                continue;
            }
            if r.start < from {
                kept.push(r.start..from);
            }
            if r.end > to {
                kept.push(to..r.end);
            }
        }
        p.ranges = kept;
        p.sorted = false;
    }

    /// i_size.
    #[inline]
    pub fn size(&self) -> u64 {
        self.mapper.size()
    }

    /// Moves i_size to `end` if that grows the file. `known` is the write
    /// loop's copy of i_size, read once per write (only writers move it, and
    /// they hold the write lock), so the hot path asks the mapper nothing.
    /// Call before unlocking the folio that holds `end - 1`, so writeback
    /// never sees a stale EOF.
    #[inline]
    pub fn extend_size(&self, known: &mut u64, end: u64) {
        if end > *known {
            self.mapper.set_size(end);
            *known = end;
        }
    }

    /// The filesystem block size (the mapper's).
    #[inline]
    pub fn bs(&self) -> BlockSize {
        self.block_size
    }

    /// Reads `buf.len()` bytes from device address `addr` into folio memory.
    pub fn read_blocks(&self, addr: DevAddr, buf: &mut [u8]) -> Result<()> {
        self.device.read_at(addr.get(), buf)
    }

    /// Marks the folio dirty in its flags and, on the clean-to-dirty edge,
    /// in the cache's dirty tag and the memory's count; the inode's first
    /// dirty folio stamps its dirtied-when time.
    #[inline]
    pub fn mark_folio_dirty(&self, folio: &mut FolioData) {
        if !folio.dirty() {
            self.mark_folio_dirty_slow(folio);
        }
    }

    #[cold]
    fn mark_folio_dirty_slow(&self, folio: &mut FolioData) {
        folio.flags.set(crate::FolioFlags::DIRTY, true);
        if self.cache.mark_dirty(folio) && self.dirtied_when() == 0 {
            let now = self.cache.memory().now_ms();
            self.dirtied_when.store(now, Ordering::Relaxed);
        }
    }

    /// Clears the folio's dirty (and error) flags and its dirty tag: its
    /// dirty blocks were all queued for writeback, or dropped.
    pub fn clear_folio_dirty(&self, folio: &mut FolioData) {
        folio.flags.set(crate::FolioFlags::DIRTY, false);
        folio.flags.set(crate::FolioFlags::ERROR, false);
        self.cache.clear_dirty(folio);
    }

    /// An error for a mapping kind a write path cannot write back without allocation.
    pub fn unsupported_writeback(&self, file_offset: FilePos, what: &str) -> Error {
        Error::Unsupported(format!(
            "writeback of file offset {file_offset}: the block is {what} and needs allocation"
        ))
    }
}
