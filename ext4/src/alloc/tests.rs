//! Allocator tests on images made by mkfs.ext4, judged by e2fsck -fn and
//! by reloading what was committed (which verifies every checksum).

use super::*;
use crate::error::Structure;
use bufwrite_engine::device::mem::Mem;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use bufwrite_testkit::e2fs::{fsck, mkfs};

fn open(img: &Path) -> Mem {
    Mem::from_bytes(std::fs::read(img).unwrap(), 512)
}

fn save(dev: &Mem, img: &Path) {
    let mut buf = vec![0u8; dev.size() as usize];
    dev.read_at(0, &mut buf).unwrap();
    std::fs::write(img, buf).unwrap();
}

/// Edits the bytes at `off` in place (through the aligned sector).
fn poke(dev: &Mem, off: u64, f: impl FnOnce(&mut [u8])) {
    let base = off - off % 512;
    let mut sec = vec![0u8; 1024];
    dev.read_at(base, &mut sec).unwrap();
    f(&mut sec[(off - base) as usize..]);
    dev.write_at(base, &sec).unwrap();
}

fn load(dev: &Mem) -> (Superblock, Allocator) {
    let sb = Superblock::read(dev).unwrap();
    let a = Allocator::load(dev, &sb).unwrap();
    (sb, a)
}

fn commit(dev: &Mem, sb: &Superblock, txn: Transaction) {
    txn.commit(dev, sb.block_size).unwrap();
}

/// The numbers listed after `label` in e2fsck's output (" -(10--12) -15"
/// or "+..."), with their sign.
fn differences(out: &str, label: &str) -> BTreeSet<(char, u64)> {
    let mut set = BTreeSet::new();
    let Some(at) = out.find(label) else {
        return set;
    };
    let line = out[at + label.len()..].lines().next().unwrap_or("");
    for tok in line.split_whitespace() {
        let sign = tok.chars().next().unwrap();
        let body = tok[1..].trim_start_matches('(').trim_end_matches(')');
        let (a, b) = match body.split_once("--") {
            Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
            None => {
                let a = body.parse::<u64>().unwrap();
                (a, a)
            }
        };
        for n in a..=b {
            set.insert((sign, n));
        }
    }
    set
}

/// Configurations: block size, -O features, extra mkfs arguments.
const CONFIGS: &[(u32, &str, &[&str])] = &[
    (1024, "", &["-N", "512"]),
    (4096, "", &["-g", "2048", "-E", "lazy_itable_init=1"]),
    (
        4096,
        "^metadata_csum,uninit_bg",
        &["-g", "2048", "-N", "256"],
    ),
    (
        1024,
        "^metadata_csum,uninit_bg,^64bit",
        &["-E", "lazy_itable_init=1"],
    ),
    (4096, "^64bit", &["-g", "1024"]),
    (1024, "^flex_bg", &["-N", "300"]),
    (4096, "^metadata_csum,^uninit_bg", &["-g", "2048"]),
    (1024, "^metadata_csum,^uninit_bg,^flex_bg,^64bit", &[]),
];

