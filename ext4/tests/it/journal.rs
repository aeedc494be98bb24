//! The jbd2 journal: logs written by e2fsprogs (debugfs `jo`/`jw`/`jc`)
//! and by bufwrite's writer, recovered by bufwrite and by e2fsck on two
//! copies of one image, compared block for block; corrupt logs recovered
//! on a device that fails the test on any write outside the filesystem.

use super::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::{IoBufs, IoRequest, IoStats};
use bufwrite_engine::BlockDevice;
use bufwrite_ext4::jbd2::format::{self, JournalSuperblock};
use bufwrite_ext4::jbd2::{Journal, JournalWriter, RecoveryReport, ScanStop, SkipReason};
use bufwrite_ext4::orphan::Orphan;
use bufwrite_ext4::{Ext4, Ext4Error};
use bufwrite_testkit::e2fs::tool;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A RAM device that fails the test on a write past `limit` bytes (the
/// filesystem's end) and counts writes and flushes.
struct Bounded {
    inner: Mem,
    limit: u64,
    writes: AtomicU64,
    flushes: AtomicU64,
}

impl Bounded {
    fn new(bytes: Vec<u8>, limit: u64) -> Arc<Bounded> {
        Arc::new(Bounded {
            inner: Mem::from_bytes(bytes, 512),
            limit,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.inner.size() as usize];
        self.inner.read_at(0, &mut buf).unwrap();
        buf
    }
}

impl BlockDevice for Bounded {
    fn backend(&self) -> &'static str {
        "bounded"
    }
    fn describe(&self) -> String {
        "bounded ram".into()
    }
    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        for r in batch.iter() {
            if let IoBufs::Write(_) = r.bufs {
                let end = r.offset + r.bufs.len();
                assert!(
                    end <= self.limit,
                    "write of bytes {}..{end} past the filesystem's end {}",
                    r.offset,
                    self.limit
                );
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.inner.submit(batch)
    }
    fn flush(&self) -> bufwrite_engine::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush()
    }
    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
}

/// Filesystem block count and size from the image's superblock.
pub(super) fn geometry(img: &[u8]) -> (u64, u64) {
    let le32 = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
    let bs = 1024u64 << le32(1024 + 0x18);
    let inc = le32(1024 + 0x60);
    let hi = if inc & 0x80 != 0 {
        u64::from(le32(1024 + 0x150))
    } else {
        0
    };
    ((hi << 32) | u64::from(le32(1024 + 0x4)), bs)
}

/// What [`bufwrite_recover`] did.
pub(super) struct Recovered {
    /// The journal recovery, if one ran.
    pub report: Option<RecoveryReport>,
    /// The orphan list the open processed after the replay.
    pub orphans: Vec<Orphan>,
    /// The journal's `(first block, blocks)` runs.
    pub journal: Vec<(u64, u64)>,
}

/// Replays `img` in place through `Ext4::open` on a bounded device (the
/// journal, then the orphan list), unmounted.
pub(super) fn bufwrite_recover(img: &Path) -> Recovered {
    let bytes = std::fs::read(img).unwrap();
    let (blocks, bs) = geometry(&bytes);
    let dev = Bounded::new(bytes, blocks * bs);
    let fs = Ext4::open(dev.clone()).unwrap();
    let report = fs.recovery().cloned();
    assert!(
        fs.superblock().feature_incompat & 0x4 == 0,
        "needs_recovery still set"
    );
    let orphans = fs.orphans().to_vec();
    let jino = fs.superblock().journal_inum;
    let journal = match jino {
        0 => Vec::new(),
        _ => fs
            .map_inode(&fs.read_inode(jino).unwrap())
            .unwrap()
            .iter()
            .map(|e| (e.pblk, e.len))
            .collect(),
    };
    drop(fs);
    std::fs::write(img, dev.bytes()).unwrap();
    Recovered {
        report,
        orphans,
        journal,
    }
}

/// [`bufwrite_recover`]'s journal recovery report.
pub(super) fn bufwrite_replay(img: &Path) -> RecoveryReport {
    bufwrite_recover(img).report.expect("a recovery ran")
}

/// `e2fsck -y -E journal_only IMG`: replays the journal and finishes the
/// orphan list (even with no journal to replay), nothing more (with `-f`
/// e2fsck 1.47 goes on to a full check, which rewrites fields such as
/// `bg_itable_unused`). Returns its output.
pub(super) fn e2fsck_replay(img: &Path) -> String {
    let out = tool("e2fsck")
        .args(["-y", "-E", "journal_only"])
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.code().unwrap_or(8) < 4, "e2fsck: {text}");
    text
}

/// Superblock bytes e2fsck rewrites on its own account after a replay:
/// `s_wtime`, `s_lastcheck` (and their high bytes), `s_kbytes_written`,
/// `s_checksum`.
const SB_MASKED: [(usize, usize); 6] = [
    (0x30, 4),
    (0x40, 4),
    (0x178, 8),
    (0x274, 1),
    (0x277, 1),
    (0x3FC, 4),
];

/// Panics unless the two images are equal block for block, the primary
/// superblock's masked fields aside.
pub(super) fn assert_same_image(a: &Path, b: &Path) {
    assert_same_image_but(a, b, &[]);
}

