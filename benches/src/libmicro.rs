//! `bufwrite libmicro`: the libMicro write cases the seed thread measured,
//! as cached overwrites at offset 0, in usecs/call per write path.
//!
//! Each case gets a fresh file per path, written in full and fsynced so
//! that every folio is uptodate and clean; then every timed call writes at
//! offset 0, as the libMicro fork the seed uses does. The paths' samples
//! alternate, so a noisy machine disturbs them alike.

use crate::paths::{check_paths, PATHS};
use crate::setup::{self, CommonArgs, Target};
use crate::table;
use crate::timing::{self, summary, Summary};
use anyhow::Context;
use bufwrite_engine::{BlockDevice, File};
use serde::Serialize;
use std::io::IoSlice;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a case calls the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `seek(0)` then `write`.
    Write,
    /// `pwrite` at 0.
    Pwrite,
    /// `seek(0)` then `writev` of [`WRITEV_BUFS`] buffers.
    Writev,
}

/// Buffers per `writev` call (libMicro's default `-V 10`).
const WRITEV_BUFS: usize = 10;

/// One libMicro case.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    call: Call,
    /// Bytes per buffer (libMicro's `-s`, where `k` is 1024).
    size: usize,
}

impl Case {
    fn bufs(self) -> usize {
        if self.call == Call::Writev {
            WRITEV_BUFS
        } else {
            1
        }
    }

    /// Bytes one call writes.
    fn bytes_per_call(self) -> u64 {
        (self.size * self.bufs()) as u64
    }

    /// The file: at least ten times the case size and one folio, in whole
    /// folios so that every folio of it is uptodate.
    fn file_size(self, folio: u64) -> u64 {
        setup::round_up((self.size as u64 * 10).max(folio), folio)
    }
}

const CASES: &[Case] = &[
    case("write_u1k", Call::Write, 1),
    case("write_u10k", Call::Write, 10),
    case("write_u100k", Call::Write, 100),
    case("pwrite_u1k", Call::Pwrite, 1),
    case("pwrite_u10k", Call::Pwrite, 10),
    case("pwrite_u100k", Call::Pwrite, 100),
    case("writev_u1k", Call::Writev, 1),
    case("writev_u10k", Call::Writev, 10),
    case("writev_u100k", Call::Writev, 100),
];

const fn case(name: &'static str, call: Call, kib: usize) -> Case {
    Case {
        name,
        call,
        size: kib * 1024,
    }
}

/// Arguments of `bufwrite libmicro`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run on a RAM device (CPU only) instead of a temporary image file.
    #[arg(long, conflicts_with = "device")]
    pub mem: bool,
    /// Run on this image file or block device (its contents are
    /// overwritten) instead of a temporary image file.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Timed samples per case and path (libMicro: 200).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Calls per sample (default: enough for about 1 ms).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Cases to run, comma-separated (default: all nine).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Write paths to compare, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The result of one case on one path.
#[derive(Debug, Serialize)]
struct CaseResult {
    case: &'static str,
    path: String,
    order: u8,
    block_size: u32,
    position: u64,
    /// Bytes one call writes (for writev, all its buffers).
    write_size: u64,
    /// Buffers per call.
    iovecs: usize,
    usecs_per_call: Summary,
    calls_per_sample: u64,
    samples: u32,
    /// Device requests during the timed calls (zero for cached overwrites).
    device_reads: u64,
    device_writes: u64,
    /// Buffer heads visited per call (write_begin plus commit).
    walked_heads: u64,
    metadata_bytes: usize,
    cached_bytes: usize,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cases = select_cases(&args.cases)?;
    let paths = select_paths(&args.paths)?;
    let folio = args.common.folio_size();
    let region = cases
        .iter()
        .map(|c| c.file_size(folio))
        .max()
        .unwrap_or(folio);
    let target = match (&args.device, args.mem) {
        (Some(p), _) => Target::Device(p.clone()),
        (None, true) => Target::Mem,
        (None, false) => Target::TempImage,
    };
    let opened = setup::open_target(&target, region * paths.len() as u64, args.common.backend)?;
    let dev = &opened.device;
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("bufwrite libmicro: {} ...", case.name);
        results.extend(run_case(&args, dev, *case, &paths, region)?);
    }
    print!("{}", report(&args, dev.as_ref(), &cases, &paths, &results));
    if let Some(path) = &args.json {
        write_json(path, &args, dev.as_ref(), &cases, &paths, &results)?;
    }
    Ok(())
}

