//! Crash simulation on journaled images. A workload that creates,
//! appends, preallocates (fallocate, both modes), punches, truncates and
//! unlinks is cut at every device write in turn, two ways: `Lose` (the
//! writes since the last flush are gone, as a volatile cache loses them)
//! and `Keep` (every write up to the cut landed, in order). Each distinct
//! crashed image is then recovered three ways:
//!
//! 1. bufwrite's own replay (`Ext4::open`), after which `e2fsck -fn` must
//!    be clean — no leaked block or inode, no wrong count — and a new file
//!    written by bufwrite on the recovered image must leave it clean too;
//! 2. e2fsck's: `e2fsck -y -E journal_only` on a copy must give the same
//!    image block for block, and a full `e2fsck -fy` on it must find
//!    nothing to fix;
//! 3. (opt-in, `BUFWRITE_ROOT_TESTS=1`) the kernel's: a loop mount of a
//!    copy, read through the mount, unmounted, then `e2fsck -fn` clean.
//!
//! The files read back as at some point between the last completed fsync
//! and the operation in flight: every operation is atomic in the journal,
//! so what the crash may show is a prefix of the history at least as long
//! as what was fsynced.

use super::common::*;
use super::crash::CrashAfter;
use super::journal::{assert_same_image, e2fsck_replay};
use bufwrite_engine::device::faulty::{CrashMode, Faulty};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::mapping::FallocMode;
use bufwrite_engine::{
    AllocPolicy, BlockDevice, FileOptions, Mount, OpenFlags, OrderPolicy, WritePath,
};
use bufwrite_ext4::Ext4;
use bufwrite_testkit::e2fs::tool;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// What the files hold after an operation.
type State = BTreeMap<&'static str, Vec<u8>>;

/// Every name the workload uses.
const NAMES: [&str; 4] = ["/a", "/b", "/c", "/d"];

/// The history of one run: the state after each operation started (the
/// last one may be the operation the crash cut), and the index of the
/// state the last completed fsync made durable.
struct History {
    states: Vec<State>,
    durable: usize,
}

impl History {
    /// An operation is about to run: the state it leads to.
    fn op(&mut self, f: impl FnOnce(&mut State)) {
        let mut s = self.states.last().cloned().unwrap_or_default();
        f(&mut s);
        self.states.push(s);
    }

    /// The operations so far are durable.
    fn synced(&mut self) {
        self.durable = self.states.len() - 1;
    }

    /// The states a crash may leave.
    fn allowed(&self) -> &[State] {
        &self.states[self.durable..]
    }
}

fn grow(s: &mut State, name: &'static str, bytes: &[u8]) {
    s.entry(name).or_default().extend_from_slice(bytes);
}

