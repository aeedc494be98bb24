//! The superblock: geometry, feature flags, default mount options and the
//! checksum seed.

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::util::{hilo, le16, le32, read_meta};
use bufwrite_engine::BlockDevice;

/// Byte offset of the primary superblock on the device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

/// `s_feature_compat` bits.
pub mod compat {
    /// A journal inode exists.
    pub const HAS_JOURNAL: u32 = 0x4;
    /// Extended attributes.
    pub const EXT_ATTR: u32 = 0x8;
    /// Hashed (htree) directories.
    pub const DIR_INDEX: u32 = 0x20;
    /// Fast commits in the journal.
    pub const FAST_COMMIT: u32 = 0x400;
}

/// `s_feature_incompat` bits.
pub mod incompat {
    /// Compression (never implemented upstream).
    pub const COMPRESSION: u32 = 0x1;
    /// Directory entries carry a file type.
    pub const FILETYPE: u32 = 0x2;
    /// The journal needs recovery.
    pub const RECOVER: u32 = 0x4;
    /// This is an external journal device.
    pub const JOURNAL_DEV: u32 = 0x8;
    /// Descriptor blocks spread over meta block groups.
    pub const META_BG: u32 = 0x10;
    /// Extent-mapped files.
    pub const EXTENTS: u32 = 0x40;
    /// 64-bit block numbers.
    pub const BIT64: u32 = 0x80;
    /// Multiple-mount protection.
    pub const MMP: u32 = 0x100;
    /// Flexible block groups.
    pub const FLEX_BG: u32 = 0x200;
    /// Large extended-attribute values in their own inodes.
    pub const EA_INODE: u32 = 0x400;
    /// Data in directory entries (Lustre).
    pub const DIRDATA: u32 = 0x1000;
    /// The checksum seed is stored in the superblock.
    pub const CSUM_SEED: u32 = 0x2000;
    /// Directories larger than 2 GiB / 3-level htrees.
    pub const LARGEDIR: u32 = 0x4000;
    /// Small files stored in the inode.
    pub const INLINE_DATA: u32 = 0x8000;
    /// fscrypt encryption.
    pub const ENCRYPT: u32 = 0x10000;
    /// Case-insensitive directories.
    pub const CASEFOLD: u32 = 0x20000;
    /// Every flag this crate can read an image with.
    pub const UNDERSTOOD: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}

/// `s_feature_ro_compat` bits.
pub mod ro_compat {
    /// Sparse superblock backups.
    pub const SPARSE_SUPER: u32 = 0x1;
    /// Files larger than 2 GiB.
    pub const LARGE_FILE: u32 = 0x2;
    /// Block counts in filesystem blocks.
    pub const HUGE_FILE: u32 = 0x8;
    /// crc16 group descriptor checksums.
    pub const GDT_CSUM: u32 = 0x10;
    /// More than 65000 subdirectories.
    pub const DIR_NLINK: u32 = 0x20;
    /// Large inodes carry extra fields.
    pub const EXTRA_ISIZE: u32 = 0x40;
    /// Quota inodes.
    pub const QUOTA: u32 = 0x100;
    /// Clusters of blocks as allocation unit.
    pub const BIGALLOC: u32 = 0x200;
    /// crc32c metadata checksums.
    pub const METADATA_CSUM: u32 = 0x400;
    /// Read-only filesystem.
    pub const READONLY: u32 = 0x1000;
    /// Project quotas.
    pub const PROJECT: u32 = 0x2000;
    /// fs-verity.
    pub const VERITY: u32 = 0x8000;
    /// Orphan file has entries.
    pub const ORPHAN_PRESENT: u32 = 0x10000;
    /// Every flag whose meaning this crate knows: others refuse writing, as
    /// the kernel refuses a read-write mount.
    pub const UNDERSTOOD: u32 = SPARSE_SUPER
        | LARGE_FILE
        | HUGE_FILE
        | GDT_CSUM
        | DIR_NLINK
        | EXTRA_ISIZE
        | QUOTA
        | BIGALLOC
        | METADATA_CSUM
        | READONLY
        | PROJECT
        | VERITY
        | ORPHAN_PRESENT;
}

