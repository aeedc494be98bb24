//! Directory lookup, linear and htree.
//!
//! Lookup scans every leaf block in order. For an htree directory the root
//! (block 0) and the interior index blocks are found by walking the index
//! from the root (no name hashing is needed to know which blocks are index
//! blocks); they are checksummed and skipped, the leaves are scanned.

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::extent::{find, Extent, TreeCtx};
use crate::inode::{flags, Inode};
use crate::util::{le16, le32, read_meta};
use std::collections::HashSet;

/// htree depth limit (3 with large_dir).
const MAX_DX_LEVELS: u8 = 3;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    /// The inode number.
    pub ino: u32,
    /// The entry's file type byte (1 file, 2 directory, 7 symlink, ...;
    /// 0 when the filesystem has no `filetype` feature).
    pub file_type: u8,
}

/// A directory with its block map, ready for lookups.
pub(crate) struct Dir<'a, 'b> {
    pub ctx: &'b TreeCtx<'a>,
    pub inode: &'b Inode,
    pub extents: &'b [Extent],
    /// Directory entries carry a file type byte (so name_len is one byte).
    pub filetype: bool,
}

impl Dir<'_, '_> {
    /// A corruption of the directory block at file block `lblk`.
    fn bad_block(&self, lblk: u64, kind: CorruptKind) -> Ext4Error {
        Ext4Error::corrupt(
            Structure::DirBlock {
                ino: self.inode.ino,
            },
            Location::FileBlock(lblk),
            kind,
        )
    }

    /// A corruption of the htree node at file block `lblk`.
    fn bad_htree(&self, lblk: u64, kind: CorruptKind) -> Ext4Error {
        Ext4Error::corrupt(
            Structure::Htree {
                ino: self.inode.ino,
            },
            Location::FileBlock(lblk),
            kind,
        )
    }

    /// A corruption of the entry at byte `off` of file block `lblk`.
    fn bad_entry(&self, lblk: u64, off: usize, kind: CorruptKind) -> Ext4Error {
        Ext4Error::corrupt(
            Structure::DirEntry {
                ino: self.inode.ino,
            },
            Location::FileBlockByte {
                block: lblk,
                byte: off as u64,
            },
            kind,
        )
    }

    fn read(&self, lblk: u64) -> Result<Option<Vec<u8>>> {
        let Ok(i) = find(self.extents, lblk) else {
            return Ok(None);
        };
        let e = self.extents[i];
        if e.unwritten {
            return Ok(None);
        }
        let bs = self.ctx.block_size;
        let pblk = e.pblk + (lblk - e.lblk);
        let structure = Structure::DirBlock {
            ino: self.inode.ino,
        };
        read_meta(self.ctx.dev, structure, pblk * u64::from(bs), bs as usize).map(Some)
    }

    /// The inode number of `name` in this directory, if present.
    pub(crate) fn lookup(&self, name: &[u8]) -> Result<Option<u32>> {
        let bs = u64::from(self.ctx.block_size);
        let nblocks = self.inode.size.div_ceil(bs);
        let index_blocks = self.index_blocks_if_htree()?;
        // Walk the mapped blocks, not every block below i_size: a corrupt
        // i_size of 2^63 would otherwise mean 2^53 hole lookups (a hang).
        for e in self.extents.iter().filter(|e| !e.unwritten) {
            for lblk in e.lblk..e.end().min(nblocks) {
                if index_blocks.contains(&lblk) {
                    continue;
                }
                let Some(b) = self.read(lblk)? else { continue };
                if let Some(ino) = self.scan_leaf(lblk, &b, name)? {
                    return Ok(Some(ino));
                }
            }
        }
        Ok(None)
    }

    /// [`Dir::index_blocks`] of an htree directory; none of a linear one.
    fn index_blocks_if_htree(&self) -> Result<HashSet<u64>> {
        if self.inode.has_flag(flags::INDEX) {
            self.index_blocks()
        } else {
            Ok(HashSet::new())
        }
    }

    /// File blocks of the htree root and its interior index nodes,
    /// checksums verified.
    fn index_blocks(&self) -> Result<HashSet<u64>> {
        let mut set = HashSet::from([0u64]);
        let root = self
            .read(0)?
            .ok_or_else(|| self.bad_htree(0, CorruptKind::Hole))?;
        let info_len = usize::from(root[0x1D]);
        let levels = root[0x1E];
        if info_len != 8 {
            return Err(self.bad_htree(
                0,
                CorruptKind::OutOfRange {
                    field: "dx_root info_length",
                    value: info_len as u64,
                    min: 8,
                    end: 9,
                },
            ));
        }
        if levels >= MAX_DX_LEVELS {
            return Err(self.bad_htree(
                0,
                CorruptKind::CountOverMax {
                    field: "dx_root indirect_levels",
                    count: levels.into(),
                    max: u64::from(MAX_DX_LEVELS) - 1,
                },
            ));
        }
        let children = self.dx_children(0, &root, 0x18 + info_len)?;
        let mut frontier = children;
        for _ in 0..levels {
            let mut next = Vec::new();
            for lblk in frontier {
                if !set.insert(lblk) {
                    return Err(self.bad_htree(lblk, CorruptKind::Loop { block: lblk }));
                }
                let b = self
                    .read(lblk)?
                    .ok_or_else(|| self.bad_htree(lblk, CorruptKind::Hole))?;
                next.extend(self.dx_children(lblk, &b, 8)?);
            }
            frontier = next;
        }
        Ok(set)
    }

