//! The jbd2 on-disk format: the journal superblock, block headers,
//! descriptor blocks and their tags, revoke blocks, commit blocks, and
//! their checksums. Everything in the journal is big-endian.
//!
//! Written from the format as Documentation/filesystems/ext4/journal.rst
//! and include/linux/jbd2.h describe it; decoding never panics on any
//! bytes (short or garbage blocks decode to errors or to what a kernel
//! reading the same bytes would see).

use crate::checksum::chksum;
use crate::error::{Ext4Error, Result};

/// The magic number opening every journal metadata block.
pub const MAGIC: u32 = 0xC03B_3998;
/// Bytes of the common block header (magic, type, sequence).
pub const HEADER_LEN: usize = 12;
/// Bytes of the checksum tail of descriptor and revoke blocks (csum v2/v3).
pub const TAIL_LEN: usize = 4;
/// Bytes of the journal superblock proper (checksummed whole).
pub const SUPERBLOCK_LEN: usize = 1024;

/// `h_blocktype` values.
pub mod block_type {
    /// A descriptor block: tags naming the data blocks that follow.
    pub const DESCRIPTOR: u32 = 1;
    /// A commit block: the transaction is complete.
    pub const COMMIT: u32 = 2;
    /// A version 1 journal superblock.
    pub const SUPERBLOCK_V1: u32 = 3;
    /// A version 2 journal superblock.
    pub const SUPERBLOCK_V2: u32 = 4;
    /// A revoke block: home blocks whose earlier logged copies must not be
    /// replayed.
    pub const REVOKE: u32 = 5;
    /// A fast-commit block (ext4 fast commits).
    pub const FAST_COMMIT: u32 = 6;
}

/// Journal feature bits.
pub mod feature {
    /// compat: v1 commit checksums (crc32 over descriptors and data).
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    /// incompat: revoke blocks.
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    /// incompat: 64-bit block numbers in tags and revoke records.
    pub const INCOMPAT_64BIT: u32 = 0x2;
    /// incompat: the commit block is written without waiting for the log
    /// blocks (needs the v1 checksum, or v2/v3, to detect torn commits).
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    /// incompat: crc32c checksums, 16 bits in tags (v2).
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    /// incompat: crc32c checksums, 32 bits in tags (v3).
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    /// incompat: a fast-commit area at the end of the journal.
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    /// Every incompat bit this crate knows.
    pub const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
}

/// Descriptor tag flags.
pub mod tag_flag {
    /// The data block began with the journal magic, zeroed in the log.
    pub const ESCAPE: u32 = 0x1;
    /// The tag is not followed by a 16-byte UUID (same as the previous).
    pub const SAME_UUID: u32 = 0x2;
    /// The block was deleted by this transaction (unused by jbd2).
    pub const DELETED: u32 = 0x4;
    /// The last tag of this descriptor block.
    pub const LAST_TAG: u32 = 0x8;
}

/// Commit-block checksum types (`h_chksum_type`).
pub mod checksum_type {
    /// crc32 (the v1 commit checksum).
    pub const CRC32: u8 = 1;
    /// md5 (never written by jbd2).
    pub const MD5: u8 = 2;
    /// sha1 (never written by jbd2).
    pub const SHA1: u8 = 3;
    /// crc32c (the superblock's `s_checksum_type` with csum v2/v3).
    pub const CRC32C: u8 = 4;
}

/// Bytes of a v1 crc32 commit checksum.
pub const CRC32_CHKSUM_SIZE: u8 = 4;
/// Fast-commit blocks when the superblock says 0 (JBD2_DEFAULT_FAST_COMMIT_BLOCKS).
const DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;

/// Reads a big-endian u32 at `off` (caller checked the length).
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be64(b: &[u8], off: usize) -> u64 {
    (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off + 4))
}

/// Writes a big-endian u32 at `off`.
pub(crate) fn put_be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_be16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

fn put_be64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// The big-endian (MSB-first) crc32 of the v1 commit checksum: the
/// kernel's `crc32_be` (polynomial 0x04C11DB7, no inversions).
pub fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    const POLY: u32 = 0x04C1_1DB7;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The common header of every journal metadata block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `h_blocktype`.
    pub block_type: u32,
    /// `h_sequence`: the transaction the block belongs to.
    pub sequence: u32,
}

