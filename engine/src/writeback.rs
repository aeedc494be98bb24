//! Writeback: dirty folios in index order, their dirty runs merged into
//! device writes, streamed to the device. Shared by every write path.
//!
//! As in the kernel, a folio is under writeback, not locked, while its I/O
//! is in flight: writeback locks it, takes its dirty runs (mapping delalloc
//! through the path), clears their dirty state, raises its writeback count
//! and unlocks it. A writer may then write it again, which re-dirties it
//! (no stable pages); the next pass writes the newer bytes. Unlike the
//! kernel, the run's bytes are copied into the write's own buffer under the
//! folio lock: Rust gives no sound way to let the device read memory a
//! writer may be changing, and the copy (memcpy speed, against the device's
//! speed) keeps the snapshot exact. A run that continues on disk in the
//! next folio joins the same write (at most [`MAX_IO_BYTES`]).
//!
//! Writes go to [`BlockDevice::submit_stream`](crate::BlockDevice::submit_stream):
//! the next write is built as soon as the device has a free slot, and each
//! completion is handled as it arrives (no window barrier). A completed
//! write's range joins the address space's pending completions (its
//! `Mapper::end_io` waits for a flush) before the folio's writeback ends,
//! so truncate, which waits for writeback, always sees it. A failed write
//! records the error (errseq) and re-dirties its blocks before their
//! writeback ends, so nothing acknowledged is ever clean and unwritten.
//!
//! A background pass ([`SyncMode::Background`], WB_SYNC_NONE) skips folios
//! already under writeback; an integrity pass ([`SyncMode::All`],
//! WB_SYNC_ALL: fsync) waits for them and writes them again if they were
//! re-dirtied meanwhile. Only [`write_back`] (fsync) flushes the device.

use crate::address_space::AddressSpace;
use crate::align::AlignedBuf;
use crate::device::{OwnedWrite, WriteStream};
use crate::error::{Error, Result};
use crate::folio::{Folio, FolioFlags, FolioGuard};
use crate::units::DevAddr;
use crate::write_path::DirtyRun;
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Largest single writeback I/O.
pub const MAX_IO_BYTES: usize = 1 << 20;

/// How a pass treats folios that are already under writeback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// WB_SYNC_NONE: skip them (the flusher, `File::writeback`).
    Background,
    /// WB_SYNC_ALL: wait for them, and write them again if re-dirtied (fsync).
    All,
}

/// What one writeback call wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WbStats {
    /// Bytes whose write completed.
    pub bytes: u64,
    /// Device writes that completed.
    pub ios: u64,
}

/// fsync's data half: writes back every dirty block (waiting for writeback
/// already in flight), flushes the device, then reports the completed
/// ranges to the mapper (`Mapper::end_io`: unwritten conversion and on-disk
/// size, only once the data is durable). A mapper whose metadata sync
/// flushes for the data ([`Mapper::commit_orders_data`]: a journal) gets
/// no flush here. Returns the first error of this call (with its file
/// offset); what failed stays dirty, and a range whose write failed gets
/// no end_io.
pub fn write_back(mapping: &AddressSpace) -> Result<()> {
    write_range(mapping, 0, u64::MAX, SyncMode::All, None)?;
    if !mapping.mapper.commit_orders_data() {
        mapping.device.flush()?;
    }
    mapping.complete_pending_io()
}

/// A background pass over the whole file, stopping once about `limit`
/// bytes were queued (the flusher, reclaim). No flush.
pub fn background(mapping: &AddressSpace, limit: Option<u64>) -> Result<WbStats> {
    let s = write_range(mapping, 0, u64::MAX, SyncMode::Background, limit)?;
    complete_if_journaled(mapping)?;
    Ok(s)
}

/// Reports the completed writes to a mapper whose journal orders the data
/// ([`crate::Mapper::commit_orders_data`]): no flush is needed before its
/// `end_io`. Others' completions wait for the next flush.
pub fn complete_if_journaled(mapping: &AddressSpace) -> Result<()> {
    if mapping.mapper.commit_orders_data() {
        mapping.complete_pending_io()?;
    }
    Ok(())
}

