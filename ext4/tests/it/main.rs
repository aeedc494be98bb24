//! ext4 integration tests: images made with mkfs.ext4 and debugfs (no root,
//! no mounts), overwritten through every path and backend, checked with
//! debugfs dump and e2fsck -fn.

mod alloc;
mod bad;
mod common;
mod crash;
mod dirs;
mod extent_tree;
mod fuzz;
mod gaps;
mod jcrash;
mod journal;
mod layout;
mod orphan;
mod root;
mod variants;

use bufwrite_engine::{File, FileOptions};
use bufwrite_ext4::{Ext4, Ext4Error};
use common::*;
use std::path::{Path, PathBuf};

/// The base image of one configuration and what its files hold.
struct Base {
    img: PathBuf,
    bs: u32,
    frag_blocks: u64,
}

/// Builds an image with a nested file, a fragmented file with a depth >= 2
/// extent tree, a large (htree) directory, a file with a hole and one with
/// an unwritten extent inside i_size.
fn build(dir: &Path, bs: u32, features: &str) -> Base {
    let name = format!("base-{bs}-{}.img", features.replace([',', '^'], "_"));
    let img = mkfs(dir, &name, bs, features, 64, &[]);
    let frag_blocks: u64 = if bs == 1024 { 800 } else { 3000 };
    let src = |name: &str, len: usize, seed: u64| {
        let p = dir.join(name);
        std::fs::write(&p, pattern(len, seed)).unwrap();
        p.display().to_string()
    };
    let mut cmds = vec![
        "mkdir /a".into(),
        "mkdir /a/b".into(),
        "mkdir /a/b/c".into(),
        format!("write {} /a/b/c/f", src("f", 300_000, 1)),
        format!(
            "write {} /frag",
            src("frag", (frag_blocks * u64::from(bs)) as usize, 2)
        ),
        format!("write {} /h", src("h", 40 * bs as usize, 3)),
        "punch /h 5 7".into(),
        format!("write {} /u", src("u", 40 * bs as usize, 4)),
        "punch /u 10 19".into(),
        "fallocate /u 10 19".into(),
        "mkdir /big".into(),
    ];
    for b in (1..frag_blocks).step_by(2) {
        cmds.push(format!("punch /frag {b} {b}"));
    }
    let small = src("small", 10, 5);
    for i in 0..400 {
        cmds.push(format!(
            "write {small} /big/a_rather_long_file_name_number_{i:05}"
        ));
    }
    cmds.push(format!("write {} /big/target", src("target", 50_000, 6)));
    debugfs_w(&img, &cmds);
    // e2fsck -D builds hashed indexes for the large directory.
    let out = std::process::Command::new("e2fsck")
        .arg("-fyD")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(8) < 4,
        "e2fsck -fyD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    fsck_ok(&img);
    Base {
        img,
        bs,
        frag_blocks,
    }
}

/// The writes applied to each target: (path, [(offset, len)]).
fn writes(base: &Base) -> Vec<(&'static str, Vec<(u64, usize)>)> {
    let bs = u64::from(base.bs);
    let mut frag = vec![(100, bs as usize - 200), (4 * bs, bs as usize)];
    frag.push(((base.frag_blocks - 2) * bs, bs as usize));
    frag.retain(|(o, _)| (o / bs) % 2 == 0);
    vec![
        (
            "/a/b/c/f",
            vec![(0, 5000), (12_345, 70_000), (299_000, 1000)],
        ),
        ("/frag", frag),
        ("/big/target", vec![(1000, 40_000), (49_999, 1)]),
        ("/h", vec![(bs + 7, 2 * bs as usize)]),
    ]
}

fn copy(base: &Base, dir: &Path, tag: &str) -> PathBuf {
    let p = dir.join(format!("{tag}.img"));
    std::fs::copy(&base.img, &p).unwrap();
    p
}

fn overwrite_everywhere(bs: u32, features: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = build(dir.path(), bs, features);
    check_layout(&base);
    for (pname, mkpath) in paths() {
        for backend in ["mem", "sync", "uring"] {
            let img = copy(&base, dir.path(), &format!("{pname}-{backend}"));
            let Some(dev) = device(&img, backend) else {
                eprintln!("skipping backend {backend}: not available here");
                continue;
            };
            let fs = Ext4::open(dev.clone()).unwrap();
            let mut models = Vec::new();
            for (path, ws) in writes(&base) {
                let mut model = dump(&base.img, path);
                let mapper = fs.open_file(path).unwrap();
                let file =
                    File::open(dev.clone(), mapper, mkpath(), FileOptions::default()).unwrap();
                for (i, &(off, len)) in ws.iter().enumerate() {
                    let data = pattern(len, 100 + i as u64);
                    assert_eq!(
                        file.pwrite(off, &data).unwrap(),
                        len,
                        "{pname} {backend} {path}"
                    );
                    model[off as usize..off as usize + len].copy_from_slice(&data);
                }
                file.fsync().unwrap();
                let mut back = vec![0u8; model.len()];
                file.drop_caches();
                assert_eq!(file.pread(0, &mut back).unwrap(), model.len());
                assert!(
                    back == model,
                    "{pname} {backend} {path}: pread differs from model"
                );
                models.push((path, model));
            }
            drop(fs);
            finish(&img, backend, &dev);
            drop(dev);
            for (path, model) in models {
                assert!(
                    dump(&img, path) == model,
                    "{pname} {backend} {path}: debugfs dump differs"
                );
            }
            fsck_ok(&img);
        }
    }
}