/// Runs the workload until the device dies (or to its end).
fn workload(
    dev: Arc<dyn BlockDevice>,
    policy: AllocPolicy,
    mkpath: fn() -> Box<dyn WritePath>,
) -> History {
    let mut h = History {
        states: vec![State::new()],
        durable: 0,
    };
    let _ = (|| -> bufwrite_engine::Result<()> {
        let fs =
            Arc::new(Ext4::open_with(dev.clone(), policy).map_err(bufwrite_engine::Error::from)?);
        let m = Mount::new(dev.clone(), fs);
        let opts = FileOptions {
            order: OrderPolicy::FromWrite { max_order: 4 },
        };
        let create = OpenFlags {
            create: true,
            exclusive: true,
            truncate: false,
        };
        // Create and append.
        h.op(|s| {
            s.insert("/a", Vec::new());
        });
        let a = m.open("/a", create, mkpath(), opts)?;
        let b1 = pattern(9000, 1);
        h.op(|s| grow(s, "/a", &b1));
        a.pwrite(0, &b1)?;
        a.fsync()?;
        h.synced();
        h.op(|s| {
            s.insert("/b", Vec::new());
        });
        let b = m.open("/b", create, mkpath(), opts)?;
        let b2 = pattern(3000, 2);
        h.op(|s| grow(s, "/b", &b2));
        b.pwrite(0, &b2)?;
        b.fsync()?;
        h.synced();
        let b3 = pattern(7000, 3);
        h.op(|s| grow(s, "/a", &b3));
        a.pwrite(9000, &b3)?;
        a.fsync()?;
        h.synced();
        // fallocate growing the file: unwritten blocks read as zeros.
        h.op(|s| grow(s, "/b", &[0u8; 9000]));
        b.fallocate(3000, 9000, FallocMode::Allocate)?;
        b.fsync()?;
        h.synced();
        // Preallocated past EOF, then appended into: the write converts
        // the unwritten extent.
        h.op(|_| {});
        a.fallocate(16_000, 14_000, FallocMode::KeepSize)?;
        let b4 = pattern(5000, 4);
        h.op(|s| grow(s, "/a", &b4));
        a.pwrite(16_000, &b4)?;
        a.fsync()?;
        h.synced();
        // A fragmented file (an extent tree block), then punched.
        h.op(|s| {
            s.insert("/c", Vec::new());
        });
        let c = m.open("/c", create, mkpath(), opts)?;
        let b5 = pattern(40 * 1024, 5);
        h.op(|s| grow(s, "/c", &b5));
        c.pwrite(0, &b5)?;
        c.fsync()?;
        h.synced();
        for i in 0..10u64 {
            let off = i * 4096 + 1024;
            h.op(|s| {
                if let Some(v) = s.get_mut("/c") {
                    v[off as usize..off as usize + 2048].fill(0);
                }
            });
            c.fallocate(off, 2048, FallocMode::PunchHole)?;
        }
        c.fsync()?;
        h.synced();
        // Truncate. The tail of the new EOF block is zeroed in the cache
        // and written in place before the commit that shrinks the size
        // (data=ordered: the kernel's ext4_block_truncate_page puts it on
        // the same transaction's ordered list), so a crash in between
        // shows the old size with those bytes zeroed.
        h.op(|s| {
            if let Some(v) = s.get_mut("/a") {
                v[5001..5120].fill(0);
            }
        });
        h.op(|s| {
            if let Some(v) = s.get_mut("/a") {
                v.truncate(5001);
            }
        });
        a.set_len(5001)?;
        a.fsync()?;
        h.synced();
        // Unlinks (the second frees the tree block logged earlier: a
        // revoke), each committed by an fsync of /a.
        b.close()?;
        h.op(|s| {
            s.remove("/b");
        });
        m.unlink("/b")?;
        a.fsync()?;
        h.synced();
        c.close()?;
        h.op(|s| {
            s.remove("/c");
        });
        m.unlink("/c")?;
        a.fsync()?;
        h.synced();
        // A new file over the freed blocks.
        h.op(|s| {
            s.insert("/d", Vec::new());
        });
        let d = m.open("/d", create, mkpath(), opts)?;
        let b6 = pattern(30_000, 6);
        h.op(|s| grow(s, "/d", &b6));
        d.pwrite(0, &b6)?;
        d.fsync()?;
        h.synced();
        d.close()?;
        a.close()?;
        Ok(())
    })();
    h
}

/// The files of `img` (`NAMES`) as debugfs dumps them, `None` for a name
/// that does not exist. One debugfs run.
fn files_of(img: &Path) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    let dir = img.with_extension("files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cmds: String = NAMES
        .iter()
        .map(|n| format!("dump {n} {}/{}\n", dir.display(), &n[1..]))
        .collect();
    let f = img.with_extension("dumps");
    std::fs::write(&f, cmds).unwrap();
    let out = tool("debugfs").arg("-f").arg(&f).arg(img).output().unwrap();
    assert!(out.status.success(), "debugfs on {}", img.display());
    NAMES
        .iter()
        .map(|n| (*n, std::fs::read(dir.join(&n[1..])).ok()))
        .collect()
}