impl Header {
    /// The header of `block`, or `None` when it does not start with the
    /// journal magic (or is too short to hold a header).
    pub fn parse(block: &[u8]) -> Option<Header> {
        if block.len() < HEADER_LEN || be32(block, 0) != MAGIC {
            return None;
        }
        Some(Header {
            block_type: be32(block, 4),
            sequence: be32(block, 8),
        })
    }

    /// Writes the header (with the magic) at the start of `block`.
    pub fn encode(&self, block: &mut [u8]) {
        put_be32(block, 0, MAGIC);
        put_be32(block, 4, self.block_type);
        put_be32(block, 8, self.sequence);
    }
}

/// Which checksum scheme a journal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumVersion {
    /// No checksums.
    None,
    /// v1: crc32 of the descriptors and data in the commit block.
    V1,
    /// v2: crc32c, 16 bits per tag.
    V2,
    /// v3: crc32c, 32 bits per tag.
    V3,
}

/// The journal superblock (v1 or v2), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSuperblock {
    /// 1 or 2 (`h_blocktype` 3 or 4).
    pub version: u8,
    /// `s_blocksize`: the journal's block size.
    pub block_size: u32,
    /// `s_maxlen`: blocks in the journal.
    pub maxlen: u32,
    /// `s_first`: the first log block.
    pub first: u32,
    /// `s_sequence`: the first transaction expected in the log.
    pub sequence: u32,
    /// `s_start`: the log block of the first transaction; 0 when the log is
    /// empty (no recovery needed).
    pub start: u32,
    /// `s_errno`: a recorded journal error (negative errno), 0 when none.
    pub errno: i32,
    /// `s_feature_compat` (0 on v1).
    pub feature_compat: u32,
    /// `s_feature_incompat` (0 on v1).
    pub feature_incompat: u32,
    /// `s_feature_ro_compat` (0 on v1).
    pub feature_ro_compat: u32,
    /// `s_uuid`: the journal's UUID (the checksum seed's input).
    pub uuid: [u8; 16],
    /// `s_nr_users`: filesystems sharing the journal.
    pub nr_users: u32,
    /// `s_checksum_type` (4 = crc32c with csum v2/v3).
    pub checksum_type: u8,
    /// `s_num_fc_blks`: fast-commit blocks (0 means the default 256).
    pub num_fc_blocks: u32,
    /// `s_checksum` as stored.
    pub checksum: u32,
}

/// How a journal superblock failed to decode.
fn bad_sb(why: String) -> Ext4Error {
    Ext4Error::JournalCorrupt(format!("journal superblock: {why}"))
}

/// Names of journal incompat bits, unknown ones in hex.
pub fn incompat_names(bits: u32) -> String {
    const NAMES: [(u32, &str); 6] = [
        (feature::INCOMPAT_REVOKE, "journal_incompat_revoke"),
        (feature::INCOMPAT_64BIT, "journal_64bit"),
        (feature::INCOMPAT_ASYNC_COMMIT, "journal_async_commit"),
        (feature::INCOMPAT_CSUM_V2, "journal_checksum_v2"),
        (feature::INCOMPAT_CSUM_V3, "journal_checksum_v3"),
        (feature::INCOMPAT_FAST_COMMIT, "journal_fast_commit"),
    ];
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let unknown = bits & !feature::INCOMPAT_KNOWN;
    if unknown != 0 {
        out.push(format!("{unknown:#x}"));
    }
    out.join(", ")
}

