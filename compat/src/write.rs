//! write_begin and commit over the buffer ring, in the three modes, named
//! as fs/buffer.c names them: `__block_write_begin_int` (ext4's copy of it
//! is `ext4_block_write_begin`), `folio_zero_new_buffers`,
//! `block_write_end` and `block_commit_write`.

use crate::buffer_head::{BhState, BufferHead};
use crate::ring::BufferRing;
use crate::{create_empty_buffers, ring_and_data, Mode};
use bufwrite_engine::read_in::{ReadBatch, ReadOutcome};
use bufwrite_engine::{AddressSpace, BlockSize, Error, FilePos, FolioData, FolioFlags, Result};
use smallvec::SmallVec;

/// Where one walk starts, and whether it may stop once past the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    stop_after_to: bool,
}

/// The walk a mode does over folio bytes starting at `from`.
///
/// `uptodate_on_entry` must be the folio flag sampled once when the
/// operation began. Skipping heads is only sound because an uptodate folio
/// guarantees that every head outside the written range is already
/// uptodate and needs nothing: that is a statement about the state before
/// this operation touched anything. Re-reading the flag later could see it
/// turn on part-way (commit's own discovery, or the read-in of an edge
/// block completing the folio) and stop a walk that began as a
/// not-uptodate walk, so the prefix would have been treated one way and the
/// tail skipped as if the other: the not-uptodate work (partial-block
/// reads, New-block zeroing, the partial scan that decides whether the
/// folio is now uptodate) would be half done. One sample keeps every head's
/// treatment and the stop condition consistent.
fn span(mode: Mode, uptodate_on_entry: bool, from: usize, bs: BlockSize) -> Span {
    let full = Span {
        start: 0,
        stop_after_to: false,
    };
    match mode {
        Mode::Legacy => full,
        // Not uptodate: the walk must see every head (reads, zeroing, the
        // partial scan); only the uptodate case is trimmed.
        _ if !uptodate_on_entry => full,
        Mode::TailSkip => Span {
            start: 0,
            stop_after_to: true,
        },
        Mode::SeekToFrom => Span {
            start: from >> bs.shift(),
            stop_after_to: true,
        },
    }
}

