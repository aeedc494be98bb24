//! `bufwrite libmicro`: the libMicro write cases the seed thread measured,
//! as cached overwrites at offset 0, in usecs/call per write path.
//!
//! By default the cases run on a file in a temporary ext4 image (made with
//! mkfs.ext4, the file created with debugfs) through io_uring, as the seed
//! measured ext4; `--image PATH --file /f` takes an existing image, `--mem`
//! and `--device PATH` a Flat file per path.
//!
//! Each case gets a fresh file per path, written in full and fsynced so
//! that every folio is uptodate and clean; then every timed call writes at
//! offset 0, as the libMicro fork the seed uses does. The paths' samples
//! alternate, so a noisy machine disturbs them alike.

use crate::image::{self, Ext4Image};
use crate::paths::{self, make_path, select_paths};
use crate::setup::{self, CommonArgs};
use crate::table;
use crate::timing::{self, summary, Summary};
use anyhow::Context;
use bufwrite_engine::device::Backend;
use bufwrite_engine::{BlockDevice, File, WritePath};
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
    /// Run on Flat files on a RAM device (CPU only) instead of a file in a
    /// temporary ext4 image.
    #[arg(long, conflicts_with_all = ["device", "image"])]
    pub mem: bool,
    /// Run on Flat files on this image file or block device (its contents
    /// are overwritten) instead of a file in a temporary ext4 image.
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub device: Option<PathBuf>,
    /// Run on the file --file in this existing ext4 image or unmounted
    /// device (the file's first bytes are overwritten; it never grows, so it
    /// must be large enough for the cases). Its block size is the image's.
    #[arg(long, value_name = "PATH", requires = "file")]
    pub image: Option<PathBuf>,
    /// The file inside --image, e.g. /dir/f.
    #[arg(long, value_name = "/f", requires = "image")]
    pub file: Option<String>,
    /// Set by `main` when `--backend` was given: an ext4 target otherwise
    /// takes io_uring (sync when io_uring is unavailable), while the flag's
    /// default (sync) stays the one every other target and command uses.
    #[arg(skip)]
    pub backend_given: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Timed samples per case and path (libMicro: 200).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Calls per sample (default: enough for about 1 ms).
    /// At most 10^9.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=setup::MAX_BATCH))]
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

/// The `--backend` help of this command, whose default depends on the
/// target (see [`ext4_backend`]); `main` applies it to the shared flag.
pub fn help(cmd: clap::Command) -> clap::Command {
    cmd.mut_arg("backend", |a| {
        a.hide_default_value(true).help(
            "Device I/O backend: uring (io_uring, O_DIRECT) or sync (pread/pwrite). \
             Default: uring on the ext4 image (the temporary one, or --image), or sync \
             with a note where io_uring is unavailable; sync with --device; ignored \
             with --mem (a RAM device does no device I/O)",
        )
    })
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cases = select_cases(&args.cases)?;
    let paths = select_paths(&args.paths)?;
    // Before anything is made or measured: a run is not lost to a bad path.
    let targets = [args.image.as_deref(), args.device.as_deref()];
    crate::report::check_json_path(args.json.as_deref(), &targets)?;
    let folio = args.common.folio_size();
    let region = cases
        .iter()
        .map(|c| c.file_size(folio))
        .max()
        .unwrap_or(folio);
    let target = open_target(&args, region, paths.len())?;
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("bufwrite libmicro: {} ...", case.name);
        results.extend(run_case(&args, &target, *case, &paths)?);
    }
    print!("{}", report(&args, &target, &cases, &paths, &results));
    if let Some(path) = &args.json {
        write_json(path, &args, &target, &cases, &paths, &results)?;
    }
    Ok(())
}

/// What the cases run on.
enum Target {
    /// A Flat file per path, side by side on a RAM device or an image file
    /// or block device, `region` bytes each.
    Flat { opened: setup::Opened, region: u64 },
    /// One file in an ext4 image, overwritten by every path.
    ///
    /// The paths share the device and the opened filesystem (one fd and
    /// one ring, and one superblock read), but each path's `File` gets its
    /// own mapper and page cache, so no state is shared between them. Each
    /// path's prefill writes the same pattern bytes to the same blocks, so
    /// the order of their writebacks does not matter, and the timed calls
    /// are cached overwrites that do no device I/O.
    Ext4 {
        // Boxed: the image (filesystem state, temp files) dwarfs the Flat variant.
        image: Box<Ext4Image>,
        file: String,
        region: u64,
    },
}

