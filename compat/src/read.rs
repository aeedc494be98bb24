//! Read-in for buffered reads (`block_read_full_folio`): per head, skip
//! the uptodate ones, map the unmapped ones, zero holes, unwritten blocks
//! and blocks past EOF, read the rest. Heads that follow each other on disk
//! share one device request, as ext4's own read path builds one bio for a
//! contiguous folio.

use crate::buffer_head::BhState;
use crate::ring::BufferRing;
use crate::{ensure_ring, ring_and_data, Mode};
use bufwrite_engine::{Error, FolioData, FolioFlags, Inode, IoRequest, Result};

/// A disk-contiguous run of heads to read: folio offset, length, address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadRun {
    off: usize,
    len: usize,
    addr: u64,
}

/// Makes the heads covering folio bytes `[from, to)` uptodate, and the
/// folio uptodate when every head is.
pub(crate) fn read_folio_range(
    mode: Mode,
    inode: &Inode,
    folio: &mut FolioData,
    from: usize,
    to: usize,
) -> Result<()> {
    if folio.uptodate() || from >= to {
        return Ok(());
    }
    let (fpos, isize) = (folio.pos(), inode.size());
    ensure_ring(folio, inode.bs(), mode == Mode::SeekToFrom)?;
    let Some((ring, data)) = ring_and_data(folio) else {
        return Ok(());
    };
    let mut runs: Vec<ReadRun> = Vec::new();
    let mut res = queue_reads(inode, ring, data, fpos, isize, from, to, &mut runs);
    let failed = if res.is_ok() {
        let (failed, r) = submit(inode, data, &runs);
        res = r;
        failed
    } else {
        // Mapping failed part-way: nothing queued was read.
        runs.clone()
    };
    if complete_reads(ring, &failed) {
        folio.flags.set(FolioFlags::UPTODATE, true);
    }
    res
}

/// Walks the ring: zeroes what reads as zero, marks the heads to read
/// ASYNC_READ and queues them as disk-contiguous runs.
#[allow(clippy::too_many_arguments)]
fn queue_reads(
    inode: &Inode,
    ring: &mut BufferRing,
    data: &mut [u8],
    fpos: u64,
    isize: u64,
    from: usize,
    to: usize,
    runs: &mut Vec<ReadRun>,
) -> Result<()> {
    for bh in ring.walk() {
        if bh.uptodate() || bh.outside(from, to) {
            continue;
        }
        let (start, end) = bh.range();
        let block_pos = fpos + start as u64;
        // Past EOF: zeroes, and no mapping call.
        if block_pos < isize && !bh.mapped() {
            let m = inode
                .mapper
                .get_block(block_pos / u64::from(bh.size), false)?;
            bh.map(&m)?;
        }
        if block_pos >= isize || bh.reads_as_zero() {
            data[start..end].fill(0);
            bh.state.insert(BhState::UPTODATE);
            continue;
        }
        bh.state.insert(BhState::ASYNC_READ | BhState::REQ);
        let addr = bh.addr();
        match runs.last_mut() {
            Some(r) if r.off + r.len == start && r.addr + r.len as u64 == addr => {
                r.len += end - start
            }
            _ => runs.push(ReadRun {
                off: start,
                len: end - start,
                addr,
            }),
        }
    }
    Ok(())
}

/// Reads every run in one batch; returns the runs that failed and the
/// first error.
fn submit(inode: &Inode, data: &mut [u8], runs: &[ReadRun]) -> (Vec<ReadRun>, Result<()>) {
    if runs.is_empty() {
        return (Vec::new(), Ok(()));
    }
    let mut reqs = Vec::with_capacity(runs.len());
    let mut rest = data;
    let mut base = 0;
    // Runs are in folio order and disjoint: carve each one's buffer off the
    // front of what is left.
    for r in runs {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.off - base);
        let (buf, tail) = tail.split_at_mut(r.len);
        reqs.push(IoRequest::read(r.addr, buf));
        rest = tail;
        base = r.off + r.len;
    }
    inode.device.submit(&mut reqs);
    let mut failed = Vec::new();
    let mut first: Option<Error> = None;
    for (req, r) in reqs.iter_mut().zip(runs) {
        if let Err(e) = req.take_result() {
            failed.push(*r);
            first.get_or_insert(e);
        }
    }
    (failed, first.map_or(Ok(()), Err))
}

/// The read completion (`end_buffer_async_read`): heads in flight become
/// uptodate unless their run failed. Returns true when every head is
/// uptodate.
fn complete_reads(ring: &mut BufferRing, failed: &[ReadRun]) -> bool {
    let mut all = true;
    for bh in ring.walk() {
        if bh.state.contains(BhState::ASYNC_READ) {
            bh.state.remove(BhState::ASYNC_READ);
            let (start, _) = bh.range();
            let bad = failed
                .iter()
                .any(|r| (r.off..r.off + r.len).contains(&start));
            if !bad {
                bh.state.insert(BhState::UPTODATE);
            }
        }
        all &= bh.uptodate();
    }
    all
}
