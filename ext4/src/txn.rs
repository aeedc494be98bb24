//! Metadata transactions: the set of metadata blocks one operation changes,
//! written in an order that a crash can only leak space.
//!
//! Without a journal (journaling is its own piece of work) a transaction is
//! written in four phases, each followed by a device flush:
//!
//! 1. [`Phase::Claim`]: bitmaps, group descriptors and superblock counts that
//!    *claim* blocks or inodes, before anything points at them;
//! 2. [`Phase::Init`]: what is new and not yet pointed at: a new inode's
//!    record, a directory block just appended;
//! 3. [`Phase::Point`]: extent blocks, inodes and directory blocks, which
//!    point at what phases 1 and 2 made (and stop pointing at what phase 4
//!    releases);
//! 4. [`Phase::Release`]: records and bitmaps, descriptors and counts that
//!    *release* blocks or inodes, once nothing on disk points at them.
//!
//! A crash between phases leaves claimed-but-unused blocks (leaked space,
//! which e2fsck reports as bitmap differences and wrong free counts) and
//! never a pointer to a free block. Data is written before the transaction
//! whose extents point at it (the caller's duty: see docs/DESIGN.md
//! "Allocation"). The same transactions are what a journal would wrap.

use crate::error::{Ext4Error, Result};
use bufwrite_engine::BlockDevice;
use std::collections::BTreeMap;

/// What kind of metadata a block holds, for the per-kind write counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetaKind {
    /// A block or inode bitmap.
    Bitmap,
    /// A block of the group descriptor table.
    Descriptor,
    /// An extent tree block (index or leaf).
    Extent,
    /// A block of an inode table.
    Inode,
    /// A directory block (linear, htree leaf or htree node).
    Directory,
    /// The superblock.
    Superblock,
}

impl MetaKind {
    /// Every kind, in report order.
    pub const ALL: [MetaKind; 6] = [
        MetaKind::Bitmap,
        MetaKind::Descriptor,
        MetaKind::Extent,
        MetaKind::Inode,
        MetaKind::Directory,
        MetaKind::Superblock,
    ];

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            MetaKind::Bitmap => "bitmap",
            MetaKind::Descriptor => "descriptor",
            MetaKind::Extent => "extent",
            MetaKind::Inode => "inode",
            MetaKind::Directory => "directory",
            MetaKind::Superblock => "superblock",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// When a block of a transaction is written (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Claims space: written first.
    Claim,
    /// Initialises what was claimed, before anything points at it.
    Init,
    /// Points at space: written third.
    Point,
    /// Releases space: written last.
    Release,
}

/// Metadata blocks written, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaCounts {
    blocks: [u64; 6],
}

impl MetaCounts {
    /// Blocks written of `kind`.
    pub fn get(&self, kind: MetaKind) -> u64 {
        self.blocks[kind.index()]
    }

    /// Blocks written of every kind.
    pub fn total(&self) -> u64 {
        self.blocks.iter().sum()
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &MetaCounts) {
        for (a, b) in self.blocks.iter_mut().zip(other.blocks) {
            *a += b;
        }
    }

    /// The counts of `self` minus an earlier snapshot `before`.
    pub fn since(&self, before: &MetaCounts) -> MetaCounts {
        let mut out = *self;
        for (a, b) in out.blocks.iter_mut().zip(before.blocks) {
            *a = a.saturating_sub(b);
        }
        out
    }

    pub(crate) fn bump(&mut self, kind: MetaKind) {
        self.blocks[kind.index()] += 1;
    }
}

impl std::fmt::Display for MetaCounts {
    /// `bitmap 2, descriptor 1, ...` (kinds with no writes left out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for k in MetaKind::ALL {
            let n = self.get(k);
            if n == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{} {n}", k.name())?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

struct Pending {
    kind: MetaKind,
    phase: Phase,
    data: Vec<u8>,
}

/// The metadata blocks one operation changed, with their new contents.
///
/// A block queued twice keeps one copy (the latest contents) and the later
/// of the two phases; callers that both claim and release in one bitmap
/// block must commit between the two (the writers here do).
#[derive(Default)]
pub struct Transaction {
    blocks: BTreeMap<u64, Pending>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Number of blocks queued.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Queues filesystem block `block` with its whole new contents.
    pub fn put(&mut self, block: u64, kind: MetaKind, phase: Phase, data: Vec<u8>) {
        match self.blocks.get_mut(&block) {
            Some(p) => {
                p.data = data;
                p.phase = p.phase.max(phase);
                p.kind = kind;
            }
            None => {
                self.blocks.insert(block, Pending { kind, phase, data });
            }
        }
    }

