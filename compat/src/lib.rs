//! bufwrite-compat: the legacy buffer-head write path over the bufwrite
//! engine, in three modes.
//!
//! Each folio written through this path carries a [`BufferRing`]: one
//! [`BufferHead`] per block, each its own heap node, linked in a ring from
//! the head, so that walking it costs what the kernel's walk costs. Writes
//! go through the engine's shared loop ([`generic_perform_write`]); this
//! crate supplies write_begin and commit, which walk the ring as the
//! [`Mode`] says, plus read-in and the writeback runs. The page cache, the
//! copy, i_size and the writeback batcher are the engine's.
//!
//! ```
//! use bufwrite_compat::{BufferHeadPath, Mode, WalkCounter};
//! use bufwrite_engine::{device::mem::Mem, File, FileOptions, Flat, OrderPolicy};
//! use std::sync::Arc;
//!
//! let dev = Arc::new(Mem::new(4 << 20));
//! let flat = Arc::new(Flat::new(0, 4 << 20, 4096, 2 << 20)?);
//! let opts = FileOptions { order: OrderPolicy::Fixed(9) };
//! // A counting path, for an untimed pass; timed runs use BufferHeadPath::new.
//! let walks = WalkCounter::new();
//! let path = BufferHeadPath::counting(Mode::TailSkip, walks.clone());
//! let file = File::open(dev, flat, Box::new(path), opts)?;
//! file.pwrite(0, &vec![1u8; 2 << 20])?; // the folio becomes uptodate
//! walks.reset();
//! file.pwrite(0, &[2u8; 1024])?;
//! assert_eq!(walks.stats().write_begin, 1); // stopped after the written head
//! file.fsync()?;
//! # Ok::<(), bufwrite_engine::Error>(())
//! ```

#![warn(unreachable_pub)]
#![deny(unsafe_code)]

mod buffer_head;
mod read;
// The ring is the one place that needs raw pointers (see its module doc).
#[allow(unsafe_code)]
mod ring;
mod walk_count;
mod write;
mod writeback;

pub use buffer_head::{BhState, BufferHead, EndIo, KERNEL_BUFFER_HEAD_SIZE};
pub use ring::{BufferRing, Walk};
pub use walk_count::{NoCount, WalkCount, WalkCounter, WalkStats};

use bufwrite_engine::folio::PAGE_SHIFT;
use bufwrite_engine::generic_write::{generic_perform_write, FolioWriteOps};
use bufwrite_engine::page_cache::FolioHint;
use bufwrite_engine::{
    AddressSpace, BlockSize, DirtyRun, Error, FilePos, FolioData, FolioPrivate, IovIter, Result,
    WritePath,
};
use std::sync::Arc;

/// How write_begin and commit walk the ring; chosen per file at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Walk every head in both walks (Linux v6.16 .. before the fix).
    Legacy,
    /// The upstream fix (both patches): when the folio was uptodate on
    /// entry, stop once past the written range; otherwise walk every head.
    TailSkip,
    /// The rejected v1 variant, as an experiment: on an uptodate folio,
    /// start at the first written head (through a seek index the kernel's
    /// ring does not have) and stop after the last; otherwise walk every head.
    SeekToFrom,
}

impl Mode {
    /// All modes, in the order reports list them.
    pub const ALL: [Mode; 3] = [Mode::Legacy, Mode::TailSkip, Mode::SeekToFrom];

    /// The path name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Legacy => "bh-legacy",
            Mode::TailSkip => "bh-tailskip",
            Mode::SeekToFrom => "bh-seek",
        }
    }

    /// The mode named `name` (`bh-legacy`, `bh-tailskip`, `bh-seek`).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The buffer-head write path in one [`Mode`], counting the heads it
/// walks into `C` ([`NoCount`]: not at all, the timed configuration).
#[derive(Debug)]
pub struct BufferHeadPath<C: WalkCount = NoCount> {
    mode: Mode,
    walks: C,
}

impl BufferHeadPath<NoCount> {
    /// The buffer-head path walking its rings as `mode` says, counting
    /// nothing: what benchmarks time.
    pub fn new(mode: Mode) -> Self {
        BufferHeadPath {
            mode,
            walks: NoCount,
        }
    }
}

impl BufferHeadPath<Arc<WalkCounter>> {
    /// The same path, adding the heads each walk visits to `walks`: for an
    /// untimed counting pass.
    pub fn counting(mode: Mode, walks: Arc<WalkCounter>) -> Self {
        BufferHeadPath { mode, walks }
    }
}