/// Writes back the dirty folios with bytes in `[from, to)` (the kernel's
/// `filemap_fdatawrite_range` / `__filemap_fdatawait_range` in
/// [`SyncMode::All`]). No flush. Every error is also recorded for the
/// inode's open files (errseq); the first is returned.
pub fn write_range(
    mapping: &AddressSpace,
    from: u64,
    to: u64,
    mode: SyncMode,
    limit: Option<u64>,
) -> Result<WbStats> {
    let start = Instant::now();
    let mut folios = mapping.cache.tagged(from, to, mode == SyncMode::All);
    let mut stats = WbStats::default();
    let mut first_err = None;
    loop {
        let mut pass = Pass::new(mapping, folios, mode, limit);
        mapping.device.submit_stream(&mut pass);
        pass.finish();
        stats.bytes += pass.stats.bytes;
        stats.ios += pass.stats.ios;
        if first_err.is_none() {
            first_err = pass.first_err.take();
        }
        if pass.deferred.is_empty() {
            break;
        }
        // WB_SYNC_ALL: what was under someone else's writeback is waited
        // for, then written if it was dirtied again meanwhile.
        for f in &pass.deferred {
            mapping.wait_on_writeback(f);
        }
        folios = std::mem::take(&mut pass.deferred);
    }
    mapping.clear_dirtied_when();
    mapping
        .cache
        .memory()
        .record_bandwidth(stats.bytes, start.elapsed());
    first_err.map_or(Ok(stats), Err)
}

/// Writeback I/O buffers, kept for reuse per power-of-two size from 4 KiB
/// to [`MAX_IO_BYTES`]: a fresh buffer costs an allocation, its zeroing
/// and its page faults, which measured as most of the CPU of a random
/// 4 KiB writeback when every write took a 1 MiB buffer (`perf`: memset
/// and page faults under `next_write`).
static IO_BUFS: Mutex<[Vec<AlignedBuf>; IO_BUF_CLASSES]> =
    Mutex::new([const { Vec::new() }; IO_BUF_CLASSES]);
/// Size classes: 4 KiB << 0 ..= 8.
const IO_BUF_CLASSES: usize = 9;
/// Most bytes of I/O buffers kept, all sizes together.
const IO_BUFS_KEPT_BYTES: usize = 48 << 20;

fn io_buf_class(len: usize) -> usize {
    let size = len.clamp(4096, MAX_IO_BYTES).next_power_of_two();
    (size.trailing_zeros() - 12) as usize
}

/// A buffer of at least `len` bytes (at most [`MAX_IO_BYTES`]).
fn io_buf(len: usize) -> AlignedBuf {
    let class = io_buf_class(len);
    let reused = IO_BUFS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(class)
        .and_then(Vec::pop);
    reused.unwrap_or_else(|| AlignedBuf::zeroed(4096 << class))
}

fn give_io_buf(buf: AlignedBuf) {
    let class = io_buf_class(buf.len());
    if buf.len() != 4096 << class {
        return;
    }
    let mut pools = IO_BUFS.lock().unwrap_or_else(|e| e.into_inner());
    let kept: usize = pools
        .iter()
        .enumerate()
        .map(|(c, v)| v.len() * (4096 << c))
        .sum();
    if kept + buf.len() <= IO_BUFS_KEPT_BYTES {
        if let Some(v) = pools.get_mut(class) {
            v.push(buf);
        }
    }
}

/// The folios and folio byte ranges one write covers.
type Pieces = SmallVec<[(Arc<Folio>, Range<usize>); 4]>;

/// A write being built: runs that follow each other in the file and on
/// the disk.
struct Building {
    addr: DevAddr,
    file_start: u64,
    len: usize,
    buf: AlignedBuf,
    pieces: Pieces,
}

/// A write in flight.
struct Inflight {
    file: Range<u64>,
    pieces: Pieces,
}

/// One pass of the pipeline: the [`WriteStream`] the device pulls from.
struct Pass<'a> {
    mapping: &'a AddressSpace,
    /// The folios to visit, weakly: a pass must not keep clean folios it
    /// has not reached from reclaim (a held reference makes a folio
    /// unevictable); one that went meanwhile had nothing to write.
    folios: std::vec::IntoIter<Weak<Folio>>,
    mode: SyncMode,
    limit: Option<u64>,
    queued: u64,
    cur: Option<Building>,
    ready: VecDeque<OwnedWrite>,
    inflight: HashMap<u64, Inflight>,
    next_tag: u64,
    /// Folios under another writeback (SyncMode::All waits for them).
    deferred: Vec<Arc<Folio>>,
    /// Writes that failed: re-dirtied after the stream.
    failed: Vec<Inflight>,
    first_err: Option<Error>,
    stats: WbStats,
    runs: Vec<DirtyRun>,
}