/// The superblock fields bufwrite uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Total inodes.
    pub inodes_count: u32,
    /// Total blocks.
    pub blocks_count: u64,
    /// First data block (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// Block size in bytes (1 KiB .. 64 KiB).
    pub block_size: u32,
    /// Allocation cluster size in bytes: the block size, or larger with
    /// bigalloc.
    pub cluster_size: u32,
    /// Blocks per group.
    pub blocks_per_group: u32,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Filesystem state (bit 0: cleanly unmounted, bit 1: errors).
    pub state: u16,
    /// Revision level (0: fixed 128-byte inodes).
    pub rev_level: u32,
    /// First non-reserved inode.
    pub first_ino: u32,
    /// On-disk inode size.
    pub inode_size: u16,
    /// Compatible features.
    pub feature_compat: u32,
    /// Incompatible features.
    pub feature_incompat: u32,
    /// Read-only compatible features.
    pub feature_ro_compat: u32,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Group descriptor size (32, or 64 and up with 64bit).
    pub desc_size: u16,
    /// Default mount options.
    pub default_mount_opts: u32,
    /// First meta block group (meta_bg).
    pub first_meta_bg: u32,
    /// Blocks reserved after the descriptor table for online resize.
    pub reserved_gdt_blocks: u16,
    /// The journal inode (0 when none).
    pub journal_inum: u32,
    /// `s_journal_uuid`: the external journal's UUID (zero for an
    /// internal journal).
    pub journal_uuid: [u8; 16],
    /// `s_journal_dev`: the external journal's device number.
    pub journal_dev: u32,
    /// `s_jnl_backup_type` (1: `s_jnl_blocks` holds a copy of the journal
    /// inode's `i_block`, then `i_size_high` and `i_size`).
    pub jnl_backup_type: u8,
    /// `s_jnl_blocks`: the journal inode backup e2fsck falls back on.
    pub jnl_blocks: [u32; 17],
    /// The user quota inode (`s_usr_quota_inum`, 0 when none).
    pub usr_quota_inum: u32,
    /// The group quota inode (`s_grp_quota_inum`, 0 when none).
    pub grp_quota_inum: u32,
    /// The project quota inode (`s_prj_quota_inum`, 0 when none).
    pub prj_quota_inum: u32,
    /// The orphan file inode (`s_orphan_file_inum`, 0 when none).
    pub orphan_file_inum: u32,
    /// The lost+found directory e2fsck recorded (`s_lpf_ino`, 0 when none).
    pub lpf_ino: u32,
    /// The active snapshot inode of the never-merged next3/ext4 snapshot
    /// patches (`s_snapshot_inum`, 0 when none).
    pub snapshot_inum: u32,
    /// The `s_mount_opts` string (mount options stored by `mke2fs -E mount_opts=`).
    pub mount_opts: String,
    /// The seed of every metadata checksum except the superblock's own.
    pub csum_seed: u32,
    /// `s_hash_seed`: the htree name hash seed.
    pub hash_seed: [u32; 4],
    /// `s_def_hash_version`: the default htree hash (0 legacy, 1 half_md4, 2 tea).
    pub def_hash_version: u8,
    /// `s_flags` (bit 0x1 signed directory hash, 0x2 unsigned).
    pub flags: u32,
    /// `s_want_extra_isize`: the extra inode size new inodes get.
    pub want_extra_isize: u16,
    /// `s_last_orphan`: the head of the orphan list (0 on a clean image).
    pub last_orphan: u32,
}

impl Superblock {
    /// Reads and checks the primary superblock.
    pub fn read(dev: &dyn BlockDevice) -> Result<Superblock> {
        let b = read_meta(dev, Structure::Superblock, SUPERBLOCK_OFFSET, SB_SIZE)?;
        Self::parse(&b)
    }

    /// Parses a 1024-byte superblock image (tests build them by hand).
    #[cfg(test)]
    pub(crate) fn parse_bytes(b: &[u8]) -> Result<Superblock> {
        Self::parse(b)
    }

