//! The orphan list, processed at a writable open (ext4_orphan_cleanup,
//! e2fsck's release_orphan_inodes).
//!
//! ext4 puts an inode on the orphan list (`s_last_orphan`, chained through
//! each inode's `i_dtime`) while an operation that spans transactions is
//! under way on it: a truncate, or an unlink of a file still open. After a
//! crash the list names what to finish: an inode without links is freed,
//! one with links loses the blocks past its size. The kernel does it at
//! every read-write mount, after the journal replay; e2fsck does it right
//! after its replay, so a recovered image is only whole once the list is
//! empty. bufwrite itself never leaves an orphan (its truncates and
//! unlinks are one transaction each), so the list it meets is the
//! kernel's.
//!
//! Each inode is finished in one transaction that also moves
//! `s_last_orphan` on to the next, so a crash in the middle leaves a valid
//! shorter list. Which blocks go follows e2fsck: every block from
//! `ceil(i_size / block size)` on, and the bytes past the size in the
//! last kept block are zeroed on disk (a later extension must not expose
//! them). A freed inode's record is left as bufwrite's unlink leaves one
//! (no links, no size, no blocks, dtime set), as the kernel's evict does;
//! e2fsck keeps the size and block map of a freed record.

use crate::error::{Ext4Error, Result};
use crate::extent_tree::ExtentTree;
use crate::fs::Ext4;
use crate::inode::flags;
use crate::meta::{Frees, TreeAlloc};
use crate::superblock::{ro_compat, Superblock};
use crate::txn::{Phase, Transaction};

/// What processing the orphan list did to one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanAction {
    /// No links: blocks and inode freed.
    Freed,
    /// Still linked: the blocks past `size` freed.
    Truncated {
        /// The inode's size, which its blocks now end at.
        size: u64,
    },
}

/// One inode the orphan list named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// Inode number.
    pub ino: u32,
    /// What was done to it.
    pub action: OrphanAction,
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.action {
            OrphanAction::Freed => write!(f, "inode {} freed", self.ino),
            OrphanAction::Truncated { size } => {
                write!(f, "inode {} truncated to {size} bytes", self.ino)
            }
        }
    }
}

/// Checks that an orphan-list link names an ordinary inode.
fn check_link(sb: &Superblock, ino: u32, from: &str) -> Result<()> {
    if ino < sb.first_ino || ino > sb.inodes_count {
        return Err(Ext4Error::Unsupported(format!(
            "the orphan list is corrupt: {from} names inode {ino}, outside {}..={}",
            sb.first_ino, sb.inodes_count
        )));
    }
    Ok(())
}

impl Ext4 {
    /// Finishes every inode on the orphan list and empties it. Called by a
    /// writable open before anything else touches the files. Returns what
    /// was done, in list order; on an error the list still holds the
    /// inode that failed and those after it.
    pub(crate) fn release_orphans(&mut self) -> Result<Vec<Orphan>> {
        let mut done = Vec::new();
        let mut ino = self.superblock().last_orphan;
        if ino == 0 {
            return Ok(done);
        }
        check_link(self.superblock(), ino, "s_last_orphan")?;
        let meta = self.meta_for_orphans()?;
        let bs = u64::from(self.block_size());
        let huge = self.superblock().has_ro_compat(ro_compat::HUGE_FILE);
        // A list longer than the inode count loops.
        let mut budget = self.superblock().inodes_count;
        while ino != 0 {
            if budget == 0 {
                return Err(Ext4Error::Unsupported(
                    "the orphan list is corrupt: it loops".into(),
                ));
            }
            budget -= 1;
            let inode = self.read_inode(ino)?;
            let mut raw = meta.read_raw_inode(ino)?;
            let next = raw.dtime();
            if next != 0 {
                check_link(self.superblock(), next, &format!("inode {ino}'s i_dtime"))?;
            }
            if !inode.has_flag(flags::EXTENTS) && inode.block.iter().any(|&b| b != 0) {
                return Err(Ext4Error::Unsupported(format!(
                    "orphan inode {ino} is mapped by indirect blocks, which bufwrite does not free"
                )));
            }
            let mut ms = meta.lock();
            let mut txn = Transaction::new();
            let mut frees = Frees::default();
            let action = if inode.links == 0 {
                raw = self.release_inode(&meta, &mut ms, &mut txn, &mut frees, &inode)?;
                OrphanAction::Freed
            } else {
                let mut tree = ExtentTree::load(&self.tree_ctx(), &inode)?;
                tree.remove(
                    inode.size.div_ceil(bs),
                    u64::MAX,
                    &mut TreeAlloc {
                        meta: &meta,
                        st: &mut ms,
                        frees: &mut frees,
                    },
                    &mut txn,
                )?;
                let extents = tree.extents();
                // The tail of the last kept block, past the size, is
                // zeroed on disk (as e2fsck and the kernel's truncate
                // do): a later extension must not find old bytes there.
                let tail = inode.size % bs;
                let last = inode.size / bs;
                if let Some(e) = extents
                    .iter()
                    .find(|e| tail != 0 && !e.unwritten && e.lblk <= last && last < e.end())
                {
                    let at = (e.pblk + (last - e.lblk)) * bs + tail;
                    crate::jbd2::write_bytes(
                        self.device().as_ref(),
                        at,
                        &vec![0; (bs - tail) as usize],
                    )?;
                }
                let data: u64 = extents.iter().map(|e| e.len).sum();
                raw.set_block_area(&tree.root());
                raw.set_blocks((data + tree.node_blocks()) * (bs / 512), huge)?;
                raw.set_dtime(0);
                raw.update_checksum(ino, meta.fs_seed());
                OrphanAction::Truncated { size: inode.size }
            };
            ms.alloc.set_last_orphan(next, &mut txn);
            let phase = match action {
                OrphanAction::Freed => Phase::Release,
                OrphanAction::Truncated { .. } => Phase::Point,
            };
            meta.commit(&mut ms, txn, &[(ino, &raw, phase)], frees)?;
            drop(ms);
            self.set_last_orphan(next);
            done.push(Orphan { ino, action });
            ino = next;
        }
        Ok(done)
    }
}
