//! `bufwrite scale`: how the write paths scale with writer threads, and
//! what the page cache holds meanwhile; `bufwrite scale stream`: one long
//! sequential write under a cache budget, with the peak RSS it took.
//!
//! The threads part runs N writer threads (`--threads`), each on its own
//! file (layout `files`) or all on one shared file (layout `shared`, where
//! the inode's write lock serialises them, as i_rwsem does), with one of
//! two workloads: `overwrite` (cached overwrites of `--write-size` at
//! random aligned offsets inside a prefilled, clean region of `--region`
//! bytes per thread; nothing is synced in the timed loop) and `append`
//! (sequential appends of `--append-size` until `--total` bytes per
//! thread). Every file of a configuration charges one cache memory
//! (`--cache-budget`), so the budget, the flusher and the throttle are
//! shared as a mount's are. The threads start together from a barrier; a
//! run's time is from the first thread leaving it to the last thread's
//! end. `--runs` runs of every configuration, in turn, and the medians
//! are reported: ops/s and MB/s over all threads, the speedup against one
//! thread, the most folio data cached at once (`MemStats::peak_cached`)
//! and the per-block metadata the folios held at the end
//! (`File::metadata_bytes`). The device is RAM by default, so the CPU
//! side is what is measured.
//!
//! `stream` writes `--total` bytes in `--io-size` pwrites from offset 0,
//! then fsyncs, on a file over `--device` or a temporary file: write and
//! durable MB/s, the process's peak RSS (`VmHWM`) against the goal
//! `1.2 x budget + 96 MiB`, and the cache's counters.

use crate::paths;
use crate::report::{self, Row};
use crate::setup::{self, CacheArgs, CommonArgs};
use crate::table;
use crate::timing::{summary, Summary};
use crate::units::{human, parse_size, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{BlockDevice, CacheMemory, File, IoStats, MemStats};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Arguments of `bufwrite scale`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `stream`: the long sequential write under a budget.
    #[command(subcommand)]
    command: Option<ScaleCommand>,
    #[command(flatten)]
    threads: ThreadArgs,
}

/// The subcommands of `bufwrite scale`.
#[derive(Debug, clap::Subcommand)]
enum ScaleCommand {
    /// Write --total bytes sequentially in --io-size pwrites, then fsync,
    /// under --cache-budget: MB/s, peak RSS (VmHWM) and the cache's
    /// counters (peak cached, reclaimed, overcommits, throttled).
    Stream(StreamArgs),
}

/// The flags of the threads part.
#[derive(Debug, clap::Args)]
struct ThreadArgs {
    /// Writer thread counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    threads: Vec<usize>,
    /// File layouts (comma-separated): files (a file per thread), shared
    /// (one file for all threads).
    #[arg(long, value_delimiter = ',', default_value = "files,shared")]
    layout: Vec<Layout>,
    /// Workloads (comma-separated): overwrite (cached overwrites at random
    /// offsets of a prefilled region), append (sequential appends).
    #[arg(long, value_delimiter = ',', default_value = "overwrite,append")]
    workload: Vec<Workload>,
    /// Write paths (comma-separated: iomap, bh-legacy, bh-tailskip,
    /// bh-seek).
    #[arg(long, value_delimiter = ',', default_value = "iomap,bh-legacy")]
    paths: Vec<String>,
    /// overwrite: bytes of the prefilled region per thread (K/M/G).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    region: u64,
    /// overwrite: bytes per write (aligned to it inside the region).
    #[arg(long, default_value = "1K", value_parser = parse_size)]
    write_size: u64,
    /// overwrite: writes per thread per run.
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// append: bytes appended per thread per run (K/M/G).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    total: u64,
    /// append: bytes per append call.
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    append_size: u64,
    /// Runs of every configuration (taken in turn); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the overwrite offsets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run on this image file or block device instead of RAM (its contents
    /// are overwritten).
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Also write the results as JSON (the one schema) to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// `--layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    /// A file per thread.
    Files,
    /// One file for all threads.
    Shared,
}

/// `--workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// Cached overwrites at random offsets of a prefilled region.
    Overwrite,
    /// Sequential appends.
    Append,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Files => "files",
            Layout::Shared => "shared",
        }
    }
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Overwrite => "overwrite",
            Workload::Append => "append",
        }
    }
}

