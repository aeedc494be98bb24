//! Creating and unlinking files: inode allocation, the directory entry,
//! and the filesystem seam the engine's `Mount` uses.
//!
//! Each operation is one transaction, committed before it returns, in the
//! phases of `txn.rs`: for create, the inode bitmap (and any block) claims,
//! then the new inode record and any directory block appended for the entry
//! (nothing points at either yet), then the entry and the directory's inode;
//! for unlink, the entry is removed first, then the dead inode record is
//! written and the inode and its blocks are released. mkdir is create's
//! order with the new directory's first block (`.` and `..`) written with
//! its inode; rmdir is unlink's; a rename across directories writes the
//! new entry in one transaction and removes the old one in the next, so a
//! crash between leaves a second name (a link count e2fsck corrects), never
//! none (within one directory both edits go out in one transaction).

use crate::dir_write::{self, DirBlocks, DirParams};
use crate::error::Structure;
use crate::error::{Ext4Error, Result};
use crate::extent::find;
use crate::extent_tree::ExtentTree;
use crate::fs::Ext4;
use crate::inode::{flags, Inode};
use crate::inode_write::RawInode;
use crate::meta::{Frees, Meta, MetaState, TreeAlloc};
use crate::superblock::{incompat, ro_compat};
use crate::txn::{MetaKind, Phase, Transaction};
use crate::util::read_meta;
use bufwrite_engine::{BlockSize, Filesystem, Mapper};
use std::sync::Arc;

/// File type byte of a regular file in a directory entry.
const FT_REG_FILE: u8 = 1;
/// `i_mode` of a new regular file: type bits and 0644.
const NEW_FILE_MODE: u16 = 0o100_644;

/// Splits `/a/b/c` into the parent `/a/b` and the name `c`.
fn split(path: &str) -> Result<(String, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(Ext4Error::Unsupported(format!(
            "{path}: not a name a file can be created or removed by"
        )));
    }
    if name.len() > 255 {
        return Err(Ext4Error::Unsupported(format!(
            "{path}: the name is {} bytes long; ext4 names are at most 255",
            name.len()
        )));
    }
    Ok((format!("/{}", parent.trim_start_matches('/')), name))
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// One directory's blocks, for the entry editor: reads see this
/// transaction's copies first; a new block is allocated near the last one,
/// written before it is mapped in the directory's tree.
struct DirIo<'a> {
    meta: &'a Meta,
    ms: &'a mut MetaState,
    txn: &'a mut Transaction,
    frees: &'a mut Frees,
    tree: &'a mut ExtentTree,
    dir: &'a Inode,
    size: u64,
    changed_inode: bool,
    /// Blocks appended by this transaction (written at `Phase::Init`).
    appended: Vec<u64>,
}

impl<'a> DirIo<'a> {
    fn new(
        meta: &'a Meta,
        ms: &'a mut MetaState,
        txn: &'a mut Transaction,
        frees: &'a mut Frees,
        tree: &'a mut ExtentTree,
        dir: &'a Inode,
    ) -> Self {
        DirIo {
            meta,
            ms,
            txn,
            frees,
            tree,
            dir,
            size: dir.size,
            changed_inode: false,
            appended: Vec::new(),
        }
    }

    fn bs(&self) -> u64 {
        u64::from(self.meta.sb.block_size)
    }

    fn pblk(&self, lblk: u64) -> Result<u64> {
        let ext = self.tree.extents();
        match find(&ext, lblk) {
            Ok(i) if !ext[i].unwritten => Ok(ext[i].pblk + (lblk - ext[i].lblk)),
            _ => Err(Ext4Error::Unsupported(format!(
                "directory inode {}: block {lblk} is not mapped",
                self.dir.ino
            ))),
        }
    }
}

