//! What `bufwrite libmicro` prints and writes: a row per case and path,
//! the median table with the seed's ratio columns, the detail table, the
//! metadata per cached GiB and the JSON document.

use super::cases::Case;
use super::Args;
use crate::harness::{Runner, Target};
use crate::table;
use crate::timing::{summary, Summary};
use serde::Serialize;

/// The result of one case on one path.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    case: &'static str,
    path: String,
    order: u8,
    block_size: u32,
    position: u64,
    /// Bytes one call writes (for writev, all its buffers).
    write_size: u64,
    /// Buffers per call.
    iovecs: usize,
    usecs_per_call: Summary,
    calls_per_sample: u64,
    samples: u32,
    /// Device requests during the timed calls (zero for cached overwrites).
    device_reads: u64,
    device_writes: u64,
    /// Buffer heads visited per call (write_begin plus commit).
    walked_heads: u64,
    metadata_bytes: usize,
    cached_bytes: usize,
}

/// The result row of runner `r` (path `path`) for `case`.
pub fn summarize(
    args: &Args,
    block_size: u32,
    case: Case,
    path: &str,
    r: &Runner<Case>,
) -> CaseResult {
    let (meta, data) = r.file.metadata_bytes();
    CaseResult {
        case: case.name,
        path: path.to_string(),
        order: args.common.order,
        block_size,
        position: 0,
        write_size: case.bytes_per_call(),
        iovecs: case.bufs(),
        usecs_per_call: summary(&r.samples),
        calls_per_sample: r.batch,
        samples: args.runs,
        device_reads: r.counts.reads,
        device_writes: r.counts.writes,
        walked_heads: r.counts.heads_per_call,
        metadata_bytes: meta,
        cached_bytes: data,
    }
}

fn find<'a>(results: &'a [CaseResult], case: &str, path: &str) -> Option<&'a CaseResult> {
    results.iter().find(|r| r.case == case && r.path == path)
}

/// The text report.
pub fn report(
    args: &Args,
    target: &Target,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> String {
    let c = &args.common;
    let mut out = format!(
        "bufwrite libmicro: {}, backend {}, block size {}, order {} ({} KiB folios), runs {}\n\
         cached overwrites at offset 0, usecs/call (median; lower is better)\n\n",
        describe(target),
        target.device().backend(),
        target.block_size(c),
        c.order,
        c.folio_size() / 1024,
        args.runs
    );
    out += &median_table(cases, paths, results);
    out += "\nmin / max usecs/call, calls per sample, buffer heads walked per call\n\n";
    out += &detail_table(cases, paths, results);
    out += "\nmetadata per cached GiB\n";
    for p in paths {
        if let Some(r) = results.iter().find(|r| &r.path == p) {
            out += &format!("  {p}: {}\n", memory_line(r.metadata_bytes, r.cached_bytes));
        }
    }
    out
}

/// The ratio columns of the seed's table, when their paths ran.
const RATIOS: &[(&str, &str, &str)] = &[
    ("legacy/iomap", "bh-legacy", "iomap"),
    ("tailskip/iomap", "bh-tailskip", "iomap"),
];

fn median_table(cases: &[Case], paths: &[String], results: &[CaseResult]) -> String {
    let has = |p: &str| paths.iter().any(|q| q == p);
    let ratios: Vec<_> = RATIOS.iter().filter(|(_, a, b)| has(a) && has(b)).collect();
    let mut header = vec!["case".to_string()];
    header.extend(paths.iter().cloned());
    header.extend(ratios.iter().map(|(name, _, _)| name.to_string()));
    let rows = cases
        .iter()
        .map(|case| {
            let median = |p: &str| find(results, case.name, p).map(|r| r.usecs_per_call.median);
            let mut row = vec![case.name.to_string()];
            row.extend(
                paths
                    .iter()
                    .map(|p| median(p).map_or("-".into(), |m| format!("{m:.4}"))),
            );
            row.extend(ratios.iter().map(|(_, a, b)| match (median(a), median(b)) {
                (Some(x), Some(y)) => format!("{:.2}x", x / y),
                _ => "-".into(),
            }));
            row
        })
        .collect::<Vec<_>>();
    table::render(&header, &rows)
}

fn detail_table(cases: &[Case], paths: &[String], results: &[CaseResult]) -> String {
    let header: Vec<String> = ["case", "path", "min", "max", "calls/sample", "heads/call"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rows = Vec::new();
    for case in cases {
        for p in paths {
            if let Some(r) = find(results, case.name, p) {
                rows.push(vec![
                    case.name.to_string(),
                    p.clone(),
                    format!("{:.4}", r.usecs_per_call.min),
                    format!("{:.4}", r.usecs_per_call.max),
                    r.calls_per_sample.to_string(),
                    r.walked_heads.to_string(),
                ]);
            }
        }
    }
    table::render(&header, &rows)
}

fn memory_line(meta: usize, data: usize) -> String {
    if data == 0 {
        return "nothing cached".into();
    }
    let per_gib = meta as f64 * f64::from(1u32 << 30) / data as f64;
    format!("{per_gib:.0} bytes ({meta} bytes of metadata for {data} bytes cached)")
}

/// Writes the JSON document to `path`.
pub fn write_json(
    path: &std::path::Path,
    args: &Args,
    target: &Target,
    cases: &[Case],
    paths: &[String],
    results: &[CaseResult],
) -> anyhow::Result<()> {
    let c = &args.common;
    let dev = target.device();
    let params = serde_json::json!({
        "command": "libmicro",
        "target": describe(target),
        "device": dev.describe(),
        "file": target.file(),
        "backend": dev.backend(),
        "block_size": target.block_size(c),
        "order": c.order,
        "runs": args.runs,
        "batch": args.batch,
        "cases": cases.iter().map(|c| c.name).collect::<Vec<_>>(),
        "paths": paths,
    });
    // CaseResult carries crate::report::RESULT_FIELDS first, then its extras.
    crate::report::write_json(path, params, results)
}

/// What the header and the JSON name as the target.
fn describe(target: &Target) -> String {
    match target {
        Target::Flat { opened, .. } => format!("device {}", opened.device.describe()),
        Target::Ext4 { image, file, .. } => format!(
            "ext4 image {}{}, file {file}",
            image.path.display(),
            if image.is_temporary() {
                " (temporary: mkfs.ext4, file written by debugfs)"
            } else {
                ""
            }
        ),
    }
}
