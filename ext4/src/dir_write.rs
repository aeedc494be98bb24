//! Directory edits: adding and removing entries in linear and htree
//! directories, fsck-clean.
//!
//! Everything works on block bytes through [`DirBlocks`], which the caller
//! implements (reading through its transaction, allocating appended
//! blocks), so the rules here are testable over an in-memory directory.
//! Each operation reads what it needs, decides everything, and only then
//! writes; a failure after a [`DirBlocks::append`] (no space for a second
//! block) leaves appended blocks the caller's transaction must discard.
//!
//! The rules are the kernel's (fs/ext4/namei.c), written from their
//! description: an entry goes into the first record with enough slack
//! (`ext4_find_dest_de`), a removed one merges into its predecessor
//! (`ext4_generic_delete_entry`); an htree insert probes by name hash to a
//! leaf, splits a full leaf at about half its bytes, and splits full index
//! nodes or adds a level as far as the depth limit allows. Unlike the kernel
//! a full one-block linear directory is not converted to an htree: a block
//! is appended, which e2fsck accepts (only `-D` would index it).

// The callers (the allocator and the namei integration) are not wired in
// yet; until they are, only the tests use this module.

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::util::{le16, le32};

/// Access to one directory's blocks, implemented by the integrator (reads
/// through the txn, allocates blocks).
pub(crate) trait DirBlocks {
    /// The filesystem block size in bytes.
    fn block_size(&self) -> usize;
    /// Number of blocks (dir i_size / block size).
    fn len(&self) -> u64;
    /// Reads file block `lblk` (< `len()`).
    fn read(&mut self, lblk: u64) -> Result<Vec<u8>>;
    /// Writes file block `lblk` (< `len()`), a whole block.
    fn write(&mut self, lblk: u64, data: Vec<u8>) -> Result<()>;
    /// Appends a new block at lblk = len() (the integrator allocates and
    /// maps it, i_size += bs). Its contents are written by the caller of
    /// `append` before the operation returns.
    fn append(&mut self) -> Result<u64>;
}

/// What the directory edits need from the superblock and the directory
/// inode.
#[derive(Debug, Clone)]
pub(crate) struct DirParams {
    /// The directory's inode number (named in corruption reports).
    pub ino: u32,
    /// The `filetype` feature: entries carry a type byte and name_len is one
    /// byte.
    pub filetype: bool,
    /// The DIRECTORY inode's checksum seed with metadata_csum, else None.
    pub csum_seed: Option<u32>,
    /// `EXT4_INDEX_FL` is set on the directory.
    pub htree: bool,
    /// `s_hash_seed`.
    pub hash_seed: [u32; 4],
    /// `s_def_hash_version`, for a new root (bufwrite makes none yet:
    /// directories are not created, only their entries); an existing
    /// root's own `hash_version` wins, as in the kernel.
    #[cfg_attr(not(test), allow(dead_code))]
    pub hash_version: u8,
    /// `EXT2_FLAGS_UNSIGNED_HASH` in `s_flags` (else signed chars).
    pub unsigned_hash: bool,
    /// The `largedir` feature: three index levels instead of two.
    pub largedir: bool,
}

/// `DX_HASH_LEGACY`.
pub(crate) const DX_HASH_LEGACY: u8 = 0;
/// `DX_HASH_HALF_MD4`.
pub(crate) const DX_HASH_HALF_MD4: u8 = 1;
/// `DX_HASH_TEA`.
pub(crate) const DX_HASH_TEA: u8 = 2;

/// The metadata_csum leaf tail dirent.
const TAIL: usize = 12;
/// The dx_tail after an index node's entries.
const DX_TAIL: usize = 8;
/// Where the root's count/limit sits: after `.`, `..` and dx_root_info.
const ROOT_COUNT_OFF: usize = 0x20;
/// Where an interior node's count/limit sits: after its empty dirent.
const NODE_COUNT_OFF: usize = 8;
/// The name length limit (`EXT4_NAME_LEN`).
const NAME_MAX: usize = 255;
/// File type byte of a directory (`EXT4_FT_DIR`).
const FT_DIR: u8 = 2;
/// Leaf splits one insert may need before the entry fits: each split moves
/// at least one entry out of the target leaf, and a leaf of one hash is
/// halved by count, so a handful always suffices.
const MAX_SPLITS: usize = 8;

// ---------------------------------------------------------------------------
// Name hashing (fs/ext4/hash.c's algorithms, from their description).

/// The TEA round constant.
const TEA_DELTA: u32 = 0x9E37_79B9;
/// The end-of-directory hash readdir reserves (`EXT4_HTREE_EOF_32BIT`).
const HTREE_EOF_32: u32 = 0x7FFF_FFFF;

