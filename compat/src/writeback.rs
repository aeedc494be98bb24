//! Writeback of a folio's dirty heads (`ext4_bio_write_folio`): walk the
//! ring, write only dirty mapped heads, and append to the current run while
//! the next head is the next block on disk. The engine's batcher merges the
//! runs across folios, submits them and reports back via [`clear_dirty`].

use crate::buffer_head::BhState;
use crate::ring::BufferRing;
use bufwrite_engine::{AddressSpace, DirtyRun, FilePos, Result};
use std::ops::Range;

/// Appends the dirty runs of heads starting below `end` (folio bytes).
/// `fpos` is the folio's file offset, for errors.
pub(crate) fn writeback_runs(
    mapping: &AddressSpace,
    fpos: u64,
    ring: &mut BufferRing,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    let first = runs.len();
    let bs = mapping.bs();
    for bh in ring.walk() {
        let (start, stop) = bh.range();
        if start >= end {
            break;
        }
        if !bh.dirty() {
            continue;
        }
        let pos = FilePos::new(fpos + start as u64);
        if !bh.mapped() {
            return Err(mapping.unsupported_writeback(pos, "a hole"));
        }
        if bh.test(BhState::DELAY) {
            return Err(mapping.unsupported_writeback(pos, "delalloc"));
        }
        if bh.test(BhState::UNWRITTEN) {
            return Err(mapping.unsupported_writeback(pos, "unwritten"));
        }
        let addr = bh.addr(bs);
        let len = stop - start;
        match runs[first..].last_mut() {
            Some(r) if r.off + r.len == start && r.addr.add(r.len as u64) == addr => r.len += len,
            _ => runs.push(DirtyRun {
                off: start,
                len,
                addr,
            }),
        }
    }
    Ok(())
}

/// Clears the dirty bit of the heads inside the folio byte ranges `done`
/// (ascending, disjoint), in one walk of the ring; returns true when no
/// head of the folio is left dirty.
///
/// The kernel clears a head's dirty bit when it queues the head for I/O
/// (`ext4_bio_write_folio`) and the completion (`end_buffer_async_write`)
/// touches only the heads that were in flight; bufwrite keeps the folio
/// locked across the I/O and clears at completion instead, so the folio's
/// completed runs are handed over together and the ring is walked once.
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