/// `__block_write_begin_int` (fs/buffer.c; ext4 calls its own copy,
/// `ext4_block_write_begin`, fs/ext4/inode.c): prepares folio bytes
/// `[from, to)` for the copy. Attaches the ring if the folio has none
/// ([`create_empty_buffers`]), maps unmapped heads in the range with
/// get_block, zeroes the uncovered parts of New blocks, and reads the
/// partial edge heads, all reads submitted before any is waited on (the
/// kernel's `wait[]` array). Returns the heads the walk visited and the
/// outcome; on error the New blocks in the range are zeroed
/// ([`folio_zero_new_buffers`]: they must never expose stale bytes).
///
/// Where ours differs: the walk's shape comes from the [`Mode`] (Legacy is
/// the kernel before the tail-skip patches, TailSkip the kernel after
/// them, SeekToFrom an experiment); there is no `iomap` argument (the
/// kernel's iomap-to-bh bridge, `iomap_to_bh`, is not modelled), and the
/// reads are one [`ReadBatch`] submit instead of one bio per head.
pub(crate) fn __block_write_begin_int(
    mode: Mode,
    mapping: &AddressSpace,
    folio: &mut FolioData,
    from: usize,
    to: usize,
    isize: u64,
) -> (usize, Result<()>) {
    let bs = mapping.bs();
    let up = folio.uptodate();
    let ctx = Ctx {
        mapping,
        fpos: folio.pos(),
        isize,
        from,
        to,
        up,
    };
    if let Err(e) = create_empty_buffers(folio, bs, mode == Mode::SeekToFrom) {
        return (0, Err(e));
    }
    let Some((ring, data)) = ring_and_data(folio) else {
        return (0, Err(no_ring()));
    };
    let span = span(mode, up, from, bs);
    let mut visited = 0;
    let mut res = Ok(());
    // The partial blocks to read (at most the two edge heads), submitted
    // together after the walk and waited on, as `__block_write_begin_int`
    // collects them in its `wait[]` array.
    let mut wait: SmallVec<[&BufferHead; 2]> = SmallVec::new();
    let mut reads = ReadBatch::per_run();
    // Block bounds come from a running offset, as the kernel's loop keeps
    // block_start / block_end in registers: per head the walk reads only
    // the state word and the link.
    let first = span.start.min(ring.len() - 1);
    let bsz = bs.as_usize();
    let mut block_start = first * bsz;
    for bh in ring.walk_from(first) {
        visited += 1;
        let block_end = block_start + bsz;
        let outside = block_end <= from || block_start >= to;
        let stop = span.stop_after_to && block_end >= to;
        block_start = block_end;
        if outside {
            // ext4_block_write_begin: a head outside the range of an
            // uptodate folio gets set_buffer_uptodate, which for a head
            // that already is costs one load.
            if up {
                bh.set_uptodate();
            }
            if stop {
                break;
            }
            continue;
        }
        match ctx.prepare(bh, data) {
            Ok(false) => {}
            Ok(true) => {
                reads.add(bh.offset(), bh.size(), bh.addr(bs));
                wait.push(bh);
            }
            Err(e) => {
                res = Err(e);
                break;
            }
        }
        if stop {
            break;
        }
    }
    if wait.is_empty() {
        drop(wait);
    } else {
        let outcome = if res.is_ok() {
            reads.submit(mapping.device.as_ref(), data)
        } else {
            ReadOutcome::default()
        };
        for bh in wait {
            // end_buffer_read_sync: uptodate on success, unlock, put_bh.
            if res.is_ok() && outcome.read_ok(bh.offset()) {
                bh.set_uptodate();
            }
            bh.clear(BhState::LOCK);
            bh.put();
        }
        if res.is_ok() {
            res = outcome.result();
        }
    }
    if res.is_err() {
        release_reserved(mapping, ring, ctx.fpos, from, to);
    }
    if res.is_err() && folio_zero_new_buffers(ring, data, from, to) {
        mapping.mark_folio_dirty(folio);
    }
    (visited, res)
}

