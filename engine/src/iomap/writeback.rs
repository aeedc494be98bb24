//! iomap writeback: dirty runs from the dirty bitmap, mapped to the disk.

use super::ifs_alloc;
use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::{FolioData, FolioPrivate};
use crate::mapping::{ExtentKind, MapIntent};
use crate::units::FilePos;
use crate::write_path::DirtyRun;
use std::ops::Range;

/// `iomap_writepage_map`: appends the folio's dirty runs within `[0, end)`,
/// split where the disk mapping is discontiguous.
///
/// Where ours differs: the kernel adds each dirty range to an ioend and
/// clears the dirty bits as it queues them; here the engine's batcher
/// builds the I/O and the bits are cleared once it completed
/// ([`ifs_clear_range_dirty`]).
pub(super) fn iomap_writepage_map(
    mapping: &AddressSpace,
    folio: &mut FolioData,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    let bs = mapping.bs();
    let fpos = folio.pos();
    if folio.size() >> bs.shift() == 1 {
        return iomap_writepage_map_blocks(mapping, fpos, 0, end, runs);
    }
    // A folio dirtied whole (no state yet) gets its state now, all dirty,
    // so that a partial failure below can keep exactly the failed blocks.
    let s = ifs_alloc(folio, bs);
    let limit = end >> bs.shift();
    let mut b = 0;
    while let Some((start, stop)) = s.next_dirty_run(b, limit) {
        iomap_writepage_map_blocks(mapping, fpos, start << bs.shift(), stop << bs.shift(), runs)?;
        b = stop;
    }
    Ok(())
}

/// `iomap_writepage_map_blocks`: maps folio bytes `[off, end)` (through
/// the mapper, the kernel's `wpc->ops->map_blocks`) and appends one run per
/// extent piece.
fn iomap_writepage_map_blocks(
    mapping: &AddressSpace,
    fpos: u64,
    mut off: usize,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    while off < end {
        let pos = FilePos::new(fpos + off as u64);
        let m = mapping
            .mapper
            .iomap_begin(pos, (end - off) as u64, MapIntent::Writeback)?;
        let len = (m.end().since(pos) as usize).min(end - off);
        match m.kind {
            ExtentKind::Mapped => runs.push(DirtyRun {
                off,
                len,
                addr: m.addr_of(pos),
            }),
            ExtentKind::Hole => return Err(mapping.unsupported_writeback(pos, "a hole")),
            ExtentKind::Unwritten => return Err(mapping.unsupported_writeback(pos, "unwritten")),
            ExtentKind::Delalloc => return Err(mapping.unsupported_writeback(pos, "delalloc")),
        }
        off += len;
    }
    Ok(())
}

/// `ifs_clear_range_dirty` for every range in `done`; true when no block
/// is left dirty.
pub(super) fn ifs_clear_range_dirty(folio: &mut FolioData, done: &[Range<usize>]) -> bool {
    match &mut folio.private {
        FolioPrivate::Iomap(s) => {
            let bs = folio.data.len() / s.nblocks();
            for r in done {
                s.clear_dirty(r.start / bs, r.end.div_ceil(bs));
            }
            !s.any_dirty()
        }
        // One block, or never split: the run covered the whole folio.
        _ => true,
    }
}
