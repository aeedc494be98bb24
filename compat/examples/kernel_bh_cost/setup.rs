//! The kernel side of `kernel_bh_cost`: a loop-mounted ext4 with one file
//! cached as a single 2 MiB folio and one cached as 512 4 KiB folios.
//! Shared with the opt-in test `compat/tests/it/kernel_setup.rs`, which
//! checks this setup without timing anything.
//!
//! Large folios are detected through `FileHugePages` in /proc/meminfo: the
//! kernel counts every PMD-sized (2 MiB) folio added to any file's page
//! cache there (`NR_FILE_THPS`, bumped in `__filemap_add_folio`, mm/filemap.c),
//! so creating the 2 MiB-folio file raises it by 2048 kB and removing the
//! file lowers it by as much, while the file written in 4 KiB writes
//! leaves it alone. Other processes can move the counter too; the checks
//! only ask for "at least 2048 kB" and "less than 2048 kB".

#![allow(dead_code)] // the test uses part of it, the example another part

use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the test files: one PMD-sized folio.
pub const FILE_SIZE: usize = 2 << 20;
/// The image: room for the two files, the journal and the metadata.
const IMAGE_SIZE: u64 = 64 << 20;

/// True when the effective user id is 0 (from /proc/self/status, so no
/// libc call is needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false)
    })
}

/// `FileHugePages` of /proc/meminfo, in kB.
pub fn file_huge_kb() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    s.lines()
        .find_map(|l| l.strip_prefix("FileHugePages:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("/proc/meminfo has no FileHugePages line"))
}

/// Runs a command, turning a failure into an error that names it.
fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A mount, unmounted on drop (lazily if busy) so the loop device under
/// it can be detached even when the caller failed half-way.
struct Mount {
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A freshly made ext4 (4 KiB blocks) on a loop device, mounted. Dropping
/// it unmounts, detaches the loop device and removes the image, in that
/// order (fields drop in declaration order).
pub struct KernelExt4 {
    mount: Mount,
    _loop: LoopDevice,
    _dir: tempfile::TempDir,
}

/// How one test file's page cache was filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// One 2 MiB write: the page cache gets one 2 MiB folio.
    OneWrite,
    /// 512 sequential 4 KiB writes: each creates an order-0 folio.
    PageWrites,
}

impl KernelExt4 {
    /// Makes the image under `parent` (must not be tmpfs: the loop driver
    /// needs a regular backing file), mkfs.ext4 -b 4096, attaches, mounts.
    pub fn create(parent: &Path) -> io::Result<KernelExt4> {
        if !is_root() {
            return Err(io::Error::other("needs root (losetup, mount); run as root"));
        }
        let dir = tempfile::Builder::new()
            .prefix("kernel_bh_cost.")
            .tempdir_in(parent)?;
        let img = dir.path().join("ext4.img");
        File::create(&img)?.set_len(IMAGE_SIZE)?;
        let path = format!(
            "/usr/sbin:/sbin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("mkfs.ext4")
            .env("PATH", &path)
            .args(["-q", "-F", "-b", "4096"])
            .arg(&img))?;
        let lo = LoopDevice::attach(&img, LoopOptions::default())
            .map_err(|e| io::Error::other(format!("attach {}: {e}", img.display())))?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        let dev = lo.path().to_path_buf();
        run(Command::new("mount")
            .env("PATH", &path)
            .args(["-t", "ext4"])
            .arg(&dev)
            .arg(&mnt))?;
        Ok(KernelExt4 {
            mount: Mount { dir: mnt },
            _loop: lo,
            _dir: dir,
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.mount.dir
    }

    /// Writes a [`FILE_SIZE`] file named `name` as `fill` says, fsyncs it,
    /// and returns it open for writing plus how much `FileHugePages` rose
    /// while it was made (kB).
    pub fn make_file(&self, name: &str, fill: Fill) -> io::Result<(File, i64)> {
        let before = file_huge_kb()?;
        let path = self.dir().join(name);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let data = vec![0x5au8; FILE_SIZE];
        match fill {
            Fill::OneWrite => f.write_all(&data)?,
            Fill::PageWrites => {
                for page in data.chunks(4096) {
                    f.write_all(page)?;
                }
            }
        }
        f.sync_all()?;
        let after = file_huge_kb()?;
        Ok((f, after as i64 - before as i64))
    }

    /// Removes file `name` (closed by the caller first) and returns how
    /// much `FileHugePages` fell (kB) as its page cache went.
    pub fn remove_file(&self, name: &str) -> io::Result<i64> {
        let before = file_huge_kb()?;
        std::fs::remove_file(self.dir().join(name))?;
        let after = file_huge_kb()?;
        Ok(before as i64 - after as i64)
    }
}