impl<'a> Pass<'a> {
    fn new(
        mapping: &'a AddressSpace,
        folios: Vec<Arc<Folio>>,
        mode: SyncMode,
        limit: Option<u64>,
    ) -> Self {
        Pass {
            mapping,
            folios: folios
                .iter()
                .map(Arc::downgrade)
                .collect::<Vec<_>>()
                .into_iter(),
            mode,
            limit,
            queued: 0,
            cur: None,
            ready: VecDeque::new(),
            inflight: HashMap::new(),
            next_tag: 0,
            deferred: Vec::new(),
            failed: Vec::new(),
            first_err: None,
            stats: WbStats::default(),
            runs: Vec::new(),
        }
    }

    fn error(&mut self, file_offset: u64, e: Error) {
        self.mapping.record_wb_error(file_offset, e.duplicate());
        self.first_err.get_or_insert(e);
    }

    /// Takes the dirty runs of one folio into writes.
    fn write_folio(&mut self, folio: &Arc<Folio>) {
        if folio.under_writeback() {
            if self.mode == SyncMode::All {
                self.deferred.push(Arc::clone(folio));
            }
            return;
        }
        let mut g = folio.lock();
        if !g.in_cache {
            return;
        }
        // Checked again under the lock (writeback starts only with it
        // held), and before the dirty test: another pass may have taken
        // the folio's dirty data between the first check and the lock, and
        // an integrity pass must wait for that I/O, not skip a clean folio.
        if folio.under_writeback() {
            if self.mode == SyncMode::All {
                self.deferred.push(Arc::clone(folio));
            }
            return;
        }
        if !g.dirty() {
            return;
        }
        // i_size only after the folio is locked: a writer moves it before
        // unlocking the folio it wrote, so this value is current for it.
        let isize = self.mapping.size();
        let mut runs = std::mem::take(&mut self.runs);
        runs.clear();
        let mut done: SmallVec<[Range<usize>; 4]> = SmallVec::new();
        if let Err(e) = collect_runs(self.mapping, &mut g, isize, &mut runs, &mut done) {
            // Runs mapped before the failure stay dirty with the folio.
            g.flags.set(FolioFlags::ERROR, true);
            let at = g.pos();
            drop(g);
            self.runs = runs;
            self.error(at, e);
            return;
        }
        let mut started = false;
        for run in &runs {
            started |= self.add_run(folio, &g, *run);
            done.push(run.off..run.off + run.len);
        }
        let mut cleaned = false;
        if !done.is_empty() {
            done.sort_unstable_by_key(|r| r.start);
            if self.mapping.write_path().clear_dirty(&mut g, &done) {
                g.flags.set(FolioFlags::DIRTY, false);
                g.flags.set(FolioFlags::ERROR, false);
                cleaned = true;
            }
        }
        // The dirty tag goes and the writeback tag comes in one step under
        // the tags' lock, as `__folio_start_writeback` moves the xarray
        // marks: a pass looking at the tags meanwhile (an fsync) always
        // sees the folio, and its bytes are never counted twice.
        self.mapping
            .cache
            .retag_for_writeback(folio, &g, cleaned, started);
        self.runs = runs;
    }

    /// Copies one run into the write being built (or new ones), raising
    /// the folio's writeback count once per write it joins. True when the
    /// folio just went under writeback (the caller tags it).
    fn add_run(&mut self, folio: &Arc<Folio>, g: &FolioGuard<'_>, run: DirtyRun) -> bool {
        let mut started = false;
        let mut off = run.off;
        let end = run.off + run.len;
        while off < end {
            let file_pos = g.pos() + off as u64;
            let addr = run.addr.add((off - run.off) as u64);
            let joins = self.cur.as_ref().is_some_and(|c| {
                c.addr.add(c.len as u64) == addr
                    && c.file_start + c.len as u64 == file_pos
                    && c.len < MAX_IO_BYTES
            });
            if !joins {
                self.emit();
                self.cur = Some(Building {
                    addr,
                    file_start: file_pos,
                    len: 0,
                    buf: io_buf(end - off),
                    pieces: SmallVec::new(),
                });
            }
            let Some(c) = self.cur.as_mut() else {
                return started;
            };
            let n = (end - off).min(MAX_IO_BYTES - c.len);
            if c.len + n > c.buf.len() {
                // Grown by doubling: each byte is copied at most twice more.
                let mut bigger = io_buf((c.len + n).max(2 * c.buf.len()));
                bigger[..c.len].copy_from_slice(&c.buf[..c.len]);
                give_io_buf(std::mem::replace(&mut c.buf, bigger));
            }
            c.buf[c.len..c.len + n].copy_from_slice(&g.data[off..off + n]);
            c.len += n;
            c.pieces.push((Arc::clone(folio), off..off + n));
            started |= folio.start_writeback_io();
            self.queued += n as u64;
            off += n;
        }
        started
    }