impl DirBlocks for DirIo<'_> {
    fn block_size(&self) -> usize {
        self.meta.sb.block_size as usize
    }

    fn len(&self) -> u64 {
        self.size / self.bs()
    }

    fn read(&mut self, lblk: u64) -> Result<Vec<u8>> {
        let p = self.pblk(lblk)?;
        if let Some(b) = self.txn.get(p) {
            return Ok(b.to_vec());
        }
        let bs = self.bs();
        read_meta(
            self.meta.dev.as_ref(),
            Structure::DirBlock { ino: self.dir.ino },
            p * bs,
            bs as usize,
        )
    }

    fn write(&mut self, lblk: u64, data: Vec<u8>) -> Result<()> {
        let p = self.pblk(lblk)?;
        // A block appended by this transaction is written before the
        // extent and the size that make it part of the directory.
        let phase = if self.appended.contains(&p) {
            Phase::Init
        } else {
            Phase::Point
        };
        self.txn.put(p, MetaKind::Directory, phase, data);
        Ok(())
    }

    fn append(&mut self) -> Result<u64> {
        let lblk = self.len();
        let goal = self
            .tree
            .goal(lblk)
            .unwrap_or_else(|| self.ms.alloc.inode_goal(self.dir.ino));
        let (p, _) = self.meta.alloc_blocks(self.ms, goal, 1)?;
        self.tree.insert(
            lblk,
            1,
            p,
            false,
            &mut TreeAlloc {
                meta: self.meta,
                st: self.ms,
                frees: self.frees,
            },
            self.txn,
        )?;
        self.txn.put(
            p,
            MetaKind::Directory,
            Phase::Init,
            vec![0; self.block_size()],
        );
        self.appended.push(p);
        self.size += self.bs();
        self.changed_inode = true;
        Ok(lblk)
    }
}

impl Ext4 {
    fn dir_params(&self, dir: &Inode) -> DirParams {
        let sb = self.superblock();
        DirParams {
            ino: dir.ino,
            filetype: sb.has_incompat(incompat::FILETYPE),
            csum_seed: sb.has_metadata_csum().then_some(dir.csum_seed),
            htree: dir.has_flag(flags::INDEX),
            hash_seed: sb.hash_seed,
            hash_version: sb.def_hash_version,
            unsigned_hash: sb.flags & 0x2 != 0,
            largedir: sb.has_incompat(incompat::LARGEDIR),
        }
    }