impl JournalSuperblock {
    /// Decodes and checks the superblock in `b` (its first 1024 bytes):
    /// magic and type, the features (unknown incompat bits refused, named),
    /// v2 and v3 together or with the v1 checksum refused, the crc32c
    /// checksum verified with v2/v3. Geometry against the journal inode is
    /// checked by [`JournalSuperblock::check_geometry`].
    pub fn parse(b: &[u8]) -> Result<JournalSuperblock> {
        if b.len() < SUPERBLOCK_LEN {
            return Err(bad_sb(format!("{} bytes, not {SUPERBLOCK_LEN}", b.len())));
        }
        let Some(h) = Header::parse(b) else {
            return Err(bad_sb(format!(
                "bad magic {:#010x} (want {MAGIC:#010x})",
                be32(b, 0)
            )));
        };
        let version = match h.block_type {
            block_type::SUPERBLOCK_V1 => 1,
            block_type::SUPERBLOCK_V2 => 2,
            t => {
                return Err(bad_sb(format!(
                    "block type {t} is not a superblock (3 or 4)"
                )))
            }
        };
        // v1 superblocks have no feature fields: the kernel reads every
        // feature as absent for them.
        let v2 = version == 2;
        let pick = |off| if v2 { be32(b, off) } else { 0 };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x30..0x40]);
        let sb = JournalSuperblock {
            version,
            block_size: be32(b, 0xC),
            maxlen: be32(b, 0x10),
            first: be32(b, 0x14),
            sequence: be32(b, 0x18),
            start: be32(b, 0x1C),
            errno: be32(b, 0x20) as i32,
            feature_compat: pick(0x24),
            feature_incompat: pick(0x28),
            feature_ro_compat: pick(0x2C),
            uuid,
            nr_users: pick(0x40),
            checksum_type: if v2 { b[0x50] } else { 0 },
            num_fc_blocks: pick(0x54),
            checksum: pick(0xFC),
        };
        let unknown = sb.feature_incompat & !feature::INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Ext4Error::Unsupported(format!(
                "the journal has incompatible features bufwrite does not understand: {}",
                incompat_names(unknown)
            )));
        }
        if sb.has_incompat(feature::INCOMPAT_CSUM_V2) && sb.has_incompat(feature::INCOMPAT_CSUM_V3)
        {
            return Err(bad_sb("checksum v2 and v3 are both set".into()));
        }
        if sb.csum_v2_or_v3() {
            if sb.feature_compat & feature::COMPAT_CHECKSUM != 0 {
                return Err(bad_sb(
                    "checksum v1 and v2/v3 are both set (the kernel refuses this)".into(),
                ));
            }
            if sb.checksum_type != checksum_type::CRC32C {
                return Err(bad_sb(format!(
                    "checksum type {} (want {} = crc32c)",
                    sb.checksum_type,
                    checksum_type::CRC32C
                )));
            }
            let want = Self::compute_checksum(b);
            if want != sb.checksum {
                return Err(bad_sb(format!(
                    "checksum {:#010x} does not match the computed {want:#010x}",
                    sb.checksum
                )));
            }
        }
        Ok(sb)
    }

    /// The crc32c of the superblock's 1024 bytes with `s_checksum` zeroed.
    fn compute_checksum(b: &[u8]) -> u32 {
        let mut copy = b[..SUPERBLOCK_LEN].to_vec();
        put_be32(&mut copy, 0xFC, 0);
        chksum(!0, &copy)
    }

    /// Checks the log geometry against the filesystem block size and the
    /// journal inode's length in blocks (as the kernel's superblock load
    /// does): same block size, `s_maxlen` no longer than the inode,
    /// `s_first` inside it, a non-zero `s_start` inside the log.
    pub fn check_geometry(&self, fs_block_size: u32, inode_blocks: u64) -> Result<()> {
        if self.block_size != fs_block_size {
            return Err(bad_sb(format!(
                "block size {} differs from the filesystem's {fs_block_size}",
                self.block_size
            )));
        }
        if u64::from(self.maxlen) > inode_blocks {
            return Err(bad_sb(format!(
                "s_maxlen {} is longer than the journal inode ({inode_blocks} blocks)",
                self.maxlen
            )));
        }
        if self.first == 0 || self.first >= self.maxlen {
            return Err(bad_sb(format!(
                "s_first {} is outside the journal (1..{})",
                self.first, self.maxlen
            )));
        }
        if self.last() <= self.first {
            return Err(bad_sb(format!(
                "the log ends at {} before it starts at {}",
                self.last(),
                self.first
            )));
        }
        if self.start != 0 && (self.start < self.first || self.start >= self.last()) {
            return Err(bad_sb(format!(
                "s_start {} is outside the log ({}..{})",
                self.start,
                self.first,
                self.last()
            )));
        }
        Ok(())
    }

    /// True when an incompat bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// True with csum v2 or v3.
    pub fn csum_v2_or_v3(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3)
    }

    /// The checksum scheme.
    pub fn checksum_version(&self) -> ChecksumVersion {
        if self.has_incompat(feature::INCOMPAT_CSUM_V3) {
            ChecksumVersion::V3
        } else if self.has_incompat(feature::INCOMPAT_CSUM_V2) {
            ChecksumVersion::V2
        } else if self.feature_compat & feature::COMPAT_CHECKSUM != 0 {
            ChecksumVersion::V1
        } else {
            ChecksumVersion::None
        }
    }

    /// One past the last log block: `s_maxlen`, less the fast-commit area
    /// when there is one.
    pub fn last(&self) -> u32 {
        if self.has_incompat(feature::INCOMPAT_FAST_COMMIT) {
            let fc = if self.num_fc_blocks == 0 {
                DEFAULT_FAST_COMMIT_BLOCKS
            } else {
                self.num_fc_blocks
            };
            self.maxlen.saturating_sub(fc)
        } else {
            self.maxlen
        }
    }

    /// The seed of every journal checksum but the superblock's.
    pub fn csum_seed(&self) -> u32 {
        chksum(!0, &self.uuid)
    }

    /// The tag layout of this journal's descriptor blocks.
    pub fn tags(&self) -> TagLayout {
        TagLayout {
            version: self.checksum_version(),
            bit64: self.has_incompat(feature::INCOMPAT_64BIT),
        }
    }

    /// Writes the fields bufwrite changes (`s_sequence`, `s_start`,
    /// `s_errno`, and on v2 `s_feature_incompat`) into the raw superblock
    /// `b` and refreshes its checksum when the journal has one.
    pub fn store(&self, b: &mut [u8]) {
        put_be32(b, 0x18, self.sequence);
        put_be32(b, 0x1C, self.start);
        put_be32(b, 0x20, self.errno as u32);
        if self.version == 2 {
            put_be32(b, 0x28, self.feature_incompat);
        }
        if self.version == 2 && self.csum_v2_or_v3() {
            let c = Self::compute_checksum(b);
            put_be32(b, 0xFC, c);
        }
    }
}

