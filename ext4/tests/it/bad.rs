//! Corrupt and truncated images: always an error, never a panic or a hang,
//! and nothing written.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    BlockDevice, BlockMapping, Error as EngineError, File, FileOptions, Iomap, MapIntent, Mapper,
};
use bufwrite_ext4::{CorruptKind, Ext4, Ext4Error, Ext4File, Location, Structure};
use std::error::Error as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Img {
    bytes: Vec<u8>,
    bs: u64,
    csum: bool,
    /// Device byte offset of /d/f's inode and /frag's inode.
    f_inode: u64,
    frag_inode: u64,
    /// Inode numbers of /d/f, /frag and /d.
    f_ino: u32,
    frag_ino: u32,
    d_ino: u32,
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
        f_ino: fs.lookup("/d/f").unwrap().ino,
        frag_ino: frag.ino,
        d_ino: d.ino,
        bytes,
        bs: b,
        csum: fs.superblock().has_metadata_csum(),
        leaf,
        dir_block,
    }
}

/// Opens `bytes` and the file at `path`; must fail with a corruption whose
/// structure and location are `structure` and `location` and whose kind
/// `kind` accepts, with text that contains `want`, and write nothing.
fn expect_err(
    bytes: Vec<u8>,
    path: &str,
    (structure, location): (Structure, Location),
    kind: impl Fn(&CorruptKind) -> bool,
    want: &str,
    case: &str,
) {
    let dev = Arc::new(Mem::from_bytes(bytes, 512));
    let r = Ext4::open(dev.clone()).and_then(|fs| fs.open_file(path).map(|_| ()));
    let e = r.expect_err(case);
    let c = e
        .as_corrupt()
        .unwrap_or_else(|| panic!("{case}: {e} is not a corruption"));
    assert_eq!(
        (c.structure(), c.location()),
        (&structure, &location),
        "{case}: {e}"
    );
    assert!(kind(c.kind()), "{case}: unexpected kind in {c:?}");
    let text = e.to_string();
    assert!(
        text.contains(want),
        "{case}: error {text:?} does not mention {want:?}"
    );
    assert_eq!(dev.stats().writes, 0, "{case}");
}

fn is_checksum(k: &CorruptKind) -> bool {
    matches!(k, CorruptKind::ChecksumMismatch { on_disk, computed, .. } if on_disk != computed)
}