/// Panics unless `got` is one of the allowed states.
fn check_files(got: &BTreeMap<&'static str, Option<Vec<u8>>>, h: &History, what: &str) {
    let fits = |s: &State| {
        NAMES
            .iter()
            .all(|n| got.get(n).cloned().flatten().as_ref() == s.get(n))
    };
    if h.allowed().iter().any(fits) {
        return;
    }
    let have: Vec<String> = got
        .iter()
        .map(|(n, v)| format!("{n}: {:?}", v.as_ref().map(Vec::len)))
        .collect();
    // Per allowed state: the files that differ, with their first
    // differing byte.
    let want: Vec<String> = h
        .allowed()
        .iter()
        .map(|s| {
            let diffs: Vec<String> = NAMES
                .iter()
                .filter_map(|n| {
                    let (g, w) = (got.get(n).cloned().flatten(), s.get(n));
                    match (g.as_ref(), w) {
                        (Some(g), Some(w)) if g != w => {
                            let at = g.iter().zip(w).position(|(x, y)| x != y);
                            Some(format!(
                                "{n}: {} vs {} bytes, first difference at {at:?}",
                                g.len(),
                                w.len()
                            ))
                        }
                        (None, Some(_)) => Some(format!("{n} missing")),
                        (Some(_), None) => Some(format!("{n} should not exist")),
                        _ => None,
                    }
                })
                .collect();
            format!("{diffs:?}")
        })
        .collect();
    if std::env::var_os("JCRASH_DEBUG").is_some() {
        for (i, st) in h.allowed().iter().enumerate() {
            for (n, v) in st {
                std::fs::write(format!("/tmp/jc.want{i}.{}", &n[1..]), v).unwrap();
            }
        }
    }
    panic!(
        "{what}: the files read back as no state since the last fsync: have {have:?}, allowed {want:?}"
    );
}