impl<C: WalkCount> BufferHeadPath<C> {
    /// True when this path counts the heads it walks.
    pub const COUNTS_WALKS: bool = C::COUNTS;

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// The folio's ring, if it has one.
pub fn folio_ring(folio: &FolioData) -> Option<&BufferRing> {
    match &folio.private {
        FolioPrivate::Other(b) => b.downcast_ref::<BufferRing>(),
        _ => None,
    }
}

/// `create_empty_buffers` (fs/buffer.c), reached as the kernel reaches it
/// through `folio_create_buffers`: attaches a ring to the folio if it has
/// none and returns the folio's ring. Every head is seeded from the folio
/// flags: uptodate folio, uptodate heads; dirty (and uptodate) folio, dirty
/// heads.
///
/// Where ours differs: the kernel allocates the heads with
/// `folio_alloc_buffers` and may sleep; here allocation does not fail, and
/// a folio carrying another write path's state is an error (the kernel has one kind of folio private data per mapping).
fn create_empty_buffers(
    folio: &mut FolioData,
    bs: BlockSize,
    seek_index: bool,
) -> Result<&mut BufferRing> {
    if matches!(folio.private, FolioPrivate::None) {
        let mut state = BhState::empty();
        if folio.uptodate() {
            state.insert(BhState::UPTODATE);
            if folio.dirty() {
                state.insert(BhState::DIRTY);
            }
        }
        let index = usize::try_from(folio.pos() >> PAGE_SHIFT).unwrap_or(usize::MAX);
        let nr = folio.size() >> bs.shift();
        let ring = BufferRing::for_folio(index, nr, bs.bytes(), state, seek_index);
        folio.private = FolioPrivate::Other(Box::new(ring));
    }
    ring_mut(folio).ok_or_else(|| {
        Error::InvalidArgument(
            "folio carries another write path's per-block state, not a buffer ring".into(),
        )
    })
}

/// The folio's ring, mutably, if it has one.
fn ring_mut(folio: &mut FolioData) -> Option<&mut BufferRing> {
    match &mut folio.private {
        FolioPrivate::Other(b) => b.downcast_mut::<BufferRing>(),
        _ => None,
    }
}

/// The folio's ring and its data, borrowed apart so a walk can fill the
/// blocks it visits.
fn ring_and_data(folio: &mut FolioData) -> Option<(&mut BufferRing, &mut [u8])> {
    let FolioData { data, private, .. } = folio;
    match private {
        FolioPrivate::Other(b) => Some((b.downcast_mut::<BufferRing>()?, &mut data[..])),
        _ => None,
    }
}

impl<C: WalkCount> FolioWriteOps for BufferHeadPath<C> {
    fn write_begin(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        off: usize,
        len: usize,
        isize: u64,
    ) -> Result<()> {
        let (visited, res) =
            write::__block_write_begin_int(self.mode, mapping, folio, off, off + len, isize);
        self.walks.write_begin(visited);
        res
    }

    fn write_end(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        off: usize,
        len: usize,
        copied: usize,
    ) -> usize {
        let (copied, visited) = write::block_write_end(self.mode, mapping, folio, off, len, copied);
        self.walks.commit(visited);
        copied
    }
}

impl<C: WalkCount> WritePath for BufferHeadPath<C> {
    fn name(&self) -> &'static str {
        self.mode.name()
    }

    fn perform_write(
        &self,
        mapping: &AddressSpace,
        hint: &mut FolioHint,
        pos: FilePos,
        src: &mut IovIter<'_>,
    ) -> Result<u64> {
        generic_perform_write(mapping, hint, self, pos, src)
    }

    fn read_folio_range(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        from: usize,
        to: usize,
    ) -> Result<()> {
        read::block_read_full_folio(self.mode, mapping, folio, from, to)
    }

    fn writeback_runs(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        end: usize,
        runs: &mut Vec<DirtyRun>,
    ) -> Result<()> {
        let fpos = folio.pos();
        let ring = create_empty_buffers(folio, mapping.bs(), self.mode == Mode::SeekToFrom)?;
        writeback::writeback_runs(mapping, fpos, ring, end, runs)
    }

    fn clear_dirty(&self, folio: &mut FolioData, done: &[std::ops::Range<usize>]) -> bool {
        ring_mut(folio).is_none_or(|ring| writeback::clear_dirty(ring, done))
    }

    fn redirty(&self, folio: &mut FolioData, range: std::ops::Range<usize>) {
        if let Some(ring) = ring_mut(folio) {
            writeback::redirty(ring, range);
        }
    }

    fn invalidate_range(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        range: std::ops::Range<usize>,
    ) {
        if range.start >= range.end {
            return;
        }
        // Seeded from the flags, so the heads outside the range keep what
        // the folio said of them.
        let Ok(ring) = create_empty_buffers(folio, mapping.bs(), self.mode == Mode::SeekToFrom)
        else {
            // Another path's state: nothing of ours to forget.
            return;
        };
        // discard_buffer, and the uptodate bit with it: the block is
        // unmapped and unknown again.
        let gone = BhState::UPTODATE
            | BhState::DIRTY
            | BhState::MAPPED
            | BhState::DELAY
            | BhState::NEW
            | BhState::UNWRITTEN
            | BhState::REQ;
        for bh in ring.walk() {
            if !bh.outside(range.start, range.end) {
                bh.clear(gone);
            }
        }
        folio
            .flags
            .set(bufwrite_engine::FolioFlags::UPTODATE, false);
    }

    fn private_bytes(&self, folio: &FolioData) -> usize {
        folio_ring(folio).map_or(0, BufferRing::memory_bytes)
    }
}
