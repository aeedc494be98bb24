//! Building and editing on-disk inode records.
//!
//! [`RawInode`] holds the full `s_inode_size` bytes of one inode so that the
//! fields bufwrite does not know (extended attributes in the extra area,
//! project ids, version counters) survive an edit untouched. Fields that
//! ext4 splits into low and high halves are only written through setters,
//! so the halves cannot disagree.

// The callers (inode allocation and the namei integration) are not wired in
// yet; until they are, only the tests use this module.

use crate::checksum::{chksum, inode_seed};
use crate::error::{Ext4Error, Result};
use crate::inode::flags;
use crate::util::{le16, le32};

/// The base inode (`EXT2_GOOD_OLD_INODE_SIZE`); the extra area follows it.
const BASE: usize = 128;
/// `i_extra_isize` mke2fs and the kernel use when the superblock asks for
/// nothing (`sizeof(struct ext4_inode) - 128`).
const DEFAULT_EXTRA: u16 = 32;
/// `EXT4_HUGE_FILE_FL`: `i_blocks` counts filesystem blocks, not sectors.
const HUGE_FILE_FL: u32 = 0x40000;
/// The extent header magic.
const EXT_MAGIC: u16 = 0xF30A;

/// Field offsets (the kernel's `struct ext4_inode`).
mod off {
    pub(super) const MODE: usize = 0x00;
    pub(super) const SIZE_LO: usize = 0x04;
    pub(super) const ATIME: usize = 0x08;
    pub(super) const CTIME: usize = 0x0C;
    pub(super) const MTIME: usize = 0x10;
    pub(super) const DTIME: usize = 0x14;
    pub(super) const LINKS: usize = 0x1A;
    pub(super) const BLOCKS_LO: usize = 0x1C;
    pub(super) const FLAGS: usize = 0x20;
    pub(super) const BLOCK: usize = 0x28;
    pub(super) const GENERATION: usize = 0x64;
    pub(super) const SIZE_HIGH: usize = 0x6C;
    pub(super) const BLOCKS_HIGH: usize = 0x74;
    pub(super) const CSUM_LO: usize = 0x7C;
    pub(super) const EXTRA_ISIZE: usize = 0x80;
    pub(super) const CSUM_HI: usize = 0x82;
    pub(super) const CRTIME: usize = 0x90;
}

/// An on-disk inode record (`s_inode_size` bytes) being edited; setters keep
/// hi/lo halves right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawInode {
    /// The record, exactly as it goes into the inode table.
    pub bytes: Vec<u8>,
}

impl RawInode {
    /// Wraps a record read from the inode table (the full on-disk size).
    pub(crate) fn from_bytes(raw: Vec<u8>) -> RawInode {
        RawInode { bytes: raw }
    }

    /// A fresh inode: zeroed, i_mode, links (1 file / 2 dir), i_extra_isize =
    /// s_want_extra_isize (or 32 if 0 and inode size > 128), EXTENTS_FL with
    /// an empty extent root (depth 0, eh_max 4), a generation, times = now,
    /// i_dtime 0.
    ///
    /// The extra size is clamped to what the record has room for, so a
    /// superblock asking for more than the inode size cannot make the record
    /// claim bytes it does not have. The checksum is left zero: call
    /// [`RawInode::update_checksum`] once the last field is set.
    pub(crate) fn new_inode(
        inode_size: usize,
        mode: u16,
        links: u16,
        generation: u32,
        want_extra_isize: u16,
        now: u32,
    ) -> RawInode {
        let size = inode_size.max(BASE);
        let mut r = RawInode {
            bytes: vec![0; size],
        };
        r.put16(off::MODE, mode);
        r.put16(off::LINKS, links);
        r.put32(off::GENERATION, generation);
        r.put32(off::FLAGS, flags::EXTENTS);
        let mut root = [0u8; 60];
        root[0..2].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        root[4..6].copy_from_slice(&4u16.to_le_bytes());
        r.set_block_area(&root);
        if size > BASE {
            let want = if want_extra_isize == 0 {
                DEFAULT_EXTRA
            } else {
                want_extra_isize
            };
            // Keep it a multiple of 4 (e2fsck insists) and inside the record.
            let room = ((size - BASE) & !3) as u16;
            r.put16(off::EXTRA_ISIZE, want.min(room) & !3);
        }
        r.put32(off::ATIME, now);
        r.set_mtime_ctime(now);
        if r.extra_covers(off::CRTIME + 4) {
            r.put32(off::CRTIME, now);
        }
        r
    }

