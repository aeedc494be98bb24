//! `bufwrite sweep`: usecs/call per write path as one parameter varies.
//!
//! - `order`: folio order 0..=9, a cached overwrite at offset 0.
//! - `position`: where in an uptodate 2 MiB folio the write lands, 16
//!   points from head to tail.
//! - `blocksize`: 1, 2 and 4 KiB blocks in a 2 MiB folio.
//! - `cold`: the folio is not cached: every call follows an fsync and a
//!   drop_caches, so the write reads its partial block in from the device
//!   (a file in a temporary ext4 image, through io_uring by default); 16
//!   points from head to tail, each in the middle of a block.
//! - `size`: write sizes 512 B .. 1 MiB at the head of a 2 MiB folio.
//!
//! Cached calls are `seek` + `write`, as libMicro's write cases do them,
//! timed in calibrated batches with the paths' samples alternating (see
//! [`crate::timing`]); cold calls are slow enough to time one by one.
//! Each sweep writes `sweep-KIND.csv`, `sweep-KIND.json` (the schema of
//! [`crate::report`]) and `sweep-KIND.svg` into `--out`.

mod measure;
mod output;

use crate::paths::select_paths;
use crate::progress::Progress;
use crate::setup;
use anyhow::Context;
use bufwrite_engine::device::Backend;
use std::path::PathBuf;

/// Which parameter a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Folio order 0..=9 (4 KiB .. 2 MiB folios).
    Order,
    /// Write position in an uptodate 2 MiB folio, head to tail.
    Position,
    /// Block size 1, 2, 4 KiB at order 9.
    Blocksize,
    /// Cold cache: a partial-block read-in from the device per call.
    Cold,
    /// Write size 512 B .. 1 MiB at order 9.
    Size,
}

impl Kind {
    /// The name used in file names, results and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Position => "position",
            Self::Blocksize => "blocksize",
            Self::Cold => "cold",
            Self::Size => "size",
        }
    }
}

/// Arguments of `bufwrite sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parameter to sweep.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Directory for sweep-KIND.csv, .json and .svg (made if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Timed samples per point and path (cold: timed calls).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Calls per sample (default: enough for about 1 ms). Not for `cold`,
    /// whose calls are timed one by one.
    /// At most 10^9.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=setup::MAX_BATCH))]
    pub batch: Option<u64>,
    /// Write paths to compare, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Bytes per write (suffixes K, M; default 1K). Not for `size`, which
    /// varies it.
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_size)]
    pub write_size: Option<u64>,
    /// Device I/O backend of the cold sweep: uring (io_uring, O_DIRECT; the
    /// default where io_uring works) or sync.
    #[arg(long, value_parser = setup::parse_backend)]
    pub backend: Option<Backend>,
    /// Cold sweep: run on Flat files on this image file or block device
    /// (its contents are overwritten) instead of a file in a temporary ext4
    /// image.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Cold sweep: run on Flat files in a temporary image file (no ext4,
    /// no e2fsprogs needed) instead of a file in a temporary ext4 image.
    #[arg(long, conflicts_with = "device")]
    pub flat: bool,
    /// Print the JSON document on stdout instead of the table, and draw
    /// no progress bar.
    #[arg(long)]
    pub json: bool,
}

/// One point of a sweep: the file and write every path gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Folio order.
    pub order: u8,
    /// Filesystem block size.
    pub block_size: u32,
    /// File offset of every call.
    pub position: u64,
    /// Bytes per call.
    pub write_size: u64,
    /// The swept value, in the chart's x unit.
    pub x: f64,
}

/// Default bytes per write: libMicro's write_u1k.
const DEFAULT_WRITE: u64 = 1024;
/// Points of the position and cold sweeps.
const POSITIONS: u64 = 16;
/// The largest folio (order 9), where the seed's regression lives.
const LARGE: u8 = bufwrite_engine::folio::MAX_ORDER;

