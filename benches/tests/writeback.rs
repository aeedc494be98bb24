//! `bufwrite writeback` run as a user runs it: the engine's figures per
//! path (dirtying, durable, fsync-only MB/s; write amplification), fio's
//! figure beside them (a stand-in fio script here: fio need not be
//! installed), and the old `--device-only` figure. No test asserts a time;
//! the write amplification is a count, and is asserted exactly.

mod common;
use common::{bufwrite, text};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A directory on a real filesystem (the image is opened O_DIRECT).
fn real_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Runs `writeback --json` with `extra` on a 16 MiB temporary image in
/// `dir`; the JSON rows.
fn run_json(dir: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let d = dir.to_str().unwrap();
    let mut argv = vec!["writeback", "--json", "--dir", d, "--image-size", "16M"];
    argv.extend_from_slice(extra);
    let out = bufwrite(&argv, "");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{argv:?}: {err}");
    let rows = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (rows, err)
}

fn f(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {row}"))
}

/// Rows keyed by (path, layout, io_size), in the order printed.
fn key(row: &Value) -> (String, String, u64) {
    (
        row["path"].as_str().unwrap().to_string(),
        row["layout"].as_str().unwrap().to_string(),
        row["io_size"].as_u64().unwrap(),
    )
}

#[test]
fn every_path_dirties_and_writes_back_block_aligned_writes_once() {
    let dir = real_tempdir();
    // 2 MiB folios and 4 KiB writes: per-folio dirtying would write 512
    // blocks per random write, per-block state writes the one it dirtied.
    let (rows, err) = run_json(
        dir.path(),
        &[
            "--total",
            "1M",
            "--io-size",
            "4K,64K",
            "--runs",
            "2",
            "--backend",
            "sync",
            "--no-fio",
        ],
    );
    assert!(!err.contains("fio was not found"), "--no-fio: {err}");
    let keys: Vec<_> = rows.iter().map(key).collect();
    let mut want = Vec::new();
    for io in [4096, 65536] {
        for layout in ["seq", "random"] {
            for path in ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"] {
                want.push((path.to_string(), layout.to_string(), io));
            }
        }
    }
    assert_eq!(keys, want);
    for r in &rows {
        assert_eq!(r["backend"], "sync", "{r}");
        assert_eq!(r["bytes"], 1 << 20, "{r}");
        assert_eq!(f(r, "write_amplification"), 1.0, "{r}");
        assert_eq!(r["runs_mb_per_s"].as_array().unwrap().len(), 2, "{r}");
        // mb_per_s stays the median per configuration: the durable one.
        assert_eq!(f(r, "mb_per_s"), f(r, "durable_mb_per_s"), "{r}");
        let (dirty, durable, fsync) = (
            f(r, "dirty_mb_per_s"),
            f(r, "durable_mb_per_s"),
            f(r, "fsync_mb_per_s"),
        );
        assert!(dirty > 0.0 && durable > 0.0 && fsync > 0.0, "{r}");
        // The flusher alone wrote everything back (it is a rate, so > 0).
        assert!(f(r, "flusher_mb_per_s") > 0.0, "{r}");
        // Durable time is write time plus fsync time: in every run its
        // rate is below both, so its median is below both medians too.
        assert!(durable < dirty && durable < fsync, "{r}");
        assert!(r["fio_mb_per_s"].is_null(), "{r}");
        let fio = r["fio"].as_str().unwrap();
        assert!(fio.contains("--direct=1 --end_fsync=1"), "{fio}");
        assert!(fio.contains("--ioengine=psync"), "{fio}");
    }
}

#[test]
fn partial_block_writes_write_whole_blocks() {
    let dir = real_tempdir();
    // 1 KiB writes into 4 KiB blocks: sequential ones fill every block
    // they dirty; 64 random ones over 16 MiB land in (almost surely)
    // distinct blocks, each written back whole.
    let (rows, _) = run_json(
        dir.path(),
        &[
            "--total",
            "64K",
            "--io-size",
            "1K",
            "--runs",
            "1",
            "--backend",
            "sync",
            "--paths",
            "iomap,bh-tailskip",
            "--order",
            "0",
            "--no-fio",
        ],
    );
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let amp = f(r, "write_amplification");
        match r["layout"].as_str().unwrap() {
            "seq" => assert_eq!(amp, 1.0, "{r}"),
            _ => assert!(amp > 1.0 && amp <= 4.0, "{r}"),
        }
    }
    // With 1 KiB blocks the same random writes are written once.
    let (rows, _) = run_json(
        dir.path(),
        &[
            "--total",
            "64K",
            "--io-size",
            "1K",
            "--runs",
            "1",
            "--backend",
            "sync",
            "--paths",
            "bh-legacy",
            "--layout",
            "random",
            "--block-size",
            "1024",
            "--no-fio",
        ],
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(f(&rows[0], "write_amplification"), 1.0, "{}", rows[0]);
}