    /// Sets i_size (`i_size_lo` 0x04, `i_size_high` 0x6C).
    pub(crate) fn set_size(&mut self, size: u64) {
        self.put32(off::SIZE_LO, size as u32);
        self.put32(off::SIZE_HIGH, (size >> 32) as u32);
    }

    /// Sets i_blocks in 512-byte sectors (`i_blocks_lo` 0x1C and
    /// `l_i_blocks_high` 0x74). Without the huge_file feature only 32 bits
    /// exist; with it 48. An inode already counting in filesystem blocks
    /// (`EXT4_HUGE_FILE_FL`) is refused rather than guessed at.
    pub(crate) fn set_blocks(&mut self, sectors_512: u64, huge_file: bool) -> Result<()> {
        if self.flags() & HUGE_FILE_FL != 0 {
            return Err(Ext4Error::Unsupported(
                "an inode with EXT4_HUGE_FILE_FL (i_blocks in filesystem blocks)".into(),
            ));
        }
        let max = if huge_file {
            (1u64 << 48) - 1
        } else {
            u64::from(u32::MAX)
        };
        if sectors_512 > max {
            return Err(Ext4Error::Unsupported(format!(
                "i_blocks of {sectors_512} sectors does not fit in {} bits{}",
                if huge_file { 48 } else { 32 },
                if huge_file { "" } else { " without huge_file" }
            )));
        }
        self.put32(off::BLOCKS_LO, sectors_512 as u32);
        self.put16(off::BLOCKS_HIGH, (sectors_512 >> 32) as u16);
        Ok(())
    }

    /// Sets the 60-byte `i_block` area (0x28): extent root or block map.
    pub(crate) fn set_block_area(&mut self, i_block: &[u8; 60]) {
        self.bytes[off::BLOCK..off::BLOCK + 60].copy_from_slice(i_block);
    }

    /// Sets `i_links_count`.
    pub(crate) fn set_links(&mut self, n: u16) {
        self.put16(off::LINKS, n);
    }

    /// `i_dtime`: the deletion time, or on an orphan the next inode of the
    /// orphan list.
    pub(crate) fn dtime(&self) -> u32 {
        u32::from_le_bytes([
            self.bytes[off::DTIME],
            self.bytes[off::DTIME + 1],
            self.bytes[off::DTIME + 2],
            self.bytes[off::DTIME + 3],
        ])
    }

    /// Sets `i_dtime` (0 on a live inode: e2fsck treats a non-zero dtime on
    /// a linked inode as a deleted one).
    pub(crate) fn set_dtime(&mut self, t: u32) {
        self.put32(off::DTIME, t);
    }

    /// Sets `i_mtime` and `i_ctime` (what a write or a directory change
    /// updates), seconds only.
    pub(crate) fn set_mtime_ctime(&mut self, t: u32) {
        self.put32(off::MTIME, t);
        self.put32(off::CTIME, t);
    }

    #[cfg(test)]
    /// Sets `i_flags`.
    pub(crate) fn set_flags(&mut self, f: u32) {
        self.put32(off::FLAGS, f);
    }

    /// The current `i_flags`.
    pub(crate) fn flags(&self) -> u32 {
        le32(&self.bytes, off::FLAGS)
    }

