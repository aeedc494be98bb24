//! Opt-in (`BUFWRITE_ROOT_TESTS=1`; needs root, `losetup` and `mount`):
//! files bufwrite overwrote through io_uring read back identically through
//! the kernel's own ext4 driver, from the image attached to a read-only
//! loop device and mounted read-only. Skipped (with a line saying so)
//! otherwise, so the default test run needs neither root nor loop devices.

use super::common::*;
use bufwrite_engine::device::loopdev::{LoopDevice, LoopOptions};
use bufwrite_engine::{File, FileOptions};
use bufwrite_ext4::Ext4;
use std::path::{Path, PathBuf};
use std::process::Command;

fn enabled() -> bool {
    std::env::var_os("BUFWRITE_ROOT_TESTS").is_some_and(|v| v == "1")
}

/// A read-only mount, unmounted on drop (also when the test panics), so
/// that the loop device under it can be detached.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn ro(dev: &Path, dir: &Path) -> Mount {
        let out = Command::new("mount")
            .args(["-t", "ext4", "-o", "ro"])
            .arg(dev)
            .arg(dir)
            .output()
            .expect("mount is installed");
        assert!(
            out.status.success(),
            "mount -o ro {} {}: {}",
            dev.display(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // A reader still holding it open (e.g. a panicking test
            // mid-read) must not leave the loop device stuck: detach lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn the_kernel_reads_back_what_every_path_wrote_through_io_uring() {
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "root.img", 4096, "", 32, &[]);
    let names: Vec<String> = (0..paths().len()).map(|i| format!("/f{i}")).collect();
    let mut cmds = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let src = dir.path().join(format!("src{i}"));
        std::fs::write(&src, pattern(300_000, 10 + i as u64)).unwrap();
        cmds.push(format!("write {} {name}", src.display()));
    }
    debugfs_w(&img, &cmds);

    // One file per path, each overwritten (head, middle across folios, the
    // partial last block) through io_uring, then fsynced.
    let mut models = Vec::new();
    {
        let Some(dev) = device(&img, "uring") else {
            eprintln!("skip: io_uring is unavailable here");
            return;
        };
        let fs = Ext4::open(dev.clone()).unwrap();
        for ((pname, mkpath), name) in paths().into_iter().zip(&names) {
            let mut model = dump(&img, name);
            let mapper = fs.open_file(name).unwrap();
            let file = File::open(dev.clone(), mapper, mkpath(), FileOptions::default()).unwrap();
            for (k, (off, len)) in [(0usize, 5000usize), (12_345, 70_000), (299_000, 1000)]
                .into_iter()
                .enumerate()
            {
                let data = pattern(len, 100 + k as u64);
                assert_eq!(file.pwrite(off as u64, &data).unwrap(), len, "{pname}");
                model[off..off + len].copy_from_slice(&data);
            }
            file.fsync().unwrap();
            models.push((pname, name, model));
        }
        // The device is closed here, before the loop device opens the image.
    }
    fsck_ok(&img);

    let lo = LoopDevice::attach(
        &img,
        LoopOptions {
            read_only: true,
            ..LoopOptions::default()
        },
    )
    .expect("a free loop device (losetup --find)");
    let mnt = tempfile::tempdir().unwrap();
    // Declared after `lo`, so dropped (unmounted) before it is detached.
    let mount = Mount::ro(lo.path(), mnt.path());
    for (pname, name, model) in &models {
        let back = std::fs::read(mnt.path().join(name.trim_start_matches('/'))).unwrap();
        assert!(
            &back == model,
            "{pname}: {name} read through the kernel differs from the model"
        );
    }
    drop(mount);
    lo.detach().expect("losetup -d");
}

/// Every option the kernel holds for the ext4 mount of `dev`, defaults
/// included: /proc/fs/ext4/DEV/options (/proc/mounts leaves out options
/// equal to the superblock's defaults, data=journal among them).
fn kernel_mount_options(dev: &Path) -> Vec<String> {
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    let path = format!("/proc/fs/ext4/{name}/options");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// What the report says a mount without options gets is what the running
/// kernel gives a read-only mount without options: data=journal only with
/// a journal, delalloc off under a data=journal or nodelalloc default (also
/// where the data mode itself is dropped for want of a journal).
#[test]
fn the_kernel_mounts_the_defaults_the_report_describes() {
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 4] = [
        ("plain", "", &[]),
        ("dj", "", &["-o", "journal_data"]),
        ("dj-nojournal", "^has_journal", &["-o", "journal_data"]),
        ("nodelalloc", "", &["-o", "nodelalloc"]),
    ];
    for (name, features, tune) in cases {
        let img = mkfs(dir.path(), &format!("{name}.img"), 4096, features, 16, &[]);
        if !tune.is_empty() {
            let out = Command::new("tune2fs")
                .args(tune)
                .arg(&img)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: tune2fs");
        }
        let dev = device(&img, "mem").unwrap();
        let md = Ext4::open(dev).unwrap().gaps().unwrap().mount_defaults;
        let lo = LoopDevice::attach(
            &img,
            LoopOptions {
                read_only: true,
                ..LoopOptions::default()
            },
        )
        .expect("a free loop device (losetup --find)");
        let mnt = tempfile::tempdir().unwrap();
        let mount = Mount::ro(lo.path(), mnt.path());
        let opts = kernel_mount_options(lo.path());
        drop(mount);
        lo.detach().expect("losetup -d");
        let kernel_dj = opts.iter().any(|o| o == "data=journal");
        let kernel_nodelalloc = opts.iter().any(|o| o == "nodelalloc");
        let data: Vec<&String> = opts
            .iter()
            .filter(|o| o.contains("delalloc") || o.starts_with("data="))
            .collect();
        eprintln!("{name}: kernel {data:?}; report {}", md.summary());
        let opts = opts.join(" ");
        assert_eq!(md.data_journal, kernel_dj, "{name}: data=journal ({opts})");
        assert_eq!(!md.delalloc, kernel_nodelalloc, "{name}: delalloc ({opts})");
    }
    // buffered_iomap stored in s_mount_opts: a kernel without the option
    // ignores the whole string (so nodelalloc next to it too), as the
    // report's note warns; a kernel with it applies both.
    let img = mkfs(dir.path(), "iomap-opts.img", 4096, "", 16, &[]);
    debugfs_w(&img, &["ssv mount_opts buffered_iomap,nodelalloc".into()]);
    let md = Ext4::open(device(&img, "mem").unwrap())
        .unwrap()
        .gaps()
        .unwrap()
        .mount_defaults;
    assert!(md.buffered_iomap && !md.delalloc);
    assert!(
        md.notes
            .iter()
            .any(|n| n.contains("ignores every option in it")),
        "{:?}",
        md.notes
    );
    let lo = LoopDevice::attach(
        &img,
        LoopOptions {
            read_only: true,
            ..LoopOptions::default()
        },
    )
    .expect("a free loop device (losetup --find)");
    let mnt = tempfile::tempdir().unwrap();
    let mount = Mount::ro(lo.path(), mnt.path());
    let opts = kernel_mount_options(lo.path());
    drop(mount);
    lo.detach().expect("losetup -d");
    let knows = opts.iter().any(|o| o.ends_with("buffered_iomap"));
    let nodelalloc = opts.iter().any(|o| o == "nodelalloc");
    eprintln!("iomap-opts: kernel knows buffered_iomap: {knows}, nodelalloc: {nodelalloc}");
    assert_eq!(nodelalloc, knows, "{opts:?}");
}