    fn parse(b: &[u8]) -> Result<Superblock> {
        let bad = |kind: CorruptKind| {
            Ext4Error::corrupt(
                Structure::Superblock,
                Location::Byte(SUPERBLOCK_OFFSET),
                kind,
            )
        };
        let magic = le16(b, 0x38);
        if magic != MAGIC {
            return Err(bad(CorruptKind::BadMagic {
                expected: MAGIC.into(),
                found: magic.into(),
            }));
        }
        let ro = le32(b, 0x64);
        if ro & ro_compat::METADATA_CSUM != 0 {
            if b[0x175] != 1 {
                return Err(bad(CorruptKind::ChecksumType { found: b[0x175] }));
            }
            let want = le32(b, 0x3FC);
            let got = chksum(!0, &b[..0x3FC]);
            if want != got {
                return Err(bad(CorruptKind::ChecksumMismatch {
                    on_disk: want,
                    computed: got,
                    bits: 32,
                }));
            }
        }
        let log_bs = le32(b, 0x18);
        if log_bs > 6 {
            // 2^6 KiB = 64 KiB, the largest block size.
            return Err(bad(CorruptKind::OutOfRange {
                field: "s_log_block_size",
                value: log_bs.into(),
                min: 0,
                end: 7,
            }));
        }
        let block_size = 1024u32 << log_bs;
        let cluster_size = if ro & ro_compat::BIGALLOC != 0 {
            // The kernel's bounds (ext4_load_super, ext4_handle_clustersize
            // in fs/ext4/super.c): no smaller than a block, at most 1 GiB.
            let log_cs = le32(b, 0x1C);
            if log_cs < log_bs || log_cs > 20 {
                // A cluster is one block to 1 GiB (2^20 KiB).
                return Err(bad(CorruptKind::OutOfRange {
                    field: "s_log_cluster_size",
                    value: log_cs.into(),
                    min: log_bs.into(),
                    end: 21,
                }));
            }
            1024u32 << log_cs
        } else {
            block_size
        };
        let incompat = le32(b, 0x60);
        let rev_level = le32(b, 0x4C);
        let (inode_size, first_ino) = if rev_level == 0 {
            (128, 11)
        } else {
            (le16(b, 0x58), le32(b, 0x54))
        };
        if inode_size < 128 || u32::from(inode_size) > block_size {
            return Err(bad(CorruptKind::OutOfRange {
                field: "s_inode_size",
                value: inode_size.into(),
                min: 128,
                end: u64::from(block_size) + 1,
            }));
        }
        if !inode_size.is_power_of_two() {
            return Err(bad(CorruptKind::NotPowerOfTwo {
                field: "s_inode_size",
                value: inode_size.into(),
            }));
        }
        let desc_size = if incompat & incompat::BIT64 != 0 {
            le16(b, 0xFE)
        } else {
            32
        };
        if desc_size < 32 || u32::from(desc_size) > block_size {
            return Err(bad(CorruptKind::OutOfRange {
                field: "s_desc_size",
                value: desc_size.into(),
                min: 32,
                end: u64::from(block_size) + 1,
            }));
        }
        if !desc_size.is_power_of_two() {
            return Err(bad(CorruptKind::NotPowerOfTwo {
                field: "s_desc_size",
                value: desc_size.into(),
            }));
        }
        let blocks_hi = if incompat & incompat::BIT64 != 0 {
            le32(b, 0x150)
        } else {
            0
        };
        let blocks_per_group = le32(b, 0x20);
        let inodes_per_group = le32(b, 0x28);
        if blocks_per_group == 0 {
            return Err(bad(CorruptKind::Zero {
                field: "s_blocks_per_group",
            }));
        }
        if inodes_per_group == 0 {
            return Err(bad(CorruptKind::Zero {
                field: "s_inodes_per_group",
            }));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 {
            le32(b, 0x270)
        } else {
            chksum(!0, &uuid)
        };
        let mut journal_uuid = [0u8; 16];
        journal_uuid.copy_from_slice(&b[0xD0..0xE0]);
        let mo = &b[0x200..0x240];
        let mo_len = mo.iter().position(|&c| c == 0).unwrap_or(mo.len());
        let sb = Superblock {
            inodes_count: le32(b, 0x0),
            blocks_count: hilo(blocks_hi, le32(b, 0x4)),
            first_data_block: le32(b, 0x14),
            block_size,
            cluster_size,
            blocks_per_group,
            inodes_per_group,
            state: le16(b, 0x3A),
            rev_level,
            first_ino,
            inode_size,
            feature_compat: le32(b, 0x5C),
            feature_incompat: incompat,
            feature_ro_compat: ro,
            uuid,
            desc_size,
            default_mount_opts: le32(b, 0x100),
            first_meta_bg: le32(b, 0x104),
            reserved_gdt_blocks: le16(b, 0xCE),
            journal_inum: le32(b, 0xE0),
            journal_uuid,
            journal_dev: le32(b, 0xE4),
            jnl_backup_type: b[0xFD],
            jnl_blocks: std::array::from_fn(|i| le32(b, 0x10C + 4 * i)),
            usr_quota_inum: le32(b, 0x240),
            grp_quota_inum: le32(b, 0x244),
            prj_quota_inum: le32(b, 0x26C),
            orphan_file_inum: le32(b, 0x280),
            lpf_ino: le32(b, 0x268),
            snapshot_inum: le32(b, 0x180),
            mount_opts: String::from_utf8_lossy(&mo[..mo_len]).into_owned(),
            csum_seed,
            hash_seed: [le32(b, 0xEC), le32(b, 0xF0), le32(b, 0xF4), le32(b, 0xF8)],
            def_hash_version: b[0xFC],
            flags: le32(b, 0x160),
            want_extra_isize: le16(b, 0x15E),
            last_orphan: le32(b, 0xE8),
        };
        sb.check_geometry()?;
        Ok(sb)
    }

    fn check_geometry(&self) -> Result<()> {
        let bad = |kind: CorruptKind| {
            Ext4Error::corrupt(
                Structure::Superblock,
                Location::Byte(SUPERBLOCK_OFFSET),
                kind,
            )
        };
        if u64::from(self.first_data_block) >= self.blocks_count {
            return Err(bad(CorruptKind::OutOfRange {
                field: "s_first_data_block",
                value: self.first_data_block.into(),
                min: 0,
                end: self.blocks_count,
            }));
        }
        // Every device byte offset is a block number below blocks_count
        // times the block size; it must fit in a u64.
        if self
            .blocks_count
            .checked_mul(u64::from(self.block_size))
            .is_none()
        {
            return Err(bad(CorruptKind::ByteOffsetOverflow {
                blocks: self.blocks_count,
                block_size: self.block_size,
            }));
        }
        let groups = self.group_count();
        let inodes = groups.checked_mul(u64::from(self.inodes_per_group));
        if inodes != Some(u64::from(self.inodes_count)) {
            return Err(bad(CorruptKind::InodesCount {
                count: self.inodes_count,
                groups,
                per_group: self.inodes_per_group,
            }));
        }
        // Group 0 may start at block 0 with 1 KiB blocks only when a
        // cluster spans the boot block and the superblock (bigalloc);
        // otherwise block 0 is not part of the filesystem and the kernel
        // refuses the geometry (ext4_geometry_check, fs/ext4/super.c).
        if self.block_size == 1024 && self.first_data_block == 0 && self.cluster_size == 1024 {
            return Err(bad(CorruptKind::GroupZeroOnBootBlock));
        }
        if self.first_ino < 11 || self.first_ino > self.inodes_count {
            return Err(bad(CorruptKind::OutOfRange {
                field: "s_first_ino",
                value: self.first_ino.into(),
                min: 11,
                end: u64::from(self.inodes_count) + 1,
            }));
        }
        Ok(())
    }

    /// Number of block groups.
    pub fn group_count(&self) -> u64 {
        (self.blocks_count - u64::from(self.first_data_block))
            .div_ceil(u64::from(self.blocks_per_group))
    }

    /// True when metadata_csum is on.
    pub fn has_metadata_csum(&self) -> bool {
        self.feature_ro_compat & ro_compat::METADATA_CSUM != 0
    }

    /// True when an incompat feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// True when a ro_compat feature bit is set.
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// True when the stored defaults ask for data=journal, set either in
    /// the default mount options (`tune2fs -o journal_data`) or in the
    /// stored mount option string (`tune2fs -E mount_opts=data=journal`),
    /// whether or not it takes effect (it does not without a journal: see
    /// [`crate::mount::MountDefaults`]).
    pub fn data_journal_default(&self) -> bool {
        crate::mount::MountDefaults::of(self).wants_data_journal()
    }

    /// Every inode the superblock names for the filesystem's own use, with
    /// its role, whatever its number: the journal, the quota files, the
    /// orphan file, lost+found and a snapshot. They are not user files
    /// even when they sit above `s_first_ino` (mke2fs gives the project
    /// quota and the orphan file the first free numbers, e.g. 12 and 13),
    /// and the kernel refuses to open the quota and orphan-file inodes as
    /// ordinary inodes (`__ext4_iget` in fs/ext4/inode.c). The reserved
    /// inodes below `s_first_ino` (bad blocks 1, resize 7, ...) are not
    /// listed: no scan counts them. `s_last_orphan` is not listed either:
    /// it heads a list of user files being deleted or truncated.
    pub fn internal_inodes(&self) -> Vec<(u32, &'static str)> {
        [
            (self.journal_inum, "journal"),
            (self.usr_quota_inum, "user quota"),
            (self.grp_quota_inum, "group quota"),
            (self.prj_quota_inum, "project quota"),
            (self.orphan_file_inum, "orphan file"),
            (self.lpf_ino, "lost+found"),
            (self.snapshot_inum, "snapshot"),
        ]
        .into_iter()
        .filter(|&(ino, _)| ino != 0)
        .collect()
    }

    /// True when `ino` is reserved (below `s_first_ino`, except the root
    /// directory) or named by the superblock for internal use.
    pub fn is_internal_inode(&self, ino: u32) -> bool {
        (ino < self.first_ino && ino != 2) || self.internal_inodes().iter().any(|&(i, _)| i == ino)
    }

    /// Incompat feature bits this crate does not understand.
    pub fn unknown_incompat(&self) -> u32 {
        self.feature_incompat & !incompat::UNDERSTOOD
    }

    /// Reasons this image must not be written, empty when it may be.
    pub fn write_blockers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.has_incompat(incompat::RECOVER) {
            v.push(
                "the journal needs recovery (needs_recovery): run e2fsck or mount it first".into(),
            );
        }
        if self.has_incompat(incompat::MMP) {
            v.push(
                "multiple-mount protection (mmp) is on and bufwrite does not take the MMP lock"
                    .into(),
            );
        }
        let unknown = self.unknown_incompat();
        if unknown != 0 {
            v.push(format!(
                "unknown incompatible features {}",
                incompat_names(unknown)
            ));
        }
        let unknown_ro = self.feature_ro_compat & !ro_compat::UNDERSTOOD;
        if unknown_ro != 0 {
            v.push(format!(
                "unknown read-only-compatible features {unknown_ro:#x}"
            ));
        }
        if self.has_ro_compat(ro_compat::READONLY) {
            v.push("the read-only feature is set".into());
        }
        if self.state & 2 != 0 {
            v.push("the filesystem is marked as having errors: run e2fsck first".into());
        }
        v
    }
}

