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

use crate::setup::{remove_on_signal, RemoveOnSignal};
use crate::units::{approx, human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::device::uring::{UringConfig, UringDevice, MAX_QUEUE_DEPTH};
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{AlignedBuf, BlockDevice, IoRequest};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Requests per submitted batch: writeback's window of 64 folios.
const WINDOW: usize = 64;

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

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    backend: String,
    qd: u32,
    registered_file: bool,
    /// Buffers registration was asked for.
    registered_buffers: bool,
    /// The kernel accepted them (false: plain writes were measured).
    buffers_registered: bool,
    io_size: u64,
    layout: String,
    bytes: u64,
    mb_per_s: f64,
    runs_mb_per_s: Vec<f64>,
    fio: String,
}

/// Default size of the temporary image.
const DEFAULT_IMAGE_SIZE: u64 = 512 << 20;
/// Default directory of the temporary image.
const DEFAULT_DIR: &str = "/var/tmp";
/// Largest I/O size: a window of 64 of them is allocated up front.
const MAX_IO_SIZE: u64 = 64 << 20;
/// Free space a temporary image must leave on its filesystem, at least
/// (and at least 1/16 of the image): the disk is shared.
const FREE_MARGIN: u64 = 256 << 20;

/// The flags, parsed and checked before anything is written.
struct Plan {
    total: u64,
    sizes: Vec<u64>,
    groups: Vec<Vec<Config>>,
    /// `--image-size` and `--dir` of a temporary image; `None` with `--device`.
    temp: Option<(u64, PathBuf)>,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let plan = check_args(&args)?;
    let (_tmp, target) = match (&args.device, &plan.temp) {
        (Some(p), _) => {
            check_target(p, &plan, true)?;
            (None, p.clone())
        }
        (None, Some((size, dir))) => {
            let (tmp, path) = make_image(dir, *size, &plan)?;
            (Some(tmp), path)
        }
        (None, None) => bail!("no --device and no temporary image"),
    };
    if !args.json {
        println!(
            "# writeback to {} ({} per run, median of {})",
            target.display(),
            args.total,
            args.runs
        );
        println!(
            "{:<8} {:>3} {:>4} {:>8} {:<7} {:>10}  runs",
            "backend", "qd", "reg", "io_size", "layout", "MB/s"
        );
    }
    for group in &plan.groups {
        for &io_size in &plan.sizes {
            for layout in &args.layout {
                for row in measure(&args, &target, group, io_size, layout, plan.total)? {
                    print_row(&row, args.json)?;
                }
            }
        }
    }
    Ok(())
}

/// Parses and checks every flag, and the free space a temporary image
/// needs, before anything is created or written.
fn check_args(args: &Args) -> Result<Plan> {
    let total = parse_size(&args.total, "--total")?;
    if total == 0 {
        bail!("--total 0: the total must be positive");
    }
    let sizes = args
        .io_size
        .iter()
        .map(|s| {
            let n = parse_size(s, "--io-size")?;
            if n == 0 || !n.is_multiple_of(512) || n > MAX_IO_SIZE {
                bail!(
                    "--io-size {s}: an I/O size must be a multiple of 512 from 512 to {}",
                    human(MAX_IO_SIZE, Units::Flag)
                );
            }
            if n > total {
                bail!("--io-size {s} is larger than --total {}", args.total);
            }
            Ok(n)
        })
        .collect::<Result<Vec<_>>>()?;
    for l in &args.layout {
        if l != "seq" && l != "random" {
            bail!("--layout {l:?}: expected seq or random");
        }
    }
    for &qd in &args.qd {
        if qd == 0 || qd > MAX_QUEUE_DEPTH {
            bail!("--qd {qd}: a queue depth must be 1 ..= {MAX_QUEUE_DEPTH}");
        }
    }
    if args.runs == 0 {
        bail!("--runs 0: give at least one run");
    }
    let groups = configs(args)?;
    let temp = match &args.device {
        Some(_) => {
            for (given, flag) in [
                (args.image_size.is_some(), "--image-size"),
                (args.dir.is_some(), "--dir"),
            ] {
                if given {
                    crate::setup::warn(&format!(
                        "{flag} is ignored with --device: no temporary image is made"
                    ));
                }
            }
            None
        }
        None => {
            let size = match &args.image_size {
                Some(s) => parse_size(s, "--image-size")?,
                None => DEFAULT_IMAGE_SIZE,
            };
            let largest = sizes.iter().copied().max().unwrap_or(0);
            if size < largest {
                bail!(
                    "--image-size {} is smaller than one I/O of {} (--io-size)",
                    human(size, Units::Flag),
                    human(largest, Units::Flag)
                );
            }
            let dir = args.dir.clone().unwrap_or_else(|| DEFAULT_DIR.into());
            check_free_space(&dir, size)?;
            Some((size, dir))
        }
    };
    Ok(Plan {
        total,
        sizes,
        groups,
        temp,
    })
}

