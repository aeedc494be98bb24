//! `Ext4File`: the [`Mapper`] of one ext4 file, for both write paths.
//!
//! The block map lives in memory (the role of ext4's extent status tree):
//! the written and unwritten extents as the on-disk tree holds them, and the
//! delayed ranges, which exist only here and carry the reservations. Lookups
//! take a read lock, as the kernel's `ext4_es_lookup_extent` takes
//! `i_es_lock`; everything that changes the map takes the write lock, then
//! the filesystem's metadata lock ([`Meta`]), in that order.
//!
//! Where metadata goes to the disk (docs/DESIGN.md "Allocation"):
//! - `unwritten` policy: writeback allocates unwritten extents; the
//!   allocation is committed once per writeback pass (at its first
//!   completion), the conversion to written (and the on-disk size) at
//!   fsync, after the data is durable.
//! - `ordered` policy: writeback allocates written extents; the allocation
//!   and the size are committed at fsync, after the data is durable, so no
//!   extent ever points at blocks whose data is not on the disk.

use crate::error::Result;
use crate::extent::{find, Extent};
use crate::extent_tree::ExtentTree;
use crate::inode::Inode;
use crate::inode_write::RawInode;
use crate::meta::{Frees, Meta, MetaState, TreeAlloc};
use crate::superblock::ro_compat;
use crate::txn::{Phase, Transaction};
use bufwrite_engine::{
    AllocPolicy, BlockMapping, BlockSize, DevAddr, DiskBlock, Error, ExtentKind, FallocMode,
    FileBlock, FilePos, Iomap, MapIntent, Mapper, Result as EResult,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The largest file block an extent may map (file block numbers are 32 bits).
const MAX_FILE_BLOCKS: u64 = 1 << 32;

/// One ext4 file's mapping: its extents, delayed ranges, block size and
/// i_size.
pub struct Ext4File {
    path: String,
    ino: u32,
    block_size: u32,
    size: AtomicU64,
    /// Why every write is refused (read-only open), if it is.
    refusal: Option<String>,
    /// The filesystem's write side; `None` when the file may only be
    /// overwritten in place.
    meta: Option<Arc<Meta>>,
    /// Why nothing may be allocated for this file, when `meta` is `None`.
    no_alloc: String,
    st: RwLock<State>,
}

impl std::fmt::Debug for Ext4File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4File")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// The map and the inode record, under the file's lock.
struct State {
    /// Written and unwritten extents, sorted (the tree's leaves).
    extents: Vec<Extent>,
    /// The on-disk tree, for writable files.
    tree: Option<ExtentTree>,
    /// Delayed-allocation ranges: first file block -> blocks. Each block
    /// here holds one reserved block of [`Meta`].
    delayed: BTreeMap<u64, u64>,
    /// The inode record as it will be written.
    raw: Option<RawInode>,
    /// i_disksize: the size the on-disk inode has or will have at the
    /// next commit.
    disk_size: u64,
    /// Allocation edits (tree blocks) not committed yet.
    alloc_txn: Transaction,
    /// Conversion edits not committed yet (unwritten policy).
    convert_txn: Transaction,
    /// The inode record changed since the last commit.
    inode_dirty: bool,
    /// Blocks were allocated since the last commit (with a tree of depth
    /// 0 the extents live in the inode, so `alloc_txn` may be empty).
    alloc_pending: bool,
    /// Ordered policy: written extents allocated whose data no completion
    /// has confirmed yet (first file block -> (blocks, first disk block)).
    /// A commit before their data is durable turns them unwritten first.
    unconfirmed: BTreeMap<u64, (u64, u64)>,
    /// What tree edits since the last commit freed or allocated (tree
    /// blocks): released, or written early, by the next commit.
    pending_frees: Frees,
}

impl Ext4File {
    /// A file whose writes may allocate when `write` holds the write side,
    /// the tree and the inode record; otherwise one that may only be
    /// overwritten in place (or not at all, with a `refusal`), `write`
    /// saying why it may not allocate.
    pub(crate) fn new(
        path: &str,
        inode: &Inode,
        extents: Vec<Extent>,
        block_size: u32,
        refusal: Option<String>,
        write: std::result::Result<(Arc<Meta>, ExtentTree, RawInode), String>,
    ) -> Self {
        let (meta, tree, raw, no_alloc) = match write {
            Ok((m, t, r)) => (Some(m), Some(t), Some(r), String::new()),
            Err(why) => (None, None, None, why),
        };
        Ext4File {
            path: path.to_string(),
            ino: inode.ino,
            block_size,
            size: AtomicU64::new(inode.size),
            refusal,
            meta,
            no_alloc,
            st: RwLock::new(State {
                extents,
                tree,
                delayed: BTreeMap::new(),
                raw,
                disk_size: inode.size,
                alloc_txn: Transaction::new(),
                convert_txn: Transaction::new(),
                inode_dirty: false,
                alloc_pending: false,
                unconfirmed: BTreeMap::new(),
                pending_frees: Frees::default(),
            }),
        }
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The inode number.
    pub fn ino(&self) -> u32 {
        self.ino
    }

    /// The file's written and unwritten extents, sorted by file block (holes
    /// and delayed ranges are gaps between them).
    pub fn extents(&self) -> Vec<Extent> {
        self.read().extents.clone()
    }

    /// Blocks reserved by delayed allocation and not yet allocated.
    pub fn delayed_blocks(&self) -> u64 {
        self.read().delayed.values().sum()
    }

    /// The on-disk size (i_disksize) as of the last commit or the next.
    pub fn disk_size(&self) -> u64 {
        self.read().disk_size
    }

    /// True when the file was opened read-only.
    pub fn read_only(&self) -> bool {
        self.refusal.is_some()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.st.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.st.write().unwrap_or_else(|e| e.into_inner())
    }

    fn bs(&self) -> u64 {
        u64::from(self.block_size)
    }

    fn refuse(&self, what: String) -> Error {
        Error::Unsupported(format!(
            "{} (inode {}): {what}; nothing was written",
            self.path, self.ino
        ))
    }

    /// The block size as the engine's checked unit. The superblock parser
    /// accepts only powers of two from 1 KiB to 64 KiB, so the check cannot
    /// fail for a file opened through [`crate::Ext4`]; the fallback only
    /// keeps the type total (and `File::open` refuses anything but 1, 2 and
    /// 4 KiB anyway).
    #[inline]
    fn unit(&self) -> BlockSize {
        BlockSize::new(self.block_size).unwrap_or(BlockSize::PAGE)
    }

    fn writable(&self) -> EResult<&Arc<Meta>> {
        if let Some(why) = &self.refusal {
            return Err(self.refuse(format!("writes are refused because {why}")));
        }
        self.meta.as_ref().ok_or_else(|| {
            self.refuse(format!(
                "this needs allocation, which is refused on this image: {}",
                self.no_alloc
            ))
        })
    }

    /// The mapping covering `pos`, clipped to `[pos, pos + len)`, from the
    /// extents and the delayed ranges.
    fn lookup(&self, st: &State, pos: FilePos, len: u64) -> Iomap {
        let bs = self.bs();
        let blk = pos.block(self.unit()).get();
        match find(&st.extents, blk) {
            Ok(i) => {
                let e = st.extents[i];
                let start = e.lblk * bs;
                Iomap {
                    offset: pos,
                    length: len.min(e.end() * bs - pos.get()),
                    kind: if e.unwritten {
                        ExtentKind::Unwritten
                    } else {
                        ExtentKind::Mapped
                    },
                    addr: DevAddr::of(DiskBlock::new(e.pblk), self.unit()).add(pos.get() - start),
                    new: false,
                }
            }
            Err(i) => {
                let next_ext = st.extents.get(i).map_or(u64::MAX, |e| e.lblk);
                if let Some((d, n)) = delayed_covering(&st.delayed, blk) {
                    let end = (d + n).saturating_mul(bs);
                    return Iomap {
                        offset: pos,
                        length: len.min(end - pos.get()),
                        kind: ExtentKind::Delalloc,
                        addr: DevAddr::new(0),
                        new: false,
                    };
                }
                let next_delayed = st.delayed.range(blk..).next().map_or(u64::MAX, |(&d, _)| d);
                let next = next_ext.min(next_delayed).saturating_mul(bs);
                Iomap {
                    offset: pos,
                    length: len.min(next.saturating_sub(pos.get())),
                    kind: ExtentKind::Hole,
                    addr: DevAddr::new(0),
                    new: false,
                }
            }
        }
    }

    /// Reserves the hole `[blk, blk + n)` for delayed allocation; returns
    /// how many blocks from `blk` were reserved.
    fn reserve(&self, st: &mut State, blk: u64, n: u64) -> EResult<u64> {
        let meta = self.writable()?;
        if blk >= MAX_FILE_BLOCKS {
            return Err(Error::FileTooLarge {
                offset: blk.saturating_mul(self.bs()),
                len: self.bs(),
                capacity: MAX_FILE_BLOCKS * self.bs(),
            });
        }
        let n = n.min(MAX_FILE_BLOCKS - blk);
        let got = meta.reserve(n);
        if got == 0 {
            return Err(Error::NoSpace {
                offset: blk * self.bs(),
                len: n * self.bs(),
            });
        }
        insert_delayed(&mut st.delayed, blk, got);
        Ok(got)
    }

    /// Removes the delayed blocks in `[blk, end)` and returns their
    /// reservations.
    fn drop_delayed(&self, st: &mut State, blk: u64, end: u64) {
        let n = remove_delayed(&mut st.delayed, blk, end);
        if let (Some(meta), true) = (&self.meta, n > 0) {
            Meta::unreserve(&mut meta.lock(), n);
        }
    }

    /// Refreshes the in-memory extents and the inode's block area and
    /// i_blocks from the tree, after an edit.
    fn after_tree_edit(&self, st: &mut State) -> Result<()> {
        let Some(tree) = &st.tree else {
            return Ok(());
        };
        st.extents = tree.extents();
        let data: u64 = st.extents.iter().map(|e| e.len).sum();
        let sectors = (data + tree.node_blocks()) * (self.bs() / 512);
        let root = tree.root();
        let huge = self
            .meta
            .as_ref()
            .is_some_and(|m| m.sb.has_ro_compat(ro_compat::HUGE_FILE));
        if let Some(raw) = &mut st.raw {
            raw.set_block_area(&root);
            raw.set_blocks(sectors, huge)?;
        }
        st.inode_dirty = true;
        Ok(())
    }

    /// Commits `point` (tree edits) with the inode record and `frees`
    /// (and what earlier edits left pending).
    fn commit(&self, st: &mut State, point: Transaction, mut frees: Frees) -> EResult<()> {
        frees.extend(std::mem::take(&mut st.pending_frees));
        let meta = self.writable()?;
        let mut ms = meta.lock();
        let raw = st
            .raw
            .as_mut()
            .ok_or_else(|| self.refuse("no inode record".into()))?;
        raw.set_size(st.disk_size);
        raw.update_checksum(self.ino, meta.fs_seed());
        meta.commit(&mut ms, point, &[(self.ino, &*raw, Phase::Point)], frees)?;
        st.inode_dirty = false;
        st.alloc_pending = false;
        Ok(())
    }

    /// Where new blocks for file block `blk` should go: after the extent
    /// before it, else the inode's (flex) group (ext4_ext_find_goal).
    fn goal(&self, st: &State, ms: &MetaState, blk: u64) -> u64 {
        st.tree
            .as_ref()
            .and_then(|t| t.goal(blk))
            .unwrap_or_else(|| ms.alloc.inode_goal(self.ino))
    }

    /// Allocates blocks for the delayed range starting at `blk` (at most
    /// `n` blocks), inserting the extent as the policy says.
    fn allocate_delayed(&self, st: &mut State, blk: u64, n: u64) -> EResult<Extent> {
        let meta = Arc::clone(self.writable()?);
        let Some((d, dn)) = delayed_covering(&st.delayed, blk) else {
            return Err(Error::Unsupported(format!(
                "{}: writeback asked to allocate file block {blk}, which is not delayed",
                self.path
            )));
        };
        let want = n.min(d + dn - blk);
        let unwritten = meta.policy == AllocPolicy::Unwritten;
        let mut ms = meta.lock();
        let goal = self.goal(st, &ms, blk);
        let (pblk, got) = meta.alloc_blocks(&mut ms, goal, want)?;
        Meta::unreserve(&mut ms, got);
        let mut frees = Frees::default();
        let tree = st
            .tree
            .as_mut()
            .ok_or_else(|| self.refuse("no extent tree".into()))?;
        let mut txn = std::mem::take(&mut st.alloc_txn);
        let r = tree.insert(
            blk,
            got,
            pblk,
            unwritten,
            &mut TreeAlloc {
                meta: &meta,
                st: &mut ms,
                frees: &mut frees,
            },
            &mut txn,
        );
        st.alloc_txn = txn;
        drop(ms);
        if r.is_err() {
            // The data run has no extent: it goes back at the next commit.
            frees.blocks.push((pblk, got));
        }
        st.pending_frees.extend(frees);
        r?;
        remove_delayed(&mut st.delayed, blk, blk + got);
        self.after_tree_edit(st)?;
        st.alloc_pending = true;
        if !unwritten {
            st.unconfirmed.insert(blk, (got, pblk));
        }
        Ok(Extent {
            lblk: blk,
            len: got,
            pblk,
            unwritten,
        })
    }

    /// Allocates unwritten extents over the holes of `[blk, end)` that are
    /// neither mapped nor delayed (fallocate).
    fn allocate_holes(&self, st: &mut State, mut blk: u64, end: u64) -> EResult<()> {
        let meta = Arc::clone(self.writable()?);
        let mut txn = Transaction::new();
        while blk < end {
            let m = self.lookup(st, FilePos::new(blk * self.bs()), (end - blk) * self.bs());
            let n = (m.length / self.bs()).max(1);
            if m.kind != ExtentKind::Hole {
                blk += n;
                continue;
            }
            let mut ms = meta.lock();
            let avail = ms.alloc.free_blocks().saturating_sub(ms.reserved);
            if avail == 0 {
                return Err(Error::NoSpace {
                    offset: blk * self.bs(),
                    len: (end - blk) * self.bs(),
                });
            }
            let goal = self.goal(st, &ms, blk);
            let (pblk, got) = meta.alloc_blocks(&mut ms, goal, n.min(avail))?;
            let mut frees = Frees::default();
            let tree = st
                .tree
                .as_mut()
                .ok_or_else(|| self.refuse("no extent tree".into()))?;
            let r = tree.insert(
                blk,
                got,
                pblk,
                true,
                &mut TreeAlloc {
                    meta: &meta,
                    st: &mut ms,
                    frees: &mut frees,
                },
                &mut txn,
            );
            drop(ms);
            if r.is_err() {
                frees.blocks.push((pblk, got));
            }
            st.pending_frees.extend(frees);
            if let Err(e) = r {
                // What was allocated before the failure is committed; the
                // error goes to the caller.
                self.after_tree_edit(st)?;
                self.commit(st, txn, Frees::default())?;
                return Err(e.into());
            }
            self.after_tree_edit(st)?;
            blk += got;
        }
        self.commit(st, txn, Frees::default())
    }

    /// Frees every mapping and reservation in `[blk, end)` and commits.
    /// The caller has committed what was pending (the removal edits the
    /// same tree blocks and must not be written before those edits).
    fn remove_blocks(&self, st: &mut State, blk: u64, end: u64) -> EResult<()> {
        let meta = Arc::clone(self.writable()?);
        self.drop_delayed(st, blk, end);
        let mut frees = Frees::default();
        let mut txn = Transaction::new();
        {
            let mut ms = meta.lock();
            let tree = st
                .tree
                .as_mut()
                .ok_or_else(|| self.refuse("no extent tree".into()))?;
            tree.remove(
                blk,
                end,
                &mut TreeAlloc {
                    meta: &meta,
                    st: &mut ms,
                    frees: &mut frees,
                },
                &mut txn,
            )?;
        }
        self.after_tree_edit(st)?;
        self.commit(st, txn, frees)
    }

    /// Commits what allocation and conversion left pending.
    fn flush_pending(&self, st: &mut State) -> EResult<()> {
        if st.alloc_txn.is_empty() && st.convert_txn.is_empty() && !st.inode_dirty {
            return Ok(());
        }
        let frees = if st.unconfirmed.is_empty() {
            Frees::default()
        } else {
            self.unconfirmed_to_unwritten(st)?
        };
        let mut txn = std::mem::take(&mut st.alloc_txn);
        txn.merge(std::mem::take(&mut st.convert_txn));
        self.commit(st, txn, frees)
    }
}

impl Ext4File {
    /// Ordered policy, a commit forced before the data of some written
    /// extents is durable (a truncate or punch after a writeback that
    /// failed): those extents become unwritten, so that a crash can expose
    /// zeros there but never the blocks' old contents. The data stays
    /// dirty; its later writeback completes into them and converts them.
    /// Returns the tree blocks the edit emptied, for the commit to release.
    fn unconfirmed_to_unwritten(&self, st: &mut State) -> EResult<Frees> {
        let meta = Arc::clone(self.writable()?);
        let ranges: Vec<(u64, (u64, u64))> =
            std::mem::take(&mut st.unconfirmed).into_iter().collect();
        let mut txn = std::mem::take(&mut st.alloc_txn);
        let mut frees = Frees::default();
        let r = (|| -> Result<()> {
            let mut ms = meta.lock();
            let Some(tree) = st.tree.as_mut() else {
                return Ok(());
            };
            for (lblk, (len, pblk)) in ranges {
                // The data blocks stay allocated: only the extent's state
                // changes, so `free_data` is not followed here.
                let mut keep = KeepData(TreeAlloc {
                    meta: &meta,
                    st: &mut ms,
                    frees: &mut frees,
                });
                tree.remove(lblk, lblk + len, &mut keep, &mut txn)?;
                tree.insert(lblk, len, pblk, true, &mut keep, &mut txn)?;
            }
            Ok(())
        })();
        st.alloc_txn = txn;
        r?;
        self.after_tree_edit(st)?;
        Ok(frees)
    }

    /// Removes `[blk, end)` from the unconfirmed ordered extents (their
    /// data is durable now).
    fn confirm(st: &mut State, blk: u64, end: u64) {
        let hit: Vec<(u64, (u64, u64))> = st
            .unconfirmed
            .range(..end)
            .filter(|(&l, &(n, _))| l + n > blk)
            .map(|(&l, &v)| (l, v))
            .collect();
        for (l, (n, p)) in hit {
            st.unconfirmed.remove(&l);
            if l < blk {
                st.unconfirmed.insert(l, (blk - l, p));
            }
            if l + n > end {
                st.unconfirmed.insert(end, (l + n - end, p + (end - l)));
            }
        }
    }

    /// For a file that may not allocate: the write must lie inside i_size
    /// and over written extents only, checked before a byte is copied.
    fn check_overwrite(&self, pos: u64, len: u64, end: u64) -> EResult<()> {
        let st = self.read();
        if end > st.disk_size {
            return Err(self.refuse(format!(
                "write of {len} bytes at offset {pos} ends past i_size {}; growing a file needs allocation, which is refused on this image: {}",
                st.disk_size, self.no_alloc
            )));
        }
        let mut at = pos;
        while at < end {
            let m = self.lookup(&st, FilePos::new(at), end - at);
            if m.kind != ExtentKind::Mapped {
                return Err(self.refuse(format!(
                    "write of {len} bytes at offset {pos} covers a {} at offset {at}; that needs allocation or unwritten-extent conversion, which is refused on this image: {}",
                    match m.kind {
                        ExtentKind::Unwritten => "unwritten extent",
                        _ => "hole",
                    },
                    self.no_alloc
                )));
            }
            at = m.end().get();
        }
        Ok(())
    }
}

/// The tree editor's allocator, but data blocks a removal lets go of stay
/// allocated (their extent is being re-inserted in another state).
struct KeepData<'a>(TreeAlloc<'a>);

impl crate::extent_tree::TreeBlocks for KeepData<'_> {
    fn alloc_tree_block(&mut self, goal: u64, txn: &mut Transaction) -> Result<u64> {
        self.0.alloc_tree_block(goal, txn)
    }

    fn free_tree_block(&mut self, blk: u64, txn: &mut Transaction) -> Result<()> {
        self.0.free_tree_block(blk, txn)
    }

    fn free_data(&mut self, _start: u64, _len: u64, _txn: &mut Transaction) -> Result<()> {
        Ok(())
    }
}

