//! The timed calls of a sweep: cached overwrites in calibrated batches,
//! cold writes one by one.

use super::{Args, Kind, Point};
use crate::image::{self, Ext4Image};
use crate::progress::Progress;
use crate::report::Row;
use crate::setup::{self, CommonArgs, Target};
use crate::timing::{self, Summary};
use anyhow::Context;
use bufwrite_engine::device::Backend;
use bufwrite_engine::{BlockDevice, File, IoStats, WritePath};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The device-request counts of timed calls, and the buffer heads walked
/// per call (from the untimed counting pass, never the timed calls).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    reads: u64,
    writes: u64,
    read_bytes: u64,
    heads_per_call: u64,
}

impl Counts {
    fn add(&mut self, before: IoStats, after: IoStats) {
        self.reads += after.reads - before.reads;
        self.writes += after.writes - before.writes;
        self.read_bytes += after.bytes_read - before.bytes_read;
    }
}

fn counters(f: &File) -> IoStats {
    f.device_stats()
}

/// One path's file at one point, and what its timed calls did.
struct Runner {
    path: String,
    file: File,
    buf: Vec<u8>,
    batch: u64,
    samples: Vec<f64>,
    counts: Counts,
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

/// The timed call: `seek` then `write`, as libMicro's write cases.
fn call(file: &File, p: &Point, buf: &[u8]) -> anyhow::Result<()> {
    file.seek(p.position);
    let done = file.write(buf)?;
    if done != buf.len() {
        anyhow::bail!("short write of {done} of {} bytes", buf.len());
    }
    Ok(())
}

impl Runner {
    fn new(path: &str, p: &Point, batch: Option<u64>) -> anyhow::Result<Self> {
        let size = file_size(p);
        let prepared = |wp: Box<dyn WritePath>| -> anyhow::Result<File> {
            let opened = setup::open_target(&Target::Mem, size, Backend::Sync)?;
            let common = common(p, Backend::Sync);
            let file = setup::flat_file(&opened.device, 0, size, 0, &common, wp)?;
            setup::prefill(&file, size)
                .with_context(|| format!("cannot prepare the {path} file"))?;
            Ok(file)
        };
        let buf = vec![0xa5; p.write_size as usize];
        // Untimed, on its own file prepared the same way.
        let heads_per_call = crate::paths::count_walks(path, prepared, |f| call(f, p, &buf))?;
        let mut r = Runner {
            path: path.to_string(),
            file: prepared(crate::paths::make_path(path)?)?,
            buf,
            batch: 1,
            samples: Vec::new(),
            counts: Counts {
                heads_per_call,
                ..Counts::default()
            },
        };
        r.batch = match batch {
            Some(b) => b,
            None => timing::calibrate(|n| r.time_calls(p, n), timing::SAMPLE_TARGET)?,
        };
        Ok(r)
    }

    fn time_calls(&self, p: &Point, n: u64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..n {
            call(&self.file, p, &self.buf)?;
        }
        Ok(start.elapsed())
    }

    fn sample(&mut self, p: &Point) -> anyhow::Result<()> {
        let before = counters(&self.file);
        let t = self.time_calls(p, self.batch)?;
        self.counts.add(before, counters(&self.file));
        self.samples.push(timing::usecs_per_call(t, self.batch));
        Ok(())
    }
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
            .map(|path| Runner::new(path, p, args.batch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for _ in 0..args.runs {
            for r in &mut runners {
                r.sample(p)?;
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
enum ColdTarget {
    Ext4(Ext4Image),
    Flat(setup::Opened),
}

impl ColdTarget {
    fn open(args: &Args, backend: Backend, region: u64, paths: usize) -> anyhow::Result<Self> {
        let flat = |target: Target| -> anyhow::Result<Self> {
            let opened = setup::open_target(&target, region * paths as u64, backend)?;
            Ok(ColdTarget::Flat(opened))
        };
        match &args.device {
            Some(path) => flat(Target::Device(path.clone())),
            None if args.flat => flat(Target::TempImage),
            None => Ok(ColdTarget::Ext4(Ext4Image::temporary(
                4096, region, backend,
            )?)),
        }
    }

    fn device(&self) -> &Arc<dyn BlockDevice> {
        match self {
            ColdTarget::Ext4(image) => &image.device,
            ColdTarget::Flat(opened) => &opened.device,
        }
    }

    fn file(
        &self,
        i: usize,
        path: Box<dyn WritePath>,
        region: u64,
        common: &CommonArgs,
    ) -> anyhow::Result<File> {
        match self {
            ColdTarget::Ext4(image) => Ok(File::open(
                Arc::clone(&image.device),
                image.open_file(image::FILE, region)?,
                path,
                common.file_options(),
            )?),
            ColdTarget::Flat(opened) => {
                setup::flat_file(&opened.device, i as u64 * region, region, 0, common, path)
            }
        }
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
    let target = ColdTarget::open(args, backend, region, paths.len())?;
    let dev = target.device();
    let mut files = Vec::new();
    let common0 = common(&points[0], backend);
    for (i, path) in paths.iter().enumerate() {
        let file = target.file(i, crate::paths::make_path(path)?, region, &common0)?;
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
            let open = |wp| target.file(i, wp, region, &common0);
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
            ColdTarget::Ext4(_) => format!(
                "{} in a temporary ext4 image on {}",
                image::FILE,
                dev.describe()
            ),
            ColdTarget::Flat(_) => dev.describe(),
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
    let before = counters(f);
    let start = Instant::now();
    call(f, p, buf)?;
    let t = start.elapsed();
    counts.add(before, counters(f));
    Ok(timing::usecs_per_call(t, 1))
}