/// A stand-in fio at `dir/fio` that prints `stdout` and exits with `code`,
/// after recording its arguments in `dir/args`.
fn fake_fio(dir: &Path, stdout: &str, code: i32) -> PathBuf {
    let p = dir.join("fio");
    let args = dir.join("args");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\ncat <<'EOF'\n{stdout}\nEOF\nexit {code}\n",
            args.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn fios_figure_is_reported_beside_ours_and_null_when_it_fails() {
    let dir = real_tempdir();
    let bin_dir = tempfile::tempdir().unwrap();
    let json = r#"{"fio version": "fio-3.33", "jobs": [{"jobname": "wb",
      "write": {"io_bytes": 1048576, "bw_bytes": 123000000, "bw": 120117}}]}"#;
    let fio = fake_fio(bin_dir.path(), json, 0);
    let common = [
        "--total",
        "256K",
        "--io-size",
        "4K",
        "--runs",
        "3",
        "--backend",
        "sync",
        "--layout",
        "seq",
        "--paths",
        "iomap,bh-seek",
    ];
    let mut argv = common.to_vec();
    argv.extend(["--fio", fio.to_str().unwrap()]);
    let (rows, _) = run_json(dir.path(), &argv);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(f(r, "fio_mb_per_s"), 123.0, "{r}");
    }
    // One job per run (not per path), with JSON output, the job printed.
    let calls = std::fs::read_to_string(bin_dir.path().join("args")).unwrap();
    assert_eq!(calls.lines().count(), 3, "{calls}");
    for call in calls.lines() {
        assert!(call.ends_with("--output-format=json"), "{call}");
        let printed = rows[0]["fio"].as_str().unwrap();
        assert_eq!(
            format!("fio {}", call.trim_end_matches(" --output-format=json")),
            printed
        );
    }

    // A fio that fails: one warning, a null figure, our figures still there.
    let failing = fake_fio(bin_dir.path(), "fio: engine not loadable", 1);
    let mut argv = common.to_vec();
    argv.extend(["--fio", failing.to_str().unwrap()]);
    let (rows, err) = run_json(dir.path(), &argv);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        err.matches("warning: fio's figure is null").count(),
        1,
        "{err}"
    );
    for r in &rows {
        assert!(r["fio_mb_per_s"].is_null(), "{r}");
        assert_eq!(f(r, "write_amplification"), 1.0, "{r}");
    }
}

#[test]
fn without_fio_one_line_says_so() {
    let dir = real_tempdir();
    let d = dir.path().to_str().unwrap();
    let out = common::run(
        common::bin()
            .env("PATH", "/nonexistent")
            .args(["writeback", "--dir", d, "--image-size", "16M"])
            .args(["--total", "64K", "--io-size", "64K", "--runs", "1"])
            .args(["--backend", "sync", "--paths", "iomap", "--layout", "seq"]),
        "",
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("fio was not found").count(), 1, "{err}");
    let table = text(&out.stdout);
    assert!(table.contains("through the engine"), "{table}");
    let row = table.lines().find(|l| l.starts_with("iomap")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    // path backend qd reg io_size layout dirty durable fsync flusher w-amp
    // fio runs
    assert_eq!(
        &cols[..6],
        ["iomap", "sync", "1", "no", "64K", "seq"],
        "{row}"
    );
    assert!(cols[9].parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
    assert_eq!(cols[10], "1.00", "{row}");
    assert_eq!(cols[11], "-", "{row}");
}

#[test]
fn device_only_keeps_the_old_figure() {
    let dir = real_tempdir();
    let (rows, _) = run_json(
        dir.path(),
        &[
            "--device-only",
            "--total",
            "256K",
            "--io-size",
            "4K",
            "--runs",
            "1",
            "--backend",
            "sync",
            "--no-fio",
        ],
    );
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(r["path"].is_null(), "{r}");
        assert!(f(r, "mb_per_s") > 0.0, "{r}");
        assert_eq!(r["bytes"], 256 << 10, "{r}");
        for k in [
            "dirty_mb_per_s",
            "durable_mb_per_s",
            "fsync_mb_per_s",
            "write_amplification",
            "fio_mb_per_s",
        ] {
            assert!(r[k].is_null(), "{k}: {r}");
        }
    }
}