fn select_cases(names: &[String]) -> anyhow::Result<Vec<Case>> {
    if names.is_empty() {
        return Ok(CASES.to_vec());
    }
    names
        .iter()
        .map(|n| {
            CASES
                .iter()
                .find(|c| c.name == n)
                .copied()
                .with_context(|| {
                    let valid: Vec<&str> = CASES.iter().map(|c| c.name).collect();
                    format!("unknown case {n:?} (valid cases: {})", valid.join(", "))
                })
        })
        .collect()
}

fn select_paths(names: &[String]) -> anyhow::Result<Vec<String>> {
    if names.is_empty() {
        return Ok(PATHS.iter().map(|p| p.to_string()).collect());
    }
    check_paths(names)?;
    Ok(names.to_vec())
}

/// One path's file for a case, and what its timed calls did.
struct Runner {
    file: File,
    bufs: Vec<Vec<u8>>,
    batch: u64,
    samples: Vec<f64>,
    device_reads: u64,
    device_writes: u64,
}

fn run_case(
    args: &Args,
    dev: &Arc<dyn BlockDevice>,
    case: Case,
    paths: &[String],
    region: u64,
) -> anyhow::Result<Vec<CaseResult>> {
    let size = case.file_size(args.common.folio_size());
    let mut runners = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let file = setup::flat_file(dev, i as u64 * region, region, 0, &args.common, path)?;
        prefill(&file, size).with_context(|| format!("cannot prepare the {path} file"))?;
        let bufs = (0..case.bufs())
            .map(|b| vec![b as u8 + 1; case.size])
            .collect();
        let mut r = Runner {
            file,
            bufs,
            batch: 1,
            samples: Vec::new(),
            device_reads: 0,
            device_writes: 0,
        };
        r.batch = match args.batch {
            Some(b) => b,
            None => calibrate(&r, case)?,
        };
        r.file.path().reset_walk_stats();
        runners.push(r);
    }
    for _ in 0..args.runs {
        for r in &mut runners {
            sample(r, case)?;
        }
    }
    Ok(runners
        .iter()
        .zip(paths)
        .map(|(r, p)| summarize(args, case, p, r))
        .collect())
}

/// Writes the whole file and fsyncs it: every folio uptodate and clean.
fn prefill(file: &File, size: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = CHUNK.min(size - off);
        crate::trace::fill_pattern(1, off, &mut buf[..n as usize]);
        file.pwrite(off, &buf[..n as usize])?;
        off += n;
    }
    file.fsync()?;
    Ok(())
}

/// Calls per sample so that a sample takes about [`timing::SAMPLE_TARGET`].
fn calibrate(r: &Runner, case: Case) -> anyhow::Result<u64> {
    timing::calibrate(|n| time_calls(r, case, n), timing::SAMPLE_TARGET)
}

fn sample(r: &mut Runner, case: Case) -> anyhow::Result<()> {
    let before = r.file.device_stats();
    let t = time_calls(r, case, r.batch)?;
    let after = r.file.device_stats();
    r.device_reads += after.reads - before.reads;
    r.device_writes += after.writes - before.writes;
    r.samples.push(t.as_secs_f64() * 1e6 / r.batch as f64);
    Ok(())
}

/// Times `n` calls of the case.
fn time_calls(r: &Runner, case: Case, n: u64) -> anyhow::Result<Duration> {
    let want = case.bytes_per_call() as usize;
    let f = &r.file;
    let iov: Vec<IoSlice<'_>> = r.bufs.iter().map(|b| IoSlice::new(b)).collect();
    let start = Instant::now();
    for _ in 0..n {
        let done = match case.call {
            Call::Write => {
                f.seek(0);
                f.write(&r.bufs[0])?
            }
            Call::Pwrite => f.pwrite(0, &r.bufs[0])?,
            Call::Writev => {
                f.seek(0);
                f.writev(&iov)?
            }
        };
        if done != want {
            anyhow::bail!("{}: short write of {done} of {want} bytes", case.name);
        }
    }
    Ok(start.elapsed())
}

fn summarize(args: &Args, case: Case, path: &str, r: &Runner) -> CaseResult {
    let walks = r.file.walk_stats();
    let calls = r.batch * u64::from(args.runs);
    let (meta, data) = r.file.metadata_bytes();
    CaseResult {
        case: case.name,
        path: path.to_string(),
        order: args.common.order,
        block_size: args.common.block_size,
        position: 0,
        write_size: case.bytes_per_call(),
        iovecs: case.bufs(),
        usecs_per_call: summary(&r.samples),
        calls_per_sample: r.batch,
        samples: args.runs,
        device_reads: r.device_reads,
        device_writes: r.device_writes,
        walked_heads: (walks.write_begin + walks.commit) / calls.max(1),
        metadata_bytes: meta,
        cached_bytes: data,
    }
}

