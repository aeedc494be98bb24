//! The measured runs: for one I/O size and layout, every set-up of a group
//! run alternately on a freshly opened device, each run handing the device
//! the dirty runs a window at a time and ending with one flush.

use super::plan::{layout_offsets, Config, WINDOW};
use super::report::{fio_command, Row};
use super::target::open;
use super::Args;
use crate::units::{human, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{BlockDevice, IoRequest};
use std::path::Path;
use std::time::Instant;

/// Measures every config of `group`, alternating run by run.
pub fn measure(
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
