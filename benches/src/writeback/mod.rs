//! `bufwrite writeback`: what a buffered write costs until it is durable,
//! per write path, backend, queue depth, write size and dirty layout.
//!
//! The default mode measures the engine: each run opens a fresh Flat file
//! over the whole target (its blocks written, as fio lays out its file) on
//! one write path, dirties `--total` bytes through `File::pwrite` in
//! `io_size` calls (`seq`: consecutive; `random`: distinct `io_size`-aligned
//! places over the file, in random order), then fsyncs. Three figures per
//! run: dirtying MB/s (bytes / time of the pwrite calls), durable MB/s
//! (bytes / (pwrite time + fsync time): what the data cost until it was on
//! the device) and fsync-only MB/s; and the write amplification, device
//! bytes written by the fsync per byte the writes dirtied (1 for block
//! aligned writes when dirty state is kept per block; a per-folio dirty bit
//! would write whole folios). The page cache is under `--cache-budget`
//! (default 1 GiB) with its dirty limits at the budget and no flusher, so
//! everything stays dirty until the fsync unless the layout's folios do
//! not fit (then reclaim writes back first). A fourth figure is the flusher
//! alone: the same writes on a fresh file whose flusher writes back every
//! millisecond, under limits that never throttle, and no fsync: bytes /
//! (first write until nothing is dirty or under writeback).
//!
//! `--device-only` keeps the old measurement: each run hands the device
//! what writeback hands it (windows of up to 64 requests of `io_size`
//! bytes from page-aligned memory, one `submit` per window, in ascending
//! device order, then one flush), bytes / (first submit to end of flush).
//!
//! When fio is found (`--fio`, default `fio` on PATH), the equivalent fio
//! job (O_DIRECT, `io_size` requests, one fsync at the end) runs in the
//! same alternation and its write bandwidth is reported beside ours;
//! without it one line says so and the figure is null.
//!
//! Every configuration of one queue depth (every path, the registration
//! variants, fio) is measured alternately, run by run (rotating which goes
//! first), each run on a freshly opened device, so that a slow spell of
//! the disk does not land on one of them; the median of `--runs` is
//! reported.

mod engine;
mod fio;
mod plan;
mod report;
mod run;
mod target;

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Arguments of `bufwrite writeback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write paths to measure (comma-separated: iomap, bh-legacy,
    /// bh-tailskip, bh-seek); default all. Not with --device-only.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Backends to measure (comma-separated: uring, sync).
    #[arg(long, value_delimiter = ',', default_value = "uring,sync")]
    backend: Vec<String>,
    /// io_uring queue depths (comma-separated); sync has none and runs once.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    qd: Vec<u32>,
    /// Write sizes: the bytes of each pwrite (with --device-only, of each
    /// device request); comma-separated, with K/M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "4K,16K,64K,256K,1M")]
    io_size: Vec<String>,
    /// Dirty layouts (comma-separated: seq, random).
    #[arg(long, value_delimiter = ',', default_value = "seq,random")]
    layout: Vec<String>,
    /// Bytes dirtied and written back per run (K/M/G suffixes).
    #[arg(long, default_value = "64M")]
    total: String,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A device or image file to write to (its contents are destroyed);
    /// default: a temp image file.
    #[arg(long)]
    device: Option<PathBuf>,
    /// Size of the temp image (and of the region random runs spread over);
    /// default 512M. It must fit in --dir's free space with a margin.
    #[arg(long)]
    image_size: Option<String>,
    /// Directory of the temp image (must support O_DIRECT; not tmpfs);
    /// default /var/tmp.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also measure io_uring with the file registered with the ring.
    #[arg(long)]
    compare_registered_file: bool,
    /// Also measure io_uring with the write buffers registered with the
    /// ring (WriteFixed); `reg` shows `buf` (or `buf!` if the kernel
    /// refused and plain writes were used). Only with --device-only: the
    /// engine writes from folio memory.
    #[arg(long)]
    compare_registered_buffers: bool,
    /// Block size of the file (1024, 2048 or 4096); not with --device-only.
    #[arg(long, default_value_t = 4096)]
    block_size: u32,
    /// Order of every folio (0..=9: 4 KiB .. 2 MiB); not with --device-only.
    #[arg(long, default_value_t = bufwrite_engine::folio::MAX_ORDER,
          value_parser = clap::value_parser!(u8).range(0..=9))]
    order: u8,
    /// Time hand-built device requests instead of the engine (the old
    /// device-only figure).
    #[arg(long)]
    device_only: bool,
    /// The fio program run beside each configuration (default: `fio` on
    /// PATH; none found: its figure is null).
    #[arg(long)]
    fio: Option<PathBuf>,
    /// Do not run fio, even when it is installed.
    #[arg(long, conflicts_with = "fio")]
    no_fio: bool,
    /// Seed of the random layout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object per configuration instead of the table.
    #[arg(long)]
    json: bool,
    /// The page cache budget of the fsync runs (the flusher-alone run's
    /// holds the whole layout).
    #[command(flatten)]
    cache: crate::setup::CacheArgs,
}

/// Runs the command: every flag is checked (and the target opened once)
/// before the first byte is written.
pub fn run(args: Args) -> Result<()> {
    let plan = plan::check_args(&args)?;
    let fio = fio::find(&args)?;
    let (_tmp, target) = match (&args.device, &plan.temp) {
        (Some(p), _) => {
            target::check_target(p, &plan, true)?;
            (None, p.clone())
        }
        (None, Some((size, dir))) => {
            let (tmp, path) = target::make_image(dir, *size, &plan)?;
            (Some(tmp), path)
        }
        (None, None) => bail!("no --device and no temporary image"),
    };
    if !args.json {
        report::print_header(&args, &target);
    }
    for group in &plan.groups {
        for &io_size in &plan.sizes {
            for layout in &args.layout {
                let rows = if args.device_only {
                    run::measure(&args, &target, group, io_size, layout, plan.total, &fio)?
                } else {
                    engine::measure(&args, &plan, &target, group, io_size, layout, &fio)?
                };
                for row in rows {
                    report::print_row(&row, args.json, args.device_only)?;
                }
            }
        }
    }
    Ok(())
}