/// Allocates blocks (at goals in every group, so BLOCK_UNINIT groups are
/// materialised) and inodes (files and directories, in several groups),
/// commits, checks e2fsck reports exactly those as bitmap differences
/// and nothing about checksums, flags or padding; frees them all,
/// commits, and checks e2fsck is clean and the counts are back.
#[test]
fn alloc_free_fsck_every_config() {
    let dir = tempfile::tempdir().unwrap();
    for (n, &(bs, features, extra)) in CONFIGS.iter().enumerate() {
        let img = mkfs(dir.path(), &format!("c{n}.img"), bs, features, 32, extra);
        let what = format!("{bs} {features} {extra:?}");
        let dev = open(&img);
        let (sb, mut a) = load(&dev);
        let (fb0, fi0) = (a.free_blocks(), a.free_inodes());
        let groups = sb.group_count();
        assert!(groups >= 4, "{what}: {groups} groups");
        let flagged = |a: &Allocator, f: u16| a.groups.iter().filter(|g| g.flags & f != 0).count();
        if a.group_csum {
            // The point of these configurations: uninitialised groups to materialise.
            assert!(flagged(&a, BG_BLOCK_UNINIT) > 0, "{what}");
            assert!(flagged(&a, BG_INODE_UNINIT) > 0, "{what}");
        }
        let mut txn = Transaction::new();
        let mut runs = Vec::new();
        for g in 0..groups {
            let goal = u64::from(sb.first_data_block) + g * u64::from(sb.blocks_per_group) + 7;
            let (s, l) = a.alloc_blocks(&dev, goal, 5, &mut txn).unwrap();
            assert!((1..=5).contains(&l), "{what}");
            runs.push((s, l));
        }
        // A long one and one at a goal past the end.
        runs.push(a.alloc_blocks(&dev, 0, 300, &mut txn).unwrap());
        runs.push(a.alloc_blocks(&dev, u64::MAX, 1, &mut txn).unwrap());
        let mut inos = Vec::new();
        let ipg = sb.inodes_per_group;
        for g in 0..groups as u32 {
            let parent = g * ipg + 1;
            inos.push((
                a.alloc_inode(&dev, parent, g % 2 == 0, &mut txn).unwrap(),
                g % 2 == 0,
            ));
        }
        inos.push((a.alloc_inode(&dev, 2, false, &mut txn).unwrap(), false));
        // Every group got a block and an inode: no group is uninitialised now.
        assert_eq!(flagged(&a, BG_BLOCK_UNINIT | BG_INODE_UNINIT), 0, "{what}");
        let used: u64 = runs.iter().map(|r| r.1).sum();
        assert_eq!(a.free_blocks(), fb0 - used, "{what}");
        assert_eq!(a.free_inodes(), fi0 - inos.len() as u64, "{what}");
        for &(ino, _) in &inos {
            assert!(ino >= sb.first_ino, "{what}: {ino}");
        }
        commit(&dev, &sb, txn);
        // Reloading verifies every checksum written and the counts.
        let (_, mut b) = load(&dev);
        assert_eq!(b.free_blocks(), a.free_blocks(), "{what}");
        assert_eq!(b.free_inodes(), a.free_inodes(), "{what}");
        for &(s, l) in &runs {
            for blk in s..s + l {
                assert!(b.is_allocated(&dev, blk).unwrap(), "{what}: {blk}");
            }
        }
        save(&dev, &img);
        let (ok, out) = fsck(&img);
        assert!(!ok, "{what}: leaked blocks must show:\n{out}");
        let want: BTreeSet<(char, u64)> = runs
            .iter()
            .flat_map(|&(s, l)| (s..s + l).map(|b| ('-', b)))
            .collect();
        assert_eq!(
            differences(&out, "Block bitmap differences:"),
            want,
            "{what}\n{out}"
        );
        let want: BTreeSet<(char, u64)> = inos.iter().map(|&(i, _)| ('-', u64::from(i))).collect();
        assert_eq!(
            differences(&out, "Inode bitmap differences:"),
            want,
            "{what}\n{out}"
        );
        for bad in [
            "checksum",
            "Padding",
            "UNINIT",
            "flag",
            "unused",
            "Superblock",
        ] {
            assert!(!out.contains(bad), "{what}: {bad}\n{out}");
        }
        // Free everything again (on the loaded copy: the state survives a reload).
        let mut txn = Transaction::new();
        for &(s, l) in &runs {
            b.free_blocks_range(&dev, s, l, &mut txn).unwrap();
        }
        for &(i, d) in &inos {
            b.free_inode(&dev, i, d, &mut txn).unwrap();
        }
        assert_eq!((b.free_blocks(), b.free_inodes()), (fb0, fi0), "{what}");
        commit(&dev, &sb, txn);
        let (_, c) = load(&dev);
        assert_eq!((c.free_blocks(), c.free_inodes()), (fb0, fi0), "{what}");
        let sbr = Superblock::read(&dev).unwrap();
        let raw = read_meta(&dev, Structure::Superblock, 1024, 1024).unwrap();
        assert_eq!(u64::from(le32(&raw, 0x0C)), fb0, "{what}");
        assert_eq!(u64::from(le32(&raw, 0x10)), fi0, "{what}");
        assert_eq!(sbr.blocks_count, sb.blocks_count);
        save(&dev, &img);
        let (ok, out) = fsck(&img);
        assert!(ok, "{what}: not clean after freeing:\n{out}");
    }
}

