//! An editable mirror of one inode's extent tree, changed the way the
//! kernel changes it (fs/ext4/extents.c): insert with merging, leaf and
//! index splits at the insertion point, growth in depth when the root is
//! full, unwritten-to-written conversion, and removal that frees emptied
//! nodes.
//!
//! The tree is loaded once (every node checked by [`crate::extent`]'s
//! walk), edited in memory, and each operation queues the tree blocks it
//! changed into the caller's [`Transaction`]. The root lives in the
//! inode's `i_block`: the caller stores [`ExtentTree::root`] and rewrites
//! the inode (and its checksum) itself.
//!
//! Invariants kept after every operation (and checked by the tests): the
//! extents are sorted and do not overlap, no extent is longer than 32768
//! (written) or 32767 (unwritten) blocks, every index key equals the first
//! file block of its child, every node below the root holds at least one
//! entry, and every written node carries the `eh_max` e2fsck computes
//! (4 in the root, `(block_size - 12) / 12` in a block).

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::extent::{self, Extent, TreeCtx, EXT_MAGIC, INIT_MAX_LEN, MAX_FILE_BLOCKS};
use crate::inode::Inode;
use crate::txn::{MetaKind, Phase, Transaction};
use crate::util::{hilo, le16, le32};
use std::collections::HashMap;

/// Longest written extent.
const MAX_WRITTEN: u64 = INIT_MAX_LEN as u64;
/// Longest unwritten extent (32768 itself means "written, 32768 long").
const MAX_UNWRITTEN: u64 = INIT_MAX_LEN as u64 - 1;
/// Entries of the root in `i_block` (60 bytes: header + 4 entries).
const ROOT_MAX: usize = 4;
/// The root's slot in the node arena.
const ROOT: usize = 0;

/// Allocates (and frees) tree blocks for the editor: the integrator
/// implements it over the allocator.
pub trait TreeBlocks {
    /// One new block near `goal` for a tree node (it will count in i_blocks).
    fn alloc_tree_block(&mut self, goal: u64, txn: &mut Transaction) -> Result<u64>;
    /// A tree node block no longer used.
    fn free_tree_block(&mut self, blk: u64, txn: &mut Transaction) -> Result<()>;
    /// A data block range no longer mapped (truncate / punch).
    fn free_data(&mut self, start: u64, len: u64, txn: &mut Transaction) -> Result<()>;
}

/// One index entry: the first file block of the child subtree, and the
/// child's slot in the arena.
#[derive(Debug, Clone, Copy)]
struct Idx {
    key: u64,
    child: usize,
}

/// One node: the root (`blk` 0) or a tree block.
#[derive(Debug, Clone)]
struct Node {
    /// Device block; 0 for the root, which lives in the inode.
    blk: u64,
    /// 0 for a leaf.
    depth: u16,
    /// Leaf entries (depth 0).
    ext: Vec<Extent>,
    /// Index entries (depth > 0).
    idx: Vec<Idx>,
    /// Changed since the last time it was queued.
    dirty: bool,
}

impl Node {
    fn len(&self) -> usize {
        if self.depth == 0 {
            self.ext.len()
        } else {
            self.idx.len()
        }
    }

    /// The first file block the node maps (its key in the parent).
    fn first_key(&self) -> Option<u64> {
        if self.depth == 0 {
            self.ext.first().map(|e| e.lblk)
        } else {
            self.idx.first().map(|i| i.key)
        }
    }
}

/// A path from the root to a leaf: `(node slot, entry index)` per level.
/// At index levels the entry is the one followed; at the leaf level it is
/// whatever position the caller is looking at.
type Path = Vec<(usize, usize)>;

/// An in-memory mirror of one inode's on-disk extent tree.
#[derive(Debug, Clone)]
pub struct ExtentTree {
    /// Node arena; slot 0 is the root, freed slots are `None`.
    nodes: Vec<Option<Node>>,
    ino: u32,
    block_size: u32,
    blocks_count: u64,
    csum: bool,
    csum_seed: u32,
    /// Entries of a block node: `(block_size - 12) / 12`.
    node_max: usize,
}

/// True when `b` may be appended to `a` as one extent
/// (ext4_can_extents_be_merged).
fn can_merge(a: &Extent, b: &Extent) -> bool {
    let max = if a.unwritten {
        MAX_UNWRITTEN
    } else {
        MAX_WRITTEN
    };
    a.unwritten == b.unwritten
        && a.end() == b.lblk
        && a.pblk.checked_add(a.len) == Some(b.pblk)
        && a.len + b.len <= max
}

impl ExtentTree {
    /// Reads the tree of `inode` (ino, generation and the per-inode csum
    /// seed come from `Inode`).
    pub fn load(ctx: &TreeCtx<'_>, inode: &Inode) -> Result<ExtentTree> {
        let blocks = extent::load_nodes(ctx, inode)?;
        let mut t = ExtentTree::empty(ctx, inode);
        t.nodes.clear();
        t.nodes.push(None);
        let root = t.parse(&inode.block, 0, &blocks)?;
        t.nodes[ROOT] = Some(root);
        Ok(t)
    }

    /// An empty tree (depth 0, root eh_max 4) for a new inode.
    pub fn empty(ctx: &TreeCtx<'_>, inode: &Inode) -> ExtentTree {
        ExtentTree {
            nodes: vec![Some(Node {
                blk: 0,
                depth: 0,
                ext: Vec::new(),
                idx: Vec::new(),
                dirty: true,
            })],
            ino: inode.ino,
            block_size: ctx.block_size,
            blocks_count: ctx.blocks_count,
            csum: ctx.csum,
            csum_seed: inode.csum_seed,
            node_max: (ctx.block_size as usize).saturating_sub(12) / 12,
        }
    }

