//! The engine's runs (the default mode): for one write size and layout,
//! every write path on every set-up of a group (and fio's job for each
//! set-up, when fio is there) run alternately. A run opens the device
//! afresh, opens a Flat file over all of it on the path (a fresh page
//! cache under `--cache-budget`), dirties the layout through
//! `File::pwrite`, then fsyncs, timing both and counting the device bytes
//! the fsync wrote.
//!
//! Each run then measures the flusher alone: a second fresh file, whose
//! cache has the flusher waking every millisecond for data older than a
//! millisecond and dirty limits too high to throttle, is dirtied the same
//! way with no fsync; the time from the first write until the cache holds
//! nothing dirty or under writeback gives `flusher_mb_per_s` (written
//! back, not flushed: the flusher does not flush the device).

use super::fio;
use super::plan::{write_offsets, Config, Plan};
use super::report::{median, Row};
use super::run::{alternate, FioRuns};
use super::target::open;
use super::Args;
use crate::units::{human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{CacheLimits, CacheMemory, File, FileOptions, Flat, OrderPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the flusher-alone run looks at the dirty count.
const FLUSHER_POLL: Duration = Duration::from_micros(100);
/// The flusher-alone run gives up when the dirty count has not moved for
/// this long (a flusher that stopped would otherwise hang the command).
const FLUSHER_STALL: Duration = Duration::from_secs(30);

/// One run's figures.
struct RunFigures {
    dirty_mb_per_s: f64,
    durable_mb_per_s: f64,
    fsync_mb_per_s: f64,
    write_amplification: f64,
}

/// Every run of one (path, set-up).
#[derive(Default)]
struct Runs {
    dirty: Vec<f64>,
    durable: Vec<f64>,
    fsync: Vec<f64>,
    amplification: Vec<f64>,
    flusher: Vec<f64>,
}

/// Measures every path of `plan` on every config of `group` (and, with
/// `fio_program`, fio's job for each config), alternating run by run.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    args: &Args,
    plan: &Plan,
    target: &Path,
    group: &[Config],
    io_size: u64,
    layout: &str,
    fio_program: &Option<PathBuf>,
) -> Result<Vec<Row>> {
    let bs = u64::from(plan.block_size.unwrap_or(args.block_size));
    // The file covers the whole device, in whole blocks; `check_target`
    // made sure of one block and one write of each size.
    let region = open(target, &group[0], 0)?.dev.size() / bs * bs;
    let slots = region / io_size;
    let count = (plan.total / io_size).min(slots);
    if count == 0 {
        bail!(
            "{} holds {region} bytes of whole blocks: no write of {io_size} bytes fits",
            target.display()
        );
    }
    let offsets = write_offsets(layout, count, slots, io_size, args.seed);
    let cached_max = check_memory(&offsets, io_size, args.order)?;
    let bytes = count * io_size;
    let mut buf = vec![0u8; io_size as usize];
    crate::trace::fill_pattern(args.seed, 0, &mut buf);

    let variants: Vec<(&str, &Config)> = plan
        .paths
        .iter()
        .flat_map(|p| group.iter().map(move |c| (p.as_str(), c)))
        .collect();
    let mut fio_runs: Vec<FioRuns> = group
        .iter()
        .map(|c| FioRuns::new(fio::job_args(target, c, io_size, layout, bytes, region)))
        .collect();
    let n_fio = if fio_program.is_some() {
        group.len()
    } else {
        0
    };
    let mut runs: Vec<Runs> = variants.iter().map(|_| Runs::default()).collect();
    alternate(args.runs, variants.len() + n_fio, |i| {
        if let (Some(k), Some(program)) = (i.checked_sub(variants.len()), fio_program) {
            fio_runs[k].run(program);
            return Ok(());
        }
        let (path, c) = variants[i];
        let what = || format!("{path} on {} (qd {})", c.backend, c.qd);
        // Dirty everything, then fsync: the dirty limits are the budget and
        // no flusher runs, so neither throttling nor background writeback
        // takes part unless the layout does not fit in --cache-budget
        // (then reclaim writes back, as the kernel's would).
        let budget = args.cache.cache_budget;
        let memory = CacheMemory::new(CacheLimits {
            budget,
            dirty_background: budget,
            dirty_limit: budget,
            flusher: false,
            ..CacheLimits::default()
        })
        .context("--cache-budget")?;
        let run = Run {
            target,
            c,
            path,
            region,
            bs,
            order: args.order,
            offsets: &offsets,
            buf: &buf,
            cached_max,
        };
        let f = run.fsync_run(&memory).with_context(what)?;
        drop(memory);
        let flusher = run
            .flusher_run()
            .with_context(|| format!("the flusher alone: {}", what()))?;
        let r = &mut runs[i];
        r.dirty.push(f.dirty_mb_per_s);
        r.durable.push(f.durable_mb_per_s);
        r.fsync.push(f.fsync_mb_per_s);
        r.amplification.push(f.write_amplification);
        r.flusher.push(flusher);
        Ok(())
    })?;
    let rows = variants
        .iter()
        .zip(runs)
        .enumerate()
        .map(|(i, ((path, c), r))| {
            let fio = &fio_runs[i % group.len()];
            Row {
                path: Some(path.to_string()),
                backend: c.backend.to_string(),
                qd: c.qd,
                registered_file: c.registered_file,
                registered_buffers: false,
                buffers_registered: false,
                io_size,
                layout: layout.to_string(),
                bytes,
                mb_per_s: median(&r.durable).unwrap_or(0.0),
                dirty_mb_per_s: median(&r.dirty),
                durable_mb_per_s: median(&r.durable),
                fsync_mb_per_s: median(&r.fsync),
                write_amplification: median(&r.amplification),
                flusher_mb_per_s: median(&r.flusher),
                runs_mb_per_s: r.durable,
                fio_mb_per_s: fio.median(),
                fio: fio.command(),
            }
        })
        .collect();
    Ok(rows)
}

/// Refuses a layout whose folios would not fit in half the memory
/// available: the flusher-alone run caches every folio the writes touch
/// at once (its budget holds them all), and so does the fsync run when
/// `--cache-budget` allows. Returns the bytes of those folios.
fn check_memory(offsets: &[u64], io_size: u64, order: u8) -> Result<u64> {
    let folio = bufwrite_engine::folio::folio_size(order) as u64;
    let mut folios: Vec<u64> = offsets
        .iter()
        .flat_map(|&o| o / folio..=(o + io_size - 1) / folio)
        .collect();
    folios.sort_unstable();
    folios.dedup();
    let needed = folios.len() as u64 * folio;
    if let Some(avail) = crate::setup::memory_available() {
        if needed > avail / 2 {
            bail!(
                "the writes touch {} folios of {} ({needed} bytes, all cached at once in the \
                 flusher-alone run), more than half of the {avail} bytes of memory available: \
                 give a smaller --total or --order",
                folios.len(),
                human(folio, Units::Flag)
            );
        }
    }
    Ok(needed)
}

/// One run's set-up: where, on which path, and the writes.
struct Run<'a> {
    target: &'a Path,
    c: &'a Config,
    path: &'a str,
    region: u64,
    bs: u64,
    order: u8,
    offsets: &'a [u64],
    buf: &'a [u8],
    /// Bytes of the folios the writes touch (all cached at once when
    /// nothing is written back meanwhile).
    cached_max: u64,
}

