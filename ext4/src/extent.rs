//! Extent trees: the whole tree of one inode is read once into a sorted
//! list, so that mapping later answers from memory.

use crate::checksum::chksum;
use crate::error::{CorruptKind, Ext4Error, Location, OverlapWith, Result, Structure};
use crate::inode::Inode;
use crate::util::{hilo, le16, le32, read_meta};
use bufwrite_engine::BlockDevice;
use std::collections::{HashMap, HashSet};

pub(crate) const EXT_MAGIC: u16 = 0xF30A;
/// The kernel never builds deeper trees; anything deeper is corrupt.
pub(crate) const MAX_DEPTH: u16 = 5;
/// Above this, an extent length means "unwritten" with length - 32768.
pub(crate) const INIT_MAX_LEN: u16 = 32768;
/// File block numbers are 32 bits: no extent may end past 2^32.
pub(crate) const MAX_FILE_BLOCKS: u64 = 1 << 32;

/// One leaf extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub lblk: u64,
    /// Length in blocks (>= 1).
    pub len: u64,
    /// First device block.
    pub pblk: u64,
    /// Allocated but not written: reads see zeroes.
    pub unwritten: bool,
}

impl Extent {
    /// One past the last file block.
    pub fn end(&self) -> u64 {
        self.lblk + self.len
    }
}

/// What the tree walk needs from the filesystem.
pub struct TreeCtx<'a> {
    /// The device the tree blocks are read from.
    pub dev: &'a dyn BlockDevice,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// Blocks in the filesystem (pointers at or past it are corrupt).
    pub blocks_count: u64,
    /// metadata_csum: tree blocks carry a checksum tail.
    pub csum: bool,
}

struct Walk<'a, 'b> {
    ctx: &'b TreeCtx<'a>,
    inode: &'b Inode,
    visited: HashSet<u64>,
    out: Vec<Extent>,
    /// When `Some`, every verified tree block read, by block number (for
    /// the extent-tree editor, which mirrors the nodes).
    nodes: Option<HashMap<u64, Vec<u8>>>,
}

/// Reads the extent tree rooted in `inode.block` into a sorted,
/// non-overlapping list of extents.
pub(crate) fn load(ctx: &TreeCtx<'_>, inode: &Inode) -> Result<Vec<Extent>> {
    let mut w = Walk {
        ctx,
        inode,
        visited: HashSet::new(),
        out: Vec::new(),
        nodes: None,
    };
    let loc = Location::IBlock { ino: inode.ino };
    w.node(&inode.block, loc, None, 0, u64::MAX)?;
    Ok(w.out)
}

/// Checks the tree as [`load`] does and returns every tree block (each
/// verified like the rest of the tree) by block number, so that an editor
/// can mirror the nodes without checking them a second time.
pub(crate) fn load_nodes(ctx: &TreeCtx<'_>, inode: &Inode) -> Result<HashMap<u64, Vec<u8>>> {
    let mut w = Walk {
        ctx,
        inode,
        visited: HashSet::new(),
        out: Vec::new(),
        nodes: Some(HashMap::new()),
    };
    let loc = Location::IBlock { ino: inode.ino };
    w.node(&inode.block, loc, None, 0, u64::MAX)?;
    Ok(w.nodes.unwrap_or_default())
}

/// Which part of a node an error is in.
#[derive(Clone, Copy)]
enum Part {
    Header,
    /// Entry `i`: an index entry above depth 0, an extent at depth 0.
    Entry(usize, u16),
    /// The block as a whole.
    Block,
}

impl Walk<'_, '_> {
    fn bad(&self, part: Part, loc: Location, kind: CorruptKind) -> Ext4Error {
        let ino = self.inode.ino;
        let structure = match part {
            Part::Header => Structure::ExtentHeader { ino },
            Part::Entry(entry, 0) => Structure::ExtentLeaf { ino, entry },
            Part::Entry(entry, _) => Structure::ExtentIndex { ino, entry },
            Part::Block => Structure::ExtentBlock { ino },
        };
        Ext4Error::corrupt(structure, loc, kind)
    }

