//! iomap writeback: dirty runs from the dirty bitmap, mapped to the disk.

use super::ifs_alloc;
use crate::address_space::AddressSpace;
use crate::error::{Error, Result};
use crate::folio::{FolioData, FolioPrivate};
use crate::mapping::{ExtentKind, MapIntent};
use crate::units::FilePos;
use crate::write_path::DirtyRun;
use std::ops::Range;

/// `iomap_writepage_map`: appends the folio's dirty runs within `[0, end)`,
/// split where the disk mapping is discontiguous.
///
/// The kernel adds each dirty range to an ioend and clears the dirty bits
/// as it queues them; here the engine's pipeline builds the write and
/// clears the bits of all the folio's queued runs at once
/// ([`ifs_clear_range_dirty`]), still before the I/O, with the folio locked.
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
/// extent piece. A delalloc piece is allocated here (`Mapper::map_blocks`,
/// XFS's `xfs_bmapi_convert_delalloc`) and written where it landed; an
/// unwritten one is written in place (its conversion waits for the I/O,
/// `Mapper::end_io`). Dirty data over a hole is a bug of the mapper or the
/// path: an error, and the folio stays dirty.
fn iomap_writepage_map_blocks(
    mapping: &AddressSpace,
    fpos: u64,
    mut off: usize,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    while off < end {
        let pos = FilePos::new(fpos + off as u64);
        let want = (end - off) as u64;
        let mut m = mapping
            .mapper
            .iomap_begin(pos, want, MapIntent::Writeback)?;
        if m.kind == ExtentKind::Delalloc {
            let len = m.end().since(pos).min(want);
            m = mapping.mapper.map_blocks(pos, len)?;
            if m.offset != pos || m.length == 0 {
                return Err(Error::InvalidArgument(format!(
                    "map_blocks at file offset {pos} returned {} bytes at {}",
                    m.length, m.offset
                )));
            }
        }
        let len = (m.end().since(pos) as usize).min(end - off);
        match m.kind {
            ExtentKind::Mapped | ExtentKind::Unwritten => runs.push(DirtyRun {
                off,
                len,
                addr: m.addr_of(pos),
            }),
            ExtentKind::Hole => return Err(mapping.unsupported_writeback(pos, "a hole")),
            ExtentKind::Delalloc => {
                return Err(mapping.unsupported_writeback(pos, "still delalloc after map_blocks"))
            }
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