/// The size and checksum form of descriptor tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagLayout {
    /// The journal's checksum scheme.
    pub version: ChecksumVersion,
    /// 64-bit block numbers.
    pub bit64: bool,
}

impl TagLayout {
    /// Bytes of one tag (without a following UUID), as the kernel's
    /// `journal_tag_bytes`: tag3 is always 16; the classic tag is 12 with
    /// 64bit, 8 without, plus 2 with csum v2.
    pub fn tag_bytes(&self) -> usize {
        if self.version == ChecksumVersion::V3 {
            return 16;
        }
        let mut sz = 12;
        if self.version == ChecksumVersion::V2 {
            sz += 2;
        }
        if self.bit64 {
            sz
        } else {
            sz - 4
        }
    }

    /// Bytes at the end of descriptor and revoke blocks taken by the
    /// checksum tail.
    pub fn tail_bytes(&self) -> usize {
        match self.version {
            ChecksumVersion::V2 | ChecksumVersion::V3 => TAIL_LEN,
            _ => 0,
        }
    }

    /// Bytes of one revoke record.
    pub fn revoke_record_bytes(&self) -> usize {
        if self.bit64 {
            8
        } else {
            4
        }
    }
}

/// One descriptor tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// The home (filesystem) block of the data block it describes.
    pub block: u64,
    /// Tag flags ([`tag_flag`]).
    pub flags: u32,
    /// The data block's checksum as stored (16 bits with v2, 32 with v3).
    pub checksum: u32,
}

