//! `bufwrite writeback`: writeback throughput (MB/s) per backend, queue
//! depth, I/O size and dirty layout.
//!
//! Each run hands the device what writeback hands it: windows of up to 64
//! dirty runs, each one request of `io_size` bytes from page-aligned folio
//! memory, one `submit` per window, in ascending device order (writeback
//! walks dirty folios by index), then one flush. `seq` dirties consecutive
//! runs; `random` dirties runs at random `io_size`-aligned places in the
//! region. The figure is bytes written / (time from the first submit to the
//! end of the flush), median of `--runs`. The run prints the fio command
//! that does the same I/O, for comparison.
//!
//! `--compare-registered-file` and `--compare-registered-buffers` add
//! io_uring variants (file registered with the ring; the window memory
//! registered, so every request is a WriteFixed). The variants of one queue
//! depth are measured alternately, run by run (rotating which goes first),
//! each run on a freshly opened device, so that a slow spell of the disk
//! does not land on one of them.

mod plan;
mod report;
mod run;
mod target;

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Arguments of `bufwrite writeback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backends to measure (comma-separated: uring, sync).
    #[arg(long, value_delimiter = ',', default_value = "uring,sync")]
    backend: Vec<String>,
    /// io_uring queue depths (comma-separated); sync has none and runs once.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    qd: Vec<u32>,
    /// I/O sizes (comma-separated, with K/M suffixes).
    #[arg(long, value_delimiter = ',', default_value = "4K,16K,64K,256K,1M")]
    io_size: Vec<String>,
    /// Dirty layouts (comma-separated: seq, random).
    #[arg(long, value_delimiter = ',', default_value = "seq,random")]
    layout: Vec<String>,
    /// Bytes written back per run (K/M/G suffixes).
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
    /// refused and plain writes were used).
    #[arg(long)]
    compare_registered_buffers: bool,
    /// Seed of the random layout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object per configuration instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs the command: every flag is checked (and the target opened once)
/// before the first byte is written.
pub fn run(args: Args) -> Result<()> {
    let plan = plan::check_args(&args)?;
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
                for row in run::measure(&args, &target, group, io_size, layout, plan.total)? {
                    report::print_row(&row, args.json)?;
                }
            }
        }
    }
    Ok(())
}
