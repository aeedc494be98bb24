//! Crash simulation: a create / append / truncate / unlink workload is cut
//! at every device write in turn (the writes since the last flush are lost,
//! as a volatile cache would lose them: `Faulty` in `CrashMode::Lose`);
//! after each crash, `e2fsck -fn` may report only leaked blocks or inodes
//! and wrong free counts, and every file reads back as it was at its last
//! completed fsync (or as the operation in flight left it, whole).

use crate::common::*;
use bufwrite_engine::device::faulty::{CrashMode, Faulty};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    AllocPolicy, BlockDevice, FileOptions, IoRequest, IoStats, Mount, OpenFlags, OrderPolicy,
    WritePath,
};
use bufwrite_ext4::Ext4;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Passes the first `limit` write requests to the Faulty device below;
/// from then on every write and flush fails, as if the machine had died.
pub(super) struct CrashAfter {
    inner: Arc<Faulty>,
    limit: u64,
    writes: AtomicU64,
    /// Flushes that succeeded.
    flushes: AtomicU64,
}

impl CrashAfter {
    /// Dies after `limit` writes to `inner`.
    pub(super) fn new(inner: Arc<Faulty>, limit: u64) -> Arc<CrashAfter> {
        Arc::new(CrashAfter {
            inner,
            limit,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        })
    }

    /// Flushes that succeeded (before the crash).
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Writes passed on so far.
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn dead(&self) -> bool {
        self.writes.load(Ordering::SeqCst) >= self.limit
    }
}

