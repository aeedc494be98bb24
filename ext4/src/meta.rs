//! The filesystem's metadata state while it is open for writing: the
//! allocator, the delalloc reservation counter, and the commit of a
//! transaction in the crash-safe order (docs/DESIGN.md "Allocation").
//!
//! One mutex serialises every allocation and every commit, so that a
//! commit's three phases are never interleaved with another's: bitmap
//! blocks that claim go out first, then what points at them, then the frees,
//! which are applied to the allocator only once nothing on disk points at
//! the freed blocks (the kernel's rule that freed blocks are reusable only
//! after the freeing transaction commits).

use crate::alloc::Allocator;
use crate::error::{Ext4Error, Result, Structure};
use crate::extent_tree::TreeBlocks;
use crate::inode_write::RawInode;
use crate::journal::{JournalState, JournalStats};
use crate::superblock::Superblock;
use crate::txn::{MetaCounts, MetaKind, Phase, Transaction};
use crate::util::read_meta;
use bufwrite_engine::{AllocPolicy, BlockDevice};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a commit releases once its pointers are on disk.
#[derive(Debug, Default)]
pub(crate) struct Frees {
    /// Block runs `(start, len)` no longer mapped by anything.
    pub blocks: Vec<(u64, u64)>,
    /// Inodes `(ino, was a directory)` no longer in use.
    pub inodes: Vec<(u32, bool)>,
    /// Tree blocks allocated since the last commit: written at
    /// [`Phase::Init`], before the index or inode that points at them.
    pub fresh: Vec<u64>,
}

impl Frees {
    /// Nothing to release (fresh blocks need no release).
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.inodes.is_empty()
    }

    /// Adds everything of `other`.
    pub(crate) fn extend(&mut self, other: Frees) {
        self.blocks.extend(other.blocks);
        self.inodes.extend(other.inodes);
        self.fresh.extend(other.fresh);
    }
}

/// The mutable part, under [`Meta::lock`].
pub(crate) struct MetaState {
    pub alloc: Allocator,
    /// The latest contents of every bitmap, descriptor and superblock block
    /// the allocator changed since the last commit (claims only: frees are
    /// applied inside a commit).
    claims: Transaction,
    /// Blocks reserved by delayed allocation and not yet allocated.
    pub reserved: u64,
    /// The journal, when the filesystem has one (see `journal.rs`):
    /// commits go to its running transaction instead of in place.
    journal: Option<JournalState>,
}

