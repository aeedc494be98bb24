//! The `bufwrite` binary run as a user runs it: replay outputs and errors,
//! and a short libmicro run with its JSON. No test asserts a time.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A trace touching every operation, a gap past EOF, reads past EOF and a
/// hex seed; the hashes below come from an independent model of DESIGN.md's
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
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
fn libmicro_on_its_own_temporary_image() {
    let out = bufwrite(
        &[
            "libmicro",
            "--runs",
            "2",
            "--batch",
            "1",
            "--cases",
            "pwrite_u1k",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("backend sync") && table.contains("pwrite_u1k"),
        "{table}"
    );
}