/// Largest write or append size: one buffer per thread is allocated.
const MAX_WRITE: u64 = 64 << 20;

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Some(ScaleCommand::Stream(s)) => run_stream(&s),
        None => run_threads(&args.threads),
    }
}

// ---- The threads part ----

/// One configuration.
#[derive(Debug, Clone)]
struct Config {
    workload: Workload,
    layout: Layout,
    path: String,
    threads: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    ops: u64,
    bytes: u64,
    mem: MemStats,
    metadata_bytes: u64,
    cached_bytes: u64,
    io: IoStats,
}

/// The checked flags.
struct Plan {
    configs: Vec<Config>,
    /// Bytes per write of each workload.
    write_size: u64,
    append_size: u64,
    /// Bytes of one thread's file (a shared file has `threads` of them).
    overwrite_file: u64,
    append_file: u64,
    target: setup::Target,
}

fn check_threads(a: &ThreadArgs) -> Result<Plan> {
    if a.threads.is_empty() || a.threads.contains(&0) {
        bail!("--threads: give thread counts of at least 1");
    }
    if a.threads.iter().any(|&t| t > 1024) {
        bail!("--threads: at most 1024 threads");
    }
    if a.runs == 0 {
        bail!("--runs 0: give at least one run");
    }
    for (flag, v) in [
        ("--threads", dup(&a.threads)),
        ("--layout", dup(&a.layout)),
        ("--workload", dup(&a.workload)),
    ] {
        if v {
            bail!("{flag}: a value is listed twice");
        }
    }
    let paths = paths::select_paths(&a.paths).context("--paths")?;
    let bs = u64::from(a.common.block_size);
    let size_ok = |n: u64| n > 0 && n <= MAX_WRITE;
    if !size_ok(a.write_size) || !size_ok(a.append_size) {
        bail!(
            "--write-size and --append-size must be 1 byte to {}",
            human(MAX_WRITE, Units::Flag)
        );
    }
    if a.region < a.write_size {
        bail!("--region must hold at least one write of --write-size");
    }
    if a.total < a.append_size {
        bail!("--total must hold at least one append of --append-size");
    }
    if a.ops == 0 {
        bail!("--ops 0: give at least one write per thread");
    }
    report::check_json_path(a.json.as_deref(), &[a.device.as_deref()])?;
    let mut configs = Vec::new();
    for &workload in &a.workload {
        for &layout in &a.layout {
            for path in &paths {
                for &threads in &a.threads {
                    configs.push(Config {
                        workload,
                        layout,
                        path: path.clone(),
                        threads,
                    });
                }
            }
        }
    }
    let target = match &a.device {
        Some(p) => setup::Target::Device(p.clone()),
        None => setup::Target::Mem,
    };
    Ok(Plan {
        configs,
        write_size: a.write_size,
        append_size: a.append_size,
        overwrite_file: setup::round_up(a.region, bs),
        append_file: setup::round_up(a.total, bs),
        target,
    })
}

fn dup<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().any(|(i, x)| v[..i].contains(x))
}

fn run_threads(a: &ThreadArgs) -> Result<()> {
    let plan = check_threads(a)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); plan.configs.len()];
    for _ in 0..a.runs {
        for (i, c) in plan.configs.iter().enumerate() {
            let s = measure(a, &plan, c).with_context(|| {
                format!(
                    "{} {} on {} with {} threads",
                    c.workload.name(),
                    c.layout.name(),
                    c.path,
                    c.threads
                )
            })?;
            samples[i].push(s);
        }
    }
    let mut heads = Vec::new();
    for c in &plan.configs {
        let known = heads
            .iter()
            .find(|(w, p, _): &&(Workload, String, u64)| *w == c.workload && *p == c.path);
        if known.is_none() {
            let h = count_heads(a, &plan, c)?;
            heads.push((c.workload, c.path.clone(), h));
        }
    }
    let rows = rows(a, &plan, &samples, &heads);
    print_table(&rows);
    if let Some(path) = &a.json {
        let params = json!({
            "command": "scale",
            "threads": a.threads,
            "layouts": a.layout.iter().map(|l| l.name()).collect::<Vec<_>>(),
            "workloads": a.workload.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "paths": plan.configs.iter().map(|c| c.path.as_str()).fold(Vec::<&str>::new(), |mut v, p| {
                if !v.contains(&p) { v.push(p) }
                v
            }),
            "region": a.region,
            "write_size": a.write_size,
            "ops": a.ops,
            "total": a.total,
            "append_size": a.append_size,
            "runs": a.runs,
            "cache_budget": a.cache.cache_budget,
            "order": a.common.order,
            "block_size": a.common.block_size,
            "backend": a.common.backend.to_string(),
            "device": a.device.as_ref().map(|p| p.display().to_string()),
        });
        report::write_json(path, params, &rows)?;
    }
    Ok(())
}