fn corruptions(img: &Img) {
    let flip = |at: u64| {
        let mut b = img.bytes.clone();
        b[at as usize] ^= 0x5A;
        b
    };
    let gdt = if img.bs == 1024 { 2048 } else { img.bs };
    let c = img.csum;
    let sb = (Structure::Superblock, Location::Byte(1024));
    if c {
        expect_err(
            flip(1024 + 0x20),
            "/d/f",
            sb,
            is_checksum,
            "superblock",
            "superblock",
        );
    } else {
        expect_err(
            flip(1024 + 0x38),
            "/d/f",
            sb,
            |k| {
                *k == CorruptKind::BadMagic {
                    expected: 0xEF53,
                    found: 0xEF53 ^ 0x5A,
                }
            },
            "superblock",
            "superblock",
        );
    }
    let mut b = img.bytes.clone();
    let gd0 = (
        Structure::GroupDescriptor { group: 0 },
        Location::BlockByte {
            block: gdt / img.bs,
            byte: 0,
        },
    );
    if c {
        b[gdt as usize] ^= 1;
        expect_err(b, "/d/f", gd0, is_checksum, "group descriptor 0", "gd");
    } else {
        b[gdt as usize + 8..gdt as usize + 12].copy_from_slice(&[0xFF; 4]);
        let outside = |k: &CorruptKind| {
            matches!(
                k,
                CorruptKind::OutsideFilesystem {
                    blocks: (0xFFFF_FFFF, _),
                    blocks_count: 16384
                }
            )
        };
        expect_err(b, "/d/f", gd0, outside, "group descriptor 0", "gd");
    }
    if c {
        let at = img.f_inode + 0x21;
        let inode = (
            Structure::Inode { ino: img.f_ino },
            Location::Byte(img.f_inode),
        );
        expect_err(flip(at), "/d/f", inode, is_checksum, "inode", "inode");
    } else {
        let root = (
            Structure::ExtentHeader { ino: img.f_ino },
            Location::IBlock { ino: img.f_ino },
        );
        let magic = |k: &CorruptKind| {
            *k == CorruptKind::BadMagic {
                expected: 0xF30A,
                found: 0xF30A ^ 0x5A,
            }
        };
        let at = img.f_inode + 0x28;
        expect_err(
            flip(at),
            "/d/f",
            root,
            magic,
            "extent tree of inode",
            "inode",
        );
    }
    let leaf = (
        Structure::ExtentHeader { ino: img.frag_ino },
        Location::Block(img.leaf),
    );
    let magic = |k: &CorruptKind| {
        *k == CorruptKind::BadMagic {
            expected: 0xF30A,
            found: 0xF30A ^ 0x5A,
        }
    };
    expect_err(
        flip(img.leaf * img.bs),
        "/frag",
        leaf,
        magic,
        "extent",
        "extent header",
    );
    let dir = img.dir_block * img.bs;
    let mut b = img.bytes.clone();
    if c {
        b[dir as usize + 14] ^= 1; // a name byte of ".." region / first entries
        let block = (
            Structure::DirBlock { ino: img.d_ino },
            Location::FileBlock(0),
        );
        expect_err(b, "/d/f", block, is_checksum, "directory block", "dir");
    } else {
        b[dir as usize + 4..dir as usize + 6].copy_from_slice(&[0, 0]);
        let entry = (
            Structure::DirEntry { ino: img.d_ino },
            Location::FileBlockByte { block: 0, byte: 0 },
        );
        let rec_len_0 = |k: &CorruptKind| matches!(k, CorruptKind::BadRecLen { rec_len: 0, .. });
        expect_err(b, "/d/f", entry, rec_len_0, "directory entry", "dir");
    }
    for len in [512usize, img.bs as usize + 1024, img.bytes.len() / 8] {
        let mut b = img.bytes.clone();
        b.truncate(len);
        let dev = Arc::new(Mem::from_bytes(b, 512));
        let r = Ext4::open(dev.clone()).and_then(|fs| fs.open_file("/frag").map(|_| ()));
        if len < img.bytes.len() / 8 {
            let e = r.expect_err("truncated");
            let k = e.as_corrupt().map(|c| c.kind());
            assert!(
                matches!(k, Some(CorruptKind::PastDeviceEnd { device_size, .. }) if *device_size == len as u64),
                "truncated to {len}: {e}"
            );
        }
        assert_eq!(dev.stats().writes, 0);
    }
    // Shared subtree: the root's second index entry points at the first leaf.
    let mut b = img.bytes.clone();
    let root = img.frag_inode as usize + 0x28;
    let first = b[root + 16..root + 22].to_vec();
    b[root + 28..root + 34].copy_from_slice(&first);
    if c {
        let inode = (
            Structure::Inode { ino: img.frag_ino },
            Location::Byte(img.frag_inode),
        );
        expect_err(
            b,
            "/frag",
            inode,
            is_checksum,
            "inode",
            "shared extent block",
        );
    } else {
        let entry = (
            Structure::ExtentIndex {
                ino: img.frag_ino,
                entry: 1,
            },
            Location::IBlock { ino: img.frag_ino },
        );
        let looped = |k: &CorruptKind| *k == CorruptKind::Loop { block: img.leaf };
        expect_err(b, "/frag", entry, looped, "extent", "shared extent block");
    }
    // A leaf that claims to be an index pointing at itself.
    let mut b = img.bytes.clone();
    let leaf = (img.leaf * img.bs) as usize;
    b[leaf + 6] = 1;
    b[leaf + 16..leaf + 20].copy_from_slice(&(img.leaf as u32).to_le_bytes());
    let case = "self-looping extent block";
    if c {
        let block = (
            Structure::ExtentBlock { ino: img.frag_ino },
            Location::Block(img.leaf),
        );
        expect_err(b, "/frag", block, is_checksum, "extent block", case);
    } else {
        let header = (
            Structure::ExtentHeader { ino: img.frag_ino },
            Location::Block(img.leaf),
        );
        let depth = |k: &CorruptKind| {
            *k == CorruptKind::DepthMismatch {
                depth: 1,
                promised: 0,
            }
        };
        expect_err(b, "/frag", header, depth, "extent tree", case);
    }
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

/// A check of the kind of corruption reported.
type Kind<'a> = Box<dyn Fn(&CorruptKind) -> bool + 'a>;

/// A case: name, corruption, path opened, the structure and location the
/// error must name, its kind, and text the message must contain.
type Case<'a> = (
    &'a str,
    Corrupt<'a>,
    &'a str,
    (Structure, Location),
    Kind<'a>,
    Vec<String>,
);

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
    let (fi, ff) = (img.frag_ino, img.f_ino);
    let header = |ino| Structure::ExtentHeader { ino };
    let at_leaf = Location::Block(img.leaf);
    let root_of = |ino| Location::IBlock { ino };
    let is = |want: CorruptKind| -> Kind<'_> { Box::new(move |k| *k == want) };
    let cases: Vec<Case<'_>> = vec![
        (
            "bad magic",
            Box::new(|b| put16(b, leaf, 0x1234)),
            "/frag",
            (header(fi), at_leaf),
            is(CorruptKind::BadMagic {
                expected: 0xF30A,
                found: 0x1234,
            }),
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
            (header(fi), at_leaf),
            Box::new(|k| {
                matches!(k, CorruptKind::CountOverMax { field: "eh_entries", count, max }
                    if *count == max + 1)
            }),
            vec![
                "eh_entries".into(),
                "over the limit of".into(),
                leaf_at.clone(),
            ],
        ),
        (
            "max over the room",
            Box::new(|b| put16(b, root + 4, 5)),
            "/frag",
            (header(fi), root_of(fi)),
            is(CorruptKind::CountOverMax {
                field: "eh_max",
                count: 5,
                max: 4,
            }),
            vec!["eh_max 5 over the limit of 4".into(), "i_block".into()],
        ),
        (
            "depth over the limit",
            Box::new(|b| put16(b, root + 6, 6)),
            "/frag",
            (header(fi), root_of(fi)),
            is(CorruptKind::CountOverMax {
                field: "eh_depth",
                count: 6,
                max: 5,
            }),
            vec!["depth 6 over the limit of 5".into(), "i_block".into()],
        ),
        (
            "depth the index did not promise",
            Box::new(|b| put16(b, leaf + 6, 2)),
            "/frag",
            (header(fi), at_leaf),
            is(CorruptKind::DepthMismatch {
                depth: 2,
                promised: 0,
            }),
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
            (Structure::ExtentLeaf { ino: fi, entry: 1 }, at_leaf),
            Box::new(
                |k| matches!(k, CorruptKind::OverlapsPrevious { start: 0, prev: 0, prev_end } if *prev_end > 0),
            ),
            vec![
                "extent 1 of the".into(),
                "starts at file block 0, before the end of extent 0".into(),
                "overlap".into(),
                leaf_at.clone(),
            ],
        ),
        (
            "unsorted extents",
            // Extent 2 (file block 4) moved below extent 1 (file block 2).
            Box::new(|b| put32(b, leaf + 36, 1)),
            "/frag",
            (Structure::ExtentLeaf { ino: fi, entry: 2 }, at_leaf),
            Box::new(
                |k| matches!(k, CorruptKind::OverlapsPrevious { start: 1, prev: 1, prev_end } if *prev_end > 1),
            ),
            vec!["before the end of extent 1".into(), "unsorted".into()],
        ),
        (
            "extent past the block count",
            Box::new(|b| put32(b, f_root + 12 + 8, 0x00FF_FFF0)),
            "/d/f",
            (Structure::ExtentLeaf { ino: ff, entry: 0 }, root_of(ff)),
            Box::new(|k| {
                matches!(k, CorruptKind::OutsideFilesystem {
                    blocks: (0x00FF_FFF0, end),
                    blocks_count: 16384,
                } if *end > 0x00FF_FFF0)
            }),
            vec![
                "extent 0 of the".into(),
                "device blocks 16777200..".into(),
                "past the filesystem's 16384 blocks".into(),
                "i_block".into(),
            ],
        ),
        (
            "extent of length 0",
            Box::new(|b| put16(b, f_root + 12 + 4, 0)),
            "/d/f",
            (Structure::ExtentLeaf { ino: ff, entry: 0 }, root_of(ff)),
            is(CorruptKind::ZeroLength { start: 0 }),
            vec![
                "extent 0 of the".into(),
                "at file block 0 has length 0".into(),
            ],
        ),
        (
            "index pointing outside",
            Box::new(|b| put32(b, root + 12 + 4, 0x00FF_FFF0)),
            "/frag",
            (Structure::ExtentIndex { ino: fi, entry: 0 }, root_of(fi)),
            is(CorruptKind::OutsideFilesystem {
                blocks: (16_777_200, 16_777_201),
                blocks_count: 16384,
            }),
            vec![
                "index entry 0 of the".into(),
                "device blocks 16777200..16777201 past the filesystem's 16384 blocks".into(),
                "i_block".into(),
            ],
        ),
    ];
    for (case, corrupt, path, (structure, location), kind, wants) in cases {
        let mut b = img.bytes.clone();
        corrupt(&mut b);
        let dev = Arc::new(Mem::from_bytes(b, 512));
        let err = Ext4::open(dev.clone())
            .and_then(|fs| fs.open_file(path).map(|_| ()))
            .expect_err(case);
        let c = err
            .as_corrupt()
            .unwrap_or_else(|| panic!("{case}: {err} is not a corruption"));
        assert_eq!(
            (c.structure(), c.location()),
            (&structure, &location),
            "{case}: {err}"
        );
        assert!(kind(c.kind()), "{case}: unexpected kind in {c:?}");
        let e = err.to_string();
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

/// A mapper that reads the file's block map from the image at every
/// mapping call instead of caching it when the file is opened, as a mapper
/// without an extent cache (or one that allocates) does: a corruption it
/// finds surfaces in the middle of a write, through the engine.
struct Uncached {
    fs: Ext4,
    path: &'static str,
    block_size: u32,
    size: AtomicU64,
}

impl Uncached {
    /// The file, mapped afresh; an ext4 error converts into the engine's.
    fn file(&self) -> bufwrite_engine::Result<Arc<Ext4File>> {
        Ok(self.fs.open_file(self.path)?)
    }
}

impl Mapper for Uncached {
    fn block_size(&self) -> bufwrite_engine::BlockSize {
        bufwrite_engine::BlockSize::new(self.block_size).expect("a valid block size")
    }

    fn iomap_begin(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
        intent: MapIntent,
    ) -> bufwrite_engine::Result<Iomap> {
        self.file()?.iomap_begin(pos, len, intent)
    }

    fn get_block(
        &self,
        block: bufwrite_engine::FileBlock,
        create: bool,
    ) -> bufwrite_engine::Result<BlockMapping> {
        self.file()?.get_block(block, create)
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    fn max_size(&self) -> u64 {
        self.size()
    }
}

/// A corrupt extent block found while writing reaches the caller of
/// `File::pwrite` as the engine's `Corrupt`, with the ext4 error (and its
/// kind) as the source, not as an I/O error at device offset 0; no text
/// repeats along the chain, and nothing is written. Through every path:
/// iomap maps with `iomap_begin`, the buffer-head modes with `get_block`.
#[test]
fn corruption_during_a_write_reaches_the_engine_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let img = make(dir.path(), 1024, "^metadata_csum,^64bit", 16);
    let size = {
        let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(img.bytes.clone(), 512));
        Ext4::open(dev).unwrap().open_file("/frag").unwrap().size()
    };
    let mut bytes = img.bytes.clone();
    let leaf = (img.leaf * img.bs) as usize;
    bytes[leaf..leaf + 2].copy_from_slice(&0x1234u16.to_le_bytes());
    for (name, make_path) in paths() {
        let dev = Arc::new(Mem::from_bytes(bytes.clone(), 512));
        let d: Arc<dyn BlockDevice> = dev.clone();
        let mapper = Arc::new(Uncached {
            fs: Ext4::open(d.clone()).unwrap(),
            path: "/frag",
            block_size: 1024,
            size: AtomicU64::new(size),
        });
        let file = File::open(d, mapper, make_path(), FileOptions::default()).unwrap();
        let e = file.pwrite(0, &[7u8; 100]).expect_err(name);
        assert!(matches!(e, EngineError::Corrupt { .. }), "{name}: {e:?}");
        let source = e.source().expect("a source");
        let ext4 = source
            .downcast_ref::<Ext4Error>()
            .unwrap_or_else(|| panic!("{name}: the source is not an Ext4Error: {source:?}"));
        let c = ext4.as_corrupt().expect("a corruption");
        assert_eq!(
            c.structure(),
            &Structure::ExtentHeader { ino: img.frag_ino },
            "{name}"
        );
        assert_eq!(c.location(), &Location::Block(img.leaf), "{name}");
        assert_eq!(
            c.kind(),
            &CorruptKind::BadMagic {
                expected: 0xF30A,
                found: 0x1234
            },
            "{name}"
        );
        // Each message says its own part; the chain is the whole story.
        let mut chain: Vec<String> = vec![e.to_string()];
        let mut at: Option<&dyn std::error::Error> = e.source();
        while let Some(s) = at {
            chain.push(s.to_string());
            at = s.source();
        }
        assert_eq!(chain.len(), 2, "{name}: {chain:?}");
        assert!(!chain[0].contains(&chain[1]), "{name}: {chain:?}");
        assert!(chain[1].contains("bad magic 0x1234"), "{name}: {chain:?}");
        file.fsync().unwrap();
        assert_eq!(dev.stats().writes, 0, "{name}");
    }
}
