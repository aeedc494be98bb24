//! The seam between the shared engine and a write path.
//!
//! A write path owns the loop that differs between iomap and buffer heads
//! (mapping per extent vs per block, bitmaps vs a ring) and the per-block
//! state it hangs on folios. Everything else lives once, here in the
//! engine: the page cache, folio memory, the copy ([`IovIter`]), i_size, the
//! device and the writeback batcher ([`crate::writeback`]).

use crate::device::BlockDevice;
use crate::error::{Error, IoKind, Result};
use crate::folio::FolioData;
use crate::iov::IovIter;
use crate::mapping::Mapper;
use crate::page_cache::PageCache;
use crate::units::{BlockSize, DevAddr, FilePos};
use std::ops::Range;
use std::sync::Arc;

/// What a file's write path shares with the engine: its cache, mapper and device.
pub struct Inode {
    /// The file's page cache.
    pub cache: PageCache,
    /// The filesystem side (mapping, i_size).
    pub mapper: Arc<dyn Mapper>,
    /// The device under the file.
    pub device: Arc<dyn BlockDevice>,
    /// The mapper's block size, read once: the hot path asks for it per
    /// folio and a virtual call there cost more than the load.
    block_size: BlockSize,
}

impl std::fmt::Debug for Inode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inode")
            .field("block_size", &self.block_size)
            .field("size", &self.size())
            .field("device", &self.device.describe())
            .finish_non_exhaustive()
    }
}

impl Inode {
    /// The cache, mapper and device of one file; the block size is the
    /// mapper's.
    pub fn new(cache: PageCache, mapper: Arc<dyn Mapper>, device: Arc<dyn BlockDevice>) -> Self {
        let block_size = mapper.block_size();
        Inode {
            cache,
            mapper,
            device,
            block_size,
        }
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
    /// in the cache's dirty set.
    #[inline]
    pub fn mark_folio_dirty(&self, folio: &mut FolioData) {
        if !folio.dirty() {
            folio.flags.set(crate::FolioFlags::DIRTY, true);
            self.cache.mark_dirty(folio.index);
        }
    }

    /// An error for a mapping kind a path cannot write back without allocation.
    pub fn unsupported_writeback(&self, file_offset: FilePos, what: &str) -> Error {
        Error::Unsupported(format!(
            "writeback of file offset {file_offset}: the block is {what} and needs allocation"
        ))
    }

    /// An `Io` error for a failed read-in at device address `addr`.
    pub fn read_error(addr: DevAddr, len: usize, e: std::io::Error) -> Error {
        Error::io(IoKind::Read, addr.get(), len as u64, e)
    }
}

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
    fn perform_write(&self, inode: &Inode, pos: FilePos, src: &mut IovIter<'_>) -> Result<u64>;

    /// Makes the blocks covering folio bytes `[from, to)` uptodate (read
    /// from the device, or zeroed for holes and blocks past EOF), for a
    /// buffered read. The folio is locked and not uptodate.
    fn read_folio_range(
        &self,
        inode: &Inode,
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
        inode: &Inode,
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

    /// Bytes of per-block metadata this path keeps on the folio.
    fn private_bytes(&self, folio: &FolioData) -> usize;
}