    /// Builds the node held in `b` (already verified by the extent walk)
    /// and, below it, its children from `blocks`.
    fn parse(&mut self, b: &[u8], blk: u64, blocks: &HashMap<u64, Vec<u8>>) -> Result<Node> {
        let entries = usize::from(le16(b, 2));
        let depth = le16(b, 6);
        let max = if blk == 0 { ROOT_MAX } else { self.node_max };
        let loc = if blk == 0 {
            Location::IBlock { ino: self.ino }
        } else {
            Location::Block(blk)
        };
        if entries > max {
            // The walk accepts any eh_max that fits the node; the editor
            // rewrites nodes with the computed one and needs the entries
            // to fit it.
            return Err(Ext4Error::corrupt(
                Structure::ExtentHeader { ino: self.ino },
                loc,
                CorruptKind::CountOverMax {
                    field: "eh_entries",
                    count: entries as u64,
                    max: max as u64,
                },
            ));
        }
        let mut node = Node {
            blk,
            depth,
            ext: Vec::new(),
            idx: Vec::new(),
            dirty: false,
        };
        for i in 0..entries {
            let e = &b[12 + 12 * i..24 + 12 * i];
            let lblk = u64::from(le32(e, 0));
            if depth == 0 {
                let raw = le16(e, 4);
                let (len, unwritten) = if raw > INIT_MAX_LEN {
                    (raw - INIT_MAX_LEN, true)
                } else {
                    (raw, false)
                };
                node.ext.push(Extent {
                    lblk,
                    len: u64::from(len),
                    pblk: hilo(u32::from(le16(e, 6)), le32(e, 8)),
                    unwritten,
                });
            } else {
                let child_blk = hilo(u32::from(le16(e, 8)), le32(e, 4));
                let cb = blocks.get(&child_blk).ok_or_else(|| {
                    Ext4Error::corrupt(
                        Structure::ExtentIndex {
                            ino: self.ino,
                            entry: i,
                        },
                        loc,
                        CorruptKind::Loop { block: child_blk },
                    )
                })?;
                let child = self.parse(cb, child_blk, blocks)?;
                if child.len() == 0 && child.depth > 0 {
                    // An index node with nothing below it maps nothing
                    // and the editor could not key it.
                    return Err(Ext4Error::corrupt(
                        Structure::ExtentHeader { ino: self.ino },
                        Location::Block(child_blk),
                        CorruptKind::Zero {
                            field: "eh_entries",
                        },
                    ));
                }
                self.nodes.push(Some(child));
                node.idx.push(Idx {
                    key: lblk,
                    child: self.nodes.len() - 1,
                });
            }
        }
        if blk == 0 && depth > 0 && entries == 0 {
            return Err(Ext4Error::corrupt(
                Structure::ExtentHeader { ino: self.ino },
                loc,
                CorruptKind::Zero {
                    field: "eh_entries",
                },
            ));
        }
        Ok(node)
    }

    // ---- accessors -------------------------------------------------------

    fn n(&self, id: usize) -> &Node {
        // Slots on a path or in an index entry are always live: a freed
        // slot is unlinked from its parent in the same step.
        self.nodes[id].as_ref().expect("live node slot")
    }

    fn nm(&mut self, id: usize) -> &mut Node {
        self.nodes[id].as_mut().expect("live node slot")
    }

    fn cap(&self, id: usize) -> usize {
        if id == ROOT {
            ROOT_MAX
        } else {
            self.node_max
        }
    }

    fn ext_at(&self, p: &Path) -> Extent {
        let &(leaf, i) = p.last().expect("a path has a leaf");
        self.n(leaf).ext[i]
    }

    /// The leaf extents in order (what extent::load returns for the same
    /// tree).
    pub fn extents(&self) -> Vec<Extent> {
        let mut out = Vec::new();
        self.collect(ROOT, &mut out);
        out
    }

    fn collect(&self, id: usize, out: &mut Vec<Extent>) {
        let n = self.n(id);
        if n.depth == 0 {
            out.extend_from_slice(&n.ext);
        } else {
            for i in &n.idx {
                self.collect(i.child, out);
            }
        }
    }

    /// The tree's depth (0: the extents are in the root).
    pub fn depth(&self) -> u16 {
        self.n(ROOT).depth
    }

    /// The 60-byte root, to store in the inode's i_block (the integrator
    /// writes the inode).
    pub fn root(&self) -> [u8; 60] {
        let mut r = [0u8; 60];
        self.serialise(ROOT, &mut r);
        r
    }

    /// Tree blocks in use (index + leaf), for i_blocks.
    pub fn node_blocks(&self) -> u64 {
        self.nodes.iter().skip(1).flatten().count() as u64
    }

    /// The tree blocks in use, in no particular order (for the caller's
    /// block accounting and for tests).
    pub fn node_block_list(&self) -> Vec<u64> {
        self.nodes.iter().skip(1).flatten().map(|n| n.blk).collect()
    }

    /// The device block for file block `lblk` as an allocation goal
    /// (ext4_ext_find_goal): from the extent mapping `lblk` or the nearest
    /// one before it, `pblk + (lblk - ee_block)`; before the first extent,
    /// that extent's start extrapolated back; in a tree without extents,
    /// its leaf block; None for an empty tree of depth 0.
    pub fn goal(&self, lblk: u64) -> Option<u64> {
        let p = self.locate(lblk);
        let &(leaf, _) = p.last()?;
        let n = self.n(leaf);
        let i = n.ext.partition_point(|e| e.lblk <= lblk);
        if i > 0 {
            let e = n.ext[i - 1];
            return Some(e.pblk + (lblk - e.lblk));
        }
        if let Some(e) = n.ext.first() {
            return Some(e.pblk.saturating_sub(e.lblk - lblk));
        }
        (n.blk != 0).then_some(n.blk)
    }

    // ---- serialisation ---------------------------------------------------

    /// Writes node `id` into `out` (60 bytes for the root, a whole block
    /// otherwise), with the checksum tail for blocks under metadata_csum.
    fn serialise(&self, id: usize, out: &mut [u8]) {
        let n = self.n(id);
        let max = self.cap(id);
        out.fill(0);
        out[0..2].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        out[2..4].copy_from_slice(&(n.len() as u16).to_le_bytes());
        out[4..6].copy_from_slice(&(max as u16).to_le_bytes());
        out[6..8].copy_from_slice(&n.depth.to_le_bytes());
        // eh_generation (8..12) stays 0.
        for (i, e) in n.ext.iter().enumerate() {
            let o = &mut out[12 + 12 * i..24 + 12 * i];
            let raw_len = if e.unwritten {
                e.len as u16 + INIT_MAX_LEN
            } else {
                e.len as u16
            };
            o[0..4].copy_from_slice(&(e.lblk as u32).to_le_bytes());
            o[4..6].copy_from_slice(&raw_len.to_le_bytes());
            o[6..8].copy_from_slice(&((e.pblk >> 32) as u16).to_le_bytes());
            o[8..12].copy_from_slice(&(e.pblk as u32).to_le_bytes());
        }
        for (i, x) in n.idx.iter().enumerate() {
            let o = &mut out[12 + 12 * i..24 + 12 * i];
            let cblk = self.n(x.child).blk;
            o[0..4].copy_from_slice(&(x.key as u32).to_le_bytes());
            o[4..8].copy_from_slice(&(cblk as u32).to_le_bytes());
            o[8..10].copy_from_slice(&((cblk >> 32) as u16).to_le_bytes());
        }
        if id != ROOT && self.csum {
            let tail = 12 + 12 * max;
            let c = chksum(self.csum_seed, &out[..tail]);
            out[tail..tail + 4].copy_from_slice(&c.to_le_bytes());
        }
    }

