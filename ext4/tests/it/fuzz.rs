//! Random corruption of small real images: every entry point returns an
//! error or a result, never panics, never hangs; the readers write nothing,
//! and the writers (allocation, truncate, punch, fallocate, create, unlink)
//! fail or succeed cleanly.
//!
//! Images are made once per run (1 KiB and 4 KiB blocks, with and without
//! metadata_csum), each with a nested file, a depth >= 2 extent tree and an
//! htree directory. Corruptions target the superblock, the group descriptor
//! table, the inodes on the test paths, extent index/leaf blocks and
//! directory blocks. `PROPTEST_CASES` raises the case count.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    BlockDevice, FallocMode, File, FileBlock, FileOptions, FilePos, IomapPath, MapIntent, Mapper,
    Mount, OpenFlags,
};
use bufwrite_ext4::{CorruptKind, Ext4, Ext4Error, Location, OverlapWith, Structure};
use proptest::prelude::*;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const PATHS: [&str; 8] = [
    "/",
    "/a/b/c/f",
    "/frag",
    "/big",
    "/big/target",
    "/big/name_00123",
    "/a/b",
    "/nope",
];

/// One pristine image and the metadata regions worth corrupting.
struct Image {
    bytes: Vec<u8>,
    csum: bool,
    /// (name, device byte offset, length)
    regions: Vec<(String, u64, u64)>,
    /// How to recompute each region's checksum (same order as `regions`).
    kinds: Vec<Kind>,
    seed: u32,
    desc_size: usize,
    groups: usize,
}

/// What a region holds, for recomputing its metadata_csum checksum.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Superblock,
    Descriptors,
    /// An inode of this number.
    Inode(u32),
    /// An extent block or directory leaf of the inode at this region index.
    Extent(usize),
    Dir(usize),
}

/// Index and leaf blocks of an extent tree, read from the image bytes.
fn tree_blocks(bytes: &[u8], node: &[u8], bs: u64, out: &mut Vec<u64>) {
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let (entries, depth) = (le16(node, 2), le16(node, 6));
    if depth == 0 {
        return;
    }
    for i in 0..usize::from(entries) {
        let e = &node[12 + 12 * i..24 + 12 * i];
        let blk = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
        out.push(blk);
        let at = (blk * bs) as usize;
        tree_blocks(bytes, &bytes[at..at + bs as usize], bs, out);
    }
}

fn make(dir: &Path, bs: u32, features: &str) -> Image {
    let name = format!("fuzz-{bs}-{}.img", features.replace([',', '^'], "_"));
    // Depth >= 2 needs more extents than the root's 4 leaves hold.
    let (size_mb, frag_blocks) = if bs == 1024 { (8, 800u64) } else { (20, 3000) };
    let img = mkfs(dir, &name, bs, features, size_mb, &[]);
    let src = |n: &str, len: usize, seed: u64| {
        let p = dir.join(format!("{name}-{n}"));
        std::fs::write(&p, pattern(len, seed)).unwrap();
        p.display().to_string()
    };
    let mut cmds = vec![
        "mkdir /a".into(),
        "mkdir /a/b".into(),
        "mkdir /a/b/c".into(),
        format!("write {} /a/b/c/f", src("f", 30_000, 1)),
        format!(
            "write {} /frag",
            src("frag", (frag_blocks * u64::from(bs)) as usize, 2)
        ),
        "mkdir /big".into(),
    ];
    for b in (1..frag_blocks).step_by(2) {
        cmds.push(format!("punch /frag {b} {b}"));
    }
    let small = src("small", 10, 5);
    let n = if bs == 1024 { 200 } else { 400 };
    for i in 0..n {
        cmds.push(format!("write {small} /big/name_{i:05}"));
    }
    cmds.push(format!("write {} /big/target", src("target", 20_000, 6)));
    debugfs_w(&img, &cmds);
    let out = std::process::Command::new("e2fsck")
        .arg("-fyD")
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.code().unwrap_or(8) < 4, "e2fsck -fyD");
    let big = debugfs_r(&img, "stat /big");
    assert!(big.contains("Flags: 0x81000"), "no htree: {big}");

    let bytes = std::fs::read(&img).unwrap();
    let b = u64::from(bs);
    let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(bytes.clone(), 512));
    let fs = Ext4::open(dev).unwrap();
    let csum = fs.superblock().has_metadata_csum();
    let gdt = (u64::from(fs.superblock().first_data_block) + 1) * b;
    let mut regions = vec![
        ("superblock".to_string(), 1024, 1024),
        ("group descriptors".to_string(), gdt, b),
    ];
    let mut kinds = vec![Kind::Superblock, Kind::Descriptors];
    let inode_region = |p: &str| {
        2 + ["/", "/a", "/a/b", "/a/b/c", "/a/b/c/f", "/frag"]
            .iter()
            .position(|&x| x == p)
            .unwrap_or(6)
    };
    for p in [
        "/",
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/c/f",
        "/frag",
        "/big",
        "/big/target",
    ] {
        let isz = u64::from(fs.superblock().inode_size);
        regions.push((format!("inode {p}"), inode_offset(&img, p, b), isz));
        kinds.push(Kind::Inode(fs.lookup(p).unwrap().ino));
    }
    let frag = fs.lookup("/frag").unwrap();
    let mut blocks = Vec::new();
    tree_blocks(&bytes, &frag.block, b, &mut blocks);
    let depth = u16::from_le_bytes([frag.block[6], frag.block[7]]);
    assert!(depth >= 2, "/frag tree depth {depth}");
    // Index blocks first (the first few), then a sample of leaves.
    for (i, blk) in blocks.iter().enumerate().take(8) {
        regions.push((format!("/frag tree block {i}"), blk * b, b));
        kinds.push(Kind::Extent(inode_region("/frag")));
    }
    for p in ["/", "/a/b/c", "/big"] {
        let ino = fs.lookup(p).unwrap();
        for e in fs.map_inode(&ino).unwrap().iter().take(4) {
            regions.push((format!("dir {p} block {}", e.lblk), e.pblk * b, b));
            kinds.push(Kind::Dir(inode_region(p)));
        }
    }
    let sb = fs.superblock();
    Image {
        bytes,
        csum,
        regions,
        kinds,
        seed: sb.csum_seed,
        desc_size: usize::from(sb.desc_size),
        groups: sb.inodes_count as usize / sb.inodes_per_group as usize,
    }
}

