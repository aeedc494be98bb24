//! The timed calls of a sweep: cached overwrites in calibrated batches,
//! cold writes one by one.

use super::{Args, Kind, Point};
use crate::harness::{self, Counts, Runner, Target as HarnessTarget};
use crate::image::{self, Ext4Image};
use crate::progress::Progress;
use crate::report::Row;
use crate::setup::{self, CommonArgs, Target};
use crate::timing::{self, Summary};
use anyhow::Context;
use bufwrite_engine::device::Backend;
use bufwrite_engine::{File, WritePath};
use serde_json::{Map, Value};
use std::io::IoSlice;
use std::time::Instant;

/// What a sweep measured.
#[derive(Debug)]
pub struct Measured {
    /// One row per point and path, points in order, paths in order.
    pub rows: Vec<Row>,
    /// usecs/call of a bare copy of the write size (the floor), when the
    /// write size is fixed.
    pub memcpy: Option<Summary>,
    /// The device the files were on.
    pub device: String,
    /// Its I/O backend.
    pub backend: String,
}

fn common(p: &Point, backend: Backend) -> CommonArgs {
    CommonArgs {
        backend,
        block_size: p.block_size,
        order: p.order,
    }
}

/// The file of a point: whole folios covering the write.
fn file_size(p: &Point) -> u64 {
    let folio = setup::folio_size(p.order);
    setup::round_up((p.position + p.write_size).max(folio), folio)
}

/// The timed call of a cached point: [`call`] at the point's position.
struct AtPoint<'a>(&'a Point);

impl harness::Call for AtPoint<'_> {
    #[inline]
    fn call(&self, file: &File, buf: &[u8], _iov: &[IoSlice<'_>]) -> anyhow::Result<()> {
        call(file, self.0, buf)
    }
}

/// A cached point's runner for `path`: a file on its own RAM device,
/// prefilled.
fn runner<'a>(path: &str, p: &'a Point, batch: Option<u64>) -> anyhow::Result<Runner<AtPoint<'a>>> {
    let size = file_size(p);
    let prepared = |wp: Box<dyn WritePath>| -> anyhow::Result<File> {
        let opened = setup::open_target(&Target::Mem, size, Backend::Sync)?;
        let common = common(p, Backend::Sync);
        let file = setup::flat_file(&opened.device, 0, size, 0, &common, wp)?;
        setup::prefill(&file, size).with_context(|| format!("cannot prepare the {path} file"))?;
        Ok(file)
    };
    let buf = vec![0xa5; p.write_size as usize];
    Runner::new(path, vec![buf], AtPoint(p), prepared, batch)
}

/// The timed call: `seek` then `write`, as libMicro's write cases.
fn call(file: &File, p: &Point, buf: &[u8]) -> anyhow::Result<()> {
    file.seek(p.position);
    let done = file.write(buf)?;
    if done != buf.len() {
        anyhow::bail!("short write of {done} of {} bytes", buf.len());
    }
    Ok(())
}

/// A result row of `samples` (usecs per call) over `calls` calls.
fn row(
    kind: Kind,
    p: &Point,
    path: &str,
    samples: &[f64],
    counts: Counts,
    calls: u64,
    batch: u64,
) -> Row {
    let mut extra = Map::new();
    extra.insert("x".into(), Value::from(p.x));
    extra.insert("samples".into(), Value::from(samples.len()));
    extra.insert("calls_per_sample".into(), Value::from(batch));
    extra.insert("calls".into(), Value::from(calls));
    extra.insert("device_read_bytes".into(), Value::from(counts.read_bytes));
    Row {
        case: kind.name().to_string(),
        path: path.to_string(),
        order: p.order,
        block_size: p.block_size,
        position: Some(p.position),
        write_size: Some(p.write_size),
        usecs_per_call: timing::summary(samples),
        device_reads: counts.reads,
        device_writes: counts.writes,
        walked_heads: counts.heads_per_call,
        extra,
    }
}

/// Label of a point for the progress bar.
fn label(kind: Kind, p: &Point) -> String {
    match kind {
        Kind::Order => format!("order {}", p.order),
        Kind::Blocksize => format!("block size {}", p.block_size),
        Kind::Size => format!("size {}", p.write_size),
        Kind::Position | Kind::Cold => format!("{} @{} KiB", kind.name(), p.position / 1024),
    }
}