    /// Queues every changed tree block into `txn`.
    fn flush(&mut self, txn: &mut Transaction) {
        let bs = self.block_size as usize;
        for id in 1..self.nodes.len() {
            let Some(n) = self.nodes[id].as_ref() else {
                continue;
            };
            if !n.dirty {
                continue;
            }
            let blk = n.blk;
            let mut buf = vec![0u8; bs];
            self.serialise(id, &mut buf);
            txn.put(blk, MetaKind::Extent, Phase::Point, buf);
            self.nm(id).dirty = false;
        }
    }

    // ---- navigation ------------------------------------------------------

    /// The path the kernel's ext4_find_extent takes for `lblk`: at each
    /// index level the last entry whose key is <= `lblk` (the first when
    /// none is). The leaf entry is the last extent starting at or before
    /// `lblk` (0 when none does).
    fn locate(&self, lblk: u64) -> Path {
        let mut p = Vec::new();
        let mut id = ROOT;
        loop {
            let n = self.n(id);
            if n.depth == 0 {
                let i = n.ext.partition_point(|e| e.lblk <= lblk).saturating_sub(1);
                p.push((id, i));
                return p;
            }
            let i = n.idx.partition_point(|x| x.key <= lblk).saturating_sub(1);
            p.push((id, i));
            id = n.idx[i].child;
        }
    }

    /// Descends from the last (index) level of `p` to a leaf, always
    /// taking the first (`first`) or last entry.
    fn descend(&self, p: &mut Path, first: bool) {
        loop {
            let &(id, i) = p.last().expect("non-empty path");
            let n = self.n(id);
            if n.depth == 0 {
                return;
            }
            let c = self.n(n.idx[i].child);
            let ci = if first { 0 } else { c.len().saturating_sub(1) };
            p.push((n.idx[i].child, ci));
        }
    }

    /// The path to the next leaf after the one `p` ends in.
    fn next_leaf(&self, p: &Path) -> Option<Path> {
        for k in (0..p.len().saturating_sub(1)).rev() {
            let (id, i) = p[k];
            if i + 1 < self.n(id).len() {
                let mut q = p[..k].to_vec();
                q.push((id, i + 1));
                self.descend(&mut q, true);
                return Some(q);
            }
        }
        None
    }

    /// The path to the leaf before the one `p` ends in.
    fn prev_leaf(&self, p: &Path) -> Option<Path> {
        for k in (0..p.len().saturating_sub(1)).rev() {
            let (id, i) = p[k];
            if i > 0 {
                let mut q = p[..k].to_vec();
                q.push((id, i - 1));
                self.descend(&mut q, false);
                return Some(q);
            }
        }
        None
    }

    /// The extent at leaf position `i` of `p`, or the first one after it
    /// (in this leaf or a later one).
    fn at_or_next(&self, mut p: Path, mut i: usize) -> Option<Path> {
        loop {
            let leaf = p.last()?.0;
            if i < self.n(leaf).ext.len() {
                if let Some(last) = p.last_mut() {
                    last.1 = i;
                }
                return Some(p);
            }
            p = self.next_leaf(&p)?;
            i = 0;
        }
    }

    /// The extent before leaf position `i` of `p` (in this leaf or an
    /// earlier one).
    fn before(&self, mut p: Path, i: usize) -> Option<Path> {
        if i > 0 {
            if let Some(last) = p.last_mut() {
                last.1 = i - 1;
            }
            return Some(p);
        }
        loop {
            p = self.prev_leaf(&p)?;
            let leaf = p.last()?.0;
            let n = self.n(leaf).ext.len();
            if n > 0 {
                if let Some(last) = p.last_mut() {
                    last.1 = n - 1;
                }
                return Some(p);
            }
        }
    }

    /// The first extent that ends after `lblk`, with its path.
    fn first_ending_after(&self, lblk: u64) -> Option<Path> {
        let p = self.locate(lblk);
        let leaf = p.last()?.0;
        let i = self.n(leaf).ext.partition_point(|e| e.end() <= lblk);
        self.at_or_next(p, i)
    }

    // ---- primitive edits -------------------------------------------------

    /// Sets the key of every ancestor whose subtree now starts elsewhere,
    /// from level `level` of `p` upward, while the node is its parent's
    /// first entry (ext4_ext_correct_indexes).
    fn fix_keys(&mut self, p: &Path, level: usize) {
        for k in (1..=level).rev() {
            let Some(first) = self.n(p[k].0).first_key() else {
                return;
            };
            let (pid, pi) = p[k - 1];
            let parent = self.nm(pid);
            if parent.idx[pi].key != first {
                parent.idx[pi].key = first;
                parent.dirty = true;
            }
            if pi != 0 {
                return;
            }
        }
    }

    /// Replaces the extent `p` points at.
    fn set_ext(&mut self, p: &Path, e: Extent) {
        let &(leaf, i) = p.last().expect("a path has a leaf");
        let n = self.nm(leaf);
        n.ext[i] = e;
        n.dirty = true;
        if i == 0 {
            self.fix_keys(p, p.len() - 1);
        }
    }

    /// Removes the extent `p` points at; frees nodes left empty, their
    /// index entries with them, and resets an emptied tree to an empty
    /// root leaf (as ext4_ext_rm_idx / ext4_ext_remove_space).
    fn delete_ext(
        &mut self,
        p: &Path,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let d = p.len() - 1;
        let (leaf, i) = p[d];
        {
            let n = self.nm(leaf);
            n.ext.remove(i);
            n.dirty = true;
        }
        let mut k = d;
        let mut removed_at = i;
        let mut freed = Vec::new();
        while k > 0 && self.n(p[k].0).len() == 0 {
            let id = p[k].0;
            if let Some(n) = self.nodes[id].take() {
                freed.push(n.blk);
            }
            let (pid, pi) = p[k - 1];
            let parent = self.nm(pid);
            parent.idx.remove(pi);
            parent.dirty = true;
            removed_at = pi;
            k -= 1;
        }
        if k == 0 && self.n(ROOT).len() == 0 {
            let r = self.nm(ROOT);
            r.depth = 0;
            r.idx.clear();
            r.ext.clear();
            r.dirty = true;
        } else if removed_at == 0 {
            self.fix_keys(p, k);
        }
        for blk in freed {
            blocks.free_tree_block(blk, txn)?;
        }
        Ok(())
    }