/// Bytes of one file of `c` (a shared file holds every thread's share).
fn file_bytes(plan: &Plan, c: &Config) -> u64 {
    let per_thread = match c.workload {
        Workload::Overwrite => plan.overwrite_file,
        Workload::Append => plan.append_file,
    };
    match c.layout {
        Layout::Files => per_thread,
        Layout::Shared => per_thread * c.threads as u64,
    }
}

/// A xorshift step: the overwrite offsets (cheap, and the same every run).
fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// One run of `c`: a fresh device, cache memory and files, prepared
/// (overwrite: prefilled and clean), then the timed threads.
fn measure(a: &ThreadArgs, plan: &Plan, c: &Config) -> Result<Sample> {
    let per_file = file_bytes(plan, c);
    let nfiles = match c.layout {
        Layout::Files => c.threads,
        Layout::Shared => 1,
    };
    let opened = setup::open_target(&plan.target, per_file * nfiles as u64, a.common.backend)?;
    let memory = a.cache.memory()?;
    let mut files = Vec::with_capacity(nfiles);
    for i in 0..nfiles {
        let f = setup::flat_file_in(
            &memory,
            &opened.device,
            i as u64 * per_file,
            per_file,
            0,
            &a.common,
            paths::make_path(&c.path)?,
        )?;
        if c.workload == Workload::Overwrite {
            setup::prefill(&f, per_file)?;
        }
        files.push(f);
    }
    let io0 = opened.device.stats();
    let (secs, ops, bytes) = timed_threads(a, plan, c, &files, per_file)?;
    let io = opened.device.stats() - io0;
    let mem = memory.stats();
    let (mut meta, mut data) = (0u64, 0u64);
    for f in &files {
        let (m, d) = f.metadata_bytes();
        meta += m as u64;
        data += d as u64;
        // The data is not needed past the run: no writeback at drop.
        f.set_writeback_on_drop(false);
    }
    drop(files);
    Ok(Sample {
        secs,
        ops,
        bytes,
        mem,
        metadata_bytes: meta,
        cached_bytes: data,
        io,
    })
}