    /// Recomputes i_checksum_lo (0x7C) / i_checksum_hi (0x82 when
    /// i_extra_isize covers it), as §7.4 says: crc32c seeded with the fs
    /// seed, the inode number and the generation, over the whole record with
    /// both fields zero. Without metadata_csum (`fs_seed` None) the fields
    /// are left alone: they are then `l_i_reserved` / unused.
    pub(crate) fn update_checksum(&mut self, ino: u32, fs_seed: Option<u32>) {
        let Some(fs_seed) = fs_seed else { return };
        let has_hi = self.extra_covers(off::CSUM_HI + 2);
        self.put16(off::CSUM_LO, 0);
        if has_hi {
            self.put16(off::CSUM_HI, 0);
        }
        let generation = le32(&self.bytes, off::GENERATION);
        let c = chksum(inode_seed(fs_seed, ino, generation), &self.bytes);
        self.put16(off::CSUM_LO, c as u16);
        if has_hi {
            self.put16(off::CSUM_HI, (c >> 16) as u16);
        }
    }

    /// True when the extra area (per `i_extra_isize`) reaches byte `end`.
    fn extra_covers(&self, end: usize) -> bool {
        if self.bytes.len() <= BASE {
            return false;
        }
        let extra = BASE + usize::from(le16(&self.bytes, off::EXTRA_ISIZE));
        end <= extra && extra <= self.bytes.len()
    }

    fn put16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::Inode;

    #[test]
    fn fresh_inode_parses_with_its_checksum() {
        for (size, seed) in [
            (256usize, Some(0x1234_5678u32)),
            (128, Some(7)),
            (256, None),
        ] {
            let mut r = RawInode::new_inode(size, 0o100644, 1, 0xABCD, 32, 1_700_000_000);
            r.set_size((5u64 << 32) + 17);
            r.set_blocks(24, false).unwrap();
            r.update_checksum(12, seed);
            let i = Inode::parse(12, &r.bytes, seed, 0).unwrap();
            assert_eq!(i.mode, 0o100644);
            assert_eq!(i.links, 1);
            assert_eq!(i.size, (5u64 << 32) + 17);
            assert_eq!(i.generation, 0xABCD);
            assert!(i.has_flag(flags::EXTENTS));
            assert_eq!(&i.block[0..8], &[0x0A, 0xF3, 0, 0, 4, 0, 0, 0]);
            assert_eq!(le32(&r.bytes, off::BLOCKS_LO), 24);
            if size > 128 {
                assert_eq!(le16(&r.bytes, off::EXTRA_ISIZE), 32);
                assert_eq!(le32(&r.bytes, off::CRTIME), 1_700_000_000);
            }
            // A field change without a new checksum is caught.
            if seed.is_some() {
                r.set_links(2);
                assert!(Inode::parse(12, &r.bytes, seed, 0).is_err());
                r.update_checksum(12, seed);
                assert_eq!(Inode::parse(12, &r.bytes, seed, 0).unwrap().links, 2);
            }
        }
    }

    #[test]
    fn extra_isize_defaults_and_clamps() {
        let r = RawInode::new_inode(256, 0o40755, 2, 1, 0, 0);
        assert_eq!(le16(&r.bytes, off::EXTRA_ISIZE), 32);
        let r = RawInode::new_inode(160, 0o40755, 2, 1, 64, 0);
        assert_eq!(le16(&r.bytes, off::EXTRA_ISIZE), 32);
        let r = RawInode::new_inode(128, 0o40755, 2, 1, 32, 0);
        assert_eq!(r.bytes.len(), 128);
    }

    #[test]
    fn blocks_limits() {
        let mut r = RawInode::new_inode(256, 0o100644, 1, 1, 32, 0);
        assert!(r.set_blocks(1 << 32, false).is_err());
        r.set_blocks((1 << 32) + 8, true).unwrap();
        assert_eq!(le32(&r.bytes, off::BLOCKS_LO), 8);
        assert_eq!(le16(&r.bytes, off::BLOCKS_HIGH), 1);
        assert!(r.set_blocks(1 << 48, true).is_err());
        r.set_flags(r.flags() | HUGE_FILE_FL);
        assert!(r.set_blocks(8, true).is_err());
    }
}
