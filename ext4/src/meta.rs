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
    ) -> Result<Meta> {
        let alloc = Allocator::load(dev.as_ref(), &sb)?;
        let emergency = (sb.blocks_count / 50).min(4096);
        Ok(Meta {
            dev,
            sb,
            inode_tables,
            policy,
            emergency,
            state: Mutex::new(MetaState {
                alloc,
                claims: Transaction::new(),
                reserved: 0,
            }),
            counts: Mutex::new(MetaCounts::default()),
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
