//! The `bufwrite` binary as a new user, and an adversary, would run it:
//! every command must refuse to write where it should not (a mounted image
//! or device, an image another process writes, a disk without room, its
//! own target as a results file) and say clearly why, clean up after
//! itself, and never panic on a flag value. After every refused command
//! the image is byte-identical. No test asserts a time.
//!
//! The mount tests need root, `losetup` and `mount`: they run with
//! `BUFWRITE_ROOT_TESTS=1` and print a skip line otherwise.

use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root_tests() -> bool {
    let on = std::env::var_os("BUFWRITE_ROOT_TESTS").is_some_and(|v| v == "1");
    if !on {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
    }
    on
}

mod common;
use common::{bin, bufwrite, text};

/// The command failed with a message holding every piece of `want`, and
/// did not panic.
fn refused(out: &Output, what: &str, want: &[&str]) -> String {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_ne!(out.status.code(), Some(101), "{what}: {err}");
    for w in want {
        assert!(err.contains(w), "{what}: {err:?} lacks {w:?}");
    }
    err
}

/// A directory on a real filesystem (the writeback image is O_DIRECT).
fn real_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// An e2fsprogs tool: from PATH, else /usr/sbin or /sbin.
fn tool(name: &str) -> Command {
    let sbin = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    Command::new(sbin.map_or_else(|| name.into(), PathBuf::into_os_string))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool is installed");
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A 16 MiB, 4 KiB-block ext4 image without a journal (a mount of it sets
/// no needs_recovery flag) with `/f` of 1 MiB, inode tables written up
/// front (a mount starts no lazy writer).
fn ext4_image(dir: &Path) -> PathBuf {
    let img = dir.join("fs.img");
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=0"])
            .arg(&img)
            .arg("16M"),
    );
    std::fs::write(dir.join("src"), vec![7u8; 1 << 20]).unwrap();
    run_ok(
        tool("debugfs")
            .current_dir(dir)
            .args(["-w", "-R", "write src /f"])
            .arg(&img),
    );
    img
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

/// The flags of a short libmicro run.
const LIBMICRO_SHORT: &[&str] = &[
    "--order",
    "0",
    "--cases",
    "write_u1k",
    "--paths",
    "iomap",
    "--runs",
    "1",
    "--batch",
    "1",
];

fn args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

#[test]
fn every_command_refuses_a_mounted_image_and_its_loop_device() {
    if !root_tests() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path());
    let before = std::fs::read(&img).unwrap();
    let lo = LoopDevice::attach(&img, LoopOptions::default()).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Mount::ro(lo.path(), &mnt);
    let (i, l) = (img.to_str().unwrap(), lo.path().to_str().unwrap());
    let m = mnt.to_str().unwrap();
    let backs = format!("it backs loop device {l} (offset 0), which is mounted at {m}");
    let mounted = format!("{l} is in use: it is mounted at {m}");
    let trace = "pwrite 0 10 1\nfsync\n";
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["replay", "--image", i, "--file", "/f"], &backs),
        (
            vec!["replay", "--image", i, "--file", "/f", "--backend", "uring"],
            &backs,
        ),
        (vec!["replay", "--device", i], &backs),
        (vec!["replay", "--device", l], &mounted),
        (
            vec!["replay", "--device", l, "--backend", "uring"],
            &mounted,
        ),
        (
            args(&["libmicro", "--image", i, "--file", "/f"], LIBMICRO_SHORT),
            &backs,
        ),
        (args(&["libmicro", "--device", i], LIBMICRO_SHORT), &backs),
        (args(&["libmicro", "--device", l], LIBMICRO_SHORT), &mounted),
        (
            vec!["writeback", "--device", i, "--runs", "1", "--total", "1M"],
            &backs,
        ),
        (
            vec![
                "writeback",
                "--device",
                l,
                "--runs",
                "1",
                "--backend",
                "sync",
            ],
            &mounted,
        ),
        (
            vec!["sweep", "cold", "--device", i, "--runs", "1", "--out", out],
            &backs,
        ),
    ];
    for (argv, want) in &cases {
        let out = bufwrite(argv, trace);
        refused(&out, &argv.join(" "), &["is in use", want]);
    }
    drop(mount);
    lo.detach().unwrap();
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
    // Unmounted and detached, the image is writable again.
    let out = bufwrite(&["replay", "--image", i, "--file", "/f"], trace);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Reads `child`'s stderr until a line holds `want`; the lines so far.
fn wait_for_line(child: &mut Child, want: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen += "\n";
        if line.contains(want) {
            // Keep draining in the background so the child never blocks on
            // a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return seen;
        }
    }
    panic!("the command ended before printing {want:?}: {seen}");
}