/// Cached overwrites: per point, a fresh file per path on a RAM device,
/// then `runs` samples with the paths alternating.
pub fn cached(
    args: &Args,
    paths: &[String],
    points: &[Point],
    progress: &Progress,
) -> anyhow::Result<Measured> {
    let mut rows = Vec::new();
    for p in points {
        progress.set_message(label(args.kind, p));
        let mut runners = paths
            .iter()
            .map(|path| runner(path, p, args.batch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for _ in 0..args.runs {
            for r in &mut runners {
                r.sample()?;
            }
            progress.inc(1);
        }
        rows.extend(runners.iter().map(|r| {
            let calls = r.batch * u64::from(args.runs);
            row(args.kind, p, &r.path, &r.samples, r.counts, calls, r.batch)
        }));
    }
    let memcpy = (args.kind != Kind::Size).then(|| {
        let size = points.first().map_or(1024, |p| p.write_size) as usize;
        timing::memcpy_floor(size, args.runs, args.batch)
    });
    Ok(Measured {
        rows,
        memcpy,
        device: "RAM device (cached overwrites do no device I/O)".into(),
        backend: "none".into(),
    })
}

/// Where the cold files live: by default one file in a temporary ext4
/// image, which every path opens with its own mapper and page cache (each
/// call fsyncs and drops its own cache first, so they stay coherent); with
/// `--device` or `--flat`, a Flat file per path side by side on that
/// device or a temporary image file.
fn cold_target(
    args: &Args,
    backend: Backend,
    region: u64,
    paths: usize,
) -> anyhow::Result<HarnessTarget> {
    match &args.device {
        Some(path) => HarnessTarget::flat(&Target::Device(path.clone()), region, paths, backend),
        None if args.flat => HarnessTarget::flat(&Target::TempImage, region, paths, backend),
        None => Ok(HarnessTarget::Ext4 {
            image: Box::new(Ext4Image::temporary(4096, region, backend)?),
            file: image::FILE.to_string(),
            region,
        }),
    }
}

/// Cold writes: one order-9 file per path; before each timed call
/// (untimed) an fsync and a drop_caches, so the call finds no folio and
/// reads its partial block in.
pub fn cold(
    args: &Args,
    backend: Backend,
    paths: &[String],
    points: &[Point],
    progress: &Progress,
) -> anyhow::Result<Measured> {
    let region = points.iter().map(file_size).max().unwrap_or(0);
    let target = cold_target(args, backend, region, paths.len())?;
    let dev = target.device();
    let mut files = Vec::new();
    let common0 = common(&points[0], backend);
    for (i, path) in paths.iter().enumerate() {
        let file = target.open_file(i, crate::paths::make_path(path)?, &common0)?;
        setup::prefill(&file, region).with_context(|| format!("cannot prepare the {path} file"))?;
        files.push(file);
    }
    let mut rows = Vec::new();
    for p in points {
        progress.set_message(label(Kind::Cold, p));
        let buf = vec![0xa5; p.write_size as usize];
        let mut samples = vec![Vec::new(); files.len()];
        let mut counts = vec![Counts::default(); files.len()];
        for _ in 0..args.runs {
            for (i, f) in files.iter().enumerate() {
                samples[i].push(cold_call(f, p, &buf, &mut counts[i])?);
            }
            progress.inc(1);
        }
        for (i, path) in paths.iter().enumerate() {
            // Untimed, on a second file of the same path over the same
            // blocks: each counted call is cold as the timed ones are.
            let open = |wp| target.open_file(i, wp, &common0);
            counts[i].heads_per_call = crate::paths::count_walks(path, open, |f| {
                f.fsync()?;
                f.drop_caches();
                call(f, p, &buf)
            })?;
            let calls = u64::from(args.runs);
            rows.push(row(Kind::Cold, p, path, &samples[i], counts[i], calls, 1));
        }
    }
    Ok(Measured {
        rows,
        memcpy: None,
        device: match &target {
            HarnessTarget::Ext4 { .. } => format!(
                "{} in a temporary ext4 image on {}",
                image::FILE,
                dev.describe()
            ),
            HarnessTarget::Flat { .. } => dev.describe(),
        },
        backend: dev.backend().to_string(),
    })
}

/// One cold call: usecs of the write alone.
fn cold_call(f: &File, p: &Point, buf: &[u8], counts: &mut Counts) -> anyhow::Result<f64> {
    f.fsync()?;
    if f.drop_caches() == 0 {
        // Every call leaves its folio cached, so this cannot happen unless
        // something holds it: the call would be warm, not cold.
        anyhow::bail!("drop_caches dropped nothing: the cold write would find its folio cached");
    }
    let before = f.device_stats();
    let start = Instant::now();
    call(f, p, buf)?;
    let t = start.elapsed();
    counts.add(before, f.device_stats());
    Ok(timing::usecs_per_call(t, 1))
}
