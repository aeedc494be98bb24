//! Block group descriptors: where each group's inode table is, and whether
//! its inode table is initialised.

use crate::checksum::chksum;
use crate::crc16::crc16;
use crate::error::{CorruptKind, Ext4Error, Location, OverlapWith, Result, Structure};
use crate::superblock::{incompat, ro_compat, Superblock, SUPERBLOCK_OFFSET};
use crate::util::{hilo, le16, le32, read_meta};
use bufwrite_engine::BlockDevice;

/// `bg_flags`: the group's inode table is not initialised (reads as zeroes).
const BG_INODE_UNINIT: u16 = 0x1;

/// The descriptor fields bufwrite uses.
#[derive(Debug, Clone, Copy)]
pub struct GroupDesc {
    /// The group's block bitmap block (0 when unset).
    pub block_bitmap: u64,
    /// The group's inode bitmap block (0 when unset).
    pub inode_bitmap: u64,
    /// First block of the group's inode table.
    pub inode_table: u64,
    /// `bg_flags`.
    pub flags: u16,
    /// Inodes at the end of the table never used (valid with group checksums).
    pub itable_unused: u32,
}

impl GroupDesc {
    /// True when the inode table was never initialised.
    pub fn inode_uninit(&self) -> bool {
        self.flags & BG_INODE_UNINIT != 0
    }
}

/// Reads block `i` of the group descriptor table (`per_block`
/// descriptors a block): its block number and bytes, refusing a table
/// block past the filesystem's end. The reader and the allocator share it.
pub(crate) fn read_table_block(
    dev: &dyn BlockDevice,
    sb: &Superblock,
    i: u64,
    per_block: u64,
) -> Result<(u64, Vec<u8>)> {
    let bs = u64::from(sb.block_size);
    let blk = desc_block(sb, i, per_block);
    if blk >= sb.blocks_count {
        return Err(Ext4Error::corrupt(
            Structure::GroupDescriptorTable,
            Location::Block(blk),
            CorruptKind::OutsideFilesystem {
                blocks: (blk, blk + 1),
                blocks_count: sb.blocks_count,
            },
        ));
    }
    let buf = read_meta(dev, Structure::GroupDescriptorTable, blk * bs, bs as usize)?;
    Ok((blk, buf))
}

/// Reads every group descriptor, verifying metadata_csum checksums.
pub(crate) fn read_all(dev: &dyn BlockDevice, sb: &Superblock) -> Result<Vec<GroupDesc>> {
    let bs = u64::from(sb.block_size);
    let ds = u64::from(sb.desc_size);
    let per_block = bs / ds;
    let groups = sb.group_count();
    let table_blocks = groups.div_ceil(per_block);
    let mut out = Vec::with_capacity(usize::try_from(groups).unwrap_or(0).min(1 << 20));
    for i in 0..table_blocks {
        let (blk, buf) = read_table_block(dev, sb, i, per_block)?;
        for j in 0..per_block {
            let g = i * per_block + j;
            if g >= groups {
                break;
            }
            let at = (j * ds) as usize;
            let d = &buf[at..at + ds as usize];
            let loc = Location::BlockByte {
                block: blk,
                byte: at as u64,
            };
            check_csum(sb, g, d, loc)?;
            out.push(parse(sb, g, d, loc)?);
        }
    }
    Ok(out)
}

/// The blocks holding the superblock, the descriptor table (as
/// [`read_all`] reads them) and the reserved descriptor blocks, as `(first block, block count)` runs.
pub(crate) fn table_runs(sb: &Superblock) -> Vec<(u64, u64)> {
    let per_block = u64::from(sb.block_size) / u64::from(sb.desc_size);
    let table_blocks = sb.group_count().div_ceil(per_block);
    // Block 0 holds the boot sector and, with 1 KiB blocks, nothing else;
    // the superblock is in block 0 (>= 2 KiB blocks) or block 1.
    let sb_block = superblock_block(sb);
    let mut runs = vec![(0, sb_block + 1)];
    for i in 0..table_blocks {
        runs.push((desc_block(sb, i, per_block), 1));
    }
    if !sb.has_incompat(incompat::META_BG) {
        // The resize inode's reserved descriptor blocks follow the table.
        let after = sb_block + 1 + table_blocks;
        runs.push((after, u64::from(sb.reserved_gdt_blocks)));
    }
    runs
}

/// The block holding the primary superblock (byte 1024): block 1 with
/// 1 KiB blocks, block 0 otherwise.
///
/// This is not `s_first_data_block`: the two agree on ordinary images, but
/// a 1 KiB-block bigalloc image has first data block 0 (group 0 starts at
/// block 0 because its first cluster holds the boot block and the
/// superblock) while its superblock is still in block 1.
pub(crate) fn superblock_block(sb: &Superblock) -> u64 {
    SUPERBLOCK_OFFSET / u64::from(sb.block_size)
}

