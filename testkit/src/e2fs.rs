//! e2fsprogs as the tests' outside judge: make images, edit and read them
//! with debugfs, check them with e2fsck. The tools are looked for on `PATH`
//! and in /usr/sbin and /sbin (a non-root `PATH` often lacks those).
//! Failures panic: these are test helpers.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `name` as a command, with the sbin directories on its `PATH`.
pub fn tool(name: &str) -> Command {
    let path = format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(name);
    c.env("PATH", path);
    c
}

/// `mkfs.ext4 -q -F -b BS [-O FEATURES] EXTRA... DIR/NAME SIZE_MBM`.
pub fn mkfs(
    dir: &Path,
    name: &str,
    bs: u32,
    features: &str,
    size_mb: u32,
    extra: &[&str],
) -> PathBuf {
    let img = dir.join(name);
    let mut c = tool("mkfs.ext4");
    c.args(["-q", "-F", "-b", &bs.to_string()]);
    if !features.is_empty() {
        c.args(["-O", features]);
    }
    c.args(extra).arg(&img).arg(format!("{size_mb}M"));
    let out = c.output().expect("mkfs.ext4 is installed");
    assert!(
        out.status.success(),
        "mkfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Runs debugfs requests (write mode) from a command file next to `img`.
pub fn debugfs_w(img: &Path, cmds: &[String]) {
    let f = img.with_extension("cmds");
    std::fs::write(&f, cmds.join("\n") + "\n").expect("write the debugfs command file");
    let out = tool("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&f)
        .arg(img)
        .output()
        .expect("debugfs is installed");
    assert!(
        out.status.success(),
        "debugfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when the image's superblock has `needs_recovery` (a journal with
/// live transactions: what an image looks like while a journaling
/// filesystem has it, or after a crash).
pub fn needs_recovery(img: &Path) -> bool {
    let Ok(b) = std::fs::read(img).map(|d| d.get(1024 + 0x60).copied()) else {
        return false;
    };
    b.is_some_and(|v| v & 0x4 != 0)
}

/// The image as the kernel would mount it: itself, or — when its journal
/// needs recovery — a copy beside it (`IMG.replayed`) whose journal
/// e2fsck replayed (`e2fsck -y -E journal_only`, which changes nothing
/// else). debugfs and `e2fsck -n` never replay, so the judges below read
/// this copy: a journaled fsync leaves the metadata in the log.
pub fn as_mounted(img: &Path) -> std::path::PathBuf {
    if !needs_recovery(img) {
        return img.to_path_buf();
    }
    let copy = img.with_extension("replayed");
    std::fs::copy(img, &copy).expect("copy the image for its replay");
    let out = tool("e2fsck")
        .args(["-y", "-E", "journal_only"])
        .arg(&copy)
        .output()
        .expect("e2fsck is installed");
    assert!(
        out.status.code().unwrap_or(8) < 4,
        "e2fsck -E journal_only on a copy of {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    copy
}

/// One debugfs request, read-only, on the image as mounted (see
/// [`as_mounted`]); returns its stdout.
pub fn debugfs_r(img: &Path, req: &str) -> String {
    debugfs_raw(&as_mounted(img), req)
}

/// One debugfs request, read-only, on the image as it is (its journal
/// not replayed: `logdump`, or the journal inode's map).
pub fn debugfs_raw(img: &Path, req: &str) -> String {
    let out = tool("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .expect("debugfs is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The file's bytes as e2fsprogs reads them (`debugfs -R "dump PATH OUT"`).
pub fn dump(img: &Path, path: &str) -> Vec<u8> {
    let out = img.with_extension("dump");
    let _ = std::fs::remove_file(&out);
    debugfs_r(img, &format!("dump {path} {}", out.display()));
    std::fs::read(&out).unwrap_or_else(|e| panic!("debugfs dumped nothing for {path}: {e}"))
}

/// `e2fsck -fn` on the image as mounted (see [`as_mounted`]): whether it
/// passed, and what it printed.
pub fn fsck(img: &Path) -> (bool, String) {
    let img = as_mounted(img);
    let out = tool("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .expect("e2fsck is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `e2fsck -fn` passes (panics with its output otherwise).
pub fn fsck_ok(img: &Path) {
    let (ok, text) = fsck(img);
    assert!(ok, "e2fsck -fn failed on {}:\n{text}", img.display());
}

/// The inode number of `path` in `img` (debugfs `stat`).
pub fn inode_number(img: &Path, path: &str) -> u32 {
    let out = debugfs_r(img, &format!("stat {path}"));
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("debugfs stat {path}: {out}"))
}

/// Leaves the orphan list a kernel crash would: `truncated` (kept
/// linked, its size cut to `size` while its blocks stay: an interrupted
/// truncate) then `unlinked` (its entry removed and no links left: a file
/// unlinked while open). Returns their inode numbers.
pub fn make_orphans(img: &Path, truncated: &str, size: u64, unlinked: &str) -> (u32, u32) {
    let (a, b) = (inode_number(img, truncated), inode_number(img, unlinked));
    debugfs_w(
        img,
        &[
            format!("unlink {unlinked}"),
            format!("sif <{b}> links_count 0"),
            format!("sif <{a}> size {size}"),
            format!("sif <{a}> dtime {b}"),
            format!("ssv last_orphan {a}"),
        ],
    );
    (a, b)
}