    /// Moves the write being built to the ready queue.
    fn emit(&mut self) {
        let Some(c) = self.cur.take() else { return };
        let tag = self.next_tag;
        self.next_tag += 1;
        self.inflight.insert(
            tag,
            Inflight {
                file: c.file_start..c.file_start + c.len as u64,
                pieces: c.pieces,
            },
        );
        self.ready.push_back(OwnedWrite {
            offset: c.addr.get(),
            buf: c.buf,
            len: c.len,
            tag,
        });
    }

    /// After the stream: failed writes re-dirty their blocks (a folio
    /// truncated meanwhile is left alone), then their writeback ends.
    fn finish(&mut self) {
        // Anything built but never pulled (the device stopped early) is
        // handled as failed: it stays dirty.
        self.emit();
        for w in std::mem::take(&mut self.ready) {
            if let Some(inf) = self.inflight.remove(&w.tag) {
                self.failed.push(inf);
            }
            give_io_buf(w.buf);
        }
        for (_, inf) in std::mem::take(&mut self.inflight) {
            self.failed.push(inf);
        }
        let wp = self.mapping.write_path();
        for inf in std::mem::take(&mut self.failed) {
            for (folio, range) in &inf.pieces {
                let mut g = folio.lock();
                if g.in_cache && g.pos() < self.mapping.size() {
                    wp.redirty(&mut g, range.clone());
                    g.flags.set(FolioFlags::ERROR, true);
                    self.mapping.mark_folio_dirty(&mut g);
                }
                drop(g);
                self.mapping.end_folio_writeback(folio);
            }
        }
    }
}

impl WriteStream for Pass<'_> {
    fn next_write(&mut self) -> Option<OwnedWrite> {
        loop {
            if let Some(w) = self.ready.pop_front() {
                return Some(w);
            }
            let more = self.limit.is_none_or(|l| self.queued < l);
            match more.then(|| self.folios.next()).flatten() {
                Some(folio) => {
                    if let Some(folio) = folio.upgrade() {
                        self.write_folio(&folio);
                    }
                }
                None => {
                    self.emit();
                    if self.ready.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    fn complete(&mut self, write: OwnedWrite, result: Result<()>) {
        let Some(inf) = self.inflight.remove(&write.tag) else {
            give_io_buf(write.buf);
            return;
        };
        give_io_buf(write.buf);
        match result {
            Ok(()) => {
                self.stats.bytes += inf.file.end - inf.file.start;
                self.stats.ios += 1;
                // Pending before the writeback ends (module docs).
                self.mapping.add_pending_end_io([inf.file.clone()]);
                for (folio, _) in &inf.pieces {
                    self.mapping.end_folio_writeback(folio);
                }
            }
            Err(e) => {
                let at = inf.file.start;
                self.error(
                    at,
                    Error::Writeback {
                        file_offset: at,
                        source: Box::new(e),
                    },
                );
                self.failed.push(inf);
            }
        }
    }
}

/// The dirty runs of one locked folio, after EOF handling: a folio wholly
/// past EOF has nothing to write and is clean; one straddling EOF has its
/// bytes past EOF zeroed, and its dirty state past the EOF block goes into
/// `done` (DESIGN.md §4 R5: whole-folio dirtying marks it too).
fn collect_runs(
    mapping: &AddressSpace,
    g: &mut FolioGuard<'_>,
    isize: u64,
    runs: &mut Vec<DirtyRun>,
    done: &mut SmallVec<[Range<usize>; 4]>,
) -> Result<()> {
    let pos = g.pos();
    let size = g.size();
    let write_path = mapping.write_path();
    if pos >= isize {
        write_path.clear_dirty(g, std::slice::from_ref(&(0..size)));
        mapping.clear_folio_dirty(g);
        return Ok(());
    }
    let valid = usize::try_from(isize - pos).map_or(size, |v| v.min(size));
    let end = mapping.bs().round_up(valid as u64) as usize;
    if valid < size {
        g.data[valid..].fill(0);
    }
    write_path.writeback_runs(mapping, g, end, runs)?;
    if end < size {
        done.push(end..size);
    }
    Ok(())
}