/// As [`assert_same_image`], with more superblock fields masked.
pub(super) fn assert_same_image_but(a: &Path, b: &Path, more: &[(usize, usize)]) {
    let mut x = std::fs::read(a).unwrap();
    let mut y = std::fs::read(b).unwrap();
    assert_eq!(x.len(), y.len(), "image sizes");
    for &(o, n) in SB_MASKED.iter().chain(more) {
        x[1024 + o..1024 + o + n].fill(0);
        y[1024 + o..1024 + o + n].fill(0);
    }
    let (_, bs) = geometry(&x);
    let bs = bs as usize;
    let diff: Vec<usize> = (0..x.len() / bs)
        .filter(|&i| x[i * bs..(i + 1) * bs] != y[i * bs..(i + 1) * bs])
        .collect();
    let sb_bytes: Vec<(usize, u8, u8)> = (1024..2048)
        .filter(|&i| x[i] != y[i])
        .map(|i| (i - 1024, x[i], y[i]))
        .collect();
    assert!(
        diff.is_empty(),
        "{} and {} differ in blocks {:?} (superblock bytes {:x?})",
        a.display(),
        b.display(),
        &diff[..diff.len().min(20)],
        sb_bytes
    );
}

/// An image with a few files and a journal; `features` for mkfs.
fn image(dir: &Path, name: &str, bs: u32, features: &str) -> PathBuf {
    let img = mkfs(dir, name, bs, features, 32, &[]);
    let src = dir.join(format!("{name}.src"));
    std::fs::write(&src, pattern(100_000, 9)).unwrap();
    debugfs_w(
        &img,
        &[format!("write {} /f", src.display()), "mkdir /d".into()],
    );
    img
}

/// Runs `jo [JO_ARGS]`, the `jw` requests, `jc` in one debugfs session.
fn debugfs_journal(img: &Path, jo_args: &str, requests: &[String]) {
    let mut cmds = vec![format!("jo {jo_args}")];
    cmds.extend(requests.iter().cloned());
    cmds.push("jc".into());
    debugfs_w(img, &cmds);
}

/// Copies `img` to `NAME.e2fsck` and `NAME.bufwrite`.
fn two_copies(img: &Path) -> (PathBuf, PathBuf) {
    let a = img.with_extension("e2fsck");
    let b = img.with_extension("bufwrite");
    std::fs::copy(img, &a).unwrap();
    std::fs::copy(img, &b).unwrap();
    (a, b)
}

/// A data file of `blocks` blocks for `jw`, every block starting with a
/// distinct pattern; block `escaped` (if any) starts with the journal magic.
fn data_file(
    dir: &Path,
    name: &str,
    bs: u32,
    blocks: usize,
    seed: u64,
    escaped: Option<usize>,
) -> PathBuf {
    let mut d = pattern(blocks * bs as usize, seed);
    if let Some(i) = escaped {
        d[i * bs as usize..i * bs as usize + 4].copy_from_slice(&format::MAGIC.to_be_bytes());
    }
    let p = dir.join(name);
    std::fs::write(&p, d).unwrap();
    p
}

/// Free blocks well inside the image (past the metadata mkfs put first).
fn free_blocks(bs: u32) -> [u64; 6] {
    if bs == 1024 {
        [25000, 25001, 25002, 25100, 25101, 26000]
    } else {
        [5000, 5001, 5002, 5100, 5101, 6000]
    }
}

/// debugfs-written journals, every layout: three transactions (blocks
/// logged, one revoked by the second and logged again by the third, one
/// escaped data block), recovered by e2fsck and by bufwrite: equal images,
/// e2fsck -fn clean on both.
#[test]
fn debugfs_journals_replay_as_e2fsck_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    for bs in [1024u32, 4096] {
        for (features, jo) in [
            ("^metadata_csum,^64bit", ""),
            ("^metadata_csum,64bit", ""),
            ("metadata_csum,^64bit", "-c"),
            ("metadata_csum,64bit", "-c"),
        ] {
            let name = format!("dj-{bs}-{}{jo}.img", features.replace([',', '^'], "_"));
            let img = image(dir.path(), &name, bs, features);
            let b = free_blocks(bs);
            let d1 = data_file(dir.path(), &format!("{name}.d1"), bs, 3, 21, Some(2));
            let d2 = data_file(dir.path(), &format!("{name}.d2"), bs, 2, 22, None);
            debugfs_journal(
                &img,
                jo,
                &[
                    format!("jw -b {},{},{} {}", b[0], b[1], b[2], d1.display()),
                    format!("jw -r {}", b[1]),
                    format!("jw -b {},{} {}", b[3], b[1], d2.display()),
                    format!("jw -r {}", b[5]),
                ],
            );
            let (e, w) = two_copies(&img);
            e2fsck_replay(&e);
            let r = bufwrite_replay(&w);
            assert_eq!(r.transactions, 4, "{name}: {r}");
            assert_eq!(r.replayed, 4, "{name}: {r}");
            assert_eq!(r.revoked, 1, "{name}: {r}");
            assert_eq!(r.revoke_records, 2, "{name}: {r}");
            assert_eq!(r.failed_commit, None, "{name}: {r}");
            assert_same_image(&e, &w);
            fsck_ok(&w);
            let got = std::fs::read(&w).unwrap();
            let at = |blk: u64| &got[(blk * u64::from(bs)) as usize..][..bs as usize];
            let d1 = std::fs::read(&d1).unwrap();
            let d2 = std::fs::read(&d2).unwrap();
            assert_eq!(at(b[0]), &d1[..bs as usize], "{name}");
            // Escaped in the log, restored by the replay.
            assert_eq!(at(b[1])[..4], d2[bs as usize..][..4], "{name}");
            assert_eq!(at(b[2])[..4], format::MAGIC.to_be_bytes(), "{name}");
            assert_eq!(at(b[3]), &d2[..bs as usize], "{name}");
        }
    }
}

