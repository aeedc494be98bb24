//! `bufwrite replay` as a careless user or an adversary runs it: every
//! refused or failed command leaves the image or device file byte for byte
//! as it was (a hash of the whole file before and after), `--timing` never
//! writes the given target and every round reads the same bytes, what the
//! trace left dirty is written back at the end, no flag value panics, and
//! errors echo only a clipped piece of a huge number or line.
//!
//! Needs a writable temp dir and e2fsprogs; the block-device cases are
//! opt-in (`BUFWRITE_ROOT_TESTS=1`, root and losetup).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bufwrite, run, text};

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The whole file's hash, to compare before and after a command.
fn file_hash(path: &Path) -> u64 {
    fnv1a64(&std::fs::read(path).unwrap())
}

/// The replay pattern byte, written again from its definition:
/// `(splitmix64(seed ^ (off >> 3)) >> (8 * (off & 7))) & 0xff`.
fn pattern_byte(seed: u64, off: u64) -> u8 {
    let mut z = (seed ^ (off >> 3)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> (8 * (off & 7))) as u8
}

fn pattern(seed: u64, off: u64, len: u64) -> Vec<u8> {
    (off..off + len).map(|o| pattern_byte(seed, o)).collect()
}

/// An e2fsprogs tool: from /usr/sbin or /sbin, else by name on PATH.
fn tool(name: &str) -> Command {
    let sbin = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    Command::new(sbin.map_or_else(|| name.into(), |p| p.into_os_string()))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("e2fsprogs is installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A small (8 MiB) 4 KiB-block ext4 image `fs.img` in `dir` with `/f`
/// holding `bytes` (mkfs.ext4, then debugfs: no mount, no root).
fn ext4_image(dir: &Path, bytes: &[u8]) -> PathBuf {
    let img = dir.join("fs.img");
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&img)
            .arg("8M"),
    );
    std::fs::write(dir.join("src"), bytes).unwrap();
    run_ok(
        tool("debugfs")
            .current_dir(dir)
            .args(["-w", "-R", "write src /f"])
            .arg(&img),
    );
    img
}

/// `/f` as debugfs reads it back.
fn dump(dir: &Path, img: &Path) -> Vec<u8> {
    let out = dir.join("dump");
    let _ = std::fs::remove_file(&out);
    run_ok(
        tool("debugfs")
            .args(["-R", &format!("dump /f {}", out.display())])
            .arg(img),
    );
    std::fs::read(&out).unwrap()
}

fn fsck_ok(img: &Path) {
    run_ok(tool("e2fsck").arg("-fn").arg(img));
}

/// A zero-filled (sparse) device file of `size` bytes.
fn device_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// The names in `dir`: a timing round's temporary copy must be gone.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The 40 KiB of `/f` in the test images.
fn initial() -> Vec<u8> {
    (0..40_960u32).map(|i| (i % 251) as u8).collect()
}

fn assert_refused(out: &Output, wants: &[&str], what: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded: {err}");
    for want in wants {
        assert!(err.contains(want), "{what}: {want:?} not in {err}");
    }
    assert!(!err.contains("panicked"), "{what}: {err}");
}

#[test]
fn timing_checks_every_write_first_and_never_writes_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial());
    let image = img.to_str().unwrap();
    let before = file_hash(&img);
    let listing = entries(dir.path());
    // Line 3 ends past the largest ext4 file (2^32 blocks of 4 KiB):
    // refused before any round, so the first two lines never reach the
    // image (they used to, through the warm-up round).
    let out = bufwrite(
        &[
            "replay", "--image", image, "--file", "/f", "--timing", "--paths", "iomap",
        ],
        "pwrite 0 4096 7\nfsync\npwrite 17592186044416 1 1\n",
    );
    assert_refused(
        &out,
        &[
            "trace line 3",
            "pwrite 17592186044416 1 1",
            "nothing was run",
        ],
        "failing timed trace",
    );
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        file_hash(&img),
        before,
        "the refused --timing run wrote the image"
    );
    // A trace that succeeds, with fsyncs and a final writeback in every
    // round, still leaves the given image as it was: rounds run on copies,
    // and the copies are gone afterwards.
    let out = bufwrite(
        &[
            "replay",
            "--image",
            image,
            "--file",
            "/f",
            "--timing",
            "--paths",
            "iomap,bh-tailskip",
        ],
        "pwrite 0 4096 7\nfsync\npwrite 8000 100 3\nread 0 10000\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(file_hash(&img), before, "--timing wrote the given image");
    assert_eq!(
        entries(dir.path()),
        listing,
        "a round's copy was left behind"
    );
    fsck_ok(&img);
}

