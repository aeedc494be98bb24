//! Journaling the write side's metadata, as ext4 does with jbd2
//! (data=ordered).
//!
//! Without a journal every operation's transaction is written in place in
//! the crash-safe phase order of `txn.rs`. With one, an operation's blocks
//! join the **running transaction** instead (in memory: nothing is written
//! in place before it commits), and the running transaction commits to the
//! log ([`crate::jbd2::JournalWriter`]) when a file whose metadata it may
//! hold is fsynced, when it is older than the commit interval (5 s, ext4's
//! default, run by a commit thread as kjournald2 runs it), when it grows
//! past a quarter of the log, and at sync/unmount. Committed blocks are
//! written home at the checkpoint: when the log needs the room, and at
//! sync/unmount, which leaves the log empty and `needs_recovery` clear.
//!
//! Until their checkpoint, the newest contents of journaled blocks are only
//! in memory and in the log, so every metadata read of the filesystem goes
//! through [`OverlayDev`], which lays them over what the device returns
//! (the part of the kernel's buffer cache that matters here). Data blocks
//! are never journaled and never in the overlay.
//!
//! data=ordered: data the transaction's extents point at was written (and
//! its I/O completed) before the metadata joined the transaction, and the
//! log writer flushes the device before the commit block, so the data is
//! durable before the commit that exposes it. Freed blocks are allocatable
//! again only once the freeing transaction committed; a freed block that an
//! earlier, not yet checkpointed transaction logged is revoked, so that
//! neither replay nor the checkpoint writes its old metadata over what it
//! holds next; one logged only by the running transaction is dropped from
//! it.

use crate::error::{Ext4Error, Result};
use crate::jbd2::JournalWriter;
use crate::txn::{MetaCounts, Transaction};
use bufwrite_engine::device::{IoRequest, WriteStream};
use bufwrite_engine::{BlockDevice, IoStats};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The default commit interval (ext4's `commit=5`).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// What the journal did, for the reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Transactions committed to the log.
    pub commits: u64,
    /// Log blocks written: descriptor, revoke, metadata and commit blocks.
    pub log_blocks: u64,
    /// Metadata blocks logged (counted once per commit that logs them).
    pub metadata_blocks: u64,
    /// Blocks revoked.
    pub revoked: u64,
    /// Checkpoints that emptied the log.
    pub checkpoints: u64,
}

impl JournalStats {
    /// These counts minus an earlier snapshot `before`.
    pub fn since(&self, before: &JournalStats) -> JournalStats {
        JournalStats {
            commits: self.commits - before.commits,
            log_blocks: self.log_blocks - before.log_blocks,
            metadata_blocks: self.metadata_blocks - before.metadata_blocks,
            revoked: self.revoked - before.revoked,
            checkpoints: self.checkpoints - before.checkpoints,
        }
    }
}

/// The newest contents of the metadata blocks not yet written home.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    blocks: RwLock<BTreeMap<u64, Arc<Vec<u8>>>>,
}

impl Overlay {
    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Vec<u8>>>> {
        self.blocks.read().unwrap_or_else(|e| e.into_inner())
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Vec<u8>>>> {
        self.blocks.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The device as the filesystem's metadata code sees it: reads get the
/// overlay's blocks laid over the device's bytes; everything else passes
/// through.
pub(crate) struct OverlayDev {
    inner: Arc<dyn BlockDevice>,
    overlay: Arc<Overlay>,
    block_size: u64,
}

impl OverlayDev {
    pub(crate) fn new(inner: Arc<dyn BlockDevice>, overlay: Arc<Overlay>, block_size: u32) -> Self {
        OverlayDev {
            inner,
            overlay,
            block_size: u64::from(block_size),
        }
    }
}

impl BlockDevice for OverlayDev {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        self.inner.submit(batch)
    }
    fn flush(&self) -> bufwrite_engine::Result<()> {
        self.inner.flush()
    }
    fn submit_stream(&self, stream: &mut dyn WriteStream) {
        self.inner.submit_stream(stream)
    }
    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> bufwrite_engine::Result<()> {
        self.inner.read_at(offset, buf)?;
        let map = self.overlay.map();
        if map.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size;
        let end = offset + buf.len() as u64;
        for (&b, data) in map.range(offset / bs..end.div_ceil(bs)) {
            let bstart = b * bs;
            let from = bstart.max(offset);
            let to = (bstart + bs).min(end);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - bstart) as usize..(to - bstart) as usize]);
            }
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> bufwrite_engine::Result<()> {
        self.inner.write_at(offset, buf)
    }
}

/// What [`JournalState::commit`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    /// The allocator may hand out the blocks freed since the last commit.
    pub frees_reusable: bool,
    /// A transaction went to the log (and the device was flushed before
    /// its commit block and after it).
    pub logged: bool,
}

/// The journal of an open filesystem: the log writer and the running
/// transaction. Lives inside the metadata state, under its lock.
pub(crate) struct JournalState {
    writer: JournalWriter,
    overlay: Arc<Overlay>,
    /// The running transaction's blocks (newest contents).
    running: BTreeMap<u64, Vec<u8>>,
    /// Blocks the running transaction revokes.
    revokes: BTreeSet<u64>,
    /// When the running transaction got its first block.
    started: Option<Instant>,
    /// Frees were applied since the last commit: the allocator may hand the
    /// blocks out once it commits.
    frees_pending: bool,
    /// Blocks logged by committed transactions since the last checkpoint
    /// (a superset of the writer's live ones: it may checkpoint on its
    /// own when the log is full).
    logged: BTreeSet<u64>,
    stats: JournalStats,
}