/// Opens the image's journal through a fresh `Ext4` on `dev`.
fn journal_of(dev: Arc<dyn BlockDevice>) -> Journal {
    let fs = Ext4::open_read_only(dev).unwrap();
    Journal::open(&fs).unwrap()
}

/// Blocks of `bs` bytes of a pattern; the first starts with the magic.
fn blocks(bs: u32, list: &[u64], seed: u64) -> Vec<(u64, Vec<u8>)> {
    list.iter()
        .enumerate()
        .map(|(i, &b)| {
            let mut d = pattern(bs as usize, seed + i as u64);
            if i == 0 {
                d[..4].copy_from_slice(&format::MAGIC.to_be_bytes());
            }
            (b, d)
        })
        .collect()
}

/// Sets the journal superblock's compat word and ORs bits into its incompat
/// word, by hand (only on journals without a superblock checksum).
fn set_journal_features(img: &Path, compat: u32, incompat_or: u32) {
    let mut bytes = std::fs::read(img).unwrap();
    let (_, bs) = geometry(&bytes);
    let p = first_journal_block(img);
    let off = (p * bs) as usize;
    let sb = &mut bytes[off..off + 1024];
    sb[0x24..0x28].copy_from_slice(&compat.to_be_bytes());
    let inc = u32::from_be_bytes(sb[0x28..0x2C].try_into().unwrap()) | incompat_or;
    sb[0x28..0x2C].copy_from_slice(&inc.to_be_bytes());
    std::fs::write(img, bytes).unwrap();
}

/// The device block of the journal superblock (`debugfs bmap <8> 0`).
fn first_journal_block(img: &Path) -> u64 {
    bufwrite_testkit::e2fs::debugfs_raw(img, "bmap <8> 0")
        .trim()
        .parse()
        .unwrap()
}

/// bufwrite-written journals, every layout (none, v1 crc32 with and
/// without async commit, v2, v3; 32/64-bit; 1 KiB/4 KiB): e2fsck and
/// bufwrite replay them to equal images; `debugfs logdump` parses them.
#[test]
fn writer_journals_replay_under_e2fsck() {
    let dir = tempfile::tempdir().unwrap();
    for bs in [1024u32, 4096] {
        for (features, compat, incompat, label) in [
            ("^metadata_csum,^64bit", 0, 0, "plain32"),
            ("^metadata_csum,64bit", 0, 0, "plain64"),
            ("^metadata_csum,64bit", 1, 0, "v1"),
            ("^metadata_csum,64bit", 1, 4, "v1async"),
            ("metadata_csum,64bit", 0, 0x8, "v2"),
            ("metadata_csum,^64bit", 0, 0x10, "v3_32"),
            ("metadata_csum,64bit", 0, 0x10, "v3"),
        ] {
            let name = format!("wj-{bs}-{label}.img");
            let img = image(dir.path(), &name, bs, features);
            if incompat & 0x18 != 0 {
                // Turn on journal checksums the way debugfs does (jo -c
                // writes v3; v2 is set by hand, with the checksum type).
                debugfs_journal(&img, "-c", &[]);
                if incompat == 0x8 {
                    let mut bytes = std::fs::read(&img).unwrap();
                    let off = (first_journal_block(&img) * u64::from(bs)) as usize;
                    let sb = &mut bytes[off..off + 1024];
                    let inc =
                        (u32::from_be_bytes(sb[0x28..0x2C].try_into().unwrap()) & !0x10) | 0x8;
                    sb[0x28..0x2C].copy_from_slice(&inc.to_be_bytes());
                    sb[0xFC..0x100].fill(0);
                    let raw = raw_crc32c(!0, sb);
                    sb[0xFC..0x100].copy_from_slice(&raw.to_be_bytes());
                    std::fs::write(&img, bytes).unwrap();
                }
            } else if compat != 0 || incompat != 0 {
                set_journal_features(&img, compat, incompat);
            }
            let b = free_blocks(bs);
            {
                let bytes = std::fs::read(&img).unwrap();
                let (nblocks, _) = geometry(&bytes);
                let dev = Bounded::new(bytes, nblocks * u64::from(bs));
                let mut w = JournalWriter::new(journal_of(dev.clone())).unwrap();
                w.commit_at(&blocks(bs, &[b[0], b[1], b[2]], 30), &[], 1000, 1)
                    .unwrap();
                w.commit_at(&[], &[b[1], b[5]], 1001, 2).unwrap();
                let big: Vec<u64> = (0..300).map(|i| b[5] + 10 + i).collect();
                w.commit_at(&blocks(bs, &big, 40), &[], 1002, 3).unwrap();
                w.commit_at(&blocks(bs, &[b[1], b[3]], 50), &[], 1003, 4)
                    .unwrap();
                std::fs::write(&img, dev.bytes()).unwrap();
            }
            let dump = bufwrite_testkit::e2fs::debugfs_raw(&img, "logdump");
            assert!(dump.contains("Found expected sequence"), "{name}: {dump}");
            assert!(!dump.to_lowercase().contains("bad"), "{name}: {dump}");
            let (e, w) = two_copies(&img);
            let text = e2fsck_replay(&e);
            assert!(text.contains("recovering journal"), "{name}: {text}");
            let r = bufwrite_replay(&w);
            assert_eq!(r.transactions, 4, "{name}: {r}");
            assert_eq!(r.revoked, 1, "{name}: {r}");
            assert_eq!(r.replayed, 3 + 300 + 2 - 1, "{name}: {r}");
            assert_same_image(&e, &w);
            fsck_ok(&w);
        }
    }
}