/// Packs up to `4 * num` name bytes into `num` words, padded with the
/// length, as `str2hashbuf_{signed,unsigned}` do.
fn str2hashbuf(msg: &[u8], num: usize, unsigned: bool) -> [u32; 8] {
    let mut out = [0u32; 8];
    let mut pad = (msg.len() as u32) | ((msg.len() as u32) << 8);
    pad |= pad << 16;
    let mut val = pad;
    let len = msg.len().min(num * 4);
    let mut w = 0;
    for (i, &byte) in msg[..len].iter().enumerate() {
        let c = if unsigned {
            u32::from(byte)
        } else {
            byte as i8 as i32 as u32
        };
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < num {
        out[w] = val;
        w += 1;
    }
    while w < num {
        out[w] = pad;
        w += 1;
    }
    out
}

/// The three-round half MD4 compression; `buf` is the running state.
fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// 16 rounds of TEA over the first two state words.
fn tea_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(TEA_DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// The original htree hash (`dx_hack_hash`).
fn dx_hack_hash(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12A3_FE2Du32, 0x37AB_E8F9u32);
    for &byte in name {
        let c = if unsigned {
            i32::from(byte)
        } else {
            i32::from(byte as i8)
        };
        let mut h = h1.wrapping_add(h0 ^ (c.wrapping_mul(7_152_373) as u32));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7FFF_FFFF);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// The (major, minor) htree hash of `name` with hash `version` (legacy,
/// half_md4 or tea), the signed or unsigned char variant and `s_hash_seed`
/// (all-zero seed: the MD4 initial state). The major hash has its low bit
/// clear (the bit marks continued hashes in index keys).
pub(crate) fn dx_hash(
    name: &[u8],
    version: u8,
    unsigned: bool,
    seed: [u32; 4],
) -> Result<(u32, u32)> {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        seed
    } else {
        [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476]
    };
    let (hash, minor) = match version {
        DX_HASH_LEGACY => (dx_hack_hash(name, unsigned), 0),
        DX_HASH_HALF_MD4 => {
            // Each 32-byte chunk is padded with the length of the REST of
            // the name from the chunk on, not of the chunk.
            for start in (0..name.len()).step_by(32) {
                half_md4_transform(&mut buf, &str2hashbuf(&name[start..], 8, unsigned));
            }
            (buf[1], buf[2])
        }
        DX_HASH_TEA => {
            for start in (0..name.len()).step_by(16) {
                tea_transform(&mut buf, &str2hashbuf(&name[start..], 4, unsigned));
            }
            (buf[0], buf[1])
        }
        v => {
            return Err(Ext4Error::Unsupported(format!(
                "directory hash version {v} (only legacy, half_md4 and tea are implemented)"
            )))
        }
    };
    let mut hash = hash & !1;
    if hash == HTREE_EOF_32 << 1 {
        hash = (HTREE_EOF_32 - 1) << 1;
    }
    Ok((hash, minor))
}

// ---------------------------------------------------------------------------
// Leaf blocks.

/// The smallest record holding a name of `name_len` bytes.
fn min_rec(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// One directory entry of a parsed block.
#[derive(Debug, Clone, Copy)]
struct Ent {
    off: usize,
    ino: u32,
    rec_len: usize,
    name_len: usize,
}

impl Ent {
    /// Slack a new entry could be carved from (the whole record if unused).
    fn room(&self) -> usize {
        if self.ino == 0 {
            self.rec_len
        } else {
            self.rec_len - min_rec(self.name_len)
        }
    }
}

/// The block-level view: size, tails, entry layout.
struct Geo<'p> {
    bs: usize,
    p: &'p DirParams,
}

impl Geo<'_> {
    fn csum(&self) -> bool {
        self.p.csum_seed.is_some()
    }

    /// Where a leaf's entries end (before the checksum tail).
    fn leaf_end(&self) -> usize {
        if self.csum() {
            self.bs - TAIL
        } else {
            self.bs
        }
    }

    fn bad(&self, structure: Structure, lblk: u64, kind: CorruptKind) -> Ext4Error {
        Ext4Error::corrupt(structure, Location::FileBlock(lblk), kind)
    }

    fn bad_entry(&self, lblk: u64, off: usize, kind: CorruptKind) -> Ext4Error {
        Ext4Error::corrupt(
            Structure::DirEntry { ino: self.p.ino },
            Location::FileBlockByte {
                block: lblk,
                byte: off as u64,
            },
            kind,
        )
    }

    fn decode_rec_len(&self, raw: u16) -> usize {
        if self.bs >= 65536 && (raw == 0 || raw == 65535) {
            return self.bs;
        }
        usize::from(raw & 65532) | (usize::from(raw & 3) << 16)
    }

    fn encode_rec_len(&self, len: usize) -> u16 {
        if len >= 65536 {
            return 0xFFFF;
        }
        len as u16
    }

    fn name_len(&self, b: &[u8], off: usize) -> usize {
        if self.p.filetype {
            usize::from(b[off + 6])
        } else {
            usize::from(le16(b, off + 6))
        }
    }

    /// Parses a leaf (or linear) block: the entry chain must cover the
    /// block up to the tail exactly; with metadata_csum the tail must be
    /// there and its checksum match.
    fn parse_leaf(&self, lblk: u64, b: &[u8]) -> Result<Vec<Ent>> {
        if b.len() != self.bs {
            return Err(self.bad(
                Structure::DirBlock { ino: self.p.ino },
                lblk,
                CorruptKind::OutOfRange {
                    field: "directory block length",
                    value: b.len() as u64,
                    min: self.bs as u64,
                    end: self.bs as u64 + 1,
                },
            ));
        }
        let end = self.leaf_end();
        if let Some(seed) = self.p.csum_seed {
            let t = end;
            let is_tail =
                le32(b, t) == 0 && le16(b, t + 4) == 12 && b[t + 6] == 0 && b[t + 7] == 0xDE;
            if !is_tail {
                return Err(self.bad(
                    Structure::DirBlock { ino: self.p.ino },
                    lblk,
                    CorruptKind::NoChecksumTail,
                ));
            }
            let want = le32(b, t + 8);
            let got = chksum(seed, &b[..t]);
            if want != got {
                return Err(self.bad(
                    Structure::DirBlock { ino: self.p.ino },
                    lblk,
                    CorruptKind::ChecksumMismatch {
                        on_disk: want,
                        computed: got,
                        bits: 32,
                    },
                ));
            }
        }
        let mut out = Vec::new();
        let mut off = 0;
        while off < end {
            if off + 8 > end {
                return Err(self.bad_entry(
                    lblk,
                    off,
                    CorruptKind::EntryOverrun {
                        room: (end - off) as u64,
                    },
                ));
            }
            let rec_len = self.decode_rec_len(le16(b, off + 4));
            let name_len = self.name_len(b, off);
            if rec_len < 12
                || !rec_len.is_multiple_of(4)
                || off + rec_len > end
                || 8 + name_len > rec_len
                || name_len > NAME_MAX
            {
                return Err(self.bad_entry(
                    lblk,
                    off,
                    CorruptKind::BadRecLen {
                        rec_len: rec_len as u64,
                        name_len: name_len as u64,
                        room: (end - off) as u64,
                    },
                ));
            }
            out.push(Ent {
                off,
                ino: le32(b, off),
                rec_len,
                name_len,
            });
            off += rec_len;
        }
        Ok(out)
    }

    /// Writes the checksum tail of a leaf (nothing without metadata_csum).
    fn seal_leaf(&self, b: &mut [u8]) {
        if let Some(seed) = self.p.csum_seed {
            let t = self.bs - TAIL;
            b[t..t + 12].fill(0);
            b[t + 4..t + 6].copy_from_slice(&12u16.to_le_bytes());
            b[t + 7] = 0xDE;
            let c = chksum(seed, &b[..t]);
            b[t + 8..t + 12].copy_from_slice(&c.to_le_bytes());
        }
    }

    /// Writes one entry header and name at `off`, zeroing the name's
    /// padding (the slack after it is left as it was).
    fn put_entry(&self, b: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ft: u8) {
        b[off..off + 4].copy_from_slice(&ino.to_le_bytes());
        b[off + 4..off + 6].copy_from_slice(&self.encode_rec_len(rec_len).to_le_bytes());
        if self.p.filetype {
            b[off + 6] = name.len() as u8;
            b[off + 7] = ft;
        } else {
            b[off + 6..off + 8].copy_from_slice(&(name.len() as u16).to_le_bytes());
        }
        let end = off + min_rec(name.len()).min(rec_len);
        b[off + 8..end].fill(0);
        b[off + 8..off + 8 + name.len()].copy_from_slice(name);
    }

    fn set_rec_len(&self, b: &mut [u8], off: usize, rec_len: usize) {
        b[off + 4..off + 6].copy_from_slice(&self.encode_rec_len(rec_len).to_le_bytes());
    }

    /// A leaf holding `ents` (ino, file type, name) packed in order, the
    /// last record running to the tail; an empty leaf is one unused
    /// record.
    fn build_leaf(&self, ents: &[(u32, u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; self.bs];
        let end = self.leaf_end();
        if ents.is_empty() {
            self.put_entry(&mut b, 0, 0, end, &[], 0);
        }
        let mut off = 0;
        for (i, &(ino, ft, name)) in ents.iter().enumerate() {
            let rec = if i + 1 == ents.len() {
                end - off
            } else {
                min_rec(name.len())
            };
            self.put_entry(&mut b, off, ino, rec, name, ft);
            off += rec;
        }
        self.seal_leaf(&mut b);
        b
    }

    /// Carves `name` into the slack of entry `e` (`ext4_insert_dentry`).
    fn insert_at(&self, b: &mut [u8], e: Ent, name: &[u8], ino: u32, ft: u8) {
        let (off, rec) = if e.ino != 0 {
            let used = min_rec(e.name_len);
            self.set_rec_len(b, e.off, used);
            (e.off + used, e.rec_len - used)
        } else {
            (e.off, e.rec_len)
        };
        self.put_entry(b, off, ino, rec, name, ft);
        self.seal_leaf(b);
    }

    /// Removes entry `i` of `ents` (merged into its predecessor, or marked
    /// unused when it is the first of the block).
    fn remove_at(&self, b: &mut [u8], ents: &[Ent], i: usize) {
        let e = ents[i];
        if i == 0 {
            // Unused: inode 0, and no name left for tools that list unused
            // records (debugfs ls shows them).
            b[e.off..e.off + 4].fill(0);
            b[e.off + 6..e.off + 8].fill(0);
            b[e.off + 8..e.off + 8 + e.name_len].fill(0);
        } else {
            let prev = ents[i - 1];
            self.set_rec_len(b, prev.off, prev.rec_len + e.rec_len);
            // Stale names in slack are harmless, but zeroes keep the
            // removed name out of the image.
            b[e.off..e.off + 8 + e.name_len].fill(0);
        }
        self.seal_leaf(b);
    }

    fn name<'b>(&self, b: &'b [u8], e: &Ent) -> &'b [u8] {
        &b[e.off + 8..e.off + 8 + e.name_len]
    }

    fn file_type(&self, b: &[u8], e: &Ent) -> u8 {
        if self.p.filetype {
            b[e.off + 7]
        } else {
            0
        }
    }

    /// The live entry named `name`, if any.
    fn find(&self, b: &[u8], ents: &[Ent], name: &[u8]) -> Option<usize> {
        ents.iter()
            .position(|e| e.ino != 0 && self.name(b, e) == name)
    }
}