/// The tags of a descriptor block as the kernel walks them: from byte 12,
/// while a whole tag fits before the checksum tail, a UUID skipped after
/// each tag without SAME_UUID, stopping after LAST_TAG. Never fails: a
/// garbage descriptor yields garbage tags, as in the kernel.
pub fn parse_tags(block: &[u8], layout: TagLayout) -> Vec<Tag> {
    let tb = layout.tag_bytes();
    let size = block.len().saturating_sub(layout.tail_bytes());
    let mut out = Vec::new();
    let mut off = HEADER_LEN;
    while off + tb <= size {
        let t = &block[off..off + tb];
        // The flags are the low 16 bits wherever the layout keeps them:
        // be16 at byte 6 of the classic tag, be32 at byte 4 of tag3.
        let flags = u32::from(be16(t, 6));
        let mut nr = u64::from(be32(t, 0));
        if layout.bit64 {
            nr |= u64::from(be32(t, 8)) << 32;
        }
        let checksum = match layout.version {
            ChecksumVersion::V3 => be32(t, 12),
            ChecksumVersion::V2 => u32::from(be16(t, 4)),
            _ => 0,
        };
        out.push(Tag {
            block: nr,
            flags,
            checksum,
        });
        off += tb;
        if flags & tag_flag::SAME_UUID == 0 {
            off += 16;
        }
        if flags & tag_flag::LAST_TAG != 0 {
            break;
        }
    }
    out
}

/// Encodes one tag (and, without SAME_UUID, the UUID after it) at `off`;
/// returns the offset after it.
pub fn encode_tag(
    block: &mut [u8],
    off: usize,
    layout: TagLayout,
    tag: &Tag,
    uuid: &[u8; 16],
) -> usize {
    let tb = layout.tag_bytes();
    let t = &mut block[off..off + tb];
    t.fill(0);
    put_be32(t, 0, tag.block as u32);
    if layout.version == ChecksumVersion::V3 {
        put_be32(t, 4, tag.flags);
        if layout.bit64 {
            put_be32(t, 8, (tag.block >> 32) as u32);
        }
        put_be32(t, 12, tag.checksum);
    } else {
        if layout.version == ChecksumVersion::V2 {
            put_be16(t, 4, tag.checksum as u16);
        }
        put_be16(t, 6, tag.flags as u16);
        if layout.bit64 {
            put_be32(t, 8, (tag.block >> 32) as u32);
        }
    }
    let mut next = off + tb;
    if tag.flags & tag_flag::SAME_UUID == 0 {
        block[next..next + 16].copy_from_slice(uuid);
        next += 16;
    }
    next
}

/// The csum v2/v3 checksum of a data block logged in transaction
/// `sequence`: crc32c over the big-endian sequence, then the block.
pub fn data_checksum(seed: u32, sequence: u32, data: &[u8]) -> u32 {
    chksum(chksum(seed, &sequence.to_be_bytes()), data)
}

/// True when the tag's stored checksum matches `data` (always true
/// without csum v2/v3).
pub fn tag_checksum_ok(
    layout: TagLayout,
    seed: u32,
    sequence: u32,
    tag: &Tag,
    data: &[u8],
) -> bool {
    let c = data_checksum(seed, sequence, data);
    match layout.version {
        ChecksumVersion::V3 => tag.checksum == c,
        ChecksumVersion::V2 => tag.checksum == c & 0xFFFF,
        _ => true,
    }
}

/// The checksum a descriptor or revoke block's tail must hold: crc32c of
/// the whole block with the tail zeroed.
fn block_tail_checksum(seed: u32, block: &[u8]) -> u32 {
    let n = block.len() - TAIL_LEN;
    let c = chksum(seed, &block[..n]);
    chksum(c, &[0; TAIL_LEN])
}

/// True when a descriptor or revoke block's tail checksum is right
/// (always true without csum v2/v3).
pub fn tail_checksum_ok(layout: TagLayout, seed: u32, block: &[u8]) -> bool {
    if layout.tail_bytes() == 0 {
        return true;
    }
    if block.len() < HEADER_LEN + TAIL_LEN {
        return false;
    }
    be32(block, block.len() - TAIL_LEN) == block_tail_checksum(seed, block)
}

