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
/// File block numbers are 32 bits: no extent may end past 2^32.
const MAX_FILE_BLOCKS: u64 = 1 << 32;

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
            return Err(self.bad(
                loc,
                format!(
                    "bad magic {:#06x} in the extent header (expected {EXT_MAGIC:#06x})",
                    le16(b, 0)
                ),
            ));
        }
        let (entries, max, depth) = (le16(b, 2), le16(b, 4), le16(b, 6));
        let cap = (b.len() - 12) / 12;
        if usize::from(max) > cap {
            return Err(self.bad(
                loc,
                format!("header max of {max} entries does not fit: the node has room for {cap}"),
            ));
        }
        if entries > max {
            return Err(self.bad(
                loc,
                format!("entry count {entries} over the header's max of {max}"),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(self.bad(loc, format!("depth {depth} over the limit of {MAX_DEPTH}")));
        }
        if let Some(want) = want_depth.filter(|&d| d != depth) {
            return Err(self.bad(
                loc,
                format!("depth {depth} where the index above promised {want}"),
            ));
        }
        let what = if depth == 0 { "extent" } else { "index entry" };
        let mut prev_end = lo;
        for i in 0..usize::from(entries) {
            let e = &b[12 + 12 * i..24 + 12 * i];
            let start = u64::from(le32(e, 0));
            let next = if i + 1 < usize::from(entries) {
                u64::from(le32(&b[24 + 12 * i..], 0))
            } else {
                hi
            };
            if start < prev_end {
                let detail = if i == 0 {
                    format!(
                        "{what} 0 starts at file block {start}, before file block {lo} where \
                         the index above says this node begins"
                    )
                } else if depth == 0 {
                    format!(
                        "extent {i} starts at file block {start}, before the end of extent {} \
                         (file block {prev_end}): extents overlap or are unsorted",
                        i - 1
                    )
                } else {
                    format!(
                        "index entry {i} starts at file block {start}, not after index entry {} \
                         (file block {prev_end}): the index is unsorted",
                        i - 1
                    )
                };
                return Err(self.bad(loc, detail));
            }
            if start >= hi {
                return Err(self.bad(
                    loc,
                    format!(
                        "{what} {i} starts at file block {start}, at or past file block {hi} \
                         where the next entry of the index above begins"
                    ),
                ));
            }
            // An index entry's range ends where the next one starts; a
            // leaf's overlap with the next extent is caught on the next
            // round, against prev_end.
            if depth > 0 && next <= start {
                return Err(self.bad(
                    loc,
                    format!(
                        "index entry {} starts at file block {next}, not after index entry {i} \
                         at file block {start}: the index is unsorted or has duplicates",
                        i + 1
                    ),
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
        let detail = if len == 0 {
            Some(format!("extent {i} at file block {lblk} has length 0"))
        } else if end > MAX_FILE_BLOCKS {
            Some(format!(
                "extent {i} ends at file block {end}, past the {MAX_FILE_BLOCKS} blocks a file can have"
            ))
        } else if end > hi {
            Some(format!(
                "extent {i} covers file blocks {lblk}..{end}, past file block {hi} where the next \
                 entry of the index above begins"
            ))
        } else if pblk == 0 {
            Some(format!(
                "extent {i} maps file block {lblk} to device block 0 (the boot block)"
            ))
        } else if pblk
            .checked_add(len)
            .is_none_or(|p| p > self.ctx.blocks_count)
        {
            Some(format!(
                "extent {i} maps file blocks {lblk}..{end} to device blocks {pblk}..{}, past the \
                 filesystem's {} blocks",
                pblk.saturating_add(len),
                self.ctx.blocks_count
            ))
        } else {
            None
        };
        if let Some(detail) = detail {
            return Err(self.bad(loc, detail));
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
        parent: &str,
        i: usize,
        depth: u16,
        lo: u64,
        hi: u64,
    ) -> Result<()> {
        if blk == 0 || blk >= self.ctx.blocks_count {
            return Err(self.bad(
                parent,
                format!(
                    "index entry {i} points at block {blk}, outside the filesystem's {} blocks",
                    self.ctx.blocks_count
                ),
            ));
        }
        if !self.visited.insert(blk) {
            return Err(self.bad(
                parent,
                format!(
                    "index entry {i} points at block {blk}, which the tree already reached: \
                     the tree loops or shares a block"
                ),
            ));
        }
        let loc = format!("block {blk}");
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
            return Err(self.bad(
                loc,
                format!(
                    "bad magic {:#06x} in the extent header (expected {EXT_MAGIC:#06x}), or its \
                     max of {max} entries leaves no room for the checksum",
                    le16(b, 0)
                ),
            ));
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
