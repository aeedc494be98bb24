//! `bufwrite scale`, `scale stream` and `--cache-budget` run as a user runs
//! them, on tiny sizes. No test asserts a time: the figures checked are
//! counts (calls, cached bytes, the cache's counters) and the read hashes.

mod common;
use common::{bufwrite, text};
use serde_json::Value;

fn json_file(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u(r: &Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("{key} in {r}"))
}

#[test]
fn scale_runs_both_layouts_and_workloads_on_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scale.json");
    let out = bufwrite(
        &[
            "scale",
            "--threads",
            "1,2",
            "--layout",
            "files,shared",
            "--workload",
            "overwrite,append",
            "--paths",
            "iomap,bh-legacy",
            "--ops",
            "300",
            "--region",
            "256K",
            "--total",
            "256K",
            "--order",
            "4",
            "--runs",
            "2",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("workload") && table.contains("speedup"),
        "{table}"
    );
    // A header and 16 configurations.
    assert_eq!(table.lines().count(), 17, "{table}");
    let doc = json_file(&json);
    assert_eq!(doc["params"]["command"], "scale");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 16);
    let mut seen = Vec::new();
    for r in results {
        let (workload, layout, path) = (
            r["workload"].as_str().unwrap(),
            r["layout"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
        );
        let threads = u(r, "threads");
        seen.push((workload, layout, path, threads));
        for k in ["ops_per_s", "mb_per_s", "usecs_per_call"] {
            assert!(r[k]["median"].as_f64().unwrap() > 0.0, "{k}: {r}");
        }
        assert_eq!(r["runs_ops_per_s"].as_array().unwrap().len(), 2, "{r}");
        if threads == 1 {
            assert_eq!(r["speedup"].as_f64(), Some(1.0), "{r}");
        } else {
            assert!(r["speedup"].as_f64().unwrap() > 0.0, "{r}");
        }
        let per_thread = if workload == "overwrite" { 300 } else { 64 };
        assert_eq!(u(r, "ops_per_thread"), per_thread, "{r}");
        // Every byte of every file is cached (the budget is far larger):
        // 256K per thread, in 64K folios.
        assert_eq!(u(r, "cached_bytes"), threads * (256 << 10), "{r}");
        assert!(u(r, "peak_cached") >= threads * (256 << 10), "{r}");
        assert_eq!(u(r, "cache_budget"), 1 << 30, "{r}");
        assert_eq!(r["mem"]["overcommits"], 0, "{r}");
        // Buffer heads: 16 per 64K folio of 4K blocks, 104 bytes each
        // (and the ring's own bytes), the same in every folio.
        let meta = u(r, "metadata_bytes");
        let folios = threads * 4;
        if path == "bh-legacy" {
            assert!(
                meta.is_multiple_of(folios) && meta / folios >= 16 * 104,
                "{r}"
            );
            assert!(u(r, "walked_heads") > 0, "{r}");
        } else {
            assert_eq!(u(r, "walked_heads"), 0, "{r}");
        }
        // Nothing is synced in the timed loop, and nothing is read.
        assert_eq!(u(r, "device_reads"), 0, "{r}");
    }
    for w in ["overwrite", "append"] {
        for l in ["files", "shared"] {
            for p in ["iomap", "bh-legacy"] {
                for t in [1, 2] {
                    assert!(seen.contains(&(w, l, p, t)), "{w} {l} {p} {t}");
                }
            }
        }
    }
}

