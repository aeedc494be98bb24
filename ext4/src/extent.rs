//! Extent trees: the whole tree of one inode is read once into a sorted
//! list, so that mapping later answers from memory.

use crate::checksum::chksum;
use crate::error::{Ext4Error, Result};
use crate::inode::Inode;
use crate::util::{hilo, le16, le32, read_meta};
use bufwrite_engine::BlockDevice;
use std::collections::HashSet;

const EXT_MAGIC: u16 = 0xF30A;
/// The kernel never builds deeper trees; anything deeper is corrupt.
const MAX_DEPTH: u16 = 5;
/// Above this, an extent length means "unwritten" with length - 32768.
const INIT_MAX_LEN: u16 = 32768;

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
pub(crate) struct TreeCtx<'a> {
    pub dev: &'a dyn BlockDevice,
    pub block_size: u32,
    pub blocks_count: u64,
    pub csum: bool,
}

struct Walk<'a, 'b> {
    ctx: &'b TreeCtx<'a>,
    inode: &'b Inode,
    visited: HashSet<u64>,
    out: Vec<Extent>,
}

/// Reads the extent tree rooted in `inode.block` into a sorted,
/// non-overlapping list of extents.
pub(crate) fn load(ctx: &TreeCtx<'_>, inode: &Inode) -> Result<Vec<Extent>> {
    let mut w = Walk {
        ctx,
        inode,
        visited: HashSet::new(),
        out: Vec::new(),
    };
    let loc = format!("inode {} i_block", inode.ino);
    w.node(&inode.block, &loc, None, 0, u64::MAX)?;
    Ok(w.out)
}

impl Walk<'_, '_> {
    fn bad(&self, loc: &str, detail: String) -> Ext4Error {
        Ext4Error::corrupt(
            format!("extent tree of inode {}", self.inode.ino),
            loc,
            detail,
        )
    }

    /// Parses one node. `want_depth` is the depth the parent promised;
    /// `[lo, hi)` the file-block range the parent gave this node.
    fn node(
        &mut self,
        b: &[u8],
        loc: &str,
        want_depth: Option<u16>,
        lo: u64,
        hi: u64,
    ) -> Result<()> {
        if le16(b, 0) != EXT_MAGIC {
            return Err(self.bad(loc, format!("header magic {:#06x}", le16(b, 0))));
        }
        let (entries, max, depth) = (le16(b, 2), le16(b, 4), le16(b, 6));
        let cap = (b.len() - 12) / 12;
        if entries > max || usize::from(max) > cap {
            return Err(self.bad(loc, format!("{entries} entries, max {max}, room for {cap}")));
        }
        if depth > MAX_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(self.bad(loc, format!("depth {depth} (expected {want_depth:?})")));
        }
        let mut prev_end = lo;
        for i in 0..usize::from(entries) {
            let e = &b[12 + 12 * i..24 + 12 * i];
            let start = u64::from(le32(e, 0));
            let next = if i + 1 < usize::from(entries) {
                u64::from(le32(&b[24 + 12 * i..], 0))
            } else {
                hi
            };
            if start < prev_end || start >= hi || next <= start {
                return Err(self.bad(
                    loc,
                    format!("entry {i} starts at block {start} out of order"),
                ));
            }
            if depth == 0 {
                prev_end = self.leaf(e, loc, i, hi)?;
            } else {
                let child = hilo(u32::from(le16(e, 8)), le32(e, 4));
                self.child(child, depth - 1, start, next.min(hi))?;
                prev_end = start;
            }
        }
        Ok(())
    }

    fn leaf(&mut self, e: &[u8], loc: &str, i: usize, hi: u64) -> Result<u64> {
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
        let in_fs = pblk
            .checked_add(len)
            .is_some_and(|p| p <= self.ctx.blocks_count);
        if len == 0 || end > hi || !in_fs || pblk == 0 {
            return Err(self.bad(
                loc,
                format!("extent {i}: file blocks {lblk}+{len} at device block {pblk}"),
            ));
        }
        self.out.push(Extent {
            lblk,
            len,
            pblk,
            unwritten,
        });
        Ok(end)
    }

    fn child(&mut self, blk: u64, depth: u16, lo: u64, hi: u64) -> Result<()> {
        let loc = format!("block {blk}");
        if blk == 0 || blk >= self.ctx.blocks_count {
            return Err(self.bad(&loc, "index points outside the filesystem".into()));
        }
        if !self.visited.insert(blk) {
            return Err(self.bad(&loc, "block reached twice: the tree loops".into()));
        }
        let bs = self.ctx.block_size as usize;
        let structure = format!("extent block of inode {}", self.inode.ino);
        let b = read_meta(
            self.ctx.dev,
            &structure,
            blk * u64::from(self.ctx.block_size),
            bs,
        )?;
        if self.ctx.csum {
            self.verify(&b, &loc)?;
        }
        self.node(&b, &loc, Some(depth), lo, hi)
    }

    /// The checksum tail sits right after the `max` entries the header
    /// declares, and covers everything before it.
    fn verify(&self, b: &[u8], loc: &str) -> Result<()> {
        let max = usize::from(le16(b, 4));
        let tail = 12 + 12 * max;
        if le16(b, 0) != EXT_MAGIC || tail + 4 > b.len() {
            return Err(self.bad(loc, format!("header magic {:#06x}, max {max}", le16(b, 0))));
        }
        let want = le32(b, tail);
        let got = chksum(self.inode.csum_seed, &b[..tail]);
        if want != got {
            return Err(self.bad(
                loc,
                format!("checksum {want:#010x} on disk, computed {got:#010x}"),
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