#[test]
fn every_timing_round_starts_from_the_same_file_and_reads_what_a_plain_replay_reads() {
    let trace = "read 0 16\npwrite 0 16 99\nfsync\nread 0 16\nread 8 40000\n";
    let dir = tempfile::tempdir().unwrap();
    let bytes = initial();
    let img = ext4_image(dir.path(), &bytes);
    let image = img.to_str().unwrap();
    let before = file_hash(&img);
    // What the file holds: the first read sees the image's bytes, not seed
    // 99's (which is what every round after the first used to read).
    let mut after = bytes.clone();
    after[..16].copy_from_slice(&pattern(99, 0, 16));
    let expected = format!(
        "read 0 16 {:016x}\nread 0 16 {:016x}\nread 8 40000 {:016x}\n",
        fnv1a64(&bytes[..16]),
        fnv1a64(&after[..16]),
        fnv1a64(&after[8..40_008])
    );
    let timed = bufwrite(
        &[
            "replay", "--image", image, "--file", "/f", "--timing", "--order", "2",
        ],
        trace,
    );
    assert!(timed.status.success(), "{}", text(&timed.stderr));
    assert_eq!(text(&timed.stdout), expected, "--timing --image");
    assert_eq!(file_hash(&img), before);
    // The plain replay prints the same (and does write the image).
    let plain = bufwrite(&["replay", "--image", image, "--file", "/f"], trace);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert_eq!(text(&plain.stdout), expected, "plain --image");
    assert!(dump(dir.path(), &img) == after);

    // --device and --mem: the file starts empty in every round.
    let trace = "read 0 16\npwrite 0 16 99\nfsync\nseek 16\nwrite 5000 4\nread 0 16\n\
                 read 0 6000\n";
    let mut model = pattern(99, 0, 16);
    model.extend_from_slice(&pattern(4, 16, 5000));
    let expected = format!(
        "read 0 16 {:016x}\nread 0 16 {:016x}\nread 0 6000 {:016x}\n",
        fnv1a64(&[]),
        fnv1a64(&model[..16]),
        fnv1a64(&model)
    );
    let dev = device_file(dir.path(), "dev", 1 << 20);
    std::fs::write(&dev, vec![0xa5u8; 1 << 20]).unwrap();
    let dev_before = file_hash(&dev);
    let listing = entries(dir.path());
    let device = dev.to_str().unwrap();
    for (args, writes_target) in [
        (&["replay", "--device", device, "--timing"][..], false),
        (
            &["replay", "--mem", "1M", "--timing", "--order", "0"][..],
            false,
        ),
        (&["replay", "--mem", "1M"][..], false),
        (&["replay", "--device", device][..], true),
    ] {
        let out = bufwrite(args, trace);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{args:?}");
        if !writes_target {
            assert_eq!(file_hash(&dev), dev_before, "{args:?} wrote the device");
            assert_eq!(entries(dir.path()), listing, "{args:?} left a copy");
        }
    }
    // The plain replay did write the device: the file, then the old bytes.
    let disk = std::fs::read(&dev).unwrap();
    assert!(disk[..model.len()] == model[..]);
}

#[test]
fn timing_refuses_what_it_cannot_copy() {
    // /dev/null is no regular file: refused before it is opened for a round.
    for args in [
        &["replay", "--device", "/dev/null", "--timing"][..],
        &["replay", "--image", "/dev/null", "--file", "/f", "--timing"][..],
    ] {
        let out = bufwrite(args, "read 0 1\n");
        assert_refused(
            &out,
            &["not a regular file", "--timing"],
            &format!("{args:?}"),
        );
    }
}

