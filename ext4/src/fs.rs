//! `Ext4`: an opened image: superblock, group descriptors, inode reads,
//! path lookup and opening files for both write paths.

use crate::dir::Dir;
use crate::error::{CorruptKind, Ext4Error, Location, OverlapWith, Result, Structure};
use crate::extent::{Extent, TreeCtx};
use crate::extent_tree::ExtentTree;
use crate::file::Ext4File;
use crate::gaps::GapReport;
use crate::group_desc::{self, GroupDesc};
use crate::inode::{flags, FileType, Inode};
use crate::journal::{JournalState, Overlay, OverlayDev};
use crate::meta::Meta;
use crate::superblock::{compat, incompat, ro_compat, Superblock};
use crate::util::read_meta;
use crate::{extent, indirect};
use bufwrite_engine::{AllocPolicy, BlockDevice};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The root directory's inode number.
const ROOT_INO: u32 = 2;
/// Symlinks are not followed, so a path has at most this many components
/// worth walking; more is refused rather than walked forever.
const MAX_PATH_COMPONENTS: usize = 4096;

/// An ext4 (or ext2/ext3) filesystem on a block device, opened for reading
/// its metadata and mapping its files.
pub struct Ext4 {
    dev: Arc<dyn BlockDevice>,
    /// Boxed: the superblock grows with every field the report reads, and
    /// callers keep an `Ext4` inside enums next to small variants.
    sb: Box<Superblock>,
    groups: Vec<GroupDesc>,
    /// Sorted, merged `[start, end)` block runs of the metadata the crate
    /// knows the place of (superblock, descriptor table, bitmaps, inode
    /// tables): no file block may map into them.
    system: Vec<(u64, u64)>,
    /// The writeback allocation policy of files opened for writing.
    policy: AllocPolicy,
    /// The write side, made on the first open for writing.
    meta: Mutex<Option<Arc<Meta>>>,
    /// Files open for writing, by inode: one mapper per inode.
    open: Mutex<HashMap<u32, Weak<Ext4File>>>,
    /// What the journal recovery done by this open found, if one ran.
    recovery: Option<crate::jbd2::RecoveryReport>,
    /// Opened with [`Ext4::open_read_only`]: every write is refused.
    read_only: bool,
    /// What processing the orphan list did at this open.
    orphans: Vec<crate::orphan::Orphan>,
    /// Why the orphan list could not be processed, if it could not.
    orphan_error: Option<String>,
    /// The device under `dev` when `dev` is the journal's overlay (see
    /// `journal.rs`): the log writer uses it directly.
    raw: Option<(Arc<dyn BlockDevice>, Arc<Overlay>)>,
}

/// How [`Ext4::alloc_blockers`] names a non-empty orphan list.
const ORPHAN_BLOCKER: &str = "the orphan list is not empty";