/// Sets the tail checksum of a descriptor or revoke block (csum v2/v3).
pub fn set_tail_checksum(layout: TagLayout, seed: u32, block: &mut [u8]) {
    if layout.tail_bytes() == 0 {
        return;
    }
    let n = block.len() - TAIL_LEN;
    let c = block_tail_checksum(seed, block);
    put_be32(block, n, c);
}

/// The revoke records of a revoke block: `r_count` (bytes used, header
/// included) bounds them; a count larger than the block (less its tail)
/// is corrupt, as the kernel's `scan_revoke_records` says (-EINVAL).
pub fn parse_revoke(block: &[u8], layout: TagLayout) -> std::result::Result<Vec<u64>, u32> {
    if block.len() < 16 {
        return Err(0);
    }
    let rcount = be32(block, 12);
    let max = block.len() - layout.tail_bytes();
    if rcount as usize > max {
        return Err(rcount);
    }
    let rl = layout.revoke_record_bytes();
    let mut off = 16;
    let mut out = Vec::new();
    while off + rl <= rcount as usize {
        out.push(if rl == 4 {
            u64::from(be32(block, off))
        } else {
            be64(block, off)
        });
        off += rl;
    }
    Ok(out)
}

/// Encodes a revoke block for `records` (which must fit: see
/// [`revoke_capacity`]).
pub fn encode_revoke(
    block: &mut [u8],
    layout: TagLayout,
    seed: u32,
    sequence: u32,
    records: &[u64],
) {
    block.fill(0);
    Header {
        block_type: block_type::REVOKE,
        sequence,
    }
    .encode(block);
    let rl = layout.revoke_record_bytes();
    let mut off = 16;
    for &r in records {
        if rl == 4 {
            put_be32(block, off, r as u32);
        } else {
            put_be64(block, off, r);
        }
        off += rl;
    }
    put_be32(block, 12, off as u32);
    set_tail_checksum(layout, seed, block);
}

/// Revoke records one block of `block_size` holds.
pub fn revoke_capacity(layout: TagLayout, block_size: usize) -> usize {
    (block_size - 16 - layout.tail_bytes()) / layout.revoke_record_bytes()
}

/// A commit block, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// `h_chksum_type`.
    pub checksum_type: u8,
    /// `h_chksum_size`.
    pub checksum_size: u8,
    /// `h_chksum[0]`.
    pub checksum: u32,
    /// `h_commit_sec`.
    pub sec: u64,
    /// `h_commit_nsec`.
    pub nsec: u32,
}

impl Commit {
    /// Decodes the commit fields of `block` (at least 60 bytes long; a
    /// shorter block reads as zeroes).
    pub fn parse(block: &[u8]) -> Commit {
        if block.len() < 60 {
            return Commit {
                checksum_type: 0,
                checksum_size: 0,
                checksum: 0,
                sec: 0,
                nsec: 0,
            };
        }
        Commit {
            checksum_type: block[12],
            checksum_size: block[13],
            checksum: be32(block, 16),
            sec: be64(block, 48),
            nsec: be32(block, 56),
        }
    }

    /// True when the v2/v3 commit checksum (crc32c of the whole block with
    /// `h_chksum[0]` zeroed) is right.
    pub fn csum_v23_ok(seed: u32, block: &[u8]) -> bool {
        if block.len() < 60 {
            return false;
        }
        let mut copy = block.to_vec();
        put_be32(&mut copy, 16, 0);
        chksum(seed, &copy) == be32(block, 16)
    }

