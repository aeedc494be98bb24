//! Writeback of a folio's dirty heads (`ext4_bio_write_folio`): walk the
//! ring, write only dirty mapped heads, and append to the current run while
//! the next head is the next block on disk. The engine's batcher merges the
//! runs across folios, submits them and reports back via [`clear_dirty`].

use crate::buffer_head::{BhState, BufferHead};
use crate::ring::BufferRing;
use bufwrite_engine::{AddressSpace, DirtyRun, Error, ExtentKind, FilePos, Result};
use smallvec::SmallVec;
use std::ops::Range;

/// Appends the dirty runs of heads starting below `end` (folio bytes).
/// `fpos` is the folio's file offset, for errors.
///
/// A run of consecutive dirty delayed heads is allocated with one
/// `Mapper::map_blocks` (ext4's `mpage_map_one_extent` over the extent
/// `mpage_prepare_extent_to_map` collected): each head gets its block
/// number, loses DELAY, stays MAPPED, and becomes UNWRITTEN when the
/// mapper allocated unwritten. Unwritten heads are written to their block
/// (the conversion follows the I/O, `Mapper::end_io`). A dirty head with no
/// block is a bug: an error, and the folio stays dirty.
pub(crate) fn writeback_runs(
    mapping: &AddressSpace,
    fpos: u64,
    ring: &mut BufferRing,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    let first = runs.len();
    let bs = mapping.bs();
    let mut delayed: SmallVec<[&BufferHead; 16]> = SmallVec::new();
    for bh in ring.walk() {
        let (start, stop) = bh.range();
        if start >= end {
            break;
        }
        if bh.dirty() && bh.test(BhState::DELAY) {
            delayed.push(bh);
            continue;
        }
        for r in map_delayed(mapping, fpos, &mut delayed)? {
            push_run(runs, first, r);
        }
        if !bh.dirty() {
            continue;
        }
        let pos = FilePos::new(fpos + start as u64);
        if !bh.mapped() {
            return Err(mapping.unsupported_writeback(pos, "a hole"));
        }
        push_run(
            runs,
            first,
            DirtyRun {
                off: start,
                len: stop - start,
                addr: bh.addr(bs),
            },
        );
    }
    for r in map_delayed(mapping, fpos, &mut delayed)? {
        push_run(runs, first, r);
    }
    Ok(())
}

/// Appends `r` to this folio's runs (from `first` on), merged into the last
/// one when it follows it in the folio and on the disk.
fn push_run(runs: &mut Vec<DirtyRun>, first: usize, r: DirtyRun) {
    match runs[first..].last_mut() {
        Some(last) if last.off + last.len == r.off && last.addr.add(last.len as u64) == r.addr => {
            last.len += r.len
        }
        _ => runs.push(r),
    }
}

/// Allocates the collected run of delayed heads (consecutive in the folio)
/// and returns their dirty runs; `delayed` is left empty.
fn map_delayed(
    mapping: &AddressSpace,
    fpos: u64,
    delayed: &mut SmallVec<[&BufferHead; 16]>,
) -> Result<SmallVec<[DirtyRun; 2]>> {
    let mut out = SmallVec::new();
    if delayed.is_empty() {
        return Ok(out);
    }
    let bs = mapping.bs();
    let heads: SmallVec<[&BufferHead; 16]> = delayed.drain(..).collect();
    let mut i = 0;
    while i < heads.len() {
        let off = heads[i].offset();
        let pos = FilePos::new(fpos + off as u64);
        let want = ((heads.len() - i) * bs.as_usize()) as u64;
        let m = mapping.mapper.map_blocks(pos, want)?;
        if m.offset != pos || m.length == 0 || !bs.is_aligned(m.length) {
            return Err(Error::InvalidArgument(format!(
                "map_blocks at file offset {pos} returned {} bytes at {}",
                m.length, m.offset
            )));
        }
        let bits = match m.kind {
            ExtentKind::Mapped => BhState::empty(),
            ExtentKind::Unwritten => BhState::UNWRITTEN,
            other => {
                return Err(mapping.unsupported_writeback(
                    pos,
                    &format!("{other:?} after map_blocks (not allocated)"),
                ))
            }
        };
        let n = ((m.length.min(want)) >> bs.shift()) as usize;
        for (k, bh) in heads[i..i + n].iter().enumerate() {
            let addr = m.addr.add((k * bs.as_usize()) as u64);
            let Some(block) = addr.block(bs) else {
                return Err(Error::InvalidArgument(format!(
                    "map_blocks returned device address {addr} not aligned to the block size {bs}"
                )));
            };
            bh.set_blocknr(block);
            if bits != BhState::empty() {
                bh.set(bits);
            }
            bh.clear(BhState::DELAY);
        }
        out.push(DirtyRun {
            off,
            len: n * bs.as_usize(),
            addr: m.addr,
        });
        i += n;
    }
    Ok(out)
}

/// Clears the dirty bit of the heads inside the folio byte ranges `done`
/// (ascending, disjoint), in one walk of the ring; returns true when no
/// head of the folio is left dirty.
///
/// As the kernel's `ext4_bio_write_folio`, the dirty bits go when the
/// heads are queued for I/O (the folio is unlocked during it); the engine
/// hands over all of a folio's queued runs together, so the ring is walked
/// once. A failed write marks them dirty again ([`redirty`]).
pub(crate) fn clear_dirty(ring: &mut BufferRing, done: &[Range<usize>]) -> bool {
    let mut clean = true;
    let mut ranges = done.iter().peekable();
    for bh in ring.walk() {
        let (start, end) = bh.range();
        while ranges.next_if(|r| r.end <= start).is_some() {}
        if ranges.peek().is_some_and(|r| r.start < end) {
            bh.clear(BhState::DIRTY);
        }
        clean &= !bh.dirty();
    }
    clean
}

/// Marks dirty again the heads inside folio bytes `range` whose write
/// failed, if they still hold data (mapped and uptodate: a head truncate
/// or punch discarded meanwhile stays clean).
pub(crate) fn redirty(ring: &mut BufferRing, range: Range<usize>) {
    for bh in ring.walk() {
        if !bh.outside(range.start, range.end) && bh.mapped() && bh.uptodate() {
            bh.mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one range of the list is the point
    fn clear_dirty_reports_leftovers() {
        let mut ring = BufferRing::new(4, 1024, BhState::UPTODATE | BhState::DIRTY, false);
        assert!(!clear_dirty(&mut ring, &[0..2048]));
        assert_eq!(ring.iter().filter(|bh| bh.dirty()).count(), 2);
        assert!(clear_dirty(&mut ring, &[2048..4096]));
        // Several runs in one walk; a head between them stays dirty.
        let mut ring = BufferRing::new(8, 1024, BhState::UPTODATE | BhState::DIRTY, false);
        assert!(!clear_dirty(&mut ring, &[0..1024, 2048..4096, 7168..8192]));
        let dirty: Vec<bool> = ring.iter().map(|bh| bh.dirty()).collect();
        assert_eq!(dirty, [false, true, false, false, true, true, true, false]);
        assert!(clear_dirty(&mut ring, &[1024..2048, 4096..7168]));
    }
}
