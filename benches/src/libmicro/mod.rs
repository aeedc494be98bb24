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

mod cases;
mod report;

use crate::harness::{Runner, Target};
use crate::image::{self, Ext4Image};
use crate::paths::select_paths;
use crate::setup::{self, CommonArgs};
use anyhow::Context;
use bufwrite_engine::device::Backend;
use bufwrite_engine::{File, WritePath};
use cases::{select_cases, Case};
use report::CaseResult;
use std::path::PathBuf;

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
    print!(
        "{}",
        report::report(&args, &target, &cases, &paths, &results)
    );
    if let Some(path) = &args.json {
        report::write_json(path, &args, &target, &cases, &paths, &results)?;
    }
    Ok(())
}

/// Opens the target the flags name, with room for `region` bytes per path
/// (Flat) or a file of at least `region` bytes (ext4).
fn open_target(args: &Args, region: u64, paths: usize) -> anyhow::Result<Target> {
    let flat = |target: setup::Target| Target::flat(&target, region, paths, args.common.backend);
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

fn run_case(
    args: &Args,
    target: &Target,
    case: Case,
    paths: &[String],
) -> anyhow::Result<Vec<CaseResult>> {
    let size = case.file_size(args.common.folio_size());
    let bs = target.block_size(&args.common);
    let bufs: Vec<Vec<u8>> = (0..case.bufs())
        .map(|b| vec![b as u8 + 1; case.size])
        .collect();
    let mut runners = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let prepared = |p: Box<dyn WritePath>| -> anyhow::Result<File> {
            let file = target.open_file(i, p, &args.common)?;
            setup::prefill(&file, size)
                .with_context(|| format!("cannot prepare the {path} file"))?;
            Ok(file)
        };
        runners.push(Runner::new(path, bufs.clone(), case, prepared, args.batch)?);
    }
    for _ in 0..args.runs {
        for r in &mut runners {
            r.sample()?;
        }
    }
    Ok(runners
        .iter()
        .zip(paths)
        .map(|(r, p)| report::summarize(args, bs, case, p, r))
        .collect())
}