    /// The parent directory of `path` and the name in it, checked.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(Inode, &'p str)> {
        let (parent, name) = split(path)?;
        let dir = self.lookup(&parent)?;
        if !dir.is_dir() {
            return Err(Ext4Error::WrongType(format!(
                "{parent} is {}, not a directory",
                dir.file_type()
            )));
        }
        if dir.protection().any() || dir.has_flag(flags::INLINE_DATA) {
            return Err(Ext4Error::Unsupported(format!(
                "{parent}: bufwrite does not edit encrypted, verity or inline-data directories"
            )));
        }
        if !dir.has_flag(flags::EXTENTS) {
            return Err(Ext4Error::Unsupported(format!(
                "{parent} is mapped by indirect blocks: bufwrite adds entries only to extent-mapped directories"
            )));
        }
        if self.superblock().has_incompat(incompat::CASEFOLD) && dir.flags & 0x4000_0000 != 0 {
            return Err(Ext4Error::Unsupported(format!(
                "{parent} is a casefolded directory: its name hashes are not modelled"
            )));
        }
        Ok((dir, name))
    }

    /// Creates the empty regular file `path` and returns its mapper.
    pub fn create_file(&self, path: &str) -> Result<Arc<crate::Ext4File>> {
        let (dir, name) = self.parent_of(path)?;
        let meta = self.meta()?;
        let params = self.dir_params(&dir);
        {
            let mut ms = meta.lock();
            let ino = meta.alloc_inode(&mut ms, dir.ino, false)?;
            let sb = self.superblock();
            let generation = crc32c::crc32c(&[ino.to_le_bytes(), now().to_le_bytes()].concat());
            let mut raw = RawInode::new_inode(
                usize::from(sb.inode_size),
                NEW_FILE_MODE,
                1,
                generation,
                sb.want_extra_isize,
                now(),
            );
            raw.update_checksum(ino, meta.fs_seed());
            let mut txn = Transaction::new();
            let mut frees = Frees::default();
            let mut dir_tree = ExtentTree::load(&self.tree_ctx(), &dir)?;
            let mut dir_raw = meta.read_raw_inode(dir.ino)?;
            let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut dir_tree, &dir);
            let r = dir_write::add_entry(&mut io, &params, name.as_bytes(), ino, FT_REG_FILE);
            let (changed, size) = (io.changed_inode, io.size);
            if let Err(e) = r {
                // Nothing was written: give the inode back (its claim is
                // still only in memory, and a commit now writes it freed).
                drop(io);
                let mut rel = Frees::default();
                rel.inodes.push((ino, false));
                meta.commit(&mut ms, Transaction::new(), &[], rel)?;
                return Err(e);
            }
            let mut inodes: Vec<(u32, &RawInode, Phase)> = vec![(ino, &raw, Phase::Init)];
            if changed {
                dir_raw.set_size(size);
                dir_raw.set_block_area(&dir_tree.root());
                let blocks: u64 =
                    dir_tree.extents().iter().map(|e| e.len).sum::<u64>() + dir_tree.node_blocks();
                dir_raw.set_blocks(
                    blocks * u64::from(sb.block_size / 512),
                    sb.has_ro_compat(ro_compat::HUGE_FILE),
                )?;
                dir_raw.update_checksum(dir.ino, meta.fs_seed());
                inodes.push((dir.ino, &dir_raw, Phase::Point));
            }
            meta.commit(&mut ms, txn, &inodes, frees)?;
        }
        self.open_file(path)
    }

    /// Removes `path` (a regular file not open for writing here) and frees
    /// its inode and blocks.
    pub fn unlink_file(&self, path: &str) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        let target = self.lookup(path)?;
        if !target.is_file() {
            return Err(Ext4Error::WrongType(format!(
                "{path} is {}; bufwrite unlinks only regular files",
                target.file_type()
            )));
        }
        if self.is_open(target.ino) {
            return Err(Ext4Error::Unsupported(format!(
                "{path} is open for writing; close it before unlinking"
            )));
        }
        if target.links > 1 {
            return Err(Ext4Error::Unsupported(format!(
                "{path} has {} links; bufwrite unlinks only files with one",
                target.links
            )));
        }
        if !target.has_flag(flags::EXTENTS) {
            return Err(Ext4Error::Unsupported(format!(
                "{path} is mapped by indirect blocks; bufwrite frees only extent-mapped files"
            )));
        }
        let meta = self.meta()?;
        let params = self.dir_params(&dir);
        let mut ms = meta.lock();
        let mut txn = Transaction::new();
        let mut frees = Frees::default();
        let mut dir_tree = ExtentTree::load(&self.tree_ctx(), &dir)?;
        let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut dir_tree, &dir);
        let ino = dir_write::remove_entry(&mut io, &params, name.as_bytes())?;
        drop(io);
        if ino != target.ino {
            return Err(Ext4Error::Unsupported(format!(
                "{path}: the entry names inode {ino} but the lookup found {}",
                target.ino
            )));
        }
        let raw = self.release_inode(&meta, &mut ms, &mut txn, &mut frees, &target)?;
        meta.commit(&mut ms, txn, &[(ino, &raw, Phase::Release)], frees)?;
        Ok(())
    }
}

/// `i_mode` of a new directory: type bits and 0755.
const NEW_DIR_MODE: u16 = 0o040_755;
/// File type byte of a directory in a directory entry.
const FT_DIR: u8 = 2;
/// The root directory's inode number.
const ROOT_INO: u32 = 2;

impl Ext4 {
    /// The entries of directory `path` (`.` and `..` included), in block
    /// order.
    pub fn read_dir(&self, path: &str) -> Result<Vec<crate::dir::DirEntry>> {
        let inode = self.lookup(path)?;
        if !inode.is_dir() {
            return Err(Ext4Error::WrongType(format!(
                "{path} is {}, not a directory",
                inode.file_type()
            )));
        }
        if inode.protection().encrypted {
            return Err(Ext4Error::Unsupported(format!(
                "{path} is an encrypted directory: its names cannot be read without the key"
            )));
        }
        let extents = self.map_inode(&inode)?;
        let dir = crate::dir::Dir {
            ctx: &self.tree_ctx(),
            inode: &inode,
            extents: &extents,
            filetype: self.superblock().has_incompat(incompat::FILETYPE),
        };
        dir.entries()
    }

