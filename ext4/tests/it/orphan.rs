//! The orphan list: processed at a writable open after the journal replay,
//! as the kernel's mount and e2fsck process it; judged against e2fsck's
//! processing of a copy, block for block.

use super::common::*;
use super::journal::{assert_same_image_but, bufwrite_recover, e2fsck_replay};
use bufwrite_engine::device::mem::Mem;
use bufwrite_ext4::orphan::{Orphan, OrphanAction};
use bufwrite_ext4::Ext4;
use bufwrite_testkit::e2fs::{inode_number, make_orphans};
use std::path::Path;
use std::sync::Arc;

/// Byte range `(offset, len)` of inode `ino`'s record in `img` (debugfs
/// `imap`).
fn inode_record(img: &Path, ino: u32, bs: u64, inode_size: usize) -> (usize, usize) {
    let out = debugfs_r(img, &format!("imap <{ino}>"));
    let after = |key: &str| -> u64 {
        let rest = &out[out.find(key).unwrap_or_else(|| panic!("imap: {out}")) + key.len()..];
        let word = rest
            .split(|c: char| c == ',' || c.is_whitespace())
            .next()
            .unwrap();
        match word.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => word.parse().unwrap(),
        }
    };
    let at = after("located at block ") * bs + after("offset ");
    (at as usize, inode_size)
}

/// Zeroes `ranges` (byte offset, length) in the image file.
fn zero_ranges(img: &Path, ranges: &[(usize, usize)]) {
    let mut b = std::fs::read(img).unwrap();
    for &(o, n) in ranges {
        b[o..o + n].fill(0);
    }
    std::fs::write(img, b).unwrap();
}

/// The inodes e2fsck's output says it `verb`ed ("Clearing", "Truncating").
fn e2fsck_orphans(text: &str, verb: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{verb} orphaned inode ")))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// Checks that bufwrite finished the orphans e2fsck finished (`text`, its
/// output on the copy `e`) the same way, then zeroes in both images what
/// the two tools may leave differently where orphans were processed:
/// bufwrite commits through the journal (e2fsck writes in place), so the
/// journal's blocks; a freed inode's record (e2fsck keeps size and block
/// map, bufwrite clears them as the kernel's evict does); a truncated
/// record's extent slots past `eh_entries` (e2fsck leaves the removed
/// entries, bufwrite zeros) and so its checksum; the bytes past the size
/// in the last kept block (the kernel and bufwrite zero them, e2fsck
/// zeroes the first block it frees instead); and freed blocks.
pub(super) fn mask_orphan_differences(
    e: &Path,
    w: &Path,
    text: &str,
    orphans: &[Orphan],
    journal: &[(u64, u64)],
) {
    let of = |pick: fn(&OrphanAction) -> bool| -> Vec<u32> {
        orphans
            .iter()
            .filter(|o| pick(&o.action))
            .map(|o| o.ino)
            .collect()
    };
    let freed = of(|a| *a == OrphanAction::Freed);
    let truncated = of(|a| matches!(a, OrphanAction::Truncated { .. }));
    assert_eq!(
        freed,
        e2fsck_orphans(text, "Clearing"),
        "freed orphans; e2fsck: {text}"
    );
    assert_eq!(
        truncated,
        e2fsck_orphans(text, "Truncating"),
        "truncated orphans; e2fsck: {text}"
    );
    if orphans.is_empty() {
        return;
    }
    let eb = std::fs::read(e).unwrap();
    let bs = 1024u64 << u32::from_le_bytes(eb[1024 + 0x18..1024 + 0x1C].try_into().unwrap());
    let isz = usize::from(u16::from_le_bytes([eb[1024 + 0x58], eb[1024 + 0x59]]));
    let mut ranges: Vec<(usize, usize)> = journal
        .iter()
        .map(|&(p, n)| ((p * bs) as usize, (n * bs) as usize))
        .collect();
    for o in orphans {
        let (at, len) = inode_record(e, o.ino, bs, isz);
        let OrphanAction::Truncated { size } = o.action else {
            ranges.push((at, len));
            continue;
        };
        let entries = usize::from(u16::from_le_bytes([eb[at + 0x2A], eb[at + 0x2B]]));
        let used = 12 + 12 * entries.min(4);
        ranges.push((at + 0x28 + used, 60 - used));
        ranges.push((at + 0x7C, 2));
        ranges.push((at + 0x82, 2));
        let tail = (size % bs) as usize;
        let out = debugfs_r(e, &format!("bmap <{}> {}", o.ino, size / bs));
        if let Ok(pblk) = out.trim().parse::<usize>() {
            if tail != 0 && pblk != 0 {
                ranges.push((pblk * bs as usize + tail, bs as usize - tail));
            }
        }
    }
    zero_ranges(e, &ranges);
    zero_ranges(w, &ranges);
    let (x, y) = (std::fs::read(e).unwrap(), std::fs::read(w).unwrap());
    let b = bs as usize;
    let free: Vec<(usize, usize)> = (0..x.len() / b)
        .filter(|&i| x[i * b..(i + 1) * b] != y[i * b..(i + 1) * b])
        .filter(|&i| debugfs_r(e, &format!("testb {i}")).contains("not in use"))
        .map(|i| (i * b, b))
        .collect();
    zero_ranges(e, &free);
    zero_ranges(w, &free);
}

/// An image whose orphan list holds `a` (linked, size cut to `size` while
/// its blocks stay: an interrupted truncate) then `b` (unlinked while
/// open: no links, no entry), as a crash of the kernel leaves them.
fn orphan_image(dir: &Path, name: &str, bs: u32, features: &str, size: u64) -> std::path::PathBuf {
    orphan_image_of(dir, name, bs, features, size, 100_000, 0)
}

/// As [`orphan_image`], with `a` of `len` bytes and every other block of
/// its first `holes * 2` punched (many extents: a tree of depth 1 past
/// four).
fn orphan_image_of(
    dir: &Path,
    name: &str,
    bs: u32,
    features: &str,
    size: u64,
    len: usize,
    holes: u64,
) -> std::path::PathBuf {
    let img = mkfs(dir, name, bs, features, 32, &[]);
    let src = dir.join(format!("{name}.src"));
    std::fs::write(&src, pattern(len, 5)).unwrap();
    let mut cmds = vec![
        format!("write {} a", src.display()),
        format!("write {} b", src.display()),
    ];
    cmds.extend((0..holes).map(|i| format!("punch /a {} {}", 2 * i + 1, 2 * i + 1)));
    debugfs_w(&img, &cmds);
    make_orphans(&img, "/a", size, "/b");
    img
}

/// The orphan list of a crashed kernel, with and without a journal, on
/// 1 KiB and 4 KiB blocks, a truncate to a block boundary and inside a
/// block: bufwrite's open finishes it as e2fsck does (equal images but
/// for what the tools may leave differently, see
/// [`mask_orphan_differences`]), e2fsck -fn clean; the truncated file
/// reads its kept bytes, the freed one's blocks are free, and the image
/// takes new files.
#[test]
fn the_orphan_list_is_finished_as_e2fsck_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    for (bs, features) in [
        (4096u32, ""),
        (1024, "^metadata_csum,^64bit"),
        (4096, "^has_journal"),
    ] {
        for size in [5000u64, 8192] {
            let name = format!("orph-{bs}-{}-{size}.img", features.len());
            let img = orphan_image(dir.path(), &name, bs, features, size);
            let e = img.with_extension("e2fsck");
            let w = img.with_extension("bufwrite");
            std::fs::copy(&img, &e).unwrap();
            std::fs::copy(&img, &w).unwrap();
            let text = e2fsck_replay(&e);
            let got = bufwrite_recover(&w);
            assert!(got.report.is_none(), "{name}: nothing to replay");
            assert_eq!(got.orphans.len(), 2, "{name}: {:?}", got.orphans);
            assert_eq!(
                got.orphans[0].action,
                OrphanAction::Truncated { size },
                "{name}"
            );
            assert_eq!(got.orphans[1].action, OrphanAction::Freed, "{name}");
            fsck_ok(&w);
            assert_eq!(
                dump(&w, "/a"),
                pattern(100_000, 5)[..size as usize],
                "{name}"
            );
            // It takes writes now: a new file.
            {
                let bytes = std::fs::read(&w).unwrap();
                let dev = Arc::new(Mem::from_bytes(bytes, 512));
                let fs = Ext4::open(dev.clone()).unwrap();
                assert!(
                    fs.alloc_blockers().is_empty(),
                    "{name}: {:?}",
                    fs.alloc_blockers()
                );
                assert!(fs.orphans().is_empty(), "{name}: the list is empty now");
            }
            mask_orphan_differences(&e, &w, &text, &got.orphans, &got.journal);
            assert_same_image_but(&e, &w, &[(0xC, 4), (0x158, 4), (0x10, 4)]);
        }
    }
}