#[test]
fn the_final_writeback_puts_unsynced_writes_on_the_device_and_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device_file(dir.path(), "dev", 1 << 20);
    let device = dev.to_str().unwrap();
    // No fsync in the trace: before, these writes were dropped.
    let trace = "pwrite 100 5000 7\nseek 20000\nwritev 3 10 4000\n";
    let mut model = vec![0u8; 24_010];
    model[100..5100].copy_from_slice(&pattern(7, 100, 5000));
    model[20_000..].copy_from_slice(&pattern(3, 20_000, 4010));

    let empty = file_hash(&dev);
    let out = bufwrite(
        &["replay", "--device", device, "--no-final-writeback"],
        trace,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(file_hash(&dev), empty, "--no-final-writeback wrote back");
    let out = bufwrite(&["replay", "--device", device], trace);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let disk = std::fs::read(&dev).unwrap();
    assert!(
        disk[..model.len()] == model[..],
        "the final writeback is missing"
    );

    // On an image: the file's bytes, read back by debugfs, and a clean fsck.
    let bytes = initial();
    let img = ext4_image(dir.path(), &bytes);
    let image = img.to_str().unwrap();
    let trace = "pwrite 10 5000 5\nwrite 3 9\n";
    let before = file_hash(&img);
    let out = bufwrite(
        &[
            "replay",
            "--image",
            image,
            "--file",
            "/f",
            "--no-final-writeback",
        ],
        trace,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(file_hash(&img), before);
    for path in ["iomap", "bh-legacy"] {
        let out = bufwrite(
            &["replay", "--image", image, "--file", "/f", "--path", path],
            trace,
        );
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
    }
    let mut want = bytes.clone();
    want[10..5010].copy_from_slice(&pattern(5, 10, 5000));
    want[..3].copy_from_slice(&pattern(9, 0, 3));
    assert!(dump(dir.path(), &img) == want);
    fsck_ok(&img);

    // --mem takes the flag too, and fdatasync runs like fsync.
    for extra in [&[][..], &["--no-final-writeback"][..]] {
        let mut args = vec!["replay", "--mem", "64K"];
        args.extend_from_slice(extra);
        let out = bufwrite(&args, "pwrite 0 10 1\nfdatasync\nread 0 10\n");
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("read 0 10 {:016x}\n", fnv1a64(&pattern(1, 0, 10)))
        );
    }
}

/// `bufwrite replay ARGS` under `ulimit -f 0` (SIGXFSZ ignored, as a shell's
/// `trap "" XFSZ` leaves it across exec): every write to a regular file
/// fails with EFBIG, while stdin, stdout and stderr are pipes and work.
fn replay_without_file_writes(args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 0 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_bufwrite"))
        .arg("replay")
        .args(args);
    run(&mut cmd, stdin)
}

#[test]
fn a_failed_final_writeback_is_an_error_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device_file(dir.path(), "dev", 1 << 20);
    let device = dev.to_str().unwrap();
    let before = file_hash(&dev);
    let trace = "pwrite 8192 10 1\nread 8192 10\n";
    let out = replay_without_file_writes(&["--device", device], trace);
    assert_refused(
        &out,
        &[
            "final writeback",
            // The gap before 8192 is unwritten (reads as zeroes) and no
            // longer written as zeroes: the first write is the data's.
            "file offset 8192",
            "byte offset 8192",
            "File too large",
        ],
        "final writeback under ulimit -f 0",
    );
    // The trace ran (its read printed) and the device is as it was.
    assert_eq!(
        text(&out.stdout),
        format!("read 8192 10 {:016x}\n", fnv1a64(&pattern(1, 8192, 10)))
    );
    assert_eq!(file_hash(&dev), before);
    // Without the final writeback nothing fails.
    let out = replay_without_file_writes(&["--device", device, "--no-final-writeback"], trace);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(file_hash(&dev), before);
}

#[test]
fn a_failing_trace_on_a_device_file_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let dev = device_file(dir.path(), "dev", 1 << 20);
    std::fs::write(&dev, pattern(11, 0, 1 << 20)).unwrap();
    let device = dev.to_str().unwrap();
    let before = file_hash(&dev);
    for (trace, line) in [
        (
            "pwrite 0 4096 7\nfsync\npwrite 4194304 1 1\n",
            "trace line 3",
        ),
        (
            "write 4096 1\nfsync\nseek 1044480\nwritev 2 4096 1\n",
            "trace line 4",
        ),
    ] {
        for extra in [&[][..], &["--timing", "--paths", "iomap"][..]] {
            let mut args = vec!["replay", "--device", device];
            args.extend_from_slice(extra);
            let out = bufwrite(&args, trace);
            assert_refused(&out, &[line, "capacity", "nothing was run"], trace);
            assert_eq!(text(&out.stdout), "", "{trace}: nothing may run");
            assert_eq!(
                file_hash(&dev),
                before,
                "{trace} {extra:?} wrote the device"
            );
        }
    }
}