/// The delayed range holding `blk`, if any.
fn delayed_covering(delayed: &BTreeMap<u64, u64>, blk: u64) -> Option<(u64, u64)> {
    delayed
        .range(..=blk)
        .next_back()
        .filter(|(&d, &n)| blk < d + n)
        .map(|(&d, &n)| (d, n))
}

/// Adds `[blk, blk + n)` (a hole) to the delayed ranges, merging with
/// neighbours.
fn insert_delayed(delayed: &mut BTreeMap<u64, u64>, mut blk: u64, mut n: u64) {
    if let Some((&d, &dn)) = delayed.range(..blk).next_back() {
        if d + dn == blk {
            delayed.remove(&d);
            n += blk - d;
            blk = d;
        }
    }
    if let Some(next) = delayed.remove(&(blk + n)) {
        n += next;
    }
    delayed.insert(blk, n);
}

/// Removes `[blk, end)` from the delayed ranges; returns the blocks removed.
fn remove_delayed(delayed: &mut BTreeMap<u64, u64>, blk: u64, end: u64) -> u64 {
    let mut removed = 0;
    let starts: Vec<(u64, u64)> = delayed
        .range(..end)
        .filter(|(&d, &n)| d + n > blk)
        .map(|(&d, &n)| (d, n))
        .collect();
    for (d, n) in starts {
        delayed.remove(&d);
        let s = d.max(blk);
        let e = (d + n).min(end);
        removed += e - s;
        if d < s {
            delayed.insert(d, s - d);
        }
        if e < d + n {
            delayed.insert(e, d + n - e);
        }
    }
    removed
}