/// Block number of descriptor-table block `i`: contiguous after the
/// superblock, except under meta_bg where each meta group holds its own.
///
/// The table follows the superblock's own block, as the kernel's
/// `descriptor_loc` (fs/ext4/super.c) counts from the superblock's logical
/// block; counting from `s_first_data_block` instead puts it one block too
/// early on 1 KiB-block bigalloc images (`mkfs.ext4 -b 1024 -O bigalloc`:
/// dumpe2fs shows "Group descriptors at 2-2", first data block 0).
pub(crate) fn desc_block(sb: &Superblock, i: u64, per_block: u64) -> u64 {
    if !sb.has_incompat(incompat::META_BG) || i < u64::from(sb.first_meta_bg) {
        return superblock_block(sb) + 1 + i;
    }
    let g = i * per_block;
    // Group 0's superblock sits in its own block even where group 0
    // starts at block 0 (1 KiB blocks with bigalloc); other groups' backups
    // start their group.
    let group_start = if g == 0 {
        superblock_block(sb).max(u64::from(sb.first_data_block))
    } else {
        u64::from(sb.first_data_block) + g * u64::from(sb.blocks_per_group)
    };
    group_start + u64::from(has_super(sb, g))
}

/// Whether group `g` holds a superblock backup.
pub(crate) fn has_super(sb: &Superblock, g: u64) -> bool {
    if g <= 1 || !sb.has_ro_compat(ro_compat::SPARSE_SUPER) {
        return true;
    }
    [3u64, 5, 7].iter().any(|&p| {
        let mut x = g;
        while x.is_multiple_of(p) {
            x /= p;
        }
        x == 1
    })
}

/// The checksum descriptor `d` (its whole `s_desc_size` bytes) of group
/// `g` must carry in `bg_checksum`: crc32c with metadata_csum, crc16 with
/// gdt_csum / uninit_bg (the field skipped, not zeroed, as
/// `ext4_group_desc_csum` does), `None` when the image has no group
/// checksums.
pub(crate) fn desc_csum(sb: &Superblock, g: u64, d: &[u8]) -> Option<u16> {
    // Group numbers are 32-bit on disk (`ext4_group_t`).
    let group = (g as u32).to_le_bytes();
    if sb.has_metadata_csum() {
        let mut copy = d.to_vec();
        copy[0x1E] = 0;
        copy[0x1F] = 0;
        let c = chksum(chksum(sb.csum_seed, &group), &copy);
        return Some((c & 0xFFFF) as u16);
    }
    if sb.has_ro_compat(ro_compat::GDT_CSUM) {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &group);
        c = crc16(c, &d[..0x1E]);
        if sb.has_incompat(incompat::BIT64) && d.len() > 0x20 {
            c = crc16(c, &d[0x20..]);
        }
        return Some(c);
    }
    None
}

fn check_csum(sb: &Superblock, g: u64, d: &[u8], loc: Location) -> Result<()> {
    if !sb.has_metadata_csum() {
        return Ok(());
    }
    let mut copy = d.to_vec();
    copy[0x1E] = 0;
    copy[0x1F] = 0;
    let group = u32::try_from(g).unwrap_or(u32::MAX);
    let got = chksum(chksum(sb.csum_seed, &group.to_le_bytes()), &copy) & 0xFFFF;
    let want = u32::from(le16(d, 0x1E));
    if got != want {
        return Err(Ext4Error::corrupt(
            Structure::GroupDescriptor { group: g },
            loc,
            CorruptKind::ChecksumMismatch {
                on_disk: want,
                computed: got,
                bits: 16,
            },
        ));
    }
    Ok(())
}

fn parse(sb: &Superblock, g: u64, d: &[u8], loc: Location) -> Result<GroupDesc> {
    let wide = d.len() >= 64;
    let hi32 = |off| if wide { le32(d, off) } else { 0 };
    let hi16 = |off| if wide { u32::from(le16(d, off)) } else { 0 };
    let inode_table = hilo(hi32(0x28), le32(d, 0x8));
    let itable_unused = (hi16(0x32) << 16) | u32::from(le16(d, 0x1C));
    let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
        .div_ceil(u64::from(sb.block_size));
    let table = (inode_table, inode_table.saturating_add(table_blocks));
    let bad = |kind| Ext4Error::corrupt(Structure::GroupDescriptor { group: g }, loc, kind);
    if inode_table == 0 {
        return Err(bad(CorruptKind::Overlap {
            blocks: table,
            with: OverlapWith::BootBlock,
            with_blocks: (0, 1),
        }));
    }
    if inode_table
        .checked_add(table_blocks)
        .is_none_or(|end| end > sb.blocks_count)
    {
        return Err(bad(CorruptKind::OutsideFilesystem {
            blocks: table,
            blocks_count: sb.blocks_count,
        }));
    }
    if itable_unused > sb.inodes_per_group {
        return Err(bad(CorruptKind::CountOverMax {
            field: "bg_itable_unused",
            count: itable_unused.into(),
            max: sb.inodes_per_group.into(),
        }));
    }
    Ok(GroupDesc {
        block_bitmap: hilo(hi32(0x20), le32(d, 0x0)),
        inode_bitmap: hilo(hi32(0x24), le32(d, 0x4)),
        inode_table,
        flags: le16(d, 0x12),
        itable_unused,
    })
}
