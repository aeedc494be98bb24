//! `bufwrite append`: appends per write path and allocation policy on ext4.
//!
//! Each measurement creates a new file through a `Mount` of the image,
//! appends `--total` bytes to it in calls of one size (every call past EOF,
//! so every block is a delayed allocation), times the calls (usecs per
//! call: the cached cost) and the fsyncs that allocate, write and commit
//! (the durable cost, per fsync: one at the end, or one per
//! `--fsync-every` bytes), and counts the metadata blocks the image got per
//! MiB appended, by kind, and the device requests. On an image with a
//! journal (mkfs's default, and the default here: the kernel's ext4 has
//! one; `--journal off` makes the temporary image without, the layout
//! whose metadata is written in place) it also counts, per MiB appended,
//! the journal commits, the log blocks written, the metadata blocks they
//! logged and the blocks revoked, and a second table puts the unwritten and
//! ordered policies side by side with their ratio: how much more journal
//! always-unwritten costs. The metadata blocks by kind are the blocks each
//! operation wrote (journaled or in place); the logged ones are the
//! distinct blocks per commit, which is what the journal writes when
//! several operations change one block before it commits. The file is
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
use bufwrite_ext4::superblock::compat;
use bufwrite_ext4::{Ext4, JournalStats, MetaCounts, MetaKind};
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
    /// Make the temporary image with mkfs's journal (on, the default, as
    /// the kernel's ext4 is made) or without one (off: `-O ^has_journal`,
    /// metadata written in place). With --image, the image's own layout
    /// is used and this, if given, must match it.
    #[arg(long, value_enum)]
    journal: Option<Journal>,
    /// Device backend, block size (of the temporary image) and the largest
    /// folio order (folios are sized from each write, up to it).
    #[command(flatten)]
    common: CommonArgs,
    /// Also write the results as JSON (the one schema) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--journal`: the temporary image's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Journal {
    /// mkfs's default journal: metadata is logged, then checkpointed.
    On,
    /// No journal: metadata is written in place, in a crash-safe order.
    Off,
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
    /// What the journal did while appending; `None` without one.
    journal: Option<JournalStats>,
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
            let journal = args.journal.unwrap_or(Journal::On) == Journal::On;
            let t = TempExt4::empty_with(bs, 2 * total + (32 << 20), journal)?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let device = open_path(&image, args.common.backend)?;
    let probe = Ext4::open(Arc::clone(&device))
        .with_context(|| format!("cannot read {} as ext4", image.display()))?;
    crate::setup::note_recovery(&probe, &image);
    let block_size = probe.block_size();
    let sb = probe.superblock();
    let journaled = sb.feature_compat & compat::HAS_JOURNAL != 0 && sb.journal_inum != 0;
    drop(probe);
    if let (Some(want), Some(p)) = (args.journal, &args.image) {
        if (want == Journal::On) != journaled {
            bail!(
                "--journal {}: {} {} a journal (--journal chooses the temporary image's layout)",
                if want == Journal::On { "on" } else { "off" },
                p.display(),
                if journaled { "has" } else { "has no" }
            );
        }
    }
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
    compare_with_ordered(&mut rows);
    print_table(&rows);
    print_comparison(&rows, journaled);
    if let Some(path) = &args.json {
        let params = json!({
            "command": "append",
            "image": args.image.as_ref().map(|p| p.display().to_string()),
            "total": total,
            "fsync_every": fsync_every,
            "runs": args.runs,
            "backend": args.common.backend.to_string(),
            "max_order": args.common.order,
            "journal": journaled,
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
    // The create's blocks are committed first, so that the journal counts
    // (as the metadata counts) are the appends' alone.
    fs.journal_commit()?;
    let journal0 = fs.journal_stats();
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
    let journal = fs
        .journal_stats()
        .map(|j| j.since(&journal0.unwrap_or_default()));
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
        journal,
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
    // Null without a journal (no sample has one), rather than zeros that
    // would read as a journal that cost nothing.
    let journal = if s.iter().all(|x| x.journal.is_some()) && !s.is_empty() {
        let j = |f: fn(&JournalStats) -> u64| {
            json!(med(&|x: &Sample| per_mib(x.journal.map_or(0, |j| f(&j)))).median)
        };
        json!({
            "commits": j(|j| j.commits),
            "log_blocks": j(|j| j.log_blocks),
            "metadata_blocks": j(|j| j.metadata_blocks),
            "revoked": j(|j| j.revoked),
            "checkpoints": j(|j| j.checkpoints),
        })
    } else {
        Value::Null
    };
    extra.insert("journal_per_mib".into(), journal);
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

/// A number at `pointer` (a JSON pointer) in a row's extra fields.
fn extra_f64(r: &Row, pointer: &str) -> Option<f64> {
    let (key, rest) = pointer.trim_start_matches('/').split_once('/')?;
    r.extra.get(key)?.pointer(&format!("/{rest}"))?.as_f64()
}

/// The figures the comparison divides, as JSON pointers into a row's
/// extra fields, and their names in `vs_ordered`.
const COMPARED: [(&str, &str); 5] = [
    ("log_blocks", "/journal_per_mib/log_blocks"),
    ("logged_metadata_blocks", "/journal_per_mib/metadata_blocks"),
    ("commits", "/journal_per_mib/commits"),
    ("meta_blocks", "/meta_blocks_per_mib/total"),
    ("fsync_usecs", "/fsync_usecs/median"),
];

/// `a / b`, or `None` when either is missing or `b` is zero (nothing to
/// compare against).
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Gives every row of a policy other than ordered a `vs_ordered` field:
/// its figures divided by the ordered row's of the same path and size
/// (null figures where there is nothing to divide; the field is null on
/// ordered rows and where ordered was not measured).
fn compare_with_ordered(rows: &mut [Row]) {
    let ordered = AllocPolicy::Ordered.to_string();
    let policy = |r: &Row| {
        r.extra
            .get("policy")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.iter() {
        let base = rows.iter().find(|o| {
            policy(o).as_deref() == Some(&ordered)
                && o.path == r.path
                && o.write_size == r.write_size
        });
        let v = match base {
            Some(b) if policy(r).as_deref() != Some(&ordered) => {
                let mut m = Map::new();
                for (name, ptr) in COMPARED {
                    m.insert(
                        name.into(),
                        json!(ratio(extra_f64(r, ptr), extra_f64(b, ptr))),
                    );
                }
                Value::Object(m)
            }
            _ => Value::Null,
        };
        out.push(v);
    }
    for (r, v) in rows.iter_mut().zip(out) {
        r.extra.insert("vs_ordered".into(), v);
    }
}

/// The second table: per path and size, the unwritten policy's journal and
/// fsync figures next to the ordered policy's, and their ratio (printed
/// only when both were measured).
fn print_comparison(rows: &[Row], journaled: bool) {
    let is = |r: &Row, p: AllocPolicy| {
        r.extra.get("policy").and_then(Value::as_str) == Some(p.to_string().as_str())
    };
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| is(r, AllocPolicy::Unwritten))
        .filter_map(|u| {
            rows.iter()
                .find(|o| {
                    is(o, AllocPolicy::Ordered) && o.path == u.path && o.write_size == u.write_size
                })
                .map(|o| (u, o))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let header: Vec<String> = [
        "path",
        "size",
        "log/MiB unwr",
        "ordered",
        "ratio",
        "logged/MiB unwr",
        "ordered",
        "ratio",
        "commits/MiB unwr",
        "ordered",
        "meta/MiB ratio",
        "fsync ms unwr",
        "ordered",
        "ratio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f1 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let f2 = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}", v / 1000.0));
    let body: Vec<Vec<String>> = pairs
        .iter()
        .map(|(u, o)| {
            let g = |r: &Row, p: &str| extra_f64(r, p);
            let vs = |name: &str| {
                u.extra
                    .get("vs_ordered")
                    .and_then(|v| v.get(name))
                    .and_then(Value::as_f64)
            };
            vec![
                u.path.clone(),
                human(u.write_size.unwrap_or(0), Units::Flag),
                f1(g(u, "/journal_per_mib/log_blocks")),
                f1(g(o, "/journal_per_mib/log_blocks")),
                f2(vs("log_blocks")),
                f1(g(u, "/journal_per_mib/metadata_blocks")),
                f1(g(o, "/journal_per_mib/metadata_blocks")),
                f2(vs("logged_metadata_blocks")),
                f1(g(u, "/journal_per_mib/commits")),
                f1(g(o, "/journal_per_mib/commits")),
                f2(vs("meta_blocks")),
                ms(g(u, "/fsync_usecs/median")),
                ms(g(o, "/fsync_usecs/median")),
                f2(vs("fsync_usecs")),
            ]
        })
        .collect();
    println!();
    println!(
        "unwritten vs ordered ({}): per MiB appended; ratio = unwritten / ordered",
        if journaled {
            "journal on"
        } else {
            "no journal"
        }
    );
    print!("{}", crate::table::render(&header, &body));
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
        "commits/MiB",
        "log/MiB",
        "logged/MiB",
        "revoked/MiB",
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
            let journal = r.extra.get("journal_per_mib");
            let j = |k: &str| {
                journal
                    .and_then(|v| v.get(k))
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
                j("commits"),
                j("log_blocks"),
                j("metadata_blocks"),
                j("revoked"),
                r.device_writes.to_string(),
                r.walked_heads.to_string(),
            ]
        })
        .collect();
    print!("{}", crate::table::render(&header, &body));
}