impl Mapper for Ext4File {
    fn block_size(&self) -> BlockSize {
        self.unit()
    }

    fn iomap_begin(&self, pos: FilePos, len: u64, intent: MapIntent) -> EResult<Iomap> {
        {
            let st = self.read();
            let m = self.lookup(&st, pos, len);
            if intent != MapIntent::Write || m.kind != ExtentKind::Hole {
                return Ok(m);
            }
        }
        let mut st = self.write();
        let m = self.lookup(&st, pos, len);
        if m.kind != ExtentKind::Hole {
            return Ok(m);
        }
        let bs = self.bs();
        let blk = pos.get() / bs;
        let end_blk = (pos.get() + m.length).div_ceil(bs).max(blk + 1);
        let got = self.reserve(&mut st, blk, end_blk - blk)?;
        Ok(Iomap {
            offset: pos,
            length: m.length.min((blk + got) * bs - pos.get()),
            kind: ExtentKind::Delalloc,
            addr: DevAddr::new(0),
            new: true,
        })
    }

    fn get_block(&self, block: FileBlock, create: bool) -> EResult<BlockMapping> {
        let pos = block.pos(self.unit()).ok_or(Error::RangeOverflow {
            offset: block.get(),
            len: self.bs(),
        })?;
        let m = {
            let st = self.read();
            self.lookup(&st, pos, self.bs())
        };
        match m.kind {
            ExtentKind::Mapped => Ok(BlockMapping {
                kind: ExtentKind::Mapped,
                addr: m.addr,
                new: false,
            }),
            ExtentKind::Unwritten => Ok(BlockMapping {
                kind: ExtentKind::Unwritten,
                addr: m.addr,
                new: create,
            }),
            ExtentKind::Delalloc => Ok(BlockMapping {
                kind: ExtentKind::Delalloc,
                addr: DevAddr::new(0),
                new: false,
            }),
            ExtentKind::Hole if !create => Ok(BlockMapping {
                kind: ExtentKind::Hole,
                addr: DevAddr::new(0),
                new: false,
            }),
            ExtentKind::Hole => {
                let mut st = self.write();
                let again = self.lookup(&st, pos, self.bs());
                if again.kind != ExtentKind::Hole {
                    drop(st);
                    return self.get_block(block, create);
                }
                self.reserve(&mut st, block.get(), 1)?;
                Ok(BlockMapping {
                    kind: ExtentKind::Delalloc,
                    addr: DevAddr::new(0),
                    new: true,
                })
            }
        }
    }