    /// Inserts `e` into the leaf where it sorts, without merging: with
    /// room, in place; appending past a full leaf, into the next leaf if
    /// it has room; else after a split or growth in depth
    /// (ext4_ext_insert_extent steps 2-4). `e` may overlap an extent it
    /// is being split from: it sorts after it.
    fn insert_raw(
        &mut self,
        e: Extent,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        loop {
            let mut p = self.locate(e.lblk);
            let d = p.len() - 1;
            let leaf = p[d].0;
            let pos = self.n(leaf).ext.partition_point(|x| x.lblk <= e.lblk);
            let len = self.n(leaf).ext.len();
            if len < self.cap(leaf) {
                let n = self.nm(leaf);
                n.ext.insert(pos, e);
                n.dirty = true;
                p[d].1 = pos;
                if pos == 0 {
                    self.fix_keys(&p, d);
                }
                return Ok(());
            }
            if pos == len {
                if let Some(mut q) = self.next_leaf(&p) {
                    let nl = q[q.len() - 1].0;
                    if self.n(nl).ext.len() < self.cap(nl) {
                        let n = self.nm(nl);
                        n.ext.insert(0, e);
                        n.dirty = true;
                        let qd = q.len() - 1;
                        q[qd].1 = 0;
                        self.fix_keys(&q, qd);
                        return Ok(());
                    }
                }
            }
            self.create_new_leaf(&p, e.lblk, blocks, txn)?;
        }
    }

    /// Makes room in the tree for one more extent at `lblk` on the full
    /// leaf of `p` (ext4_ext_create_new_leaf): split below the nearest
    /// ancestor with a free slot, or grow the tree in depth when there is
    /// none (the caller retries, which splits the grown tree if needed).
    fn create_new_leaf(
        &mut self,
        p: &Path,
        lblk: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let d = p.len() - 1;
        let mut at = d;
        while at > 0 && self.n(p[at].0).len() >= self.cap(p[at].0) {
            at -= 1;
        }
        if at < d && self.n(p[at].0).len() < self.cap(p[at].0) {
            self.split(p, at, lblk, blocks, txn)
        } else {
            self.grow(blocks, txn)
        }
    }

    /// ext4_ext_grow_indepth: the root's entries move to a new block, and
    /// the root becomes one index entry pointing at it.
    fn grow(&mut self, blocks: &mut dyn TreeBlocks, txn: &mut Transaction) -> Result<()> {
        let first = self.extents().first().map(|e| e.lblk).unwrap_or(0);
        let goal = self.goal(first).unwrap_or(0);
        let blk = blocks.alloc_tree_block(goal, txn)?;
        let root = self.nm(ROOT);
        let moved = Node {
            blk,
            depth: root.depth,
            ext: std::mem::take(&mut root.ext),
            idx: std::mem::take(&mut root.idx),
            dirty: true,
        };
        let key = moved.first_key().unwrap_or(0);
        root.depth += 1;
        root.dirty = true;
        self.nodes.push(Some(moved));
        let child = self.nodes.len() - 1;
        self.nm(ROOT).idx.push(Idx { key, child });
        Ok(())
    }

    /// ext4_ext_split: below the ancestor at level `at` of `p` (which has
    /// a free slot), one new node per level down to the leaf takes the
    /// entries right of the path; the ancestor gets an index entry for the
    /// new subtree. Every block is allocated before anything changes.
    fn split(
        &mut self,
        p: &Path,
        at: usize,
        lblk: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let d = p.len() - 1;
        let leaf = p[d].0;
        // The kernel's p_ext: the last extent starting at or before lblk.
        let m = self
            .n(leaf)
            .ext
            .partition_point(|x| x.lblk <= lblk)
            .saturating_sub(1);
        let (border, from) = match self.n(leaf).ext.get(m + 1) {
            Some(x) => (x.lblk, m + 1),
            None => (lblk, self.n(leaf).ext.len()),
        };
        // New blocks: [leaf level, d-1, ..., at+1], each next to the node
        // it splits.
        let mut new_blks = Vec::with_capacity(d - at);
        for k in (at + 1..=d).rev() {
            let goal = self.n(p[k].0).blk + 1;
            match blocks.alloc_tree_block(goal, txn) {
                Ok(b) => new_blks.push(b),
                Err(e) => {
                    for b in new_blks {
                        // Best effort: the allocation error is the one to
                        // report.
                        let _ = blocks.free_tree_block(b, txn);
                    }
                    return Err(e);
                }
            }
        }
        let mut new_blks = new_blks.into_iter();
        let moved = {
            let n = self.nm(leaf);
            let moved = n.ext.split_off(from);
            if !moved.is_empty() {
                n.dirty = true;
            }
            moved
        };
        self.nodes.push(Some(Node {
            blk: new_blks.next().expect("one block per level"),
            depth: 0,
            ext: moved,
            idx: Vec::new(),
            dirty: true,
        }));
        let mut child = self.nodes.len() - 1;
        for k in (at + 1..d).rev() {
            let (id, i) = p[k];
            let n = self.nm(id);
            let depth = n.depth;
            let rest = n.idx.split_off(i + 1);
            if !rest.is_empty() {
                n.dirty = true;
            }
            let mut idx = vec![Idx { key: border, child }];
            idx.extend(rest);
            self.nodes.push(Some(Node {
                blk: new_blks.next().expect("one block per level"),
                depth,
                ext: Vec::new(),
                idx,
                dirty: true,
            }));
            child = self.nodes.len() - 1;
        }
        let (id, i) = p[at];
        let n = self.nm(id);
        n.idx.insert(i + 1, Idx { key: border, child });
        n.dirty = true;
        Ok(())
    }

    // ---- operations ------------------------------------------------------