fn images() -> &'static [Image] {
    static IMAGES: OnceLock<(tempfile::TempDir, Vec<Image>)> = OnceLock::new();
    &IMAGES
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let v = [
                (1024, "^metadata_csum,^64bit"),
                (1024, "metadata_csum,64bit"),
                (4096, "^metadata_csum,^64bit"),
                (4096, "metadata_csum,64bit"),
            ]
            .iter()
            .map(|&(bs, f)| make(dir.path(), bs, f))
            .collect();
            (dir, v)
        })
        .1
}

/// Byte offsets of superblock, descriptor, inode, extent-header and
/// directory fields (many overlap across structures, which is the point).
const FIELDS: [u32; 20] = [
    0x0, 0x4, 0x8, 0xC, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x54, 0x58, 0x60, 0x64,
    0x6C, 0xFC, 0x104, 0x150,
];

#[derive(Debug, Clone)]
enum Op {
    Byte { at: u32, val: u8 },
    U32 { at: u32, val: u32 },
    Zero { at: u32, len: u16 },
}

fn op() -> impl Strategy<Value = (usize, Op)> {
    let extreme = prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(0x8000_0000),
        Just(0x7FFF_FFFF),
        Just(0xFFFF),
        Just(0x1_0000),
        any::<u32>(),
    ];
    (
        any::<usize>(),
        prop_oneof![
            (any::<u32>(), any::<u8>()).prop_map(|(at, val)| Op::Byte { at, val }),
            (any::<u32>(), extreme.clone()).prop_map(|(at, val)| Op::U32 { at, val }),
            // Fields that size things: counts, sizes, block numbers, i_size.
            (proptest::sample::select(FIELDS.to_vec()), extreme)
                .prop_map(|(at, val)| Op::U32 { at: at / 4, val }),
            (any::<u32>(), 1u16..256).prop_map(|(at, len)| Op::Zero { at, len }),
        ],
    )
}

