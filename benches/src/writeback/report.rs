//! What `bufwrite writeback` prints: the table (a header, then a row per
//! configuration as it is measured) or one JSON object per configuration,
//! each carrying the fio command that does the same I/O.

use super::plan::Config;
use super::Args;
use crate::units::{human, Units};
use anyhow::Result;
use bufwrite_engine::device::Backend;
use std::io::Write;
use std::path::Path;

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
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
    /// Bytes per request.
    pub io_size: u64,
    /// `seq` or `random`.
    pub layout: String,
    /// Bytes written back per run.
    pub bytes: u64,
    /// The median of the runs.
    pub mb_per_s: f64,
    /// Every run, in the order measured.
    pub runs_mb_per_s: Vec<f64>,
    /// The fio command doing the same I/O.
    pub fio: String,
}

/// The table's title line and column header.
pub fn print_header(args: &Args, target: &Path) {
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

/// The fio job doing the same I/O through io_uring (O_DIRECT, one fdatasync
/// at the end); for a random layout it is fio's own random pattern.
pub fn fio_command(target: &Path, c: &Config, io_size: u64, layout: &str, bytes: u64) -> String {
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

/// Prints row `r`: a table line, or with `json` one JSON object.
pub fn print_row(r: &Row, json: bool) -> Result<()> {
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