/// Names of incompat bits, for error messages.
pub fn incompat_names(bits: u32) -> String {
    const NAMES: [(u32, &str); 16] = [
        (incompat::COMPRESSION, "compression"),
        (incompat::FILETYPE, "filetype"),
        (incompat::RECOVER, "needs_recovery"),
        (incompat::JOURNAL_DEV, "journal_dev"),
        (incompat::META_BG, "meta_bg"),
        (incompat::EXTENTS, "extent"),
        (incompat::BIT64, "64bit"),
        (incompat::MMP, "mmp"),
        (incompat::FLEX_BG, "flex_bg"),
        (incompat::EA_INODE, "ea_inode"),
        (incompat::DIRDATA, "dirdata"),
        (incompat::CSUM_SEED, "metadata_csum_seed"),
        (incompat::LARGEDIR, "large_dir"),
        (incompat::INLINE_DATA, "inline_data"),
        (incompat::ENCRYPT, "encrypt"),
        (incompat::CASEFOLD, "casefold"),
    ];
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known = NAMES.iter().fold(0, |a, (b, _)| a | b);
    if bits & !known != 0 {
        out.push(format!("{:#x}", bits & !known));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64bit superblock whose block count (2^60 blocks of 4 KiB) is
    /// consistent with its group geometry but whose byte size overflows
    /// u64: every `block * block_size` would overflow later.
    #[test]
    fn block_count_overflowing_byte_offsets_is_corrupt() {
        let mut b = vec![0u8; SB_SIZE];
        let put32 =
            |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        b[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        put32(&mut b, 0x0, 1 << 31); // inodes
        put32(&mut b, 0x18, 2); // 4 KiB blocks
        put32(&mut b, 0x20, 1 << 31); // blocks per group
        put32(&mut b, 0x28, 4); // inodes per group
        put32(&mut b, 0x4C, 1);
        put32(&mut b, 0x54, 11);
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        put32(&mut b, 0x60, incompat::BIT64 | incompat::EXTENTS);
        b[0xFE..0x100].copy_from_slice(&64u16.to_le_bytes());
        put32(&mut b, 0x150, 1 << 28); // blocks_count = 2^60
        let e = Superblock::parse(&b).unwrap_err();
        assert_eq!(
            e.as_corrupt().map(|c| c.kind()),
            Some(&CorruptKind::ByteOffsetOverflow {
                blocks: 1 << 60,
                block_size: 4096
            }),
            "{e}"
        );
        assert!(e.to_string().contains("overflows"), "{e}");
        put32(&mut b, 0x150, 0);
        put32(&mut b, 0x4, 1 << 31);
        put32(&mut b, 0x20, 1 << 29);
        put32(&mut b, 0x0, 16);
        Superblock::parse(&b).unwrap();
    }

    /// A 1 KiB-block superblock with one group of 8192 blocks.
    fn one_k(first_data_block: u32) -> Vec<u8> {
        let mut b = vec![0u8; SB_SIZE];
        let put32 =
            |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        b[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        put32(&mut b, 0x0, 16);
        put32(&mut b, 0x4, 8192);
        put32(&mut b, 0x14, first_data_block);
        put32(&mut b, 0x20, 8192);
        put32(&mut b, 0x28, 16);
        put32(&mut b, 0x4C, 1);
        put32(&mut b, 0x54, 11);
        b[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        b
    }

    /// First data block 0 with 1 KiB blocks is what a bigalloc image has
    /// (and is valid there), and corrupt without clusters.
    #[test]
    fn first_data_block_zero_needs_clusters_with_1k_blocks() {
        assert_eq!(Superblock::parse(&one_k(1)).unwrap().cluster_size, 1024);
        let e = Superblock::parse(&one_k(0)).unwrap_err();
        assert_eq!(
            e.as_corrupt().map(|c| c.kind()),
            Some(&CorruptKind::GroupZeroOnBootBlock),
            "{e}"
        );
        assert!(e.to_string().contains("first data block 0"), "{e}");
        let mut b = one_k(0);
        b[0x64..0x68].copy_from_slice(&ro_compat::BIGALLOC.to_le_bytes());
        b[0x1C..0x20].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(Superblock::parse(&b).unwrap().cluster_size, 65536);
        b[0x1C..0x20].copy_from_slice(&21u32.to_le_bytes());
        let e = Superblock::parse(&b).unwrap_err();
        assert_eq!(
            e.as_corrupt().map(|c| c.kind()),
            Some(&CorruptKind::OutOfRange {
                field: "s_log_cluster_size",
                value: 21,
                min: 0,
                end: 21
            }),
            "{e}"
        );
        assert!(e.to_string().contains("s_log_cluster_size 21"), "{e}");
    }
}