/// An inode allocated in a group whose block bitmap is uninitialised
/// materialises that bitmap too (as `__ext4_new_inode` does): e2fsck
/// then sees only the inode, and nothing after it is freed.
#[test]
fn inode_in_a_block_uninit_group() {
    let dir = tempfile::tempdir().unwrap();
    for (n, features) in ["", "^metadata_csum,uninit_bg"].iter().enumerate() {
        let img = mkfs(
            dir.path(),
            &format!("i{n}.img"),
            4096,
            features,
            32,
            &["-g", "2048"],
        );
        let dev = open(&img);
        let (sb, mut a) = load(&dev);
        let both = BG_BLOCK_UNINIT | BG_INODE_UNINIT;
        let g = a
            .groups
            .iter()
            .position(|g| g.flags & both == both)
            .expect("a group with both bitmaps uninitialised");
        let mut txn = Transaction::new();
        let ino = a
            .alloc_inode(&dev, g as u32 * sb.inodes_per_group + 1, true, &mut txn)
            .unwrap();
        assert_eq!((ino - 1) / sb.inodes_per_group, g as u32);
        assert_eq!(a.groups[g].flags & both, 0);
        assert_eq!(a.groups[g].used_dirs, 1);
        assert_eq!(a.groups[g].itable_unused, sb.inodes_per_group - 1);
        assert!(txn.get(a.groups[g].block_bitmap).is_some());
        commit(&dev, &sb, txn);
        save(&dev, &img);
        let (_, out) = fsck(&img);
        assert_eq!(
            differences(&out, "Inode bitmap differences:"),
            BTreeSet::from([('-', u64::from(ino))]),
            "{out}"
        );
        assert!(!out.contains("Block bitmap differences"), "{out}");
        for bad in ["checksum", "Padding", "UNINIT", "flag", "unused"] {
            assert!(!out.contains(bad), "{bad}\n{out}");
        }
        let (_, mut b) = load(&dev);
        let mut txn = Transaction::new();
        b.free_inode(&dev, ino, true, &mut txn).unwrap();
        commit(&dev, &sb, txn);
        save(&dev, &img);
        let (ok, out) = fsck(&img);
        assert!(ok, "{out}");
    }
}

/// Fills a tiny image; the next allocation is NoSpace and changes
/// nothing; a freed block is not reused before its free commits.
#[test]
fn enospc_and_busy_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        "tiny.img",
        1024,
        "^has_journal",
        2,
        &["-N", "32"],
    );
    let dev = open(&img);
    let (sb, mut a) = load(&dev);
    let fb0 = a.free_blocks();
    let mut txn = Transaction::new();
    let mut runs = Vec::new();
    while a.free_blocks() > 0 {
        runs.push(a.alloc_blocks(&dev, 0, 64, &mut txn).unwrap());
    }
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), fb0);
    commit(&dev, &sb, txn);
    let mut txn = Transaction::new();
    let e = a.alloc_blocks(&dev, 100, 1, &mut txn).unwrap_err();
    assert!(matches!(e, Ext4Error::NoSpace(_)), "{e}");
    assert!(txn.is_empty());
    assert_eq!(a.free_blocks(), 0);
    // No double allocation across the fill.
    let mut all = BTreeSet::new();
    for &(s, l) in &runs {
        for b in s..s + l {
            assert!(all.insert(b), "block {b} twice");
        }
    }
    // A freed block is busy until the free commits.
    let (s, l0) = runs[0];
    assert!(l0 >= 2, "{runs:?}");
    a.free_blocks_range(&dev, s, 1, &mut txn).unwrap();
    assert_eq!(a.free_blocks(), 1);
    assert!(!a.is_allocated(&dev, s).unwrap());
    let mut t2 = Transaction::new();
    assert!(matches!(
        a.alloc_blocks(&dev, s, 1, &mut t2),
        Err(Ext4Error::NoSpace(_))
    ));
    commit(&dev, &sb, txn);
    a.frees_committed();
    assert_eq!(a.alloc_blocks(&dev, 0, 8, &mut t2).unwrap(), (s, 1));
    commit(&dev, &sb, t2);
    // Freeing free or metadata blocks is refused, nothing changed.
    let mut txn = Transaction::new();
    let free_before = a.free_blocks();
    // Frees the block reused above and the next one of the first run.
    a.free_blocks_range(&dev, s, 2, &mut txn).unwrap();
    let e = a.free_blocks_range(&dev, s, 1, &mut txn).unwrap_err();
    assert!(
        matches!(e.as_corrupt().map(|c| c.kind()), Some(CorruptKind::AlreadyFree { number }) if *number == s),
        "{e}"
    );
    assert_eq!(a.free_blocks(), free_before + 2);
    let gd = a.groups[0].block_bitmap;
    let e = a.free_blocks_range(&dev, gd, 1, &mut txn).unwrap_err();
    assert!(
        matches!(
            e.as_corrupt().map(|c| c.kind()),
            Some(CorruptKind::Overlap { .. })
        ),
        "{e}"
    );
    assert!(a
        .free_blocks_range(&dev, sb.blocks_count - 1, 2, &mut txn)
        .is_err());
    assert_eq!(a.free_blocks(), free_before + 2);
    // Free the rest, commit: clean.
    for &(s0, l) in &runs {
        let (from, l) = if s0 == s { (s0 + 2, l - 2) } else { (s0, l) };
        a.free_blocks_range(&dev, from, l, &mut txn).unwrap();
    }
    commit(&dev, &sb, txn);
    assert_eq!(a.free_blocks(), fb0);
    // Inodes: fill, NoSpace, free.
    let fi0 = a.free_inodes();
    let mut txn = Transaction::new();
    let mut inos = Vec::new();
    for _ in 0..fi0 {
        inos.push(a.alloc_inode(&dev, 2, false, &mut txn).unwrap());
    }
    assert!(matches!(
        a.alloc_inode(&dev, 2, true, &mut txn),
        Err(Ext4Error::NoSpace(_))
    ));
    assert!(a.free_inode(&dev, 2, true, &mut txn).is_err());
    commit(&dev, &sb, txn);
    let mut txn = Transaction::new();
    for i in inos {
        a.free_inode(&dev, i, false, &mut txn).unwrap();
    }
    commit(&dev, &sb, txn);
    save(&dev, &img);
    let (ok, out) = fsck(&img);
    assert!(ok, "{out}");
}

