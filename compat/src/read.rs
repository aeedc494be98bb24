//! Read-in for buffered reads (`block_read_full_folio`): per head, skip
//! the uptodate ones, map the unmapped ones, zero holes, unwritten blocks
//! and blocks past EOF, read the rest. Heads that follow each other on disk
//! share one device request, as ext4's own read path builds one bio for a
//! contiguous folio; the requests go out through the engine's
//! [`ReadBatch`], the read-in mechanism the iomap path uses too.

use crate::buffer_head::BhState;
use crate::ring::BufferRing;
use crate::{create_empty_buffers, ring_and_data, Mode};
use bufwrite_engine::read_in::{ReadBatch, ReadOutcome};
use bufwrite_engine::{AddressSpace, FilePos, FolioData, FolioFlags, Result};

/// `block_read_full_folio` (fs/buffer.c): makes the heads covering folio
/// bytes `[from, to)` uptodate, and the folio uptodate when every head is.
///
/// Where ours differs: the kernel reads every head of the folio that is
/// not uptodate, one bio per head, and completes asynchronously
/// (`end_buffer_async_read`); this reads only the heads in `[from, to)`,
/// joins disk-contiguous heads into one request (as ext4's
/// `ext4_mpage_readpages` does for a contiguous folio) and completes in
/// [`complete_reads`] before returning.
pub(crate) fn block_read_full_folio(
    mode: Mode,
    mapping: &AddressSpace,
    folio: &mut FolioData,
    from: usize,
    to: usize,
) -> Result<()> {
    if folio.uptodate() || from >= to {
        return Ok(());
    }
    let (fpos, isize) = (folio.pos(), mapping.size());
    create_empty_buffers(folio, mapping.bs(), mode == Mode::SeekToFrom)?;
    let Some((ring, data)) = ring_and_data(folio) else {
        return Ok(());
    };
    let mut batch = ReadBatch::merging();
    let queued = queue_reads(mapping, ring, data, fpos, isize, from, to, &mut batch);
    let outcome = match queued {
        Ok(()) => batch.submit(mapping.device.as_ref(), data),
        // Mapping failed part-way: nothing queued was read.
        Err(e) => ReadOutcome {
            failed: batch.runs().iter().copied().collect(),
            error: Some(e),
        },
    };
    if complete_reads(ring, &outcome) {
        folio.flags.set(FolioFlags::UPTODATE, true);
    }
    outcome.result()
}

/// Walks the ring: zeroes what reads as zero, marks the heads to read
/// ASYNC_READ and queues them as disk-contiguous runs.
#[allow(clippy::too_many_arguments)]
fn queue_reads(
    mapping: &AddressSpace,
    ring: &mut BufferRing,
    data: &mut [u8],
    fpos: u64,
    isize: u64,
    from: usize,
    to: usize,
    batch: &mut ReadBatch,
) -> Result<()> {
    let bs = mapping.bs();
    for bh in ring.walk() {
        if bh.uptodate() || bh.outside(from, to) {
            continue;
        }
        let (start, end) = bh.range();
        let block_pos = fpos + start as u64;
        // Past EOF: zeroes, and no mapping call.
        if block_pos < isize && !bh.mapped() {
            let m = mapping
                .mapper
                .get_block(FilePos::new(block_pos).block(bs), false)?;
            bh.map(&m, bs)?;
        }
        if block_pos >= isize || bh.reads_as_zero() {
            data[start..end].fill(0);
            bh.set_uptodate();
            continue;
        }
        // block_read_full_folio: lock the head, mark it under async read;
        // submission takes a reference and marks it submitted.
        bh.set(BhState::LOCK);
        bh.set(BhState::ASYNC_READ);
        bh.get();
        bh.set(BhState::REQ);
        batch.add(start, end - start, bh.addr(bs));
    }
    Ok(())
}

/// The read completion (`end_buffer_async_read`): heads in flight become
/// uptodate unless their run failed. Returns true when every head is
/// uptodate.
fn complete_reads(ring: &mut BufferRing, outcome: &ReadOutcome) -> bool {
    let mut all = true;
    for bh in ring.walk() {
        if bh.test(BhState::ASYNC_READ) {
            if outcome.read_ok(bh.offset()) {
                bh.set_uptodate();
            }
            bh.clear(BhState::ASYNC_READ);
            bh.clear(BhState::LOCK);
            bh.put();
        }
        all &= bh.uptodate();
    }
    all
}