/// ext4's raw crc32c (seed in, no inversions).
fn raw_crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The writer wraps around the log (checkpointing when it must), sets
/// needs_recovery while transactions are live and clears it at
/// checkpoint; a log left live over the wrap point recovers, by e2fsck
/// and by bufwrite, to equal images.
#[test]
fn the_writer_wraps_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let bs = 1024u32;
    let img = image(dir.path(), "wrap.img", bs, "^metadata_csum,64bit");
    let bytes = std::fs::read(&img).unwrap();
    let (nblocks, _) = geometry(&bytes);
    let dev = Bounded::new(bytes, nblocks * u64::from(bs));
    let mut w = JournalWriter::new(journal_of(dev.clone())).unwrap();
    let lap = w.free_blocks();
    let mut wrapped = false;
    let mut last_head = w.head();
    // Transactions of 100 blocks until the head has wrapped and two are live.
    for round in 0..((lap / 100) * 2) {
        let list: Vec<u64> = (0..100).map(|i| 25000 + (round % 7) * 100 + i).collect();
        let info = w
            .commit_at(&blocks(bs, &list, round), &[], 2000 + round, 0)
            .unwrap();
        let sb_now = SbFlags::read_from(&dev);
        assert!(sb_now & 0x4 != 0, "needs_recovery while live");
        if w.head() < last_head {
            wrapped = true;
        }
        last_head = w.head();
        if wrapped && w.live().len() >= 2 && info.start + info.len > w.head() {
            break;
        }
    }
    assert!(wrapped, "the head never wrapped");
    let live = w.live();
    assert!(live.len() >= 2);
    std::fs::write(&img, dev.bytes()).unwrap();
    let (e, b) = two_copies(&img);
    e2fsck_replay(&e);
    let r = bufwrite_replay(&b);
    assert_eq!(r.transactions as usize, live.len(), "{r}");
    assert_eq!(r.start_sequence, live[0].sequence, "{r}");
    assert_same_image(&e, &b);
    fsck_ok(&b);
    // Checkpoint: in place, log empty, flag cleared.
    w.checkpoint().unwrap();
    assert_eq!(SbFlags::read_from(&dev) & 0x4, 0);
    let jsb = w.journal().superblock().clone();
    assert_eq!(jsb.start, 0);
    assert_eq!(jsb.sequence, w.next_sequence());
    std::fs::write(&img, dev.bytes()).unwrap();
    fsck_ok(&img);
}

/// Reads `s_feature_incompat` of the ext4 superblock on a device.
struct SbFlags;

impl SbFlags {
    fn read_from(dev: &Bounded) -> u32 {
        let mut b = vec![0u8; 1024];
        dev.read_at(1024, &mut b).unwrap();
        u32::from_le_bytes(b[0x60..0x64].try_into().unwrap())
    }
}

/// A read-only open does not replay and refuses writes naming the
/// journal; a writable open replays first.
#[test]
fn open_replays_only_when_writable() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "open.img", 4096, "");
    let d = data_file(dir.path(), "open.d", 4096, 1, 5, None);
    debugfs_journal(&img, "-c", &[format!("jw -b 7000 {}", d.display())]);
    let bytes = std::fs::read(&img).unwrap();
    let dev = Arc::new(Mem::from_bytes(bytes.clone(), 512));
    let fs = Ext4::open_read_only(dev.clone()).unwrap();
    assert!(fs.recovery().is_none());
    let e = fs.open_file("/f").unwrap_err();
    assert!(matches!(e, Ext4Error::NeedsRecovery(_)), "{e}");
    assert!(e.to_string().contains("needs recovery"), "{e}");
    let mut now = vec![0u8; bytes.len()];
    dev.read_at(0, &mut now).unwrap();
    assert!(now == bytes, "a read-only open wrote");
    let fs = Ext4::open(dev.clone()).unwrap();
    let r = fs.recovery().unwrap();
    assert_eq!((r.transactions, r.replayed), (1, 1), "{r}");
    assert!(fs.write_blockers().is_empty(), "{:?}", fs.write_blockers());
    fs.open_file("/f").unwrap();
    // The writer refuses a log that still needs recovery.
    let dev2 = Arc::new(Mem::from_bytes(bytes, 512));
    let e = JournalWriter::new(journal_of(dev2)).unwrap_err();
    assert!(matches!(e, Ext4Error::NeedsRecovery(_)), "{e}");
}