/// A bitmap whose checksum does not match is refused when first used; a
/// descriptor with a bad crc16 is refused at load.
#[test]
fn corrupt_checksums_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "csum.img", 4096, "", 32, &[]);
    let dev = open(&img);
    let (sb, a) = load(&dev);
    let bb = a.groups[0].block_bitmap;
    let ib = a.groups[0].inode_bitmap;
    drop(a);
    // Flip a bit of a free block (the bitmap's last data byte).
    let flip = |blk: u64, byte: u64| poke(&dev, blk * 4096 + byte, |b| b[0] ^= 0x80);
    flip(bb, 1000);
    flip(ib, 0);
    let mut a = Allocator::load(&dev, &sb).unwrap();
    let mut txn = Transaction::new();
    let e = a.alloc_blocks(&dev, 1, 1, &mut txn).unwrap_err();
    let c = e.as_corrupt().expect("corrupt");
    assert_eq!(c.structure(), &Structure::BlockBitmap { group: 0 });
    assert!(
        matches!(c.kind(), CorruptKind::ChecksumMismatch { bits: 32, .. }),
        "{e}"
    );
    let e = a.alloc_inode(&dev, 2, false, &mut txn).unwrap_err();
    let c = e.as_corrupt().expect("corrupt");
    assert_eq!(c.structure(), &Structure::InodeBitmap { group: 0 });
    assert!(txn.is_empty());

    // crc16 descriptors.
    let img = mkfs(
        dir.path(),
        "crc16.img",
        1024,
        "^metadata_csum,uninit_bg",
        16,
        &[],
    );
    let dev = open(&img);
    let (sb, _) = load(&dev);
    let gdt = (SUPERBLOCK_OFFSET / 1024 + 1) * 1024;
    poke(&dev, gdt + u64::from(sb.desc_size) + 0x0C, |b| b[0] ^= 1);
    let e = Allocator::load(&dev, &sb).err().expect("refused");
    let c = e.as_corrupt().expect("corrupt");
    assert_eq!(c.structure(), &Structure::GroupDescriptor { group: 1 });
    assert!(
        matches!(c.kind(), CorruptKind::ChecksumMismatch { bits: 16, .. }),
        "{e}"
    );
}