    fn map_blocks(&self, pos: FilePos, len: u64) -> EResult<Iomap> {
        let bs = self.bs();
        let blk = pos.get() / bs;
        let n = len.div_ceil(bs).max(1);
        let mut st = self.write();
        let m = self.lookup(&st, pos, len);
        if m.kind != ExtentKind::Delalloc {
            return Ok(m);
        }
        let e = self.allocate_delayed(&mut st, blk, n)?;
        Ok(Iomap {
            offset: pos,
            length: len.min((e.end() * bs).saturating_sub(pos.get())),
            kind: if e.unwritten {
                ExtentKind::Unwritten
            } else {
                ExtentKind::Mapped
            },
            addr: DevAddr::of(DiskBlock::new(e.pblk), self.unit()).add(pos.get() - blk * bs),
            new: true,
        })
    }

    fn release_delalloc(&self, pos: FilePos, len: u64) {
        let bs = self.bs();
        let blk = pos.get().div_ceil(bs);
        let end = pos.get().saturating_add(len) / bs;
        if blk < end {
            let mut st = self.write();
            self.drop_delayed(&mut st, blk, end);
        }
    }

    fn end_io(&self, pos: FilePos, len: u64) -> EResult<()> {
        let Some(meta) = self.meta.clone() else {
            return Ok(());
        };
        let bs = self.bs();
        let mut st = self.write();
        if meta.policy == AllocPolicy::Unwritten {
            // The allocation of this pass goes out once, before the
            // conversions that edit the same tree blocks and inode.
            if st.alloc_pending {
                let txn = std::mem::take(&mut st.alloc_txn);
                self.commit(&mut st, txn, Frees::default())?;
            }
        }
        let blk = pos.get() / bs;
        let end = pos.get().saturating_add(len).div_ceil(bs);
        Self::confirm(&mut st, blk, end);
        let has_unwritten = st
            .extents
            .iter()
            .any(|e| e.unwritten && e.lblk < end && e.end() > blk);
        if has_unwritten {
            let mut frees = Frees::default();
            let mut txn = std::mem::take(&mut st.convert_txn);
            let r = {
                let mut ms = meta.lock();
                match st.tree.as_mut() {
                    Some(tree) => tree.mark_written(
                        blk,
                        end - blk,
                        &mut TreeAlloc {
                            meta: &meta,
                            st: &mut ms,
                            frees: &mut frees,
                        },
                        &mut txn,
                    ),
                    None => Ok(()),
                }
            };
            st.convert_txn = txn;
            st.pending_frees.extend(frees);
            r?;
            self.after_tree_edit(&mut st)?;
        }
        let isize = self.size();
        let new_disk = pos.get().saturating_add(len).min(isize);
        if new_disk > st.disk_size {
            st.disk_size = new_disk;
            st.inode_dirty = true;
        }
        // With a journal the completion's edits join the running
        // transaction now, as ext4's end_io does in a handle: the commit
        // timer, not only fsync, makes them durable. Ordered extents still
        // waiting for their data's completion keep the whole set back (a
        // commit now would have to make them unwritten first).
        if self.refusal.is_none() && meta.commit_orders_data() && st.unconfirmed.is_empty() {
            self.flush_pending(&mut st)?;
        }
        Ok(())
    }