/// Refuses names no directory may hold (and `.` / `..`, which only mkdir
/// and rmdir write).
fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&b'/') || name.contains(&0) {
        return Err(Ext4Error::Unsupported(format!(
            "invalid directory entry name {:?} (1-255 bytes, no '/' or NUL)",
            String::from_utf8_lossy(name)
        )));
    }
    if name == b"." || name == b".." {
        return Err(Ext4Error::Unsupported(
            "adding or removing '.' or '..' (only mkdir / rmdir write them)".into(),
        ));
    }
    Ok(())
}

/// A new directory's first block (linear): `.` -> `self_ino`, `..` ->
/// `parent_ino` running to the tail, sealed.
pub(crate) fn new_dir_block(bs: usize, p: &DirParams, self_ino: u32, parent_ino: u32) -> Vec<u8> {
    let g = Geo { bs, p };
    g.build_leaf(&[(self_ino, FT_DIR, b"."), (parent_ino, FT_DIR, b"..")])
}

#[cfg(test)]
/// A new, empty htree directory: block 0 the root (`.`, `..`, dx_root_info
/// with `p.hash_version`, one entry) pointing at block 1, an empty leaf.
/// The caller sets `EXT4_INDEX_FL` and i_size = 2 blocks.
pub(crate) fn new_htree(
    bs: usize,
    p: &DirParams,
    self_ino: u32,
    parent_ino: u32,
) -> (Vec<u8>, Vec<u8>) {
    let g = Geo { bs, p };
    let mut root = vec![0u8; bs];
    g.put_entry(&mut root, 0, self_ino, 12, b".", FT_DIR);
    g.put_entry(&mut root, 12, parent_ino, bs - 12, b"..", FT_DIR);
    root[0x1C] = p.hash_version;
    root[0x1D] = 8;
    root[0x1E] = 0;
    let limit = g.node_limit(ROOT_COUNT_OFF);
    put16(&mut root, ROOT_COUNT_OFF, limit as u16);
    put16(&mut root, ROOT_COUNT_OFF + 2, 1);
    put32(&mut root, ROOT_COUNT_OFF + 4, 1);
    g.seal_node(&mut root, ROOT_COUNT_OFF);
    (root, g.build_leaf(&[]))
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------
// htree index nodes.

/// One index node on the path from the root to a leaf.
#[derive(Debug, Clone)]
struct Frame {
    lblk: u64,
    b: Vec<u8>,
    count_off: usize,
    /// The entry followed.
    at: usize,
}

impl Frame {
    fn count(&self) -> usize {
        usize::from(le16(&self.b, self.count_off + 2))
    }

    fn limit(&self) -> usize {
        usize::from(le16(&self.b, self.count_off))
    }

    /// Entry `i`'s key (entry 0's is implicitly 0: its slot holds
    /// limit/count).
    fn key(&self, i: usize) -> u32 {
        if i == 0 {
            0
        } else {
            le32(&self.b, self.count_off + 8 * i)
        }
    }

    fn block(&self, i: usize) -> u64 {
        u64::from(le32(&self.b, self.count_off + 8 * i + 4) & 0x0FFF_FFFF)
    }

    /// Inserts `{key, block}` after entry `at` (the caller checked room).
    fn insert_after_at(&mut self, key: u32, block: u64) {
        let count = self.count();
        let start = self.count_off + 8 * (self.at + 1);
        let end = self.count_off + 8 * count;
        self.b.copy_within(start..end, start + 8);
        put32(&mut self.b, start, key);
        put32(&mut self.b, start + 4, block as u32);
        put16(&mut self.b, self.count_off + 2, (count + 1) as u16);
    }
}

impl Geo<'_> {
    /// The entries an index node with count/limit at `count_off` holds.
    fn node_limit(&self, count_off: usize) -> usize {
        let tail = if self.csum() { DX_TAIL } else { 0 };
        (self.bs - count_off - tail) / 8
    }

    /// Writes an index node's dx_tail checksum (nothing without
    /// metadata_csum).
    fn seal_node(&self, b: &mut [u8], count_off: usize) {
        let Some(seed) = self.p.csum_seed else { return };
        let limit = usize::from(le16(b, count_off));
        let count = usize::from(le16(b, count_off + 2));
        let t = count_off + limit * 8;
        b[t..t + 4].fill(0);
        let mut c = chksum(seed, &b[..count_off + count * 8]);
        c = chksum(c, &b[t..t + 4]);
        c = chksum(c, &[0; 4]);
        b[t + 4..t + 8].copy_from_slice(&c.to_le_bytes());
    }

    fn bad_htree(&self, lblk: u64, kind: CorruptKind) -> Ext4Error {
        self.bad(Structure::Htree { ino: self.p.ino }, lblk, kind)
    }

    /// Checks an index node's limit, count, checksum and child blocks.
    fn check_node(&self, lblk: u64, b: &[u8], count_off: usize, nblocks: u64) -> Result<()> {
        let limit = usize::from(le16(b, count_off));
        let count = usize::from(le16(b, count_off + 2));
        let want = self.node_limit(count_off);
        if limit != want {
            return Err(self.bad_htree(
                lblk,
                CorruptKind::OutOfRange {
                    field: "dx limit",
                    value: limit as u64,
                    min: want as u64,
                    end: want as u64 + 1,
                },
            ));
        }
        if count == 0 || count > limit {
            return Err(self.bad_htree(
                lblk,
                CorruptKind::OutOfRange {
                    field: "dx count",
                    value: count as u64,
                    min: 1,
                    end: limit as u64 + 1,
                },
            ));
        }
        if let Some(seed) = self.p.csum_seed {
            let t = count_off + limit * 8;
            let mut c = chksum(seed, &b[..count_off + count * 8]);
            c = chksum(c, &b[t..t + 4]);
            c = chksum(c, &[0; 4]);
            let on_disk = le32(b, t + 4);
            if c != on_disk {
                return Err(self.bad_htree(
                    lblk,
                    CorruptKind::ChecksumMismatch {
                        on_disk,
                        computed: c,
                        bits: 32,
                    },
                ));
            }
        }
        for i in 0..count {
            let blk = u64::from(le32(b, count_off + 8 * i + 4) & 0x0FFF_FFFF);
            if blk == 0 || blk >= nblocks {
                return Err(self.bad_htree(
                    lblk,
                    CorruptKind::OutOfRange {
                        field: "dx_entry block",
                        value: blk,
                        min: 1,
                        end: nblocks,
                    },
                ));
            }
        }
        Ok(())
    }

    /// The index levels the tree may have (`ext4_dir_htree_level`).
    fn max_levels(&self) -> usize {
        if self.p.largedir {
            3
        } else {
            2
        }
    }
}

