//! The `bufwrite` binary run as a user runs it: replay outputs and errors,
//! and a short libmicro run with its JSON. No test asserts a time.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A trace touching every operation, a gap past EOF, reads past EOF and a
/// hex seed; the hashes below come from an independent model of docs/DESIGN.md §7's
/// byte function and FNV-1a (a few lines of Python), not from this binary.
const TRACE: &str = "# a small trace
pwrite 0 5000 7
write 100 3
read 0 200
seek 0x1000
writev 9 1000 24 3000
read 4000 2000
read 7000 5000
read 9000 10
fsync
pwrite 8190 4 0xffffffffffffffff
read 8188 8
";

const EXPECTED: &str = "read 0 200 01ec8166043e8ac6
read 4000 2000 62ad845569345da1
read 7000 5000 0374a1ea68da7cb3
read 9000 10 cbf29ce484222325
read 8188 8 7016a1aeb03be9eb
";

fn bufwrite(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bufwrite"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bufwrite");
    // The command may refuse its arguments and exit before reading stdin:
    // a broken pipe then is expected, and the output says what happened.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().expect("wait for bufwrite")
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn replay_on_mem_prints_the_model_hashes() {
    for extra in [&[][..], &["--order", "0", "--block-size", "1024"][..]] {
        let mut args = vec!["replay", "--mem", "64K"];
        args.extend_from_slice(extra);
        let out = bufwrite(&args, TRACE);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), EXPECTED, "{extra:?}");
    }
}

#[test]
fn replay_on_an_image_file_from_a_trace_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dev.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let trace = dir.path().join("trace");
    std::fs::write(&trace, TRACE).unwrap();
    let out = bufwrite(
        &[
            "replay",
            "--device",
            img.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), EXPECTED);
    // The fsync put the file on the image: its first 200 bytes hash as the
    // trace's `read 0 200` does.
    let disk = std::fs::read(&img).unwrap();
    assert_eq!(
        format!("{:016x}", fnv1a64(&disk[..200])),
        "01ec8166043e8ac6"
    );
}

#[test]
fn malformed_trace_names_the_line_and_runs_nothing() {
    let out = bufwrite(
        &["replay", "--mem", "64K"],
        "read 0 1\nfsync\n\npwrite 0 x 1\n",
    );
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "", "nothing may run before the parse");
    let err = text(&out.stderr);
    assert!(
        err.contains("trace line 4") && err.contains("\"x\""),
        "{err}"
    );
}