/// A bitmap (without checksums to catch it) that shows metadata free, or
/// disagrees with its descriptor's count, is refused before anything is
/// handed out.
#[test]
fn inconsistent_bitmaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        "plain.img",
        1024,
        "^metadata_csum,^uninit_bg",
        16,
        &[],
    );
    let dev = open(&img);
    let (sb, a) = load(&dev);
    let (bb, it) = (a.groups[0].block_bitmap, a.groups[0].inode_table);
    drop(a);
    // The inode table's first block, marked free.
    let bit = it - u64::from(sb.first_data_block);
    poke(&dev, bb * 1024 + bit / 8, |b| b[0] &= !(1 << (bit % 8)));
    let mut a = Allocator::load(&dev, &sb).unwrap();
    let mut txn = Transaction::new();
    let e = a.alloc_blocks(&dev, it, 1, &mut txn).unwrap_err();
    assert!(
        matches!(e.as_corrupt().map(|c| c.kind()), Some(CorruptKind::MetadataMarkedFree { block }) if *block == it),
        "{e}"
    );
    assert!(a.is_allocated(&dev, it).unwrap_or(true));
    // Restore it, and mark a free data block used instead: the count is off.
    poke(&dev, bb * 1024 + bit / 8, |b| b[0] |= 1 << (bit % 8));
    let last = sb.blocks_per_group as u64 - 1;
    poke(&dev, bb * 1024 + last / 8, |b| b[0] |= 1 << (last % 8));
    let mut a = Allocator::load(&dev, &sb).unwrap();
    let e = a.alloc_blocks(&dev, 1, 1, &mut txn).unwrap_err();
    assert!(
        matches!(
            e.as_corrupt().map(|c| c.kind()),
            Some(CorruptKind::FreeCountMismatch { .. })
        ),
        "{e}"
    );
    assert!(txn.is_empty());
}