fn find<'a>(results: &'a [CaseResult], case: &str, path: &str) -> Option<&'a CaseResult> {
    results.iter().find(|r| r.case == case && r.path == path)
}

fn report(
    args: &Args,
    dev: &dyn BlockDevice,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> String {
    let c = &args.common;
    let mut out = format!(
        "bufwrite libmicro: device {}, backend {}, block size {}, order {} ({} KiB folios), runs {}\n\
         cached overwrites at offset 0, usecs/call (median; lower is better)\n\n",
        dev.describe(),
        dev.backend(),
        c.block_size,
        c.order,
        c.folio_size() / 1024,
        args.runs
    );
    out += &median_table(cases, paths, results);
    out += "\nmin / max usecs/call, calls per sample, buffer heads walked per call\n\n";
    out += &detail_table(cases, paths, results);
    out += "\nmetadata per cached GiB\n";
    for p in paths {
        if let Some(r) = results.iter().find(|r| &r.path == p) {
            out += &format!("  {p}: {}\n", memory_line(r.metadata_bytes, r.cached_bytes));
        }
    }
    out
}

/// The ratio columns of the seed's table, when their paths ran.
const RATIOS: &[(&str, &str, &str)] = &[
    ("legacy/iomap", "bh-legacy", "iomap"),
    ("tailskip/iomap", "bh-tailskip", "iomap"),
];

fn median_table(cases: &[Case], paths: &[String], results: &[CaseResult]) -> String {
    let has = |p: &str| paths.iter().any(|q| q == p);
    let ratios: Vec<_> = RATIOS.iter().filter(|(_, a, b)| has(a) && has(b)).collect();
    let mut header = vec!["case".to_string()];
    header.extend(paths.iter().cloned());
    header.extend(ratios.iter().map(|(name, _, _)| name.to_string()));
    let rows = cases
        .iter()
        .map(|case| {
            let median = |p: &str| find(results, case.name, p).map(|r| r.usecs_per_call.median);
            let mut row = vec![case.name.to_string()];
            row.extend(
                paths
                    .iter()
                    .map(|p| median(p).map_or("-".into(), |m| format!("{m:.4}"))),
            );
            row.extend(ratios.iter().map(|(_, a, b)| match (median(a), median(b)) {
                (Some(x), Some(y)) => format!("{:.2}x", x / y),
                _ => "-".into(),
            }));
            row
        })
        .collect::<Vec<_>>();
    table::render(&header, &rows)
}

fn detail_table(cases: &[Case], paths: &[String], results: &[CaseResult]) -> String {
    let header: Vec<String> = ["case", "path", "min", "max", "calls/sample", "heads/call"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rows = Vec::new();
    for case in cases {
        for p in paths {
            if let Some(r) = find(results, case.name, p) {
                rows.push(vec![
                    case.name.to_string(),
                    p.clone(),
                    format!("{:.4}", r.usecs_per_call.min),
                    format!("{:.4}", r.usecs_per_call.max),
                    r.calls_per_sample.to_string(),
                    r.walked_heads.to_string(),
                ]);
            }
        }
    }
    table::render(&header, &rows)
}

fn memory_line(meta: usize, data: usize) -> String {
    if data == 0 {
        return "nothing cached".into();
    }
    let per_gib = meta as f64 * f64::from(1u32 << 30) / data as f64;
    format!("{per_gib:.0} bytes ({meta} bytes of metadata for {data} bytes cached)")
}

fn write_json(
    path: &std::path::Path,
    args: &Args,
    dev: &dyn BlockDevice,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> anyhow::Result<()> {
    let c = &args.common;
    let params = serde_json::json!({
        "command": "libmicro",
        "device": dev.describe(),
        "backend": dev.backend(),
        "block_size": c.block_size,
        "order": c.order,
        "runs": args.runs,
        "batch": args.batch,
        "cases": cases.iter().map(|c| c.name).collect::<Vec<_>>(),
        "paths": paths,
    });
    // CaseResult carries report::RESULT_FIELDS first, then its extras.
    crate::report::write_json(path, params, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_files_cover_ten_sizes_and_a_folio() {
        let c = select_cases(&["writev_u100k".into()]).unwrap()[0];
        assert_eq!(c.bytes_per_call(), 1_024_000);
        assert_eq!(c.file_size(2 << 20), 2 << 20);
        assert_eq!(c.file_size(4096), 1_024_000);
        assert!(select_cases(&["read_u1k".into()])
            .unwrap_err()
            .to_string()
            .contains("write_u1k"));
    }
}
