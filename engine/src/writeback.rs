//! Writeback: dirty folios in index order, dirty runs merged into device
//! I/Os, then a flush. Shared by every write path.
//!
//! Folios are taken a window at a time and stay locked until their I/O has
//! completed, so a run of dirty blocks that continues into the next folio,
//! and is contiguous on disk, goes out as one request gathering both
//! folios' memory (no copy). On an error the folios whose I/O failed stay
//! dirty; the first error is returned with its file offset, and the next
//! writeback retries them.

use crate::address_space::AddressSpace;
use crate::device::IoRequest;
use crate::error::{Error, Result};
use crate::folio::{FolioFlags, FolioGuard};
use crate::units::DevAddr;
use crate::write_path::{DirtyRun, WritePath};
use smallvec::SmallVec;
use std::sync::Arc;

/// Largest single writeback I/O.
pub const MAX_IO_BYTES: usize = 1 << 20;
/// Most folios locked at once by one writeback window.
const WINDOW_FOLIOS: usize = 64;

/// A planned device write: runs `[first, last]` of the window, in order.
struct PlannedIo {
    addr: DevAddr,
    len: usize,
    runs: std::ops::Range<usize>,
}

/// Writes back every dirty folio of `mapping` through `write_path`, flushes
/// the device, then reports the completed ranges to the mapper
/// (`Mapper::end_io`: unwritten conversion and on-disk size, only once the
/// data is durable). Returns the first error (with its file offset);
/// nothing that failed is marked clean, and a range whose write failed gets
/// no end_io.
pub fn write_back(mapping: &AddressSpace, write_path: &dyn WritePath) -> Result<()> {
    let folios = mapping.cache.dirty_folios();
    let mut first_err: Option<Error> = None;
    let mut written: Vec<std::ops::Range<u64>> = Vec::new();
    for window in folios.chunks(WINDOW_FOLIOS) {
        if let Err(e) = write_window(mapping, write_path, window, &mut written) {
            first_err.get_or_insert(e);
        }
    }
    // What did reach the device is clean now and will not be written again:
    // its completion waits, across a failed pass, for the next flush that
    // succeeds (a failed pass flushes nothing, as before).
    mapping.add_pending_end_io(written);
    if let Some(e) = first_err {
        return Err(e);
    }
    mapping.device.flush()?;
    mapping.complete_pending_io()
}