#[test]
fn no_mem_size_panics_or_aborts() {
    let trace = "pwrite 0 4096 1\npwrite 1048576 10 2\nread 0 4096\nfsync\n";
    let want = format!("read 0 4096 {:016x}\n", fnv1a64(&pattern(1, 0, 4096)));
    // Far beyond this machine's memory, up to the largest whole-G size:
    // the RAM device only takes what is written.
    for size in [
        "100G",
        "17179869183G",
        "18014398509481980K",
        "0xfffffffffffff000",
    ] {
        for extra in [&[][..], &["--timing", "--paths", "iomap,bh-legacy"][..]] {
            let mut args = vec!["replay", "--mem", size];
            args.extend_from_slice(extra);
            let out = bufwrite(&args, trace);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout), want, "{args:?}");
        }
    }
    let bad: &[(&str, &str)] = &[
        ("17179869184G", "too large"),
        ("18446744073709551616", "is not a size"),
        ("99999999999999999999999999999G", "is not a size"),
        ("18446744073709551615", "multiple of the block size"),
        ("0", "positive multiple"),
        ("4095", "multiple of the block size"),
        ("-1", "is not a size"),
        ("", "is not a size"),
        ("G", "is not a size"),
        ("1e9", "is not a size"),
        ("0x", "is not a size"),
        ("1T", "is not a size"),
        ("\u{0661}\u{0662}K", "is not a size"),
    ];
    for (size, want) in bad {
        let arg = format!("--mem={size}");
        let out = bufwrite(&["replay", &arg], "read 0 1\n");
        assert_refused(&out, &[want], &arg);
    }
}

#[test]
fn errors_echo_a_clipped_number_or_line() {
    let digits = "7".repeat(100_000);
    let out = bufwrite(
        &["replay", "--mem", "64K"],
        &format!("pwrite 0 {digits} 1\n"),
    );
    assert_refused(
        &out,
        &["trace line 1", "LEN", "(100000 characters)"],
        "long number",
    );
    assert!(
        out.stderr.len() < 300,
        "{} bytes of error",
        out.stderr.len()
    );
    let out = bufwrite(&["replay", "--mem", "64K"], &format!("{digits}\n"));
    assert_refused(
        &out,
        &["unknown operation", "(100000 characters)"],
        "long op",
    );
    assert!(
        out.stderr.len() < 300,
        "{} bytes of error",
        out.stderr.len()
    );
    // A writev of 70,000 one-byte buffers past the capacity fails when it
    // runs; the line the error rebuilds is clipped too.
    let line = format!("writev 1{}\n", " 1".repeat(70_000));
    let out = bufwrite(&["replay", "--mem", "64K"], &line);
    assert_refused(
        &out,
        &["trace line 1", "writev 1 1 1", "characters)", "capacity"],
        "long writev",
    );
    assert!(
        out.stderr.len() < 500,
        "{} bytes of error",
        out.stderr.len()
    );
}

#[test]
fn zero_length_writes_behave_the_same_on_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial());
    let dev = device_file(dir.path(), "dev", 1 << 20);
    let (image, device) = (img.to_str().unwrap(), dev.to_str().unwrap());
    let targets: [&[&str]; 3] = [
        &["--mem", "1M"],
        &["--device", device],
        &["--image", image, "--file", "/f"],
    ];
    let hashes = || (file_hash(&img), file_hash(&dev));
    let before = hashes();
    // pwrite(2) refuses an offset past 2^63 - 1 with EINVAL before it looks
    // at the count; replay does the same, on every target.
    for trace in [
        "pwrite 18446744073709551615 0 1\n",
        "pwrite 9223372036854775808 0 1\n",
        "seek 18446744073709551615\nwrite 0 1\n",
        "seek 9223372036854775808\nwritev 1 0 0\n",
        "pwrite 9223372036854775807 1 1\n",
    ] {
        for target in targets {
            let mut args = vec!["replay"];
            args.extend_from_slice(target);
            let out = bufwrite(&args, trace);
            assert_refused(
                &out,
                &["EINVAL", "2^63 - 1"],
                &format!("{target:?} {trace}"),
            );
            assert_eq!(text(&out.stdout), "");
        }
    }
    assert_eq!(hashes(), before);
    // Below it, a zero-length write succeeds and writes nothing, past the
    // capacity and past i_size alike (generic_write_checks returns 0 for a
    // count of 0 before any size limit).
    let trace = "pwrite 9223372036854775807 0 1\npwrite 1099511627776 0 1\nseek 4194304\n\
                 write 0 1\nwritev 2 0 0\nread 0 1\n";
    for target in targets {
        let mut args = vec!["replay"];
        args.extend_from_slice(target);
        let out = bufwrite(&args, trace);
        assert!(out.status.success(), "{target:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 1, "{target:?}");
    }
    assert_eq!(hashes(), before, "a zero-length write wrote something");
    fsck_ok(&img);
}

