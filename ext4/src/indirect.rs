//! Block maps of non-extent (ext2/ext3-style) files, read into the same
//! extent list the extent tree gives, so such files can be read and
//! looked up; bufwrite never writes them (see IOMAP_GAPS.md).

use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::extent::{Extent, TreeCtx};
use crate::inode::Inode;
use crate::util::{le32, read_meta};
use std::collections::HashSet;

/// Reads the block map of `inode` up to its i_size. Runs of contiguous
/// blocks become one extent; absent blocks are holes.
pub(crate) fn load(ctx: &TreeCtx<'_>, inode: &Inode) -> Result<Vec<Extent>> {
    let bs = u64::from(ctx.block_size);
    let nblocks = inode.size.div_ceil(bs);
    let mut m = Map {
        ctx,
        ino: inode.ino,
        per: bs / 4,
        nblocks,
        visited: HashSet::new(),
        out: Vec::new(),
    };
    for i in 0..12u64 {
        let b = le32(&inode.block, (i as usize) * 4);
        m.push(i, u64::from(b))?;
    }
    let mut base = 12u64;
    for level in 1..=3u32 {
        if base >= nblocks {
            break;
        }
        let root = u64::from(le32(&inode.block, 48 + 4 * (level as usize - 1)));
        m.walk(root, level, base)?;
        base = base.saturating_add(m.per.saturating_pow(level));
    }
    Ok(m.out)
}

struct Map<'a, 'b> {
    ctx: &'b TreeCtx<'a>,
    ino: u32,
    per: u64,
    nblocks: u64,
    visited: HashSet<u64>,
    out: Vec<Extent>,
}

impl Map<'_, '_> {
    fn outside(&self, structure: Structure, loc: Location, blk: u64) -> Ext4Error {
        Ext4Error::corrupt(
            structure,
            loc,
            CorruptKind::OutsideFilesystem {
                blocks: (blk, blk + 1),
                blocks_count: self.ctx.blocks_count,
            },
        )
    }

    fn push(&mut self, lblk: u64, pblk: u64) -> Result<()> {
        if pblk == 0 || lblk >= self.nblocks {
            return Ok(());
        }
        if pblk >= self.ctx.blocks_count {
            return Err(self.outside(
                Structure::BlockMap { ino: self.ino },
                Location::FileBlock(lblk),
                pblk,
            ));
        }
        if let Some(last) = self.out.last_mut() {
            if last.end() == lblk && last.pblk + last.len == pblk && last.len < 32768 {
                last.len += 1;
                return Ok(());
            }
        }
        self.out.push(Extent {
            lblk,
            len: 1,
            pblk,
            unwritten: false,
        });
        Ok(())
    }

    /// Walks an indirect block of `level` (1: points at data blocks)
    /// covering file blocks from `base`.
    fn walk(&mut self, blk: u64, level: u32, base: u64) -> Result<()> {
        if blk == 0 || base >= self.nblocks {
            return Ok(());
        }
        let structure = Structure::IndirectBlock { ino: self.ino };
        if blk >= self.ctx.blocks_count {
            return Err(self.outside(structure, Location::FileBlock(base), blk));
        }
        if !self.visited.insert(blk) {
            return Err(Ext4Error::corrupt(
                structure,
                Location::Block(blk),
                CorruptKind::Loop { block: blk },
            ));
        }
        let bs = self.ctx.block_size as usize;
        let b = read_meta(
            self.ctx.dev,
            structure,
            blk * u64::from(self.ctx.block_size),
            bs,
        )?;
        let span = self.per.saturating_pow(level - 1);
        for i in 0..self.per {
            let child = u64::from(le32(&b, (i * 4) as usize));
            let at = base.saturating_add(i.saturating_mul(span));
            if level == 1 {
                self.push(at, child)?;
            } else {
                self.walk(child, level - 1, at)?;
            }
        }
        Ok(())
    }
}