/// The root's facts: its hash variant and its depth.
struct Root {
    hash_version: u8,
    unsigned: bool,
    levels: usize,
}

/// Reads and checks the root block.
fn read_root(d: &mut dyn DirBlocks, g: &Geo) -> Result<(Root, Vec<u8>)> {
    if d.len() < 2 {
        return Err(g.bad_htree(
            0,
            CorruptKind::OutOfRange {
                field: "htree directory blocks",
                value: d.len(),
                min: 2,
                end: u64::MAX,
            },
        ));
    }
    let b = d.read(0)?;
    if b.len() != g.bs {
        return Err(g.bad_htree(0, CorruptKind::Hole));
    }
    let info_len = b[0x1D];
    if info_len != 8 {
        return Err(g.bad_htree(
            0,
            CorruptKind::OutOfRange {
                field: "dx_root info_length",
                value: info_len.into(),
                min: 8,
                end: 9,
            },
        ));
    }
    let levels = usize::from(b[0x1E]);
    if levels >= g.max_levels() {
        return Err(g.bad_htree(
            0,
            CorruptKind::CountOverMax {
                field: "dx_root indirect_levels",
                count: levels as u64,
                max: g.max_levels() as u64 - 1,
            },
        ));
    }
    let hash_version = b[0x1C];
    if hash_version > DX_HASH_TEA {
        return Err(Ext4Error::Unsupported(format!(
            "htree hash version {hash_version} in directory inode {}",
            g.p.ino
        )));
    }
    g.check_node(0, &b, ROOT_COUNT_OFF, d.len())?;
    Ok((
        Root {
            hash_version,
            unsigned: g.p.unsigned_hash,
            levels,
        },
        b,
    ))
}

/// The path from the root to the leaf whose range holds `hash`
/// (`dx_probe`), and that leaf's file block.
fn probe(
    d: &mut dyn DirBlocks,
    g: &Geo,
    root: &Root,
    root_b: Vec<u8>,
    hash: u32,
) -> Result<(Vec<Frame>, u64)> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut cur = Frame {
        lblk: 0,
        b: root_b,
        count_off: ROOT_COUNT_OFF,
        at: 0,
    };
    loop {
        // The last entry whose key is <= hash (entry 0 covers from 0).
        let count = cur.count();
        let (mut lo, mut hi) = (1usize, count);
        while lo < hi {
            let m = lo + (hi - lo) / 2;
            if cur.key(m) > hash {
                hi = m;
            } else {
                lo = m + 1;
            }
        }
        cur.at = lo - 1;
        let child = cur.block(cur.at);
        frames.push(cur);
        if frames.len() > root.levels {
            return Ok((frames, child));
        }
        if frames.iter().any(|f| f.lblk == child) {
            return Err(g.bad_htree(child, CorruptKind::Loop { block: child }));
        }
        let b = d.read(child)?;
        if b.len() != g.bs {
            return Err(g.bad_htree(child, CorruptKind::Hole));
        }
        g.check_node(child, &b, NODE_COUNT_OFF, d.len())?;
        cur = Frame {
            lblk: child,
            b,
            count_off: NODE_COUNT_OFF,
            at: 0,
        };
    }
}

/// The next leaf to look in for `hash` after the current one: only when
/// the next key continues the same hash (`ext4_htree_next_block`). Moves
/// the frames onto it.
fn next_leaf(
    d: &mut dyn DirBlocks,
    g: &Geo,
    frames: &mut [Frame],
    hash: u32,
) -> Result<Option<u64>> {
    let Some(level) = frames.iter().rposition(|f| f.at + 1 < f.count()) else {
        return Ok(None);
    };
    frames[level].at += 1;
    if frames[level].key(frames[level].at) & !1 != hash {
        return Ok(None);
    }
    for l in level + 1..frames.len() {
        let child = frames[l - 1].block(frames[l - 1].at);
        let b = d.read(child)?;
        if b.len() != g.bs {
            return Err(g.bad_htree(child, CorruptKind::Hole));
        }
        g.check_node(child, &b, NODE_COUNT_OFF, d.len())?;
        frames[l] = Frame {
            lblk: child,
            b,
            count_off: NODE_COUNT_OFF,
            at: 0,
        };
    }
    let last = &frames[frames.len() - 1];
    Ok(Some(last.block(last.at)))
}

/// A live entry found: (leaf block, its bytes, its entries, the entry's
/// index).
type Found = (u64, Vec<u8>, Vec<Ent>, usize);

/// Where `name` lives in an htree directory: (leaf block, its bytes, its
/// entries, the entry's index).
fn htree_find(d: &mut dyn DirBlocks, g: &Geo, name: &[u8]) -> Result<Option<Found>> {
    let (root, root_b) = read_root(d, g)?;
    let (hash, _) = dx_hash(name, root.hash_version, root.unsigned, g.p.hash_seed)?;
    let (mut frames, mut leaf) = probe(d, g, &root, root_b, hash)?;
    let mut seen = 0u64;
    loop {
        let b = d.read(leaf)?;
        let ents = g.parse_leaf(leaf, &b)?;
        if let Some(i) = g.find(&b, &ents, name) {
            return Ok(Some((leaf, b, ents, i)));
        }
        seen += 1;
        if seen > d.len() {
            return Err(g.bad_htree(leaf, CorruptKind::Loop { block: leaf }));
        }
        match next_leaf(d, g, &mut frames, hash)? {
            Some(l) => leaf = l,
            None => return Ok(None),
        }
    }
}