impl BlockDevice for CrashAfter {
    fn backend(&self) -> &'static str {
        "crash"
    }
    fn describe(&self) -> String {
        format!("crash after {} writes", self.limit)
    }
    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn submit(&self, batch: &mut [IoRequest<'_>]) {
        for req in batch.iter_mut() {
            let is_write = req.bufs.kind() == bufwrite_engine::IoKind::Write;
            if is_write {
                if self.dead() {
                    self.inner.fail_next_writes(1);
                } else {
                    self.writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.inner.submit(std::slice::from_mut(req));
        }
    }
    fn flush(&self) -> bufwrite_engine::Result<()> {
        if self.dead() {
            self.inner.fail_next_flushes(1);
        }
        let r = self.inner.flush();
        if r.is_ok() {
            self.flushes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
}

/// What the files hold at each completed sync point.
type State = BTreeMap<&'static str, Vec<u8>>;

/// Runs the workload; returns the states after each completed sync (the
/// first is the empty image). Stops at the first error (the crash).
fn workload(
    dev: Arc<dyn BlockDevice>,
    policy: AllocPolicy,
    mkpath: fn() -> Box<dyn WritePath>,
) -> Vec<State> {
    let mut states = vec![State::new()];
    let _ = (|| -> bufwrite_engine::Result<()> {
        let fs = Arc::new(
            bufwrite_ext4::Ext4::open_with(dev.clone(), policy)
                .map_err(bufwrite_engine::Error::from)?,
        );
        let m = Mount::new(dev.clone(), fs);
        let opts = FileOptions {
            order: OrderPolicy::FromWrite { max_order: 4 },
        };
        let create = OpenFlags {
            create: true,
            exclusive: true,
            truncate: false,
        };
        let mut cur = State::new();
        let a = m.open("/a", create, mkpath(), opts)?;
        cur.insert("/a", Vec::new());
        let b1 = pattern(9000, 1);
        a.write(&b1)?;
        cur.get_mut("/a").unwrap().extend_from_slice(&b1);
        a.fsync()?;
        states.push(cur.clone());
        let b = m.open("/b", create, mkpath(), opts)?;
        cur.insert("/b", Vec::new());
        let b2 = pattern(3000, 2);
        b.write(&b2)?;
        cur.get_mut("/b").unwrap().extend_from_slice(&b2);
        b.fsync()?;
        states.push(cur.clone());
        let b3 = pattern(7000, 3);
        a.write(&b3)?;
        cur.get_mut("/a").unwrap().extend_from_slice(&b3);
        a.fsync()?;
        states.push(cur.clone());
        a.set_len(5001)?;
        cur.get_mut("/a").unwrap().truncate(5001);
        a.fsync()?;
        states.push(cur.clone());
        drop(b);
        m.unlink("/b")?;
        cur.remove("/b");
        m.sync()?;
        states.push(cur.clone());
        a.close()?;
        Ok(())
    })();
    states
}

/// e2fsck -fn output lines that only say space leaked (or a count lags):
/// bitmap differences that are all `-` (marked in use, owned by nothing),
/// free counts, and an inode written before the entry that would name it.
/// A `+` difference (in use but marked free: the next allocation would
/// cross-link it) or any other complaint fails.
fn only_leaks(out: &str) -> Result<(), String> {
    let ok_prefixes = [
        "Pass ",
        "e2fsck ",
        "Fix? no",
        "Free blocks count wrong",
        "Free inodes count wrong",
        "Directories count wrong",
        "Unattached zero-length inode",
        "Unattached inode",
        "Clear? no",
        "Connect to /lost+found? no",
        "Padding at end of",
    ];
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(diffs) = line
            .strip_prefix("Block bitmap differences:")
            .or_else(|| line.strip_prefix("Inode bitmap differences:"))
        {
            if diffs.split_whitespace().all(|d| d.starts_with('-')) {
                continue;
            }
            return Err(format!("space in use marked free: {line:?}\n{out}"));
        }
        // "Inode N ref count is 1, should be 0": an inode written before
        // its entry (or left after its entry went): leaked.
        let leaked_inode = line.starts_with("Inode ") && line.contains("ref count is");
        let summary = line.contains("files (")
            || line.contains("***** FILE SYSTEM")
            || line.contains("WARNING: Filesystem still has errors");
        if !(leaked_inode || summary || ok_prefixes.iter().any(|p| line.starts_with(p))) {
            return Err(format!("not a leak: {line:?}\n{out}"));
        }
    }
    Ok(())
}

fn check_crash(img: &Path, full: &[State], done: usize, k: u64, what: &str) {
    let out = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        if let Err(e) = only_leaks(&text) {
            panic!("{what}: crash after write {k}: {e}");
        }
    }
    // The last completed sync point, or the one after it (the operation in
    // flight, which may have committed before the crash).
    let fits = |s: &State| {
        s.iter().all(|(name, want)| {
            debugfs_r(img, &format!("stat {name}")).contains("Inode:") && dump(img, name) == *want
        })
    };
    // Files of a state that the next operation removes or creates may be
    // either way: check each candidate state.
    let candidates: Vec<&State> = full[done - 1..].iter().take(2).collect();
    assert!(
        candidates.iter().any(|s| fits(s)),
        "{what}: crash after write {k}: the files do not read back as at the last fsync"
    );
}

fn crash_everywhere(pname: &str, mkpath: fn() -> Box<dyn WritePath>, policy: AllocPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let img0 = mkfs(
        dir.path(),
        "c.img",
        1024,
        "metadata_csum,^has_journal",
        8,
        &[],
    );
    let bytes = std::fs::read(&img0).unwrap();
    // A run with no crash counts the writes.
    let total = {
        let faulty = Arc::new(Faulty::new(Arc::new(Mem::from_bytes(bytes.clone(), 512))));
        let dev = Arc::new(CrashAfter {
            inner: faulty,
            limit: u64::MAX,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        let states = workload(dev.clone(), policy, mkpath);
        assert_eq!(
            states.len(),
            6,
            "{pname} {policy}: the workload failed without a crash"
        );
        (dev.writes.load(Ordering::SeqCst), states)
    };
    let (total, full) = total;
    assert!(total > 10, "{pname}: only {total} writes");
    let img = dir.path().join("crashed.img");
    for k in 0..total {
        let mem = Arc::new(Mem::from_bytes(bytes.clone(), 512));
        let faulty = Arc::new(Faulty::new(mem.clone()));
        faulty.set_crash_mode(CrashMode::Lose);
        let dev = Arc::new(CrashAfter {
            inner: faulty.clone(),
            limit: k,
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        let states = workload(dev.clone(), policy, mkpath);
        faulty.heal();
        faulty.crash().unwrap();
        let mut buf = vec![0u8; mem.size() as usize];
        mem.read_at(0, &mut buf).unwrap();
        std::fs::write(&img, &buf).unwrap();
        check_crash(&img, &full, states.len(), k, &format!("{pname} {policy}"));
    }
}

#[test]
fn crash_at_every_write_iomap_unwritten() {
    crash_everywhere("iomap", paths()[0].1, AllocPolicy::Unwritten);
}

#[test]
fn crash_at_every_write_iomap_ordered() {
    crash_everywhere("iomap", paths()[0].1, AllocPolicy::Ordered);
}

#[test]
fn crash_at_every_write_bh_unwritten() {
    crash_everywhere("bh-tailskip", paths()[2].1, AllocPolicy::Unwritten);
}

#[test]
fn crash_at_every_write_bh_ordered() {
    crash_everywhere("bh-legacy", paths()[1].1, AllocPolicy::Ordered);
}

/// Ordered policy: when a writeback's data write fails and the file is
/// truncated before a good fsync, the allocation committed with the
/// truncate is unwritten, so the reused blocks' old contents are never
/// exposed: after a crash that writes nothing more, the file reads zeros.
#[test]
fn ordered_allocation_committed_before_its_data_reads_as_zeros() {
    for (pname, mkpath) in paths() {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(
            dir.path(),
            "o.img",
            1024,
            "metadata_csum,^has_journal",
            8,
            &[],
        );
        // Blocks that held a file's bytes, freed: what a new file reuses.
        let src = dir.path().join("old");
        std::fs::write(&src, pattern(200_000, 77)).unwrap();
        debugfs_w(
            &img,
            &[format!("write {} /old", src.display()), "rm /old".into()],
        );
        let mem = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
        let faulty = Arc::new(Faulty::new(mem.clone()));
        let dev: Arc<dyn BlockDevice> = faulty.clone();
        {
            let fs = Arc::new(Ext4::open_with(dev.clone(), AllocPolicy::Ordered).unwrap());
            let m = Mount::new(dev.clone(), fs);
            let create = OpenFlags {
                create: true,
                exclusive: true,
                truncate: false,
            };
            let f = m
                .open("/new", create, mkpath(), FileOptions::default())
                .unwrap();
            f.write(&pattern(100_000, 5)).unwrap();
            // Every data write of this fsync fails.
            faulty.fail_next_writes(1000);
            assert!(f.fsync().is_err(), "{pname}: the fsync did not fail");
            faulty.heal();
            f.set_len(30_000).unwrap();
            // The crash: nothing more reaches the disk.
            f.set_writeback_on_drop(false);
        }
        let mut buf = vec![0u8; mem.size() as usize];
        mem.read_at(0, &mut buf).unwrap();
        std::fs::write(&img, &buf).unwrap();
        fsck_ok(&img);
        let got = dump(&img, "/new");
        assert_eq!(got.len(), 30_000, "{pname}");
        assert!(
            got.iter().all(|&b| b == 0),
            "{pname}: old block contents exposed"
        );
    }
}