impl JournalState {
    pub(crate) fn new(writer: JournalWriter, overlay: Arc<Overlay>) -> Self {
        JournalState {
            writer,
            overlay,
            running: BTreeMap::new(),
            revokes: BTreeSet::new(),
            started: None,
            frees_pending: false,
            logged: BTreeSet::new(),
            stats: JournalStats::default(),
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> JournalStats {
        self.stats
    }

    /// Adds one operation's blocks to the running transaction (and to the
    /// overlay, so that reads see them). Returns what it added, per kind.
    pub(crate) fn add(&mut self, txn: Transaction) -> MetaCounts {
        let mut counts = MetaCounts::default();
        let mut ov = self.overlay.map_mut();
        for (block, kind, data) in txn.into_blocks() {
            counts.bump(kind);
            // A block logged again is no longer revoked.
            self.revokes.remove(&block);
            ov.insert(block, Arc::new(data.clone()));
            self.running.insert(block, data);
        }
        drop(ov);
        if self.started.is_none() && !self.running.is_empty() {
            self.started = Some(Instant::now());
        }
        counts
    }

    /// Blocks `[start, start + len)` were freed: a running copy is dropped,
    /// a committed one revoked.
    pub(crate) fn freed(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        let dropped: Vec<u64> = self.running.range(start..end).map(|(b, _)| *b).collect();
        let revoked: Vec<u64> = self.logged.range(start..end).copied().collect();
        if dropped.is_empty() && revoked.is_empty() {
            self.frees_pending = true;
            return;
        }
        let mut ov = self.overlay.map_mut();
        for b in dropped {
            self.running.remove(&b);
            ov.remove(&b);
        }
        for b in revoked {
            ov.remove(&b);
            self.logged.remove(&b);
            self.revokes.insert(b);
        }
        self.frees_pending = true;
    }

    /// The running transaction is older than `interval`.
    pub(crate) fn due(&self, interval: Duration) -> bool {
        self.started.is_some_and(|t| t.elapsed() >= interval) || self.frees_pending
    }

    /// The running transaction has grown past a quarter of the log (the
    /// kernel's `j_max_transaction_buffers`).
    pub(crate) fn too_big(&self) -> bool {
        let lap = self.writer.free_blocks() + self.writer.live().iter().map(|l| l.len).sum::<u64>();
        self.running.len() as u64 * 4 > lap
    }

    /// Whether a commit flushes the device before its commit block, so
    /// that data written before the commit is durable when the commit is
    /// (not so with ASYNC_COMMIT, whose one flush follows the commit
    /// block: ext4 refuses that option with data=ordered for this reason).
    pub(crate) fn commit_orders_data(&self) -> bool {
        !self
            .writer
            .journal()
            .superblock()
            .has_incompat(crate::jbd2::format::feature::INCOMPAT_ASYNC_COMMIT)
    }

    /// Commits the running transaction.
    pub(crate) fn commit(&mut self) -> Result<Committed> {
        let frees = std::mem::take(&mut self.frees_pending);
        if self.running.is_empty() && self.revokes.is_empty() {
            return Ok(Committed {
                frees_reusable: frees,
                logged: false,
            });
        }
        let blocks: Vec<(u64, Vec<u8>)> = std::mem::take(&mut self.running).into_iter().collect();
        let revoked: Vec<u64> = std::mem::take(&mut self.revokes).into_iter().collect();
        self.started = None;
        let logged = match self.writer.commit(&blocks, &revoked) {
            Ok(l) => l,
            Err(e) => {
                // Nothing of it is durable: keep it running (the overlay
                // still has it), so a later commit can try again.
                self.running = blocks.into_iter().collect();
                self.revokes = revoked.into_iter().collect();
                self.frees_pending = frees;
                self.started = Some(Instant::now());
                return Err(e);
            }
        };
        self.stats.commits += 1;
        self.stats.log_blocks += logged.len;
        self.stats.metadata_blocks += blocks.len() as u64;
        self.stats.revoked += revoked.len() as u64;
        self.logged.extend(blocks.iter().map(|(b, _)| *b));
        Ok(Committed {
            frees_reusable: true,
            logged: true,
        })
    }

    /// Writes every committed block home and empties the log (after
    /// [`JournalState::commit`]: the running transaction must be empty).
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        if !self.running.is_empty() {
            return Err(Ext4Error::Refused(
                "checkpoint with a running transaction: commit it first".into(),
            ));
        }
        if !self.writer.live().is_empty() {
            self.writer.checkpoint()?;
            self.stats.checkpoints += 1;
        }
        self.logged.clear();
        self.overlay.map_mut().clear();
        Ok(())
    }
}

/// Starts the commit thread of `meta` (kjournald2's timer): every tick
/// (a fifth of the interval, at most a second) it commits a running
/// transaction older than the interval. It holds the metadata only weakly
/// and ends at the first tick after the filesystem is gone.
pub(crate) fn spawn_commit_thread(meta: &Arc<crate::meta::Meta>) {
    let weak = Arc::downgrade(meta);
    let _ = std::thread::Builder::new()
        .name("bufwrite-jbd2".into())
        .spawn(move || loop {
            let interval = match weak.upgrade() {
                Some(m) => m.commit_interval(),
                None => return,
            };
            std::thread::sleep(
                (interval / 5).clamp(Duration::from_millis(1), Duration::from_secs(1)),
            );
            let Some(m) = weak.upgrade() else { return };
            // A failed commit stays running; fsync reports the error.
            let _ = m.journal_commit_if_due(m.commit_interval());
        });
}
