//! The `--device-only` runs: for one I/O size and layout, every set-up of a
//! group (and fio's job for each, when fio is there) run alternately on a
//! freshly opened device, each run handing the device the dirty runs a
//! window at a time and ending with one flush. Also the alternation both
//! modes use.

use super::fio;
use super::plan::{layout_offsets, Config, WINDOW};
use super::report::{median, Row};
use super::target::open;
use super::Args;
use crate::units::{human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{BlockDevice, IoRequest};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `variants` variants `runs` times each, alternating run by run and
/// rotating which goes first, so that none always follows another and a
/// slow spell of the disk is spread over all of them.
pub fn alternate(
    runs: usize,
    variants: usize,
    mut one: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    for run in 0..runs {
        for k in 0..variants {
            one((run + k) % variants)?;
        }
    }
    Ok(())
}

/// fio's runs of one job: MB/s per run, or `None` once a run failed (one
/// warning says why; the comparison is optional, ours goes on).
pub struct FioRuns {
    job: Vec<String>,
    runs: Option<Vec<f64>>,
}

impl FioRuns {
    /// The job, not run yet.
    pub fn new(job: Vec<String>) -> FioRuns {
        FioRuns {
            job,
            runs: Some(Vec::new()),
        }
    }

    /// Runs the job once with `program` (nothing once it has failed).
    pub fn run(&mut self, program: &Path) {
        let Some(runs) = &mut self.runs else {
            return;
        };
        match fio::run(program, &self.job) {
            Ok(v) => runs.push(v),
            Err(e) => {
                crate::setup::warn(&format!(
                    "fio's figure is null for `{}`: {e:#}",
                    fio::command(&self.job)
                ));
                self.runs = None;
            }
        }
    }

    /// The median MB/s, if every run succeeded.
    pub fn median(&self) -> Option<f64> {
        self.runs.as_deref().and_then(median)
    }

    /// The job's command line.
    pub fn command(&self) -> String {
        fio::command(&self.job)
    }
}

/// Measures every config of `group` (and, with `fio_program`, fio's job
/// for each), alternating run by run.
pub fn measure(
    args: &Args,
    target: &Path,
    group: &[Config],
    io_size: u64,
    layout: &str,
    total: u64,
    fio_program: &Option<PathBuf>,
) -> Result<Vec<Row>> {
    let (count, offsets, region) = {
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
            dev.size(),
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
    let bytes = count * io_size;
    let mut fio_runs: Vec<FioRuns> = group
        .iter()
        .map(|c| FioRuns::new(fio::job_args(target, c, io_size, layout, bytes, region)))
        .collect();
    let n_fio = if fio_program.is_some() {
        group.len()
    } else {
        0
    };
    let mut runs = vec![Vec::with_capacity(args.runs); group.len()];
    let mut registered = vec![false; group.len()];
    alternate(args.runs, group.len() + n_fio, |i| {
        if let (Some(k), Some(program)) = (i.checked_sub(group.len()), fio_program) {
            fio_runs[k].run(program);
            return Ok(());
        }
        let c = &group[i];
        let o = open(target, c, window_len)?;
        registered[i] = o.buffers_registered();
        let t = Instant::now();
        write_back(o.dev.as_ref(), &offsets, o.window(), io_size as usize)?;
        let secs = t.elapsed().as_secs_f64();
        runs[i].push(bytes as f64 / secs / 1e6);
        Ok(())
    })?;
    let rows = group
        .iter()
        .zip(runs)
        .zip(registered)
        .zip(&fio_runs)
        .map(|(((c, runs), buffers_registered), f)| Row {
            path: None,
            backend: c.backend.to_string(),
            qd: c.qd,
            registered_file: c.registered_file,
            registered_buffers: c.registered_buffers,
            buffers_registered,
            io_size,
            layout: layout.to_string(),
            bytes,
            mb_per_s: median(&runs).unwrap_or(0.0),
            runs_mb_per_s: runs,
            dirty_mb_per_s: None,
            durable_mb_per_s: None,
            fsync_mb_per_s: None,
            write_amplification: None,
            flusher_mb_per_s: None,
            fio_mb_per_s: f.median(),
            fio: f.command(),
        })
        .collect();
    Ok(rows)
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
