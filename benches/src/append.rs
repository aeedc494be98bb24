//! `bufwrite append`: appends per write path and allocation policy on ext4.
//!
//! Each measurement creates a new file through a `Mount` of the image,
//! appends `--total` bytes to it in calls of one size (every call past EOF,
//! so every block is a delayed allocation), times the calls (usecs per
//! call: the cached cost) and the fsyncs that allocate, write and commit
//! (the durable cost, per fsync: one at the end, or one per
//! `--fsync-every` bytes), and counts the metadata blocks the image got per
//! MiB appended, by kind, and the device requests. The file is
//! unlinked afterwards, so the next measurement starts from the same free
//! space. Configurations alternate within each run (`--runs` of them) and
//! the median is reported, so that a slow spell of the disk does not land
//! on one of them.

use crate::image::TempExt4;
use crate::paths;
use crate::report::{self, Row};
use crate::setup::{open_path, CommonArgs};
use crate::timing::{summary, usecs_per_call};
use crate::units::{human, parse_size, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::{
    AllocPolicy, BlockDevice, File, FileOptions, Mount, OpenFlags, OrderPolicy, WritePath,
};
use bufwrite_ext4::{Ext4, MetaCounts, MetaKind};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `bufwrite append`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An ext4 image (or unmounted device) to append in: files named
    /// /bufwrite-append-N are created there and unlinked afterwards.
    /// Default: a temporary image made with mkfs.ext4.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Bytes per append call (comma-separated, K/M suffixes).
    #[arg(long, value_delimiter = ',', default_value = "1K,4K,64K")]
    size: Vec<String>,
    /// Writeback allocation policies (comma-separated: unwritten, ordered).
    #[arg(long, value_delimiter = ',', default_value = "unwritten,ordered")]
    policy: Vec<String>,
    /// Write paths (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Bytes appended per measurement (K/M/G suffixes).
    #[arg(long, default_value = "4M")]
    total: String,
    /// Also fsync after every this many bytes appended (K/M suffixes), as
    /// a log does; 0: one fsync, at the end.
    #[arg(long, default_value = "0")]
    fsync_every: String,
    /// Runs; every configuration is measured once per run and the median
    /// is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Device backend, block size (of the temporary image) and the largest
    /// folio order (folios are sized from each write, up to it).
    #[command(flatten)]
    common: CommonArgs,
    /// Also write the results as JSON (the one schema) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One configuration's figures from one run.
#[derive(Debug, Clone)]
struct Sample {
    usecs_per_call: f64,
    fsync_usecs: f64,
    meta: MetaCounts,
    reads: u64,
    writes: u64,
    bytes_written: u64,
}

#[derive(Debug, Clone)]
struct Config {
    path: String,
    policy: AllocPolicy,
    size: u64,
}

/// Runs the command: flags are checked and the image opened before any
/// byte is written.
pub fn run(args: Args) -> Result<()> {
    let total = parse_size(&args.total).map_err(anyhow::Error::msg)?;
    let fsync_every = parse_size(&args.fsync_every).map_err(anyhow::Error::msg)?;
    let mut sizes = Vec::new();
    for s in &args.size {
        let n = parse_size(s).map_err(anyhow::Error::msg)?;
        if n == 0 || n > total {
            bail!(
                "--size {s}: an append size must be between 1 byte and --total ({})",
                args.total
            );
        }
        sizes.push(n);
    }
    let mut policies = Vec::new();
    for p in &args.policy {
        let policy: AllocPolicy = p
            .parse()
            .map_err(|_| anyhow::anyhow!("--policy {p:?}: expected unwritten or ordered"))?;
        if policies.contains(&policy) {
            bail!("--policy {p} is listed twice");
        }
        policies.push(policy);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let paths = paths::select_paths(&args.paths)?;
    report::check_json_path(args.json.as_deref(), &[args.image.as_deref()])?;
    let bs = args.common.block_size;
    // The largest file is one measurement's; the image gets room for it
    // twice over plus its metadata.
    let (_temp, image) = match &args.image {
        Some(p) => (None, p.clone()),
        None => {
            let t = TempExt4::empty(bs, 2 * total + (32 << 20))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let device = open_path(&image, args.common.backend)?;
    let block_size = Ext4::open(Arc::clone(&device))
        .with_context(|| format!("cannot read {} as ext4", image.display()))?
        .block_size();
    let mut configs = Vec::new();
    for p in &paths {
        for &policy in &policies {
            for &size in &sizes {
                configs.push(Config {
                    path: p.clone(),
                    policy,
                    size,
                });
            }
        }
    }
    let opts = FileOptions {
        order: OrderPolicy::FromWrite {
            max_order: args.common.order,
        },
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    let mut serial = 0u64;
    // Round 0 warms up (folio memory, the image's metadata in the host's
    // cache) and is not kept.
    for round in 0..=args.runs {
        for (i, c) in configs.iter().enumerate() {
            serial += 1;
            let s = measure(&device, c, total, fsync_every, opts, serial)
                .with_context(|| describe(c, "measuring"))?;
            if round > 0 {
                samples[i].push(s);
            }
        }
    }
    let mut rows = Vec::new();
    for (c, s) in configs.iter().zip(&samples) {
        serial += 1;
        let heads = count_heads(&device, c, opts, serial)?;
        rows.push(row(c, s, total, block_size, args.common.order, heads));
    }
    print_table(&rows);
    if let Some(path) = &args.json {
        let params = json!({
            "command": "append",
            "image": args.image.as_ref().map(|p| p.display().to_string()),
            "total": total,
            "fsync_every": fsync_every,
            "runs": args.runs,
            "backend": args.common.backend.to_string(),
            "max_order": args.common.order,
        });
        report::write_json(path, params, &rows)?;
    }
    Ok(())
}

fn describe(c: &Config, what: &str) -> String {
    format!(
        "{what} {}-byte appends on {} with the {} policy",
        c.size, c.path, c.policy
    )
}

/// A mount of the image with the configuration's policy, and its ext4.
fn mount(device: &Arc<dyn BlockDevice>, policy: AllocPolicy) -> Result<(Mount, Arc<Ext4>)> {
    let fs = Arc::new(Ext4::open_with(Arc::clone(device), policy)?);
    Ok((Mount::new(Arc::clone(device), fs.clone()), fs))
}

fn open_new(m: &Mount, name: &str, path: Box<dyn WritePath>, opts: FileOptions) -> Result<File> {
    let flags = OpenFlags {
        create: true,
        exclusive: true,
        truncate: false,
    };
    m.open(name, flags, path, opts)
        .with_context(|| format!("cannot create {name}"))
}

fn measure(
    device: &Arc<dyn BlockDevice>,
    c: &Config,
    total: u64,
    fsync_every: u64,
    opts: FileOptions,
    serial: u64,
) -> Result<Sample> {
    let (m, fs) = mount(device, c.policy)?;
    let name = format!("/bufwrite-append-{serial}");
    let file = open_new(&m, &name, paths::make_path(&c.path)?, opts)?;
    let buf = vec![0xa5u8; c.size as usize];
    let calls = total / c.size;
    let meta0 = fs.meta_counts();
    let io0 = device.stats();
    let mut writing = Duration::ZERO;
    let mut syncing = Duration::ZERO;
    let mut fsyncs = 0u64;
    let mut since_sync = 0u64;
    for i in 0..calls {
        let t0 = Instant::now();
        let n = file.write(&buf)?;
        writing += t0.elapsed();
        if n as u64 != c.size {
            bail!("a {}-byte append wrote {n} bytes", c.size);
        }
        since_sync += c.size;
        if i + 1 == calls || (fsync_every > 0 && since_sync >= fsync_every) {
            let t1 = Instant::now();
            file.fsync()?;
            syncing += t1.elapsed();
            fsyncs += 1;
            since_sync = 0;
        }
    }
    let io = device.stats() - io0;
    let meta = fs.meta_counts().since(&meta0);
    file.close()?;
    m.unlink(&name)?;
    m.sync()?;
    Ok(Sample {
        usecs_per_call: usecs_per_call(writing, calls),
        fsync_usecs: usecs_per_call(syncing, fsyncs),
        meta,
        reads: io.reads,
        writes: io.writes,
        bytes_written: io.bytes_written,
    })
}

/// Heads walked per append call, from an untimed counting pass.
fn count_heads(
    device: &Arc<dyn BlockDevice>,
    c: &Config,
    opts: FileOptions,
    serial: u64,
) -> Result<u64> {
    let (m, _fs) = mount(device, c.policy)?;
    let name = format!("/bufwrite-append-count-{serial}");
    let buf = vec![0x5au8; c.size as usize];
    let heads = paths::count_walks(
        &c.path,
        |p| open_new(&m, &name, p, opts),
        |f| {
            f.write(&buf)?;
            Ok(())
        },
    )?;
    m.unlink(&name)?;
    m.sync()?;
    Ok(heads)
}

fn row(c: &Config, s: &[Sample], total: u64, block_size: u32, order: u8, heads: u64) -> Row {
    let per_mib = |v: u64| v as f64 * (1u64 << 20) as f64 / total as f64;
    let med = |f: &dyn Fn(&Sample) -> f64| summary(&s.iter().map(f).collect::<Vec<_>>());
    let mut meta = Map::new();
    for k in MetaKind::ALL {
        meta.insert(
            k.name().into(),
            json!(med(&|x: &Sample| per_mib(x.meta.get(k))).median),
        );
    }
    meta.insert(
        "total".into(),
        json!(med(&|x: &Sample| per_mib(x.meta.total())).median),
    );
    let mut extra = Map::new();
    extra.insert("policy".into(), json!(c.policy.to_string()));
    extra.insert("total_bytes".into(), json!(total));
    extra.insert(
        "fsync_usecs".into(),
        serde_json::to_value(med(&|x: &Sample| x.fsync_usecs)).unwrap_or(Value::Null),
    );
    extra.insert("meta_blocks_per_mib".into(), Value::Object(meta));
    extra.insert(
        "device_bytes_written".into(),
        json!(med(&|x: &Sample| x.bytes_written as f64).median as u64),
    );
    Row {
        case: "append".into(),
        path: c.path.clone(),
        order,
        block_size,
        position: None,
        write_size: Some(c.size),
        usecs_per_call: med(&|x: &Sample| x.usecs_per_call),
        device_reads: med(&|x: &Sample| x.reads as f64).median as u64,
        device_writes: med(&|x: &Sample| x.writes as f64).median as u64,
        walked_heads: heads,
        extra,
    }
}

fn print_table(rows: &[Row]) {
    let header: Vec<String> = [
        "path",
        "policy",
        "size",
        "usecs/call",
        "fsync ms",
        "meta blocks/MiB",
        "bitmap",
        "desc",
        "extent",
        "inode",
        "sb",
        "dev writes",
        "heads/call",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let meta = r.extra.get("meta_blocks_per_mib");
            let m = |k: &str| {
                meta.and_then(|v| v.get(k))
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |v| format!("{v:.1}"))
            };
            let fsync = r
                .extra
                .get("fsync_usecs")
                .and_then(|v| v.get("median"))
                .and_then(Value::as_f64);
            vec![
                r.path.clone(),
                r.extra
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_string(),
                human(r.write_size.unwrap_or(0), Units::Flag),
                format!("{:.3}", r.usecs_per_call.median),
                fsync.map_or("-".into(), |us| format!("{:.2}", us / 1000.0)),
                m("total"),
                m("bitmap"),
                m("descriptor"),
                m("extent"),
                m("inode"),
                m("superblock"),
                r.device_writes.to_string(),
                r.walked_heads.to_string(),
            ]
        })
        .collect();
    print!("{}", crate::table::render(&header, &body));
}