/// `e2fsck` with `args` on `img`: its exit code and output.
fn e2fsck(img: &Path, args: &[&str]) -> (i32, String) {
    let out = tool("e2fsck").args(args).arg(img).output().unwrap();
    (
        out.status.code().unwrap_or(8),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// True when everything a `e2fsck -fy` run fixed is the superblock's
/// free totals, which a journaled ext4 keeps lazily (the kernel's percpu
/// counters; bufwrite's too): they are written at unmount, so a crash
/// leaves them behind the group descriptors, which are authoritative.
fn only_lazy_counts(out: &str) -> bool {
    out.lines().map(str::trim).all(|l| {
        l.is_empty()
            || l.starts_with("Pass ")
            || l.starts_with("e2fsck ")
            || l.starts_with("Free blocks count wrong (")
            || l.starts_with("Free inodes count wrong (")
            || l == "Fix? yes"
            || l.contains("***** FILE SYSTEM WAS MODIFIED *****")
            || l.contains(" files (")
    })
}

/// Replays `bytes` with bufwrite (`Ext4::open`, then unmount).
fn bufwrite_replay(bytes: Vec<u8>, policy: AllocPolicy) -> Vec<u8> {
    let mem = Arc::new(Mem::from_bytes(bytes, 512));
    let fs = Ext4::open_with(mem.clone(), policy).expect("the crashed image opens");
    drop(fs);
    let mut buf = vec![0u8; mem.size() as usize];
    mem.read_at(0, &mut buf).unwrap();
    buf
}

/// Writes a new file with bufwrite on the recovered image `bytes`: the
/// allocator state the replay left must be sound.
fn write_after(bytes: Vec<u8>, policy: AllocPolicy, mkpath: fn() -> Box<dyn WritePath>) -> Vec<u8> {
    let mem = Arc::new(Mem::from_bytes(bytes, 512));
    let dev: Arc<dyn BlockDevice> = mem.clone();
    {
        let fs = Arc::new(Ext4::open_with(dev.clone(), policy).unwrap());
        let m = Mount::new(dev.clone(), fs);
        let create = OpenFlags {
            create: true,
            exclusive: true,
            truncate: false,
        };
        let f = m
            .open("/after", create, mkpath(), FileOptions::default())
            .unwrap();
        f.pwrite(0, &pattern(20_000, 99)).unwrap();
        f.close().unwrap();
        m.sync().unwrap();
    }
    let mut buf = vec![0u8; mem.size() as usize];
    mem.read_at(0, &mut buf).unwrap();
    buf
}

/// The kernel's recovery (opt-in): mounts a copy on a loop device, reads
/// the files through the mount, unmounts, checks it.
fn kernel_recovery(img: &Path, h: &History, what: &str) {
    use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions, Mounted};
    let copy = img.with_extension("kernel");
    std::fs::copy(img, &copy).unwrap();
    let lo = LoopDevice::attach(&copy, LoopOptions::default()).expect("a free loop device");
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Mounted::ext4(lo.path(), mnt.path(), false).expect("mount");
    let got: BTreeMap<&'static str, Option<Vec<u8>>> = NAMES
        .iter()
        .map(|n| (*n, std::fs::read(mnt.path().join(&n[1..])).ok()))
        .collect();
    drop(mounted);
    lo.detach().expect("losetup -d");
    check_files(&got, h, &format!("{what} (kernel)"));
    let (code, out) = e2fsck(&copy, &["-fn"]);
    assert_eq!(
        code, 0,
        "{what}: e2fsck -fn after the kernel's recovery:\n{out}"
    );
}

/// Checks one crashed image all three ways.
fn recover_and_check(
    dir: &Path,
    crashed: &[u8],
    h: &History,
    policy: AllocPolicy,
    mkpath: fn() -> Box<dyn WritePath>,
    what: &str,
) {
    // 1. bufwrite's replay.
    let replayed = bufwrite_replay(crashed.to_vec(), policy);
    let bw = dir.join("bufwrite.img");
    std::fs::write(&bw, &replayed).unwrap();
    if std::env::var_os("JCRASH_DEBUG").is_some() {
        // What a failure below left, for a look with debugfs.
        std::fs::copy(&bw, "/tmp/jc.bufwrite").unwrap();
        std::fs::write("/tmp/jc.crashed", crashed).unwrap();
    }
    let (code, out) = e2fsck(&bw, &["-fn"]);
    assert_eq!(
        code, 0,
        "{what}: e2fsck -fn after bufwrite's replay:\n{out}"
    );
    check_files(&files_of(&bw), h, &format!("{what} (bufwrite)"));
    let after = dir.join("after.img");
    std::fs::write(&after, write_after(replayed, policy, mkpath)).unwrap();
    let (code, out) = e2fsck(&after, &["-fn"]);
    assert_eq!(
        code, 0,
        "{what}: e2fsck -fn after a write on the replayed image:\n{out}"
    );
    assert_eq!(
        dump(&after, "/after"),
        pattern(20_000, 99),
        "{what}: /after"
    );
    // 2. e2fsck's replay: the same image, and nothing else to fix.
    let ef = dir.join("e2fsck.img");
    std::fs::write(&ef, crashed).unwrap();
    e2fsck_replay(&ef);
    if std::env::var_os("JCRASH_DEBUG").is_some() {
        eprintln!("{what}");
        std::fs::copy(&ef, "/tmp/jc.e2fsck").unwrap();
    }
    assert_same_image(&ef, &bw);
    let (code, out) = e2fsck(&ef, &["-fy"]);
    assert!(
        code == 0 || (code == 1 && only_lazy_counts(&out)),
        "{what}: e2fsck -fy found something to fix after the replay:\n{out}"
    );
    // 3. The kernel's.
    if std::env::var_os("BUFWRITE_ROOT_TESTS").is_some_and(|v| v == "1") {
        let k = dir.join("kernel.img");
        std::fs::write(&k, crashed).unwrap();
        kernel_recovery(&k, h, what);
    }
}

fn crash_everywhere(pname: &str, mkpath: fn() -> Box<dyn WritePath>, policy: AllocPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let img0 = mkfs(
        dir.path(),
        "j.img",
        1024,
        "metadata_csum,has_journal",
        8,
        &[],
    );
    let bytes = std::fs::read(&img0).unwrap();
    // A run with no crash counts the writes and must finish clean.
    let total = {
        let faulty = Arc::new(Faulty::new(Arc::new(Mem::from_bytes(bytes.clone(), 512))));
        let dev = CrashAfter::new(faulty, u64::MAX);
        let h = workload(dev.clone(), policy, mkpath);
        assert_eq!(
            h.durable,
            h.states.len() - 1,
            "{pname} {policy}: the workload failed without a crash"
        );
        dev.writes()
    };
    assert!(total > 20, "{pname} {policy}: only {total} writes");
    let mut seen: HashSet<(u8, u64, usize)> = HashSet::new();
    let mut checked = 0;
    for mode in [CrashMode::Lose, CrashMode::Keep] {
        for k in 0..total {
            let mem = Arc::new(Mem::from_bytes(bytes.clone(), 512));
            let faulty = Arc::new(Faulty::new(mem.clone()));
            faulty.set_crash_mode(mode);
            let dev = CrashAfter::new(faulty.clone(), k);
            let h = workload(dev.clone(), policy, mkpath);
            faulty.heal();
            faulty.crash().unwrap();
            let mut crashed = vec![0u8; mem.size() as usize];
            mem.read_at(0, &mut crashed).unwrap();
            // A Lose crash leaves what the last good flush made durable:
            // cuts with as many good flushes (and the same durable point)
            // leave the same image but for timestamps. Check each once.
            let key = match mode {
                CrashMode::Lose => (0, dev.flushes(), h.durable),
                CrashMode::Keep => (1, k, h.durable),
            };
            if !seen.insert(key) {
                continue;
            }
            checked += 1;
            let what = format!("{pname} {policy} {mode:?} crash after write {k} of {total}");
            recover_and_check(dir.path(), &crashed, &h, policy, mkpath, &what);
        }
    }
    eprintln!("{pname} {policy}: {total} writes, {checked} distinct crashes checked");
}

#[test]
fn journaled_crash_at_every_write_iomap_unwritten() {
    crash_everywhere("iomap", paths()[0].1, AllocPolicy::Unwritten);
}

#[test]
fn journaled_crash_at_every_write_iomap_ordered() {
    crash_everywhere("iomap", paths()[0].1, AllocPolicy::Ordered);
}

#[test]
fn journaled_crash_at_every_write_bh_legacy_unwritten() {
    crash_everywhere("bh-legacy", paths()[1].1, AllocPolicy::Unwritten);
}

#[test]
fn journaled_crash_at_every_write_bh_tailskip_ordered() {
    crash_everywhere("bh-tailskip", paths()[2].1, AllocPolicy::Ordered);
}

#[test]
fn journaled_crash_at_every_write_bh_seek_unwritten() {
    crash_everywhere("bh-seek", paths()[3].1, AllocPolicy::Unwritten);
}

/// A journaled fsync flushes the device twice, as jbd2's commit does (before
/// the commit block, covering the data written first, and after it: the
/// kernel's PREFLUSH and FUA): fsync adds no flush of its own for the data.
/// With nothing to commit (an overwrite of mapped blocks) it flushes once,
/// for the data. Durability across these is what the crash tests above check.
#[test]
fn a_journaled_fsync_flushes_as_jbd2_commits() {
    let dir = tempfile::tempdir().unwrap();
    let img0 = mkfs(
        dir.path(),
        "j.img",
        4096,
        "metadata_csum,has_journal",
        64,
        &[],
    );
    for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
        for (pname, mkpath) in paths() {
            let mem = Arc::new(Mem::from_bytes(std::fs::read(&img0).unwrap(), 512));
            let dev: Arc<dyn BlockDevice> = mem.clone();
            let fs = Arc::new(Ext4::open_with(dev.clone(), policy).unwrap());
            let m = Mount::new(dev.clone(), fs);
            let create = OpenFlags {
                create: true,
                exclusive: true,
                truncate: false,
            };
            let f = m
                .open("/f", create, mkpath(), FileOptions::default())
                .unwrap();
            // The first commit also marks the log live (two more flushes).
            f.pwrite(0, &pattern(65536, 0)).unwrap();
            f.fsync().unwrap();
            for i in 1..4u64 {
                let before = mem.stats();
                f.pwrite(i * 65536, &pattern(65536, i)).unwrap();
                f.fsync().unwrap();
                let d = mem.stats() - before;
                assert_eq!(d.flushes, 2, "{pname} {policy}: append {i} + fsync");
            }
            let before = mem.stats();
            f.pwrite(4096, &pattern(8192, 9)).unwrap();
            f.fsync().unwrap();
            let d = mem.stats() - before;
            assert_eq!(d.flushes, 1, "{pname} {policy}: overwrite + fsync");
            assert_eq!(d.writes, 1, "{pname} {policy}: overwrite + fsync writes");
        }
    }
}

