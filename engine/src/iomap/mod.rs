//! The iomap buffered write path: mapping per extent, then per folio, with
//! per-folio sub-block bitmaps ([`FolioState`]) instead of buffer heads.
//!
//! A write asks the mapper once per extent (`iomap_begin`), then for each
//! folio the extent covers: write_begin (read or zero at most the two
//! partial edge blocks, only when the folio is not uptodate), copy,
//! write_end (set the written range's bits, folio uptodate when full, dirty,
//! i_size). On an uptodate folio the cost depends on the bytes written, not
//! on the folio's size.

mod read;
mod write;
mod writeback;

use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::{FolioData, FolioPrivate};
use crate::folio_state::FolioState;
use crate::iov::IovIter;
use crate::page_cache::FolioHint;
use crate::units::{BlockSize, FilePos};
use crate::write_path::{DirtyRun, WritePath};

/// The iomap write path.
#[derive(Debug, Default, Clone, Copy)]
pub struct IomapPath;

impl IomapPath {
    /// The iomap path.
    pub fn new() -> Self {
        IomapPath
    }
}

/// Blocks in the folio: the kernel's `i_blocks_per_folio`.
#[inline]
fn i_blocks_per_folio(folio: &FolioData, bs: BlockSize) -> usize {
    // A shift, not a division, on the hot path.
    folio.size() >> bs.shift()
}

/// `ifs_alloc`: the folio's [`FolioState`] (the kernel's `struct
/// iomap_folio_state`, `ifs`), attached if missing and seeded from the folio
/// flags, as the kernel seeds it from `folio_test_uptodate` and
/// `folio_test_dirty`. Only for folios of more than one block.
///
/// Where ours differs: the kernel allocates with the gfp flags of the
/// caller and can fail (`-EAGAIN` for nowait); this never fails.
fn ifs_alloc(folio: &mut FolioData, bs: BlockSize) -> &mut FolioState {
    if !matches!(folio.private, FolioPrivate::Iomap(_)) {
        let s = FolioState::new(
            i_blocks_per_folio(folio, bs),
            folio.uptodate(),
            folio.dirty(),
        );
        folio.private = FolioPrivate::Iomap(s);
    }
    match &mut folio.private {
        FolioPrivate::Iomap(s) => s,
        // Just attached above.
        _ => unreachable!("iomap state attached above"),
    }
}

impl WritePath for IomapPath {
    fn name(&self) -> &'static str {
        "iomap"
    }

    fn perform_write(
        &self,
        mapping: &AddressSpace,
        hint: &mut FolioHint,
        pos: FilePos,
        src: &mut IovIter<'_>,
    ) -> Result<u64> {
        write::iomap_file_buffered_write(mapping, hint, pos, src)
    }

    fn read_folio_range(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        from: usize,
        to: usize,
    ) -> Result<()> {
        read::iomap_read_folio(mapping, folio, from, to)
    }

    fn writeback_runs(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        end: usize,
        runs: &mut Vec<DirtyRun>,
    ) -> Result<()> {
        writeback::iomap_writepage_map(mapping, folio, end, runs)
    }

    fn clear_dirty(&self, folio: &mut FolioData, done: &[std::ops::Range<usize>]) -> bool {
        writeback::ifs_clear_range_dirty(folio, done)
    }

    fn redirty(&self, folio: &mut FolioData, range: std::ops::Range<usize>) {
        if let FolioPrivate::Iomap(s) = &mut folio.private {
            let bs = folio.data.len() / s.nblocks();
            for b in range.start / bs..range.end.div_ceil(bs) {
                if s.is_uptodate(b, b + 1) {
                    s.set_dirty(b, b + 1);
                }
            }
        }
        // No state: the folio's flags describe its one block.
    }

    fn invalidate_range(
        &self,
        mapping: &AddressSpace,
        folio: &mut FolioData,
        range: std::ops::Range<usize>,
    ) {
        let bs = mapping.bs();
        if range.start >= range.end {
            return;
        }
        if i_blocks_per_folio(folio, bs) == 1 {
            // The one block goes: nothing is uptodate or dirty any more.
            folio.private = FolioPrivate::None;
            folio.flags.set(crate::FolioFlags::UPTODATE, false);
            return;
        }
        // Attached (seeded from the flags) before the flag goes, so the
        // blocks outside the range keep their state.
        let s = ifs_alloc(folio, bs);
        let (first, last) = (range.start >> bs.shift(), range.end >> bs.shift());
        s.clear_uptodate(first, last);
        s.clear_dirty(first, last);
        folio.flags.set(crate::FolioFlags::UPTODATE, false);
    }

    fn private_bytes(&self, folio: &FolioData) -> usize {
        folio.iomap_state().map_or(0, FolioState::metadata_bytes)
    }
}