/// Refuses an image of `size` bytes that would not fit in `dir` with
/// [`FREE_MARGIN`] (or 1/16 of the image, if more) to spare: the space
/// statvfs reports available to unprivileged users.
fn check_free_space(dir: &Path, size: u64) -> Result<()> {
    let st = rustix::fs::statvfs(dir)
        .map_err(std::io::Error::from)
        .with_context(|| format!("--dir {}: cannot read its free space", dir.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let margin = FREE_MARGIN.max(size / 16);
    if size.saturating_add(margin) > free {
        bail!(
            "--image-size: a temporary image of {} does not fit in {} ({} free; an image \
             must leave at least {} free)",
            approx(size),
            dir.display(),
            approx(free),
            approx(margin)
        );
    }
    Ok(())
}

/// Opens `target` once, as the first set-up would, and checks that every
/// I/O size is a multiple of its block size and (`check_size`: not for a
/// temporary image still empty) that it holds one I/O of each size: before
/// anything is written to it.
fn check_target(target: &Path, plan: &Plan, check_size: bool) -> Result<()> {
    let Some(first) = plan.groups.first().and_then(|g| g.first()) else {
        bail!("--backend: no backend to measure");
    };
    let dev = open(target, first, 0)?.dev;
    let lbs = u64::from(dev.logical_block_size());
    for &io_size in &plan.sizes {
        if !io_size.is_multiple_of(lbs) {
            bail!(
                "--io-size {io_size} is not a multiple of the block size of {} ({lbs})",
                dev.describe()
            );
        }
        if check_size && dev.size() < io_size {
            bail!(
                "{} holds {} bytes, less than one I/O of {io_size}",
                dev.describe(),
                dev.size()
            );
        }
    }
    Ok(())
}

/// A backend set-up to measure.
struct Config {
    backend: Backend,
    qd: u32,
    registered_file: bool,
    registered_buffers: bool,
}

/// The set-ups to measure, in groups measured alternately (the variants
/// of one io_uring queue depth).
fn configs(args: &Args) -> Result<Vec<Vec<Config>>> {
    let mut out = Vec::new();
    for b in &args.backend {
        let backend: Backend = b
            .parse()
            .map_err(|_| anyhow::anyhow!("--backend {b:?}: expected uring or sync"))?;
        let plain = |qd| Config {
            backend,
            qd,
            registered_file: false,
            registered_buffers: false,
        };
        match backend {
            Backend::Sync => out.push(vec![plain(1)]),
            Backend::Uring => {
                for &qd in &args.qd {
                    let mut group = vec![plain(qd)];
                    if args.compare_registered_file {
                        group.push(Config {
                            registered_file: true,
                            ..plain(qd)
                        });
                    }
                    if args.compare_registered_buffers {
                        group.push(Config {
                            registered_buffers: true,
                            ..plain(qd)
                        });
                    }
                    out.push(group);
                }
            }
        }
    }
    Ok(out)
}

/// An opened device and the memory writeback hands it (`window_len` bytes,
/// the device's own registered buffer when `c.registered_buffers`).
struct Opened {
    dev: Arc<dyn BlockDevice>,
    uring: Option<Arc<UringDevice>>,
    window: Option<AlignedBuf>,
}

impl Opened {
    fn window(&self) -> &[u8] {
        match (&self.window, &self.uring) {
            (Some(w), _) => w,
            (None, Some(u)) => &u.registered_buffers()[0],
            (None, None) => &[],
        }
    }

    fn buffers_registered(&self) -> bool {
        self.uring.as_ref().is_some_and(|u| u.buffers_registered())
    }
}

/// An engine error from opening the target, with the advice this command
/// can give: it always opens with O_DIRECT, also on the sync backend.
fn open_error(e: bufwrite_engine::Error, backend: Backend) -> anyhow::Error {
    if e.is_direct_io_unsupported() {
        return anyhow::Error::new(e).context(
            "writeback opens its target with O_DIRECT on every backend: give --dir (or \
             --device) on a filesystem that supports it (not tmpfs)",
        );
    }
    crate::setup::with_advice(e, backend)
}

fn open(target: &Path, c: &Config, window_len: usize) -> Result<Opened> {
    let opened = match c.backend {
        Backend::Uring => {
            let cfg = UringConfig {
                queue_depth: c.qd,
                batch: c.qd,
                register_file: c.registered_file,
                read_only: false,
            };
            let u = Arc::new(
                UringDevice::open_with(target, &cfg).map_err(|e| open_error(e, c.backend))?,
            );
            let window = if c.registered_buffers {
                u.register_buffers(vec![AlignedBuf::zeroed(window_len)])?;
                None
            } else {
                Some(AlignedBuf::zeroed(window_len))
            };
            Opened {
                dev: u.clone(),
                uring: Some(u),
                window,
            }
        }
        Backend::Sync => {
            let opts = OpenOptions {
                backend: Backend::Sync,
                direct: true,
                ..OpenOptions::default()
            };
            Opened {
                dev: open_device(target, opts).map_err(|e| open_error(e, c.backend))?,
                uring: None,
                window: Some(AlignedBuf::zeroed(window_len)),
            }
        }
    };
    Ok(opened)
}

/// Measures every config of `group`, alternating run by run.
fn measure(
    args: &Args,
    target: &Path,
    group: &[Config],
    io_size: u64,
    layout: &str,
    total: u64,
) -> Result<Vec<Row>> {
    let (count, offsets) = {
        // `check_args` and `check_target` made sure of one I/O of this size
        // in both the total and the device.
        let dev = open(target, &group[0], 0)?.dev;
        let slots = dev.size() / io_size;
        let count = (total / io_size).min(slots);
        if count == 0 {
            bail!(
                "{} ({} bytes) and --total {total} leave no I/O of {io_size} bytes",
                dev.describe(),
                dev.size()
            );
        }
        (
            count,
            layout_offsets(layout, count, slots, io_size, args.seed),
        )
    };
    // One window of memory: fewer runs than a window need less of it.
    let window_len = (WINDOW as u64).min(count) * io_size;
    if let Some(avail) = crate::setup::memory_available() {
        if window_len > avail / 2 {
            bail!(
                "--io-size {}: a window of {} requests needs {window_len} bytes of memory, \
                 more than half of the {avail} available",
                human(io_size, Units::Flag),
                window_len / io_size
            );
        }
    }
    let window_len = window_len as usize;
    let mut runs = vec![Vec::with_capacity(args.runs); group.len()];
    let mut registered = vec![false; group.len()];
    for run in 0..args.runs.max(1) {
        // Rotate which variant goes first, so none always follows another.
        for k in 0..group.len() {
            let i = (run + k) % group.len();
            let c = &group[i];
            let o = open(target, c, window_len)?;
            registered[i] = o.buffers_registered();
            let t = Instant::now();
            write_back(o.dev.as_ref(), &offsets, o.window(), io_size as usize)?;
            let secs = t.elapsed().as_secs_f64();
            runs[i].push((count * io_size) as f64 / secs / 1e6);
        }
    }
    let rows = group
        .iter()
        .zip(runs)
        .zip(registered)
        .map(|((c, runs), buffers_registered)| {
            let mut sorted = runs.clone();
            sorted.sort_by(f64::total_cmp);
            Row {
                backend: c.backend.to_string(),
                qd: c.qd,
                registered_file: c.registered_file,
                registered_buffers: c.registered_buffers,
                buffers_registered,
                io_size,
                layout: layout.to_string(),
                bytes: count * io_size,
                mb_per_s: sorted[sorted.len() / 2],
                runs_mb_per_s: runs,
                fio: fio_command(target, c, io_size, layout, count * io_size),
            }
        })
        .collect();
    Ok(rows)
}

/// Device offsets of the dirty runs, in writeback order per window.
fn layout_offsets(layout: &str, count: u64, slots: u64, io_size: u64, seed: u64) -> Vec<u64> {
    let mut picked: Vec<u64> = if layout == "seq" {
        (0..count).collect()
    } else {
        // Partial Fisher-Yates: `count` distinct slots of the region.
        let mut all: Vec<u64> = (0..slots).collect();
        let mut rng = seed | 1;
        for i in 0..count as usize {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let j = i + (rng % (slots - i as u64)) as usize;
            all.swap(i, j);
        }
        all.truncate(count as usize);
        all
    };
    for w in picked.chunks_mut(WINDOW) {
        w.sort_unstable();
    }
    picked.into_iter().map(|s| s * io_size).collect()
}

/// Submits the runs a window at a time, then flushes.
fn write_back(dev: &dyn BlockDevice, offsets: &[u64], mem: &[u8], io_size: usize) -> Result<()> {
    for w in offsets.chunks(WINDOW) {
        let mut reqs: Vec<IoRequest<'_>> = w
            .iter()
            .zip(mem.chunks(io_size))
            .map(|(&off, buf)| IoRequest::write(off, buf))
            .collect();
        dev.submit(&mut reqs);
        for r in &mut reqs {
            r.take_result().context("writeback request")?;
        }
    }
    dev.flush().context("flush")?;
    Ok(())
}

/// The fio job doing the same I/O through io_uring (O_DIRECT, one fdatasync
/// at the end); for a random layout it is fio's own random pattern.
fn fio_command(target: &Path, c: &Config, io_size: u64, layout: &str, bytes: u64) -> String {
    let rw = if layout == "seq" {
        "write"
    } else {
        "randwrite"
    };
    let engine = match c.backend {
        Backend::Uring => format!("--ioengine=io_uring --iodepth={}", c.qd),
        Backend::Sync => "--ioengine=psync".to_string(),
    };
    format!(
        "fio --name=wb --filename={} --rw={rw} --bs={io_size} {engine} --direct=1 \
         --size={bytes} --end_fsync=1 --randrepeat=0 --norandommap",
        target.display()
    )
}

fn print_row(r: &Row, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
    } else {
        let reg = match (
            r.registered_file,
            r.registered_buffers,
            r.buffers_registered,
        ) {
            (_, true, true) => "buf",
            (_, true, false) => "buf!",
            (true, _, _) => "file",
            _ => "no",
        };
        let runs: Vec<String> = r.runs_mb_per_s.iter().map(|v| format!("{v:.0}")).collect();
        writeln!(
            out,
            "{:<8} {:>3} {:>4} {:>8} {:<7} {:>10.1}  {}",
            r.backend,
            r.qd,
            reg,
            human(r.io_size, Units::Flag),
            r.layout,
            r.mb_per_s,
            runs.join(" ")
        )?;
    }
    Ok(())
}

/// The size `s` of flag `flag`, or an error naming both.
fn parse_size(s: &str, flag: &str) -> Result<u64> {
    crate::units::parse_size(s)
        .map_err(anyhow::Error::msg)
        .context(flag.to_string())
}

/// A temporary image's directory, removed on drop or by a signal.
struct TempImage {
    _dir: tempfile::TempDir,
    // After `_dir`: forgotten once the directory is gone.
    _guard: RemoveOnSignal,
}

/// A temp image of `size` bytes, written through once so that the runs
/// overwrite allocated blocks (as fio lays out its file) instead of
/// allocating them. It is opened as the runs will open it (O_DIRECT, the
/// block size) before the first byte is written.
fn make_image(dir: &Path, size: u64, plan: &Plan) -> Result<(TempImage, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("bufwrite-writeback-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a temporary directory in {}", dir.display()))?;
    let guard = remove_on_signal(tmp.path())?;
    let path = tmp.path().join("writeback.img");
    let write_err = || format!("cannot write the temporary image {}", path.display());
    let mut f = std::fs::File::create(&path).with_context(write_err)?;
    check_target(&path, plan, false)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).with_context(write_err)?;
        left -= n as u64;
    }
    f.sync_all().with_context(write_err)?;
    Ok((
        TempImage {
            _dir: tmp,
            _guard: guard,
        },
        path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096", "--total").unwrap(), 4096);
        assert_eq!(parse_size("4K", "--total").unwrap(), 4096);
        assert_eq!(parse_size("1m", "--total").unwrap(), 1 << 20);
        let e = parse_size("x", "--io-size").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("--io-size: \"x\" is not a size"),
            "{e:#}"
        );
        assert_eq!(human(65536, Units::Flag), "64K");
    }

    #[test]
    fn layouts_are_distinct_aligned_and_sorted_per_window() {
        for layout in ["seq", "random"] {
            let offs = layout_offsets(layout, 200, 1000, 4096, 7);
            assert_eq!(offs.len(), 200);
            let mut u = offs.clone();
            u.sort_unstable();
            u.dedup();
            assert_eq!(u.len(), 200);
            assert!(offs.iter().all(|o| o % 4096 == 0 && *o < 1000 * 4096));
            for w in offs.chunks(WINDOW) {
                assert!(w.windows(2).all(|p| p[0] < p[1]));
            }
        }
    }
}
