//! iomap read-in: make the blocks a buffered read needs uptodate, reading
//! only the blocks that are not (one request per disk-contiguous run, all
//! of the folio's runs in one submit), zeroing holes and blocks past EOF.

use super::{i_blocks_per_folio, ifs_alloc};
use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::folio::{FolioData, FolioFlags, FolioPrivate};
use crate::mapping::{ExtentKind, MapIntent};
use crate::read_in::ReadBatch;
use crate::units::FilePos;

/// Makes the blocks covering folio bytes `[from, to)` uptodate, for a
/// buffered read: the kernel's `iomap_read_folio` with its
/// `iomap_readpage_iter`.
///
/// Where ours differs: the kernel reads the whole folio (or a readahead
/// window) and completes asynchronously in `iomap_read_end_io`; this reads
/// only the blocks the read needs, all runs in one submit, and completes
/// before returning.
pub(super) fn iomap_read_folio(
    mapping: &AddressSpace,
    folio: &mut FolioData,
    from: usize,
    to: usize,
) -> Result<()> {
    if folio.uptodate() || from >= to {
        return Ok(());
    }
    let bsize = mapping.bs();
    let bs = bsize.as_usize();
    let n = i_blocks_per_folio(folio, bsize);
    let (first, last) = if n == 1 {
        (0, 1)
    } else {
        (from >> bsize.shift(), to.div_ceil(bs).min(n))
    };
    // Which blocks to fill, as runs of blocks not yet uptodate.
    let mut todo: smallvec::SmallVec<[(usize, usize); 4]> = smallvec::SmallVec::new();
    if n == 1 {
        todo.push((0, 1));
    } else {
        let s = ifs_alloc(folio, bsize);
        let mut b = first;
        while let Some(start) = s.next_not_uptodate(b, last) {
            let end = s.next_uptodate(start, last).unwrap_or(last);
            todo.push((start, end));
            b = end;
        }
    }
    let mut batch = ReadBatch::merging();
    for &(start, end) in &todo {
        // Mapping failed part-way: nothing was read, nothing changes state.
        iomap_readpage_iter(mapping, folio, start * bs, end * bs, &mut batch)?;
    }
    let outcome = batch.submit(mapping.device.as_ref(), &mut folio.data);
    for &(start, end) in &todo {
        if outcome.failed.is_empty() {
            mark_uptodate(folio, start, end);
            continue;
        }
        // A block is uptodate unless the read covering it failed.
        for b in (start..end).filter(|b| outcome.read_ok(b * bs)) {
            mark_uptodate(folio, b, b + 1);
        }
    }
    outcome.result()
}

fn mark_uptodate(folio: &mut FolioData, start: usize, end: usize) {
    match &mut folio.private {
        FolioPrivate::Iomap(s) => {
            if s.set_uptodate(start, end) {
                folio.flags.set(FolioFlags::UPTODATE, true);
            }
        }
        _ => folio.flags.set(FolioFlags::UPTODATE, true),
    }
}

/// `iomap_readpage_iter`: queues the reads of folio bytes `[off, stop)`
/// from their mappings (one extent per round), and zeroes what has nothing
/// on disk (holes, unwritten, past EOF: `folio_zero_range`).
fn iomap_readpage_iter(
    mapping: &AddressSpace,
    folio: &mut FolioData,
    mut off: usize,
    stop: usize,
    batch: &mut ReadBatch,
) -> Result<()> {
    let bs = mapping.bs();
    let isize = mapping.size();
    let fpos = folio.pos();
    while off < stop {
        let pos = FilePos::new(fpos + off as u64);
        if pos.get() >= isize {
            // Past EOF: zeroes, no mapping call.
            folio.data[off..stop].fill(0);
            return Ok(());
        }
        // Read whole blocks, but no further than the block holding EOF.
        let eof_block_end = bs.round_up(isize - fpos);
        let limit = (stop as u64).min(eof_block_end) as usize;
        let m = mapping
            .mapper
            .iomap_begin(pos, (limit - off) as u64, MapIntent::Read)?;
        let n = (m.end().get().min(fpos + limit as u64) - pos.get()) as usize;
        let n = bs.round_up(n as u64) as usize;
        match m.kind {
            ExtentKind::Mapped if !m.new => batch.add(off, n, m.addr_of(pos)),
            _ => folio.data[off..off + n].fill(0),
        }
        off += n;
    }
    Ok(())
}