#[test]
fn file_names_are_walked_as_the_kernel_walks_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial());
    let image = img.to_str().unwrap();
    let before = file_hash(&img);
    let cases: &[(&str, &[&str])] = &[
        ("/f/", &["not a directory", "\"/f\""]),
        ("/f/.", &["not a directory"]),
        ("/f//", &["not a directory"]),
        ("f", &["must be absolute", "\"/f\""]),
        ("./f", &["must be absolute"]),
        ("", &["empty"]),
        ("/", &["is a directory"]),
        ("/lost+found/", &["is a directory"]),
        ("/nope/", &["not found"]),
        ("/f/g", &["not a directory"]),
    ];
    for (name, wants) in cases {
        for extra in [&[][..], &["--timing", "--paths", "iomap"][..]] {
            let mut args = vec!["replay", "--image", image, "--file", name];
            args.extend_from_slice(extra);
            let out = bufwrite(&args, "pwrite 0 10 1\nfsync\n");
            assert_refused(&out, wants, &format!("--file {name:?} {extra:?}"));
            assert_eq!(file_hash(&img), before, "--file {name:?} wrote the image");
        }
    }
    // The path walk's harmless spellings still name /f.
    for name in ["//f", "/./f"] {
        let out = bufwrite(&["replay", "--image", image, "--file", name], "read 0 1\n");
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn grammar_allocation_ops_run() {
    // Formerly refused as "not supported yet": truncate, punch and
    // fallocate run now; the size they leave is what the read sees.
    let trace = "pwrite 0 5000 1\npunch 0 4096\nfallocate 0 8192 keep_size\n\
                 fallocate 0 6000\ntruncate 3000\nfsync\nread 0 9000\n";
    let out = bufwrite(&["replay", "--mem", "64K"], trace);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The punched first block reads as zeroes; truncate cut at 3000.
    assert_eq!(
        text(&out.stdout),
        format!("read 0 9000 {:016x}\n", fnv1a64(&[0u8; 3000]))
    );
}

/// Opt-in: a loop device over an image file, as `--device` and `--image`.
#[test]
fn timing_refuses_a_block_device_and_leaves_it_untouched() {
    if std::env::var_os("BUFWRITE_ROOT_TESTS").is_none_or(|v| v != "1") {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root and losetup)");
        return;
    }
    use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial());
    let before = file_hash(&img);
    let lo = LoopDevice::attach(&img, LoopOptions::default()).expect("losetup");
    let dev = lo.path().to_str().unwrap().to_string();
    for args in [
        &["replay", "--device", &dev, "--timing"][..],
        &["replay", "--image", &dev, "--file", "/f", "--timing"][..],
    ] {
        let out = bufwrite(args, "pwrite 0 10 1\nfsync\n");
        assert_refused(&out, &["not a regular file"], &format!("{args:?}"));
    }
    // A plain replay on it with a trace that fails (past the largest ext4
    // file) is refused before it runs.
    let out = bufwrite(
        &["replay", "--image", &dev, "--file", "/f"],
        "pwrite 0 10 1\nfsync\npwrite 17592186044416 1 1\n",
    );
    assert_refused(
        &out,
        &["trace line 3", "nothing was run"],
        "failing trace on a loop device",
    );
    drop(lo);
    assert_eq!(file_hash(&img), before);
}