    /// Releases `dead` (no entry names it any more): its blocks are freed,
    /// its record zeroed (links, size, blocks, extents; dtime set) and the
    /// inode queued for freeing. Returns the record, to be written at
    /// [`Phase::Release`].
    pub(crate) fn release_inode(
        &self,
        meta: &Meta,
        ms: &mut MetaState,
        txn: &mut Transaction,
        frees: &mut Frees,
        dead: &Inode,
    ) -> Result<RawInode> {
        let mut tree = ExtentTree::load(&self.tree_ctx(), dead)?;
        tree.remove(
            0,
            u64::MAX,
            &mut TreeAlloc {
                meta,
                st: ms,
                frees,
            },
            txn,
        )?;
        let mut raw = meta.read_raw_inode(dead.ino)?;
        raw.set_links(0);
        raw.set_dtime(now());
        raw.set_size(0);
        raw.set_blocks(0, false)?;
        raw.set_block_area(&tree.root());
        raw.update_checksum(dead.ino, meta.fs_seed());
        frees.inodes.push((dead.ino, dead.is_dir()));
        Ok(raw)
    }

    /// The inode record of `dir` after its entries changed: size, extent
    /// root and block count from `tree`.
    fn dir_record(
        &self,
        meta: &Meta,
        raw: &mut RawInode,
        ino: u32,
        tree: &ExtentTree,
        size: u64,
    ) -> Result<()> {
        let sb = self.superblock();
        raw.set_size(size);
        raw.set_block_area(&tree.root());
        let blocks: u64 = tree.extents().iter().map(|e| e.len).sum::<u64>() + tree.node_blocks();
        raw.set_blocks(
            blocks * u64::from(sb.block_size / 512),
            sb.has_ro_compat(ro_compat::HUGE_FILE),
        )?;
        raw.update_checksum(ino, meta.fs_seed());
        Ok(())
    }

    /// mkdir(2): makes the empty directory `path` (one block holding `.`
    /// and `..`), one transaction: the inode and block claims, then the new
    /// inode and its block, then the parent's entry and link count.
    pub fn make_dir(&self, path: &str) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        match self.lookup(path) {
            Ok(_) => return Err(Ext4Error::AlreadyExists(format!("{path} exists"))),
            Err(Ext4Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if dir.links >= 65_000 {
            return Err(Ext4Error::Unsupported(format!(
                "{path}: the parent has {} links (dir_nlink is not modelled)",
                dir.links
            )));
        }
        let meta = self.meta()?;
        let sb = self.superblock();
        let bs = sb.block_size as usize;
        let mut ms = meta.lock();
        let ino = meta.alloc_inode(&mut ms, dir.ino, true)?;
        let give_back = |meta: &Meta, ms: &mut MetaState, e: Ext4Error| {
            let mut rel = Frees::default();
            rel.inodes.push((ino, true));
            meta.commit(ms, Transaction::new(), &[], rel)?;
            Err(e)
        };
        let goal = ms.alloc.inode_goal(ino);
        let block = match meta.alloc_blocks(&mut ms, goal, 1) {
            Ok((p, _)) => p,
            Err(e) => return give_back(&meta, &mut ms, e),
        };
        let generation = crc32c::crc32c(&[ino.to_le_bytes(), now().to_le_bytes()].concat());
        let mut raw = RawInode::new_inode(
            usize::from(sb.inode_size),
            NEW_DIR_MODE,
            2,
            generation,
            sb.want_extra_isize,
            now(),
        );
        raw.update_checksum(ino, meta.fs_seed());
        let new = self.parse_inode(ino, &raw.bytes, 0)?;
        let mut txn = Transaction::new();
        let mut frees = Frees::default();
        let mut tree = ExtentTree::empty(&self.tree_ctx(), &new);
        tree.insert(
            0,
            1,
            block,
            false,
            &mut TreeAlloc {
                meta: &meta,
                st: &mut ms,
                frees: &mut frees,
            },
            &mut txn,
        )?;
        let mut params = self.dir_params(&new);
        params.htree = false;
        let first = dir_write::new_dir_block(bs, &params, ino, dir.ino);
        txn.put(block, MetaKind::Directory, Phase::Init, first);
        self.dir_record(&meta, &mut raw, ino, &tree, bs as u64)?;
        let parent_params = self.dir_params(&dir);
        let mut dir_tree = ExtentTree::load(&self.tree_ctx(), &dir)?;
        let mut dir_raw = meta.read_raw_inode(dir.ino)?;
        let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut dir_tree, &dir);
        let r = dir_write::add_entry(&mut io, &parent_params, name.as_bytes(), ino, FT_DIR);
        let size = io.size;
        drop(io);
        if let Err(e) = r {
            // Nothing was written: the claims are only in memory.
            let mut rel = Frees::default();
            rel.inodes.push((ino, true));
            rel.blocks.push((block, 1));
            meta.commit(&mut ms, Transaction::new(), &[], rel)?;
            return Err(e);
        }
        dir_raw.set_links(dir.links + 1);
        self.dir_record(&meta, &mut dir_raw, dir.ino, &dir_tree, size)?;
        meta.commit(
            &mut ms,
            txn,
            &[(ino, &raw, Phase::Init), (dir.ino, &dir_raw, Phase::Point)],
            frees,
        )
        .map(|_| ())
    }

