//! The block and inode allocator: bitmaps, group descriptors and the
//! superblock's free counts, kept consistent (with every checksum) as
//! e2fsck checks them (UPSTREAM-ALLOC §7.1-§7.4, §8 rule 17).
//!
//! The [`Allocator`] is the authoritative in-memory allocation state
//! while an image is open for writing: descriptors and the superblock are
//! loaded once, bitmaps on first use of their group. Every change is
//! queued, as whole blocks, in the caller's [`Transaction`]: claims at
//! [`Phase::Claim`], releases at [`Phase::Release`], so that a crash can
//! only leak space. Only the primary superblock and descriptor table are
//! updated, as the kernel does outside online resize.
//!
//! Blocks freed here are not handed out again until the caller says the
//! freeing transaction is on disk ([`Allocator::frees_committed`]): reusing
//! them earlier could let a new owner's data land in a block that an
//! older, still-on-disk extent points at (UPSTREAM-ALLOC §8 rule 10).

// The integrator wires the allocator into `Ext4File`; until then only
// the tests use it.

mod bitmap;
#[cfg(test)]
mod tests;

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, OverlapWith, Result, Structure};
use crate::group_desc::{
    desc_block, desc_csum, has_super, read_table_block, superblock_block, table_runs,
};
use crate::superblock::{incompat, ro_compat, Superblock, SUPERBLOCK_OFFSET};
use crate::txn::{MetaKind, Phase, Transaction};
use crate::util::{hilo, le16, le32, read_meta};
use bufwrite_engine::BlockDevice;

/// `bg_flags`: the inode bitmap was never written (every inode is free).
const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the block bitmap was never written (only the group's own
/// metadata is in use).
const BG_BLOCK_UNINIT: u16 = 0x2;
/// `s_feature_compat`: superblock backups only in the two groups named in
/// `s_backup_bgs`.
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
/// Regular files of a flex group start in its second group when a flex
/// group has at least this many groups (the kernel's
/// `EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME`).
const FLEX_SIZE_DIR_ALLOC_SCHEME: u64 = 4;

/// One group's descriptor fields and its bitmaps, once loaded.
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free_blocks: u32,
    free_inodes: u32,
    used_dirs: u32,
    flags: u16,
    itable_unused: u32,
    /// The block bitmap as it is (or will be) on disk, padding bits set;
    /// for a BLOCK_UNINIT group, the bitmap that flag stands for.
    bbm: Option<Vec<u8>>,
    /// The inode bitmap, likewise.
    ibm: Option<Vec<u8>>,
    /// Blocks freed since the last [`Allocator::frees_committed`]: free on
    /// disk, not to be handed out yet.
    busy: Option<Vec<u8>>,
}

/// The filesystem's allocation state, in memory, authoritative while the
/// image is open for writing.
pub(crate) struct Allocator {
    sb: Superblock,
    bs: u64,
    /// The filesystem block holding the primary superblock, whole (block 0
    /// also holds the boot sector when blocks are larger than 1 KiB).
    sb_block: u64,
    /// See [`Allocator::set_lazy_superblock`].
    lazy_sb: bool,
    /// The free totals changed since they were last written home (lazy
    /// superblock only).
    sb_dirty: bool,
    sb_data: Vec<u8>,
    /// Byte offset of the superblock in `sb_data`.
    sb_off: usize,
    /// The descriptor table's blocks, raw, so that fields this crate does
    /// not know survive a rewrite.
    gdt: Vec<Vec<u8>>,
    gdt_first: u64,
    per_block: u64,
    desc_size: usize,
    groups: Vec<Group>,
    /// Every metadata block (superblock and descriptor copies, reserved
    /// descriptor blocks, bitmaps, inode tables), as sorted, merged
    /// `[first, end)` runs.
    meta: Vec<(u64, u64)>,
    /// Group checksums are on (metadata_csum or gdt_csum): only then do
    /// `bg_flags` and `bg_itable_unused` mean anything.
    group_csum: bool,
    free_blocks: u64,
    free_inodes: u64,
}

fn unsupported(what: impl Into<String>) -> Ext4Error {
    Ext4Error::Unsupported(what.into())
}