#[test]
fn a_second_process_cannot_write_an_image_in_use() {
    let dir = real_tempdir();
    let img = dir.path().join("dev.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let i = img.to_str().unwrap();
    // A libmicro run holds the image for as long as it measures; its
    // progress line comes after the open.
    let mut holder = bin()
        .args(["libmicro", "--device", i, "--order", "0"])
        .args(["--cases", "write_u1k", "--paths", "iomap"])
        .args(["--runs", "4000000000", "--batch", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(&mut holder, "write_u1k ...");
    let trace = dir.path().join("trace");
    std::fs::write(&trace, "pwrite 0 10 1\nfsync\n").unwrap();
    let t = trace.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["replay", "--device", i, "--trace", t],
        &["replay", "--device", i, "--trace", t, "--backend", "uring"],
        &["libmicro", "--device", i, "--runs", "1", "--batch", "1"],
        &["writeback", "--device", i, "--runs", "1", "--total", "1M"],
    ];
    for argv in cases {
        let out = bufwrite(argv, "");
        refused(&out, &argv.join(" "), &["in use by another process"]);
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = bufwrite(&["replay", "--device", i, "--trace", t], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Entries of `dir` whose names start with `prefix`, recursively.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(entries(&p, prefix));
        }
    }
    out
}

/// Starts `cmd`, waits until a file matching `is_image` appears under
/// `dir`, sends `sig`, and checks the exit status and that nothing of
/// bufwrite's is left under `dir`.
fn signal_cleans_up(
    cmd: &mut Command,
    dir: &Path,
    is_image: impl Fn(&Path) -> bool,
    sig: rustix::process::Signal,
    code: i32,
) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !entries(dir, "").iter().any(|p| is_image(p)) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("{cmd:?} ended ({status}) before making its image: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no image");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A path is registered for removal right after it is made; give that
    // moment time to pass (and the command time to get into its work).
    std::thread::sleep(Duration::from_millis(200));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(code), "{cmd:?}");
    let left = entries(dir, "bufwrite-");
    assert!(left.is_empty(), "{cmd:?} left {left:?}");
}

#[test]
fn writeback_removes_its_temporary_image_on_sigint_and_sigterm() {
    use rustix::process::Signal;
    for (sig, code) in [(Signal::INT, 130), (Signal::TERM, 143)] {
        let dir = real_tempdir();
        let mut cmd = bin();
        cmd.args(["writeback", "--dir", dir.path().to_str().unwrap()])
            .args(["--image-size", "16M", "--total", "16M", "--io-size", "4K"])
            .args(["--layout", "seq", "--backend", "sync", "--runs", "1000000"]);
        signal_cleans_up(
            &mut cmd,
            dir.path(),
            |p| p.ends_with("writeback.img"),
            sig,
            code,
        );
    }
}

#[test]
fn temporary_ext4_and_flat_images_are_removed_on_a_signal() {
    use rustix::process::Signal;
    // libmicro's and sweep's temporary images live in the system temp dir:
    // TMPDIR points it at a directory of the test's own.
    let dir = real_tempdir();
    let mut libmicro = bin();
    libmicro
        .env("TMPDIR", dir.path())
        .args(["libmicro", "--order", "0", "--cases", "write_u1k"])
        .args([
            "--paths",
            "iomap",
            "--runs",
            "4000000000",
            "--batch",
            "1000",
        ]);
    let ext4 = |p: &Path| p.to_string_lossy().ends_with(".ext4.img");
    signal_cleans_up(&mut libmicro, dir.path(), ext4, Signal::TERM, 143);

    let out = dir.path().join("out");
    let mut sweep = bin();
    sweep
        .env("TMPDIR", dir.path())
        .args(["sweep", "cold", "--flat", "--backend", "sync"])
        .args(["--out", out.to_str().unwrap(), "--runs", "4000000000"]);
    let flat = |p: &Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.starts_with("bufwrite-") && name.ends_with(".img")
    };
    signal_cleans_up(&mut sweep, dir.path(), flat, Signal::INT, 130);
}