/// Adds `name -> ino` (file type byte when filetype); the name must not
/// exist (checked: AlreadyExists error).
pub(crate) fn add_entry(
    d: &mut dyn DirBlocks,
    p: &DirParams,
    name: &[u8],
    ino: u32,
    file_type: u8,
) -> Result<()> {
    check_name(name)?;
    let g = Geo {
        bs: d.block_size(),
        p,
    };
    if p.htree {
        add_htree(d, &g, name, ino, file_type)
    } else {
        add_linear(d, &g, name, ino, file_type)
    }
}

/// Removes `name`; returns its inode number (NotFound error if absent).
/// Merges the freed record into the previous one in the block (or sets
/// inode 0 for the first), fixes the tail checksum.
pub(crate) fn remove_entry(d: &mut dyn DirBlocks, p: &DirParams, name: &[u8]) -> Result<u32> {
    check_name(name)?;
    let g = Geo {
        bs: d.block_size(),
        p,
    };
    let found = if p.htree {
        htree_find(d, &g, name)?
    } else {
        let mut found = None;
        for lblk in 0..d.len() {
            let b = d.read(lblk)?;
            let ents = g.parse_leaf(lblk, &b)?;
            if let Some(i) = g.find(&b, &ents, name) {
                found = Some((lblk, b, ents, i));
                break;
            }
        }
        found
    };
    let Some((lblk, mut b, ents, i)) = found else {
        return Err(Ext4Error::NotFound(format!(
            "no {:?} in directory inode {}",
            String::from_utf8_lossy(name),
            p.ino
        )));
    };
    let ino = ents[i].ino;
    g.remove_at(&mut b, &ents, i);
    d.write(lblk, b)?;
    Ok(ino)
}

fn exists_error(g: &Geo, name: &[u8]) -> Ext4Error {
    Ext4Error::AlreadyExists(format!(
        "{:?} in directory inode {}",
        String::from_utf8_lossy(name),
        g.p.ino
    ))
}

/// Linear add: the first block with a slot, else a new block.
fn add_linear(d: &mut dyn DirBlocks, g: &Geo, name: &[u8], ino: u32, ft: u8) -> Result<()> {
    let need = min_rec(name.len());
    let mut target = None;
    for lblk in 0..d.len() {
        let b = d.read(lblk)?;
        let ents = g.parse_leaf(lblk, &b)?;
        if g.find(&b, &ents, name).is_some() {
            return Err(exists_error(g, name));
        }
        if target.is_none() {
            if let Some(e) = ents.iter().find(|e| e.room() >= need) {
                target = Some((lblk, *e, b));
            }
        }
    }
    let (lblk, e, mut b) = match target {
        Some(t) => t,
        None => {
            let b = g.build_leaf(&[]);
            let lblk = d.append()?;
            let e = g.parse_leaf(lblk, &b)?[0];
            (lblk, e, b)
        }
    };
    g.insert_at(&mut b, e, name, ino, ft);
    d.write(lblk, b)
}

/// htree add: probe to the leaf, insert, splitting as needed.
fn add_htree(d: &mut dyn DirBlocks, g: &Geo, name: &[u8], ino: u32, ft: u8) -> Result<()> {
    if htree_find(d, g, name)?.is_some() {
        return Err(exists_error(g, name));
    }
    let need = min_rec(name.len());
    for _ in 0..MAX_SPLITS {
        let (root, root_b) = read_root(d, g)?;
        let (hash, _) = dx_hash(name, root.hash_version, root.unsigned, g.p.hash_seed)?;
        let (frames, leaf) = probe(d, g, &root, root_b, hash)?;
        let mut b = d.read(leaf)?;
        let ents = g.parse_leaf(leaf, &b)?;
        if let Some(e) = ents.iter().find(|e| e.room() >= need) {
            g.insert_at(&mut b, *e, name, ino, ft);
            return d.write(leaf, b);
        }
        split_leaf(d, g, &root, frames, leaf, &b, &ents)?;
    }
    Err(Ext4Error::Unsupported(format!(
        "{:?} did not fit in directory inode {} after {MAX_SPLITS} leaf splits",
        String::from_utf8_lossy(name),
        g.p.ino
    )))
}

/// Splits the full leaf `leaf` (`do_split`): its live entries sorted by
/// hash, the upper half by bytes moved to a new block, the boundary on a
/// change of hash when there is one (else the key carries the continuation
/// bit), and `{key, new block}` inserted into the index above.
fn split_leaf(
    d: &mut dyn DirBlocks,
    g: &Geo,
    root: &Root,
    mut frames: Vec<Frame>,
    leaf: u64,
    b: &[u8],
    ents: &[Ent],
) -> Result<()> {
    let mut map = Vec::new();
    for e in ents.iter().filter(|e| e.ino != 0) {
        let name = g.name(b, e);
        let (h, _) = dx_hash(name, root.hash_version, root.unsigned, g.p.hash_seed)?;
        map.push((h, e.ino, g.file_type(b, e), name));
    }
    if map.len() < 2 {
        // Not full of entries, only of holes too small: compact it.
        let live: Vec<_> = map.iter().map(|&(_, i, t, n)| (i, t, n)).collect();
        return d.write(leaf, g.build_leaf(&live));
    }
    // Every index node on the path that is full must split; a full root
    // needs a new level. Refuse before anything is allocated or written.
    let full = frames
        .iter()
        .rev()
        .take_while(|f| f.count() == f.limit())
        .count();
    if full == frames.len() && frames.len() >= g.max_levels() {
        return Err(Ext4Error::Unsupported(format!(
            "directory inode {} index is full ({} levels{})",
            g.p.ino,
            frames.len(),
            if g.p.largedir {
                ""
            } else {
                "; largedir would allow 3"
            }
        )));
    }
    map.sort_by_key(|m| m.0);
    let hashes: Vec<u32> = map.iter().map(|m| m.0).collect();
    let sizes: Vec<usize> = map.iter().map(|m| min_rec(m.3.len())).collect();
    let (split, continued) = split_point(&hashes, &sizes);
    let key = map[split].0 | u32::from(continued);
    let low: Vec<_> = map[..split].iter().map(|&(_, i, t, n)| (i, t, n)).collect();
    let high: Vec<_> = map[split..].iter().map(|&(_, i, t, n)| (i, t, n)).collect();
    let (low_b, high_b) = (g.build_leaf(&low), g.build_leaf(&high));
    let new_leaf = d.append()?;
    let mut writes = vec![(leaf, low_b), (new_leaf, high_b)];
    let bottom = frames.len() - 1;
    dx_insert(d, g, &mut frames, bottom, key, new_leaf, &mut writes)?;
    for (lblk, data) in writes {
        d.write(lblk, data)?;
    }
    Ok(())
}

