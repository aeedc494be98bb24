//! What `bufwrite writeback` prints: the table (a header, then a row per
//! configuration as it is measured) or one JSON object per configuration,
//! each carrying the fio command that does the same I/O and, when fio ran,
//! its figure.

use super::Args;
use crate::units::{human, Units};
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The write path (`null` with `--device-only`: no path is involved).
    pub path: Option<String>,
    /// The backend's name.
    pub backend: String,
    /// The io_uring queue depth (1 for sync).
    pub qd: u32,
    /// The file was registered with the ring.
    pub registered_file: bool,
    /// Buffers registration was asked for.
    pub registered_buffers: bool,
    /// The kernel accepted them (false: plain writes were measured).
    pub buffers_registered: bool,
    /// Bytes per write call (per request with `--device-only`).
    pub io_size: u64,
    /// `seq` or `random`.
    pub layout: String,
    /// Bytes dirtied and written back per run.
    pub bytes: u64,
    /// The median of the runs: durable MB/s (writes plus fsync) for the
    /// engine, the device's MB/s with `--device-only`.
    pub mb_per_s: f64,
    /// Every run's `mb_per_s`, in the order measured.
    pub runs_mb_per_s: Vec<f64>,
    /// Median MB/s of the write calls alone (dirtying); `null` with
    /// `--device-only`.
    pub dirty_mb_per_s: Option<f64>,
    /// Median MB/s through the fsync: bytes / (write time + fsync time);
    /// `null` with `--device-only`.
    pub durable_mb_per_s: Option<f64>,
    /// Median MB/s of the fsync alone; `null` with `--device-only`.
    pub fsync_mb_per_s: Option<f64>,
    /// Median of the device bytes the fsync wrote per byte the writes
    /// dirtied; `null` with `--device-only`.
    pub write_amplification: Option<f64>,
    /// Median MB/s of the flusher alone: bytes / (first write until nothing
    /// is dirty or under writeback), the flusher writing back every
    /// millisecond and no fsync (no device flush either); `null` with
    /// `--device-only`.
    pub flusher_mb_per_s: Option<f64>,
    /// Median write MB/s of the fio job below, run in the same alternation;
    /// `null` when fio was not run (not found, `--no-fio`, or it failed).
    pub fio_mb_per_s: Option<f64>,
    /// The fio command doing the same I/O.
    pub fio: String,
}

/// The table's title line and column header.
pub fn print_header(args: &Args, target: &Path) {
    let what = if args.device_only {
        "device-only writeback"
    } else {
        "pwrite + fsync through the engine"
    };
    println!(
        "# {what} to {} ({} per run, median of {})",
        target.display(),
        args.total,
        args.runs
    );
    if args.device_only {
        println!(
            "{:<8} {:>3} {:>4} {:>8} {:<7} {:>10} {:>8}  runs",
            "backend", "qd", "reg", "io_size", "layout", "MB/s", "fio"
        );
    } else {
        println!(
            "{:<11} {:<8} {:>3} {:>4} {:>8} {:<7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}  durable runs",
            "path",
            "backend",
            "qd",
            "reg",
            "io_size",
            "layout",
            "dirty",
            "durable",
            "fsync",
            "flusher",
            "w-amp",
            "fio"
        );
    }
}

/// `v` with one decimal, or `-` when there is none.
fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// Prints row `r`: a table line (the `device_only` columns or the
/// engine's), or with `json` one JSON object.
pub fn print_row(r: &Row, json: bool, device_only: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
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
    if device_only {
        writeln!(
            out,
            "{:<8} {:>3} {:>4} {:>8} {:<7} {:>10.1} {:>8}  {}",
            r.backend,
            r.qd,
            reg,
            human(r.io_size, Units::Flag),
            r.layout,
            r.mb_per_s,
            opt(r.fio_mb_per_s, 1),
            runs.join(" ")
        )?;
    } else {
        writeln!(
            out,
            "{:<11} {:<8} {:>3} {:>4} {:>8} {:<7} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}  {}",
            r.path.as_deref().unwrap_or("-"),
            r.backend,
            r.qd,
            reg,
            human(r.io_size, Units::Flag),
            r.layout,
            opt(r.dirty_mb_per_s, 1),
            opt(r.durable_mb_per_s, 1),
            opt(r.fsync_mb_per_s, 1),
            opt(r.flusher_mb_per_s, 1),
            opt(r.write_amplification, 2),
            opt(r.fio_mb_per_s, 1),
            runs.join(" ")
        )?;
    }
    Ok(())
}

/// The median of `v` (the upper one of an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_runs() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(4.0));
    }
}
