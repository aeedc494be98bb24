//! The engine's runs (the default mode): for one write size and layout,
//! every write path on every set-up of a group (and fio's job for each
//! set-up, when fio is there) run alternately. A run opens the device
//! afresh, opens a Flat file over all of it on the path (a fresh page
//! cache), dirties the layout through `File::pwrite`, then fsyncs, timing
//! both and counting the device bytes the fsync wrote.

use super::fio;
use super::plan::{write_offsets, Config, Plan};
use super::report::{median, Row};
use super::run::{alternate, FioRuns};
use super::target::open;
use super::Args;
use crate::units::{human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{File, FileOptions, Flat, OrderPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    check_memory(&offsets, io_size, args.order)?;
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
        let f = one_run(target, c, path, region, bs, args.order, &offsets, &buf)
            .with_context(|| format!("{path} on {} (qd {})", c.backend, c.qd))?;
        let r = &mut runs[i];
        r.dirty.push(f.dirty_mb_per_s);
        r.durable.push(f.durable_mb_per_s);
        r.fsync.push(f.fsync_mb_per_s);
        r.amplification.push(f.write_amplification);
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
                runs_mb_per_s: r.durable,
                fio_mb_per_s: fio.median(),
                fio: fio.command(),
            }
        })
        .collect();
    Ok(rows)
}

/// Refuses a layout whose dirty folios would not fit in half the memory
/// available: nothing is written back before the fsync (there is no
/// flusher), so every folio it touches is cached at once.
fn check_memory(offsets: &[u64], io_size: u64, order: u8) -> Result<()> {
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
                "the writes touch {} folios of {} ({needed} bytes, all cached until the \
                 fsync), more than half of the {avail} bytes of memory available: give a \
                 smaller --total or --order",
                folios.len(),
                human(folio, Units::Flag)
            );
        }
    }
    Ok(())
}

/// One run: a fresh device and file on `path`, the writes at `offsets`
/// (each `buf`), then the fsync.
#[allow(clippy::too_many_arguments)]
fn one_run(
    target: &Path,
    c: &Config,
    path: &str,
    region: u64,
    bs: u64,
    order: u8,
    offsets: &[u64],
    buf: &[u8],
) -> Result<RunFigures> {
    let dev = open(target, c, 0)?.dev;
    // Every block written: the writes overwrite the file in place, as
    // fio's do once it has laid its file out.
    let flat = Flat::new(0, region, bs as u32, region).context("cannot lay out the file")?;
    let file = File::open(
        dev,
        Arc::new(flat),
        crate::paths::make_path(path)?,
        FileOptions {
            order: OrderPolicy::Fixed(order),
        },
    )?;
    let t0 = Instant::now();
    for &off in offsets {
        let n = file.pwrite(off, buf)?;
        if n != buf.len() {
            bail!("a pwrite of {} bytes at {off} wrote {n}", buf.len());
        }
    }
    let t1 = Instant::now();
    let before = file.device_stats();
    file.fsync()?;
    let t2 = Instant::now();
    let written = (file.device_stats() - before).bytes_written;
    drop(file);
    let dirtied = (offsets.len() * buf.len()) as f64;
    let mb_per_s = |secs: f64| dirtied / secs.max(1e-9) / 1e6;
    Ok(RunFigures {
        dirty_mb_per_s: mb_per_s((t1 - t0).as_secs_f64()),
        durable_mb_per_s: mb_per_s((t2 - t0).as_secs_f64()),
        fsync_mb_per_s: mb_per_s((t2 - t1).as_secs_f64()),
        write_amplification: written as f64 / dirtied,
    })
}