#[test]
fn failing_op_names_its_line_after_printing_the_earlier_reads() {
    let out = bufwrite(
        &["replay", "--mem", "8K"],
        "read 0 1\npwrite 8000 1000 1\nread 0 1\n",
    );
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "read 0 1 cbf29ce484222325\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("trace line 2") && err.contains("capacity"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["replay", "--mem", "64K", "--path", "ext9"],
            "valid paths: iomap, bh-legacy, bh-tailskip, bh-seek",
        ),
        (&["replay", "--mem", "1000"], "multiple of the block size"),
        (&["replay", "--mem", "12Q"], "is not a size"),
        (&["replay", "--mem", "64K", "--order", "10"], "--order"),
        (
            &["replay", "--mem", "64K", "--backend", "aio"],
            "expected sync or uring",
        ),
        (
            &["libmicro", "--mem", "--block-size", "8192"],
            "1024, 2048 or 4096",
        ),
        (&["libmicro", "--mem", "--cases", "read_u1k"], "valid cases"),
        (
            &["libmicro", "--mem", "--paths", "iomap,nope"],
            "valid paths",
        ),
        (&["libmicro", "--mem", "--runs", "0"], "--runs"),
    ];
    for (args, want) in cases {
        let out = bufwrite(args, "");
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn libmicro_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = bufwrite(
        &[
            "libmicro",
            "--mem",
            "--runs",
            "3",
            "--batch",
            "2",
            "--order",
            "2",
            "--cases",
            "write_u1k,writev_u10k",
            "--paths",
            "iomap,bh-legacy,bh-tailskip",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("order 2") && table.contains("runs 3"),
        "{table}"
    );
    assert!(
        table.contains("write_u1k") && table.contains("writev_u10k"),
        "{table}"
    );
    assert!(!table.contains("pwrite_u1k"), "{table}");
    assert!(
        table.contains("legacy/iomap") && table.contains("tailskip/iomap"),
        "{table}"
    );
    assert!(
        table.contains("bytes per cached GiB") || table.contains("metadata"),
        "{table}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(doc["params"]["runs"], 3);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "two cases by three paths");
    let find = |case: &str, path: &str| {
        results
            .iter()
            .find(|r| r["case"] == case && r["path"] == path)
            .unwrap_or_else(|| panic!("no result for {case} on {path}"))
    };
    // Order 2 with 4 KiB blocks: 4 heads per folio, walked twice per call
    // by the legacy path; iomap walks none.
    assert_eq!(find("write_u1k", "bh-legacy")["walked_heads"], 8);
    assert_eq!(find("write_u1k", "iomap")["walked_heads"], 0);
    let r = find("writev_u10k", "iomap");
    assert_eq!(
        (r["order"].as_u64(), r["block_size"].as_u64()),
        (Some(2), Some(4096))
    );
    assert_eq!(r["position"], 0);
    assert_eq!(r["write_size"], 10 * 10240);
    // Cached overwrites: no device I/O during the timed calls.
    assert_eq!(
        (r["device_reads"].as_u64(), r["device_writes"].as_u64()),
        (Some(0), Some(0))
    );
    let u = &r["usecs_per_call"];
    let (min, med, max) = (
        u["min"].as_f64().unwrap(),
        u["median"].as_f64().unwrap(),
        u["max"].as_f64().unwrap(),
    );
    assert!(min <= med && med <= max);
}

#[test]
fn libmicro_runs_every_path_on_a_temporary_ext4_image_by_default() {
    let out = bufwrite(
        &[
            "libmicro",
            "--runs",
            "3",
            "--cases",
            "write_u1k",
            "--batch",
            "10",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("ext4 image") && header.contains("file /bufwrite.dat"),
        "{table}"
    );
    // io_uring unless it is unavailable here, and then a note says so.
    let note = text(&out.stderr).contains("io_uring is unavailable");
    assert!(
        header.contains(if note {
            "backend sync"
        } else {
            "backend uring"
        }),
        "{table}"
    );
    assert!(header.contains("block size 4096") && header.contains("order 9"));
    for path in ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"] {
        assert!(table.contains(path), "{path} missing: {table}");
    }
    assert!(table.contains("write_u1k"), "{table}");
}

/// The docs/DESIGN.md §7 pattern byte, written again here from the spec.
fn pattern_byte(seed: u64, off: u64) -> u8 {
    let mut z = (seed ^ (off >> 3)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> (8 * (off & 7))) as u8
}

/// An e2fsprogs tool: by name when on PATH, else from /usr/sbin or /sbin.
fn tool(name: &str) -> Command {
    let sbin = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
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

/// A 4 KiB-block ext4 image with `/f` holding `bytes`, made with mkfs.ext4
/// and debugfs, then the given debugfs requests (e.g. a punch).
fn ext4_image(dir: &std::path::Path, bytes: &[u8], extra: &[&str]) -> std::path::PathBuf {
    let img = dir.join("fs.img");
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&img)
            .arg("8M"),
    );
    std::fs::write(dir.join("src"), bytes).unwrap();
    let mut reqs = vec!["write src /f".to_string()];
    reqs.extend(extra.iter().map(|r| r.to_string()));
    for req in reqs {
        run_ok(
            tool("debugfs")
                .current_dir(dir)
                .args(["-w", "-R", &req])
                .arg(&img),
        );
    }
    img
}

/// `/f` as e2fsprogs reads it back.
fn dump(dir: &std::path::Path, img: &std::path::Path) -> Vec<u8> {
    let out = dir.join("dump");
    let _ = std::fs::remove_file(&out);
    run_ok(
        tool("debugfs")
            .args(["-R", &format!("dump /f {}", out.display())])
            .arg(img),
    );
    std::fs::read(&out).unwrap()
}

fn fsck_ok(img: &std::path::Path) {
    run_ok(tool("e2fsck").arg("-fn").arg(img));
}

fn io_uring_unavailable(out: &Output) -> bool {
    let unavailable = text(&out.stderr).contains("io_uring is unavailable");
    if unavailable {
        eprintln!("skip: io_uring is unavailable here");
    }
    unavailable
}

#[test]
fn replay_overwrites_a_file_in_an_ext4_image_through_every_path() {
    // 100_000 bytes: the last block is partial, and the last write ends
    // exactly at EOF.
    let initial: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let trace = "pwrite 10 5000 3
seek 40000
write 9000 5
writev 6 100 4000 900
pwrite 95000 5000 9
read 0 100000
fsync
read 99990 100
";
    // The model: the writes applied to the initial bytes by hand.
    let mut model = initial.clone();
    let mut put = |off: usize, len: usize, seed: u64| {
        for (o, b) in model.iter_mut().enumerate().skip(off).take(len) {
            *b = pattern_byte(seed, o as u64);
        }
    };
    put(10, 5000, 3);
    put(40_000, 9000, 5);
    put(49_000, 5000, 6);
    put(95_000, 5000, 9);
    let expected = format!(
        "read 0 100000 {:016x}\nread 99990 100 {:016x}\n",
        fnv1a64(&model),
        fnv1a64(&model[99_990..])
    );
    let runs = [
        ("iomap", "uring"),
        ("bh-legacy", "sync"),
        ("bh-tailskip", "uring"),
        ("bh-seek", "sync"),
    ];
    for (path, backend) in runs {
        let dir = tempfile::tempdir().unwrap();
        let img = ext4_image(dir.path(), &initial, &[]);
        let out = bufwrite(
            &[
                "replay",
                "--image",
                img.to_str().unwrap(),
                "--file",
                "/f",
                "--path",
                path,
                "--backend",
                backend,
                "--order",
                "2",
            ],
            trace,
        );
        if backend == "uring" && io_uring_unavailable(&out) {
            continue;
        }
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{path} on {backend}");
        assert!(
            dump(dir.path(), &img) == model,
            "{path} on {backend}: dump differs"
        );
        fsck_ok(&img);
    }
}

#[test]
fn ext4_refusals_name_the_line_and_leave_the_image_byte_identical() {
    // Ten blocks; block 5 punched into a hole.
    let initial: Vec<u8> = (0..40_960u32).map(|i| (i % 251) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial, &["punch /f 5 5"]);
    let before = std::fs::read(&img).unwrap();
    let image = img.to_str().unwrap();
    let cases: &[(&[&str], &str, &[&str])] = &[
        (
            &["replay", "--image", image, "--file", "/nope"],
            "read 0 1\n",
            &["/nope", "not found"],
        ),
        (&["replay", "--image", image], "read 0 1\n", &["--file"]),
        (
            &["libmicro", "--image", image, "--file", "/f", "--runs", "1"],
            "",
            &["holds 40960 bytes", "at least"],
        ),
        (&["libmicro", "--image", image], "", &["--file"]),
    ];
    for (args, trace, wants) in cases {
        let out = bufwrite(args, trace);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(text(&out.stdout), "", "{args:?}: nothing may run");
        for want in *wants {
            assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{args:?} changed the image"
        );
    }
    fsck_ok(&img);
}

/// Writes into a hole, past EOF and a new file allocate; a trace that runs
/// out of space names its line, exits non-zero, and still writes back what
/// the lines before it acknowledged: the image holds exactly those bytes
/// and is fsck-clean.
#[test]
fn replay_allocates_on_ext4_and_names_the_line_that_hits_enospc() {
    let initial: Vec<u8> = (0..40_960u32).map(|i| (i % 251) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let img = ext4_image(dir.path(), &initial, &["punch /f 5 5"]);
    let image = img.to_str().unwrap();
    for path in ["iomap", "bh-legacy", "bh-tailskip"] {
        let out = bufwrite(
            &["replay", "--image", image, "--file", "/f", "--path", path],
            "pwrite 20400 100 2\npwrite 40000 2000 1\nfsync\nread 0 10\n",
        );
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
        fsck_ok(&img);
    }
    let got = dump(dir.path(), &img);
    assert_eq!(got.len(), 42_000);
    assert!(got[..20400] == initial[..20400]);
    // A new file, on an image that fills: 8 MiB of 1 MiB writes do not fit.
    let mut trace = String::new();
    for i in 0..8u64 {
        trace.push_str(&format!("pwrite {} 1048576 {}\n", i << 20, i + 1));
    }
    let out = bufwrite(
        &["replay", "--image", image, "--file", "/new", "--create"],
        &trace,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the image did not fill: {err}");
    assert!(err.contains("trace line"), "{err}");
    assert!(err.contains("no space"), "{err}");
    fsck_ok(&img);
    let newf = dir.path().join("new.dump");
    let _ = std::fs::remove_file(&newf);
    run_ok(
        tool("debugfs")
            .args(["-R", &format!("dump /new {}", newf.display())])
            .arg(&img),
    );
    let bytes = std::fs::read(&newf).unwrap();
    assert!(
        !bytes.is_empty() && bytes.len() < 8 << 20,
        "{}",
        bytes.len()
    );
    // Every byte that went in is the trace's: line i wrote seed i + 1.
    for (i, chunk) in bytes.chunks(1 << 20).enumerate() {
        let mut want = vec![0u8; chunk.len()];
        bufwrite_engine::pattern::fill(i as u64 + 1, (i as u64) << 20, &mut want);
        assert!(chunk == &want[..], "chunk {i} differs");
    }
}