    /// Maps `[lblk, lblk+len)` to `[pblk, ...)` with state `unwritten`;
    /// the range must be a hole in the tree (else a refusal error, nothing
    /// changed). Merges with neighbours (same state, logically and
    /// physically contiguous, combined length <= 32768 written / 32767
    /// unwritten), splits long requests into extents of at most the length
    /// limit, inserts sorted, splits a full leaf (new block from
    /// TreeBlocks, goal = next to the old one), corrects parent index
    /// keys, grows the tree in depth when the root is full.
    ///
    /// On an allocation error part way through a long request the tree
    /// holds the pieces inserted so far (consistent, and queued in `txn`).
    pub fn insert(
        &mut self,
        lblk: u64,
        len: u64,
        pblk: u64,
        unwritten: bool,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let refuse = |why: String| {
            Err(Ext4Error::Refused(format!(
                "mapping file blocks {lblk}..{} of inode {} to device block {pblk}: {why}",
                lblk.saturating_add(len),
                self.ino
            )))
        };
        if lblk.checked_add(len).is_none_or(|e| e > MAX_FILE_BLOCKS) {
            return refuse(format!("ends past the file block limit {MAX_FILE_BLOCKS}"));
        }
        if pblk == 0 || pblk.checked_add(len).is_none_or(|e| e > self.blocks_count) {
            return refuse(format!(
                "device blocks outside 1..{} of the filesystem",
                self.blocks_count
            ));
        }
        if let Some(p) = self.first_ending_after(lblk) {
            let e = self.ext_at(&p);
            if e.lblk < lblk + len {
                return refuse(format!(
                    "file blocks {}..{} are already mapped",
                    e.lblk,
                    e.end()
                ));
            }
        }
        let max = if unwritten {
            MAX_UNWRITTEN
        } else {
            MAX_WRITTEN
        };
        let mut done = 0;
        let mut res = Ok(());
        while done < len {
            let n = (len - done).min(max);
            let e = Extent {
                lblk: lblk + done,
                len: n,
                pblk: pblk + done,
                unwritten,
            };
            res = self.insert_one(e, blocks, txn);
            if res.is_err() {
                break;
            }
            done += n;
        }
        self.flush(txn);
        res
    }

    /// Inserts one extent (within the length limit, over a hole), merging
    /// it into its left neighbour (then that into the right one) or into
    /// its right neighbour when it can.
    fn insert_one(
        &mut self,
        e: Extent,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let p = self.locate(e.lblk);
        let leaf = p[p.len() - 1].0;
        let pos = self.n(leaf).ext.partition_point(|x| x.lblk < e.lblk);
        let left = self.before(p.clone(), pos);
        let right = self.at_or_next(p, pos);
        if let Some(lp) = left {
            let l = self.ext_at(&lp);
            if can_merge(&l, &e) {
                let merged = Extent {
                    len: l.len + e.len,
                    ..l
                };
                self.set_ext(&lp, merged);
                if let Some(rp) = right {
                    let r = self.ext_at(&rp);
                    if can_merge(&merged, &r) {
                        self.set_ext(
                            &lp,
                            Extent {
                                len: merged.len + r.len,
                                ..merged
                            },
                        );
                        self.delete_ext(&rp, blocks, txn)?;
                    }
                }
                return Ok(());
            }
        }
        if let Some(rp) = right {
            let r = self.ext_at(&rp);
            if can_merge(&e, &r) {
                self.set_ext(
                    &rp,
                    Extent {
                        len: e.len + r.len,
                        ..e
                    },
                );
                return Ok(());
            }
        }
        self.insert_raw(e, blocks, txn)
    }

    /// Merges the extent starting at `lblk` with its left, then its right
    /// neighbour where the merge rules allow (ext4_ext_try_to_merge).
    fn merge_around(
        &mut self,
        lblk: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let Some(p) = self.first_ending_after(lblk) else {
            return Ok(());
        };
        let mut cur = self.ext_at(&p);
        let i = p[p.len() - 1].1;
        if let Some(lp) = self.before(p.clone(), i) {
            let l = self.ext_at(&lp);
            if can_merge(&l, &cur) {
                cur = Extent {
                    len: l.len + cur.len,
                    ..l
                };
                self.set_ext(&lp, cur);
                self.delete_ext(&p, blocks, txn)?;
            }
        }
        let Some(p) = self.first_ending_after(cur.lblk) else {
            return Ok(());
        };
        let i = p[p.len() - 1].1;
        if let Some(rp) = self.at_or_next(p.clone(), i + 1) {
            let r = self.ext_at(&rp);
            if can_merge(&cur, &r) {
                self.set_ext(
                    &p,
                    Extent {
                        len: cur.len + r.len,
                        ..cur
                    },
                );
                self.delete_ext(&rp, blocks, txn)?;
            }
        }
        Ok(())
    }

    /// Cuts the extent containing `at` in two at `at` (ext4_split_extent_at):
    /// the right part is inserted first, so that a failed allocation leaves
    /// the extent whole. `at` must lie strictly inside the extent.
    fn split_at(
        &mut self,
        at: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let Some(p) = self.first_ending_after(at) else {
            return Ok(());
        };
        let e = self.ext_at(&p);
        if e.lblk >= at {
            return Ok(());
        }
        let right = Extent {
            lblk: at,
            len: e.end() - at,
            pblk: e.pblk + (at - e.lblk),
            unwritten: e.unwritten,
        };
        self.insert_raw(right, blocks, txn)?;
        let p = self.locate(e.lblk);
        self.set_ext(
            &p,
            Extent {
                len: at - e.lblk,
                ..e
            },
        );
        Ok(())
    }

    /// Marks `[lblk, lblk+len)` written (unwritten -> written conversion
    /// after I/O): splits the unwritten extents at the range edges (up to
    /// unwritten|written|unwritten), merges the written part with written
    /// neighbours. Blocks of the range that are already written or holes
    /// are left alone.
    ///
    /// The kernel's zero-out of short unwritten remainders is not done:
    /// the split is always made.
    pub fn mark_written(
        &mut self,
        lblk: u64,
        len: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let res = self.mark_written_inner(lblk, lblk.saturating_add(len), blocks, txn);
        self.flush(txn);
        res
    }

    fn mark_written_inner(
        &mut self,
        lblk: u64,
        end: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let mut pos = lblk;
        while pos < end {
            let Some(p) = self.first_ending_after(pos) else {
                break;
            };
            let e = self.ext_at(&p);
            if e.lblk >= end {
                break;
            }
            if !e.unwritten {
                pos = e.end();
                continue;
            }
            let a = e.lblk.max(pos);
            let b = e.end().min(end);
            if b < e.end() {
                self.split_at(b, blocks, txn)?;
            }
            if a > e.lblk {
                self.split_at(a, blocks, txn)?;
            }
            let p = self.locate(a);
            let x = self.ext_at(&p);
            debug_assert_eq!((x.lblk, x.end()), (a, b));
            self.set_ext(
                &p,
                Extent {
                    unwritten: false,
                    ..x
                },
            );
            self.merge_around(a, blocks, txn)?;
            // The unwritten remainders are shorter than the extent was, so
            // a neighbour too long to merge with it may now take them.
            if b < e.end() {
                self.merge_around(b, blocks, txn)?;
            }
            if a > e.lblk {
                self.merge_around(e.lblk, blocks, txn)?;
            }
            pos = b;
        }
        Ok(())
    }

