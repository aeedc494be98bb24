//! iomap read-in: make the blocks a buffered read needs uptodate, reading
//! only the blocks that are not (one device request per disk-contiguous
//! run), zeroing holes and blocks past EOF.

use super::{ensure_state, nblocks};
use crate::error::Result;
use crate::folio::{FolioData, FolioFlags, FolioPrivate};
use crate::mapping::{ExtentKind, MapIntent};
use crate::path::Inode;

/// Makes the blocks covering folio bytes `[from, to)` uptodate.
pub(super) fn read_folio_range(
    inode: &Inode,
    folio: &mut FolioData,
    from: usize,
    to: usize,
) -> Result<()> {
    if folio.uptodate() || from >= to {
        return Ok(());
    }
    let bs = inode.bs();
    let n = nblocks(folio, bs);
    let (first, last) = (from / bs, to.div_ceil(bs).min(n));
    if n == 1 {
        read_run(inode, folio, 0, 1)?;
        folio.flags.set(FolioFlags::UPTODATE, true);
        return Ok(());
    }
    let mut b = first;
    while b < last {
        let s = ensure_state(folio, bs);
        let Some(start) = s.next_not_uptodate(b, last) else {
            break;
        };
        let end = s.next_uptodate(start, last).unwrap_or(last);
        read_run(inode, folio, start, end)?;
        if let FolioPrivate::Iomap(s) = &mut folio.private {
            if s.set_uptodate(start, end) {
                folio.flags.set(FolioFlags::UPTODATE, true);
            }
        }
        b = end;
    }
    Ok(())
}

/// Fills blocks `[start, end)` of the folio from their mappings.
fn read_run(inode: &Inode, folio: &mut FolioData, start: usize, end: usize) -> Result<()> {
    let bs = inode.bs();
    let isize = inode.size();
    let fpos = folio.pos();
    let mut off = start * bs;
    let stop = end * bs;
    while off < stop {
        let pos = fpos + off as u64;
        if pos >= isize {
            // Past EOF: zeroes, no mapping call.
            folio.data[off..stop].fill(0);
            return Ok(());
        }
        // Read whole blocks, but no further than the block holding EOF.
        let eof_block_end = (isize - fpos).div_ceil(bs as u64) * bs as u64;
        let limit = (stop as u64).min(eof_block_end) as usize;
        let m = inode
            .mapper
            .iomap_begin(pos, (limit - off) as u64, MapIntent::Read)?;
        let n = (m.end().min(fpos + limit as u64) - pos) as usize;
        let n = n.div_ceil(bs) * bs;
        let dst = &mut folio.data[off..off + n];
        match m.kind {
            ExtentKind::Mapped if !m.new => inode.read_blocks(m.addr_of(pos), dst)?,
            _ => dst.fill(0),
        }
        off += n;
    }
    Ok(())
}