/// The timed part: `c.threads` threads, released together by a barrier;
/// returns (seconds from the first start to the last end, calls, bytes).
fn timed_threads(
    a: &ThreadArgs,
    plan: &Plan,
    c: &Config,
    files: &[File],
    per_file: u64,
) -> Result<(f64, u64, u64)> {
    let barrier = Barrier::new(c.threads);
    let results: Vec<Result<(Instant, Instant, u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..c.threads)
            .map(|t| {
                let file = &files[t.min(files.len() - 1)];
                let barrier = &barrier;
                s.spawn(move || -> Result<(Instant, Instant, u64, u64)> {
                    match c.workload {
                        Workload::Overwrite => {
                            let buf = vec![0x5au8; plan.write_size as usize];
                            let slots = per_file / plan.write_size;
                            let mut rng = (a.seed ^ ((t as u64 + 1) << 32)) | 1;
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..a.ops {
                                let off = next(&mut rng) % slots * plan.write_size;
                                let n = file.pwrite(off, &buf)?;
                                if n != buf.len() {
                                    bail!("a {}-byte overwrite wrote {n} bytes", buf.len());
                                }
                            }
                            Ok((start, Instant::now(), a.ops, a.ops * plan.write_size))
                        }
                        Workload::Append => {
                            let buf = vec![0xa5u8; plan.append_size as usize];
                            let calls = plan.append_file / plan.append_size;
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..calls {
                                let n = file.write(&buf)?;
                                if n != buf.len() {
                                    bail!("a {}-byte append wrote {n} bytes", buf.len());
                                }
                            }
                            Ok((start, Instant::now(), calls, calls * plan.append_size))
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer thread panicked")))
            })
            .collect()
    });
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let (mut ops, mut bytes) = (0, 0);
    for r in results {
        let (s, e, o, b) = r?;
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(e, |l| l.max(e)));
        ops += o;
        bytes += b;
    }
    let secs = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    Ok((secs, ops, bytes))
}

/// Heads walked per call of `c`'s workload on its path, from an untimed
/// counting pass on a small file of its own.
fn count_heads(a: &ThreadArgs, plan: &Plan, c: &Config) -> Result<u64> {
    let folio = a.common.folio_size();
    let (size, prefill) = match c.workload {
        Workload::Overwrite => {
            let s = setup::round_up(folio.max(4 * plan.write_size), folio);
            (s, true)
        }
        Workload::Append => (
            setup::round_up(
                (paths::COUNTING_CALLS + 1) * plan.append_size,
                u64::from(a.common.block_size),
            ),
            false,
        ),
    };
    let device: Arc<dyn BlockDevice> =
        setup::open_target(&setup::Target::Mem, size, a.common.backend)?.device;
    let open = |path| -> Result<File> {
        let f = setup::flat_file(&device, 0, size, 0, &a.common, path)?;
        if prefill {
            setup::prefill(&f, size)?;
        }
        Ok(f)
    };
    let buf = vec![0x5au8; plan.write_size.max(plan.append_size) as usize];
    let mut rng = a.seed | 1;
    paths::count_walks(&c.path, open, |f| {
        let n = match c.workload {
            Workload::Overwrite => {
                let w = plan.write_size;
                f.pwrite(next(&mut rng) % (size / w) * w, &buf[..w as usize])?
            }
            Workload::Append => f.write(&buf[..plan.append_size as usize])?,
        };
        anyhow::ensure!(n > 0, "a counted call wrote nothing");
        Ok(())
    })
}

/// One row per configuration: the medians, the speedup against the same
/// configuration on one thread, and the memory held.
fn rows(
    a: &ThreadArgs,
    plan: &Plan,
    samples: &[Vec<Sample>],
    heads: &[(Workload, String, u64)],
) -> Vec<Row> {
    let ops_per_s =
        |s: &[Sample]| -> Vec<f64> { s.iter().map(|x| x.ops as f64 / x.secs.max(1e-9)).collect() };
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| summary(&ops_per_s(s)).median)
        .collect();
    let mut rows = Vec::new();
    for (i, (c, s)) in plan.configs.iter().zip(samples).enumerate() {
        let one = plan.configs.iter().position(|o| {
            o.workload == c.workload && o.layout == c.layout && o.path == c.path && o.threads == 1
        });
        let speedup = one.map(|j| medians[i] / medians[j]);
        let rates = ops_per_s(s);
        let mb: Vec<f64> = s
            .iter()
            .map(|x| x.bytes as f64 / x.secs.max(1e-9) / 1e6)
            .collect();
        // A call's time as its thread saw it: every thread was busy for
        // the run's time.
        let usecs: Vec<f64> = s
            .iter()
            .map(|x| x.secs * 1e6 * c.threads as f64 / x.ops.max(1) as f64)
            .collect();
        let last = s.last().copied();
        let max = |f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap_or(0);
        let sum = |f: fn(&Sample) -> u64| s.iter().map(f).sum::<u64>();
        let mut extra = Map::new();
        extra.insert("workload".into(), c.workload.name().into());
        extra.insert("layout".into(), c.layout.name().into());
        extra.insert("threads".into(), c.threads.into());
        extra.insert(
            "ops_per_thread".into(),
            (last.map_or(0, |x| x.ops) / c.threads as u64).into(),
        );
        extra.insert("ops_per_s".into(), summary_json(summary(&rates)));
        extra.insert("mb_per_s".into(), summary_json(summary(&mb)));
        extra.insert("runs_ops_per_s".into(), rates.into());
        extra.insert("speedup".into(), speedup.map_or(Value::Null, Value::from));
        extra.insert("cache_budget".into(), a.cache.cache_budget.into());
        extra.insert("peak_cached".into(), max(|x| x.mem.peak_cached).into());
        extra.insert("metadata_bytes".into(), max(|x| x.metadata_bytes).into());
        extra.insert("cached_bytes".into(), max(|x| x.cached_bytes).into());
        extra.insert(
            "mem".into(),
            last.map_or(Value::Null, |x| setup::mem_stats_json(&x.mem)),
        );
        let write_size = match c.workload {
            Workload::Overwrite => plan.write_size,
            Workload::Append => plan.append_size,
        };
        rows.push(Row {
            case: format!("{}-{}", c.workload.name(), c.layout.name()),
            path: c.path.clone(),
            order: a.common.order,
            block_size: a.common.block_size,
            position: None,
            write_size: Some(write_size),
            usecs_per_call: summary(&usecs),
            device_reads: sum(|x| x.io.reads),
            device_writes: sum(|x| x.io.writes),
            walked_heads: heads
                .iter()
                .find(|(w, p, _)| *w == c.workload && *p == c.path)
                .map_or(0, |h| h.2),
            extra,
        });
    }
    rows
}