#[test]
fn refuses_what_it_cannot_keep_consistent() {
    let dir = tempfile::tempdir().unwrap();
    for (name, features) in [
        ("big.img", "bigalloc"),
        ("meta.img", "meta_bg,^resize_inode"),
    ] {
        let img = mkfs(dir.path(), name, 4096, features, 32, &[]);
        let dev = open(&img);
        let sb = Superblock::read(&dev).unwrap();
        let e = Allocator::load(&dev, &sb).err().expect("refused");
        assert!(matches!(e, Ext4Error::Unsupported(_)), "{e}");
    }
    // A free count larger than the group.
    let img = mkfs(
        dir.path(),
        "count.img",
        4096,
        "^metadata_csum,^uninit_bg",
        32,
        &[],
    );
    let dev = open(&img);
    let sb = Superblock::read(&dev).unwrap();
    poke(&dev, 4096 + 0x0C, |b| {
        b[..2].copy_from_slice(&0xFFFFu16.to_le_bytes())
    });
    let e = Allocator::load(&dev, &sb).err().expect("refused");
    assert!(
        matches!(
            e.as_corrupt().map(|c| c.kind()),
            Some(CorruptKind::CountOverMax {
                field: "bg_free_blocks_count",
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn goals() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "goal.img", 1024, "", 64, &["-G", "4"]);
    let dev = open(&img);
    let (sb, a) = load(&dev);
    let bpg = u64::from(sb.blocks_per_group);
    let ipg = sb.inodes_per_group;
    // Flex groups of 4: a file in group 5 aims at group 5 (4 + 1), a directory at 4.
    let ino = 5 * ipg + 3;
    assert_eq!(a.inode_goal(ino), 1 + 5 * bpg);
    assert_eq!(a.dir_goal(ino), 1 + 4 * bpg);
    assert_eq!(a.dir_goal(1), 1);
    // Past the last group it stays in range.
    assert!(a.inode_goal(sb.inodes_count) < sb.blocks_count);
}

/// One image for the property test, made once.
fn prop_image() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "prop.img",
            1024,
            "",
            8,
            &["-g", "1024", "-N", "256", "-E", "lazy_itable_init=1"],
        );
        std::fs::read(img).unwrap()
    })
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { goal: u64, want: u64 },
    Free { pick: usize, head: bool },
    AllocIno { parent: u32, dir: bool },
    FreeIno { pick: usize },
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..9000, 1u64..200).prop_map(|(goal, want)| Op::Alloc { goal, want }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, head)| Op::Free { pick, head }),
        2 => (0u32..300, any::<bool>()).prop_map(|(parent, dir)| Op::AllocIno { parent, dir }),
        1 => any::<usize>().prop_map(|pick| Op::FreeIno { pick }),
        1 => Just(Op::Commit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random allocations and frees against a model: no block handed out
    /// twice or while in use at the start, none reused before its free
    /// commits, counts always the start minus what the model holds, and
    /// the committed image reloads to the same counts.
    #[test]
    fn random_sequences_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let bytes = prop_image();
        let dev = Mem::from_bytes(bytes.to_vec(), 512);
        let init_dev = Mem::from_bytes(bytes.to_vec(), 512);
        let (sb, mut a) = load(&dev);
        let (_, mut init) = load(&init_dev);
        let (fb0, fi0) = (a.free_blocks(), a.free_inodes());
        let mut extents: Vec<(u64, u64)> = Vec::new();
        let mut owned = BTreeSet::new();
        let mut busy = BTreeSet::new();
        let mut inos: Vec<(u32, bool)> = Vec::new();
        let mut txn = Transaction::new();
        for op in ops {
            match op {
                Op::Alloc { goal, want } => match a.alloc_blocks(&dev, goal, want, &mut txn) {
                    Ok((s, l)) => {
                        prop_assert!((1..=want).contains(&l));
                        for b in s..s + l {
                            prop_assert!(!init.is_allocated(&init_dev, b).unwrap(), "{b} was in use");
                            prop_assert!(owned.insert(b), "{b} twice");
                            prop_assert!(!busy.contains(&b), "{b} reused before commit");
                        }
                        extents.push((s, l));
                    }
                    Err(Ext4Error::NoSpace(_)) => {
                        prop_assert_eq!(a.free_blocks(), fb0 - owned.len() as u64);
                    }
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::Free { pick, head } => {
                    if extents.is_empty() { continue; }
                    let i = pick % extents.len();
                    let (s, l) = extents[i];
                    // Free the whole extent, or its first half.
                    let n = if head && l > 1 { l / 2 } else { l };
                    a.free_blocks_range(&dev, s, n, &mut txn).unwrap();
                    for b in s..s + n {
                        owned.remove(&b);
                        busy.insert(b);
                    }
                    if n == l { extents.swap_remove(i); } else { extents[i] = (s + n, l - n); }
                }
                Op::AllocIno { parent, dir } => match a.alloc_inode(&dev, parent, dir, &mut txn) {
                    Ok(ino) => {
                        prop_assert!(ino >= sb.first_ino && ino <= sb.inodes_count);
                        prop_assert!(!inos.iter().any(|&(i, _)| i == ino), "inode {ino} twice");
                        inos.push((ino, dir));
                    }
                    Err(Ext4Error::NoSpace(_)) => prop_assert_eq!(a.free_inodes(), 0),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::FreeIno { pick } => {
                    if inos.is_empty() { continue; }
                    let (ino, dir) = inos.swap_remove(pick % inos.len());
                    a.free_inode(&dev, ino, dir, &mut txn).unwrap();
                }
                Op::Commit => {
                    std::mem::take(&mut txn).commit(&dev, sb.block_size).unwrap();
                    a.frees_committed();
                    busy.clear();
                    let (_, b) = load(&dev);
                    prop_assert_eq!(b.free_blocks(), a.free_blocks());
                    prop_assert_eq!(b.free_inodes(), a.free_inodes());
                }
            }
            prop_assert_eq!(a.free_blocks(), fb0 - owned.len() as u64);
            prop_assert_eq!(a.free_inodes(), fi0 - inos.len() as u64);
        }
        std::mem::take(&mut txn).commit(&dev, sb.block_size).unwrap();
        let mut txn = Transaction::new();
        for (s, l) in extents {
            a.free_blocks_range(&dev, s, l, &mut txn).unwrap();
        }
        for (ino, dir) in inos {
            a.free_inode(&dev, ino, dir, &mut txn).unwrap();
        }
        txn.commit(&dev, sb.block_size).unwrap();
        let (_, b) = load(&dev);
        prop_assert_eq!((b.free_blocks(), b.free_inodes()), (fb0, fi0));
    }
}