#[test]
fn a_bad_json_path_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let nodir = dir.path().join("no/r.json");
    let nodir = nodir.to_str().unwrap();
    let short = args(&["libmicro", "--mem"], LIBMICRO_SHORT);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (args(&short, &["--json", d]), "is a directory"),
        (args(&short, &["--json", nodir]), "does not exist"),
        (
            vec!["replay", "--mem", "64K", "--timing", "--json", nodir],
            "does not exist",
        ),
        (
            vec!["replay", "--mem", "64K", "--timing", "--json", d],
            "is a directory",
        ),
    ];
    for (argv, want) in &cases {
        let out = bufwrite(argv, "pwrite 0 10 1\n");
        let err = refused(&out, &argv.join(" "), &["--json", want]);
        assert!(!err.contains("write_u1k ..."), "{argv:?} measured: {err}");
        assert_eq!(text(&out.stdout), "", "{argv:?}");
    }

    // sweep writes sweep-KIND.{csv,json,svg} into --out: a directory in
    // the way of one is found before the sweep runs.
    std::fs::create_dir(dir.path().join("sweep-order.json")).unwrap();
    let argv = ["sweep", "order", "--out", d, "--runs", "1", "--batch", "1"];
    let out = bufwrite(&argv, "");
    refused(
        &out,
        "sweep",
        &["--out", "sweep-order.json", "is a directory"],
    );
    assert!(!dir.path().join("sweep-order.csv").exists());

    // The results never go over the run's own target.
    let img = dir.path().join("dev.img");
    std::fs::write(&img, vec![3u8; 4 << 20]).unwrap();
    let i = img.to_str().unwrap();
    let argv = args(&["libmicro", "--device", i, "--json", i], LIBMICRO_SHORT);
    refused(&bufwrite(&argv, ""), "libmicro", &["the run's target"]);
    let argv = ["replay", "--device", i, "--timing", "--json", i];
    refused(
        &bufwrite(&argv, "pwrite 0 1 1\n"),
        "replay",
        &["the run's target"],
    );
    assert!(std::fs::read(&img).unwrap() == vec![3u8; 4 << 20]);

    // Nor over a disk.
    let disk = std::fs::read_dir("/dev/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .next();
    if let Some(disk) = disk {
        let argv = args(&short, &["--json", disk.to_str().unwrap()]);
        refused(&bufwrite(&argv, ""), "libmicro", &["is a block device"]);
    }
}

#[test]
fn writeback_checks_every_flag_and_the_free_space_before_writing() {
    let dir = real_tempdir();
    let d = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--total", "0"], "--total 0: the total must be positive"),
        (&["--runs", "0"], "--runs 0"),
        (&["--qd", "0"], "--qd 0"),
        (&["--qd", "1,99999"], "--qd 99999"),
        (&["--io-size", "0"], "--io-size 0"),
        (&["--io-size", "4K,1000"], "--io-size 1000"),
        (&["--io-size", "1G"], "--io-size 1G"),
        (&["--io-size", "18446744073709551615"], "--io-size"),
        (
            &["--io-size", "1M", "--total", "64K"],
            "larger than --total",
        ),
        (&["--total", "99999999999G"], "--total"),
        (&["--total=-1"], "--total"),
        (&["--backend", "aio"], "--backend \"aio\""),
        (&["--backend", ""], "--backend"),
        (&["--layout", "zigzag"], "--layout \"zigzag\""),
        (&["--image-size", "0"], "--image-size"),
        (&["--image-size", "1K"], "smaller than one I/O"),
        (&["--image-size", "100000G"], "does not fit"),
        (&["--image-size", "18446744073709551615"], "does not fit"),
        (&["--runs", "18446744073709551616"], "--runs"),
        (&["--paths", "ext2"], "unknown write path \"ext2\""),
        (&["--paths", "iomap,iomap"], "listed twice"),
        (&["--block-size", "512"], "--block-size 512"),
        (&["--order", "10"], "--order"),
        (&["--compare-registered-buffers"], "only for --device-only"),
        (
            &["--device-only", "--paths", "iomap"],
            "--paths is for the engine's writeback",
        ),
        (&["--fio", "/no/such/fio"], "not an executable file"),
        (&["--fio", "fio", "--no-fio"], "cannot be used with"),
    ];
    for (extra, want) in cases {
        let argv = args(&["writeback", "--dir", d], extra);
        let out = bufwrite(&argv, "");
        refused(&out, &argv.join(" "), &[want]);
        // Nothing was made, let alone written.
        assert!(
            entries(dir.path(), "").is_empty(),
            "{argv:?} left {:?}",
            entries(dir.path(), "")
        );
    }
    let out = bufwrite(&["writeback", "--dir", "/no/such/dir"], "");
    refused(&out, "writeback", &["--dir /no/such/dir"]);

    // With --device, a bad flag leaves the device as it was.
    let img = dir.path().join("dev.img");
    std::fs::write(&img, vec![9u8; 1 << 20]).unwrap();
    let i = img.to_str().unwrap();
    for extra in [
        &["--io-size", "4K,2M"][..],
        &["--total", "0"],
        &["--qd", "0"],
    ] {
        let argv = args(&["writeback", "--device", i, "--runs", "1"], extra);
        refused(&bufwrite(&argv, ""), &argv.join(" "), &[]);
        assert!(
            std::fs::read(&img).unwrap() == vec![9u8; 1 << 20],
            "{argv:?}"
        );
    }
}