    /// Checks an index node's count/limit and checksum tail; returns the
    /// file blocks it points at.
    fn dx_children(&self, lblk: u64, b: &[u8], count_off: usize) -> Result<Vec<u64>> {
        let limit = usize::from(le16(b, count_off));
        let count = usize::from(le16(b, count_off + 2));
        let tail = if self.ctx.csum { 8 } else { 0 };
        let room = (b.len() - count_off - tail) / 8;
        let bad = |field, count, max| {
            self.bad_htree(
                lblk,
                if count == 0 {
                    CorruptKind::Zero { field }
                } else {
                    CorruptKind::CountOverMax {
                        field,
                        count: count as u64,
                        max: max as u64,
                    }
                },
            )
        };
        if count == 0 || count > limit {
            return Err(bad("dx count", count, limit));
        }
        if limit > room {
            return Err(bad("dx limit", limit, room));
        }
        if self.ctx.csum {
            let t = count_off + limit * 8;
            // The tail is covered whole, its checksum field as zeroes.
            let mut c = chksum(self.inode.csum_seed, &b[..count_off + count * 8]);
            c = chksum(c, &b[t..t + 4]);
            c = chksum(c, &[0; 4]);
            let want = le32(b, t + 4);
            if c != want {
                return Err(self.bad_htree(
                    lblk,
                    CorruptKind::ChecksumMismatch {
                        on_disk: want,
                        computed: c,
                        bits: 32,
                    },
                ));
            }
        }
        let nblocks = self.inode.size.div_ceil(u64::from(self.ctx.block_size));
        (0..count)
            .map(|i| {
                let blk = u64::from(le32(b, count_off + 8 * i + 4) & 0x0FFF_FFFF);
                if blk >= nblocks {
                    return Err(self.bad_htree(
                        lblk,
                        CorruptKind::OutOfRange {
                            field: "dx_entry block",
                            value: blk,
                            min: 0,
                            end: nblocks,
                        },
                    ));
                }
                Ok(blk)
            })
            .collect()
    }

    fn rec_len(&self, raw: u16) -> usize {
        let bs = self.ctx.block_size as usize;
        if bs >= 65536 && (raw == 0 || raw == 65535) {
            return bs;
        }
        usize::from(raw & 65532) | (usize::from(raw & 3) << 16)
    }

    fn scan_leaf(&self, lblk: u64, b: &[u8], name: &[u8]) -> Result<Option<u32>> {
        let mut found = None;
        self.walk_leaf(lblk, b, &mut |ino, _, n| {
            if n == name {
                found = Some(ino);
            }
            found.is_some()
        })?;
        Ok(found)
    }

    /// Every entry of the directory (live ones: inode != 0), leaf by leaf
    /// in block order, `.` and `..` included.
    pub(crate) fn entries(&self) -> Result<Vec<DirEntry>> {
        let bs = u64::from(self.ctx.block_size);
        let nblocks = self.inode.size.div_ceil(bs);
        let index_blocks = self.index_blocks_if_htree()?;
        let mut out = Vec::new();
        for e in self.extents.iter().filter(|e| !e.unwritten) {
            for lblk in e.lblk..e.end().min(nblocks) {
                let Some(b) = self.read(lblk)? else { continue };
                if index_blocks.contains(&lblk) {
                    // The htree root holds `.` and `..` (fake entries).
                    if lblk == 0 && b.len() >= 24 {
                        out.push(DirEntry {
                            name: b".".to_vec(),
                            ino: le32(&b, 0),
                            file_type: 2,
                        });
                        out.push(DirEntry {
                            name: b"..".to_vec(),
                            ino: le32(&b, 12),
                            file_type: 2,
                        });
                    }
                    continue;
                }
                self.walk_leaf(lblk, &b, &mut |ino, ft, name| {
                    out.push(DirEntry {
                        name: name.to_vec(),
                        ino,
                        file_type: ft,
                    });
                    false
                })?;
            }
        }
        Ok(out)
    }

    /// Calls `f(ino, file_type, name)` for each live entry of leaf `b` until
    /// it returns true; checks every record.
    fn walk_leaf(
        &self,
        lblk: u64,
        b: &[u8],
        f: &mut dyn FnMut(u32, u8, &[u8]) -> bool,
    ) -> Result<()> {
        let end = if self.ctx.csum {
            self.verify_leaf(lblk, b)?
        } else {
            b.len()
        };
        let mut off = 0usize;
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
            let ino = le32(b, off);
            let rec_len = self.rec_len(le16(b, off + 4));
            let name_len = if self.filetype {
                usize::from(b[off + 6])
            } else {
                usize::from(le16(b, off + 6))
            };
            if rec_len < 12
                || !rec_len.is_multiple_of(4)
                || off + rec_len > end
                || 8 + name_len > rec_len
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
            let ft = if self.filetype { b[off + 7] } else { 0 };
            if ino != 0 && f(ino, ft, &b[off + 8..off + 8 + name_len]) {
                return Ok(());
            }
            off += rec_len;
        }
        Ok(())
    }

    /// Verifies the 12-byte checksum tail of a leaf; returns where the
    /// entries end.
    fn verify_leaf(&self, lblk: u64, b: &[u8]) -> Result<usize> {
        let t = b.len() - 12;
        let is_tail = le32(b, t) == 0 && le16(b, t + 4) == 12 && b[t + 6] == 0 && b[t + 7] == 0xDE;
        if !is_tail {
            return Err(self.bad_block(lblk, CorruptKind::NoChecksumTail));
        }
        let want = le32(b, t + 8);
        let got = chksum(self.inode.csum_seed, &b[..t]);
        if want != got {
            return Err(self.bad_block(
                lblk,
                CorruptKind::ChecksumMismatch {
                    on_disk: want,
                    computed: got,
                    bits: 32,
                },
            ));
        }
        Ok(t)
    }
}