/// Applies `ops` to a copy of `img` and returns the corrupted bytes.
fn corrupt(img: &Image, ops: &[(usize, Op)], truncate: Option<u32>, refix_csums: bool) -> Vec<u8> {
    let mut b = img.bytes.clone();
    for (r, op) in ops {
        let (_, start, len) = &img.regions[r % img.regions.len()];
        let (start, len) = (*start as usize, *len as usize);
        match *op {
            Op::Byte { at, val } => b[start + at as usize % len] = val,
            Op::U32 { at, val } => {
                // Aligned, as on-disk fields are.
                let o = start + (at as usize % (len / 4)) * 4;
                b[o..o + 4].copy_from_slice(&val.to_le_bytes());
            }
            Op::Zero { at, len: n } => {
                let o = start + at as usize % len;
                let end = (o + usize::from(n)).min(start + len);
                b[o..end].fill(0);
            }
        }
    }
    if refix_csums && img.csum {
        // Lets corrupted fields get past the checksums, into the parsers.
        fix_csums(img, &mut b);
    }
    if let Some(t) = truncate {
        b.truncate(t as usize % b.len());
    }
    b
}

/// ext4's raw crc32c update.
fn chksum(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Recomputes the metadata_csum checksums of every region, as a careless
/// writer would after corrupting it.
fn fix_csums(img: &Image, b: &mut [u8]) {
    let le16 = |b: &[u8], o: usize| usize::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let inode_seed = |b: &[u8], r: usize| {
        let (_, off, _) = img.regions[r];
        let Kind::Inode(ino) = img.kinds[r] else {
            unreachable!()
        };
        let generation = le32(b, off as usize + 0x64);
        chksum(
            chksum(img.seed, &ino.to_le_bytes()),
            &generation.to_le_bytes(),
        )
    };
    for (r, &(_, off, len)) in img.regions.iter().enumerate() {
        let (o, n) = (off as usize, len as usize);
        match img.kinds[r] {
            Kind::Superblock => {}
            Kind::Descriptors => {
                for g in 0..img.groups.min(n / img.desc_size) {
                    let d = o + g * img.desc_size;
                    b[d + 0x1E..d + 0x20].fill(0);
                    let c = chksum(
                        chksum(img.seed, &(g as u32).to_le_bytes()),
                        &b[d..d + img.desc_size],
                    );
                    b[d + 0x1E..d + 0x20].copy_from_slice(&(c as u16).to_le_bytes());
                }
            }
            Kind::Inode(_) => {
                let seed = inode_seed(b, r);
                let extra = le16(b, o + 0x80);
                let hi = n > 128 && 128 + extra >= 0x84 && 128 + extra <= n;
                b[o + 0x7C..o + 0x7E].fill(0);
                if hi {
                    b[o + 0x82..o + 0x84].fill(0);
                }
                let c = chksum(seed, &b[o..o + n]);
                b[o + 0x7C..o + 0x7E].copy_from_slice(&(c as u16).to_le_bytes());
                if hi {
                    b[o + 0x82..o + 0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
                }
            }
            Kind::Extent(ir) => {
                let tail = 12 + 12 * le16(b, o + 4);
                if tail + 4 <= n {
                    let c = chksum(inode_seed(b, ir), &b[o..o + tail]);
                    b[o + tail..o + tail + 4].copy_from_slice(&c.to_le_bytes());
                }
            }
            Kind::Dir(ir) => {
                let t = o + n - 12;
                if le16(b, t + 4) == 12 && b[t + 7] == 0xDE {
                    let c = chksum(inode_seed(b, ir), &b[o..t]);
                    b[t + 8..t + 12].copy_from_slice(&c.to_le_bytes());
                }
            }
        }
    }
    let c = chksum(!0, &b[1024..1024 + 0x3FC]);
    b[1024 + 0x3FC..2048].copy_from_slice(&c.to_le_bytes());
}

/// Everything a caller can do to an image without asking for a write.
fn exercise(dev: Arc<Mem>) {
    let d: Arc<dyn BlockDevice> = dev.clone();
    let size = d.size();
    let Ok(fs) = checked(Ext4::open(d.clone()), size) else {
        return;
    };
    let _ = checked(fs.gaps(), size);
    let _ = fs.write_blockers();
    for p in PATHS {
        if let Ok(ino) = checked(fs.lookup(p), size) {
            let _ = checked(fs.map_inode(&ino), size);
        }
        let w = checked(fs.open_file(p), size);
        if let Ok(w) = w {
            // Mapping for a write is not a write: nothing reaches the device.
            let size = w.size();
            let _ = w.iomap_begin(FilePos::new(0), size.max(1), MapIntent::Write);
            let _ = w.prepare_write(FilePos::new(size / 2), size.min(4096));
            let _ = w.get_block(FileBlock::new(0), true);
        }
        let Ok(f) = checked(fs.open_file_read_only(p), size) else {
            continue;
        };
        let bs = f.block_size().get();
        let size = f.size();
        let mut pos = 0;
        for _ in 0..10_000 {
            if pos >= size {
                break;
            }
            let m = f
                .iomap_begin(FilePos::new(pos), size - pos, MapIntent::Read)
                .unwrap();
            assert!(
                m.offset.get() == pos && m.length > 0 && m.length <= size - pos,
                "{p}: iomap {m:?} for {pos}+{}",
                size - pos
            );
            pos += m.length;
        }
        for blk in 0..size.div_ceil(bs).min(4000) {
            let _ = f.get_block(FileBlock::new(blk), false);
        }
        let Ok(file) = File::open(
            d.clone(),
            f.clone(),
            Box::new(IomapPath::new()),
            FileOptions::default(),
        ) else {
            continue;
        };
        let mut buf = vec![0u8; 64 << 10];
        for off in [0, size / 2, size.saturating_sub(100)] {
            let _ = file.pread(off, &mut buf);
        }
        let _ = file.fsync();
    }
    assert_eq!(dev.stats().writes, 0, "a read-only exercise wrote");
    write_phase(&d);
}

/// The writers on the same (corrupt) image: appends and writes into holes
/// with their allocation at fsync, truncate, punch, fallocate, create and
/// unlink either succeed or return an error; none panics or hangs, and the
/// device (which refuses anything out of its bounds) is never asked to
/// write outside itself.
fn write_phase(d: &Arc<dyn BlockDevice>) {
    let size = d.size();
    let Ok(fs) = checked(Ext4::open(d.clone()), size) else {
        return;
    };
    let m = Mount::new(d.clone(), Arc::new(fs));
    let flags = OpenFlags {
        create: true,
        exclusive: false,
        truncate: false,
    };
    for p in ["/a/b/c/f", "/frag", "/big/new", "/new"] {
        let Ok(f) = m.open(p, flags, Box::new(IomapPath::new()), FileOptions::default()) else {
            continue;
        };
        let len = f.size();
        let _ = f.pwrite(len.saturating_add(5000), &[7u8; 9000]);
        let _ = f.pwrite(len / 3, &[8u8; 20_000]);
        let _ = f.fsync();
        let _ = f.set_len(len / 2);
        let _ = f.fallocate(0, 8192, FallocMode::PunchHole);
        let _ = f.fallocate(len, 65_536, FallocMode::Allocate);
        let _ = f.fsync();
        f.set_writeback_on_drop(false);
    }
    let _ = m.unlink("/new");
    let _ = m.sync();
}

/// `r`, after [`check_error`] on its error.
fn checked<T>(r: Result<T, Ext4Error>, dev_size: u64) -> Result<T, Ext4Error> {
    if let Err(e) = &r {
        check_error(e, dev_size);
    }
    r
}

/// An error from a corrupt image is a corruption whose kind holds what was
/// wrong, and what it holds is wrong indeed (a checksum mismatch has two
/// different checksums, an out-of-range value is outside its range, ...);
/// its text renders structure, location and kind. Never a device error:
/// every metadata read is checked against the device's size first.
fn check_error(e: &Ext4Error, dev_size: u64) {
    let c = match e {
        Ext4Error::Corrupt(c) => c,
        Ext4Error::Io(_) => panic!("a device error from an in-memory image: {e}"),
        _ => return,
    };
    let text = e.to_string();
    let head = format!(
        "corrupt {} at {}: {}",
        c.structure(),
        c.location(),
        c.kind()
    );
    assert!(text.starts_with(&head), "{text:?} is not {head:?}");
    let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
    let holds = match *c.kind() {
        CorruptKind::BadMagic { expected, found } => expected != found,
        CorruptKind::ChecksumMismatch {
            on_disk,
            computed,
            bits,
        } => on_disk != computed && (bits == 32 || (on_disk | computed) <= 0xFFFF),
        CorruptKind::ChecksumType { found } => found != 1,
        CorruptKind::PastDeviceEnd { len, device_size } => {
            let Location::Byte(offset) = *c.location() else {
                panic!("{c:?}: not at a byte offset");
            };
            device_size == dev_size && offset.checked_add(len).is_none_or(|e| e > dev_size)
        }
        CorruptKind::OutOfRange {
            value, min, end, ..
        } => !(min..end).contains(&value),
        CorruptKind::NotPowerOfTwo { value, .. } => !value.is_power_of_two(),
        CorruptKind::CountOverMax { count, max, .. } => count > max,
        CorruptKind::ByteOffsetOverflow { blocks, block_size } => {
            blocks.checked_mul(u64::from(block_size)).is_none()
        }
        CorruptKind::InodesCount {
            count,
            groups,
            per_group,
        } => groups.checked_mul(u64::from(per_group)) != Some(u64::from(count)),
        CorruptKind::Overlap {
            blocks,
            with_blocks,
            ..
        } => overlaps(blocks, with_blocks),
        CorruptKind::OutsideFilesystem {
            blocks,
            blocks_count,
        } => blocks.1 > blocks_count,
        CorruptKind::DepthMismatch { depth, promised } => depth != promised,
        CorruptKind::StartsBeforeParent {
            start,
            parent_start,
        } => start < parent_start,
        CorruptKind::StartsPastParent { start, parent_end } => start >= parent_end,
        CorruptKind::EndsPastParent { blocks, parent_end } => blocks.1 > parent_end,
        CorruptKind::OverlapsPrevious {
            start, prev_end, ..
        } => start < prev_end,
        CorruptKind::Unsorted {
            start, prev_start, ..
        } => start <= prev_start,
        CorruptKind::PastFileBlockLimit { end, limit } => end > limit,
        CorruptKind::BadRecLen {
            rec_len,
            name_len,
            room,
        } => rec_len < 12 || rec_len % 4 != 0 || rec_len > room || name_len + 8 > rec_len,
        CorruptKind::EntryOverrun { room } => room < 8,
        _ => true,
    };
    assert!(holds, "{text}: the kind does not hold ({c:?})");
}

/// Runs `exercise` on `bytes` in a thread; fails on a panic or after 5 s.
fn bounded(bytes: Vec<u8>) -> std::result::Result<(), TestCaseError> {
    let dev = Arc::new(Mem::from_bytes(bytes, 512));
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        exercise(dev);
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(()) => {
            let _ = h.join();
            Ok(())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let e = h.join().expect_err("thread ended without reporting");
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!("panicked: {msg}")))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(TestCaseError::fail("took more than 5 s: hang?"))
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn corrupt_images_error_cleanly(
        which in 0usize..4,
        ops in proptest::collection::vec(op(), 1..5),
        truncate in proptest::option::weighted(0.1, any::<u32>()),
        refix_csums in any::<bool>(),
    ) {
        let img = &images()[which];
        bounded(corrupt(img, &ops, truncate, refix_csums))?;
    }
}

/// The pristine images pass the same exercise, and their files read back.
#[test]
fn pristine_images_exercise_cleanly() {
    for img in images() {
        bounded(img.bytes.clone()).unwrap();
        if img.csum {
            // The checksum fix-up reproduces every checksum it touches.
            let mut b = img.bytes.clone();
            fix_csums(img, &mut b);
            let diff: Vec<&str> = img
                .regions
                .iter()
                .filter(|(_, o, n)| {
                    b[*o as usize..(o + n) as usize] != img.bytes[*o as usize..(o + n) as usize]
                })
                .map(|(name, _, _)| name.as_str())
                .collect();
            assert!(
                diff.is_empty(),
                "fix_csums changed a pristine image: {diff:?}"
            );
        }
    }
}

/// A file whose extent points into its own inode table is refused, not
/// opened for writing (a write would overwrite inodes).
#[test]
fn extent_into_inode_table_is_refused() {
    for img in images().iter().filter(|i| !i.csum) {
        let (_, off, _) = img
            .regions
            .iter()
            .find(|(n, _, _)| n == "inode /a/b/c/f")
            .unwrap();
        let mut b = img.bytes.clone();
        let bs = u64::from(
            Ext4::open(Arc::new(Mem::from_bytes(b.clone(), 512)))
                .unwrap()
                .block_size(),
        );
        let at = (*off + 0x28 + 12 + 8) as usize;
        // Its own inode table block, then the first reserved descriptor
        // block (right after the one-block descriptor table).
        let reserved = if bs == 1024 { 3 } else { 2 };
        for target in [*off / bs, reserved] {
            b[at..at + 4].copy_from_slice(&(target as u32).to_le_bytes());
            let dev = Arc::new(Mem::from_bytes(b.clone(), 512));
            let fs = Ext4::open(dev.clone()).unwrap();
            assert!(fs.superblock().reserved_gdt_blocks > 0);
            let err = fs.open_file("/a/b/c/f").unwrap_err();
            let c = err.as_corrupt().expect("a corruption");
            let ino = fs.lookup("/a/b/c/f").unwrap().ino;
            assert_eq!(c.structure(), &Structure::BlockMap { ino }, "{err}");
            assert_eq!(c.location(), &Location::FileBlock(0), "{err}");
            assert!(
                matches!(c.kind(), CorruptKind::Overlap {
                    blocks: (first, _),
                    with: OverlapWith::Metadata,
                    with_blocks: (zs, ze),
                } if *first == target && (*zs..*ze).contains(&target)),
                "{target}: {err}"
            );
            let e = err.to_string();
            assert!(e.contains("overlap filesystem metadata"), "{target}: {e}");
            assert!(fs.open_file_read_only("/a/b/c/f").is_err());
            assert_eq!(dev.stats().writes, 0);
        }
    }
}

/// Every regular file of the test images reads the same through
/// ext4-view (an independent reader) and through bufwrite (a `File` over
/// the image, pread).
#[test]
fn every_file_matches_ext4_view() {
    for img in images() {
        let view = ext4_view::Ext4::load(Box::new(img.bytes.clone())).unwrap();
        let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(img.bytes.clone(), 512));
        let fs = Ext4::open(dev.clone()).unwrap();
        let mut dirs = vec![String::from("/")];
        let mut files = 0;
        while let Some(d) = dirs.pop() {
            for entry in view.read_dir(d.as_str()).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().as_str().unwrap().to_string();
                if name == "." || name == ".." {
                    continue;
                }
                let path = entry.path().to_str().unwrap().to_string();
                let ft = entry.file_type().unwrap();
                if ft.is_dir() {
                    dirs.push(path);
                } else if ft.is_regular_file() {
                    let want = view.read(path.as_str()).unwrap();
                    let f = fs.open_file_read_only(&path).unwrap();
                    let file = File::open(
                        dev.clone(),
                        f,
                        Box::new(IomapPath::new()),
                        FileOptions::default(),
                    )
                    .unwrap();
                    let mut got = vec![0u8; want.len() + 7];
                    let n = file.pread(0, &mut got).unwrap();
                    assert!(
                        n == want.len() && got[..n] == want[..],
                        "{path}: bufwrite read {n} bytes, ext4-view {}",
                        want.len()
                    );
                    files += 1;
                }
            }
        }
        assert!(files > 200, "only {files} files compared");
        assert_eq!(dev.stats().writes, 0);
    }
}