impl std::fmt::Debug for Ext4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4")
            .field("device", &self.dev.describe())
            .field("block_size", &self.sb.block_size)
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl Ext4 {
    /// Reads and verifies the superblock and every group descriptor.
    ///
    /// Images with incompatible features this crate does not understand
    /// are refused outright; images it can read but must not write (MMP,
    /// ...) open, and [`Ext4::open_file`] refuses them.
    ///
    /// On a writable device, an internal journal that needs recovery is
    /// replayed first (see [`crate::jbd2::recovery`]), before anything
    /// else is read: the superblock and descriptors are then read again
    /// from the recovered image ([`Ext4::recovery`] says what was done). A
    /// journal bufwrite cannot replay (external, fast commits) leaves the
    /// image opened with writes refused; a corrupt one fails the open, as
    /// it fails the kernel's mount.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Ext4> {
        Self::open_with(dev, AllocPolicy::default())
    }

    /// As [`Ext4::open`], with the writeback allocation policy the files
    /// opened for writing use.
    pub fn open_with(dev: Arc<dyn BlockDevice>, policy: AllocPolicy) -> Result<Ext4> {
        let mut fs = Self::open_replayed(dev, policy)?;
        fs.finish_orphans();
        Ok(fs)
    }

    /// Opens, replaying the journal first when it needs recovery.
    fn open_replayed(dev: Arc<dyn BlockDevice>, policy: AllocPolicy) -> Result<Ext4> {
        let fs = Self::open_raw(Arc::clone(&dev), policy, false)?;
        if !fs.sb.has_incompat(incompat::RECOVER) || dev.read_only() {
            return Ok(fs);
        }
        // Only the superblock, the journal inode's group descriptor and
        // inode, and its block map were read: none of them is journaled
        // (the kernel never logs the journal inode).
        let recovered = crate::jbd2::Journal::open(&fs).and_then(|mut j| j.recover());
        match recovered {
            Ok(report) => {
                let mut fs = Self::open_raw(dev, policy, false)?;
                fs.recovery = Some(report);
                Ok(fs)
            }
            Err(Ext4Error::Unsupported(_)) => Ok(fs),
            Err(e) => Err(e),
        }
    }

    /// Processes the orphan list on a writable image, as the kernel's
    /// mount does after its replay (see `orphan.rs`). An image whose list
    /// cannot be processed opens anyway, with allocation refused and the
    /// reason named ([`Ext4::alloc_blockers`]).
    fn finish_orphans(&mut self) {
        if self.sb.last_orphan == 0 || self.dev.read_only() || !self.write_blockers().is_empty() {
            return;
        }
        match self.release_orphans() {
            Ok(done) => self.orphans = done,
            Err(e) => self.orphan_error = Some(e.to_string()),
        }
    }

    /// The inodes the orphan list named, and what this open did to each
    /// (empty when the list was empty, or the open read-only).
    pub fn orphans(&self) -> &[crate::orphan::Orphan] {
        &self.orphans
    }

    /// Records that the orphan list now starts at `ino` (0: empty).
    pub(crate) fn set_last_orphan(&mut self, ino: u32) {
        self.sb.last_orphan = ino;
    }

    /// Opens the image without replaying its journal and with every write
    /// refused (a journal needing recovery is named as the reason).
    pub fn open_read_only(dev: Arc<dyn BlockDevice>) -> Result<Ext4> {
        Self::open_raw(dev, AllocPolicy::default(), true)
    }

    /// What the journal did since this open (`None` when no journal is
    /// written: none on the image, read-only, or nothing written yet).
    pub fn journal_stats(&self) -> Option<crate::JournalStats> {
        let m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref().and_then(|m| m.journal_stats())
    }

    /// Sets how old the running transaction may get before the commit
    /// thread commits it (default [`crate::COMMIT_INTERVAL`]).
    pub fn set_commit_interval(&self, interval: std::time::Duration) -> Result<()> {
        self.meta()?.set_commit_interval(interval);
        Ok(())
    }

    /// Commits the running transaction now (what fsync does).
    pub fn journal_commit(&self) -> Result<()> {
        match self.meta.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(m) => m.journal_commit().map(|_| ()),
            None => Ok(()),
        }
    }

    /// What the journal recovery this open ran found, if it ran one.
    pub fn recovery(&self) -> Option<&crate::jbd2::RecoveryReport> {
        self.recovery.as_ref()
    }

    fn open_raw(dev: Arc<dyn BlockDevice>, policy: AllocPolicy, read_only: bool) -> Result<Ext4> {
        let sb = Superblock::read(dev.as_ref())?;
        let unknown = sb.unknown_incompat();
        if unknown != 0 {
            return Err(Ext4Error::Unsupported(format!(
                "incompatible features bufwrite does not understand: {}",
                crate::superblock::incompat_names(unknown)
            )));
        }
        let groups = group_desc::read_all(dev.as_ref(), &sb)?;
        let system = system_zone(&sb, &groups);
        // A writable filesystem with an internal journal journals its
        // metadata: its reads go through the overlay of blocks not yet
        // written home.
        let journaled = !read_only
            && !dev.read_only()
            && sb.feature_compat & crate::superblock::compat::HAS_JOURNAL != 0
            && sb.journal_inum != 0;
        let (dev, raw) = if journaled {
            let overlay = Arc::new(Overlay::default());
            let over: Arc<dyn BlockDevice> = Arc::new(OverlayDev::new(
                Arc::clone(&dev),
                Arc::clone(&overlay),
                sb.block_size,
            ));
            (over, Some((dev, overlay)))
        } else {
            (dev, None)
        };
        Ok(Ext4 {
            dev,
            raw,
            sb: Box::new(sb),
            groups,
            system,
            policy,
            meta: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            recovery: None,
            read_only,
            orphans: Vec::new(),
            orphan_error: None,
        })
    }

    /// The writeback allocation policy.
    pub fn policy(&self) -> AllocPolicy {
        self.policy
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The device the filesystem lives on.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Why nothing on this image may be written (empty when it may).
    pub fn write_blockers(&self) -> Vec<String> {
        let mut v = self.sb.write_blockers();
        if self.read_only {
            v.push("the filesystem was opened read-only".into());
        }
        v
    }

    fn fs_seed(&self) -> Option<u32> {
        self.sb.has_metadata_csum().then_some(self.sb.csum_seed)
    }

    pub(crate) fn tree_ctx(&self) -> TreeCtx<'_> {
        TreeCtx {
            dev: self.dev.as_ref(),
            block_size: self.sb.block_size,
            blocks_count: self.sb.blocks_count,
            csum: self.sb.has_metadata_csum(),
        }
    }

    /// Device byte offset of inode `ino`.
    fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Ext4Error::corrupt(
                Structure::Inode { ino },
                Location::InodeNumber,
                CorruptKind::OutOfRange {
                    field: "inode number",
                    value: ino.into(),
                    min: 1,
                    end: u64::from(self.sb.inodes_count) + 1,
                },
            ));
        }
        let idx = u64::from(ino - 1);
        let ipg = u64::from(self.sb.inodes_per_group);
        let g = &self.groups[(idx / ipg) as usize];
        let table = g.inode_table * u64::from(self.sb.block_size);
        Ok(table + (idx % ipg) * u64::from(self.sb.inode_size))
    }

    /// Reads and verifies inode `ino`.
    pub fn read_inode(&self, ino: u32) -> Result<Inode> {
        let off = self.inode_offset(ino)?;
        let size = usize::from(self.sb.inode_size);
        let raw = read_meta(self.dev.as_ref(), Structure::Inode { ino }, off, size)?;
        Inode::parse(ino, &raw, self.fs_seed(), off)
    }

    /// Parses an inode already read as part of an inode table.
    pub(crate) fn parse_inode(&self, ino: u32, raw: &[u8], off: u64) -> Result<Inode> {
        Inode::parse(ino, raw, self.fs_seed(), off)
    }

    /// The file's block map as a sorted extent list, from its extent tree
    /// or (for non-extent files) its indirect block map.
    pub fn map_inode(&self, inode: &Inode) -> Result<Vec<Extent>> {
        if inode.has_flag(flags::INLINE_DATA) {
            return Err(Ext4Error::Unsupported(format!(
                "inode {} keeps its data inline in the inode (inline_data): it has no blocks to map",
                inode.ino
            )));
        }
        let ctx = self.tree_ctx();
        let extents = if inode.has_flag(flags::EXTENTS) {
            extent::load(&ctx, inode)?
        } else {
            indirect::load(&ctx, inode)?
        };
        self.check_system_zone(inode, &extents)?;
        Ok(extents)
    }

    /// Refuses a block map that points into filesystem metadata (as the
    /// kernel's block validity check does): writing such a file would
    /// overwrite the superblock, a descriptor, a bitmap or an inode table.
    fn check_system_zone(&self, inode: &Inode, extents: &[Extent]) -> Result<()> {
        for e in extents {
            let end = e.pblk.saturating_add(e.len);
            let i = self.system.partition_point(|&(_, z_end)| z_end <= e.pblk);
            if let Some(&(zs, ze)) = self.system.get(i) {
                if zs < end {
                    return Err(Ext4Error::corrupt(
                        Structure::BlockMap { ino: inode.ino },
                        Location::FileBlock(e.lblk),
                        CorruptKind::Overlap {
                            blocks: (e.pblk, end),
                            with: OverlapWith::Metadata,
                            with_blocks: (zs, ze),
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Looks up an absolute path (`/a/b/c`) and returns its inode.
    pub fn lookup(&self, path: &str) -> Result<Inode> {
        let mut inode = self.read_inode(ROOT_INO)?;
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.len() > MAX_PATH_COMPONENTS {
            return Err(Ext4Error::NotFound(format!("{path}: too many components")));
        }
        for (i, part) in parts.iter().enumerate() {
            let so_far = format!("/{}", parts[..i].join("/"));
            if !inode.is_dir() {
                return Err(Ext4Error::WrongType(format!(
                    "{so_far} is {}, not a directory, so it has no {part} in it",
                    inode.file_type()
                )));
            }
            if inode.protection().encrypted {
                return Err(Ext4Error::Unsupported(format!(
                    "{so_far} is an encrypted directory: its names cannot be read without the key"
                )));
            }
            let extents = self.map_inode(&inode)?;
            let dir = Dir {
                ctx: &self.tree_ctx(),
                inode: &inode,
                extents: &extents,
                filetype: self.sb.has_incompat(incompat::FILETYPE),
            };
            let ino = dir
                .lookup(part.as_bytes())?
                .ok_or_else(|| Ext4Error::NotFound(format!("{path}: no {part} in {so_far}")))?;
            inode = self.read_inode(ino)?;
        }
        Ok(inode)
    }

    /// Why the file `inode` cannot be written in place by bufwrite, or `None`.
    fn file_write_refusal(&self, inode: &Inode) -> Option<String> {
        if let Some(why) = inode.protection().write_refusal() {
            return Some(why.into());
        }
        if !inode.has_flag(flags::EXTENTS) {
            return Some(
                "it is mapped by indirect blocks (no extents flag): bufwrite maps such files read-only"
                    .into(),
            );
        }
        None
    }

    fn open_inode(&self, path: &str) -> Result<(Inode, Vec<Extent>)> {
        let inode = self.lookup(path)?;
        if !inode.is_file() {
            let t = inode.file_type();
            let hint = match t {
                FileType::Symlink => " (bufwrite does not follow symbolic links)",
                FileType::CharDevice | FileType::BlockDevice => {
                    " (a device node has no data blocks of its own)"
                }
                _ => "",
            };
            return Err(Ext4Error::WrongType(format!(
                "{path} is {t}, not a regular file{hint}"
            )));
        }
        if let Some(why) = inode.protection().read_refusal() {
            return Err(Ext4Error::Unsupported(format!("refusing {path}: {why}")));
        }
        let extents = self.map_inode(&inode)?;
        Ok((inode, extents))
    }

    /// Opens the regular file at `path` for writing through either path.
    ///
    /// Refused, with the reasons named, when the image must not be written
    /// (see [`Ext4::write_blockers`]) or the file cannot be overwritten in
    /// place (indirect-mapped, inline, encrypted, verity).
    pub fn open_file(&self, path: &str) -> Result<Arc<Ext4File>> {
        let blockers = self.write_blockers();
        if self.sb.has_incompat(incompat::RECOVER) {
            return Err(Ext4Error::NeedsRecovery(format!(
                "refusing to write this image: {}",
                blockers.join("; ")
            )));
        }
        if !blockers.is_empty() {
            return Err(Ext4Error::Unsupported(format!(
                "refusing to write this image: {}",
                blockers.join("; ")
            )));
        }
        let (inode, extents) = self.open_inode(path)?;
        self.check_journal_overlap(&inode, &extents)?;
        if let Some(why) = self.file_write_refusal(&inode) {
            return Err(Ext4Error::Unsupported(format!(
                "refusing to write {path}: {why}"
            )));
        }
        self.writable_file(path, &inode, extents)
    }

    /// The write side, made on first use: refused when the image must not
    /// be allocated on (see [`Ext4::alloc_blockers`]).
    pub(crate) fn meta(&self) -> Result<Arc<Meta>> {
        self.meta_checked(true)
    }

    /// [`Ext4::meta`] for processing the orphan list, which is the one
    /// allocation blocker it removes.
    pub(crate) fn meta_for_orphans(&self) -> Result<Arc<Meta>> {
        self.meta_checked(false)
    }

    fn meta_checked(&self, orphans_block: bool) -> Result<Arc<Meta>> {
        let mut m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(meta) = &*m {
            return Ok(Arc::clone(meta));
        }
        let mut blockers = self.alloc_blockers();
        if !orphans_block {
            blockers.retain(|b| !b.starts_with(ORPHAN_BLOCKER));
        }
        if !blockers.is_empty() {
            return Err(Ext4Error::Unsupported(format!(
                "refusing to allocate on this image: {}",
                blockers.join("; ")
            )));
        }
        let tables = self
            .groups
            .iter()
            .map(|g| g.inode_table * u64::from(self.sb.block_size))
            .collect();
        let journal = match &self.raw {
            None => None,
            Some((raw, overlay)) => {
                match crate::jbd2::Journal::open_on(self, Arc::clone(raw))
                    .and_then(crate::jbd2::JournalWriter::new)
                {
                    Ok(w) => Some(JournalState::new(w, Arc::clone(overlay))),
                    // A journal bufwrite does not write (external, fast
                    // commits): the metadata goes in place, in the
                    // crash-safe order, as without one.
                    Err(Ext4Error::Unsupported(_)) => None,
                    Err(e) => return Err(e),
                }
            }
        };
        let journaled = journal.is_some();
        let meta = Arc::new(Meta::new(
            Arc::clone(&self.dev),
            (*self.sb).clone(),
            tables,
            self.policy,
            journal,
        )?);
        if journaled {
            crate::journal::spawn_commit_thread(&meta);
        }
        *m = Some(Arc::clone(&meta));
        Ok(meta)
    }

    /// Reasons bufwrite must not allocate blocks or inodes on this image
    /// (beyond [`Ext4::write_blockers`]), empty when it may.
    pub fn alloc_blockers(&self) -> Vec<String> {
        let mut v = self.write_blockers();
        if self.sb.has_ro_compat(ro_compat::BIGALLOC) {
            v.push(
                "bigalloc (clusters larger than a block) is not modelled by the allocator".into(),
            );
        }
        if self.sb.has_incompat(incompat::META_BG) {
            v.push(
                "meta_bg moves the group descriptors, which the allocator does not follow".into(),
            );
        }
        if self.sb.has_ro_compat(ro_compat::QUOTA) {
            v.push("quota accounting is not modelled: the quota files would go stale".into());
        }
        if self.sb.last_orphan != 0 {
            v.push(match &self.orphan_error {
                Some(e) => format!("{ORPHAN_BLOCKER} ({e}): run e2fsck first"),
                None => format!("{ORPHAN_BLOCKER}: run e2fsck first"),
            });
        }
        if self.sb.has_ro_compat(ro_compat::ORPHAN_PRESENT) {
            v.push(
                "the orphan file has entries (orphan_present), which bufwrite does not process: \
                 run e2fsck first"
                    .into(),
            );
        }
        if !self.sb.has_incompat(incompat::EXTENTS) {
            v.push("the filesystem has no extents feature: new blocks could not be mapped".into());
        }
        v
    }

    /// The one writable mapper of `inode` (made now, or the open one).
    fn writable_file(
        &self,
        path: &str,
        inode: &Inode,
        extents: Vec<Extent>,
    ) -> Result<Arc<Ext4File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&inode.ino).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let blockers = self.alloc_blockers();
        let write = if blockers.is_empty() {
            let meta = self.meta()?;
            let tree = ExtentTree::load(&self.tree_ctx(), inode)?;
            let raw = meta.read_raw_inode(inode.ino)?;
            Ok((meta, tree, raw))
        } else {
            // Overwrites of written extents stay possible: they change no
            // metadata.
            Err(blockers.join("; "))
        };
        let f = Arc::new(Ext4File::new(
            path,
            inode,
            extents,
            self.sb.block_size,
            None,
            write,
        ));
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(inode.ino, Arc::downgrade(&f));
        Ok(f)
    }

    /// True while a writable mapper of `ino` is alive.
    pub(crate) fn is_open(&self, ino: u32) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ino).is_some_and(|w| w.strong_count() > 0)
    }

    /// Metadata blocks written so far by allocation, truncation, creation
    /// and unlinking, per kind (zero before the first write).
    pub fn meta_counts(&self) -> crate::txn::MetaCounts {
        let m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref().map(|m| m.counts()).unwrap_or_default()
    }

    /// Free blocks now and blocks reserved by delayed allocation, once the
    /// write side exists.
    pub fn space(&self) -> Option<(u64, u64)> {
        let m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref().map(|m| (m.free_blocks(), m.reserved()))
    }

    /// Refuses a file to be written whose blocks overlap the internal
    /// journal's (the kernel counts them as system blocks): a write would
    /// overwrite journal blocks a later recovery may replay.
    fn check_journal_overlap(&self, inode: &Inode, extents: &[Extent]) -> Result<()> {
        let jino = self.sb.journal_inum;
        if self.sb.feature_compat & compat::HAS_JOURNAL == 0 || jino == 0 || jino == inode.ino {
            return Ok(());
        }
        let journal = self.read_inode(jino)?;
        let runs: Vec<(u64, u64)> = self
            .map_inode(&journal)?
            .iter()
            .map(|e| (e.pblk, e.pblk.saturating_add(e.len)))
            .collect();
        let runs = merge(runs);
        for e in extents {
            let end = e.pblk.saturating_add(e.len);
            let i = runs.partition_point(|&(s, _)| s < end);
            if let Some(&(js, je)) = i.checked_sub(1).and_then(|i| runs.get(i)) {
                if je > e.pblk {
                    return Err(Ext4Error::corrupt(
                        Structure::BlockMap { ino: inode.ino },
                        Location::FileBlock(e.lblk),
                        CorruptKind::Overlap {
                            blocks: (e.pblk, end),
                            with: OverlapWith::Journal { ino: jino },
                            with_blocks: (js, je),
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    /// Opens the regular file at `path` for reading only: any mappable file
    /// (extents or indirect blocks); every write is refused.
    pub fn open_file_read_only(&self, path: &str) -> Result<Arc<Ext4File>> {
        let (inode, extents) = self.open_inode(path)?;
        let why = self
            .file_write_refusal(&inode)
            .unwrap_or_else(|| "it was opened read-only".into());
        Ok(Arc::new(Ext4File::new(
            path,
            &inode,
            extents,
            self.sb.block_size,
            Some(why.clone()),
            Err(why),
        )))
    }

    /// Calls `f` for every in-use inode from the first non-reserved one (and
    /// the root directory), reading inode tables a block at a time and
    /// skipping uninitialised tables and their unused tails.
    pub fn for_each_inode(&self, mut f: impl FnMut(&Inode) -> Result<()>) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let isz = u64::from(self.sb.inode_size);
        let per_block = bs / isz;
        let ipg = u64::from(self.sb.inodes_per_group);
        let tails_valid = self.sb.has_metadata_csum() || self.sb.has_ro_compat(ro_compat::GDT_CSUM);
        for (g, gd) in self.groups.iter().enumerate() {
            if tails_valid && gd.inode_uninit() {
                continue;
            }
            let used = if tails_valid {
                ipg - u64::from(gd.itable_unused)
            } else {
                ipg
            };
            for tb in 0..used.div_ceil(per_block) {
                let off = (gd.inode_table + tb) * bs;
                let block = read_meta(
                    self.dev.as_ref(),
                    Structure::InodeTable { group: g as u64 },
                    off,
                    bs as usize,
                )?;
                for k in 0..per_block.min(used - tb * per_block) {
                    let idx = g as u64 * ipg + tb * per_block + k;
                    let ino = (idx + 1) as u32;
                    if ino < self.sb.first_ino && ino != ROOT_INO {
                        continue;
                    }
                    let raw = &block[(k * isz) as usize..((k + 1) * isz) as usize];
                    let (mode, links) = (crate::util::le16(raw, 0), crate::util::le16(raw, 0x1A));
                    if mode == 0 || links == 0 {
                        continue;
                    }
                    f(&self.parse_inode(ino, raw, off + k * isz)?)?;
                }
            }
        }
        Ok(())
    }

    /// The iomap feature-gap report for this image.
    pub fn gaps(&self) -> Result<GapReport> {
        GapReport::scan(self)
    }
}

/// Sorted, merged block runs of the superblock, descriptor table, bitmaps
/// and inode tables.
fn system_zone(sb: &Superblock, groups: &[GroupDesc]) -> Vec<(u64, u64)> {
    let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
        .div_ceil(u64::from(sb.block_size));
    let mut runs = group_desc::table_runs(sb);
    for g in groups {
        for b in [g.block_bitmap, g.inode_bitmap] {
            if b != 0 && b < sb.blocks_count {
                runs.push((b, 1));
            }
        }
        runs.push((g.inode_table, table_blocks));
    }
    merge(
        runs.into_iter()
            .map(|(start, len)| (start, start.saturating_add(len)))
            .collect(),
    )
}

/// Sorts `[start, end)` runs and merges the overlapping and adjacent ones.
fn merge(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (start, end) in runs {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}
