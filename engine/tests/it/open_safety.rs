//! Opens that must not write where they should not: a second writer of an
//! image is refused while the first holds it (every backend), and (opt-in:
//! `BUFWRITE_ROOT_TESTS=1`, root, `losetup`, `mount`, `mkfs.ext4`) an image
//! or device that is mounted, directly or through a loop device, is refused
//! for writing by every backend, with a message naming where it is mounted,
//! and its bytes stay as they were.

use bufwrite_engine::device::uring::{self, UringConfig, UringDevice};
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::Error;
use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root_tests() -> bool {
    let on = std::env::var("BUFWRITE_ROOT_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("SKIP: set BUFWRITE_ROOT_TESTS=1 (root) for the mount tests");
    }
    on
}

fn uring_available() -> bool {
    match uring::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP (uring part): {e}");
            false
        }
    }
}

/// A zero-filled image in a directory on a real filesystem (O_DIRECT).
fn image(size: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("image");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    (dir, path)
}

fn opts(backend: Backend, read_only: bool) -> OpenOptions {
    OpenOptions {
        backend,
        direct: backend == Backend::Uring,
        read_only,
        ..OpenOptions::default()
    }
}

/// The error of an open that must fail.
fn open_err(path: &Path, o: OpenOptions) -> Error {
    match open_device(path, o) {
        Ok(dev) => panic!("{} opened", dev.describe()),
        Err(e) => e,
    }
}

/// Every backend that can run here.
fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Sync];
    if uring_available() {
        b.push(Backend::Uring);
    }
    b
}

#[test]
fn a_second_writer_is_refused_by_every_backend_until_the_first_is_gone() {
    let (_d, path) = image(1 << 20);
    for first in backends() {
        let held = open_device(&path, opts(first, false)).unwrap();
        for second in backends() {
            let e = open_err(&path, opts(second, false));
            assert!(
                matches!(e, Error::Locked { .. }),
                "{first} then {second}: {e}"
            );
            let text = e.to_string();
            assert!(
                text.contains("in use by another process") && text.contains("image"),
                "{text}"
            );
            // Readers do not write: they are let in.
            open_device(&path, opts(second, true)).unwrap();
        }
        drop(held);
        open_device(&path, opts(first, false)).unwrap();
    }
}

#[test]
fn the_lock_holds_against_another_process() {
    // A child process (this test binary, running the helper below) holds
    // the image until its stdin closes; the open here must be refused.
    if let Some(path) = std::env::var_os("BUFWRITE_HOLD_IMAGE") {
        let _held = open_device(Path::new(&path), opts(Backend::Sync, false)).unwrap();
        println!("held");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    let (_d, path) = image(1 << 20);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "open_safety::the_lock_holds_against_another_process",
            "--nocapture",
        ])
        .env("BUFWRITE_HOLD_IMAGE", &path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("held") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the child ended before holding the image: {seen}");
        seen += &line;
    }
    let e = open_err(&path, opts(Backend::Sync, false));
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    open_device(&path, opts(Backend::Sync, false)).unwrap();
}

/// An e2fsprogs tool, from PATH or /usr/sbin, /sbin.
fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    Command::new(found.map_or_else(|| name.into(), PathBuf::into_os_string))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 filesystem without a journal (so no needs_recovery flag shows
/// the mount) made at byte `offset` of a fresh 16 MiB image; inode tables
/// initialised up front, so that a mount starts no lazy writer.
fn ext4_image(offset: u64) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = image(offset + (16 << 20));
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal"])
            .args(["-E", &format!("offset={offset},lazy_itable_init=0")])
            .arg(&path)
            .arg("16M"),
    );
    (dir, path)
}

/// A read-only mount (it writes nothing, so the image's bytes can be
/// compared afterwards), unmounted on drop.
struct Mount {
    _mounted: bufwrite_testkit::loopdev::Mounted,
}

impl Mount {
    fn ro(dev: &Path, dir: &Path) -> Mount {
        Mount {
            _mounted: bufwrite_testkit::loopdev::Mounted::ext4(dev, dir, true)
                .expect("mount -o ro"),
        }
    }
}