/// A file whose extent points into the journal is not opened for writing
/// (it still reads).
#[test]
fn extent_into_journal_is_refused() {
    for img in images().iter().filter(|i| !i.csum) {
        let (_, off, _) = img
            .regions
            .iter()
            .find(|(n, _, _)| n == "inode /a/b/c/f")
            .unwrap();
        let dev: Arc<dyn BlockDevice> = Arc::new(Mem::from_bytes(img.bytes.clone(), 512));
        let fs = Ext4::open(dev).unwrap();
        let jino = fs.superblock().journal_inum;
        let journal = fs.map_inode(&fs.read_inode(jino).unwrap()).unwrap();
        let longest = journal.iter().max_by_key(|e| e.len).unwrap();
        assert!(longest.len >= 100, "{journal:?}");
        let target = longest.pblk + longest.len / 2;
        let mut b = img.bytes.clone();
        let at = (*off + 0x28 + 12 + 8) as usize;
        b[at..at + 4].copy_from_slice(&(target as u32).to_le_bytes());
        let dev = Arc::new(Mem::from_bytes(b, 512));
        let fs = Ext4::open(dev.clone()).unwrap();
        let err = fs.open_file("/a/b/c/f").unwrap_err();
        let c = err.as_corrupt().expect("a corruption");
        let ino = fs.lookup("/a/b/c/f").unwrap().ino;
        assert_eq!(c.structure(), &Structure::BlockMap { ino }, "{err}");
        assert_eq!(c.location(), &Location::FileBlock(0), "{err}");
        assert!(
            matches!(c.kind(), CorruptKind::Overlap {
                blocks: (first, _),
                with: OverlapWith::Journal { ino },
                with_blocks: (js, je),
            } if *first == target && *ino == jino && (*js..*je).contains(&target)),
            "{err}"
        );
        let e = err.to_string();
        assert!(e.contains("overlap the journal"), "{e}");
        fs.open_file_read_only("/a/b/c/f").unwrap();
        fs.open_file("/frag").unwrap();
        assert_eq!(dev.stats().writes, 0);
    }
}