/// The images have what the tests claim: a depth >= 2 tree, an htree
/// directory, a hole and an unwritten extent; and our reads agree with
/// debugfs.
fn check_layout(base: &Base) {
    let stat = debugfs_r(&base.img, "stat /frag");
    let depth_line = stat
        .lines()
        .find(|l| l.contains("Level Entries"))
        .map(str::to_owned);
    let ex = debugfs_r(&base.img, "ex /frag");
    let levels = ex
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .split('/')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max();
    assert!(
        levels.unwrap_or(0) >= 2,
        "frag tree depth {levels:?}: {depth_line:?}\n{ex}"
    );
    let big = debugfs_r(&base.img, "stat /big");
    assert!(
        big.contains("Flags: 0x81000") || big.contains("Flags: 0x1000"),
        "no htree: {big}"
    );
    let dev = device(&base.img, "mem").unwrap();
    let fs = Ext4::open(dev.clone()).unwrap();
    for path in [
        "/a/b/c/f",
        "/frag",
        "/big/target",
        "/big/a_rather_long_file_name_number_00399",
        "/h",
        "/u",
    ] {
        let f = fs.open_file_read_only(path).unwrap();
        let model = dump(&base.img, path);
        let file = File::open(dev.clone(), f, paths()[0].1(), FileOptions::default()).unwrap();
        let mut buf = vec![0u8; model.len() + 10];
        let n = file.pread(0, &mut buf).unwrap();
        assert!(
            n == model.len() && buf[..n] == model[..],
            "read of {path} differs from debugfs"
        );
    }
    let f = fs.open_file_read_only("/u").unwrap();
    assert!(
        f.extents().iter().any(|e| e.unwritten),
        "no unwritten extent in /u"
    );
    assert!(matches!(
        fs.open_file("/nope/x"),
        Err(Ext4Error::NotFound(_))
    ));
    assert!(matches!(fs.open_file("/a/b"), Err(Ext4Error::WrongType(_))));
    assert_eq!(dev.stats().writes, 0);
}

#[test]
fn overwrite_1k_plain() {
    overwrite_everywhere(1024, "^metadata_csum,^64bit");
}

#[test]
fn overwrite_1k_csum_64bit() {
    overwrite_everywhere(1024, "metadata_csum,64bit");
}

#[test]
fn overwrite_4k_plain() {
    overwrite_everywhere(4096, "^metadata_csum,^64bit");
}

#[test]
fn overwrite_4k_csum_64bit() {
    overwrite_everywhere(4096, "metadata_csum,64bit");
}

/// Writes into holes, into unwritten extents and past EOF allocate on every
/// path: after the fsync the image is fsck-clean and e2fsprogs reads back
/// what was written (zeros in the gaps). A read-only open still refuses
/// every write before anything reaches the device.
#[test]
fn allocating_writes_are_fsck_clean_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let base = build(dir.path(), 4096, "metadata_csum,64bit");
    let bs = 4096u64;
    let cases: [(&str, u64, usize); 5] = [
        ("/h", 5 * bs, 10),                // hole
        ("/h", 4 * bs + 100, bs as usize), // runs into the hole
        ("/u", 12 * bs, 10),               // unwritten
        ("/a/b/c/f", 299_999, 2),          // past EOF
        ("/a/b/c/f", 400_000, 1),          // far past EOF
    ];
    for (pname, mkpath) in paths() {
        for backend in ["mem", "sync"] {
            let img = dir.path().join(format!("alloc-{pname}-{backend}.img"));
            std::fs::copy(&base.img, &img).unwrap();
            let mut want: std::collections::BTreeMap<&str, Vec<u8>> = Default::default();
            for &(path, _, _) in &cases {
                want.entry(path).or_insert_with(|| dump(&img, path));
            }
            let dev = device(&img, backend).unwrap();
            let fs = Ext4::open(dev.clone()).unwrap();
            for (i, &(path, off, len)) in cases.iter().enumerate() {
                let file = File::open(
                    dev.clone(),
                    fs.open_file(path).unwrap(),
                    mkpath(),
                    FileOptions::default(),
                )
                .unwrap();
                let bytes = pattern(len, 40 + i as u64);
                assert_eq!(
                    file.pwrite(off, &bytes).unwrap(),
                    len,
                    "{pname} {path}@{off}"
                );
                file.fsync().unwrap();
                let w = want.get_mut(path).unwrap();
                let end = off as usize + len;
                if w.len() < end {
                    w.resize(end, 0);
                }
                w[off as usize..end].copy_from_slice(&bytes);
            }
            let ro = fs.open_file_read_only("/a/b/c/f").unwrap();
            let file = File::open(dev.clone(), ro, mkpath(), FileOptions::default()).unwrap();
            let writes = dev.stats().writes;
            assert!(file.pwrite(0, b"x").is_err());
            file.fsync().unwrap();
            assert_eq!(dev.stats().writes, writes, "{pname} {backend}");
            drop(file);
            drop(fs);
            finish(&img, backend, &dev);
            drop(dev);
            fsck_ok(&img);
            for (path, w) in &want {
                assert!(dump(&img, path) == *w, "{pname} {backend} {path}");
            }
        }
    }
}
