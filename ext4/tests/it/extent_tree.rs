//! The extent-tree editor judged by e2fsprogs: a file's tree is grown to
//! depth 2 with many non-contiguous extents (some unwritten, some
//! converted, some punched), its blocks marked in use with debugfs, and
//! then `e2fsck -fn` must pass and `debugfs ex` must list the same
//! extents.

use crate::common::*;
use bufwrite_engine::BlockDevice;
use bufwrite_ext4::extent::TreeCtx;
use bufwrite_ext4::extent_tree::{ExtentTree, TreeBlocks};
use bufwrite_ext4::{Ext4, Extent, Result, Transaction};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// Tree blocks handed out from a list of free blocks; frees recorded.
struct Pool {
    free: Vec<u64>,
    live: BTreeSet<u64>,
}

impl TreeBlocks for Pool {
    fn alloc_tree_block(&mut self, _goal: u64, _txn: &mut Transaction) -> Result<u64> {
        let b = self.free.pop().expect("pool has blocks");
        self.live.insert(b);
        Ok(b)
    }
    fn free_tree_block(&mut self, blk: u64, _txn: &mut Transaction) -> Result<()> {
        assert!(self.live.remove(&blk));
        Ok(())
    }
    fn free_data(&mut self, _start: u64, _len: u64, _txn: &mut Transaction) -> Result<()> {
        // Data blocks are marked in the bitmap only at the end, for what
        // is still mapped: nothing to undo.
        Ok(())
    }
}

/// `debugfs ffb COUNT START`: free block numbers.
fn free_blocks(img: &Path, count: u64, start: u64) -> Vec<u64> {
    let out = debugfs_r(img, &format!("ffb {count} {start}"));
    let tail = out.split(':').nth(1).expect("ffb output");
    tail.split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

/// Free blocks of group `g` and of the filesystem, from dumpe2fs.
fn free_counts(img: &Path, g: u32) -> (u64, u64) {
    let out = std::process::Command::new("dumpe2fs")
        .arg(img)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let total = s
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut lines = s
        .lines()
        .skip_while(|l| !l.starts_with(&format!("Group {g}:")));
    lines.next().unwrap();
    let group = lines
        .find_map(|l| {
            l.trim()
                .split(" free blocks")
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap();
    (group, total)
}

/// Leaf extents listed by `debugfs ex`.
fn debugfs_extents(img: &Path, path: &str) -> Vec<Extent> {
    let out = debugfs_r(img, &format!("ex {path}"));
    let mut v = Vec::new();
    for l in out.lines().skip(1) {
        let w: Vec<&str> = l.split_whitespace().collect();
        // " 2/ 2  17/ 84  100 -  100  9000 -  9000  1 [Uninit]"
        let (Some(lv), Some(max)) = (w.first(), w.get(1)) else {
            continue;
        };
        let level: u32 = lv.trim_end_matches('/').parse().unwrap();
        let depth: u32 = max.parse().unwrap_or(0);
        if level != depth {
            continue;
        }
        let lblk: u64 = w[4].parse().unwrap();
        let pblk: u64 = w[7].parse().unwrap();
        let len: u64 = w[10].parse().unwrap();
        v.push(Extent {
            lblk,
            len,
            pblk,
            unwritten: w.get(11) == Some(&"Uninit"),
        });
    }
    v
}

#[test]
fn e2fsck_accepts_an_edited_depth_two_tree() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 1024u32;
    let img = mkfs(dir.path(), "tree.img", bs, "", 16, &[]);
    let host = dir.path().join("one");
    std::fs::write(&host, pattern(bs as usize, 9)).unwrap();
    debugfs_w(&img, &[format!("write {} /f", host.display())]);

    // Group 1 (blocks 8193..16383): data at every other free block, tree
    // blocks from the rest.
    let free: Vec<u64> = free_blocks(&img, 2400, 9000)
        .into_iter()
        .filter(|&b| b < 16384)
        .collect();
    assert!(free.len() > 2000);
    let data: Vec<u64> = free.iter().step_by(2).copied().take(1000).collect();
    let pool_blocks: Vec<u64> = free.iter().skip(1).step_by(2).copied().take(40).collect();
    let mut pool = Pool {
        free: pool_blocks,
        live: BTreeSet::new(),
    };

    let dev: Arc<dyn BlockDevice> = device(&img, "mem").unwrap();
    let fs = Ext4::open(dev.clone()).unwrap();
    let inode = fs.lookup("/f").unwrap();
    let sb = fs.superblock();
    let ctx = TreeCtx {
        dev: dev.as_ref(),
        block_size: sb.block_size,
        blocks_count: sb.blocks_count,
        csum: sb.has_metadata_csum(),
    };
    let mut t = ExtentTree::load(&ctx, &inode).unwrap();
    assert_eq!(t.extents().len(), 1);
    let mut txn = Transaction::new();
    // 1-block extents at file blocks 2, 4, 6, ...: never contiguous.
    for (i, &p) in data.iter().enumerate() {
        let lblk = 2 + 2 * i as u64;
        t.insert(lblk, 1, p, i % 3 == 0, &mut pool, &mut txn)
            .unwrap();
    }
    assert_eq!(t.depth(), 2);
    // Convert some unwritten ones, punch a run of them, trim the end.
    t.mark_written(2, 300, &mut pool, &mut txn).unwrap();
    t.remove(700, 1100, &mut pool, &mut txn).unwrap();
    t.remove(1900, u64::MAX, &mut pool, &mut txn).unwrap();
    assert_eq!(t.depth(), 2);
    txn.commit(dev.as_ref(), bs).unwrap();
    finish(&img, "mem", &dev);

    let extents = t.extents();
    let data_blocks: u64 = extents.iter().map(|e| e.len).sum();
    let mut cmds = Vec::new();
    let mut marked = 0u64;
    for e in &extents[1..] {
        cmds.push(format!("setb {} {}", e.pblk, e.len));
        marked += e.len;
    }
    for b in t.node_block_list() {
        cmds.push(format!("setb {b}"));
        marked += 1;
    }
    let (group_free, total_free) = free_counts(&img, 1);
    cmds.push(format!(
        "set_bg 1 free_blocks_count {}",
        group_free - marked
    ));
    cmds.push("set_bg 1 checksum calc".into());
    cmds.push(format!("ssv free_blocks_count {}", total_free - marked));
    let root = t.root();
    for i in 0..15 {
        let w = u32::from_le_bytes(root[4 * i..4 * i + 4].try_into().unwrap());
        cmds.push(format!("sif /f block[{i}] {w:#x}"));
    }
    // i_blocks in 512-byte units: data plus tree blocks.
    let sectors = (data_blocks + t.node_blocks()) * u64::from(bs / 512);
    cmds.push(format!("sif /f blocks {sectors}"));
    let last_written = extents
        .iter()
        .filter(|e| !e.unwritten)
        .map(|e| e.end())
        .max();
    cmds.push(format!(
        "sif /f size {}",
        last_written.unwrap() * u64::from(bs)
    ));
    debugfs_w(&img, &cmds);

    fsck_ok(&img);
    assert_eq!(debugfs_extents(&img, "/f"), extents);
    // And bufwrite's own reader agrees.
    let dev = device(&img, "mem").unwrap();
    let fs = Ext4::open(dev).unwrap();
    let inode = fs.lookup("/f").unwrap();
    assert_eq!(fs.map_inode(&inode).unwrap(), extents);
}
