//! Writeback of a folio's dirty heads (`ext4_bio_write_folio`): walk the
//! ring, write only dirty mapped heads, and append to the current run while
//! the next head is the next block on disk. The engine's batcher merges the
//! runs across folios, submits them and reports back via [`clear_dirty`].

use crate::buffer_head::BhState;
use crate::ring::BufferRing;
use bufwrite_engine::{DirtyRun, Inode, Result};

/// Appends the dirty runs of heads starting below `end` (folio bytes).
/// `fpos` is the folio's file offset, for errors.
pub(crate) fn writeback_runs(
    inode: &Inode,
    fpos: u64,
    ring: &mut BufferRing,
    end: usize,
    runs: &mut Vec<DirtyRun>,
) -> Result<()> {
    let first = runs.len();
    for bh in ring.walk() {
        let (start, stop) = bh.range();
        if start >= end {
            break;
        }
        if !bh.dirty() {
            continue;
        }
        let pos = fpos + start as u64;
        if !bh.mapped() {
            return Err(inode.unsupported_writeback(pos, "a hole"));
        }
        if bh.state.contains(BhState::DELAY) {
            return Err(inode.unsupported_writeback(pos, "delalloc"));
        }
        if bh.state.contains(BhState::UNWRITTEN) {
            return Err(inode.unsupported_writeback(pos, "unwritten"));
        }
        let addr = bh.addr();
        let len = stop - start;
        match runs[first..].last_mut() {
            Some(r) if r.off + r.len == start && r.addr + r.len as u64 == addr => r.len += len,
            _ => runs.push(DirtyRun {
                off: start,
                len,
                addr,
            }),
        }
    }
    Ok(())
}

/// Clears the dirty bit of the heads inside folio bytes `[from, to)`;
/// returns true when no head of the folio is left dirty.
pub(crate) fn clear_dirty(ring: &mut BufferRing, from: usize, to: usize) -> bool {
    let mut clean = true;
    for bh in ring.walk() {
        if !bh.outside(from, to) {
            bh.state.remove(BhState::DIRTY);
        }
        clean &= !bh.dirty();
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_dirty_reports_leftovers() {
        let mut ring = BufferRing::new(4, 1024, BhState::UPTODATE | BhState::DIRTY, false);
        assert!(!clear_dirty(&mut ring, 0, 2048));
        assert_eq!(ring.iter().filter(|bh| bh.dirty()).count(), 2);
        assert!(clear_dirty(&mut ring, 2048, 4096));
    }
}