fn write_window(
    mapping: &AddressSpace,
    write_path: &dyn WritePath,
    window: &[Arc<crate::Folio>],
    written: &mut Vec<std::ops::Range<u64>>,
) -> Result<()> {
    let mut guards: Vec<FolioGuard<'_>> = window.iter().map(|f| f.lock()).collect();
    // i_size only after the folios are locked: a writer moves it before
    // unlocking the folio it wrote, so this value is current for them.
    let isize = mapping.size();
    let mut first_err: Option<Error> = None;
    let mut runs: Vec<(usize, DirtyRun)> = Vec::new();
    // Per folio: the byte ranges whose dirty state goes once this pass is
    // done (its written runs, and what lies past the EOF block), cleared in
    // one call per folio.
    let mut done: Vec<Done> = guards.iter().map(|_| Done::default()).collect();
    let mut scratch = Vec::new();
    for (gi, g) in guards.iter_mut().enumerate() {
        if !g.dirty() {
            continue;
        }
        match collect_runs(mapping, write_path, g, isize, &mut scratch, &mut done[gi]) {
            Ok(()) => runs.extend(scratch.drain(..).map(|r| (gi, r))),
            Err(e) => {
                // Runs mapped before the failure belong to this folio, which
                // stays dirty as a whole: they must not be credited to the
                // next folio (its memory would go to this folio's blocks).
                scratch.clear();
                done[gi] = Done::default();
                g.flags.set(FolioFlags::ERROR, true);
                first_err.get_or_insert(e);
            }
        }
    }
    let plan = plan_ios(&guards, &runs);
    let results = submit(mapping, &guards, &runs, &plan);
    for (io, res) in plan.iter().zip(results) {
        match res {
            Ok(()) => {
                for (gi, run) in &runs[io.runs.clone()] {
                    done[*gi].ranges.push(run.off..run.off + run.len);
                }
                // One I/O is one contiguous file range (plan_ios merges
                // only runs that follow each other in the file).
                let (gi, run) = &runs[io.runs.start];
                let start = guards[*gi].pos() + run.off as u64;
                written.push(start..start + io.len as u64);
            }
            Err(e) => {
                for (gi, _) in &runs[io.runs.clone()] {
                    done[*gi].failed = true;
                    guards[*gi].flags.set(FolioFlags::ERROR, true);
                }
                let (gi, run) = &runs[io.runs.start];
                first_err.get_or_insert(Error::Writeback {
                    file_offset: guards[*gi].pos() + run.off as u64,
                    source: Box::new(e),
                });
            }
        }
    }
    for (g, d) in guards.iter_mut().zip(&mut done) {
        if d.ranges.is_empty() {
            continue;
        }
        // Runs complete in device order, the EOF tail was added first:
        // the paths want them in folio order.
        d.ranges.sort_unstable_by_key(|r| r.start);
        if write_path.clear_dirty(g, &d.ranges) && !d.failed {
            finish_clean(mapping, g);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// What one writeback pass finished of one folio.
#[derive(Default)]
struct Done {
    /// Folio byte ranges whose dirty state can go.
    ranges: SmallVec<[std::ops::Range<usize>; 4]>,
    /// Some run of the folio failed: it stays dirty.
    failed: bool,
}

/// The dirty runs of one locked folio, after EOF handling: a folio wholly
/// past EOF has nothing to write and is clean; one straddling EOF has its
/// bytes past EOF zeroed, and its dirty state past the EOF block goes into
/// `done` (DESIGN.md §4 R5: whole-folio dirtying marks it too).
fn collect_runs(
    mapping: &AddressSpace,
    write_path: &dyn WritePath,
    g: &mut FolioGuard<'_>,
    isize: u64,
    runs: &mut Vec<DirtyRun>,
    done: &mut Done,
) -> Result<()> {
    let pos = g.pos();
    let size = g.size();
    if pos >= isize {
        write_path.clear_dirty(g, std::slice::from_ref(&(0..size)));
        finish_clean(mapping, g);
        return Ok(());
    }
    let valid = usize::try_from(isize - pos).map_or(size, |v| v.min(size));
    let end = mapping.bs().round_up(valid as u64) as usize;
    if valid < size {
        g.data[valid..].fill(0);
    }
    write_path.writeback_runs(mapping, g, end, runs)?;
    if end < size {
        done.ranges.push(end..size);
    }
    Ok(())
}

fn finish_clean(mapping: &AddressSpace, g: &mut FolioGuard<'_>) {
    g.flags.set(FolioFlags::DIRTY, false);
    g.flags.set(FolioFlags::ERROR, false);
    mapping.cache.clear_dirty(g.index);
}

/// Merges runs that follow each other in the file and on the disk into
/// I/Os of at most [`MAX_IO_BYTES`].
fn plan_ios(guards: &[FolioGuard<'_>], runs: &[(usize, DirtyRun)]) -> Vec<PlannedIo> {
    let mut plan: Vec<PlannedIo> = Vec::new();
    let file_end = |(gi, r): &(usize, DirtyRun)| guards[*gi].pos() + (r.off + r.len) as u64;
    let file_start = |(gi, r): &(usize, DirtyRun)| guards[*gi].pos() + r.off as u64;
    for (i, run) in runs.iter().enumerate() {
        let r = run.1;
        if let Some(last) = plan.last_mut() {
            let prev = &runs[last.runs.end - 1];
            let contiguous = last.addr.add(last.len as u64) == r.addr
                && file_end(prev) == file_start(run)
                && last.len + r.len <= MAX_IO_BYTES;
            if contiguous {
                last.len += r.len;
                last.runs.end = i + 1;
                continue;
            }
        }
        plan.push(PlannedIo {
            addr: r.addr,
            len: r.len,
            runs: i..i + 1,
        });
    }
    plan
}

fn submit(
    mapping: &AddressSpace,
    guards: &[FolioGuard<'_>],
    runs: &[(usize, DirtyRun)],
    plan: &[PlannedIo],
) -> Vec<Result<()>> {
    let mut reqs: Vec<IoRequest<'_>> = plan
        .iter()
        .map(|io| {
            let segs: SmallVec<[&[u8]; 4]> = runs[io.runs.clone()]
                .iter()
                .map(|(gi, r)| &guards[*gi].data[r.off..r.off + r.len])
                .collect();
            // Requests take bare offsets: the one place a write's unit is dropped.
            IoRequest::writev(io.addr.get(), segs)
        })
        .collect();
    mapping.device.submit(&mut reqs);
    reqs.iter_mut().map(IoRequest::take_result).collect()
}