    /// Removes every mapping in `[lblk, end)` (`end = u64::MAX` for
    /// truncate): shortens or splits the straddling extents (a punch in
    /// the middle of an extent makes two), frees the data blocks through
    /// `blocks.free_data`, frees emptied leaf/index blocks and their index
    /// entries, and an emptied tree becomes depth 0 with the root's eh_max
    /// 4 (as ext4_ext_remove_space).
    ///
    /// Data blocks are freed after the mapping is gone from the tree. The
    /// caller must not reuse freed blocks before `txn` is committed.
    pub fn remove(
        &mut self,
        lblk: u64,
        end: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        let res = self.remove_inner(lblk, end, blocks, txn);
        self.flush(txn);
        res
    }

    fn remove_inner(
        &mut self,
        lblk: u64,
        end: u64,
        blocks: &mut dyn TreeBlocks,
        txn: &mut Transaction,
    ) -> Result<()> {
        if lblk >= end {
            return Ok(());
        }
        while let Some(p) = self.first_ending_after(lblk) {
            let e = self.ext_at(&p);
            if e.lblk >= end {
                break;
            }
            let a = e.lblk.max(lblk);
            let b = e.end().min(end);
            if a > e.lblk && b < e.end() {
                // A punch inside one extent: the right part becomes its
                // own extent (allocating a leaf if need be) first.
                self.split_at(b, blocks, txn)?;
                let p = self.locate(e.lblk);
                self.set_ext(
                    &p,
                    Extent {
                        len: a - e.lblk,
                        ..e
                    },
                );
            } else if a > e.lblk {
                self.set_ext(
                    &p,
                    Extent {
                        len: a - e.lblk,
                        ..e
                    },
                );
            } else if b < e.end() {
                self.set_ext(
                    &p,
                    Extent {
                        lblk: b,
                        len: e.end() - b,
                        pblk: e.pblk + (b - e.lblk),
                        unwritten: e.unwritten,
                    },
                );
            } else {
                self.delete_ext(&p, blocks, txn)?;
            }
            blocks.free_data(e.pblk + (a - e.lblk), b - a, txn)?;
        }
        Ok(())
    }