fn summary_json(s: Summary) -> Value {
    json!({"median": s.median, "min": s.min, "max": s.max})
}

/// The text table: one line per configuration.
fn print_table(rows: &[Row]) {
    let header: Vec<String> = [
        "workload",
        "layout",
        "path",
        "threads",
        "ops/s",
        "MB/s",
        "speedup",
        "peak cached",
        "metadata",
    ]
    .map(String::from)
    .to_vec();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let x = &r.extra;
            let f = |k: &str| x[k]["median"].as_f64().unwrap_or(f64::NAN);
            let u = |k: &str| x[k].as_u64().unwrap_or(0);
            vec![
                x["workload"].as_str().unwrap_or("-").to_string(),
                x["layout"].as_str().unwrap_or("-").to_string(),
                r.path.clone(),
                u("threads").to_string(),
                format!("{:.0}", f("ops_per_s")),
                format!("{:.1}", f("mb_per_s")),
                x["speedup"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.2}x")),
                crate::units::approx(u("peak_cached")),
                crate::units::approx(u("metadata_bytes")),
            ]
        })
        .collect();
    print!("{}", table::render(&header, &cells));
}

// ---- stream ----

/// The flags of `bufwrite scale stream`.
#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// Bytes written (K/M/G).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    total: u64,
    /// Bytes per pwrite (K/M/G).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    io_size: u64,
    /// Write to this image file or block device (its first --total bytes
    /// are overwritten); default: a temporary file in the system temp dir,
    /// removed afterwards.
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
    /// The write path.
    #[arg(long, default_value = "iomap")]
    path: String,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Also write the result as JSON (the one schema) to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// The peak RSS goal for a budget: 1.2 x budget + 96 MiB.
fn rss_goal(budget: u64) -> u64 {
    budget.saturating_mul(6) / 5 + (96 << 20)
}