#[test]
fn a_failed_open_says_its_cause_once_and_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.img");
    let m = missing.to_str().unwrap();
    for argv in [
        &["replay", "--device", m][..],
        &["replay", "--device", m, "--backend", "uring"],
        &["replay", "--image", m, "--file", "/f"],
        &["libmicro", "--device", m, "--runs", "1"],
    ] {
        let out = bufwrite(argv, "read 0 1\n");
        let err = refused(&out, &argv.join(" "), &["cannot open", m]);
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{argv:?}: {err}"
        );
        assert!(!err.contains("offset"), "{argv:?}: {err}");
    }
}

#[test]
fn ignored_flags_draw_one_warning_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path());
    let i = img.to_str().unwrap();
    let bs = "warning: --block-size is ignored with --image: the image's block size (4096) is used";
    let mem = "warning: --backend is ignored with --mem";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "replay",
                "--image",
                i,
                "--file",
                "/f",
                "--block-size",
                "1024",
            ],
            bs,
        ),
        // Every path opens the image again; the warning comes once.
        (
            vec![
                "replay",
                "--image",
                i,
                "--file",
                "/f",
                "--block-size",
                "2048",
                "--timing",
                "--paths",
                "iomap,bh-legacy",
            ],
            bs,
        ),
        (
            args(
                &[
                    "libmicro",
                    "--image",
                    i,
                    "--file",
                    "/f",
                    "--block-size",
                    "1024",
                ],
                LIBMICRO_SHORT,
            ),
            bs,
        ),
        (vec!["replay", "--mem", "64K", "--backend", "sync"], mem),
        (
            args(&["libmicro", "--mem", "--backend", "uring"], LIBMICRO_SHORT),
            mem,
        ),
    ];
    for (argv, want) in &cases {
        let out = bufwrite(argv, "read 0 10\n");
        let err = text(&out.stderr);
        assert!(out.status.success(), "{argv:?}: {err}");
        assert_eq!(err.matches(want).count(), 1, "{argv:?}: {err}");
    }
    // Flags that are used draw nothing.
    for argv in [
        &["replay", "--image", i, "--file", "/f"][..],
        &["replay", "--mem", "64K", "--block-size", "1024"],
    ] {
        let out = bufwrite(argv, "read 0 10\n");
        assert!(out.status.success(), "{argv:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("warning"), "{argv:?}");
    }
}

#[test]
fn libmicro_help_names_the_backend_it_uses() {
    let out = bufwrite(&["libmicro", "--help"], "");
    assert!(out.status.success());
    let help = text(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--backend"))
        .unwrap_or_default();
    assert!(
        line.contains("Default: uring on the ext4 image") && !line.contains("[default: sync]"),
        "{line}"
    );
    assert!(help.contains("through io_uring"), "{help}");
}

#[test]
fn no_flag_value_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let huge = "18446744073709551615";
    let cases: &[&[&str]] = &[
        &["replay", "--mem", "0"],
        &["replay", "--mem", huge],
        &["replay", "--mem", "16E"],
        &["replay", "--mem", "64K", "--order", "255"],
        &["replay", "--mem", "64K", "--block-size", "0"],
        &["replay", "--mem", "64K", "--path", ""],
        &["replay", "--mem", "64K", "--trace", d],
        &["replay", "--device", d],
        &["replay", "--device", "/dev/null"],
        &["libmicro", "--mem", "--order", "10"],
        &["libmicro", "--mem", "--batch", "0"],
        &["libmicro", "--mem", "--batch", huge],
        &["libmicro", "--mem", "--runs", "0"],
        &["libmicro", "--mem", "--cases", ""],
        &["libmicro", "--mem", "--paths", ","],
        &["libmicro", "--image", d, "--file", "/f"],
        &["libmicro", "--device", "/dev/zero"],
        &["sweep", "cold", "--write-size", "0"],
        &["sweep", "cold", "--write-size", huge],
        &["sweep", "size", "--write-size", "1K"],
        &["sweep", "order", "--batch", huge],
        &["sweep", "order", "--backend", "uring"],
        &["sweep", "order", "--out", "/dev/null"],
        &["writeback", "--qd", huge],
        &["writeback", "--io-size", "4K,,8K"],
        &["gaps", d],
    ];
    for argv in cases {
        let out = bufwrite(argv, "read 0 1\n");
        refused(&out, &argv.join(" "), &[]);
    }
    // A RAM device allocates on first write (replay's --mem is sparse), so
    // sizes far beyond memory are valid and run.
    for argv in [
        ["replay", "--mem", "0x8000000000000000"],
        ["replay", "--mem", "1024G"],
    ] {
        let out = bufwrite(&argv, "read 0 1\n");
        let err = text(&out.stderr);
        assert!(out.status.success(), "{}: {err}", argv.join(" "));
        assert!(!err.contains("panicked"), "{}: {err}", argv.join(" "));
    }
}