fn set16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl Allocator {
    /// Loads the group descriptor table (raw blocks kept, so unknown fields
    /// survive), the superblock bytes (1024 bytes at byte 1024) and nothing
    /// else: bitmaps load lazily, verified (bitmap checksums with
    /// metadata_csum), on first use of a group. Refuses (Ext4Error) images
    /// it cannot keep consistent: bigalloc, meta_bg, sparse_super2, bitmaps
    /// too small for the group, a descriptor whose free counts exceed the
    /// group or whose checksum is wrong.
    pub(crate) fn load(dev: &dyn BlockDevice, sb: &Superblock) -> Result<Allocator> {
        if sb.has_ro_compat(ro_compat::BIGALLOC) {
            return Err(unsupported(
                "bigalloc: the allocator counts blocks, not clusters",
            ));
        }
        if sb.has_incompat(incompat::META_BG) {
            return Err(unsupported(
                "meta_bg: the allocator keeps one contiguous descriptor table",
            ));
        }
        if sb.feature_compat & COMPAT_SPARSE_SUPER2 != 0 {
            return Err(unsupported(
                "sparse_super2: superblock backup groups are not located",
            ));
        }
        let bs = u64::from(sb.block_size);
        let bits = bs * 8;
        if u64::from(sb.blocks_per_group) > bits || u64::from(sb.inodes_per_group) > bits {
            return Err(unsupported(format!(
                "{} blocks or {} inodes per group do not fit a {bs}-byte bitmap",
                sb.blocks_per_group, sb.inodes_per_group
            )));
        }
        let ds = usize::from(sb.desc_size);
        let per_block = bs / u64::from(sb.desc_size);
        let ngroups = sb.group_count();
        let table_blocks = ngroups.div_ceil(per_block);
        let sb_block = superblock_block(sb);
        let sb_off = (SUPERBLOCK_OFFSET - sb_block * bs) as usize;
        let sb_data = read_meta(dev, Structure::Superblock, sb_block * bs, bs as usize)?;
        let gdt_first = desc_block(sb, 0, per_block);
        let group_csum = sb.has_metadata_csum() || sb.has_ro_compat(ro_compat::GDT_CSUM);
        let wide = ds >= 64;
        let mut gdt = Vec::new();
        let mut groups = Vec::new();
        let mut free_blocks = 0u64;
        let mut free_inodes = 0u64;
        for i in 0..table_blocks {
            let (blk, buf) = read_table_block(dev, sb, i, per_block)?;
            for j in 0..per_block {
                let g = i * per_block + j;
                if g >= ngroups {
                    break;
                }
                let at = j as usize * ds;
                let d = &buf[at..at + ds];
                let loc = Location::BlockByte {
                    block: blk,
                    byte: at as u64,
                };
                let bad =
                    |kind| Ext4Error::corrupt(Structure::GroupDescriptor { group: g }, loc, kind);
                if let Some(want) = desc_csum(sb, g, d) {
                    let on_disk = le16(d, 0x1E);
                    if on_disk != want {
                        return Err(bad(CorruptKind::ChecksumMismatch {
                            on_disk: on_disk.into(),
                            computed: want.into(),
                            bits: 16,
                        }));
                    }
                }
                let hi32 = |off| if wide { le32(d, off) } else { 0 };
                let hi16 = |off| if wide { u32::from(le16(d, off)) } else { 0 };
                let lo16 = |off| u32::from(le16(d, off));
                let grp = Group {
                    block_bitmap: hilo(hi32(0x20), le32(d, 0x0)),
                    inode_bitmap: hilo(hi32(0x24), le32(d, 0x4)),
                    inode_table: hilo(hi32(0x28), le32(d, 0x8)),
                    free_blocks: (hi16(0x2C) << 16) | lo16(0x0C),
                    free_inodes: (hi16(0x2E) << 16) | lo16(0x0E),
                    used_dirs: (hi16(0x30) << 16) | lo16(0x10),
                    flags: le16(d, 0x12),
                    itable_unused: (hi16(0x32) << 16) | lo16(0x1C),
                    bbm: None,
                    ibm: None,
                    busy: None,
                };
                let len = group_len(sb, g);
                let over = |field, count: u32, max: u64| {
                    bad(CorruptKind::CountOverMax {
                        field,
                        count: count.into(),
                        max,
                    })
                };
                if u64::from(grp.free_blocks) > len {
                    return Err(over("bg_free_blocks_count", grp.free_blocks, len));
                }
                let ipg = u64::from(sb.inodes_per_group);
                if u64::from(grp.free_inodes) > ipg {
                    return Err(over("bg_free_inodes_count", grp.free_inodes, ipg));
                }
                if u64::from(grp.used_dirs) > ipg {
                    return Err(over("bg_used_dirs_count", grp.used_dirs, ipg));
                }
                if group_csum && u64::from(grp.itable_unused) > ipg {
                    return Err(over("bg_itable_unused", grp.itable_unused, ipg));
                }
                let itable = itable_blocks(sb);
                for (first, n) in [
                    (grp.block_bitmap, 1),
                    (grp.inode_bitmap, 1),
                    (grp.inode_table, itable),
                ] {
                    let end = first.saturating_add(n);
                    let data_start = u64::from(sb.first_data_block);
                    if first == 0 || first < data_start {
                        // Block 0 (and with 1 KiB blocks the whole boot
                        // area before the first data block) is not the
                        // filesystem's to hand out.
                        return Err(bad(CorruptKind::Overlap {
                            blocks: (first, end),
                            with: OverlapWith::BootBlock,
                            with_blocks: (0, data_start.max(1)),
                        }));
                    }
                    if end > sb.blocks_count {
                        return Err(bad(CorruptKind::OutsideFilesystem {
                            blocks: (first, end),
                            blocks_count: sb.blocks_count,
                        }));
                    }
                }
                free_blocks += u64::from(grp.free_blocks);
                free_inodes += u64::from(grp.free_inodes);
                groups.push(grp);
            }
            gdt.push(buf);
        }
        let meta = metadata_runs(sb, &groups);
        Ok(Allocator {
            sb: sb.clone(),
            bs,
            sb_block,
            lazy_sb: false,
            sb_dirty: false,
            sb_data,
            sb_off,
            gdt,
            gdt_first,
            per_block,
            desc_size: ds,
            groups,
            meta,
            group_csum,
            free_blocks,
            free_inodes,
        })
    }

    /// Free blocks now (sum of groups; equals the superblock count on a
    /// clean image). Includes blocks freed but not yet reusable.
    pub(crate) fn free_blocks(&self) -> u64 {
        self.free_blocks
    }

    #[cfg(test)]
    /// Free inodes now (sum of groups).
    pub(crate) fn free_inodes(&self) -> u64 {
        self.free_inodes
    }

    /// Allocates up to `want` (>= 1) contiguous blocks: at `goal` if it is
    /// free (as much of `want` as is free from there: extending the
    /// previous extent beats a longer run elsewhere), else the first free
    /// run of `want` blocks at or after goal (wrapping), else the longest
    /// shorter run. Never a metadata block, never past blocks_count, never
    /// a block freed since the last [`Allocator::frees_committed`]; a run
    /// stays inside one group. Updates the bitmap, the group's and the
    /// superblock's free counts, clears BLOCK_UNINIT (the bitmap
    /// materialised as `ext4_init_block_bitmap` does), the checksums, and
    /// queues bitmap, descriptor block and superblock at [`Phase::Claim`].
    /// Returns `(first block, count)`; [`Ext4Error::NoSpace`] when no block
    /// is free, with nothing changed. Reservations are not consulted:
    /// writeback allocates what write time reserved.
    pub(crate) fn alloc_blocks(
        &mut self,
        dev: &dyn BlockDevice,
        goal: u64,
        want: u64,
        txn: &mut Transaction,
    ) -> Result<(u64, u64)> {
        if want == 0 {
            return Err(unsupported("an allocation of 0 blocks"));
        }
        let fdb = u64::from(self.sb.first_data_block);
        let goal = if goal < fdb || goal >= self.sb.blocks_count {
            fdb
        } else {
            goal
        };
        let want_bits = want.min(u64::from(self.sb.blocks_per_group)) as usize;
        let g0 = self.group_of(goal);
        let off0 = (goal - self.group_start(g0)) as usize;
        let len0 = group_len(&self.sb, g0 as u64) as usize;
        self.ensure_bbm(dev, g0)?;
        let found = {
            let grp = &self.groups[g0];
            let (b, busy) = (grp.bbm.as_deref().unwrap_or(&[]), grp.busy.as_deref());
            if bitmap::next_free(b, busy, off0, off0 + 1).is_some() {
                let end = bitmap::next_used(b, busy, off0, len0.min(off0 + want_bits));
                Some((g0, off0, end - off0))
            } else {
                None
            }
        };
        let found = match found {
            Some(f) => Some(f),
            None => self.search(dev, g0, off0, want_bits)?,
        };
        let Some((g, first, n)) = found else {
            return Err(Ext4Error::NoSpace(format!(
                "{want} blocks wanted, none free ({} free blocks all busy or none)",
                self.free_blocks
            )));
        };
        let start = self.group_start(g) + first as u64;
        let end = start + n as u64;
        // The bitmap was checked to mark every metadata block at load;
        // this guards against a logic error handing one out all the same.
        if let Some(&(m, _)) = self.meta_in(start, end).first() {
            return Err(Ext4Error::corrupt(
                Structure::BlockBitmap { group: g as u64 },
                Location::Block(self.groups[g].block_bitmap),
                CorruptKind::MetadataMarkedFree {
                    block: m.max(start),
                },
            ));
        }
        let grp = &mut self.groups[g];
        grp.flags &= !BG_BLOCK_UNINIT;
        if let Some(b) = grp.bbm.as_mut() {
            bitmap::set_range(b, first, first + n);
        }
        grp.free_blocks -= n as u32;
        self.free_blocks -= n as u64;
        self.put_bbm(g, Phase::Claim, txn);
        self.put_desc(g, Phase::Claim, txn);
        self.put_sb(Phase::Claim, txn);
        Ok((start, n as u64))
    }

    /// The search past the goal: the goal's group from the goal on, the
    /// following groups, wrapping, and the goal's group before the goal.
    fn search(
        &mut self,
        dev: &dyn BlockDevice,
        g0: usize,
        off0: usize,
        want: usize,
    ) -> Result<Option<(usize, usize, usize)>> {
        let ng = self.groups.len();
        let mut order = Vec::with_capacity(ng + 1);
        order.push((g0, off0, group_len(&self.sb, g0 as u64) as usize));
        for k in 1..ng {
            let g = (g0 + k) % ng;
            order.push((g, 0, group_len(&self.sb, g as u64) as usize));
        }
        if off0 > 0 {
            order.push((g0, 0, off0));
        }
        let mut best: Option<(usize, usize, usize)> = None;
        for (g, from, to) in order {
            if self.groups[g].free_blocks == 0 {
                continue;
            }
            self.ensure_bbm(dev, g)?;
            let grp = &self.groups[g];
            let b = grp.bbm.as_deref().unwrap_or(&[]);
            if let Some((s, l)) = bitmap::find_run(b, grp.busy.as_deref(), from, to, want) {
                if l >= want {
                    return Ok(Some((g, s, l)));
                }
                if best.is_none_or(|(_, _, bl)| l > bl) {
                    best = Some((g, s, l));
                }
            }
        }
        Ok(best)
    }

    /// Frees `[start, start+len)`: every block must be allocated and none
    /// metadata, else an error (corruption, or a refusal for a range
    /// outside the filesystem) and nothing changed. Queues bitmap,
    /// descriptor and superblock at [`Phase::Release`]. The blocks are
    /// not reused before [`Allocator::frees_committed`].
    pub(crate) fn free_blocks_range(
        &mut self,
        dev: &dyn BlockDevice,
        start: u64,
        len: u64,
        txn: &mut Transaction,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let fdb = u64::from(self.sb.first_data_block);
        let end = start
            .checked_add(len)
            .filter(|&e| start >= fdb && e <= self.sb.blocks_count)
            .ok_or_else(|| {
                unsupported(format!(
                    "freeing {len} blocks at {start}: outside the filesystem's blocks \
                     {fdb}..{}",
                    self.sb.blocks_count
                ))
            })?;
        if let Some(&run) = self.meta_in(start, end).first() {
            let g = self.group_of(run.0.max(start));
            return Err(Ext4Error::corrupt(
                Structure::BlockBitmap { group: g as u64 },
                Location::Block(run.0.max(start)),
                CorruptKind::Overlap {
                    blocks: (start, end),
                    with: OverlapWith::Metadata,
                    with_blocks: run,
                },
            ));
        }
        // Check every piece before changing any.
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let g = self.group_of(at);
            let gs = self.group_start(g);
            let piece_end = end.min(gs + group_len(&self.sb, g as u64));
            self.ensure_bbm(dev, g)?;
            let grp = &self.groups[g];
            let b = grp.bbm.as_deref().unwrap_or(&[]);
            for blk in at..piece_end {
                if !bitmap::test(b, (blk - gs) as usize) {
                    return Err(Ext4Error::corrupt(
                        Structure::BlockBitmap { group: g as u64 },
                        Location::Block(grp.block_bitmap),
                        CorruptKind::AlreadyFree { number: blk },
                    ));
                }
            }
            pieces.push((g, (at - gs) as usize, (piece_end - gs) as usize));
            at = piece_end;
        }
        let bs = self.bs as usize;
        for &(g, from, to) in &pieces {
            let grp = &mut self.groups[g];
            if let Some(b) = grp.bbm.as_mut() {
                bitmap::clear_range(b, from, to);
            }
            bitmap::set_range(grp.busy.get_or_insert_with(|| vec![0; bs]), from, to);
            grp.free_blocks += (to - from) as u32;
            self.free_blocks += (to - from) as u64;
            self.put_bbm(g, Phase::Release, txn);
            self.put_desc(g, Phase::Release, txn);
        }
        self.put_sb(Phase::Release, txn);
        Ok(())
    }

    /// Makes the blocks freed so far allocatable again: call once the
    /// transactions that freed them are committed.
    pub(crate) fn frees_committed(&mut self) {
        for g in &mut self.groups {
            g.busy = None;
        }
    }

    /// Allocates an inode: the first free one in the parent's group, then
    /// in the following groups (wrapping); never below `s_first_ino`. The
    /// group's INODE_UNINIT / BLOCK_UNINIT bitmaps are initialised first
    /// (as `__ext4_new_inode` does), `bg_itable_unused` lowered past the
    /// new inode, `bg_used_dirs_count` raised for a directory, free counts
    /// and checksums updated; everything queued at [`Phase::Claim`].
    /// Returns the inode number; [`Ext4Error::NoSpace`] when none is free.
    pub(crate) fn alloc_inode(
        &mut self,
        dev: &dyn BlockDevice,
        parent: u32,
        dir: bool,
        txn: &mut Transaction,
    ) -> Result<u32> {
        let ipg = self.sb.inodes_per_group as usize;
        let ng = self.groups.len();
        let pg = if parent >= 1 && parent <= self.sb.inodes_count {
            (parent as usize - 1) / ipg
        } else {
            0
        };
        let reserved = self.sb.first_ino as usize - 1;
        for k in 0..ng {
            let g = (pg + k) % ng;
            if self.groups[g].free_inodes == 0 {
                continue;
            }
            self.ensure_ibm(dev, g)?;
            let from = reserved.saturating_sub(g * ipg).min(ipg);
            let grp = &self.groups[g];
            let Some(i) = bitmap::next_free(grp.ibm.as_deref().unwrap_or(&[]), None, from, ipg)
            else {
                continue;
            };
            if self.group_csum && grp.flags & BG_BLOCK_UNINIT != 0 {
                self.ensure_bbm(dev, g)?;
                self.groups[g].flags &= !BG_BLOCK_UNINIT;
                self.put_bbm(g, Phase::Claim, txn);
            }
            let group_csum = self.group_csum;
            let grp = &mut self.groups[g];
            let mut used_area = ipg - grp.itable_unused as usize;
            if group_csum && grp.flags & BG_INODE_UNINIT != 0 {
                grp.flags &= !BG_INODE_UNINIT;
                used_area = 0;
            }
            if let Some(b) = grp.ibm.as_mut() {
                bitmap::set(b, i);
            }
            grp.free_inodes -= 1;
            if dir {
                grp.used_dirs += 1;
            }
            if group_csum && i + 1 > used_area {
                grp.itable_unused = (ipg - (i + 1)) as u32;
            }
            self.free_inodes -= 1;
            self.put_ibm(g, Phase::Claim, txn);
            self.put_desc(g, Phase::Claim, txn);
            self.put_sb(Phase::Claim, txn);
            return Ok((g * ipg + i + 1) as u32);
        }
        Err(Ext4Error::NoSpace(format!(
            "no free inode ({} free inodes counted)",
            self.free_inodes
        )))
    }

    /// Frees inode `ino` (a directory when `dir`): clears its bit, raises
    /// the free counts, lowers `bg_used_dirs_count` for a directory;
    /// queued at [`Phase::Release`]. Refuses reserved inodes and inodes
    /// already free, with nothing changed.
    pub(crate) fn free_inode(
        &mut self,
        dev: &dyn BlockDevice,
        ino: u32,
        dir: bool,
        txn: &mut Transaction,
    ) -> Result<()> {
        if ino < self.sb.first_ino || ino > self.sb.inodes_count {
            return Err(unsupported(format!(
                "freeing inode {ino}: outside the allocatable inodes {}..={}",
                self.sb.first_ino, self.sb.inodes_count
            )));
        }
        let ipg = self.sb.inodes_per_group as usize;
        let g = (ino as usize - 1) / ipg;
        let i = (ino as usize - 1) % ipg;
        self.ensure_ibm(dev, g)?;
        let grp = &self.groups[g];
        if !bitmap::test(grp.ibm.as_deref().unwrap_or(&[]), i) {
            return Err(Ext4Error::corrupt(
                Structure::InodeBitmap { group: g as u64 },
                Location::Block(grp.inode_bitmap),
                CorruptKind::AlreadyFree { number: ino.into() },
            ));
        }
        if dir && grp.used_dirs == 0 {
            return Err(Ext4Error::corrupt(
                Structure::GroupDescriptor { group: g as u64 },
                self.desc_location(g),
                CorruptKind::Zero {
                    field: "bg_used_dirs_count",
                },
            ));
        }
        let grp = &mut self.groups[g];
        if let Some(b) = grp.ibm.as_mut() {
            bitmap::clear(b, i);
        }
        grp.free_inodes += 1;
        if dir {
            grp.used_dirs -= 1;
        }
        self.free_inodes += 1;
        self.put_ibm(g, Phase::Release, txn);
        self.put_desc(g, Phase::Release, txn);
        self.put_sb(Phase::Release, txn);
        Ok(())
    }

    /// The goal block for a regular file's first block: the start of the
    /// inode's group, or with flex groups of 4 and more groups the start
    /// of the flex group's second group (the first is kept for
    /// directories), as `ext4_inode_to_goal_block`.
    pub(crate) fn inode_goal(&self, ino: u32) -> u64 {
        self.goal(ino, true)
    }

    #[cfg(test)]
    /// The goal block for a directory's (or other non-regular inode's)
    /// first block: as [`Allocator::inode_goal`], without the step to the
    /// flex group's second group.
    pub(crate) fn dir_goal(&self, ino: u32) -> u64 {
        self.goal(ino, false)
    }

    fn goal(&self, ino: u32, regular: bool) -> u64 {
        let ng = self.groups.len() as u64;
        let ipg = u64::from(self.sb.inodes_per_group);
        let mut g = (u64::from(ino.max(1)) - 1) / ipg;
        let log_flex = self.sb_data[self.sb_off + 0x174];
        if self.sb.has_incompat(incompat::FLEX_BG) && log_flex < 32 {
            let flex = 1u64 << log_flex;
            if flex >= FLEX_SIZE_DIR_ALLOC_SCHEME {
                g &= !(flex - 1);
                if regular {
                    g += 1;
                }
            }
        }
        let g = g.min(ng.saturating_sub(1));
        u64::from(self.sb.first_data_block) + g * u64::from(self.sb.blocks_per_group)
    }

    #[cfg(test)]
    /// True if `blk` is in use: marked in its bitmap, a metadata block, or
    /// outside the filesystem (for the writers' sanity checks). A block
    /// freed but not yet reusable reads as free.
    pub(crate) fn is_allocated(&mut self, dev: &dyn BlockDevice, blk: u64) -> Result<bool> {
        if blk < u64::from(self.sb.first_data_block) || blk >= self.sb.blocks_count {
            return Ok(true);
        }
        if !self.meta_in(blk, blk + 1).is_empty() {
            return Ok(true);
        }
        let g = self.group_of(blk);
        self.ensure_bbm(dev, g)?;
        let off = (blk - self.group_start(g)) as usize;
        Ok(bitmap::test(
            self.groups[g].bbm.as_deref().unwrap_or(&[]),
            off,
        ))
    }

    fn group_start(&self, g: usize) -> u64 {
        u64::from(self.sb.first_data_block) + g as u64 * u64::from(self.sb.blocks_per_group)
    }

    /// The group of a block inside the filesystem.
    fn group_of(&self, blk: u64) -> usize {
        ((blk - u64::from(self.sb.first_data_block)) / u64::from(self.sb.blocks_per_group)) as usize
    }

    /// The metadata runs overlapping `[start, end)`.
    fn meta_in(&self, start: u64, end: u64) -> &[(u64, u64)] {
        let lo = self.meta.partition_point(|r| r.1 <= start);
        let hi = lo + self.meta[lo..].partition_point(|r| r.0 < end);
        &self.meta[lo..hi]
    }

    fn desc_location(&self, g: usize) -> Location {
        Location::BlockByte {
            block: self.gdt_first + g as u64 / self.per_block,
            byte: (g as u64 % self.per_block) * self.desc_size as u64,
        }
    }

    fn desc(&self, g: usize) -> &[u8] {
        let at = (g as u64 % self.per_block) as usize * self.desc_size;
        &self.gdt[(g as u64 / self.per_block) as usize][at..at + self.desc_size]
    }

    fn wide(&self) -> bool {
        self.desc_size >= 64
    }

    /// Loads group `g`'s block bitmap: materialised for BLOCK_UNINIT,
    /// else read and checked (checksum, metadata marked, free count).
    fn ensure_bbm(&mut self, dev: &dyn BlockDevice, g: usize) -> Result<()> {
        if self.groups[g].bbm.is_some() {
            return Ok(());
        }
        let bs = self.bs as usize;
        let start = self.group_start(g);
        let len = group_len(&self.sb, g as u64) as usize;
        let grp = &self.groups[g];
        let loc = grp.block_bitmap;
        let bad = |kind| {
            Ext4Error::corrupt(
                Structure::BlockBitmap { group: g as u64 },
                Location::Block(loc),
                kind,
            )
        };
        let uninit = self.group_csum && grp.flags & BG_BLOCK_UNINIT != 0;
        let mut b = if uninit {
            // What ext4_init_block_bitmap builds: the group's own
            // superblock / descriptor backups and every bitmap or inode
            // table inside the group (flex_bg packs other groups' here).
            let mut b = vec![0u8; bs];
            for &(s, e) in self.meta_in(start, start + len as u64) {
                let s = s.max(start);
                let e = e.min(start + len as u64);
                bitmap::set_range(&mut b, (s - start) as usize, (e - start) as usize);
            }
            b
        } else {
            let b = read_meta(
                dev,
                Structure::BlockBitmap { group: g as u64 },
                loc * self.bs,
                bs,
            )?;
            if self.sb.has_metadata_csum() {
                let n = self.sb.blocks_per_group as usize / 8;
                let d = self.desc(g);
                let hi = if self.wide() { le16(d, 0x38) } else { 0 };
                self.check_bitmap_csum(&b[..n], le16(d, 0x18), hi)
                    .map_err(&bad)?;
            }
            for &(s, e) in self.meta_in(start, start + len as u64) {
                for blk in s.max(start)..e.min(start + len as u64) {
                    if !bitmap::test(&b, (blk - start) as usize) {
                        return Err(bad(CorruptKind::MetadataMarkedFree { block: blk }));
                    }
                }
            }
            b
        };
        let free = bitmap::count_zeros(&b, 0, len) as u64;
        if free != u64::from(grp.free_blocks) {
            return Err(bad(CorruptKind::FreeCountMismatch {
                field: "bg_free_blocks_count",
                on_disk: grp.free_blocks.into(),
                counted: free,
            }));
        }
        // Padding: the bits past the group's last block are set.
        bitmap::set_range(&mut b, len, bs * 8);
        self.groups[g].bbm = Some(b);
        Ok(())
    }

    /// Loads group `g`'s inode bitmap: all free for INODE_UNINIT, else read
    /// and checked (checksum, free count).
    fn ensure_ibm(&mut self, dev: &dyn BlockDevice, g: usize) -> Result<()> {
        if self.groups[g].ibm.is_some() {
            return Ok(());
        }
        let bs = self.bs as usize;
        let ipg = self.sb.inodes_per_group as usize;
        let grp = &self.groups[g];
        let loc = grp.inode_bitmap;
        let bad = |kind| {
            Ext4Error::corrupt(
                Structure::InodeBitmap { group: g as u64 },
                Location::Block(loc),
                kind,
            )
        };
        let mut b = if self.group_csum && grp.flags & BG_INODE_UNINIT != 0 {
            vec![0u8; bs]
        } else {
            let b = read_meta(
                dev,
                Structure::InodeBitmap { group: g as u64 },
                loc * self.bs,
                bs,
            )?;
            if self.sb.has_metadata_csum() {
                let d = self.desc(g);
                let hi = if self.wide() { le16(d, 0x3A) } else { 0 };
                self.check_bitmap_csum(&b[..ipg / 8], le16(d, 0x1A), hi)
                    .map_err(&bad)?;
            }
            b
        };
        let free = bitmap::count_zeros(&b, 0, ipg) as u64;
        if free != u64::from(grp.free_inodes) {
            return Err(bad(CorruptKind::FreeCountMismatch {
                field: "bg_free_inodes_count",
                on_disk: grp.free_inodes.into(),
                counted: free,
            }));
        }
        bitmap::set_range(&mut b, ipg, bs * 8);
        self.groups[g].ibm = Some(b);
        Ok(())
    }

    fn bitmap_csum(&self, covered: &[u8]) -> u32 {
        chksum(self.sb.csum_seed, covered)
    }

    /// Compares a bitmap's checksum with the descriptor's halves (the high
    /// half only in 64-byte descriptors).
    fn check_bitmap_csum(
        &self,
        covered: &[u8],
        lo: u16,
        hi: u16,
    ) -> std::result::Result<(), CorruptKind> {
        let c = self.bitmap_csum(covered);
        let (on_disk, computed, bits) = if self.wide() {
            ((u32::from(hi) << 16) | u32::from(lo), c, 32)
        } else {
            (u32::from(lo), c & 0xFFFF, 16)
        };
        if on_disk != computed {
            return Err(CorruptKind::ChecksumMismatch {
                on_disk,
                computed,
                bits,
            });
        }
        Ok(())
    }

    /// Queues group `g`'s block bitmap and records its checksum in the
    /// descriptor (which the caller queues after).
    fn put_bbm(&mut self, g: usize, phase: Phase, txn: &mut Transaction) {
        let Some(b) = self.groups[g].bbm.clone() else {
            return;
        };
        if self.sb.has_metadata_csum() {
            let c = self.bitmap_csum(&b[..self.sb.blocks_per_group as usize / 8]);
            self.set_desc_split16(g, 0x18, 0x38, c);
        }
        txn.put(self.groups[g].block_bitmap, MetaKind::Bitmap, phase, b);
    }

    /// Queues group `g`'s inode bitmap, as [`Allocator::put_bbm`].
    fn put_ibm(&mut self, g: usize, phase: Phase, txn: &mut Transaction) {
        let Some(b) = self.groups[g].ibm.clone() else {
            return;
        };
        if self.sb.has_metadata_csum() {
            let c = self.bitmap_csum(&b[..self.sb.inodes_per_group as usize / 8]);
            self.set_desc_split16(g, 0x1A, 0x3A, c);
        }
        txn.put(self.groups[g].inode_bitmap, MetaKind::Bitmap, phase, b);
    }

    /// Stores a 32-bit value split in a low half at `lo` and (64-byte
    /// descriptors only) a high half at `hi`.
    fn set_desc_split16(&mut self, g: usize, lo: usize, hi: usize, v: u32) {
        let wide = self.wide();
        let at = (g as u64 % self.per_block) as usize * self.desc_size;
        let blk = &mut self.gdt[(g as u64 / self.per_block) as usize];
        let d = &mut blk[at..at + self.desc_size];
        set16(d, lo, v as u16);
        if wide {
            set16(d, hi, (v >> 16) as u16);
        }
    }

    /// Writes group `g`'s counts and flags into its descriptor, its
    /// checksum, and queues the descriptor block.
    fn put_desc(&mut self, g: usize, phase: Phase, txn: &mut Transaction) {
        let grp = &self.groups[g];
        let (fb, fi, ud, it, flags) = (
            grp.free_blocks,
            grp.free_inodes,
            grp.used_dirs,
            grp.itable_unused,
            grp.flags,
        );
        self.set_desc_split16(g, 0x0C, 0x2C, fb);
        self.set_desc_split16(g, 0x0E, 0x2E, fi);
        self.set_desc_split16(g, 0x10, 0x30, ud);
        if self.group_csum {
            self.set_desc_split16(g, 0x1C, 0x32, it);
        }
        let i = (g as u64 / self.per_block) as usize;
        let at = (g as u64 % self.per_block) as usize * self.desc_size;
        set16(&mut self.gdt[i][at..], 0x12, flags);
        if let Some(c) = desc_csum(&self.sb, g as u64, self.desc(g)) {
            set16(&mut self.gdt[i][at..], 0x1E, c);
        }
        txn.put(
            self.gdt_first + i as u64,
            MetaKind::Descriptor,
            phase,
            self.gdt[i].clone(),
        );
    }

    /// Sets or clears `needs_recovery` in the superblock copy the
    /// allocator writes (and journals) with its counts.
    pub(crate) fn set_needs_recovery_bit(&mut self, on: bool) {
        let s = &mut self.sb_data[self.sb_off..self.sb_off + 1024];
        let mut inc = u32::from_le_bytes([s[0x60], s[0x61], s[0x62], s[0x63]]);
        if on {
            inc |= incompat::RECOVER;
        } else {
            inc &= !incompat::RECOVER;
        }
        s[0x60..0x64].copy_from_slice(&inc.to_le_bytes());
    }

    /// With a journal the superblock's free counts are kept lazily, as the
    /// kernel keeps them (in percpu counters): the group descriptors are
    /// authoritative, ext4's mount and e2fsck sum them, so allocations and
    /// frees do not log the superblock. [`Allocator::take_lazy_counts`]
    /// gives the totals to write home at sync and unmount.
    pub(crate) fn set_lazy_superblock(&mut self, on: bool) {
        self.lazy_sb = on;
    }

    /// The free block and inode totals, when they changed since the last
    /// call and the superblock is kept lazily.
    pub(crate) fn take_lazy_counts(&mut self) -> Option<(u64, u64)> {
        std::mem::take(&mut self.sb_dirty).then_some((self.free_blocks, self.free_inodes))
    }

    /// The free totals still need writing home (a failed write).
    pub(crate) fn mark_lazy_counts_dirty(&mut self) {
        self.sb_dirty = self.lazy_sb;
    }

    /// Sets `s_last_orphan` (the orphan list's head; 0 empties it) and
    /// queues the superblock, whether the counts are kept lazily or not.
    pub(crate) fn set_last_orphan(&mut self, ino: u32, txn: &mut Transaction) {
        set32(
            &mut self.sb_data[self.sb_off..self.sb_off + 1024],
            0xE8,
            ino,
        );
        let lazy = std::mem::replace(&mut self.lazy_sb, false);
        self.put_sb(Phase::Point, txn);
        self.lazy_sb = lazy;
    }

    /// Writes the free counts into the superblock, its checksum, and
    /// queues the block holding it (only marks the counts dirty when they
    /// are kept lazily).
    fn put_sb(&mut self, phase: Phase, txn: &mut Transaction) {
        let bit64 = self.sb.has_incompat(incompat::BIT64);
        let csum = self.sb.has_metadata_csum();
        let s = &mut self.sb_data[self.sb_off..self.sb_off + 1024];
        set32(s, 0x0C, self.free_blocks as u32);
        if bit64 {
            set32(s, 0x158, (self.free_blocks >> 32) as u32);
        }
        set32(s, 0x10, self.free_inodes as u32);
        if csum {
            let c = chksum(!0, &s[..0x3FC]);
            set32(s, 0x3FC, c);
        }
        if self.lazy_sb {
            self.sb_dirty = true;
            return;
        }
        txn.put(
            self.sb_block,
            MetaKind::Superblock,
            phase,
            self.sb_data.clone(),
        );
    }
}

