//! Corrupt and truncated images: always an error, never a panic or a hang,
//! and nothing written.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::BlockDevice;
use bufwrite_ext4::Ext4;
use std::path::Path;
use std::sync::Arc;

struct Img {
    bytes: Vec<u8>,
    bs: u64,
    csum: bool,
    /// Device byte offset of /d/f's inode and /frag's inode.
    f_inode: u64,
    frag_inode: u64,
    /// First extent leaf block of /frag, first block of /d.
    leaf: u64,
    dir_block: u64,
}

fn make(dir: &Path, bs: u32, features: &str, size_mb: u32) -> Img {
    let img = mkfs(dir, &format!("bad-{bs}.img"), bs, features, size_mb, &[]);
    let f = dir.join("src");
    std::fs::write(&f, pattern(300 * bs as usize, 9)).unwrap();
    let mut cmds = vec![
        "mkdir /d".to_string(),
        format!("write {} /d/f", f.display()),
        format!("write {} /frag", f.display()),
    ];
    for b in (1..300).step_by(2) {
        cmds.push(format!("punch /frag {b} {b}"));
    }
    debugfs_w(&img, &cmds);
    let bytes = std::fs::read(&img).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(bytes.clone(), 512));
    let fs = Ext4::open(dev).unwrap();
    let frag = fs.lookup("/frag").unwrap();
    assert_eq!(
        u16::from_le_bytes([frag.block[6], frag.block[7]]),
        1,
        "frag tree depth 1 expected"
    );
    let leaf = u64::from(u32::from_le_bytes(frag.block[16..20].try_into().unwrap()));
    let d = fs.lookup("/d").unwrap();
    let dir_block = fs.map_inode(&d).unwrap()[0].pblk;
    let b = u64::from(bs);
    Img {
        f_inode: inode_offset(&img, "/d/f", b),
        frag_inode: inode_offset(&img, "/frag", b),
        bytes,
        bs: b,
        csum: fs.superblock().has_metadata_csum(),
        leaf,
        dir_block,
    }
}

/// Opens `bytes` and the file at `path`; must fail with an error whose text
/// contains `want`, and write nothing.
fn expect_err(bytes: Vec<u8>, path: &str, want: &str, case: &str) {
    let dev = Arc::new(Mem::from_bytes(bytes, 512));
    let r = Ext4::open(dev.clone()).and_then(|fs| fs.open_file(path).map(|_| ()));
    let e = r.expect_err(case).to_string();
    assert!(
        e.contains(want),
        "{case}: error {e:?} does not mention {want:?}"
    );
    assert_eq!(dev.stats().writes, 0, "{case}");
}

fn corruptions(img: &Img) {
    let flip = |at: u64| {
        let mut b = img.bytes.clone();
        b[at as usize] ^= 0x5A;
        b
    };
    let gdt = if img.bs == 1024 { 2048 } else { img.bs };
    let c = img.csum;
    expect_err(
        flip(1024 + if c { 0x20 } else { 0x38 }),
        "/d/f",
        "superblock",
        "superblock",
    );
    let mut b = img.bytes.clone();
    if c {
        b[gdt as usize] ^= 1;
    } else {
        b[gdt as usize + 8..gdt as usize + 12].copy_from_slice(&[0xFF; 4]);
    }
    expect_err(b, "/d/f", "group descriptor 0", "group descriptor");
    let (at, want) = if c {
        (img.f_inode + 0x21, "inode")
    } else {
        (img.f_inode + 0x28, "extent tree of inode")
    };
    expect_err(flip(at), "/d/f", want, "inode");
    expect_err(flip(img.leaf * img.bs), "/frag", "extent", "extent header");
    let dir = img.dir_block * img.bs;
    let mut b = img.bytes.clone();
    if c {
        b[dir as usize + 14] ^= 1; // a name byte of ".." region / first entries
    } else {
        b[dir as usize + 4..dir as usize + 6].copy_from_slice(&[0, 0]);
    }
    expect_err(b, "/d/f", "directory block", "directory block");
    for len in [512usize, img.bs as usize + 1024, img.bytes.len() / 8] {
        let mut b = img.bytes.clone();
        b.truncate(len);
        let dev = Arc::new(Mem::from_bytes(b, 512));
        let r = Ext4::open(dev.clone()).and_then(|fs| fs.open_file("/frag").map(|_| ()));
        if len < img.bytes.len() / 8 {
            assert!(r.is_err(), "truncated to {len}");
        }
        assert_eq!(dev.stats().writes, 0);
    }
    // Shared subtree: the root's second index entry points at the first leaf.
    let mut b = img.bytes.clone();
    let root = img.frag_inode as usize + 0x28;
    let first = b[root + 16..root + 22].to_vec();
    b[root + 28..root + 34].copy_from_slice(&first);
    let want = if c { "inode" } else { "extent" };
    expect_err(b, "/frag", want, "shared extent block");
    // A leaf that claims to be an index pointing at itself.
    let mut b = img.bytes.clone();
    let leaf = (img.leaf * img.bs) as usize;
    b[leaf + 6] = 1;
    b[leaf + 16..leaf + 20].copy_from_slice(&(img.leaf as u32).to_le_bytes());
    let want = "extent tree";
    expect_err(b, "/frag", want, "self-looping extent block");
}

#[test]
fn corrupt_images_csum_4k() {
    let dir = tempfile::tempdir().unwrap();
    corruptions(&make(dir.path(), 4096, "metadata_csum,64bit", 16));
}

#[test]
fn corrupt_images_plain_1k() {
    let dir = tempfile::tempdir().unwrap();
    corruptions(&make(dir.path(), 1024, "^metadata_csum,^64bit", 16));
}

/// Byte flips across the first 64 KiB (superblock, descriptors, bitmaps,
/// inode table) give a result,
/// never a panic or a hang.
#[test]
fn byte_flips_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = make(dir.path(), 1024, "^metadata_csum,^64bit", 4);
    for at in (1024..img.bytes.len().min(64 * 1024)).step_by(29) {
        let mut b = img.bytes.clone();
        b[at] ^= 0xFF;
        let dev = Arc::new(Mem::from_bytes(b, 512));
        if let Ok(fs) = Ext4::open(dev.clone()) {
            let _ = fs.open_file("/frag");
            let _ = fs.open_file("/d/f");
            let _ = fs.gaps();
        }
        assert_eq!(dev.stats().writes, 0);
    }
}