    /// Encodes a commit block for `sequence`: with v1 the crc32 of the
    /// transaction's descriptor and data blocks (`crc32_sum`), with v2/v3
    /// the block's own crc32c.
    pub fn encode(
        block: &mut [u8],
        sb: &JournalSuperblock,
        sequence: u32,
        crc32_sum: u32,
        sec: u64,
        nsec: u32,
    ) {
        block.fill(0);
        Header {
            block_type: block_type::COMMIT,
            sequence,
        }
        .encode(block);
        put_be64(block, 48, sec);
        put_be32(block, 56, nsec);
        match sb.checksum_version() {
            ChecksumVersion::V1 => {
                block[12] = checksum_type::CRC32;
                block[13] = CRC32_CHKSUM_SIZE;
                put_be32(block, 16, crc32_sum);
            }
            ChecksumVersion::V2 | ChecksumVersion::V3 => {
                let c = chksum(sb.csum_seed(), block);
                put_be32(block, 16, c);
            }
            ChecksumVersion::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_be_is_bzip2_crc() {
        // CRC-32/BZIP2("123456789") = 0xFC891918: init !0, out inverted.
        assert_eq!(!crc32_be(!0, b"123456789"), 0xFC89_1918);
    }

    #[test]
    fn tag_sizes_match_the_kernel() {
        let l = |version, bit64| TagLayout { version, bit64 };
        assert_eq!(l(ChecksumVersion::None, false).tag_bytes(), 8);
        assert_eq!(l(ChecksumVersion::None, true).tag_bytes(), 12);
        assert_eq!(l(ChecksumVersion::V1, true).tag_bytes(), 12);
        assert_eq!(l(ChecksumVersion::V2, false).tag_bytes(), 10);
        assert_eq!(l(ChecksumVersion::V2, true).tag_bytes(), 14);
        assert_eq!(l(ChecksumVersion::V3, false).tag_bytes(), 16);
        assert_eq!(l(ChecksumVersion::V3, true).tag_bytes(), 16);
    }

    #[test]
    fn tags_round_trip_in_every_layout() {
        let uuid = [7u8; 16];
        for version in [
            ChecksumVersion::None,
            ChecksumVersion::V1,
            ChecksumVersion::V2,
            ChecksumVersion::V3,
        ] {
            for bit64 in [false, true] {
                let layout = TagLayout { version, bit64 };
                let mut b = vec![0u8; 1024];
                let hi = if bit64 { 5u64 << 32 } else { 0 };
                let sum = match version {
                    ChecksumVersion::V2 => 0xBEEF,
                    ChecksumVersion::V3 => 0xDEAD_BEEF,
                    _ => 0,
                };
                let tags = [
                    Tag {
                        block: hi | 10,
                        flags: tag_flag::ESCAPE,
                        checksum: sum,
                    },
                    Tag {
                        block: hi | 11,
                        flags: tag_flag::SAME_UUID,
                        checksum: sum,
                    },
                    Tag {
                        block: 12,
                        flags: tag_flag::SAME_UUID | tag_flag::LAST_TAG,
                        checksum: sum,
                    },
                ];
                let mut off = HEADER_LEN;
                for t in &tags {
                    off = encode_tag(&mut b, off, layout, t, &uuid);
                }
                assert_eq!(&b[HEADER_LEN + layout.tag_bytes()..][..16], &uuid);
                assert_eq!(parse_tags(&b, layout), tags, "{layout:?}");
            }
        }
    }

    #[test]
    fn revoke_and_tail_checksums_round_trip() {
        for version in [ChecksumVersion::None, ChecksumVersion::V3] {
            for bit64 in [false, true] {
                let layout = TagLayout { version, bit64 };
                let mut b = vec![0u8; 1024];
                let recs = [1u64, 2, 300];
                encode_revoke(&mut b, layout, 99, 4, &recs);
                assert_eq!(parse_revoke(&b, layout), Ok(recs.to_vec()));
                assert!(tail_checksum_ok(layout, 99, &b));
                if layout.tail_bytes() > 0 {
                    b[20] ^= 1;
                    assert!(!tail_checksum_ok(layout, 99, &b));
                }
                put_be32(&mut b, 12, 2000);
                assert_eq!(parse_revoke(&b, layout), Err(2000));
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let layout = TagLayout {
            version: ChecksumVersion::V2,
            bit64: true,
        };
        for len in [0usize, 3, 12, 15, 16, 59, 60, 1024] {
            let b = vec![0xFFu8; len];
            let _ = Header::parse(&b);
            let _ = parse_tags(&b, layout);
            let _ = parse_revoke(&b, layout);
            let _ = Commit::parse(&b);
            let _ = Commit::csum_v23_ok(1, &b);
            let _ = tail_checksum_ok(layout, 1, &b);
            let _ = JournalSuperblock::parse(&b);
        }
    }
}