impl Target {
    fn device(&self) -> &Arc<dyn BlockDevice> {
        match self {
            Target::Flat { opened, .. } => &opened.device,
            Target::Ext4 { image, .. } => &image.device,
        }
    }

    /// The block size the files use: the image's on ext4.
    fn block_size(&self, common: &CommonArgs) -> u32 {
        match self {
            Target::Flat { .. } => common.block_size,
            Target::Ext4 { image, .. } => image.fs.block_size(),
        }
    }

    /// What the header and the JSON name as the target.
    fn describe(&self) -> String {
        match self {
            Target::Flat { opened, .. } => format!("device {}", opened.device.describe()),
            Target::Ext4 { image, file, .. } => format!(
                "ext4 image {}{}, file {file}",
                image.path.display(),
                if image.is_temporary() {
                    " (temporary: mkfs.ext4, file written by debugfs)"
                } else {
                    ""
                }
            ),
        }
    }

    /// The ext4 file's path in its image.
    fn file(&self) -> Option<&str> {
        match self {
            Target::Flat { .. } => None,
            Target::Ext4 { file, .. } => Some(file),
        }
    }

    /// A fresh file for the `index`th path, written through `path`.
    fn open_file(
        &self,
        index: usize,
        path: Box<dyn WritePath>,
        common: &CommonArgs,
    ) -> anyhow::Result<File> {
        match self {
            Target::Flat { opened, region } => setup::flat_file(
                &opened.device,
                index as u64 * region,
                *region,
                0,
                common,
                path,
            ),
            Target::Ext4 {
                image,
                file,
                region,
            } => {
                let mapper = image.open_file(file, *region)?;
                File::open(
                    Arc::clone(&image.device),
                    mapper,
                    path,
                    common.file_options(),
                )
                .with_context(|| format!("cannot open {file} in {}", image.path.display()))
            }
        }
    }
}

/// Opens the target the flags name, with room for `region` bytes per path
/// (Flat) or a file of at least `region` bytes (ext4).
fn open_target(args: &Args, region: u64, paths: usize) -> anyhow::Result<Target> {
    let flat = |target: setup::Target| -> anyhow::Result<Target> {
        let opened = setup::open_target(&target, region * paths as u64, args.common.backend)?;
        Ok(Target::Flat { opened, region })
    };
    match (&args.image, &args.device, args.mem) {
        (Some(path), _, _) => {
            // clap requires --file with --image; checked again so that a
            // caller building Args by hand gets an error, not a panic.
            let file = args
                .file
                .clone()
                .context("--image needs --file /f: the file inside the image to overwrite")?;
            let image = Ext4Image::open(path, ext4_backend(args))?;
            // Refused here, before any path writes, when the file is too
            // small or not all written extents.
            image.open_file(&file, region)?;
            Ok(Target::Ext4 {
                image: Box::new(image),
                file,
                region,
            })
        }
        (None, Some(p), _) => flat(setup::Target::Device(p.clone())),
        (None, None, true) => flat(setup::Target::Mem),
        (None, None, false) => {
            let image = Ext4Image::temporary(args.common.block_size, region, ext4_backend(args))?;
            Ok(Target::Ext4 {
                image: Box::new(image),
                file: image::FILE.to_string(),
                region,
            })
        }
    }
}