/// Blocks in group `g` (the last group may be short).
fn group_len(sb: &Superblock, g: u64) -> u64 {
    let start = u64::from(sb.first_data_block) + g * u64::from(sb.blocks_per_group);
    u64::from(sb.blocks_per_group).min(sb.blocks_count.saturating_sub(start))
}

/// Blocks of one inode table.
fn itable_blocks(sb: &Superblock) -> u64 {
    (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size))
}

/// Every metadata block as sorted, merged `[first, end)` runs: the
/// primary superblock and descriptor table with its reserved blocks, the
/// backups of groups that have one, and every group's bitmaps and inode
/// table.
fn metadata_runs(sb: &Superblock, groups: &[Group]) -> Vec<(u64, u64)> {
    let per_block = u64::from(sb.block_size) / u64::from(sb.desc_size);
    let table_blocks = sb.group_count().div_ceil(per_block);
    let mut runs: Vec<(u64, u64)> = table_runs(sb)
        .into_iter()
        .map(|(s, n)| (s, s + n))
        .collect();
    let backup = 1 + table_blocks + u64::from(sb.reserved_gdt_blocks);
    let itable = itable_blocks(sb);
    for (g, grp) in groups.iter().enumerate() {
        let g = g as u64;
        if g > 0 && has_super(sb, g) {
            let s = u64::from(sb.first_data_block) + g * u64::from(sb.blocks_per_group);
            runs.push((s, s + backup));
        }
        runs.push((grp.block_bitmap, grp.block_bitmap + 1));
        runs.push((grp.inode_bitmap, grp.inode_bitmap + 1));
        runs.push((grp.inode_table, grp.inode_table + itable));
    }
    runs.retain(|r| r.1 > r.0);
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
            _ => out.push(r),
        }
    }
    out
}