    fn commit_orders_data(&self) -> bool {
        self.refusal.is_none() && self.meta.as_ref().is_some_and(|m| m.commit_orders_data())
    }

    fn sync_metadata(&self, _datasync: bool) -> EResult<()> {
        if self.meta.is_none() || self.refusal.is_some() {
            return Ok(());
        }
        let mut st = self.write();
        // Everything was written back and flushed: the on-disk size may
        // follow i_size (what lies between was written or is a hole).
        let isize = self.size();
        if st.disk_size != isize && st.delayed.is_empty() {
            st.disk_size = isize;
            st.inode_dirty = true;
        }
        self.flush_pending(&mut st)?;
        drop(st);
        // With a journal the metadata is durable once the running
        // transaction (which holds this inode's changes, and the entry
        // that names a new file) commits.
        if let Some(meta) = &self.meta {
            let logged = meta.journal_commit()?;
            // With nothing to commit (an overwrite of mapped blocks, or
            // another commit took this file's metadata first), the data
            // still needs its flush (ext4's `needs_barrier`).
            if !logged && meta.commit_orders_data() {
                meta.dev.flush()?;
            }
        }
        Ok(())
    }

    fn truncate(&self, size: u64) -> EResult<()> {
        self.writable()?;
        let bs = self.bs();
        let limit = MAX_FILE_BLOCKS * bs;
        if size > limit {
            return Err(Error::FileTooLarge {
                offset: size,
                len: 0,
                capacity: limit,
            });
        }
        let mut st = self.write();
        // What is pending goes out with the sizes it was made for; the new
        // size is committed in the same inode write as the trimmed extents.
        self.flush_pending(&mut st)?;
        let old = self.size();
        self.set_size(size);
        st.disk_size = size;
        st.inode_dirty = true;
        if size < old {
            let first = size.div_ceil(bs);
            self.remove_blocks(&mut st, first, MAX_FILE_BLOCKS)
        } else {
            self.flush_pending(&mut st)
        }
    }

