//! Opt-in (`BUFWRITE_ROOT_TESTS=1`; needs root, `losetup` and `mount`):
//! files bufwrite overwrote through io_uring read back identically through
//! the kernel's own ext4 driver, from the image attached to a read-only
//! loop device and mounted read-only. Skipped (with a line saying so)
//! otherwise, so the default test run needs neither root nor loop devices.

use super::common::*;
use bufwrite_engine::{File, FileOptions};
use bufwrite_ext4::Ext4;
use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
use std::path::Path;
use std::process::Command;

fn enabled() -> bool {
    std::env::var_os("BUFWRITE_ROOT_TESTS").is_some_and(|v| v == "1")
}

/// A mount, unmounted on drop (also when the test panics), so that the
/// loop device under it can be detached.
struct Mount {
    _mounted: bufwrite_testkit::loopdev::Mounted,
}

impl Mount {
    /// `mount -t ext4 [-o ro] DEV DIR`.
    fn new(dev: &Path, dir: &Path, read_only: bool) -> Mount {
        Mount {
            _mounted: bufwrite_testkit::loopdev::Mounted::ext4(dev, dir, read_only).expect("mount"),
        }
    }

    fn ro(dev: &Path, dir: &Path) -> Mount {
        Mount::new(dev, dir, true)
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

/// Files bufwrite created, appended, truncated, punched and fallocated on
/// every path and policy (and many new files in an htree directory) read
/// back byte-identical through the kernel's ext4 from a read-only mount.
#[test]
fn the_kernel_reads_back_files_bufwrite_allocated() {
    use bufwrite_engine::{AllocPolicy, FallocMode, Mount as FsMount, OpenFlags};
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..200 {
        std::fs::write(src.join("d").join(format!("seed-{i}")), b"").unwrap();
    }
    let s = src.display().to_string();
    let img = mkfs(dir.path(), "alloc.img", 4096, "", 64, &["-d", &s]);
    // Index /d (e2fsck -D), so new names go through the htree.
    let _ = Command::new("e2fsck")
        .arg("-fyD")
        .arg(&img)
        .output()
        .unwrap();
    let create = OpenFlags {
        create: true,
        exclusive: true,
        truncate: false,
    };
    let mut models: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let dev = device(&img, "sync").unwrap();
        for (i, (pname, mkpath)) in paths().into_iter().enumerate() {
            for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
                let fs = std::sync::Arc::new(Ext4::open_with(dev.clone(), policy).unwrap());
                let m = FsMount::new(dev.clone(), fs);
                let name = format!("/{pname}-{policy}");
                let f = m
                    .open(&name, create, mkpath(), FileOptions::default())
                    .unwrap();
                let mut model = Vec::new();
                for (k, n) in [5000usize, 70_000, 300_001].into_iter().enumerate() {
                    let b = pattern(n, (i * 10 + k) as u64);
                    f.write(&b).unwrap();
                    model.extend_from_slice(&b);
                }
                f.set_len(250_001).unwrap();
                model.truncate(250_001);
                f.fallocate(8192, 20_000, FallocMode::PunchHole).unwrap();
                model[8192..28_192].fill(0);
                f.fallocate(250_001, 100_000, FallocMode::Allocate).unwrap();
                model.resize(350_001, 0);
                f.pwrite(300_000, b"inside the unwritten extent").unwrap();
                model[300_000..300_027].copy_from_slice(b"inside the unwritten extent");
                f.close().unwrap();
                for j in 0..40 {
                    let n = format!("/d/{pname}-{policy}-{j}");
                    let g = m
                        .open(&n, create, mkpath(), FileOptions::default())
                        .unwrap();
                    let b = pattern(100 + j, j as u64);
                    g.write(&b).unwrap();
                    g.close().unwrap();
                    models.push((n, b));
                }
                m.sync().unwrap();
                models.push((name, model));
            }
        }
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
    let mount = Mount::ro(lo.path(), mnt.path());
    for (name, model) in &models {
        let back = std::fs::read(mnt.path().join(name.trim_start_matches('/'))).unwrap();
        assert!(&back == model, "{name} read through the kernel differs");
    }
    drop(mount);
    lo.detach().expect("losetup -d");
}

/// Files the kernel wrote (fallocated unwritten extents, holes, a deep
/// extent tree) are overwritten, appended, punched and truncated by
/// bufwrite on every path and stay fsck-clean, reading back as the model.
#[test]
fn bufwrite_writes_files_the_kernel_allocated() {
    use std::os::unix::fs::FileExt;
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "kernel.img", 4096, "", 128, &[]);
    let names: Vec<String> = paths().iter().map(|(p, _)| format!("/{p}")).collect();
    let mut models: Vec<Vec<u8>> = Vec::new();
    {
        let lo = LoopDevice::attach(&img, LoopOptions::default())
            .expect("a free loop device (losetup --find)");
        let mnt = tempfile::tempdir().unwrap();
        let mount = Mount::new(lo.path(), mnt.path(), false);
        for (i, name) in names.iter().enumerate() {
            let p = mnt.path().join(name.trim_start_matches('/'));
            let f = std::fs::File::create(&p).unwrap();
            let mut model = vec![0u8; 8 << 20];
            // Every other 4 KiB block of the first 8 MiB: a deep tree.
            for b in (0..2048u64).step_by(2) {
                let data = pattern(4096, i as u64 * 10_000 + b);
                f.write_all_at(&data, b * 4096).unwrap();
                model[(b * 4096) as usize..((b + 1) * 4096) as usize].copy_from_slice(&data);
            }
            f.sync_all().unwrap();
            // An unwritten extent past the data (fallocate), inside i_size.
            let out = Command::new("fallocate")
                .args(["-o", "8388608", "-l", "1048576"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "fallocate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            model.resize(9 << 20, 0);
            f.sync_all().unwrap();
            models.push(model);
        }
        drop(mount);
        lo.detach().expect("losetup -d");
    }
    let out = debugfs_r(&img, &format!("stat {}", names[0]));
    assert!(
        out.contains("Level Entries") || out.contains("EXTENTS"),
        "{out}"
    );
    fsck_ok(&img);
    {
        let dev = device(&img, "sync").unwrap();
        let fs = Ext4::open(dev.clone()).unwrap();
        for (((_, mkpath), name), model) in paths().into_iter().zip(&names).zip(models.iter_mut()) {
            let file = File::open(
                dev.clone(),
                fs.open_file(name).unwrap(),
                mkpath(),
                FileOptions::default(),
            )
            .unwrap();
            // Overwrite across written blocks and holes, into the unwritten
            // extent, append, punch and truncate.
            for (k, (off, len)) in [
                (4000usize, 20_000usize),
                (8_400_000, 5000),
                (9_437_000, 70_000),
            ]
            .into_iter()
            .enumerate()
            {
                let data = pattern(len, 500 + k as u64);
                file.pwrite(off as u64, &data).unwrap();
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&data);
            }
            file.fallocate(1_000_000, 300_000, bufwrite_engine::FallocMode::PunchHole)
                .unwrap();
            model[1_000_000..1_300_000].fill(0);
            file.set_len(9_000_001).unwrap();
            model.truncate(9_000_001);
            file.close().unwrap();
        }
    }
    fsck_ok(&img);
    for (name, model) in names.iter().zip(&models) {
        assert!(dump(&img, name) == *model, "{name}");
    }
}