/// A loop device attached with `losetup --offset`, detached on drop.
struct OffsetLoop(PathBuf);

impl OffsetLoop {
    fn attach(image: &Path, offset: u64) -> OffsetLoop {
        let dev = run_ok(
            Command::new("losetup")
                .args(["--find", "--show", "--offset", &offset.to_string()])
                .arg(image),
        );
        OffsetLoop(dev.into())
    }
}

impl Drop for OffsetLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Opening `path` for writing fails with InUse on every backend, naming
/// every piece of `want`; read-only opens still work.
fn refused_everywhere(path: &Path, want: &[&str]) {
    for backend in backends() {
        let e = open_err(path, opts(backend, false));
        assert!(matches!(e, Error::InUse { .. }), "{backend}: {e}");
        let text = e.to_string();
        for w in want {
            assert!(text.contains(w), "{backend}: {text:?} lacks {w:?}");
        }
        let cfg = UringConfig::default();
        if backend == Backend::Uring {
            let e = UringDevice::open_with(path, &cfg).unwrap_err();
            assert!(matches!(e, Error::InUse { .. }), "{e}");
        }
    }
}

#[test]
fn a_mounted_image_and_its_loop_device_are_refused_and_left_as_they_were() {
    if !root_tests() {
        return;
    }
    let (dir, img) = ext4_image(0);
    let before = std::fs::read(&img).unwrap();
    let lo = LoopDevice::attach(&img, LoopOptions::default()).unwrap();
    // Attached but not mounted: not in use.
    drop(open_device(&img, opts(Backend::Sync, false)).unwrap());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Mount::ro(lo.path(), &mnt);
    let lo_name = lo.path().display().to_string();
    let mnt_name = mnt.display().to_string();
    refused_everywhere(
        &img,
        &[
            "is in use",
            &format!("backs loop device {lo_name} (offset 0)"),
            &format!("mounted at {mnt_name} (ext4)"),
        ],
    );
    // Another name of the same file is the same file.
    let link = dir.path().join("link");
    std::fs::hard_link(&img, &link).unwrap();
    refused_everywhere(&link, &[&lo_name, &mnt_name]);
    // The loop device itself is mounted.
    refused_everywhere(lo.path(), &["it is mounted at", &mnt_name]);
    // Reading is harmless.
    drop(open_device(&img, opts(Backend::Sync, true)).unwrap());
    drop(mount);
    lo.detach().unwrap();
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
    // Unmounted and detached: a writer is let in again.
    drop(open_device(&img, opts(Backend::Sync, false)).unwrap());
}

#[test]
fn a_loop_device_at_an_offset_names_its_offset() {
    if !root_tests() {
        return;
    }
    let offset = 1 << 20;
    let (dir, img) = ext4_image(offset);
    let before = std::fs::read(&img).unwrap();
    let lo = OffsetLoop::attach(&img, offset);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Mount::ro(&lo.0, &mnt);
    refused_everywhere(
        &img,
        &[
            &format!("{} (offset {offset})", lo.0.display()),
            "mounted at",
        ],
    );
    drop(mount);
    drop(lo);
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
}

#[test]
fn a_mount_in_another_mount_namespace_is_found_through_the_loop_device() {
    if !root_tests() {
        return;
    }
    let (dir, img) = ext4_image(0);
    let before = std::fs::read(&img).unwrap();
    let lo = LoopDevice::attach(&img, LoopOptions::default()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // The mount lives in a private mount namespace and dies with it: this
    // process's mount table never shows it.
    let mut ns = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t ext4 -o ro {} {} && echo mounted && cat >/dev/null",
            lo.path().display(),
            mnt.display()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(ns.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "mounted");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&mnt.display().to_string()));
    refused_everywhere(
        &img,
        &[
            &format!("backs loop device {}", lo.path().display()),
            "claimed",
        ],
    );
    drop(ns.stdin.take());
    assert!(ns.wait().unwrap().success());
    lo.detach().unwrap();
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
}
