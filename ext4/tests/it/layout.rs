//! Geometries whose descriptor table is not where `s_first_data_block`
//! suggests: 1 KiB-block bigalloc images (first data block 0, superblock and
//! descriptor table still at blocks 1 and 2), with and without meta_bg.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{BlockDevice, File, FileOptions};
use bufwrite_ext4::Ext4;
use std::sync::Arc;

/// Builds a 64 MiB 1 KiB-block image with 64 KiB clusters (and `extra`
/// features), writes a file spanning several clusters and a small one, and
/// checks that bufwrite reads both exactly as debugfs dumps them, then that
/// an overwrite through the iomap path leaves an image e2fsck accepts and
/// debugfs reads back.
fn bigalloc_1k(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let features = format!("bigalloc{extra}");
    let img = mkfs(
        dir.path(),
        "ba1k.img",
        1024,
        &features,
        64,
        &["-C", "65536"],
    );
    let dumpe2fs = std::process::Command::new("dumpe2fs")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dumpe2fs.stdout);
    assert!(
        text.contains("First block:              0"),
        "not the geometry under test:\n{text}"
    );
    let big = dir.path().join("big");
    std::fs::write(&big, pattern(300_000, 7)).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, pattern(3000, 8)).unwrap();
    debugfs_w(
        &img,
        &[
            format!("write {} /big", big.display()),
            format!("write {} /small", small.display()),
        ],
    );
    fsck_ok(&img);
    let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
    let fs = Ext4::open(dev.clone()).unwrap();
    assert_eq!(fs.superblock().first_data_block, 0);
    assert_eq!(fs.superblock().cluster_size, 65536);
    for path in ["/big", "/small"] {
        let model = dump(&img, path);
        let f = fs.open_file_read_only(path).unwrap();
        let file = File::open(dev.clone(), f, paths()[0].1(), FileOptions::default()).unwrap();
        let mut buf = vec![0u8; model.len() + 100];
        let n = file.pread(0, &mut buf).unwrap();
        assert!(
            n == model.len() && buf[..n] == model[..],
            "{path}: bufwrite's read differs from debugfs dump"
        );
    }
    let mut model = dump(&img, "/big");
    let file = File::open(
        dev.clone(),
        fs.open_file("/big").unwrap(),
        paths()[0].1(),
        FileOptions::default(),
    )
    .unwrap();
    let data = pattern(70_000, 9);
    file.pwrite(12_345, &data).unwrap();
    model[12_345..12_345 + data.len()].copy_from_slice(&data);
    file.fsync().unwrap();
    drop(file);
    drop(fs);
    finish(&img, "mem", &dev);
    fsck_ok(&img);
    assert!(
        dump(&img, "/big") == model,
        "overwrite not read back by debugfs"
    );
}

#[test]
fn bigalloc_1k_blocks_opens_and_reads_like_debugfs() {
    bigalloc_1k("");
}

#[test]
fn bigalloc_1k_blocks_with_meta_bg() {
    bigalloc_1k(",meta_bg,^resize_inode");
}