    fn fallocate(&self, pos: FilePos, len: u64, mode: FallocMode) -> EResult<()> {
        self.writable()?;
        let bs = self.bs();
        let end = pos.get().checked_add(len).ok_or(Error::RangeOverflow {
            offset: pos.get(),
            len,
        })?;
        if end > MAX_FILE_BLOCKS * bs {
            return Err(Error::FileTooLarge {
                offset: pos.get(),
                len,
                capacity: MAX_FILE_BLOCKS * bs,
            });
        }
        let mut st = self.write();
        match mode {
            FallocMode::Allocate | FallocMode::KeepSize => {
                self.allocate_holes(&mut st, pos.get() / bs, end.div_ceil(bs))?;
                if mode == FallocMode::Allocate && end > self.size() {
                    self.set_size(end);
                    if st.delayed.is_empty() {
                        st.disk_size = end;
                    }
                    st.inode_dirty = true;
                    self.flush_pending(&mut st)?;
                }
                Ok(())
            }
            FallocMode::PunchHole => {
                let first = pos.get().div_ceil(bs);
                let last = end / bs;
                if first < last {
                    self.flush_pending(&mut st)?;
                    self.remove_blocks(&mut st, first, last)?;
                }
                Ok(())
            }
        }
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    fn max_size(&self) -> u64 {
        if self.refusal.is_some() || self.meta.is_none() {
            self.read().disk_size
        } else {
            MAX_FILE_BLOCKS * self.bs()
        }
    }

    fn prepare_write(&self, pos: FilePos, len: u64) -> EResult<()> {
        let pos = pos.get();
        if let Some(why) = &self.refusal {
            return Err(self.refuse(format!("writes are refused because {why}")));
        }
        let end = pos
            .checked_add(len)
            .ok_or(Error::RangeOverflow { offset: pos, len })?;
        if len == 0 {
            return Ok(());
        }
        if self.meta.is_none() {
            return self.check_overwrite(pos, len, end);
        }
        if end > self.max_size() {
            return Err(Error::FileTooLarge {
                offset: pos,
                len,
                capacity: self.max_size(),
            });
        }
        Ok(())
    }
}