/// Where a leaf of entries sorted by `hashes` (with record `sizes`)
/// splits: the first index of the upper part, at about half the bytes, moved
/// to the nearest change of hash; and whether the upper part's key must be
/// marked continued (no change of hash anywhere). Needs two entries.
fn split_point(hashes: &[u32], sizes: &[usize]) -> (usize, bool) {
    let n = hashes.len();
    let total: usize = sizes.iter().sum();
    let mut acc = 0;
    let mut split = n / 2;
    for (i, s) in sizes.iter().enumerate() {
        acc += s;
        if acc * 2 >= total {
            split = (i + 1).clamp(1, n - 1);
            break;
        }
    }
    if hashes[split] != hashes[split - 1] {
        return (split, false);
    }
    let boundary = (1..n)
        .filter(|&j| hashes[j] != hashes[j - 1])
        .min_by_key(|&j| j.abs_diff(split));
    match boundary {
        Some(j) => (j, false),
        None => (n / 2, true),
    }
}

/// Inserts `{key, block}` after the followed entry of `frames[f]`,
/// splitting that node (and upward) or growing the root as needed. The
/// touched nodes are sealed and queued in `writes`.
fn dx_insert(
    d: &mut dyn DirBlocks,
    g: &Geo,
    frames: &mut Vec<Frame>,
    f: usize,
    key: u32,
    block: u64,
    writes: &mut Vec<(u64, Vec<u8>)>,
) -> Result<()> {
    if frames[f].count() < frames[f].limit() {
        let fr = &mut frames[f];
        fr.insert_after_at(key, block);
        g.seal_node(&mut fr.b, fr.count_off);
        writes.push((fr.lblk, fr.b.clone()));
        return Ok(());
    }
    if f == 0 {
        // A full root: its entries move to a new node below it, the root
        // keeps one entry pointing there, and the tree is one level deeper.
        let n = d.append()?;
        let root = &mut frames[0];
        let count = root.count();
        let mut node = vec![0u8; g.bs];
        g.put_entry(&mut node, 0, 0, g.bs, &[], 0);
        let src = ROOT_COUNT_OFF..ROOT_COUNT_OFF + 8 * count;
        node[NODE_COUNT_OFF..NODE_COUNT_OFF + 8 * count].copy_from_slice(&root.b[src]);
        put16(
            &mut node,
            NODE_COUNT_OFF,
            g.node_limit(NODE_COUNT_OFF) as u16,
        );
        put16(&mut root.b, ROOT_COUNT_OFF + 2, 1);
        put32(&mut root.b, ROOT_COUNT_OFF + 4, n as u32);
        root.b[0x1E] += 1;
        let at = root.at;
        root.at = 0;
        g.seal_node(&mut root.b, ROOT_COUNT_OFF);
        writes.push((0, root.b.clone()));
        frames.insert(
            1,
            Frame {
                lblk: n,
                b: node,
                count_off: NODE_COUNT_OFF,
                at,
            },
        );
        return dx_insert(d, g, frames, 1, key, block, writes);
    }
    // A full interior node: its upper half moves to a new node, whose
    // first key goes into the parent.
    let n = d.append()?;
    let count = frames[f].count();
    let c1 = count - count / 2;
    let hash2 = frames[f].key(c1);
    let mut node = vec![0u8; g.bs];
    g.put_entry(&mut node, 0, 0, g.bs, &[], 0);
    {
        let fr = &mut frames[f];
        let src = fr.count_off + 8 * c1..fr.count_off + 8 * count;
        node[NODE_COUNT_OFF..NODE_COUNT_OFF + 8 * (count - c1)].copy_from_slice(&fr.b[src]);
        put16(
            &mut node,
            NODE_COUNT_OFF,
            g.node_limit(NODE_COUNT_OFF) as u16,
        );
        put16(&mut node, NODE_COUNT_OFF + 2, (count - c1) as u16);
        put16(&mut fr.b, fr.count_off + 2, c1 as u16);
    }
    // Entry 0 of a node keeps its hash slot for limit/count; the key moves
    // up to the parent. A root that grows there pushes this frame down.
    let before = frames.len();
    dx_insert(d, g, frames, f - 1, hash2, n, writes)?;
    let f = f + (frames.len() - before);
    let old = frames[f].clone();
    if old.at >= c1 {
        let mut sealed = old.b.clone();
        g.seal_node(&mut sealed, old.count_off);
        writes.push((old.lblk, sealed));
        frames[f] = Frame {
            lblk: n,
            b: node,
            count_off: NODE_COUNT_OFF,
            at: old.at - c1,
        };
    } else {
        let mut sealed = node;
        g.seal_node(&mut sealed, NODE_COUNT_OFF);
        writes.push((n, sealed));
    }
    dx_insert(d, g, frames, f, key, block, writes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dir::Dir;
    use crate::extent::{Extent, TreeCtx};
    use crate::inode::{flags, Inode};
    use bufwrite_engine::device::mem::Mem;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// An in-memory directory.
    #[derive(Clone)]
    pub(crate) struct MemDir {
        pub bs: usize,
        pub blocks: Vec<Vec<u8>>,
        /// Appends allowed, to test a failing allocation.
        pub max_blocks: usize,
    }

    impl DirBlocks for MemDir {
        fn block_size(&self) -> usize {
            self.bs
        }
        fn len(&self) -> u64 {
            self.blocks.len() as u64
        }
        fn read(&mut self, lblk: u64) -> Result<Vec<u8>> {
            Ok(self.blocks[lblk as usize].clone())
        }
        fn write(&mut self, lblk: u64, data: Vec<u8>) -> Result<()> {
            assert_eq!(data.len(), self.bs);
            self.blocks[lblk as usize] = data;
            Ok(())
        }
        fn append(&mut self) -> Result<u64> {
            if self.blocks.len() >= self.max_blocks {
                return Err(Ext4Error::NoSpace("test directory limit".into()));
            }
            self.blocks.push(vec![0xEE; self.bs]);
            Ok(self.blocks.len() as u64 - 1)
        }
    }

    pub(crate) fn params(csum: bool, htree: bool, filetype: bool, version: u8) -> DirParams {
        DirParams {
            ino: 2,
            filetype,
            csum_seed: csum.then_some(0xC0FF_EE11),
            htree,
            hash_seed: [0x1234_5678, 0x9ABC_DEF0, 0x0F1E_2D3C, 0x4B5A_6978],
            hash_version: version,
            unsigned_hash: version == DX_HASH_TEA,
            largedir: false,
        }
    }

    pub(crate) fn new_dir(bs: usize, p: &DirParams) -> MemDir {
        let blocks = if p.htree {
            let (r, l) = new_htree(bs, p, 2, 2);
            vec![r, l]
        } else {
            vec![new_dir_block(bs, p, 2, 2)]
        };
        MemDir {
            bs,
            blocks,
            max_blocks: usize::MAX,
        }
    }

    /// Lookup through dir.rs (the reader the rest of the crate uses).
    fn reader_lookup(md: &MemDir, p: &DirParams, name: &[u8]) -> Option<u32> {
        let n = md.blocks.len() as u64;
        let dev = Mem::from_bytes(md.blocks.concat(), 512);
        let ctx = TreeCtx {
            dev: &dev,
            block_size: md.bs as u32,
            blocks_count: n,
            csum: p.csum_seed.is_some(),
        };
        let inode = Inode {
            ino: p.ino,
            mode: 0o40755,
            links: 2,
            size: n * md.bs as u64,
            flags: if p.htree { flags::INDEX } else { 0 },
            generation: 0,
            block: [0; 60],
            csum_seed: p.csum_seed.unwrap_or(0),
        };
        let extents = [Extent {
            lblk: 0,
            len: n,
            pblk: 0,
            unwritten: false,
        }];
        let dir = Dir {
            ctx: &ctx,
            inode: &inode,
            extents: &extents,
            filetype: p.filetype,
        };
        dir.lookup(name).unwrap()
    }

    /// Every live name of the directory (leaves only), by a full walk.
    fn all_names(md: &mut MemDir, p: &DirParams) -> BTreeMap<Vec<u8>, u32> {
        let g = Geo { bs: md.bs, p };
        let first = if p.htree { 1 } else { 0 };
        let index: Vec<u64> = if p.htree { index_blocks(md, p) } else { vec![] };
        let mut out = BTreeMap::new();
        for lblk in first..md.len() {
            if index.contains(&lblk) {
                continue;
            }
            let b = md.read(lblk).unwrap();
            for e in g.parse_leaf(lblk, &b).unwrap() {
                let name = g.name(&b, &e).to_vec();
                if e.ino != 0 && name != b"." && name != b".." {
                    assert!(out.insert(name, e.ino).is_none(), "duplicate");
                }
            }
        }
        out
    }

    /// Interior index nodes (by walking from the root).
    fn index_blocks(md: &mut MemDir, p: &DirParams) -> Vec<u64> {
        let g = Geo { bs: md.bs, p };
        let (root, b) = read_root(md, &g).unwrap();
        let r = Frame {
            lblk: 0,
            b,
            count_off: ROOT_COUNT_OFF,
            at: 0,
        };
        let mut level: Vec<u64> = (0..r.count()).map(|i| r.block(i)).collect();
        let mut out = Vec::new();
        for _ in 0..root.levels {
            let mut next = Vec::new();
            for blk in level {
                out.push(blk);
                let b = md.read(blk).unwrap();
                g.check_node(blk, &b, NODE_COUNT_OFF, md.len()).unwrap();
                let f = Frame {
                    lblk: blk,
                    b,
                    count_off: NODE_COUNT_OFF,
                    at: 0,
                };
                // Keys strictly ordered inside a node.
                for i in 2..f.count() {
                    assert!(f.key(i - 1) <= f.key(i));
                }
                next.extend((0..f.count()).map(|i| f.block(i)));
            }
            level = next;
        }
        out
    }

    fn check_against(md: &mut MemDir, p: &DirParams, model: &BTreeMap<Vec<u8>, u32>, full: bool) {
        assert_eq!(&all_names(md, p), model);
        let g = Geo { bs: md.bs, p };
        for (name, &ino) in model {
            if p.htree {
                // Routed by hash: the probe finds every name.
                let (_, _, ents, i) = htree_find(md, &g, name).unwrap().expect("routed");
                assert_eq!(ents[i].ino, ino);
            }
            if full {
                assert_eq!(reader_lookup(md, p, name), Some(ino));
            }
        }
    }

    #[test]
    fn dx_hash_matches_debugfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("h.img");
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "1024"])
            .arg(&img)
            .arg("4M")
            .status()
            .unwrap();
        assert!(ok.success());
        let seed_text = "01234567-89ab-cdef-0123-456789abcdef";
        let seed_bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&seed_text.replace('-', "")[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let seed: [u32; 4] = std::array::from_fn(|i| le32(&seed_bytes, 4 * i));
        let names: [&[u8]; 6] = [
            b"hello",
            b"a",
            b"exactly_sixteen_",
            b"a_rather_long_file_name_number_00042_and_some_more_bytes_past_32",
            "été-ünïcödé".as_bytes(),
            &[b'x'; 255],
        ];
        let mut cmds = String::new();
        for v in 0..6u8 {
            for s in [seed_text, "00000000-0000-0000-0000-000000000000"] {
                for n in names {
                    cmds.push_str(&format!(
                        "dx_hash -h {v} -s {s} {}\n",
                        std::str::from_utf8(n).unwrap()
                    ));
                }
            }
        }
        let f = dir.path().join("cmds");
        std::fs::write(&f, cmds).unwrap();
        let out = std::process::Command::new("debugfs")
            .arg("-f")
            .arg(&f)
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<(u32, u32)> = text
            .lines()
            .filter(|l| l.starts_with("Hash of"))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let n = w.len();
                let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                (hex(w[n - 3]), hex(w[n - 1].trim_end_matches(')')))
            })
            .collect();
        assert_eq!(got.len(), 6 * 2 * names.len(), "{text}");
        let mut k = 0;
        for v in 0..6u8 {
            for s in [seed, [0; 4]] {
                for n in names {
                    let (h, m) = dx_hash(n, v % 3, v >= 3, s).unwrap();
                    assert_eq!((h, m), got[k], "version {v} {n:?}");
                    k += 1;
                }
            }
        }
    }

    fn name_of(i: u32, long: bool) -> Vec<u8> {
        if long {
            let mut v = format!("{i:08}_").into_bytes();
            v.resize(255, b'L');
            v
        } else {
            format!("f{}{}", i, "x".repeat((i % 23) as usize)).into_bytes()
        }
    }

    #[test]
    fn errors_exist_notfound_and_bad_names() {
        for htree in [false, true] {
            let p = params(true, htree, true, DX_HASH_HALF_MD4);
            let mut md = new_dir(1024, &p);
            add_entry(&mut md, &p, b"a", 12, 1).unwrap();
            assert!(matches!(
                add_entry(&mut md, &p, b"a", 13, 1),
                Err(Ext4Error::AlreadyExists(_))
            ));
            assert!(matches!(
                remove_entry(&mut md, &p, b"b"),
                Err(Ext4Error::NotFound(_))
            ));
            for bad in [&b"."[..], b"..", b"", b"a/b"] {
                assert!(add_entry(&mut md, &p, bad, 12, 1).is_err());
            }
            assert_eq!(remove_entry(&mut md, &p, b"a").unwrap(), 12);
            assert_eq!(reader_lookup(&md, &p, b"a"), None);
            if !htree {
                assert_eq!(reader_lookup(&md, &p, b"."), Some(2));
            }
            // A corrupt tail checksum is reported, nothing written.
            let last = md.blocks.len() - 1;
            md.blocks[last][1023] ^= 1;
            let before = md.blocks.clone();
            let e = add_entry(&mut md, &p, b"zz", 12, 1).unwrap_err();
            assert!(e.as_corrupt().is_some(), "{e}");
            assert!(md.blocks == before);
        }
    }

    #[test]
    fn linear_fills_blocks_then_appends() {
        for (csum, filetype) in [(true, true), (false, false), (false, true)] {
            let p = params(csum, false, filetype, 0);
            let mut md = new_dir(1024, &p);
            let mut model = BTreeMap::new();
            for i in 0..300 {
                add_entry(&mut md, &p, &name_of(i, false), 100 + i, 1).unwrap();
                model.insert(name_of(i, false), 100 + i);
            }
            assert!(md.blocks.len() > 5);
            check_against(&mut md, &p, &model, true);
            // Removing everything in one block leaves an unused record
            // spanning it; new names go back into the first hole.
            for i in (0..300).step_by(2) {
                assert_eq!(
                    remove_entry(&mut md, &p, &name_of(i, false)).unwrap(),
                    100 + i
                );
                model.remove(&name_of(i, false));
            }
            let n = md.blocks.len();
            for i in 1000..1100 {
                add_entry(&mut md, &p, &name_of(i, false), i, 1).unwrap();
                model.insert(name_of(i, false), i);
            }
            assert_eq!(md.blocks.len(), n, "reused the freed room");
            check_against(&mut md, &p, &model, true);
        }
    }

    #[test]
    fn htree_splits_leaves_and_index_nodes_then_refuses_when_full() {
        let p = params(true, true, true, DX_HASH_HALF_MD4);
        let mut md = new_dir(1024, &p);
        let mut model = BTreeMap::new();
        let mut i = 0;
        let mut grew = false;
        let err = loop {
            let name = name_of(i, true);
            match add_entry(&mut md, &p, &name, 1000 + i, 1) {
                Ok(()) => {
                    model.insert(name, 1000 + i);
                }
                Err(e) => break e,
            }
            if md.blocks[0][0x1E] == 1 && !grew {
                grew = true;
                check_against(&mut md, &p, &model, true);
            }
            i += 1;
        };
        assert!(grew);
        assert!(matches!(err, Ext4Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("index is full"), "{err}");
        // The refusal wrote nothing: the tree still holds every name.
        check_against(&mut md, &p, &model, false);
        for name in model.keys().step_by(97) {
            assert_eq!(reader_lookup(&md, &p, name), model.get(name).copied());
        }
        // With largedir the same directory grows a third level.
        let p3 = DirParams {
            largedir: true,
            ..p.clone()
        };
        for j in 0..2000 {
            let name = name_of(i + j, true);
            add_entry(&mut md, &p3, &name, 7, 1).unwrap();
            model.insert(name, 7);
        }
        assert_eq!(md.blocks[0][0x1E], 2);
        check_against(&mut md, &p3, &model, false);
        // Removing from the three-level tree.
        for name in model.keys().take(500).cloned().collect::<Vec<_>>() {
            assert_eq!(remove_entry(&mut md, &p3, &name).unwrap(), model[&name]);
            model.remove(&name);
        }
        check_against(&mut md, &p3, &model, false);
    }

    #[test]
    fn split_point_rules() {
        let sizes = |n| vec![16usize; n];
        // Half the bytes, on a change of hash.
        assert_eq!(split_point(&[1, 2, 3, 4], &sizes(4)), (2, false));
        // The middle falls inside a run of equal hashes: the nearest change.
        assert_eq!(split_point(&[1, 5, 5, 5, 5, 9], &sizes(6)), (1, false));
        assert_eq!(split_point(&[1, 1, 1, 5, 5, 9], &sizes(6)), (3, false));
        // One hash only: split by count, continued.
        assert_eq!(split_point(&[7, 7, 7, 7], &sizes(4)), (2, true));
        // Bytes, not count: one big entry at the end.
        assert_eq!(split_point(&[1, 2, 3, 4], &[12, 12, 12, 264]), (3, false));
    }

    /// Two names of one hash in two leaves, the second's key continued:
    /// lookups, duplicate checks and removal follow the continuation.
    #[test]
    fn continued_hash_is_followed_across_leaves() {
        let p = params(true, true, true, DX_HASH_HALF_MD4);
        let mut seen = std::collections::HashMap::new();
        let (a, b, h) = (0u32..)
            .find_map(|i| {
                let n = format!("c{i}").into_bytes();
                let (h, _) = dx_hash(&n, DX_HASH_HALF_MD4, p.unsigned_hash, p.hash_seed).unwrap();
                seen.insert(h, n.clone()).map(|o| (o, n, h))
            })
            .unwrap();
        let mut md = new_dir(1024, &p);
        let g = Geo { bs: 1024, p: &p };
        md.blocks[1] = g.build_leaf(&[(30, 1, &a)]);
        md.blocks.push(g.build_leaf(&[(31, 1, &b)]));
        let root = &mut md.blocks[0];
        put16(root, ROOT_COUNT_OFF + 2, 2);
        put32(root, ROOT_COUNT_OFF + 8, h | 1);
        put32(root, ROOT_COUNT_OFF + 12, 2);
        g.seal_node(root, ROOT_COUNT_OFF);
        for n in [&a, &b] {
            assert!(matches!(
                add_entry(&mut md, &p, n, 40, 1),
                Err(Ext4Error::AlreadyExists(_))
            ));
        }
        assert_eq!(remove_entry(&mut md, &p, &b).unwrap(), 31);
        assert_eq!(remove_entry(&mut md, &p, &a).unwrap(), 30);
        add_entry(&mut md, &p, &b, 32, 1).unwrap();
        assert_eq!(reader_lookup(&md, &p, &b), Some(32));
    }

    #[test]
    fn failed_append_reports_no_space() {
        let p = params(true, false, true, 0);
        let mut md = new_dir(1024, &p);
        md.max_blocks = 1;
        let mut i = 0;
        let e = loop {
            if let Err(e) = add_entry(&mut md, &p, &name_of(i, false), 50, 1) {
                break e;
            }
            i += 1;
        };
        assert!(matches!(e, Ext4Error::NoSpace(_)));
        assert_eq!(md.blocks.len(), 1);
        assert_eq!(all_names(&mut md, &p).len(), i as usize);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..400).prop_map(Op::Add),
            2 => (0u32..400).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn random_ops_match_a_model(
            ops in proptest::collection::vec(op(), 1..600),
            csum in any::<bool>(),
            htree in any::<bool>(),
            filetype in any::<bool>(),
            version in 0u8..3,
            long in any::<bool>(),
        ) {
            let p = params(csum, htree, filetype, version);
            let mut md = new_dir(1024, &p);
            let mut model = BTreeMap::new();
            for (k, op) in ops.iter().enumerate() {
                match *op {
                    Op::Add(i) => {
                        let name = name_of(i, long && i % 3 == 0);
                        let r = add_entry(&mut md, &p, &name, 20 + i, 1);
                        match model.entry(name) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                prop_assert!(matches!(r, Err(Ext4Error::AlreadyExists(_))));
                            }
                            std::collections::btree_map::Entry::Vacant(v) => {
                                r.unwrap();
                                v.insert(20 + i);
                            }
                        }
                    }
                    Op::Remove(i) => {
                        let name = name_of(i, long && i % 3 == 0);
                        let r = remove_entry(&mut md, &p, &name);
                        match model.remove(&name) {
                            Some(ino) => prop_assert_eq!(r.unwrap(), ino),
                            None => prop_assert!(matches!(r, Err(Ext4Error::NotFound(_)))),
                        }
                    }
                }
                if k % 50 == 0 || k + 1 == ops.len() {
                    check_against(&mut md, &p, &model, true);
                    for i in 0..400u32 {
                        let name = name_of(i, long && i % 3 == 0);
                        if !model.contains_key(&name) && i % 7 == 0 {
                            prop_assert_eq!(reader_lookup(&md, &p, &name), None);
                        }
                    }
                }
            }
        }
    }
}