/// `scale stream --total 16M --cache-budget 1M` with `extra`; the result.
fn stream(dir: &std::path::Path, extra: &[&str]) -> Value {
    let json = dir.join("stream.json");
    let mut args = vec![
        "scale",
        "stream",
        "--total",
        "16M",
        "--io-size",
        "1M",
        "--cache-budget",
        "1M",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = bufwrite(&args, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("peak RSS"), "{stdout}");
    let doc = json_file(&json);
    assert_eq!(doc["params"]["command"], "scale stream");
    doc["results"][0].clone()
}

#[test]
fn stream_keeps_the_cache_within_a_small_budget() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB folios: see the test below for 2 MiB ones.
    let r = stream(dir.path(), &["--order", "4"]);
    assert_eq!(u(&r, "total_bytes"), 16 << 20);
    assert_eq!(u(&r, "cache_budget"), 1 << 20);
    let peak = u(&r, "peak_cached");
    assert!(peak <= (1 << 20) + (2 << 20), "peak_cached {peak}: {r}");
    // 16 MiB went through a 1 MiB cache: most of it was reclaimed.
    assert!(u(&r, "reclaimed") >= 200, "{r}");
    assert_eq!(r["mem"]["dirty"], 0, "the fsync left nothing dirty: {r}");
    assert!(u(&r, "peak_rss") > 0, "{r}");
    assert!(u(&r, "rss_goal") > 96 << 20, "{r}");
    // Every byte reached the device: 16 MiB in requests of at most 1 MiB.
    assert!(u(&r, "device_writes") >= 16, "{r}");
}

/// The same at the default order 9: a new folio's batch goes to the LRU
/// once it holds 256 KiB (`memory::LRU_BATCH_BYTES`), so 2 MiB folios are
/// in reclaim's reach at once.
#[test]
fn stream_keeps_the_cache_within_a_small_budget_with_2m_folios() {
    let dir = tempfile::tempdir().unwrap();
    let r = stream(dir.path(), &[]);
    let peak = u(&r, "peak_cached");
    assert!(peak <= (1 << 20) + (2 << 20), "peak_cached {peak}: {r}");
}

#[test]
fn bad_cache_budgets_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev.img");
    let before = vec![0x77u8; 1 << 20];
    std::fs::write(&dev, &before).unwrap();
    let d = dev.to_str().unwrap();
    for (budget, says) in [
        ("1K", "below the minimum of 64K"),
        ("0", "below the minimum of 64K"),
        ("lots", "is not a size"),
    ] {
        for args in [
            &["replay", "--device", d, "--cache-budget", budget][..],
            &["scale", "stream", "--device", d, "--cache-budget", budget],
            &["scale", "--device", d, "--cache-budget", budget],
        ] {
            let out = bufwrite(args, "pwrite 0 4096 1\nfsync\n");
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                err.contains("--cache-budget") && err.contains(says),
                "{args:?}: {err}"
            );
        }
    }
    assert!(
        std::fs::read(&dev).unwrap() == before,
        "the device is untouched"
    );
}

/// The `mem-stats:` object `replay --mem-stats` prints on stderr.
fn mem_stats(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mem-stats: "))
        .unwrap_or_else(|| panic!("no mem-stats line: {stderr}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn replay_under_a_small_budget_reads_what_it_reads_without_one() {
    let trace = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/traces/mixed.trace"))
        .unwrap();
    let run = |budget: &[&str]| {
        let mut args = vec!["replay", "--mem", "16M", "--order", "0", "--mem-stats"];
        args.extend_from_slice(budget);
        let out = bufwrite(&args, &trace);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), mem_stats(&text(&out.stderr)))
    };
    let (reads, free) = run(&[]);
    let (small_reads, small) = run(&["--cache-budget", "256K"]);
    assert!(reads.lines().count() > 100, "{reads}");
    assert_eq!(small_reads, reads, "reclaim changed what the reads return");
    assert_eq!(u(&free, "budget"), 1 << 30);
    assert_eq!(u(&free, "reclaimed"), 0, "{free}");
    assert_eq!(u(&small, "budget"), 256 << 10);
    assert!(u(&small, "reclaimed") > 0, "{small}");
    // 4 KiB folios: the budget, a batch of 16 folios not yet on the LRU
    // (`memory::LRU_BATCH`) and some slack.
    let peak = u(&small, "peak_cached");
    assert!(
        peak <= (256 << 10) + (1 << 20),
        "peak_cached {peak}: {small}"
    );
    assert!(u(&small, "peak_rss") > 0, "{small}");
    assert_eq!(u(&small, "dirty"), 0, "the final writeback ran: {small}");
}
