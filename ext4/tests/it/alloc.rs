//! Writes that allocate, judged by e2fsprogs: files created, appended,
//! truncated, punched, fallocated and unlinked through a `Mount` on every
//! path and policy, over images of several feature sets; after every fsync
//! `e2fsck -fn` is clean and `debugfs dump` equals the model, and after the
//! unlink the free counts are back where they started.

use crate::common::*;
use bufwrite_engine::{
    AllocPolicy, BlockDevice, Error, FallocMode, File, FileOptions, Mount, OpenFlags, OrderPolicy,
};
use bufwrite_ext4::Ext4;
use bufwrite_testkit::{apply_to, ops_strategy, Model, Op, OpWeights, Subject, TraceOp};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// mkfs feature sets the allocation tests run over: block size, `-O`
/// features, extra mkfs arguments.
const VARIANTS: &[(u32, &str, &[&str])] = &[
    (4096, "metadata_csum,64bit", &[]),
    (1024, "metadata_csum,64bit", &[]),
    (4096, "^metadata_csum,uninit_bg", &[]),
    (1024, "^metadata_csum,^64bit,^flex_bg", &[]),
    (4096, "^has_journal", &[]),
    (1024, "^metadata_csum,^uninit_bg,^64bit", &[]),
];

const CREATE: OpenFlags = OpenFlags {
    create: true,
    exclusive: true,
    truncate: false,
};

fn mount(dev: &Arc<dyn BlockDevice>, policy: AllocPolicy) -> (Mount, Arc<Ext4>) {
    let fs = Arc::new(Ext4::open_with(dev.clone(), policy).unwrap());
    (Mount::new(dev.clone(), fs.clone()), fs)
}

/// Free blocks and inodes in the superblock, as dumpe2fs reads them.
fn free_counts(img: &Path) -> (u64, u64) {
    let out = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs output:\n{text}"))
    };
    (field("Free blocks:"), field("Free inodes:"))
}

/// Writes a RAM device back to its image, so e2fsprogs sees what the
/// device holds.
fn sync_image(img: &Path, backend: &str, dev: &Arc<dyn BlockDevice>) {
    finish(img, backend, dev);
}

/// The scenario every path, policy and variant runs: create, append in
/// odd sizes, fsync, truncate down and up, fallocate, punch, overwrite the
/// unwritten part, fsync, reopen through a new mount, unlink.
fn scenario(bs: u32, features: &str, extra: &[&str], pname: &str, policy: AllocPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "a.img", bs, features, 32, extra);
    let before = free_counts(&img);
    let mkpath = paths().into_iter().find(|(n, _)| *n == pname).unwrap().1;
    let backend = "mem";
    let dev = device(&img, backend).unwrap();
    let opts = FileOptions {
        order: OrderPolicy::FromWrite { max_order: 9 },
    };
    let mut want: Vec<u8> = Vec::new();
    let check = |dev: &Arc<dyn BlockDevice>, want: &[u8], what: &str| {
        sync_image(&img, backend, dev);
        let (ok, text) = bufwrite_testkit::e2fs::fsck(&img);
        assert!(
            ok,
            "{pname} {policy} {features} {bs}: e2fsck after {what}:\n{text}"
        );
        let got = dump(&img, "/new");
        assert_eq!(got.len(), want.len(), "{pname} {policy} {what}: size");
        assert!(got == want, "{pname} {policy} {what}: contents differ");
    };
    {
        let (m, fs) = mount(&dev, policy);
        let f = m.open("/new", CREATE, mkpath(), opts).unwrap();
        // Appends of several sizes, some crossing blocks and folios.
        for (i, n) in [1000usize, 3000, 4096, 70_000, 5, 200_000]
            .iter()
            .enumerate()
        {
            let b = pattern(*n, 10 + i as u64);
            assert_eq!(f.write(&b).unwrap(), *n);
            want.extend_from_slice(&b);
        }
        f.fsync().unwrap();
        assert_eq!(fs.superblock().block_size, bs);
        check(&dev, &want, "appends");
        // A write far past EOF leaves a hole.
        let far = want.len() as u64 + 300_000;
        let b = pattern(777, 99);
        f.pwrite(far, &b).unwrap();
        want.resize(far as usize, 0);
        want.extend_from_slice(&b);
        f.fdatasync().unwrap();
        check(&dev, &want, "a write past a hole");
        // Truncate to a size inside a block, then grow again.
        let cut = 123_457u64;
        f.set_len(cut).unwrap();
        want.truncate(cut as usize);
        f.set_len(cut + 50_000).unwrap();
        want.resize((cut + 50_000) as usize, 0);
        f.fsync().unwrap();
        check(&dev, &want, "truncate down and up");
        // fallocate past EOF (size grows), keep_size past it, punch a hole
        // with partial edge blocks, then write into the unwritten part.
        let end = want.len() as u64;
        f.fallocate(end, 40_000, FallocMode::Allocate).unwrap();
        want.resize((end + 40_000) as usize, 0);
        let end = want.len() as u64;
        f.fallocate(end, 20_000, FallocMode::KeepSize).unwrap();
        f.fallocate(5000, 30_000, FallocMode::PunchHole).unwrap();
        want[5000..35_000].fill(0);
        let b = pattern(9000, 7);
        let at = end as usize - 12_000;
        f.pwrite(at as u64, &b).unwrap();
        want.resize(want.len().max(at + b.len()), 0);
        want[at..at + b.len()].copy_from_slice(&b);
        f.fsync().unwrap();
        check(
            &dev,
            &want,
            "fallocate, punch and writes into unwritten extents",
        );
        f.close().unwrap();
        m.sync().unwrap();
    }
    // A new mount reads it all back from the disk, and unlinks it.
    {
        let (m, _fs) = mount(&dev, policy);
        let f = m
            .open("/new", OpenFlags::default(), mkpath(), opts)
            .unwrap();
        let mut got = vec![0u8; want.len() + 10];
        assert_eq!(f.pread(0, &mut got).unwrap(), want.len());
        assert!(got[..want.len()] == want[..], "{pname} {policy}: reread");
        f.close().unwrap();
        m.unlink("/new").unwrap();
        m.sync().unwrap();
    }
    sync_image(&img, backend, &dev);
    fsck_ok(&img);
    assert_eq!(
        free_counts(&img),
        before,
        "{pname} {policy} {features} {bs}: free counts after unlink"
    );
}