    /// Checks the invariants of the module comment; the first broken one
    /// is returned as text (tests call it after every operation).
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut prev_end = 0;
        self.check_node(ROOT, None, &mut prev_end)
    }

    fn check_node(
        &self,
        id: usize,
        key: Option<u64>,
        prev_end: &mut u64,
    ) -> std::result::Result<(), String> {
        let n = self.n(id);
        if n.len() > self.cap(id) {
            return Err(format!(
                "node {} has {} > {} entries",
                n.blk,
                n.len(),
                self.cap(id)
            ));
        }
        if id != ROOT && n.len() == 0 {
            return Err(format!("node {} is empty", n.blk));
        }
        if id == ROOT && n.depth > 0 && n.len() == 0 {
            return Err("empty root index".into());
        }
        if let (Some(k), Some(f)) = (key, n.first_key()) {
            if k != f {
                return Err(format!("index key {k} but node {} starts at {f}", n.blk));
            }
        }
        if n.depth == 0 {
            for e in &n.ext {
                let max = if e.unwritten {
                    MAX_UNWRITTEN
                } else {
                    MAX_WRITTEN
                };
                if e.len == 0 || e.len > max {
                    return Err(format!("extent {e:?} has a bad length"));
                }
                if e.lblk < *prev_end {
                    return Err(format!("extent {e:?} overlaps or is unsorted"));
                }
                *prev_end = e.end();
            }
        } else {
            for x in &n.idx {
                let c = self.n(x.child);
                if c.depth + 1 != n.depth {
                    return Err(format!(
                        "node {} has depth {} under {}",
                        c.blk, c.depth, n.depth
                    ));
                }
                self.check_node(x.child, Some(x.key), prev_end)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::flags;
    use bufwrite_engine::device::mem::Mem;
    use bufwrite_engine::BlockDevice;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Tree blocks from a counter (never reused), with the live set and
    /// every freed data block recorded.
    struct Fake {
        next: u64,
        live: BTreeSet<u64>,
        freed_data: Vec<u64>,
        /// Allocations left before NoSpace (for the failure test).
        budget: Option<u64>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                next: 16,
                live: BTreeSet::new(),
                freed_data: Vec::new(),
                budget: None,
            }
        }
    }

    impl TreeBlocks for Fake {
        fn alloc_tree_block(&mut self, _goal: u64, _txn: &mut Transaction) -> Result<u64> {
            if let Some(b) = self.budget.as_mut() {
                if *b == 0 {
                    return Err(Ext4Error::NoSpace("tree block".into()));
                }
                *b -= 1;
            }
            let b = self.next;
            self.next += 1;
            assert!(self.live.insert(b));
            Ok(b)
        }
        fn free_tree_block(&mut self, blk: u64, _txn: &mut Transaction) -> Result<()> {
            assert!(self.live.remove(&blk), "freeing {blk}, not in use");
            Ok(())
        }
        fn free_data(&mut self, start: u64, len: u64, _txn: &mut Transaction) -> Result<()> {
            self.freed_data.extend(start..start + len);
            Ok(())
        }
    }

    const BS: u32 = 1024;
    /// Tree blocks come from the Mem device; data blocks are only numbers.
    const DEV_BLOCKS: u64 = 16384;

    fn inode(block: [u8; 60]) -> Inode {
        Inode {
            ino: 12,
            mode: 0x81A4,
            links: 1,
            size: 0,
            flags: flags::EXTENTS,
            generation: 77,
            block,
            csum_seed: 0xDEAD_BEEF,
        }
    }

    fn ctx(dev: &Mem) -> TreeCtx<'_> {
        TreeCtx {
            dev,
            block_size: BS,
            blocks_count: 1 << 40,
            csum: true,
        }
    }

    /// Commits `txn`, reloads the tree from the device and the root, and
    /// checks it equals `t`.
    fn reload_same(dev: &Mem, t: &ExtentTree, txn: Transaction) {
        txn.commit(dev, BS).unwrap();
        let ino = inode(t.root());
        let again = ExtentTree::load(&ctx(dev), &ino).unwrap();
        assert_eq!(again.extents(), t.extents());
        assert_eq!(again.node_blocks(), t.node_blocks());
        assert_eq!(extent::load(&ctx(dev), &ino).unwrap(), t.extents());
        again.check().unwrap();
    }

    fn new_tree(dev: &Mem) -> ExtentTree {
        ExtentTree::empty(&ctx(dev), &inode([0; 60]))
    }

    #[test]
    fn empty_root_bytes() {
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let t = new_tree(&dev);
        let r = t.root();
        assert_eq!(le16(&r, 0), 0xF30A);
        assert_eq!((le16(&r, 2), le16(&r, 4), le16(&r, 6)), (0, 4, 0));
        assert!(r[8..].iter().all(|&b| b == 0));
        assert_eq!(t.goal(5), None);
        assert_eq!(t.node_blocks(), 0);
    }

    #[test]
    fn merge_split_and_refusal() {
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let mut t = new_tree(&dev);
        let mut f = Fake::new();
        let mut txn = Transaction::new();
        t.insert(10, 5, 1000, false, &mut f, &mut txn).unwrap();
        t.insert(20, 5, 1010, false, &mut f, &mut txn).unwrap();
        // Fills the gap contiguously on both sides: one extent.
        t.insert(15, 5, 1005, false, &mut f, &mut txn).unwrap();
        assert_eq!(
            t.extents(),
            vec![Extent {
                lblk: 10,
                len: 15,
                pblk: 1000,
                unwritten: false
            }]
        );
        let e = t.insert(12, 20, 5000, false, &mut f, &mut txn).unwrap_err();
        assert!(matches!(e, Ext4Error::Refused(_)), "{e}");
        assert_eq!(t.extents().len(), 1);
        assert_eq!(t.goal(30), Some(1020));
        assert_eq!(t.goal(12), Some(1002));
        assert_eq!(t.goal(4), Some(994));
        // A long unwritten request is cut at 32767.
        t.insert(100, 70_000, 200_000, true, &mut f, &mut txn)
            .unwrap();
        let lens: Vec<u64> = t.extents().iter().map(|e| e.len).collect();
        assert_eq!(lens, vec![15, 32767, 32767, 70_000 - 2 * 32767]);
        // Middle conversion: unwritten | written | unwritten.
        t.mark_written(200, 10, &mut f, &mut txn).unwrap();
        let v = t.extents();
        assert_eq!(v.len(), 6);
        assert_eq!(
            v[2],
            Extent {
                lblk: 200,
                len: 10,
                pblk: 200_100,
                unwritten: false
            }
        );
        assert!(v[1].unwritten && v[3].unwritten && v[1].end() == 200 && v[3].lblk == 210);
        // Punch in the middle of a written extent makes two.
        t.remove(12, 14, &mut f, &mut txn).unwrap();
        assert_eq!(f.freed_data, vec![1002, 1003]);
        assert_eq!(t.extents()[0].len, 2);
        assert_eq!(t.extents()[1].lblk, 14);
        t.check().unwrap();
        reload_same(&dev, &t, txn);
        // Truncate everything: back to an empty root, no blocks.
        let mut txn = Transaction::new();
        t.remove(0, u64::MAX, &mut f, &mut txn).unwrap();
        assert!(t.extents().is_empty());
        assert_eq!(t.root(), new_tree(&dev).root());
        assert_eq!(f.freed_data.len() as u64, 15 + 70_000);
    }

    /// Sequential 1-block extents force depth 2 and back to depth 0.
    #[test]
    fn grows_to_depth_two_and_back() {
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let mut t = new_tree(&dev);
        let mut f = Fake::new();
        let mut txn = Transaction::new();
        // 84 per 1 KiB leaf, 4 in the root: more than 4 * 84 needs depth 2.
        for i in 0..1000u64 {
            t.insert(2 * i, 1, 100_000 + 3 * i, false, &mut f, &mut txn)
                .unwrap();
        }
        assert_eq!(t.depth(), 2);
        t.check().unwrap();
        assert_eq!(t.node_blocks() as usize, f.live.len());
        reload_same(&dev, &t, txn);
        let mut txn = Transaction::new();
        // Remove from the middle outward, one extent at a time.
        for i in (0..1000u64).rev().step_by(2).chain((0..1000u64).step_by(2)) {
            t.remove(2 * i, 2 * i + 1, &mut f, &mut txn).unwrap();
            t.check().unwrap();
        }
        assert!(t.extents().is_empty());
        assert_eq!(t.depth(), 0);
        assert_eq!(t.node_blocks(), 0);
        assert!(f.live.is_empty());
        assert_eq!(f.freed_data.len(), 1000);
    }

    #[test]
    fn failed_split_changes_nothing() {
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let mut t = new_tree(&dev);
        let mut f = Fake::new();
        let mut txn = Transaction::new();
        for i in 0..4u64 {
            t.insert(10 * i, 3, 500 + 10 * i, true, &mut f, &mut txn)
                .unwrap();
        }
        f.budget = Some(0);
        let before = t.extents();
        let no_space = |r: Result<()>| matches!(r, Err(Ext4Error::NoSpace(_)));
        assert!(no_space(t.insert(100, 1, 900, false, &mut f, &mut txn)));
        assert_eq!(t.extents(), before);
        // A conversion or a punch that needs a split keeps the extent whole.
        assert!(no_space(t.mark_written(11, 1, &mut f, &mut txn)));
        assert_eq!(t.extents(), before);
        assert!(no_space(t.remove(21, 22, &mut f, &mut txn)));
        assert_eq!(t.extents(), before);
        assert!(f.freed_data.is_empty());
        // Converting a whole extent and cutting an edge need no block.
        t.mark_written(0, 3, &mut f, &mut txn).unwrap();
        t.remove(30, 31, &mut f, &mut txn).unwrap();
        assert!(!t.extents()[0].unwritten);
        assert_eq!(t.extents()[3].lblk, 31);
        t.check().unwrap();
        f.budget = None;
        t.mark_written(11, 1, &mut f, &mut txn).unwrap();
        assert_eq!(t.depth(), 1);
        t.check().unwrap();
        reload_same(&dev, &t, txn);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            lblk: u64,
            len: u64,
            pblk: Option<u64>,
            unwritten: bool,
        },
        Many {
            start: u64,
            count: u64,
            unwritten: bool,
        },
        Written {
            lblk: u64,
            len: u64,
        },
        Remove {
            lblk: u64,
            len: Option<u64>,
        },
    }

    fn op(with_remove: bool) -> impl Strategy<Value = Op> {
        let ins = (
            0..6000u64,
            1..8u64,
            proptest::option::of(1u64..1 << 30),
            any::<bool>(),
        )
            .prop_map(|(lblk, len, pblk, unwritten)| Op::Insert {
                lblk,
                len,
                pblk,
                unwritten,
            });
        let long =
            (0..6000u64, 32_000..34_000u64, any::<bool>()).prop_map(|(lblk, len, u)| Op::Insert {
                lblk,
                len,
                pblk: Some(1 << 32),
                unwritten: u,
            });
        let many = (0..3000u64, 50..400u64, any::<bool>()).prop_map(|(start, count, unwritten)| {
            Op::Many {
                start,
                count,
                unwritten,
            }
        });
        let wr = (0..6000u64, 1..200u64).prop_map(|(lblk, len)| Op::Written { lblk, len });
        let rm = (0..6000u64, proptest::option::of(1..600u64))
            .prop_map(|(lblk, len)| Op::Remove { lblk, len });
        let rm_w = if with_remove { 3 } else { 0 };
        prop_oneof![6 => ins, 1 => long, 2 => many, 3 => wr, rm_w => rm]
    }

    type Model = BTreeMap<u64, (u64, bool)>;

    fn is_hole(m: &Model, lblk: u64, len: u64) -> bool {
        m.range(lblk..lblk + len).next().is_none()
    }

    /// A fresh pblk for `lblk`: contiguous with the block before it when
    /// asked for (`None`) and possible, so that merges happen.
    fn pick(m: &Model, lblk: u64, want: Option<u64>, salt: &mut u64) -> u64 {
        match want {
            Some(p) => p,
            None => match lblk.checked_sub(1).and_then(|b| m.get(&b)) {
                Some(&(p, _)) => p + 1,
                None => {
                    *salt += 7919;
                    (1 << 20) + *salt * 64
                }
            },
        }
    }

    fn apply(
        t: &mut ExtentTree,
        m: &mut Model,
        f: &mut Fake,
        freed: &mut Vec<u64>,
        txn: &mut Transaction,
        op: &Op,
        salt: &mut u64,
    ) {
        match *op {
            Op::Insert {
                lblk,
                len,
                pblk,
                unwritten,
            } => {
                let p = pick(m, lblk, pblk, salt);
                // The long requests get their own region of pblks.
                let p = if len > 1000 { p + lblk * 40_000 } else { p };
                let r = t.insert(lblk, len, p, unwritten, f, txn);
                if is_hole(m, lblk, len) {
                    r.unwrap();
                    for i in 0..len {
                        m.insert(lblk + i, (p + i, unwritten));
                    }
                } else {
                    assert!(matches!(r, Err(Ext4Error::Refused(_))));
                }
            }
            Op::Many {
                start,
                count,
                unwritten,
            } => {
                for i in 0..count {
                    let lblk = start + 2 * i;
                    if !is_hole(m, lblk, 1) {
                        continue;
                    }
                    *salt += 13;
                    let p = (1 << 24) + *salt * 5;
                    t.insert(lblk, 1, p, unwritten, f, txn).unwrap();
                    m.insert(lblk, (p, unwritten));
                }
            }
            Op::Written { lblk, len } => {
                t.mark_written(lblk, len, f, txn).unwrap();
                for (_, v) in m.range_mut(lblk..lblk + len) {
                    v.1 = false;
                }
            }
            Op::Remove { lblk, len } => {
                let end = len.map_or(u64::MAX, |l| lblk + l);
                t.remove(lblk, end, f, txn).unwrap();
                let gone: Vec<u64> = m.range(lblk..end).map(|(&k, _)| k).collect();
                for k in gone {
                    let (p, _) = m.remove(&k).unwrap();
                    freed.push(p);
                }
            }
        }
    }

    /// The tree's extents, one entry per block.
    fn expand(t: &ExtentTree) -> Model {
        let mut out = Model::new();
        for e in t.extents() {
            for i in 0..e.len {
                out.insert(e.lblk + i, (e.pblk + i, e.unwritten));
            }
        }
        out
    }

    fn run(ops: &[Op], maximal: bool) {
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let mut t = new_tree(&dev);
        let mut m = Model::new();
        let mut f = Fake::new();
        let mut freed = Vec::new();
        let mut salt = 0;
        for op in ops {
            let mut txn = Transaction::new();
            apply(&mut t, &mut m, &mut f, &mut freed, &mut txn, op, &mut salt);
            t.check().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
            assert_eq!(expand(&t), m, "after {op:?}");
            let mut a = f.freed_data.clone();
            let mut b = freed.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "freed data after {op:?}");
            let live: BTreeSet<u64> = t.node_block_list().into_iter().collect();
            assert_eq!(live, f.live, "tree blocks after {op:?}");
            if maximal {
                for w in t.extents().windows(2) {
                    assert!(
                        !can_merge(&w[0], &w[1]),
                        "{:?} could merge, after {op:?}",
                        w
                    );
                }
            }
            reload_same(&dev, &t, txn);
        }
        // Everything removed: the empty root again, no blocks.
        let mut txn = Transaction::new();
        t.remove(0, u64::MAX, &mut f, &mut txn).unwrap();
        assert_eq!(t.root(), new_tree(&dev).root());
        assert!(f.live.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn model_with_removal(ops in proptest::collection::vec(op(true), 1..60)) {
            run(&ops, false);
        }

        #[test]
        fn model_merges_maximally(ops in proptest::collection::vec(op(false), 1..40)) {
            run(&ops, true);
        }
    }

    /// A fixed sequence that reaches depth 2 and comes back, through the
    /// model harness.
    #[test]
    fn model_depth_two() {
        let mut ops: Vec<Op> = (0..6)
            .map(|k| Op::Many {
                start: k * 800 + (k % 2),
                count: 400,
                unwritten: k % 3 == 0,
            })
            .collect();
        ops.push(Op::Written { lblk: 0, len: 2500 });
        ops.push(Op::Remove {
            lblk: 300,
            len: Some(3000),
        });
        ops.push(Op::Remove { lblk: 0, len: None });
        let dev = Mem::new(DEV_BLOCKS * u64::from(BS));
        let mut t = new_tree(&dev);
        let mut m = Model::new();
        let mut f = Fake::new();
        let (mut freed, mut salt) = (Vec::new(), 0);
        let mut depths = Vec::new();
        for op in &ops {
            let mut txn = Transaction::new();
            apply(&mut t, &mut m, &mut f, &mut freed, &mut txn, op, &mut salt);
            t.check().unwrap();
            assert_eq!(expand(&t), m);
            depths.push(t.depth());
            reload_same(&dev, &t, txn);
        }
        assert!(depths.contains(&2), "{depths:?}");
        assert_eq!(*depths.last().unwrap(), 0);
        run(&ops, false);
        let _ = dev.size();
    }
}