/// An external journal (s_journal_inum 0, a journal UUID) is refused by
/// `Journal::open`, naming it; the image still opens, writes refused.
#[test]
fn external_journals_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "ext.img", 4096, "");
    let mut bytes = std::fs::read(&img).unwrap();
    // needs_recovery, journal inode 0, a journal UUID and device.
    let sb = &mut bytes[1024..2048];
    let inc = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap()) | 0x4;
    sb[0x60..0x64].copy_from_slice(&inc.to_le_bytes());
    sb[0xE0..0xE4].fill(0);
    sb[0xD0..0xE0].fill(0xAB);
    sb[0xE4..0xE8].copy_from_slice(&0x0801u32.to_le_bytes());
    let c = raw_crc32c(!0, &sb[..0x3FC]);
    sb[0x3FC..0x400].copy_from_slice(&c.to_le_bytes());
    let dev = Arc::new(Mem::from_bytes(bytes, 512));
    let fs = Ext4::open(dev).unwrap();
    assert!(fs.recovery().is_none());
    let e = Journal::open(&fs).unwrap_err().to_string();
    assert!(e.contains("external"), "{e}");
    assert!(fs.open_file("/f").is_err());
}

/// Unknown journal incompat features are refused, their bits named; a
/// bad superblock checksum (v3) is corrupt.
#[test]
fn journal_superblock_checks() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "jsb.img", 4096, "");
    debugfs_journal(&img, "-c", &[]);
    let bytes = std::fs::read(&img).unwrap();
    let off = (first_journal_block(&img) * 4096) as usize;
    let good = bytes[off..off + 1024].to_vec();
    let sb = JournalSuperblock::parse(&good).unwrap();
    assert_eq!(sb.version, 2);
    assert!(sb.csum_v2_or_v3());
    let mut b = good.clone();
    b[0x28..0x2C].copy_from_slice(&(0x10u32 | 0x1000).to_be_bytes());
    let e = JournalSuperblock::parse(&b).unwrap_err().to_string();
    assert!(e.contains("0x1000"), "{e}");
    let mut b = good.clone();
    b[0x40] ^= 1;
    let e = JournalSuperblock::parse(&b).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
}

/// Corrupts `img`'s log block `jblk` with `f`, given the block's bytes.
fn edit_log_block(img: &Path, jblk: u64, f: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(img).unwrap();
    let (_, bs) = geometry(&bytes);
    let p: u64 = bufwrite_testkit::e2fs::debugfs_raw(img, &format!("bmap <8> {jblk}"))
        .trim()
        .parse()
        .unwrap();
    let off = (p * bs) as usize;
    f(&mut bytes[off..off + bs as usize]);
    std::fs::write(img, bytes).unwrap();
}

/// A three-transaction debugfs log (v3 checksums unless `jo` says
/// otherwise) on a fresh image: T1 at log blocks 1..=4 (descriptor, two
/// data, commit), T2 at 5..=7, T3 at 8..=10.
fn three_transactions(dir: &Path, name: &str, jo: &str, features: &str) -> PathBuf {
    let img = image(dir, name, 4096, features);
    let d = data_file(dir, &format!("{name}.d"), 4096, 2, 60, None);
    debugfs_journal(
        &img,
        jo,
        &[
            format!("jw -b 5000,5001 {}", d.display()),
            format!("jw -b 5002 {}", d.display()),
            format!("jw -b 5003 {}", d.display()),
        ],
    );
    img
}

/// Recovers with bufwrite on a bounded device; the result and the image.
fn bufwrite_try(img: &Path) -> (Result<RecoveryReport, String>, Vec<u8>) {
    let bytes = std::fs::read(img).unwrap();
    let (blocks, bs) = geometry(&bytes);
    let dev = Bounded::new(bytes, blocks * bs);
    let r = Ext4::open(dev.clone())
        .map(|fs| fs.recovery().cloned().expect("a recovery ran"))
        .map_err(|e| e.to_string());
    (r, dev.bytes())
}