    /// Parses one node. `want_depth` is the depth the parent promised;
    /// `[lo, hi)` the file-block range the parent gave this node.
    fn node(
        &mut self,
        b: &[u8],
        loc: Location,
        want_depth: Option<u16>,
        lo: u64,
        hi: u64,
    ) -> Result<()> {
        let header = |kind| self.bad(Part::Header, loc, kind);
        if le16(b, 0) != EXT_MAGIC {
            return Err(header(CorruptKind::BadMagic {
                expected: EXT_MAGIC.into(),
                found: le16(b, 0).into(),
            }));
        }
        let (entries, max, depth) = (le16(b, 2), le16(b, 4), le16(b, 6));
        let cap = (b.len() - 12) / 12;
        if usize::from(max) > cap {
            // The node (60-byte i_block or a block) has room for `cap`.
            return Err(header(CorruptKind::CountOverMax {
                field: "eh_max",
                count: max.into(),
                max: cap as u64,
            }));
        }
        if entries > max {
            return Err(header(CorruptKind::CountOverMax {
                field: "eh_entries",
                count: entries.into(),
                max: max.into(),
            }));
        }
        if depth > MAX_DEPTH {
            return Err(header(CorruptKind::CountOverMax {
                field: "eh_depth",
                count: depth.into(),
                max: MAX_DEPTH.into(),
            }));
        }
        if let Some(want) = want_depth.filter(|&d| d != depth) {
            return Err(header(CorruptKind::DepthMismatch {
                depth,
                promised: want,
            }));
        }
        let mut prev_end = lo;
        for i in 0..usize::from(entries) {
            let part = Part::Entry(i, depth);
            let e = &b[12 + 12 * i..24 + 12 * i];
            let start = u64::from(le32(e, 0));
            let next = if i + 1 < usize::from(entries) {
                u64::from(le32(&b[24 + 12 * i..], 0))
            } else {
                hi
            };
            if start < prev_end {
                let kind = if i == 0 {
                    CorruptKind::StartsBeforeParent {
                        start,
                        parent_start: lo,
                    }
                } else if depth == 0 {
                    CorruptKind::OverlapsPrevious {
                        start,
                        prev: i - 1,
                        prev_end,
                    }
                } else {
                    CorruptKind::Unsorted {
                        start,
                        prev: i - 1,
                        prev_start: prev_end,
                    }
                };
                return Err(self.bad(part, loc, kind));
            }
            if start >= hi {
                return Err(self.bad(
                    part,
                    loc,
                    CorruptKind::StartsPastParent {
                        start,
                        parent_end: hi,
                    },
                ));
            }
            // An index entry's range ends where the next one starts; a
            // leaf's overlap with the next extent is caught on the next
            // round, against prev_end.
            if depth > 0 && next <= start {
                return Err(self.bad(
                    Part::Entry(i + 1, depth),
                    loc,
                    CorruptKind::Unsorted {
                        start: next,
                        prev: i,
                        prev_start: start,
                    },
                ));
            }
            if depth == 0 {
                prev_end = self.leaf(e, loc, i, hi)?;
            } else {
                let child = hilo(u32::from(le16(e, 8)), le32(e, 4));
                self.child(child, loc, i, depth - 1, start, next.min(hi))?;
                prev_end = start;
            }
        }
        Ok(())
    }

    fn leaf(&mut self, e: &[u8], loc: Location, i: usize, hi: u64) -> Result<u64> {
        let lblk = u64::from(le32(e, 0));
        let raw_len = le16(e, 4);
        let (len, unwritten) = if raw_len > INIT_MAX_LEN {
            (raw_len - INIT_MAX_LEN, true)
        } else {
            (raw_len, false)
        };
        let pblk = hilo(u32::from(le16(e, 6)), le32(e, 8));
        let len = u64::from(len);
        let end = lblk + len;
        let device = (pblk, pblk.saturating_add(len));
        let kind = if len == 0 {
            Some(CorruptKind::ZeroLength { start: lblk })
        } else if end > MAX_FILE_BLOCKS {
            Some(CorruptKind::PastFileBlockLimit {
                end,
                limit: MAX_FILE_BLOCKS,
            })
        } else if end > hi {
            Some(CorruptKind::EndsPastParent {
                blocks: (lblk, end),
                parent_end: hi,
            })
        } else if pblk == 0 {
            Some(CorruptKind::Overlap {
                blocks: device,
                with: OverlapWith::BootBlock,
                with_blocks: (0, 1),
            })
        } else if pblk
            .checked_add(len)
            .is_none_or(|p| p > self.ctx.blocks_count)
        {
            Some(CorruptKind::OutsideFilesystem {
                blocks: device,
                blocks_count: self.ctx.blocks_count,
            })
        } else {
            None
        };
        if let Some(kind) = kind {
            return Err(self.bad(Part::Entry(i, 0), loc, kind));
        }
        self.out.push(Extent {
            lblk,
            len,
            pblk,
            unwritten,
        });
        Ok(end)
    }

