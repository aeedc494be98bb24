//! `LoopDevice`: a loop device attached to an image file for tests and
//! benches, detached on drop.
//!
//! It runs `losetup --find --show` (util-linux) rather than the loop ioctls
//! through a binding crate: the `loopdev` crates need libclang to build.
//! Other processes attach loop devices too, so the device is always found,
//! never named, and a lost race for a free one is retried.

use bufwrite_engine::{Error, IoKind, Result};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to attach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Logical sector size (`--sector-size`, e.g. 4096); `None` keeps 512.
    pub sector_size: Option<u32>,
    /// Let the loop driver use O_DIRECT on the backing file
    /// (`--direct-io=on`); without it, I/O to the device still goes through
    /// the host page cache of the image.
    pub direct_io: bool,
    /// Attach read-only (`--read-only`).
    pub read_only: bool,
}

/// An attached loop device; detached (`losetup -d`) when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    path: Option<PathBuf>,
}

/// Attempts at finding a free device when another process takes it first.
const ATTACH_ATTEMPTS: u32 = 5;

impl LoopDevice {
    /// Attaches `image` to a free loop device (needs root, or the rights
    /// to /dev/loop-control and the devices).
    pub fn attach(image: &Path, opts: LoopOptions) -> Result<LoopDevice> {
        let mut cmd = Command::new("losetup");
        cmd.arg("--find").arg("--show");
        if let Some(ss) = opts.sector_size {
            cmd.arg("--sector-size").arg(ss.to_string());
        }
        if opts.direct_io {
            cmd.arg("--direct-io=on");
        }
        if opts.read_only {
            cmd.arg("--read-only");
        }
        cmd.arg(image);
        let mut last = String::new();
        for _ in 0..ATTACH_ATTEMPTS {
            let out = cmd
                .output()
                .map_err(|e| losetup_error(format!("run losetup: {e}")))?;
            if out.status.success() {
                let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if dev.is_empty() {
                    return Err(losetup_error("losetup printed no device".into()));
                }
                return Ok(LoopDevice {
                    path: Some(PathBuf::from(dev)),
                });
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // A device found free and then taken by someone else reads as
            // busy; anything else will not get better by retrying.
            if !last.contains("busy") && !last.contains("failed to set up") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(losetup_error(format!(
            "losetup --find --show {}: {last}",
            image.display()
        )))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Detaches now, reporting a failure (drop detaches silently).
    pub fn detach(mut self) -> Result<()> {
        match self.path.take() {
            Some(p) => detach(&p),
            None => Ok(()),
        }
    }
}

fn detach(dev: &Path) -> Result<()> {
    let out = Command::new("losetup")
        .arg("-d")
        .arg(dev)
        .output()
        .map_err(|e| losetup_error(format!("run losetup -d: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(losetup_error(format!(
            "losetup -d {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn losetup_error(msg: String) -> Error {
    Error::io(IoKind::Open, 0, 0, io::Error::other(msg))
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Nothing to report to from a destructor; `detach` reports.
            let _ = detach(&p);
        }
    }
}

/// An ext4 mount made by `mount(8)`, unmounted on drop (lazily, `umount
/// -l`, when a reader still holds it, so that the loop device under it can
/// still be detached). For the opt-in root tests.
#[derive(Debug)]
pub struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    /// `mount -t ext4 [-o ro] DEV DIR`; the error carries mount's stderr.
    pub fn ext4(dev: &Path, dir: &Path, read_only: bool) -> io::Result<Mounted> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "ext4"]);
        if read_only {
            cmd.args(["-o", "ro"]);
        }
        let out = cmd.arg(dev).arg(dir).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "mount {} {} (read-only: {read_only}): {}",
                dev.display(),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Mounted {
            dir: dir.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mounted {
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