    /// The queued contents of `block` for editing in place, loaded with
    /// `load` (its current contents on disk) when it is not queued yet.
    pub fn get_mut(
        &mut self,
        block: u64,
        kind: MetaKind,
        phase: Phase,
        load: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<&mut Vec<u8>> {
        use std::collections::btree_map::Entry;
        match self.blocks.entry(block) {
            Entry::Occupied(o) => {
                let p = o.into_mut();
                p.phase = p.phase.max(phase);
                Ok(&mut p.data)
            }
            Entry::Vacant(v) => {
                let data = load()?;
                Ok(&mut v.insert(Pending { kind, phase, data }).data)
            }
        }
    }

    /// Moves a queued `block` to `phase` (a tree block new in this
    /// transaction goes out at [`Phase::Init`], whatever phase its editor
    /// queued it at). Does nothing when it is not queued.
    pub fn set_phase(&mut self, block: u64, phase: Phase) {
        if let Some(p) = self.blocks.get_mut(&block) {
            p.phase = phase;
        }
    }

    /// The queued contents of `block`, if it is queued.
    pub fn get(&self, block: u64) -> Option<&[u8]> {
        self.blocks.get(&block).map(|p| p.data.as_slice())
    }

    /// The queued blocks with their kinds and contents, in block order
    /// (for the journal, which writes them all atomically: phases do not
    /// matter there).
    pub(crate) fn into_blocks(self) -> impl Iterator<Item = (u64, MetaKind, Vec<u8>)> {
        self.blocks.into_iter().map(|(b, p)| (b, p.kind, p.data))
    }

    /// Moves every block of `other` into this transaction (later contents win).
    pub fn merge(&mut self, other: Transaction) {
        for (b, p) in other.blocks {
            self.put(b, p.kind, p.phase, p.data);
        }
    }

    /// Writes the transaction: each phase's blocks in block order, then a
    /// flush, phase by phase. Returns the blocks written per kind. On an
    /// error the blocks of the failed phase may be partly written; the
    /// phases before it are on disk.
    pub fn commit(self, dev: &dyn BlockDevice, block_size: u32) -> Result<MetaCounts> {
        let mut counts = MetaCounts::default();
        let bs = u64::from(block_size);
        for phase in [Phase::Claim, Phase::Init, Phase::Point, Phase::Release] {
            let mut wrote = false;
            for (&block, p) in self.blocks.iter().filter(|(_, p)| p.phase == phase) {
                let off = block.checked_mul(bs).ok_or_else(|| {
                    Ext4Error::Unsupported(format!("metadata block {block} is out of range"))
                })?;
                dev.write_at(off, &p.data).map_err(Ext4Error::Io)?;
                counts.bump(p.kind);
                wrote = true;
            }
            if wrote {
                dev.flush().map_err(Ext4Error::Io)?;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bufwrite_engine::device::mem::Mem;

    #[test]
    fn phases_and_counts() {
        let dev = Mem::new(64 << 10);
        let mut t = Transaction::new();
        t.put(3, MetaKind::Extent, Phase::Point, vec![3; 1024]);
        t.put(1, MetaKind::Bitmap, Phase::Claim, vec![1; 1024]);
        t.get_mut(2, MetaKind::Inode, Phase::Point, || Ok(vec![0; 1024]))
            .unwrap()[0] = 9;
        t.put(1, MetaKind::Bitmap, Phase::Claim, vec![7; 1024]);
        assert_eq!(t.len(), 3);
        let c = t.commit(&dev, 1024).unwrap();
        assert_eq!(c.get(MetaKind::Bitmap), 1);
        assert_eq!(c.get(MetaKind::Inode), 1);
        assert_eq!(c.total(), 3);
        assert_eq!(c.to_string(), "bitmap 1, extent 1, inode 1");
        let mut b = [0u8; 1024];
        dev.read_at(1024, &mut b).unwrap();
        assert_eq!(b[0], 7);
        dev.read_at(2048, &mut b).unwrap();
        assert_eq!(b[0], 9);
    }
}
