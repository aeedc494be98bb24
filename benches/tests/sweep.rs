//! `bufwrite sweep`, `libmicro --json` and `replay --timing` run as a user
//! runs them, with tiny settings: the files they write exist and parse, the
//! JSON follows the one schema, the SVG carries its axis labels. No test
//! asserts a time.
//!
//! Also the generator of the committed traces in `benches/traces/`:
//! `cargo test -p bufwrite-bench --test sweep -- --ignored generate_traces`
//! rewrites them, and `committed_traces_match_the_generator` keeps them so.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bufwrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bufwrite"))
        .args(args)
        .output()
        .expect("run bufwrite")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> Output {
    let out = bufwrite(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

const PATHS: &[&str] = &["iomap", "bh-legacy", "bh-tailskip", "bh-seek"];

/// The README's schema, checked field by field (independently of the
/// binary's own checker).
fn check_schema(doc: &Value) {
    let m = &doc["machine"];
    assert!(
        m["cpu"].is_string() && m["kernel"].is_string() && m["cores"].is_u64(),
        "{m}"
    );
    assert!(doc["params"]["command"].is_string(), "{}", doc["params"]);
    let results = doc["results"].as_array().expect("results array");
    assert!(!results.is_empty());
    for r in results {
        assert!(r["case"].is_string(), "{r}");
        assert!(PATHS.contains(&r["path"].as_str().unwrap()), "{r}");
        for f in [
            "order",
            "block_size",
            "device_reads",
            "device_writes",
            "walked_heads",
        ] {
            assert!(r[f].is_u64(), "{f}: {r}");
        }
        for f in ["position", "write_size"] {
            assert!(r[f].is_u64() || r[f].is_null(), "{f}: {r}");
        }
        let u = &r["usecs_per_call"];
        for k in ["median", "min", "max"] {
            assert!(u[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {r}");
        }
        let (min, med, max) = (u["min"].as_f64(), u["median"].as_f64(), u["max"].as_f64());
        assert!(min <= med && med <= max, "{r}");
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs a tiny sweep into a temp dir; checks its three files and returns
/// the JSON document.
fn sweep(kind: &str, extra: &[&str], points: usize, x_label: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut args = vec![
        "sweep",
        kind,
        "--out",
        out,
        "--runs",
        "2",
        "--paths",
        "iomap,bh-legacy",
    ];
    args.extend_from_slice(extra);
    let run = ok(&args);
    assert!(
        text(&run.stdout).contains("usecs/call"),
        "{}",
        text(&run.stdout)
    );
    let file = |ext: &str| dir.path().join(format!("sweep-{kind}.{ext}"));

    let csv = std::fs::read_to_string(file("csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..2], ["case", "path"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), points * 2, "{csv}");
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
        for (h, cell) in header.iter().zip(row).skip(2) {
            assert!(cell.parse::<f64>().is_ok(), "{h} = {cell:?}");
        }
    }

    let doc = read_json(&file("json"));
    check_schema(&doc);
    assert_eq!(doc["params"]["sweep"], kind);
    assert_eq!(doc["results"].as_array().unwrap().len(), points * 2);

    let svg = std::fs::read_to_string(file("svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    for label in [x_label, "usecs/call (median", "iomap", "bh-legacy"] {
        assert!(
            svg.contains(label),
            "{label:?} missing from the {kind} chart"
        );
    }
    assert!(svg.contains("<polyline"), "no line in the {kind} chart");
    doc
}

#[test]
fn order_sweep_writes_csv_json_and_svg() {
    let doc = sweep("order", &["--batch", "4"], 10, "folio order");
    assert!(doc["params"]["memcpy_usecs_per_call"]["median"].is_number());
    // Cached overwrites: no device I/O; the legacy walk grows with the order.
    let r = doc["results"].as_array().unwrap();
    assert!(r.iter().all(|r| r["device_reads"] == 0));
    let heads = |order: u64| {
        r.iter()
            .find(|r| r["path"] == "bh-legacy" && r["order"] == order)
            .unwrap()["walked_heads"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((heads(0), heads(9)), (2, 1024));
}

#[test]
fn position_blocksize_and_size_sweeps() {
    sweep(
        "position",
        &["--batch", "2"],
        16,
        "write position in the folio (KiB)",
    );
    sweep("blocksize", &["--batch", "2"], 3, "block size (KiB)");
    let doc = sweep("size", &["--batch", "1"], 12, "write size (bytes");
    let sizes: Vec<u64> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["write_size"].as_u64().unwrap())
        .collect();
    assert_eq!((sizes[0], sizes[sizes.len() - 1]), (512, 1 << 20));
}

#[test]
fn cold_sweep_reads_in_a_block_per_call() {
    // The default target, a file in a temporary ext4 image, then Flat files
    // in a temporary image file.
    for extra in [
        &["--backend", "sync"][..],
        &["--backend", "sync", "--flat"][..],
    ] {
        let doc = sweep("cold", extra, 16, "write position in the folio (KiB)");
        for r in doc["results"].as_array().unwrap() {
            // Two calls per point and path, each one partial-block read-in.
            assert_eq!(r["device_reads"], 2, "{extra:?}: {r}");
            assert_eq!(r["position"].as_u64().unwrap() % 4096, 1536, "{r}");
        }
        let device = doc["params"]["device"].as_str().unwrap();
        assert_eq!(device.contains("ext4"), extra.len() == 2, "{device}");
    }
}

#[test]
fn json_flag_prints_the_document_and_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "sweep",
        "blocksize",
        "--out",
        dir.path().to_str().unwrap(),
        "--runs",
        "1",
        "--batch",
        "1",
        "--json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON");
    check_schema(&doc);
    assert_eq!(doc["results"].as_array().unwrap().len(), 3 * PATHS.len());
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn bad_sweep_flags_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["sweep", "cold", "--batch", "3"], "timed one by one"),
        (&["sweep", "size", "--write-size", "1K"], "varies it"),
        (&["sweep", "order", "--backend", "uring"], "cold sweep only"),
        (&["sweep", "order", "--write-size", "4M"], "1 MiB"),
        (&["sweep", "cold", "--write-size", "8K"], "4096"),
        (&["sweep", "order", "--paths", "ext2"], "valid paths"),
        (&["sweep", "tilt"], "invalid value"),
        (&["sweep", "order", "--runs", "0"], "--runs"),
    ];
    for (args, want) in cases {
        let out = bufwrite(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn libmicro_json_follows_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lm.json");
    ok(&[
        "libmicro",
        "--mem",
        "--order",
        "0",
        "--runs",
        "2",
        "--batch",
        "2",
        "--cases",
        "write_u1k,pwrite_u1k",
        "--json",
        json.to_str().unwrap(),
    ]);
    let doc = read_json(&json);
    check_schema(&doc);
    assert_eq!(doc["params"]["command"], "libmicro");
    assert_eq!(doc["results"].as_array().unwrap().len(), 2 * PATHS.len());
}

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("traces")
}

#[test]
fn replay_timing_reports_every_kind_and_path_and_reads_as_plain_replay() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in traces() {
        let trace = traces_dir().join(name);
        let trace = trace.to_str().unwrap();
        let plain = ok(&["replay", "--mem", "16M", "--trace", trace]);
        let json = dir.path().join(format!("{name}.json"));
        let timed = ok(&[
            "replay",
            "--mem",
            "16M",
            "--trace",
            trace,
            "--timing",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(text(&timed.stdout), text(&plain.stdout), "{name}");
        let err = text(&timed.stderr);
        assert!(
            err.contains("usecs per operation") && err.contains("bh-legacy/iomap"),
            "{err}"
        );
        assert!(!err.contains("warning"), "{err}");
        let doc = read_json(&json);
        check_schema(&doc);
        let results = doc["results"].as_array().unwrap();
        for p in PATHS {
            assert!(results.iter().any(|r| r["path"] == *p), "{name}: {p}");
        }
    }
}

#[test]
fn replay_timing_flags_need_timing() {
    let out = bufwrite(&["replay", "--mem", "1M", "--paths", "iomap"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--timing"),
        "{}",
        text(&out.stderr)
    );
}

// ---- the committed traces ----

use bufwrite_engine::pattern::splitmix64;

/// A counter-based generator: the traces depend on nothing but the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 += 1;
        splitmix64(self.0) % n
    }
}

const MIB: u64 = 1 << 20;

/// libMicro's write_u1k: a cached, uptodate 2 MiB file, then `seek 0` +
/// `write 1024` over and over.
fn write_u1k() -> String {
    let mut t = String::from(
        "# libMicro write_u1k: a 2 MiB file written and fsynced (every folio uptodate\n\
         # and clean), then 2000 calls of seek 0 + write 1024, as libMicro's write\n\
         # case does them. Generated by benches/tests/sweep.rs (generate_traces).\n\
         pwrite 0 2097152 1\nfsync\n",
    );
    for _ in 0..2000 {
        t += "seek 0\nwrite 1024 2\n";
    }
    t + "read 0 4096\n"
}

/// Small random overwrites of a cached 8 MiB file.
fn random_overwrite() -> String {
    let mut r = Rng(0x5eed_0001);
    let mut t = String::from(
        "# Random small overwrites: an 8 MiB file written (8 x 1 MiB write) and\n\
         # fsynced, then 4000 pwrites of 512 B .. 4 KiB at random 512-aligned\n\
         # offsets, an fsync, and a read of the whole file.\n\
         # Generated by benches/tests/sweep.rs (generate_traces).\nseek 0\n",
    );
    for _ in 0..8 {
        t += "write 1048576 1\n";
    }
    t += "fsync\n";
    for _ in 0..4000 {
        let len = 512 << r.below(4);
        let off = r.below((8 * MIB - len) / 512 + 1) * 512;
        t += &format!("pwrite {off} {len} {}\n", 1 + r.below(1000));
    }
    t + "fsync\nread 0 8388608\n"
}

/// A mixed workload growing a file: appends, overwrites, vectored writes,
/// reads (some past EOF) and periodic fsyncs.
fn mixed() -> String {
    let mut r = Rng(0x5eed_0002);
    let mut t = String::from(
        "# Mixed: 3000 operations on a file that starts empty and grows to at most\n\
         # 6 MiB: 30% appends (seek to EOF + write), 25% pwrite overwrites, 10%\n\
         # writev, 30% reads (some past EOF), 5% fsync.\n\
         # Generated by benches/tests/sweep.rs (generate_traces).\n",
    );
    let mut size = 0u64;
    for _ in 0..3000 {
        let pick = r.below(100);
        let seed = 1 + r.below(1000);
        if pick < 30 || size == 0 {
            let len = 512 + r.below(64 * 1024);
            let off = if size + len > 6 * MIB {
                r.below(size - len)
            } else {
                size
            };
            t += &format!("seek {off}\nwrite {len} {seed}\n");
            size = size.max(off + len);
        } else if pick < 55 {
            let off = r.below(size);
            let len = (1 + r.below(8192)).min(size - off);
            t += &format!("pwrite {off} {len} {seed}\n");
        } else if pick < 65 {
            let off = r.below(size);
            let lens: Vec<u64> = (0..3).map(|_| 1 + r.below(4096)).collect();
            let total: u64 = lens.iter().sum();
            let off = off.min(6 * MIB - total);
            t += &format!(
                "seek {off}\nwritev {seed} {} {} {}\n",
                lens[0], lens[1], lens[2]
            );
            size = size.max(off + total);
        } else if pick < 95 {
            t += &format!("read {} {}\n", r.below(size + 4096), 1 + r.below(16384));
        } else {
            t += "fsync\n";
        }
    }
    t + "fsync\n"
}

fn traces() -> Vec<(&'static str, String)> {
    vec![
        ("write_u1k.trace", write_u1k()),
        ("random_overwrite.trace", random_overwrite()),
        ("mixed.trace", mixed()),
    ]
}

#[test]
#[ignore = "rewrites benches/traces/*.trace"]
fn generate_traces() {
    for (name, body) in traces() {
        std::fs::write(traces_dir().join(name), body).unwrap();
    }
}

#[test]
fn committed_traces_match_the_generator() {
    for (name, body) in traces() {
        let committed = std::fs::read_to_string(traces_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (run the ignored generate_traces)"));
        assert!(committed == body, "{name} differs from its generator");
    }
}