    /// rmdir(2): removes the empty directory `path`: its entry first, then
    /// the parent's link count and the dead inode, then its block and inode
    /// are released.
    pub fn remove_dir(&self, path: &str) -> Result<()> {
        let (dir, name) = self.parent_of(path)?;
        let target = self.lookup(path)?;
        if !target.is_dir() {
            return Err(Ext4Error::WrongType(format!(
                "{path} is {}, not a directory",
                target.file_type()
            )));
        }
        if target.ino == ROOT_INO {
            return Err(Ext4Error::Unsupported("the root directory stays".into()));
        }
        let live = self.read_dir(path)?;
        if live.iter().any(|e| e.name != b"." && e.name != b"..") {
            return Err(Ext4Error::NotEmpty(path.to_string()));
        }
        if !target.has_flag(flags::EXTENTS) {
            return Err(Ext4Error::Unsupported(format!(
                "{path} is mapped by indirect blocks; bufwrite frees only extent-mapped directories"
            )));
        }
        let meta = self.meta()?;
        let params = self.dir_params(&dir);
        let mut ms = meta.lock();
        let mut txn = Transaction::new();
        let mut frees = Frees::default();
        let mut dir_tree = ExtentTree::load(&self.tree_ctx(), &dir)?;
        let mut dir_raw = meta.read_raw_inode(dir.ino)?;
        let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut dir_tree, &dir);
        let ino = dir_write::remove_entry(&mut io, &params, name.as_bytes())?;
        let size = io.size;
        drop(io);
        if ino != target.ino {
            return Err(Ext4Error::Unsupported(format!(
                "{path}: the entry names inode {ino} but the lookup found {}",
                target.ino
            )));
        }
        dir_raw.set_links(dir.links.saturating_sub(1).max(2));
        self.dir_record(&meta, &mut dir_raw, dir.ino, &dir_tree, size)?;
        let raw = self.release_inode(&meta, &mut ms, &mut txn, &mut frees, &target)?;
        meta.commit(
            &mut ms,
            txn,
            &[
                (dir.ino, &dir_raw, Phase::Point),
                (ino, &raw, Phase::Release),
            ],
            frees,
        )
        .map(|_| ())
    }

    /// rename(2) of a regular file (to any directory) or of a directory
    /// within its parent. The new entry is written before the old one is
    /// removed (a crash between leaves two names for one inode, which
    /// e2fsck counts, never none); an existing regular file at `to` is
    /// replaced (its entry rewritten to the moved inode, then it is freed).
    /// A directory moving to another parent is refused (its `..` is not
    /// rewritten here): `mv` then copies.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (odir, oname) = self.parent_of(from)?;
        let (ndir, nname) = self.parent_of(to)?;
        let src = self.lookup(from)?;
        if !src.is_file() && !src.is_dir() {
            return Err(Ext4Error::Unsupported(format!(
                "{from} is {}; bufwrite renames files and directories",
                src.file_type()
            )));
        }
        if src.is_dir() && odir.ino != ndir.ino {
            return Err(Ext4Error::CrossDir(format!(
                "{from} is a directory: bufwrite renames directories only within their parent"
            )));
        }
        let victim = match self.lookup(to) {
            Ok(v) if v.ino == src.ino => return Ok(()),
            Ok(v) if v.is_file() && src.is_file() => {
                if self.is_open(v.ino) {
                    return Err(Ext4Error::Unsupported(format!(
                        "{to} is open for writing; close it before replacing it"
                    )));
                }
                if v.links > 1 || !v.has_flag(flags::EXTENTS) {
                    return Err(Ext4Error::Unsupported(format!(
                        "{to}: bufwrite replaces only extent-mapped files with one link"
                    )));
                }
                Some(v)
            }
            Ok(v) => {
                return Err(Ext4Error::Unsupported(format!(
                "{to} exists and is {}: bufwrite replaces only a regular file by a regular file",
                v.file_type()
            )))
            }
            Err(Ext4Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let ft = if src.is_dir() { FT_DIR } else { FT_REG_FILE };
        let meta = self.meta()?;
        let mut ms = meta.lock();
        let mut txn = Transaction::new();
        let mut frees = Frees::default();
        let mut inodes: Vec<(u32, RawInode, Phase)> = Vec::new();
        // The new name: replace the victim's entry, or add one.
        let nparams = self.dir_params(&ndir);
        let mut ntree = ExtentTree::load(&self.tree_ctx(), &ndir)?;
        let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut ntree, &ndir);
        if victim.is_some() {
            dir_write::remove_entry(&mut io, &nparams, nname.as_bytes())?;
        }
        dir_write::add_entry(&mut io, &nparams, nname.as_bytes(), src.ino, ft)?;
        let (nchanged, nsize) = (io.changed_inode, io.size);
        drop(io);
        if nchanged {
            let mut raw = meta.read_raw_inode(ndir.ino)?;
            self.dir_record(&meta, &mut raw, ndir.ino, &ntree, nsize)?;
            inodes.push((ndir.ino, raw, Phase::Point));
        }
        // The old name goes after the new one is written.
        let mut old_txn = Transaction::new();
        let oparams = self.dir_params(&odir);
        if odir.ino == ndir.ino {
            // One directory: its edits are one set of block copies.
            let mut io = DirIo::new(&meta, &mut ms, &mut txn, &mut frees, &mut ntree, &ndir);
            dir_write::remove_entry(&mut io, &oparams, oname.as_bytes())?;
        } else {
            let mut otree = ExtentTree::load(&self.tree_ctx(), &odir)?;
            let mut io = DirIo::new(&meta, &mut ms, &mut old_txn, &mut frees, &mut otree, &odir);
            dir_write::remove_entry(&mut io, &oparams, oname.as_bytes())?;
        }
        if let Some(v) = &victim {
            let raw = self.release_inode(&meta, &mut ms, &mut txn, &mut frees, v)?;
            inodes.push((v.ino, raw, Phase::Release));
        }
        let refs: Vec<(u32, &RawInode, Phase)> =
            inodes.iter().map(|(i, r, p)| (*i, r, *p)).collect();
        meta.commit(&mut ms, txn, &refs, frees)?;
        if !old_txn.is_empty() {
            meta.commit(&mut ms, old_txn, &[], Frees::default())?;
        }
        Ok(())
    }
}

