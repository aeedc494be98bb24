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

/// A corruption applied to a copy of the image bytes.
type Corrupt<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

/// Each kind of corrupt extent tree gets an error that says what is wrong
/// and where: the inode, and the block (or the inode's i_block for the
/// root). The image has no metadata_csum, so the structural checks are
/// what catches each corruption.
#[test]
fn extent_errors_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let img = make(dir.path(), 1024, "^metadata_csum,^64bit", 16);
    let put16 = |b: &mut Vec<u8>, at: u64, v: u16| {
        b[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes())
    };
    let put32 = |b: &mut Vec<u8>, at: u64, v: u32| {
        b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    let leaf = img.leaf * img.bs;
    let root = img.frag_inode + 0x28;
    let f_root = img.f_inode + 0x28;
    let frag = "extent tree of inode";
    let leaf_at = format!("at block {}", img.leaf);
    let cases: Vec<(&str, Corrupt<'_>, &str, Vec<String>)> = vec![
        (
            "bad magic",
            Box::new(|b| put16(b, leaf, 0x1234)),
            "/frag",
            vec![
                "bad magic 0x1234".into(),
                "expected 0xf30a".into(),
                leaf_at.clone(),
            ],
        ),
        (
            "entry count over max",
            Box::new(|b| {
                let max = u16::from_le_bytes([b[leaf as usize + 4], b[leaf as usize + 5]]);
                put16(b, leaf + 2, max + 1)
            }),
            "/frag",
            vec!["over the header's max".into(), leaf_at.clone()],
        ),
        (
            "max over the room",
            Box::new(|b| put16(b, root + 4, 5)),
            "/frag",
            vec!["max of 5 entries does not fit".into(), "i_block".into()],
        ),
        (
            "depth over the limit",
            Box::new(|b| put16(b, root + 6, 6)),
            "/frag",
            vec!["depth 6 over the limit of 5".into(), "i_block".into()],
        ),
        (
            "depth the index did not promise",
            Box::new(|b| put16(b, leaf + 6, 2)),
            "/frag",
            vec![
                "depth 2 where the index above promised 0".into(),
                leaf_at.clone(),
            ],
        ),
        (
            "overlapping extents",
            // Extent 1 (file block 2) moved onto extent 0 (file block 0).
            Box::new(|b| put32(b, leaf + 24, 0)),
            "/frag",
            vec![
                "extent 1 starts at file block 0, before the end of extent 0".into(),
                "overlap".into(),
                leaf_at.clone(),
            ],
        ),
        (
            "unsorted extents",
            // Extent 2 (file block 4) moved below extent 1 (file block 2).
            Box::new(|b| put32(b, leaf + 36, 1)),
            "/frag",
            vec!["before the end of extent 1".into(), "unsorted".into()],
        ),
        (
            "extent past the block count",
            Box::new(|b| put32(b, f_root + 12 + 8, 0x00FF_FFF0)),
            "/d/f",
            vec![
                "extent 0 maps file blocks 0..".into(),
                "past the filesystem's 16384 blocks".into(),
                "i_block".into(),
            ],
        ),
        (
            "extent of length 0",
            Box::new(|b| put16(b, f_root + 12 + 4, 0)),
            "/d/f",
            vec!["extent 0 at file block 0 has length 0".into()],
        ),
        (
            "index pointing outside",
            Box::new(|b| put32(b, root + 12 + 4, 0x00FF_FFF0)),
            "/frag",
            vec![
                "index entry 0 points at block 16777200, outside".into(),
                "i_block".into(),
            ],
        ),
    ];
    for (case, corrupt, path, wants) in cases {
        let mut b = img.bytes.clone();
        corrupt(&mut b);
        let dev = Arc::new(Mem::from_bytes(b, 512));
        let e = Ext4::open(dev.clone())
            .and_then(|fs| fs.open_file(path).map(|_| ()))
            .expect_err(case)
            .to_string();
        assert!(e.contains(frag), "{case}: {e}");
        for want in &wants {
            assert!(e.contains(want.as_str()), "{case}: {e:?} lacks {want:?}");
        }
        assert_eq!(dev.stats().writes, 0, "{case}");
    }
}

/// Opening something that is not a regular file says what it is.
#[test]
fn wrong_file_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "types.img", 4096, "", 16, &[]);
    let src = dir.path().join("src");
    std::fs::write(&src, pattern(100, 1)).unwrap();
    debugfs_w(
        &img,
        &[
            format!("write {} /f", src.display()),
            "symlink /l /f".into(),
            "mkdir /d".into(),
            // debugfs's mknod takes a name in the current directory, not a path.
            "mknod c c 1 3".into(),
            "mknod b b 7 0".into(),
            "mknod p p".into(),
        ],
    );
    let dev = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
    let fs = Ext4::open(dev).unwrap();
    for (path, want) in [
        (
            "/l",
            "/l is a symbolic link, not a regular file (bufwrite does not follow symbolic links)",
        ),
        ("/d", "/d is a directory, not a regular file"),
        ("/c", "/c is a character device, not a regular file"),
        ("/b", "/b is a block device, not a regular file"),
        ("/p", "/p is a named pipe (FIFO), not a regular file"),
        ("/f/x", "/f is a regular file, not a directory"),
        ("/l/x", "/l is a symbolic link, not a directory"),
    ] {
        for r in [
            fs.open_file(path).map(|_| ()),
            fs.open_file_read_only(path).map(|_| ()),
        ] {
            let e = r.expect_err(path);
            assert!(
                matches!(e, bufwrite_ext4::Ext4Error::WrongType(_)),
                "{path}: {e}"
            );
            assert!(e.to_string().contains(want), "{path}: {e}");
        }
    }
}