/// Corrupt logs: each stops where the kernel stops, and the images equal
/// e2fsck's where e2fsck replays the same.
#[test]
fn corrupt_logs_stop_where_the_kernel_stops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Log layout of three_transactions: T1 1..=4, T2 5..=7, T3 8..=10.
    // 1. T2's commit checksum fails (v3, sync commit): T1 replayed, T2 is
    //    a failed commit, the filesystem marked in error (e2fsck: "journal
    //    transaction 2 was corrupt, replay was aborted").
    let img = three_transactions(d, "c1.img", "-c", "");
    edit_log_block(&img, 7, |b| b[100] ^= 1);
    let (e, w) = two_copies(&img);
    e2fsck_replay(&e);
    let r = bufwrite_replay(&w);
    assert_eq!(r.failed_commit, Some(2), "{r}");
    assert_eq!(r.transactions, 1, "{r}");
    assert_eq!(r.stop, ScanStop::CommitChecksum { sequence: 2 }, "{r}");
    assert!(r.marked_error);
    // e2fsck, having marked the filesystem in error, goes on to a full
    // check (journal_only notwithstanding) that finds it clean and clears
    // the error: s_state is the one difference.
    let state = std::fs::read(&w).unwrap()[1024 + 0x3A];
    assert_eq!(state & 2, 2, "bufwrite leaves the error for e2fsck");
    assert_same_image_but(&e, &w, &[(0x3A, 2)]);

    // 2. T3 truncated (no commit block): T1 and T2 replayed.
    let img = three_transactions(d, "c2.img", "-c", "");
    edit_log_block(&img, 10, |b| b.fill(0));
    let (e, w) = two_copies(&img);
    e2fsck_replay(&e);
    let r = bufwrite_replay(&w);
    assert_eq!(r.transactions, 2, "{r}");
    assert_eq!(r.stop, ScanStop::NoMagic { block: 10 }, "{r}");
    assert!(!r.marked_error);
    assert_same_image(&e, &w);

    // 3. A data block of T2 flipped (v3 tag checksum): skipped, the rest
    //    replayed, the filesystem marked in error.
    let img = three_transactions(d, "c3.img", "-c", "");
    edit_log_block(&img, 6, |b| b[9] ^= 0x40);
    let (_, w) = two_copies(&img);
    let r = bufwrite_replay(&w);
    assert_eq!(r.transactions, 3, "{r}");
    assert_eq!(r.skipped, vec![(5002, SkipReason::BadChecksum)], "{r}");
    assert_eq!(r.replayed, 3, "{r}");
    assert!(r.marked_error);

    // 4. T2's descriptor fails its tail checksum and its commit time is
    //    not older: the kernel's -EFSBADCRC; nothing is written.
    let img = three_transactions(d, "c4.img", "-c", "");
    edit_log_block(&img, 5, |b| b[4000] ^= 1);
    let before = std::fs::read(&img).unwrap();
    let (r, after) = bufwrite_try(&img);
    let e = r.unwrap_err();
    assert!(e.contains("corrupt journal"), "{e}");
    assert!(after == before, "a failed recovery wrote");

    // 5. v1 crc32 commit checksums (no csum v2/v3): T2's data flipped
    //    fails the crc32 in T2's commit: T1 replayed, T2 a failed commit.
    let img = three_transactions(d, "c5.img", "", "^metadata_csum");
    set_journal_features(&img, 1, 0);
    // debugfs wrote no crc32 (type 0, size 0, sum 0: "unused", accepted)
    // so the flip is invisible to v1 and all three replay, as in e2fsck.
    edit_log_block(&img, 6, |b| b[9] ^= 0x40);
    let (e, w) = two_copies(&img);
    e2fsck_replay(&e);
    let r = bufwrite_replay(&w);
    assert_eq!(r.transactions, 3, "{r}");
    assert_same_image(&e, &w);

    // 6. Garbage tags: block numbers past the filesystem and inside the
    //    journal are skipped, the Bounded device proves nothing was written
    //    outside.
    let img = three_transactions(d, "c6.img", "", "^metadata_csum");
    let jblock = first_journal_block(&img);
    edit_log_block(&img, 1, |b| {
        // 64-bit tags: tag 0 (12 bytes + uuid) -> past the end; tag 1
        // (at byte 40) -> the journal.
        b[12..16].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
        b[40..44].copy_from_slice(&(jblock as u32 + 3).to_be_bytes());
    });
    let (r, _) = bufwrite_try(&img);
    let r = r.unwrap();
    assert_eq!(
        r.skipped,
        vec![
            (0x00FF_FFFF, SkipReason::OutsideFilesystem),
            (jblock + 3, SkipReason::InsideJournal)
        ],
        "{r}"
    );
    assert_eq!(r.replayed, 2, "{r}");
}

/// Revokes: a block revoked by a later transaction is not replayed from
/// earlier ones, and is replayed from a transaction after the revoke.
#[test]
fn revokes_apply_to_earlier_and_equal_transactions_only() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "rv.img", 4096, "");
    let d1 = data_file(dir.path(), "rv.d1", 4096, 1, 1, None);
    let d2 = data_file(dir.path(), "rv.d2", 4096, 1, 2, None);
    let before = std::fs::read(&img).unwrap();
    debugfs_journal(
        &img,
        "-c",
        &[
            format!("jw -b 5000 {}", d1.display()),
            format!("jw -b 5001 {}", d1.display()),
            "jw -r 5000,5001".into(),
            format!("jw -b 5001 {}", d2.display()),
        ],
    );
    let (e, w) = two_copies(&img);
    e2fsck_replay(&e);
    let r = bufwrite_replay(&w);
    assert_eq!((r.transactions, r.revoked, r.replayed), (4, 2, 1), "{r}");
    assert_same_image(&e, &w);
    let got = std::fs::read(&w).unwrap();
    assert_eq!(
        got[5000 * 4096..5001 * 4096],
        before[5000 * 4096..5001 * 4096]
    );
    assert_eq!(
        got[5001 * 4096..5002 * 4096],
        std::fs::read(&d2).unwrap()[..]
    );
}