/// The points of `kind` for writes of `write_size` bytes.
pub fn points(kind: Kind, write_size: u64) -> Vec<Point> {
    let at = |order: u8, block_size: u32, position: u64, write_size: u64, x: f64| Point {
        order,
        block_size,
        position,
        write_size,
        x,
    };
    let large = setup::folio_size(LARGE);
    match kind {
        Kind::Order => (0..=LARGE)
            .map(|o| at(o, 4096, 0, write_size, f64::from(o)))
            .collect(),
        Kind::Position => (0..POSITIONS)
            .map(|i| {
                // Head to tail: the last write ends at the folio's end.
                let pos = i * (large - write_size) / (POSITIONS - 1) / 512 * 512;
                at(LARGE, 4096, pos, write_size, pos as f64 / 1024.0)
            })
            .collect(),
        Kind::Blocksize => [1024u32, 2048, 4096]
            .iter()
            .map(|&bs| at(LARGE, bs, 0, write_size, f64::from(bs / 1024)))
            .collect(),
        Kind::Cold => {
            let bs = 4096u64;
            let blocks = large / bs;
            (0..POSITIONS)
                .map(|i| {
                    // The middle of a block, so both its ends need the
                    // old bytes from the device.
                    let block = i * (blocks - 1) / (POSITIONS - 1);
                    let pos = block * bs + (bs - write_size.min(bs)) / 2;
                    at(LARGE, 4096, pos, write_size, pos as f64 / 1024.0)
                })
                .collect()
        }
        Kind::Size => (9..=20)
            .map(|shift| at(LARGE, 4096, 0, 1 << shift, f64::from(1u32 << shift)))
            .collect(),
    }
}

/// Checks the flags that only some sweeps take.
fn check_args(args: &Args) -> anyhow::Result<u64> {
    let kind = args.kind.name();
    if args.kind != Kind::Cold {
        if args.backend.is_some() || args.device.is_some() || args.flat {
            anyhow::bail!(
                "--backend, --device and --flat apply to the cold sweep only; \
                 the {kind} sweep overwrites cached folios on a RAM device (no device I/O)"
            );
        }
    } else if args.batch.is_some() {
        anyhow::bail!("--batch does not apply to the cold sweep: its calls are timed one by one");
    }
    match (args.kind, args.write_size) {
        (Kind::Size, Some(_)) => {
            anyhow::bail!("--write-size does not apply to the size sweep, which varies it")
        }
        (_, None) => Ok(DEFAULT_WRITE),
        (Kind::Cold, Some(n)) if n == 0 || n > 4096 => anyhow::bail!(
            "--write-size {n}: the cold sweep writes inside one 4 KiB block (1 to 4096 bytes)"
        ),
        (_, Some(n)) if n == 0 || n > setup::folio_size(0) * 256 => {
            anyhow::bail!("--write-size {n}: give 1 byte to 1 MiB (a write must fit a 2 MiB folio)")
        }
        (_, Some(n)) => Ok(n),
    }
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let write_size = check_args(&args)?;
    let paths = select_paths(&args.paths)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot make the output directory {}", args.out.display()))?;
    // The files `output::write_all` writes, checked before measuring so
    // that a run is not lost at the end (a directory in the way, say).
    let base = args.out.join(format!("sweep-{}", args.kind.name()));
    for ext in ["csv", "json", "svg"] {
        crate::report::check_output_path(&base.with_extension(ext), "--out")?;
    }
    let points = points(args.kind, write_size);
    let progress = Progress::new(points.len() as u64 * u64::from(args.runs), !args.json);
    let run = if args.kind == Kind::Cold {
        let backend = args.backend.unwrap_or_else(|| {
            let (backend, note) = crate::image::preferred_backend();
            if let Some(note) = note {
                eprintln!("bufwrite sweep: {note}");
            }
            backend
        });
        measure::cold(&args, backend, &paths, &points, &progress)?
    } else {
        measure::cached(&args, &paths, &points, &progress)?
    };
    progress.finish();
    output::write_all(&args, &paths, &points, &run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_points_run_from_head_to_tail() {
        let p = points(Kind::Position, 1024);
        assert_eq!(p.len(), 16);
        assert_eq!(p[0].position, 0);
        assert_eq!(p[15].position + 1024, 2 << 20);
        assert!(p.windows(2).all(|w| w[0].position < w[1].position));
    }

    #[test]
    fn cold_points_sit_in_the_middle_of_a_block() {
        for p in points(Kind::Cold, 1024) {
            assert_eq!(p.position % 4096, 1536, "{p:?}");
            assert!(p.position + 1024 <= 2 << 20);
        }
        assert_eq!(points(Kind::Cold, 1024)[15].position, (511 * 4096) + 1536);
    }

    #[test]
    fn order_blocksize_and_size_points() {
        let o = points(Kind::Order, 1024);
        assert_eq!(
            o.iter().map(|p| p.order).collect::<Vec<_>>(),
            (0..=9).collect::<Vec<_>>()
        );
        let b = points(Kind::Blocksize, 1024);
        assert_eq!(
            b.iter().map(|p| p.block_size).collect::<Vec<_>>(),
            [1024, 2048, 4096]
        );
        let s = points(Kind::Size, 1024);
        assert_eq!((s[0].write_size, s[11].write_size), (512, 1 << 20));
    }
}
