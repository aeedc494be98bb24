//! `bufwrite replay --timing`: the trace replayed once per write path, each
//! round on a fresh file in the same starting state (a new RAM device, a
//! temporary copy of the image, a new file of the device's size: see
//! `replay`), every operation timed alone; usecs per operation kind per
//! path, so a recorded workload compares the paths head to head. Every
//! round must read the same bytes; the reads are printed once.
//!
//! Only the file call is timed: a write's pattern bytes are made, and a
//! read's hash taken, outside the timer. A lone call is timed with the
//! clock's own cost in it (tens of ns), which the batches of `libmicro`
//! and `sweep` avoid; compare kinds across paths, not with those figures.

use crate::report::Row;
use crate::timing::{self, Summary};
use crate::trace::{self, Line, Op};
use anyhow::Context;
use bufwrite_compat::WalkCounter;
use bufwrite_engine::{FallocMode, File, WritePath};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `--timing` flags of `bufwrite replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TimingArgs {
    /// Replay the trace on every path of --paths (after an untimed warm-up
    /// round per path) and report usecs per operation kind (on stderr).
    /// Every round starts from the same state and never writes the given
    /// target: --mem gets a new RAM device, --image a temporary copy of the
    /// image file next to it, --device a new empty file of the device's
    /// size next to it (the file starts empty, so the old bytes are never
    /// read); block devices are refused. stdout gets the reads once, after
    /// checking that every round read the same bytes (a difference is an
    /// error). The final writeback runs in every round, untimed.
    #[arg(long)]
    pub timing: bool,
    /// Write paths for --timing, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', requires = "timing")]
    pub paths: Vec<String>,
    /// Also write the --timing results as JSON (the report schema) here.
    #[arg(long, value_name = "PATH", requires = "timing")]
    pub json: Option<PathBuf>,
}

/// What `open_file` gives back: the file, maybe with what keeps it open.
pub trait HoldsFile {
    /// The file.
    fn file(&self) -> &File;
}

impl HoldsFile for File {
    fn file(&self) -> &File {
        self
    }
}

/// The operation kinds, in report order.
const KINDS: &[&str] = &[
    "write",
    "pwrite",
    "writev",
    "read",
    "seek",
    "fsync",
    "fdatasync",
    "truncate",
    "fallocate",
    "punch",
];

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Write { .. } => "write",
        Op::Pwrite { .. } => "pwrite",
        Op::Writev { .. } => "writev",
        Op::Read { .. } => "read",
        Op::Seek { .. } => "seek",
        Op::Fsync => "fsync",
        Op::Fdatasync => "fdatasync",
        Op::Truncate { .. } => "truncate",
        Op::Fallocate { .. } => "fallocate",
        Op::Punch { .. } => "punch",
    }
}

/// One path's replay: per kind, usecs per op, bytes and counters.
#[derive(Default)]
struct KindStats {
    usecs: Vec<f64>,
    bytes: u64,
    reads: u64,
    writes: u64,
    heads: u64,
}

/// Replays `lines` on each path, a file from `open(path)` each (every call
/// must give a file in the same starting state), and reports. `order` and
/// `block_size` label the results; `final_writeback` ends every round with
/// [`final_writeback`], untimed.
pub fn run<H: HoldsFile>(
    lines: &[Line],
    args: &TimingArgs,
    order: u8,
    block_size: u32,
    final_writeback: bool,
    mut open: impl FnMut(Box<dyn WritePath>) -> anyhow::Result<H>,
) -> anyhow::Result<()> {
    let paths = crate::paths::select_paths(&args.paths)?;
    // `walks`: the round is the counting pass (untimed; its path counts the
    // heads each operation walks, into the stats' `heads`).
    let mut round = |path: &str,
                     what: &str,
                     walks: Option<&Arc<WalkCounter>>|
     -> anyhow::Result<(Vec<KindStats>, Vec<u8>)> {
        let built = match walks {
            Some(w) => crate::paths::make_counting_path(path, w)?,
            None => crate::paths::make_path(path)?,
        };
        let held = open(built)?;
        let mut reads = Vec::new();
        let stats = replay(held.file(), lines, &mut reads, walks)
            .with_context(|| format!("the {path} {what} failed"))?;
        if final_writeback {
            self::final_writeback(held.file())
                .with_context(|| format!("the {path} {what} failed"))?;
        } else {
            // Dropping the file would write back what the trace left dirty.
            held.file().set_writeback_on_drop(false);
        }
        Ok((stats, reads))
    };
    // Every round's reads must be the first round's: each starts from the
    // same state, so a difference is a path's bug, not the workload's.
    let mut first: Option<(String, Vec<u8>)> = None;
    let mut agree = |path: &str, reads: Vec<u8>| -> anyhow::Result<()> {
        match &first {
            None => first = Some((path.to_string(), reads)),
            Some((p0, r0)) => {
                if let Some((a, b)) = first_difference(r0, &reads) {
                    anyhow::bail!(
                        "the {path} replay read other bytes than the {p0} replay, from the \
                         same starting file: {p0} printed {a:?}, {path} printed {b:?}"
                    );
                }
            }
        }
        Ok(())
    };
    // An untimed warm-up round over every path, whose times are discarded:
    // otherwise the first timed path alone pays the process's first touches
    // of memory (the allocator's fresh pages fault in; later runs reuse
    // them). It is also the counting pass: the timed paths have no counters.
    let mut heads = Vec::new();
    for path in &paths {
        let walks = WalkCounter::new();
        let (stats, reads) = round(path, "warm-up replay", Some(&walks))?;
        heads.push(stats.iter().map(|s| s.heads).collect::<Vec<_>>());
        agree(path, reads)?;
    }
    let mut rows = Vec::new();
    for (path, heads) in paths.iter().zip(&heads) {
        let (mut stats, reads) = round(path, "replay", None)?;
        for (s, h) in stats.iter_mut().zip(heads) {
            s.heads = *h;
        }
        agree(path, reads)?;
        rows.extend(rows_of(path, order, block_size, &stats));
    }
    let reads = first.map(|(_, r)| r).unwrap_or_default();
    std::io::stdout()
        .write_all(&reads)
        .context("cannot write to stdout")?;
    eprint!("{}", table(&paths, &rows));
    if let Some(json) = &args.json {
        let params = serde_json::json!({
            "command": "replay",
            "order": order,
            "block_size": block_size,
            "paths": paths,
            "operations": lines.len(),
            "final_writeback": final_writeback,
        });
        crate::report::write_json(json, params, &rows)?;
    }
    Ok(())
}

/// The first `read` line (as printed) where two rounds' outputs differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<(String, String)> {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let (mut la, mut lb) = (a.lines(), b.lines());
    loop {
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                let show = |l: Option<&str>| l.unwrap_or("(no more reads)").to_string();
                return Some((show(x), show(y)));
            }
        }
    }
}

/// Writes back what a trace left dirty, as an unmount would (`File::fsync`):
/// without it, every write no `fsync` line followed would be dropped when
/// the file is closed. A failure names the file offset and the device
/// offset that failed.
pub fn final_writeback(file: &File) -> anyhow::Result<()> {
    file.fsync().context(
        "the final writeback (the dirty data left at the end of the trace, written back \
         as an unmount would; --no-final-writeback skips it) failed",
    )
}

/// Replays `lines`, timing each operation; with `walks` (the counting pass)
/// also the heads each kind walked.
fn replay(
    file: &File,
    lines: &[Line],
    out: &mut Vec<u8>,
    walks: Option<&Arc<WalkCounter>>,
) -> anyhow::Result<Vec<KindStats>> {
    let mut stats: Vec<KindStats> = KINDS.iter().map(|_| KindStats::default()).collect();
    for line in lines {
        let k = kind(&line.op);
        let s = &mut stats[KINDS.iter().position(|x| *x == k).unwrap_or(0)];
        let before = file.device_stats();
        let heads_before = walks.map_or(0, |w| w.stats().total());
        let (t, bytes) =
            timed(file, &line.op, out).with_context(|| format!("trace line {}", line.number))?;
        let after = file.device_stats();
        s.usecs.push(timing::usecs_per_call(t, 1));
        s.bytes += bytes;
        s.reads += after.reads - before.reads;
        s.writes += after.writes - before.writes;
        s.heads += walks.map_or(0, |w| w.stats().total()) - heads_before;
    }
    Ok(stats)
}

fn check(done: usize, len: u64) -> anyhow::Result<()> {
    if done as u64 != len {
        // The engine writes short only when the filesystem could reserve
        // space for part of the write (ENOSPC for the rest).
        anyhow::bail!(
            "short write: {done} of {len} bytes went in (no space left on the filesystem for the rest)"
        );
    }
    Ok(())
}

/// Runs one trace operation (as `replay` does, printing `read` lines to
/// `out`); returns the time of the file call alone and the bytes it moved.
pub fn timed(file: &File, op: &Op, out: &mut impl Write) -> anyhow::Result<(Duration, u64)> {
    let start;
    let bytes = match op {
        Op::Pwrite { off, len, seed } => {
            let buf = trace::write_bytes(file, *seed, *off, *len)?;
            start = Instant::now();
            check(file.pwrite(*off, &buf)?, *len)?;
            *len
        }
        Op::Write { len, seed } => {
            let buf = trace::write_bytes(file, *seed, file.position(), *len)?;
            start = Instant::now();
            check(file.write(&buf)?, *len)?;
            *len
        }
        Op::Writev { seed, lens } => {
            let total: u64 = lens.iter().sum();
            let all = trace::write_bytes(file, *seed, file.position(), total)?;
            let slices = trace::split_iovec(&all, lens);
            start = Instant::now();
            check(file.writev(&slices)?, total)?;
            total
        }
        Op::Read { off, len } => {
            let avail = file.size().saturating_sub(*off).min(*len);
            let mut buf = trace::alloc_zeroed(avail, "the read's buffer")?;
            start = Instant::now();
            let n = file.pread(*off, &mut buf)?;
            let t = start.elapsed();
            writeln!(out, "read {off} {len} {:016x}", trace::fnv1a64(&buf[..n]))?;
            return Ok((t, n as u64));
        }
        Op::Seek { off } => {
            start = Instant::now();
            file.seek(*off);
            0
        }
        Op::Fsync => {
            start = Instant::now();
            file.fsync()?;
            0
        }
        Op::Fdatasync => {
            start = Instant::now();
            file.fdatasync()?;
            0
        }
        Op::Truncate { size } => {
            start = Instant::now();
            file.set_len(*size)?;
            0
        }
        Op::Fallocate {
            off,
            len,
            keep_size,
        } => {
            let mode = if *keep_size {
                FallocMode::KeepSize
            } else {
                FallocMode::Allocate
            };
            start = Instant::now();
            file.fallocate(*off, *len, mode)?;
            0
        }
        Op::Punch { off, len } => {
            start = Instant::now();
            file.fallocate(*off, *len, FallocMode::PunchHole)?;
            0
        }
    };
    Ok((start.elapsed(), bytes))
}

fn rows_of(path: &str, order: u8, block_size: u32, stats: &[KindStats]) -> Vec<Row> {
    KINDS
        .iter()
        .zip(stats)
        .filter(|(_, s)| !s.usecs.is_empty())
        .map(|(k, s)| {
            let n = s.usecs.len() as u64;
            let mut extra = Map::new();
            extra.insert("calls".into(), Value::from(n));
            extra.insert("bytes".into(), Value::from(s.bytes));
            extra.insert(
                "total_usecs".into(),
                Value::from(s.usecs.iter().sum::<f64>()),
            );
            Row {
                case: k.to_string(),
                path: path.to_string(),
                order,
                block_size,
                position: None,
                write_size: None,
                usecs_per_call: timing::summary(&s.usecs),
                device_reads: s.reads,
                device_writes: s.writes,
                walked_heads: s.heads / n,
                extra,
            }
        })
        .collect()
}

fn table(paths: &[String], rows: &[Row]) -> String {
    let find = |k: &str, p: &str| rows.iter().find(|r| r.case == k && r.path == p);
    let mut header = vec!["op".to_string(), "calls".to_string()];
    header.extend(paths.iter().cloned());
    let has_iomap = paths.iter().any(|p| p == "iomap");
    if has_iomap {
        header.extend(
            paths
                .iter()
                .filter(|p| *p != "iomap")
                .map(|p| format!("{p}/iomap")),
        );
    }
    let median = |r: Option<&Row>| r.map(|r| r.usecs_per_call).map(|s: Summary| s.median);
    let body: Vec<Vec<String>> = KINDS
        .iter()
        .filter(|k| rows.iter().any(|r| r.case == **k))
        .map(|k| {
            let calls = rows
                .iter()
                .find(|r| r.case == *k)
                .and_then(|r| r.extra.get("calls"))
                .map_or(String::new(), Value::to_string);
            let mut row = vec![k.to_string(), calls];
            row.extend(
                paths
                    .iter()
                    .map(|p| median(find(k, p)).map_or("-".into(), |m| format!("{m:.3}"))),
            );
            if has_iomap {
                let base = median(find(k, "iomap"));
                row.extend(paths.iter().filter(|p| *p != "iomap").map(|p| {
                    match (median(find(k, p)), base) {
                        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                        _ => "-".into(),
                    }
                }));
            }
            row
        })
        .collect();
    format!(
        "bufwrite replay --timing: usecs per operation (median of lone calls)\n\n{}",
        crate::table::render(&header, &body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_read_lines_that_differ() {
        let a = b"read 0 1 aa\nread 1 1 bb\n";
        assert_eq!(first_difference(a, a), None);
        assert_eq!(
            first_difference(a, b"read 0 1 aa\nread 1 1 cc\n"),
            Some(("read 1 1 bb".into(), "read 1 1 cc".into()))
        );
        assert_eq!(
            first_difference(a, b"read 0 1 aa\n"),
            Some(("read 1 1 bb".into(), "(no more reads)".into()))
        );
    }
}