/// Seeded byte flips anywhere in a written log: recovery never panics,
/// never writes past the filesystem (the Bounded device), and when e2fsck
/// replays the same image without complaint the two images are equal.
#[test]
fn random_flips_never_panic_or_write_outside() {
    let dir = tempfile::tempdir().unwrap();
    let img = three_transactions(dir.path(), "flip.img", "-c", "");
    let base = std::fs::read(&img).unwrap();
    let (_, bs) = geometry(&base);
    // Device blocks of log blocks 0..=11 (superblock, three transactions,
    // the block after them).
    let log: Vec<u64> = (0..12)
        .map(|j| {
            bufwrite_testkit::e2fs::debugfs_raw(&img, &format!("bmap <8> {j}"))
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..48 {
        let mut bytes = base.clone();
        for _ in 0..(1 + next() % 4) {
            let blk = log[(next() % 12) as usize];
            let at = (blk * bs) as usize + (next() % bs) as usize;
            bytes[at] ^= 1 << (next() % 8);
        }
        let p = dir.path().join(format!("flip-{round}.img"));
        std::fs::write(&p, &bytes).unwrap();
        let (r, after) = bufwrite_try(&p);
        if let Ok(report) = &r {
            if !report.marked_error && report.skipped.is_empty() {
                let e = p.with_extension("e2fsck");
                std::fs::write(&e, &bytes).unwrap();
                let text = e2fsck_replay(&e);
                // Only where e2fsck did nothing but replay (no full check
                // after a journal problem).
                if !text.contains("corrupt") && !text.contains("Pass 1") {
                    let w = p.with_extension("bufwrite");
                    std::fs::write(&w, &after).unwrap();
                    eprintln!("round {round}: {report}\n{text}");
                    assert_same_image(&e, &w);
                }
            }
        }
    }
}

/// Opt-in (`BUFWRITE_ROOT_TESTS=1`; needs root, `losetup` and `mount`): a
/// journal the kernel wrote. The image is mounted read-write on a loop
/// device, files are written and `sync -f` commits them to the journal
/// (a commit, not a checkpoint: the log stays live and needs_recovery is
/// on disk while mounted); the backing file is copied while still
/// mounted, so the copies are what a crash would leave. bufwrite's and
/// e2fsck's replays of two copies are equal block for block.
#[test]
fn a_kernel_written_journal_replays_as_e2fsck_replays_it() {
    if std::env::var_os("BUFWRITE_ROOT_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions, Mounted};
    let dir = tempfile::tempdir().unwrap();
    for (bs, features) in [(4096u32, ""), (1024, "^metadata_csum,^64bit")] {
        let name = format!("kernel-{bs}.img");
        let img = image(dir.path(), &name, bs, features);
        let lo = LoopDevice::attach(&img, LoopOptions::default())
            .expect("a free loop device (losetup --find)");
        let mnt = tempfile::tempdir().unwrap();
        let mounted = Mounted::ext4(lo.path(), mnt.path(), false).expect("mount");
        for i in 0..20u64 {
            let p = mnt.path().join(format!("k{i}"));
            std::fs::write(&p, pattern(3000 + i as usize * 700, 70 + i)).unwrap();
        }
        std::fs::create_dir(mnt.path().join("kd")).unwrap();
        std::fs::remove_file(mnt.path().join("k3")).unwrap();
        let out = std::process::Command::new("sync")
            .arg("-f")
            .arg(mnt.path().join("k0"))
            .output()
            .unwrap();
        assert!(out.status.success(), "sync -f");
        let (e, w) = two_copies(&img);
        drop(mounted);
        lo.detach().expect("losetup -d");
        let bytes = std::fs::read(&w).unwrap();
        assert!(
            u32::from_le_bytes(bytes[1024 + 0x60..1024 + 0x64].try_into().unwrap()) & 0x4 != 0,
            "{name}: the copy has no needs_recovery"
        );
        e2fsck_replay(&e);
        let r = bufwrite_replay(&w);
        eprintln!("{name}: {r}");
        assert!(r.transactions > 0 && r.replayed > 0, "{name}: {r}");
        assert!(!r.marked_error && r.skipped.is_empty(), "{name}: {r}");
        // The kernel keeps the superblock's free counts lazily (the group
        // descriptors are authoritative) and counted this mount; e2fsck
        // rewrites the counts from the descriptors and resets the mount
        // count: s_free_blocks_count (lo, hi), s_free_inodes_count,
        // s_mnt_count.
        assert_same_image_but(&e, &w, &[(0xC, 4), (0x158, 4), (0x10, 4), (0x34, 2)]);
        fsck_ok(&w);
        assert_eq!(dump(&w, "/k5"), pattern(3000 + 5 * 700, 75), "{name}");
    }
}

/// `EXT4_IOC_SHUTDOWN` (the same number as XFS's GOINGDOWN: `_IOR('X',
/// 125, __u32)`) and its flag that aborts the journal without flushing it:
/// from that instant the filesystem writes nothing more to its device, so
/// the device holds exactly what a power cut at that instant leaves
/// (xfstests' "godown").
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 0x2;

/// Shuts the filesystem mounted at `mnt` down as a crash would.
fn shutdown_now(mnt: &Path) {
    let dir = std::fs::File::open(mnt).unwrap();
    let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the fd is open for the whole call and the ioctl reads one
    // u32 through the pointer, which points at a live local.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "EXT4_IOC_SHUTDOWN: {}",
        std::io::Error::last_os_error()
    );
}

/// Opt-in (`BUFWRITE_ROOT_TESTS=1`): a kernel journal cut mid-run. Two
/// writers create, append and fsync files on a kernel ext4 mount, a third
/// thread unlinks and truncates; while they run the filesystem is shut
/// down without flushing its log (`EXT4_IOC_SHUTDOWN`, NOLOGFLUSH), which
/// freezes the device at that instant with transactions committed,
/// committing and running. The device is then the crash image: bufwrite's
/// replay equals e2fsck's block for block (but the lazily kept counts),
/// is `e2fsck -fn` clean, and every byte an fsync acknowledged reads back.
#[test]
fn a_kernel_journal_cut_mid_run_replays_as_e2fsck_replays_it() {
    if std::env::var_os("BUFWRITE_ROOT_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions, Mounted};
    use std::io::Write;
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    for (bs, features) in [(4096u32, ""), (1024, "^metadata_csum,^64bit")] {
        let name = format!("cut-{bs}.img");
        let img = image(dir.path(), &name, bs, features);
        let lo = LoopDevice::attach(&img, LoopOptions::default())
            .expect("a free loop device (losetup --find)");
        let mnt = tempfile::tempdir().unwrap();
        let mounted = Mounted::ext4(lo.path(), mnt.path(), false).expect("mount");
        let fsyncs = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Each writer's acknowledged (file, length, seed) triples.
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let root = mnt.path().to_path_buf();
                let fsyncs = Arc::clone(&fsyncs);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    // (file, length, seed, order of the acknowledgement).
                    let mut acked: Vec<(String, usize, u64, u64)> = Vec::new();
                    'files: for i in 0..10_000u64 {
                        let rel = format!("w{w}-{i}");
                        let seed = w * 100_000 + i;
                        let data = pattern(64 * 1024, seed);
                        let Ok(mut f) = std::fs::File::create(root.join(&rel)) else {
                            break;
                        };
                        let mut len = 0;
                        for chunk in data.chunks(3000 + 1000 * w as usize) {
                            if stop.load(Ordering::Relaxed)
                                || f.write_all(chunk).is_err()
                                || f.sync_all().is_err()
                            {
                                break 'files;
                            }
                            len += chunk.len();
                            let seq = fsyncs.fetch_add(1, Ordering::SeqCst);
                            acked.push((rel.clone(), len, seed, seq));
                        }
                    }
                    acked
                })
            })
            .collect();
        let churn = {
            let root = mnt.path().to_path_buf();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Files unlinked while open: orphans without links until
                // closed, which is after the shutdown for the last ones.
                let mut held = std::collections::VecDeque::new();
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let p = root.join(format!("c{}", i % 8));
                    let _ = std::fs::write(&p, pattern(20_000, i));
                    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                        let _ = f.set_len(5000);
                        if i % 3 == 0 {
                            held.push_back(f);
                            if held.len() > 3 {
                                held.pop_front();
                            }
                        }
                    }
                    if i % 3 == 0 {
                        let _ = std::fs::remove_file(&p);
                    }
                }
                held
            })
        };
        while fsyncs.load(Ordering::Relaxed) < 150 {
            std::thread::yield_now();
        }
        // What was acknowledged before the shutdown began must be on the
        // device. ext4's shutdown sets its flag, waits 100 ms, then aborts
        // the journal: an fsync returning inside that window is not held
        // to it.
        let cutoff = fsyncs.load(Ordering::SeqCst);
        shutdown_now(mnt.path());
        stop.store(true, Ordering::Relaxed);
        // Per file, the longest length acknowledged before the cut.
        let mut acked: Vec<(String, usize, u64)> = Vec::new();
        for (rel, len, seed, seq) in writers.into_iter().flat_map(|h| h.join().unwrap()) {
            if seq < cutoff {
                acked.retain(|(r, _, _)| *r != rel);
                acked.push((rel, len, seed));
            }
        }
        let held = churn.join().unwrap();
        // Unmounting a shut-down filesystem writes nothing; detaching
        // waits for the loop device's last writes to reach the file.
        drop(held);
        drop(mounted);
        lo.detach().expect("losetup -d");
        let (e, w) = two_copies(&img);
        let bytes = std::fs::read(&w).unwrap();
        assert!(
            u32::from_le_bytes(bytes[1024 + 0x60..1024 + 0x64].try_into().unwrap()) & 0x4 != 0,
            "{name}: the crash image has no needs_recovery"
        );
        let text = e2fsck_replay(&e);
        let got = bufwrite_recover(&w);
        let r = got.report.as_ref().expect("a recovery ran");
        eprintln!(
            "{name}: {r}; orphans {:?}; {} files acknowledged",
            got.orphans,
            acked.len()
        );
        assert!(r.transactions > 0 && r.replayed > 0, "{name}: {r}");
        assert!(!r.marked_error && r.skipped.is_empty(), "{name}: {r}");
        fsck_ok(&w);
        super::orphan::mask_orphan_differences(&e, &w, &text, &got.orphans, &got.journal);
        assert_same_image_but(&e, &w, &[(0xC, 4), (0x158, 4), (0x10, 4), (0x34, 2)]);
        assert!(!acked.is_empty(), "{name}: no fsync was acknowledged");
        for (rel, len, seed) in &acked {
            let got = dump(&w, &format!("/{rel}"));
            assert!(
                got.len() >= *len,
                "{name}: /{rel} has {} of {len} fsynced bytes",
                got.len()
            );
            assert_eq!(
                &got[..*len],
                &pattern(64 * 1024, *seed)[..*len],
                "{name}: /{rel}"
            );
        }
    }
}