/// A failed write_begin gives back what this call reserved
/// (ext4_truncate_failed_write, for the delalloc blocks of the range): the
/// heads in `[from, to)` that are delayed but not dirty got their
/// reservation from this call (a committed write's delayed head is dirty
/// until writeback allocates it). Their reservations go back to the mapper
/// (`Mapper::release_delalloc`, one call per run of blocks) and the heads
/// become holes again, their uptodate state (and bytes) as they were.
fn release_reserved(
    mapping: &AddressSpace,
    ring: &mut BufferRing,
    fpos: u64,
    from: usize,
    to: usize,
) {
    let mut run: Option<(usize, usize)> = None;
    let release = |(s, e): (usize, usize)| {
        mapping
            .mapper
            .release_delalloc(FilePos::new(fpos + s as u64), (e - s) as u64);
    };
    for bh in ring.walk() {
        let ours = !bh.outside(from, to) && bh.test(BhState::DELAY) && !bh.dirty();
        if !ours {
            if let Some(r) = run.take() {
                release(r);
            }
            continue;
        }
        bh.clear(BhState::MAPPED | BhState::DELAY | BhState::NEW);
        let (s, e) = bh.range();
        run = match run {
            Some((rs, re)) if re == s => Some((rs, e)),
            Some(r) => {
                release(r);
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some(r) = run {
        release(r);
    }
}

fn no_ring() -> Error {
    Error::InvalidArgument("folio has no buffer ring after write_begin".into())
}

/// What every head of one write_begin walk needs to know.
struct Ctx<'a> {
    mapping: &'a AddressSpace,
    fpos: u64,
    isize: u64,
    from: usize,
    to: usize,
    up: bool,
}

impl Ctx<'_> {
    /// One head inside the written range: map it, then make its bytes the
    /// copy will not cover valid (zero a new block's). Returns true when the
    /// block is partly written and must be read first: the caller queues it
    /// (the head is left locked for that read).
    fn prepare(&self, bh: &BufferHead, data: &mut [u8]) -> Result<bool> {
        // A New bit left by a failed write is stale (ext4 warns once and
        // clears it: a test, and the clear only when set).
        if bh.test(BhState::NEW) {
            bh.clear(BhState::NEW);
        }
        let (start, end) = bh.range();
        let block_pos = self.fpos + start as u64;
        if !bh.mapped() {
            // The block size is loaded here, off the hot path, rather
            // than carried in Ctx (one more field to fill per write).
            let bs = self.mapping.bs();
            let m = self
                .mapping
                .mapper
                .get_block(FilePos::new(block_pos).block(bs), true)?;
            bh.map(&m, bs)?;
        }
        if self.up {
            bh.set_uptodate();
            return Ok(false);
        }
        if bh.uptodate() {
            return Ok(false);
        }
        if bh.reads_as_zero() || block_pos >= self.isize {
            // Nothing valid on disk: zero what the copy will not fill. The
            // block becomes uptodate only at commit, after the copy.
            bh.set(BhState::NEW);
            let (lo, hi) = (self.from.max(start), self.to.min(end));
            data[start..lo].fill(0);
            data[hi..end].fill(0);
            return Ok(false);
        }
        if self.from > start || self.to < end {
            // Only the first and last block of a write can get here.
            // ext4_read_bh_lock: lock the head, take a reference for the
            // I/O, mark it submitted.
            bh.set(BhState::LOCK);
            bh.get();
            bh.set(BhState::REQ);
            return Ok(true);
        }
        Ok(false)
    }
}

/// `folio_zero_new_buffers`: New blocks overlapping `[from, to)` get that
/// part zeroed (the rest was zeroed by write_begin) and become uptodate and
/// dirty, so a block allocated for a write that did not happen holds zeroes,
/// not stale disk bytes. Returns true when it dirtied a head.
fn folio_zero_new_buffers(ring: &mut BufferRing, data: &mut [u8], from: usize, to: usize) -> bool {
    if from >= to {
        return false;
    }
    let mut dirtied = false;
    for bh in ring.walk() {
        if !bh.test(BhState::NEW) || bh.outside(from, to) {
            continue;
        }
        let (start, end) = bh.range();
        if !bh.uptodate() {
            data[from.max(start)..to.min(end)].fill(0);
            bh.set_uptodate();
        }
        bh.clear(BhState::NEW);
        bh.mark_dirty();
        dirtied = true;
    }
    dirtied
}

/// `block_write_end` (fs/buffer.c): a short copy into a folio that is not
/// uptodate is rejected whole (its New blocks zeroed,
/// [`folio_zero_new_buffers`]); then [`block_commit_write`]. Returns the
/// bytes accepted and the heads commit visited.
///
/// Where ours differs: the kernel's `block_write_end` leaves the folio's
/// dirtying to `block_commit_write` through `mark_buffer_dirty`; here the
/// folio is dirtied once at the end (`AddressSpace::mark_folio_dirty`),
/// and i_size is moved by the caller (`generic_perform_write`), as
/// `generic_write_end` does.
pub(crate) fn block_write_end(
    mode: Mode,
    mapping: &AddressSpace,
    folio: &mut FolioData,
    from: usize,
    len: usize,
    copied: usize,
) -> (usize, usize) {
    let bs = mapping.bs();
    let up = folio.uptodate();
    let Some((ring, data)) = ring_and_data(folio) else {
        return (0, 0);
    };
    let mut copied = copied;
    let mut dirtied = false;
    if copied < len {
        if !up {
            copied = 0;
        }
        dirtied = folio_zero_new_buffers(ring, data, from + copied, from + len);
    }
    let c = block_commit_write(ring, span(mode, up, from, bs), from, from + copied);
    if !c.partial {
        folio.flags.set(FolioFlags::UPTODATE, true);
    }
    if dirtied || copied > 0 {
        mapping.mark_folio_dirty(folio);
    }
    (copied, c.visited)
}

/// What a commit walk found.
struct Commit {
    visited: usize,
    partial: bool,
}

/// `block_commit_write`: written heads become uptodate and dirty; a head
/// outside the range that is not uptodate means the folio is not uptodate
/// yet. The walk shape comes from the mode (the upstream patch 1/2 for
/// TailSkip: stop once past `to` when the folio was uptodate on entry).
///
/// Per head it does what Linux 6.18's loop does: outside the range one
/// `buffer_uptodate` load; inside, `set_buffer_uptodate` and
/// `mark_buffer_dirty`; then `buffer_new`, and `clear_buffer_new` only when
/// it is set.
fn block_commit_write(ring: &mut BufferRing, span: Span, from: usize, to: usize) -> Commit {
    let mut c = Commit {
        visited: 0,
        partial: false,
    };
    let bs = ring.block_size() as usize;
    let first = span.start.min(ring.len() - 1);
    let mut block_start = first * bs;
    for bh in ring.walk_from(first) {
        c.visited += 1;
        let block_end = block_start + bs;
        if block_end <= from || block_start >= to {
            c.partial |= !bh.uptodate();
        } else {
            bh.set_uptodate();
            bh.mark_dirty();
        }
        if bh.test(BhState::NEW) {
            bh.clear(BhState::NEW);
        }
        block_start = block_end;
        if span.stop_after_to && block_start >= to {
            break;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_per_mode() {
        let full = Span {
            start: 0,
            stop_after_to: false,
        };
        let k4 = BlockSize::new(4096).unwrap();
        for m in Mode::ALL {
            assert_eq!(span(m, false, 8192, k4), full);
        }
        assert_eq!(span(Mode::Legacy, true, 8192, k4), full);
        assert_eq!(span(Mode::TailSkip, true, 8192, k4).start, 0);
        assert_eq!(span(Mode::SeekToFrom, true, 8192, k4).start, 2);
        assert!(span(Mode::SeekToFrom, true, 8192, k4).stop_after_to);
    }

    #[test]
    fn commit_discovers_uptodate_only_on_a_full_walk() {
        let mut ring = BufferRing::new(4, 1024, BhState::empty(), false);
        let k1 = BlockSize::new(1024).unwrap();
        let full = span(Mode::TailSkip, false, 0, k1);
        let c = block_commit_write(&mut ring, full, 0, 2048);
        assert_eq!((c.visited, c.partial), (4, true));
        let c = block_commit_write(&mut ring, full, 2048, 4096);
        assert_eq!((c.visited, c.partial), (4, false));
        assert!(ring.iter().all(|bh| bh.uptodate() && bh.dirty()));
        let c = block_commit_write(&mut ring, span(Mode::TailSkip, true, 0, k1), 0, 100);
        assert_eq!(c.visited, 1);
    }

    #[test]
    fn zero_new_buffers_zeroes_and_dirties() {
        let mut ring = BufferRing::new(2, 1024, BhState::empty(), false);
        let mut data = vec![9u8; 2048];
        if let Some(bh) = ring.walk_from(1).next() {
            bh.set(BhState::NEW | BhState::MAPPED);
        }
        assert!(folio_zero_new_buffers(&mut ring, &mut data, 1500, 2048));
        assert!(data[1500..].iter().all(|&b| b == 0));
        assert_eq!(data[1499], 9);
        let states: Vec<bool> = ring.iter().map(|bh| bh.dirty() && bh.uptodate()).collect();
        assert_eq!(states, vec![false, true]);
        assert!(!folio_zero_new_buffers(&mut ring, &mut data, 0, 0));
    }
}