fn run_stream(a: &StreamArgs) -> Result<()> {
    paths::make_path(&a.path)?;
    if a.total == 0 {
        bail!("--total 0: the total must be positive");
    }
    if a.io_size == 0 || a.io_size > MAX_WRITE || a.io_size > a.total {
        bail!(
            "--io-size must be 1 byte to {}, and at most --total",
            human(MAX_WRITE, Units::Flag)
        );
    }
    report::check_json_path(a.json.as_deref(), &[a.device.as_deref()])?;
    let bs = u64::from(a.common.block_size);
    let size = setup::round_up(a.total, bs);
    let target = match &a.device {
        Some(p) => setup::Target::Device(p.clone()),
        None => setup::Target::TempImage,
    };
    let opened = setup::open_target(&target, size, a.common.backend)?;
    let memory: Arc<CacheMemory> = a.cache.memory()?;
    let file = setup::flat_file_in(
        &memory,
        &opened.device,
        0,
        size,
        0,
        &a.common,
        paths::make_path(&a.path)?,
    )?;
    let mut buf = vec![0u8; a.io_size as usize];
    crate::trace::fill_pattern(1, 0, &mut buf);
    let io0 = opened.device.stats();
    let t0 = Instant::now();
    let mut off = 0u64;
    let mut calls = 0u64;
    while off < a.total {
        let n = a.io_size.min(a.total - off) as usize;
        let w = file.pwrite(off, &buf[..n])?;
        if w != n {
            bail!("a pwrite of {n} bytes at {off} wrote {w}");
        }
        off += n as u64;
        calls += 1;
    }
    let t1 = Instant::now();
    file.fsync()?;
    let t2 = Instant::now();
    let io = opened.device.stats() - io0;
    let mem = memory.stats();
    let rss = setup::peak_rss();
    file.close()?;
    // After the RSS is read: the counting pass allocates too.
    let heads = stream_heads(a)?;
    let mb = |d: Duration| a.total as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    let (write_mb, durable_mb) = (mb(t1 - t0), mb(t2 - t0));
    let budget = memory.limits().budget;
    let goal = rss_goal(budget);
    println!(
        "# stream: {} in {} pwrites + fsync on {} ({}, --cache-budget {})",
        human(a.total, Units::Flag),
        human(a.io_size, Units::Flag),
        opened.device.describe(),
        a.path,
        human(budget, Units::Flag)
    );
    println!(
        "write {write_mb:.1} MB/s, durable {durable_mb:.1} MB/s (fsync {:.3} s)",
        (t2 - t1).as_secs_f64()
    );
    match rss {
        Some(r) => println!(
            "peak RSS {} (goal 1.2 x budget + 96 MiB = {}: {})",
            crate::units::approx(r),
            crate::units::approx(goal),
            if r <= goal { "met" } else { "NOT met" }
        ),
        None => println!("peak RSS unknown (no VmHWM in /proc/self/status)"),
    }
    println!(
        "cache: peak cached {}, peak dirty {}, reclaimed {} folios, overcommits {}, \
         throttled {} times ({} ms), flusher {} passes / {}",
        crate::units::approx(mem.peak_cached),
        crate::units::approx(mem.peak_dirty),
        mem.reclaimed,
        mem.overcommits,
        mem.throttled,
        mem.throttled_us / 1000,
        mem.flusher_passes,
        crate::units::approx(mem.flusher_bytes)
    );
    if let Some(path) = &a.json {
        let mut extra = Map::new();
        extra.insert("total_bytes".into(), a.total.into());
        extra.insert("cache_budget".into(), budget.into());
        extra.insert("write_mb_per_s".into(), write_mb.into());
        extra.insert("durable_mb_per_s".into(), durable_mb.into());
        extra.insert("fsync_secs".into(), (t2 - t1).as_secs_f64().into());
        extra.insert("peak_rss".into(), rss.into());
        extra.insert("rss_goal".into(), goal.into());
        extra.insert("peak_cached".into(), mem.peak_cached.into());
        extra.insert("reclaimed".into(), mem.reclaimed.into());
        extra.insert("overcommits".into(), mem.overcommits.into());
        extra.insert("throttled".into(), mem.throttled.into());
        extra.insert("mem".into(), setup::mem_stats_json(&mem));
        let per_call = (t1 - t0).as_secs_f64() * 1e6 / calls.max(1) as f64;
        let row = Row {
            case: "stream".into(),
            path: a.path.clone(),
            order: a.common.order,
            block_size: a.common.block_size,
            position: None,
            write_size: Some(a.io_size),
            usecs_per_call: summary(&[per_call]),
            device_reads: io.reads,
            device_writes: io.writes,
            walked_heads: heads,
            extra,
        };
        let params = json!({
            "command": "scale stream",
            "total": a.total,
            "io_size": a.io_size,
            "cache_budget": budget,
            "order": a.common.order,
            "block_size": a.common.block_size,
            "backend": a.common.backend.to_string(),
            "device": a.device.as_ref().map(|p| p.display().to_string()),
        });
        report::write_json(path, params, &[row])?;
    }
    Ok(())
}

/// Heads walked per stream write, from an untimed counting pass of
/// writes at consecutive offsets on a sparse RAM device.
fn stream_heads(a: &StreamArgs) -> Result<u64> {
    let bs = u64::from(a.common.block_size);
    let size = setup::round_up((paths::COUNTING_CALLS + 1) * a.io_size, bs);
    let device: Arc<dyn BlockDevice> =
        Arc::new(bufwrite_engine::device::mem::Mem::sparse(size, 512));
    let buf = vec![0x5au8; a.io_size as usize];
    let mut off = 0;
    paths::count_walks(
        &a.path,
        |path| setup::flat_file(&device, 0, size, 0, &a.common, path),
        |f| {
            // Nothing of it is needed: dropped, not written back.
            f.set_writeback_on_drop(false);
            let n = f.pwrite(off, &buf)?;
            anyhow::ensure!(n == buf.len(), "a counted write of {} wrote {n}", buf.len());
            off += buf.len() as u64;
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rss_goal_is_six_fifths_of_the_budget_and_96_mib() {
        assert_eq!(rss_goal(128 << 20), (128 << 20) * 6 / 5 + (96 << 20));
        assert_eq!(rss_goal(u64::MAX), u64::MAX / 5 + (96 << 20));
    }

    #[test]
    fn duplicates_are_found() {
        assert!(dup(&[1, 2, 1]));
        assert!(!dup(&[1, 2, 4]));
    }
}