/// The write side of one open filesystem, shared by its files.
pub(crate) struct Meta {
    pub dev: Arc<dyn BlockDevice>,
    pub sb: Superblock,
    /// Device byte offset of each group's inode table.
    inode_tables: Vec<u64>,
    pub policy: AllocPolicy,
    /// Reserve kept back from delayed allocation for metadata that must not
    /// fail at writeback (extent tree blocks): the kernel's `s_resv_clusters`,
    /// min(2% of the blocks, 4096).
    emergency: u64,
    state: Mutex<MetaState>,
    counts: Mutex<MetaCounts>,
    /// The commit interval in milliseconds (the commit thread's).
    interval_ms: std::sync::atomic::AtomicU64,
    /// See [`Meta::commit_orders_data`].
    orders_data: bool,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Meta {
    pub(crate) fn new(
        dev: Arc<dyn BlockDevice>,
        sb: Superblock,
        inode_tables: Vec<u64>,
        policy: AllocPolicy,
        journal: Option<JournalState>,
    ) -> Result<Meta> {
        let mut alloc = Allocator::load(dev.as_ref(), &sb)?;
        if journal.is_some() {
            // Every journaled copy of the superblock says the log is live,
            // as the kernel's in-memory one does while mounted: a
            // checkpoint that writes it home never clears the flag before
            // the log is empty.
            alloc.set_needs_recovery_bit(true);
            alloc.set_lazy_superblock(true);
        }
        let emergency = (sb.blocks_count / 50).min(4096);
        let orders_data = journal
            .as_ref()
            .is_some_and(JournalState::commit_orders_data);
        Ok(Meta {
            orders_data,
            dev,
            sb,
            inode_tables,
            policy,
            emergency,
            state: Mutex::new(MetaState {
                alloc,
                claims: Transaction::new(),
                reserved: 0,
                journal,
            }),
            counts: Mutex::new(MetaCounts::default()),
            interval_ms: std::sync::atomic::AtomicU64::new(
                crate::journal::COMMIT_INTERVAL.as_millis() as u64,
            ),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, MetaState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Metadata blocks written so far, per kind.
    pub(crate) fn counts(&self) -> MetaCounts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn fs_seed(&self) -> Option<u32> {
        self.sb.has_metadata_csum().then_some(self.sb.csum_seed)
    }

    /// Reserves up to `want` blocks for delayed allocation; returns how many
    /// it could (0 when the filesystem is full).
    pub(crate) fn reserve(&self, want: u64) -> u64 {
        let mut st = self.lock();
        let free = st.alloc.free_blocks();
        let avail = free.saturating_sub(st.reserved + self.emergency);
        let n = want.min(avail);
        st.reserved += n;
        n
    }

    /// Returns `n` reserved blocks (released, or consumed by an allocation).
    pub(crate) fn unreserve(st: &mut MetaState, n: u64) {
        st.reserved = st.reserved.saturating_sub(n);
    }

    /// Blocks reserved by delayed allocation now.
    pub(crate) fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    /// Free blocks on the filesystem now (not net of reservations).
    pub(crate) fn free_blocks(&self) -> u64 {
        self.lock().alloc.free_blocks()
    }

    /// Allocates up to `want` contiguous blocks near `goal`.
    pub(crate) fn alloc_blocks(
        &self,
        st: &mut MetaState,
        goal: u64,
        want: u64,
    ) -> Result<(u64, u64)> {
        let mut scratch = Transaction::new();
        let r = st
            .alloc
            .alloc_blocks(self.dev.as_ref(), goal, want, &mut scratch);
        st.claims.merge(scratch);
        r
    }

    /// Allocates an inode near `parent`.
    pub(crate) fn alloc_inode(&self, st: &mut MetaState, parent: u32, dir: bool) -> Result<u32> {
        let mut scratch = Transaction::new();
        let r = st
            .alloc
            .alloc_inode(self.dev.as_ref(), parent, dir, &mut scratch);
        st.claims.merge(scratch);
        r
    }

    /// Device block holding inode `ino`, and the inode's byte offset in it.
    pub(crate) fn inode_block(&self, ino: u32) -> Result<(u64, usize)> {
        let idx = u64::from(ino.checked_sub(1).ok_or_else(|| {
            Ext4Error::Unsupported(format!("inode number {ino} is out of range"))
        })?);
        let ipg = u64::from(self.sb.inodes_per_group);
        let table = *self
            .inode_tables
            .get((idx / ipg) as usize)
            .ok_or_else(|| Ext4Error::Unsupported(format!("inode number {ino} is out of range")))?;
        let bs = u64::from(self.sb.block_size);
        let off = table + (idx % ipg) * u64::from(self.sb.inode_size);
        Ok((off / bs, (off % bs) as usize))
    }

    /// Reads the raw on-disk record of inode `ino`.
    pub(crate) fn read_raw_inode(&self, ino: u32) -> Result<RawInode> {
        let (blk, off) = self.inode_block(ino)?;
        let bs = u64::from(self.sb.block_size);
        let isz = usize::from(self.sb.inode_size);
        let b = read_meta(
            self.dev.as_ref(),
            Structure::Inode { ino },
            blk * bs,
            bs as usize,
        )?;
        Ok(RawInode::from_bytes(b[off..off + isz].to_vec()))
    }

    /// Commits one operation: the claims made so far (every file's: writing
    /// a claim early is always safe), then `point` (extent and directory
    /// blocks) and the inode records in `inodes`, each in its phase (a new
    /// inode at [`Phase::Init`], before the entry that names it; a dead one
    /// at [`Phase::Release`], after the entry is gone), then `frees`,
    /// applied to the allocator only now. Returns what it wrote.
    pub(crate) fn commit(
        &self,
        st: &mut MetaState,
        point: Transaction,
        inodes: &[(u32, &RawInode, Phase)],
        frees: Frees,
    ) -> Result<MetaCounts> {
        let bs = u64::from(self.sb.block_size);
        let mut txn = std::mem::take(&mut st.claims);
        txn.merge(point);
        for &(ino, raw, phase) in inodes {
            let (blk, off) = self.inode_block(ino)?;
            let dev = self.dev.as_ref();
            let block = txn.get_mut(blk, MetaKind::Inode, phase, || {
                read_meta(dev, Structure::Inode { ino }, blk * bs, bs as usize)
            })?;
            block[off..off + raw.bytes.len()].copy_from_slice(&raw.bytes);
        }
        for &b in &frees.fresh {
            txn.set_phase(b, Phase::Init);
        }
        if st.journal.is_some() {
            return self.commit_journaled(st, txn, frees);
        }
        let mut counts = txn.commit(self.dev.as_ref(), self.sb.block_size)?;
        if !frees.is_empty() {
            let mut rel = Transaction::new();
            for (start, len) in frees.blocks {
                st.alloc
                    .free_blocks_range(self.dev.as_ref(), start, len, &mut rel)?;
            }
            for (ino, dir) in frees.inodes {
                st.alloc.free_inode(self.dev.as_ref(), ino, dir, &mut rel)?;
            }
            counts.add(&rel.commit(self.dev.as_ref(), self.sb.block_size)?);
            // The frees are on disk: the blocks may be handed out again.
            st.alloc.frees_committed();
        }
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&counts);
        Ok(counts)
    }
}

impl Meta {
    /// [`Meta::commit`] with a journal: the blocks join the running
    /// transaction; frees are applied to the allocator now (their bitmap
    /// blocks join too) and become allocatable when it commits.
    fn commit_journaled(
        &self,
        st: &mut MetaState,
        mut txn: Transaction,
        frees: Frees,
    ) -> Result<MetaCounts> {
        let Some(j) = st.journal.as_mut() else {
            return Err(Ext4Error::Refused("no journal".into()));
        };
        for &(start, len) in &frees.blocks {
            j.freed(start, len);
        }
        for (start, len) in frees.blocks {
            st.alloc
                .free_blocks_range(self.dev.as_ref(), start, len, &mut txn)?;
        }
        for (ino, dir) in frees.inodes {
            st.alloc.free_inode(self.dev.as_ref(), ino, dir, &mut txn)?;
        }
        // The bitmap and counter blocks the frees changed.
        txn.merge(std::mem::take(&mut st.claims));
        let Some(j) = st.journal.as_mut() else {
            return Err(Ext4Error::Refused("no journal".into()));
        };
        let counts = j.add(txn);
        if j.too_big() {
            self.journal_commit_locked(st)?;
        }
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&counts);
        Ok(counts)
    }

    /// Commits the running transaction, if any (fsync's commit). Returns
    /// true when a transaction went to the log: the device was flushed
    /// before its commit block (see [`Meta::commit_orders_data`]).
    pub(crate) fn journal_commit(&self) -> Result<bool> {
        let mut st = self.lock();
        self.journal_commit_locked(&mut st)
    }

    fn journal_commit_locked(&self, st: &mut MetaState) -> Result<bool> {
        let Some(j) = st.journal.as_mut() else {
            return Ok(false);
        };
        let done = j.commit()?;
        if done.frees_reusable {
            st.alloc.frees_committed();
        }
        Ok(done.logged)
    }

    /// True when the filesystem journals its metadata and each commit
    /// flushes the device before its commit block: data written before a
    /// commit is durable with it, so fsync need not flush for the data
    /// first (jbd2's commit is ext4's fsync barrier).
    pub(crate) fn commit_orders_data(&self) -> bool {
        self.orders_data
    }

    /// Commits the running transaction when it is older than `interval`
    /// (the commit thread's tick).
    pub(crate) fn journal_commit_if_due(&self, interval: std::time::Duration) -> Result<()> {
        let mut st = self.lock();
        if st.journal.as_ref().is_some_and(|j| j.due(interval)) {
            self.journal_commit_locked(&mut st)?;
        }
        Ok(())
    }

    /// Commits and checkpoints: the log is empty and `needs_recovery`
    /// clear afterwards (sync, unmount).
    pub(crate) fn journal_sync(&self) -> Result<()> {
        let mut st = self.lock();
        self.journal_commit_locked(&mut st)?;
        let Some(j) = st.journal.as_mut() else {
            return Ok(());
        };
        j.checkpoint()?;
        // The lazily kept free totals go home with the log empty, as
        // ext4's unmount writes them (ext4_commit_super).
        if let Some((blocks, inodes)) = st.alloc.take_lazy_counts() {
            let bit64 = self.sb.has_incompat(crate::superblock::incompat::BIT64);
            let written = crate::jbd2::rewrite_superblock(self.dev.as_ref(), |b| {
                b[0x0C..0x10].copy_from_slice(&(blocks as u32).to_le_bytes());
                if bit64 {
                    b[0x158..0x15C].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
                }
                b[0x10..0x14].copy_from_slice(&(inodes as u32).to_le_bytes());
            })
            .and_then(|()| Ok(self.dev.flush()?));
            if let Err(e) = written {
                // Still to be written: the next sync tries again.
                st.alloc.mark_lazy_counts_dirty();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The commit interval.
    pub(crate) fn commit_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.interval_ms.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Sets the commit interval.
    pub(crate) fn set_commit_interval(&self, d: std::time::Duration) {
        self.interval_ms.store(
            d.as_millis().clamp(1, u128::from(u32::MAX)) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The journal's counters (`None` without a journal).
    pub(crate) fn journal_stats(&self) -> Option<JournalStats> {
        self.lock().journal.as_ref().map(JournalState::stats)
    }
}

impl Drop for Meta {
    /// Unmount: what the running transaction holds is committed and the
    /// log checkpointed, best effort (a failed device keeps the log, which
    /// the next open replays).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let _ = self.journal_sync();
    }
}

/// The allocator as the extent-tree editor sees it: tree blocks are
/// allocated at once (from the emergency pool: no reservation), frees wait
/// for the commit (`frees`).
pub(crate) struct TreeAlloc<'a> {
    pub meta: &'a Meta,
    pub st: &'a mut MetaState,
    pub frees: &'a mut Frees,
}

impl TreeBlocks for TreeAlloc<'_> {
    fn alloc_tree_block(&mut self, goal: u64, _txn: &mut Transaction) -> Result<u64> {
        let (b, _) = self.meta.alloc_blocks(self.st, goal, 1)?;
        self.frees.fresh.push(b);
        Ok(b)
    }

    fn free_tree_block(&mut self, blk: u64, _txn: &mut Transaction) -> Result<()> {
        self.frees.blocks.push((blk, 1));
        Ok(())
    }

    fn free_data(&mut self, start: u64, len: u64, _txn: &mut Transaction) -> Result<()> {
        self.frees.blocks.push((start, len));
        Ok(())
    }
}