impl Run<'_> {
    /// A fresh device and a Flat file over `region` on the path, its cache
    /// charged to `memory`. Every block is written: the writes overwrite
    /// the file in place, as fio's do once it has laid its file out.
    fn open_file(&self, memory: &Arc<CacheMemory>) -> Result<File> {
        let dev = open(self.target, self.c, 0)?.dev;
        let flat = Flat::new(0, self.region, self.bs as u32, self.region)
            .context("cannot lay out the file")?;
        Ok(File::open_in(
            memory,
            dev,
            Arc::new(flat),
            crate::paths::make_path(self.path)?,
            FileOptions {
                order: OrderPolicy::Fixed(self.order),
            },
        )?)
    }

    /// The writes at `offsets` (each `buf`).
    fn dirty(&self, file: &File) -> Result<()> {
        for &off in self.offsets {
            let n = file.pwrite(off, self.buf)?;
            if n != self.buf.len() {
                bail!("a pwrite of {} bytes at {off} wrote {n}", self.buf.len());
            }
        }
        Ok(())
    }

    /// Bytes the writes dirty.
    fn dirtied(&self) -> f64 {
        (self.offsets.len() * self.buf.len()) as f64
    }

    /// The fsync figures: the writes, then the fsync, on a file whose
    /// cache is `memory` (`--cache-budget`).
    fn fsync_run(&self, memory: &Arc<CacheMemory>) -> Result<RunFigures> {
        let file = self.open_file(memory)?;
        let t0 = Instant::now();
        self.dirty(&file)?;
        let t1 = Instant::now();
        let before = file.device_stats();
        file.fsync()?;
        let t2 = Instant::now();
        let written = (file.device_stats() - before).bytes_written;
        drop(file);
        let dirtied = self.dirtied();
        let mb_per_s = |secs: f64| dirtied / secs.max(1e-9) / 1e6;
        Ok(RunFigures {
            dirty_mb_per_s: mb_per_s((t1 - t0).as_secs_f64()),
            durable_mb_per_s: mb_per_s((t2 - t0).as_secs_f64()),
            fsync_mb_per_s: mb_per_s((t2 - t1).as_secs_f64()),
            write_amplification: written as f64 / dirtied,
        })
    }

    /// The flusher alone (module docs): MB/s from the first write until
    /// nothing is dirty or under writeback, with no fsync. The budget holds
    /// the whole layout and the dirty limits equal it, so neither reclaim
    /// nor throttling takes part: only the flusher writes back.
    fn flusher_run(&self) -> Result<f64> {
        let budget = self.cached_max.max(CacheLimits::default().budget);
        let limits = CacheLimits {
            budget,
            dirty_background: budget,
            dirty_limit: budget,
            dirty_expire: Duration::from_millis(1),
            writeback_interval: Duration::from_millis(1),
            flusher: true,
        };
        let memory = CacheMemory::new(limits)?;
        let file = self.open_file(&memory)?;
        let t0 = Instant::now();
        self.dirty(&file)?;
        let mut last = (
            memory.stats().dirty + memory.stats().writeback,
            Instant::now(),
        );
        loop {
            let s = memory.stats();
            let left = s.dirty + s.writeback;
            if left == 0 {
                break;
            }
            if left != last.0 {
                last = (left, Instant::now());
            } else if last.1.elapsed() > FLUSHER_STALL {
                bail!(
                    "the flusher wrote nothing back for {} s ({left} bytes still dirty or \
                     under writeback)",
                    FLUSHER_STALL.as_secs()
                );
            }
            std::thread::sleep(FLUSHER_POLL);
        }
        let secs = t0.elapsed().as_secs_f64();
        drop(file);
        Ok(self.dirtied() / secs.max(1e-9) / 1e6)
    }
}