/// A corrupt orphan list (a head or a link out of range) or a read-only
/// open: the image opens, nothing is written, and allocation is refused
/// naming the orphan list.
#[test]
fn a_bad_orphan_list_refuses_allocation_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = orphan_image(dir.path(), "bad.img", 4096, "", 5000);
    let a = inode_number(&img, "/a");
    for (what, edit) in [
        ("link", format!("sif <{a}> dtime 4000000")),
        ("head", "ssv last_orphan 5".to_string()),
    ] {
        let bad = dir.path().join(format!("bad-{}.img", what.len()));
        std::fs::copy(&img, &bad).unwrap();
        debugfs_w(&bad, &[edit]);
        let before = std::fs::read(&bad).unwrap();
        let dev = Arc::new(Mem::from_bytes(before.clone(), 512));
        let fs = Ext4::open(dev.clone()).unwrap();
        let blockers = fs.alloc_blockers().join("; ");
        assert!(blockers.contains("orphan list"), "{what}: {blockers}");
        assert!(fs.orphans().is_empty(), "{what}");
        drop(fs);
        assert!(
            dev.snapshot(0, before.len() as u64) == before,
            "{what}: the image was written"
        );
    }
    // Read-only: the list is left for a writable open.
    let before = std::fs::read(&img).unwrap();
    let dev = Arc::new(Mem::from_bytes(before.clone(), 512));
    let fs = Ext4::open_read_only(dev.clone()).unwrap();
    assert!(fs.orphans().is_empty());
    drop(fs);
    assert!(
        dev.snapshot(0, before.len() as u64) == before,
        "a read-only open wrote"
    );
}

/// An orphan file with entries (`orphan_present`, what a kernel crash on
/// an `orphan_file` image leaves): allocation is refused, naming it.
#[test]
fn an_orphan_file_with_entries_refuses_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "of.img", 4096, "orphan_file", 32, &[]);
    let fs = Ext4::open(Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512))).unwrap();
    assert!(fs.alloc_blockers().is_empty(), "{:?}", fs.alloc_blockers());
    drop(fs);
    debugfs_w(&img, &["feature orphan_present".into()]);
    let fs = Ext4::open(Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512))).unwrap();
    let blockers = fs.alloc_blockers().join("; ");
    assert!(blockers.contains("orphan_present"), "{blockers}");
}