    /// Follows index entry `i` of the node at `parent` to block `blk`.
    fn child(
        &mut self,
        blk: u64,
        parent: Location,
        i: usize,
        depth: u16,
        lo: u64,
        hi: u64,
    ) -> Result<()> {
        // `depth` is the child's; the entry is in an index node (depth >= 1).
        let part = Part::Entry(i, depth + 1);
        if blk == 0 {
            return Err(self.bad(
                part,
                parent,
                CorruptKind::Overlap {
                    blocks: (0, 1),
                    with: OverlapWith::BootBlock,
                    with_blocks: (0, 1),
                },
            ));
        }
        if blk >= self.ctx.blocks_count {
            return Err(self.bad(
                part,
                parent,
                CorruptKind::OutsideFilesystem {
                    blocks: (blk, blk + 1),
                    blocks_count: self.ctx.blocks_count,
                },
            ));
        }
        if !self.visited.insert(blk) {
            return Err(self.bad(part, parent, CorruptKind::Loop { block: blk }));
        }
        let loc = Location::Block(blk);
        let bs = self.ctx.block_size as usize;
        let b = read_meta(
            self.ctx.dev,
            Structure::ExtentBlock {
                ino: self.inode.ino,
            },
            blk * u64::from(self.ctx.block_size),
            bs,
        )?;
        if self.ctx.csum {
            self.verify(&b, loc)?;
        }
        self.node(&b, loc, Some(depth), lo, hi)?;
        if let Some(nodes) = self.nodes.as_mut() {
            nodes.insert(blk, b);
        }
        Ok(())
    }

    /// The checksum tail sits right after the `max` entries the header
    /// declares, and covers everything before it.
    fn verify(&self, b: &[u8], loc: Location) -> Result<()> {
        let max = usize::from(le16(b, 4));
        let tail = 12 + 12 * max;
        if le16(b, 0) != EXT_MAGIC {
            return Err(self.bad(
                Part::Header,
                loc,
                CorruptKind::BadMagic {
                    expected: EXT_MAGIC.into(),
                    found: le16(b, 0).into(),
                },
            ));
        }
        if tail + 4 > b.len() {
            // The header's max must leave room for the 4-byte tail.
            return Err(self.bad(
                Part::Header,
                loc,
                CorruptKind::CountOverMax {
                    field: "eh_max",
                    count: max as u64,
                    max: ((b.len() - 16) / 12) as u64,
                },
            ));
        }
        let want = le32(b, tail);
        let got = chksum(self.inode.csum_seed, &b[..tail]);
        if want != got {
            return Err(self.bad(
                Part::Block,
                loc,
                CorruptKind::ChecksumMismatch {
                    on_disk: want,
                    computed: got,
                    bits: 32,
                },
            ));
        }
        Ok(())
    }
}

/// Index of the extent containing file block `blk`, or `Err(i)` where `i`
/// is the first extent after it.
pub fn find(extents: &[Extent], blk: u64) -> std::result::Result<usize, usize> {
    let i = extents.partition_point(|e| e.end() <= blk);
    match extents.get(i) {
        Some(e) if e.lblk <= blk => Ok(i),
        _ => Err(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_in_sorted_extents() {
        let e = |lblk, len| Extent {
            lblk,
            len,
            pblk: 100,
            unwritten: false,
        };
        let v = [e(0, 2), e(5, 3)];
        assert_eq!(find(&v, 0), Ok(0));
        assert_eq!(find(&v, 1), Ok(0));
        assert_eq!(find(&v, 2), Err(1));
        assert_eq!(find(&v, 7), Ok(1));
        assert_eq!(find(&v, 8), Err(2));
        assert_eq!(find(&[], 3), Err(0));
    }
}