/// The filesystem seam: `Mount` opens, creates and unlinks through it.
impl Filesystem for Ext4 {
    fn block_size(&self) -> BlockSize {
        BlockSize::new(self.superblock().block_size).unwrap_or(BlockSize::PAGE)
    }

    fn open(&self, path: &str) -> bufwrite_engine::Result<Arc<dyn Mapper>> {
        match self.open_file(path) {
            Ok(f) => Ok(f),
            Err(Ext4Error::NotFound(what)) => Err(bufwrite_engine::Error::NotFound(what)),
            Err(e) => Err(e.into()),
        }
    }

    fn create(&self, path: &str) -> bufwrite_engine::Result<Arc<dyn Mapper>> {
        match self.lookup(path) {
            Ok(_) => {
                return Err(bufwrite_engine::Error::AlreadyExists(format!(
                    "{path} exists"
                )))
            }
            Err(Ext4Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.create_file(path)?)
    }

    fn unlink(&self, path: &str) -> bufwrite_engine::Result<()> {
        match self.unlink_file(path) {
            Err(Ext4Error::NotFound(what)) => Err(bufwrite_engine::Error::NotFound(what)),
            r => Ok(r?),
        }
    }

    fn sync_fs(&self) -> bufwrite_engine::Result<()> {
        if let Ok(meta) = self.meta() {
            {
                let mut ms = meta.lock();
                meta.commit(&mut ms, Transaction::new(), &[], Frees::default())?;
            }
            // Commit and checkpoint: the image is as after an unmount.
            meta.journal_sync()?;
        }
        Ok(())
    }
}