/// `--backend` when given; io_uring otherwise, or sync with a note naming
/// why when io_uring cannot be set up here.
fn ext4_backend(args: &Args) -> Backend {
    if args.backend_given {
        return args.common.backend;
    }
    let (backend, note) = image::preferred_backend();
    if let Some(note) = note {
        eprintln!("bufwrite libmicro: note: {note}");
    }
    backend
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

/// One path's file for a case, and what its timed calls did.
struct Runner {
    file: File,
    bufs: Vec<Vec<u8>>,
    batch: u64,
    samples: Vec<f64>,
    device_reads: u64,
    device_writes: u64,
    /// Heads walked per call, from the untimed counting pass.
    walked_heads: u64,
}

fn run_case(
    args: &Args,
    target: &Target,
    case: Case,
    paths: &[String],
) -> anyhow::Result<Vec<CaseResult>> {
    let size = case.file_size(args.common.folio_size());
    let bs = target.block_size(&args.common);
    let mut runners = Vec::new();
    let bufs: Vec<Vec<u8>> = (0..case.bufs())
        .map(|b| vec![b as u8 + 1; case.size])
        .collect();
    for (i, path) in paths.iter().enumerate() {
        let prepared = |p: Box<dyn WritePath>| -> anyhow::Result<File> {
            let file = target.open_file(i, p, &args.common)?;
            setup::prefill(&file, size)
                .with_context(|| format!("cannot prepare the {path} file"))?;
            Ok(file)
        };
        // Untimed, on its own file prepared the same way: the timed file's
        // path has no counters.
        let iov: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let walked_heads = paths::count_walks(path, prepared, |f| call(f, case, &bufs[0], &iov))?;
        let mut r = Runner {
            file: prepared(make_path(path)?)?,
            bufs: bufs.clone(),
            batch: 1,
            samples: Vec::new(),
            device_reads: 0,
            device_writes: 0,
            walked_heads,
        };
        r.batch = match args.batch {
            Some(b) => b,
            None => calibrate(&r, case)?,
        };
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
        .map(|(r, p)| summarize(args, bs, case, p, r))
        .collect())
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
    let iov: Vec<IoSlice<'_>> = r.bufs.iter().map(|b| IoSlice::new(b)).collect();
    let start = Instant::now();
    for _ in 0..n {
        call(&r.file, case, &r.bufs[0], &iov)?;
    }
    Ok(start.elapsed())
}

/// One call of the case: `write` and `writev` seek to 0 first, `pwrite`
/// writes at 0. The timed loop and the counting pass make the same call.
#[inline]
fn call(f: &File, case: Case, buf: &[u8], iov: &[IoSlice<'_>]) -> anyhow::Result<()> {
    let done = match case.call {
        Call::Write => {
            f.seek(0);
            f.write(buf)?
        }
        Call::Pwrite => f.pwrite(0, buf)?,
        Call::Writev => {
            f.seek(0);
            f.writev(iov)?
        }
    };
    let want = case.bytes_per_call() as usize;
    if done != want {
        anyhow::bail!("{}: short write of {done} of {want} bytes", case.name);
    }
    Ok(())
}

fn summarize(args: &Args, block_size: u32, case: Case, path: &str, r: &Runner) -> CaseResult {
    let (meta, data) = r.file.metadata_bytes();
    CaseResult {
        case: case.name,
        path: path.to_string(),
        order: args.common.order,
        block_size,
        position: 0,
        write_size: case.bytes_per_call(),
        iovecs: case.bufs(),
        usecs_per_call: summary(&r.samples),
        calls_per_sample: r.batch,
        samples: args.runs,
        device_reads: r.device_reads,
        device_writes: r.device_writes,
        walked_heads: r.walked_heads,
        metadata_bytes: meta,
        cached_bytes: data,
    }
}

fn find<'a>(results: &'a [CaseResult], case: &str, path: &str) -> Option<&'a CaseResult> {
    results.iter().find(|r| r.case == case && r.path == path)
}

fn report(
    args: &Args,
    target: &Target,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> String {
    let c = &args.common;
    let mut out = format!(
        "bufwrite libmicro: {}, backend {}, block size {}, order {} ({} KiB folios), runs {}\n\
         cached overwrites at offset 0, usecs/call (median; lower is better)\n\n",
        target.describe(),
        target.device().backend(),
        target.block_size(c),
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
    target: &Target,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> anyhow::Result<()> {
    let c = &args.common;
    let dev = target.device();
    let params = serde_json::json!({
        "command": "libmicro",
        "target": target.describe(),
        "device": dev.describe(),
        "file": target.file(),
        "backend": dev.backend(),
        "block_size": target.block_size(c),
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
