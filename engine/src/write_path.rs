//! The seam between the shared engine and a write path.
//!
//! A write path owns the loop that differs between iomap and buffer heads
//! (mapping per extent vs per block, bitmaps vs a ring) and the per-block
//! state it hangs on folios. Everything else lives once in the engine: the
//! page cache, folio memory, the copy ([`IovIter`]), i_size, the device and
//! the writeback batcher ([`crate::writeback`]).

use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::FolioData;
use crate::iov::IovIter;
use crate::page_cache::FolioHint;
use crate::units::{DevAddr, FilePos};
use std::ops::Range;

/// One run of dirty, disk-contiguous bytes of a folio, ready to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyRun {
    /// Offset in the folio (block-aligned).
    pub off: usize,
    /// Length (a multiple of the block size).
    pub len: usize,
    /// Device address of the first byte.
    pub addr: DevAddr,
}

/// A buffered write path: iomap here, buffer heads in `bufwrite-compat`.
pub trait WritePath: Send + Sync {
    /// Name used in reports: `iomap`, `bh-legacy`, `bh-tailskip`, `bh-seek`.
    fn name(&self) -> &'static str;

    /// Copies `src` into the page cache at `pos`, folio by folio, marking
    /// what it wrote dirty and moving i_size. The caller holds the file's
    /// write lock and has checked the range with `Mapper::prepare_write`.
    /// Returns the bytes written: all of them, or fewer if an error stopped
    /// the loop after some progress (an error with no progress is returned).
    /// `hint` is the writer's lookup hint, kept with the write lock, for
    /// `PageCache::with_locked`: both paths look folios up the same way.
    fn perform_write(
        &self,
        mapping: &AddressSpace,
        hint: &mut FolioHint,
        pos: FilePos,
        src: &mut IovIter<'_>,
    ) -> Result<u64>;

    /// Makes the blocks covering folio bytes `[from, to)` uptodate (read
    /// from the device, or zeroed for holes and blocks past EOF), for a
    /// buffered read. The folio is locked and not uptodate.
    fn read_folio_range(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        from: usize,
        to: usize,
    ) -> Result<()>;

    /// Appends to `runs` the dirty, disk-contiguous runs of the locked folio
    /// within `[0, end)` (`end` is block-aligned: EOF rounded up, or the folio
    /// size). The engine writes them and reports back with
    /// [`clear_dirty`](WritePath::clear_dirty).
    fn writeback_runs(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        end: usize,
        runs: &mut Vec<DirtyRun>,
    ) -> Result<()>;

    /// Clears the per-block dirty state of the folio byte ranges in `done`
    /// (block-aligned, disjoint, in ascending order): every run of this folio
    /// whose write completed, and the part past the EOF block. Writeback calls
    /// it once per folio per pass, so a path that must walk its per-block state
    /// to clear it (the buffer-head ring) walks once, not once per run.
    /// Returns true when no dirty block is left.
    fn clear_dirty(&self, folio: &mut FolioData, done: &[Range<usize>]) -> bool;

    /// Marks dirty again the blocks of folio bytes `range` (block aligned)
    /// whose writeback failed, as far as they still hold data: uptodate
    /// (iomap) or mapped and uptodate (buffer heads). Blocks truncate or
    /// punch invalidated meanwhile stay clean. The engine sets the folio's
    /// dirty flag and tag.
    fn redirty(&self, folio: &mut FolioData, range: Range<usize>);

    /// Forgets the per-block state of the locked folio's blocks in `range`
    /// (folio bytes, block aligned), for truncate and punch-hole: iomap
    /// clears their uptodate and dirty bits, buffer heads go back to
    /// unmapped, not uptodate, not dirty, with no DELAY / NEW / UNWRITTEN
    /// (the kernel's `folio_invalidate` of part of a folio). The engine
    /// zeroes the bytes, clears the folio's uptodate flag, and clears its
    /// dirty flag and dirty-set entry when no dirty block is left
    /// ([`clear_dirty`](WritePath::clear_dirty) with no range says so).
    fn invalidate_range(&self, mapping: &AddressSpace, folio: &mut FolioData, range: Range<usize>);

    /// Bytes of per-block metadata this path keeps on the folio.
    fn private_bytes(&self, folio: &FolioData) -> usize;
}