/// The commit thread (kjournald2's timer): with no fsync, a create and a
/// written-back append are committed once the running transaction is older
/// than the interval, and a crash after that (the device as it is, no
/// unmount) keeps them: the kernel's, e2fsck's and bufwrite's replay find
/// the file.
#[test]
fn the_commit_thread_commits_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let img0 = mkfs(
        dir.path(),
        "j.img",
        1024,
        "metadata_csum,has_journal",
        8,
        &[],
    );
    for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
        let mem = Arc::new(Mem::from_bytes(std::fs::read(&img0).unwrap(), 512));
        let dev: Arc<dyn BlockDevice> = mem.clone();
        let fs = Arc::new(Ext4::open_with(dev.clone(), policy).unwrap());
        assert_eq!(
            bufwrite_ext4::COMMIT_INTERVAL,
            std::time::Duration::from_secs(5)
        );
        fs.set_commit_interval(std::time::Duration::from_millis(50))
            .unwrap();
        let m = Mount::new(dev.clone(), fs.clone());
        let create = OpenFlags {
            create: true,
            exclusive: true,
            truncate: false,
        };
        let f = m
            .open("/t", create, paths()[0].1(), FileOptions::default())
            .unwrap();
        let data = pattern(10_000, 3);
        f.pwrite(0, &data).unwrap();
        // Written back (sync_file_range), no fsync, no flush: at the
        // write's completion the allocation (and, for unwritten, its
        // conversion) joins the running transaction.
        f.writeback(0, 0).unwrap();
        let before = fs.journal_stats().unwrap().commits;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while fs.journal_stats().unwrap().commits == before {
            assert!(
                std::time::Instant::now() < deadline,
                "{policy}: no commit within 30 s of a 50 ms interval"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The crash: the device as it is now, never unmounted.
        let mut crashed = vec![0u8; mem.size() as usize];
        mem.read_at(0, &mut crashed).unwrap();
        f.set_writeback_on_drop(false);
        let img = dir.path().join("t.img");
        std::fs::write(&img, &crashed).unwrap();
        assert!(bufwrite_testkit::e2fs::needs_recovery(&img), "{policy}");
        fsck_ok(&img);
        assert!(dump(&img, "/t") == data, "{policy}: e2fsck's replay");
        let replayed = dir.path().join("t-bufwrite.img");
        std::fs::write(&replayed, bufwrite_replay(crashed, policy)).unwrap();
        fsck_ok(&replayed);
        assert!(dump(&replayed, "/t") == data, "{policy}: bufwrite's replay");
        drop(f);
    }
}