#[test]
fn scenario_every_path_and_policy_4k_csum() {
    for (pname, _) in paths() {
        for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
            scenario(4096, "metadata_csum,64bit", &[], pname, policy);
        }
    }
}

#[test]
fn scenario_every_variant() {
    for &(bs, features, extra) in VARIANTS {
        for (pname, policy) in [
            ("iomap", AllocPolicy::Unwritten),
            ("bh-legacy", AllocPolicy::Ordered),
        ] {
            scenario(bs, features, extra, pname, policy);
        }
    }
}

/// Many files in one directory: a linear directory grows by blocks, and
/// an htree directory (made by e2fsck -D) splits leaves; every file reads
/// back and the image is fsck-clean, before and after unlinking half.
#[test]
fn many_files_in_linear_and_htree_directories() {
    let dir = tempfile::tempdir().unwrap();
    for (bs, htree) in [(1024u32, false), (1024, true), (4096, true)] {
        let img = if htree {
            // mkfs -d from a host directory of 200 names, then e2fsck -D
            // indexes the directory.
            let src = dir.path().join(format!("src-{bs}"));
            std::fs::create_dir_all(src.join("d")).unwrap();
            for i in 0..200 {
                std::fs::write(src.join("d").join(format!("seed-file-{i}")), b"").unwrap();
            }
            let s = src.display().to_string();
            let img = mkfs(dir.path(), "d.img", bs, "metadata_csum", 32, &["-d", &s]);
            let _ = std::process::Command::new("e2fsck")
                .args(["-fyD"])
                .arg(&img)
                .output()
                .unwrap();
            let out = debugfs_r(&img, "htree /d");
            assert!(out.contains("Root node dump"), "not an htree: {out}");
            img
        } else {
            let img = mkfs(dir.path(), "d.img", bs, "metadata_csum", 32, &[]);
            debugfs_w(&img, &["mkdir /d".to_string()]);
            img
        };
        fsck_ok(&img);
        let dev = device(&img, "mem").unwrap();
        let (m, _fs) = mount(&dev, AllocPolicy::Unwritten);
        let n = 300;
        for i in 0..n {
            let name = format!("/d/file-with-a-longish-name-{i}");
            let f = m
                .open(
                    &name,
                    CREATE,
                    Box::new(bufwrite_engine::IomapPath::new()),
                    FileOptions::default(),
                )
                .unwrap();
            f.write(&pattern(100 + i, i as u64)).unwrap();
            f.close().unwrap();
        }
        m.sync().unwrap();
        sync_image(&img, "mem", &dev);
        fsck_ok(&img);
        for i in (0..n).step_by(37) {
            let name = format!("/d/file-with-a-longish-name-{i}");
            assert!(dump(&img, &name) == pattern(100 + i, i as u64), "{name}");
        }
        for i in (0..n).step_by(2) {
            m.unlink(&format!("/d/file-with-a-longish-name-{i}"))
                .unwrap();
        }
        m.sync().unwrap();
        sync_image(&img, "mem", &dev);
        fsck_ok(&img);
        let ls = debugfs_r(&img, "ls /d");
        assert!(!ls.contains("file-with-a-longish-name-0 "), "{ls}");
        assert!(ls.contains("file-with-a-longish-name-1"), "{ls}");
        // Creating a name that exists is refused.
        let e = m
            .open(
                "/d/file-with-a-longish-name-1",
                CREATE,
                Box::new(bufwrite_engine::IomapPath::new()),
                FileOptions::default(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        std::fs::remove_file(&img).unwrap();
    }
}

/// ENOSPC: on a small image, appends fill the space; the write that
/// cannot reserve fails (short if part of it fit), everything acknowledged
/// before reads back after the fsync, the image is fsck-clean, and the
/// free counts come back exactly after the unlink.
#[test]
fn enospc_is_returned_at_write_time_and_nothing_acknowledged_is_lost() {
    for (pname, mkpath) in paths() {
        for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
            let dir = tempfile::tempdir().unwrap();
            let img = mkfs(
                dir.path(),
                "s.img",
                1024,
                "metadata_csum,^has_journal",
                4,
                &[],
            );
            let before = free_counts(&img);
            let dev = device(&img, "mem").unwrap();
            let (m, _fs) = mount(&dev, policy);
            let f = m
                .open("/fill", CREATE, mkpath(), FileOptions::default())
                .unwrap();
            let mut acked: Vec<u8> = Vec::new();
            let mut saw_short = false;
            let err = loop {
                let b = pattern(10_000, acked.len() as u64);
                match f.write(&b) {
                    Ok(n) if n == b.len() => acked.extend_from_slice(&b),
                    Ok(n) => {
                        saw_short = true;
                        acked.extend_from_slice(&b[..n]);
                    }
                    Err(e) => break e,
                }
                assert!(acked.len() < 8 << 20, "{pname}: the image never filled");
            };
            assert!(matches!(err, Error::NoSpace { .. }), "{pname}: {err}");
            let _ = saw_short;
            f.fsync().unwrap();
            f.close().unwrap();
            m.sync().unwrap();
            sync_image(&img, "mem", &dev);
            fsck_ok(&img);
            assert!(
                dump(&img, "/fill") == acked,
                "{pname} {policy}: acknowledged bytes"
            );
            m.unlink("/fill").unwrap();
            m.sync().unwrap();
            sync_image(&img, "mem", &dev);
            fsck_ok(&img);
            assert_eq!(free_counts(&img), before, "{pname} {policy}");
        }
    }
}

const MODEL_CAPACITY: u64 = 6 << 20;

fn model_weights() -> OpWeights {
    OpWeights {
        pwrite_near_max: 0,
        reopen: 1,
        ..OpWeights::MODEL
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random writes, appends, truncates, fallocates, punches, fsyncs,
    /// drop_caches and reopens on a new ext4 file, every path and policy,
    /// the RAM, pread/pwrite and io_uring backends, 1 and 4 KiB blocks: every read
    /// matches the model, and after every fsync e2fsck is clean and
    /// e2fsprogs reads the model's bytes.
    #[test]
    fn model_on_ext4(
        variant in 0usize..VARIANTS.len(),
        path in 0usize..4,
        ordered in any::<bool>(),
        backend in 0usize..3,
        ops in ops_strategy(MODEL_CAPACITY, model_weights(), 1..40),
    ) {
        let backend = ["mem", "sync", "uring"][backend];
        let (bs, features, extra) = VARIANTS[variant];
        let policy = if ordered { AllocPolicy::Ordered } else { AllocPolicy::Unwritten };
        let (pname, mkpath) = paths()[path];
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(dir.path(), "m.img", bs, features, 48, extra);
        // io_uring may be unavailable here (a sandbox): then the case is
        // the pread/pwrite one.
        let dev = device(&img, backend).or_else(|| device(&img, "sync")).unwrap();
        let (m, fs) = mount(&dev, policy);
        let opts = FileOptions { order: OrderPolicy::FromWrite { max_order: 9 } };
        drop(m.open("/f", CREATE, mkpath(), opts).unwrap());
        let mapper = bufwrite_engine::Filesystem::open(fs.as_ref(), "/f").unwrap();
        let cap = bufwrite_engine::Mapper::max_size(mapper.as_ref());
        let mut subject = Subject::new(dev.clone(), mapper, None, Box::new(mkpath), opts).unwrap();
        let mut model = Model::new(cap);
        for (i, op) in ops.iter().enumerate() {
            let r = apply_to(&mut subject, &mut model, op);
            prop_assert!(r.is_ok(), "{pname} {policy} {features} {bs}: op {i} {op}: {}", r.unwrap_err());
            if matches!(op, Op::Trace(TraceOp::Fsync | TraceOp::Fdatasync) | Op::Reopen) {
                sync_image(&img, backend, &dev);
                let out = std::process::Command::new("e2fsck").arg("-fn").arg(&img).output().unwrap();
                prop_assert!(out.status.success(), "{pname} {policy} {features} {bs}: e2fsck after op {i} {op}:\n{}",
                    String::from_utf8_lossy(&out.stdout));
                prop_assert!(dump(&img, "/f") == model.data(), "{pname} {policy}: dump after op {i} {op}");
            }
        }
        let _: &File = subject.file();
    }
}

/// `Block bitmap at N` of group 0, from dumpe2fs.
fn block_bitmap_of_group0(img: &Path) -> u64 {
    let out = std::process::Command::new("dumpe2fs")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block bitmap in dumpe2fs output"))
}

/// Allocation on an image whose bitmaps or descriptors are inconsistent is
/// refused with an error naming the structure, and nothing reaches the
/// device: a block bitmap failing its checksum, a descriptor claiming more
/// free blocks than its group has, a bitmap disagreeing with its count.
#[test]
fn allocation_refuses_inconsistent_bitmaps_and_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 3] = [
        ("bitmap checksum", "metadata_csum"),
        ("descriptor count", "^metadata_csum,^uninit_bg"),
        ("bitmap vs count", "^metadata_csum,^uninit_bg"),
    ];
    for (what, features) in cases {
        let img = mkfs(dir.path(), "bad.img", 4096, features, 16, &[]);
        // Block-aligned, so the write past EOF has no old EOF tail to zero.
        std::fs::write(dir.path().join("src"), pattern(12_288, 1)).unwrap();
        debugfs_w(
            &img,
            &[format!("write {} /f", dir.path().join("src").display())],
        );
        let mut bytes = std::fs::read(&img).unwrap();
        let bb = block_bitmap_of_group0(&img) as usize * 4096;
        match what {
            // Any byte of the bitmap: its checksum no longer matches.
            "bitmap checksum" => bytes[bb + 4000] ^= 0x01,
            // bg_free_blocks_count_lo of group 0 (descriptor table at block 1).
            "descriptor count" => {
                bytes[4096 + 0x0C..4096 + 0x0E].copy_from_slice(&0xFFF0u16.to_le_bytes())
            }
            // A free block (3200, of the 4096 the image has) marked used.
            _ => bytes[bb + 400] |= 0x01,
        }
        std::fs::write(&img, &bytes).unwrap();
        let dev = device(&img, "mem").unwrap();
        let result = (|| -> Result<(), String> {
            let fs = Ext4::open(dev.clone()).map_err(|e| e.to_string())?;
            let mapper = fs.open_file("/f").map_err(|e| e.to_string())?;
            let f = File::open(
                dev.clone(),
                mapper,
                Box::new(bufwrite_engine::IomapPath::new()),
                FileOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            f.pwrite(50_000, &pattern(5000, 2))
                .map_err(|e| e.to_string())?;
            let r = f.fsync().map_err(|e| format!("{e:#}"));
            f.set_writeback_on_drop(false);
            r
        })();
        let e = result.expect_err(what);
        assert!(
            e.contains("corrupt") || e.contains("bitmap") || e.contains("descriptor"),
            "{what}: {e}"
        );
        assert_eq!(dev.stats().writes, 0, "{what}: something was written");
    }
}
