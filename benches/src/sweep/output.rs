//! A sweep's outputs: CSV, JSON (the report schema), the SVG chart and the
//! text table.

use super::measure::Measured;
use super::{Args, Kind, Point};
use crate::plot::{self, Chart, Reference, Scale, Series};
use crate::report::Row;
use crate::table;
use crate::units::{human, Units};
use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

/// The CSV columns, one row per point and path.
pub const CSV_HEADER: &str = "case,path,order,block_size,position,write_size,x,\
median_usecs,min_usecs,max_usecs,device_reads,device_writes,walked_heads";

/// Writes sweep-KIND.{csv,json,svg} into `--out` and prints the table (or
/// the JSON with `--json`).
pub fn write_all(
    args: &Args,
    paths: &[String],
    points: &[Point],
    m: &Measured,
) -> anyhow::Result<()> {
    let base = args.out.join(format!("sweep-{}", args.kind.name()));
    let file = |ext: &str| base.with_extension(ext);
    write(&file("csv"), &csv(&m.rows))?;
    let params = params(args, paths, m);
    crate::report::write_json(&file("json"), params.clone(), &m.rows)?;
    write(
        &file("svg"),
        &plot::svg(&chart(args.kind, paths, points, m))?,
    )?;
    if args.json {
        let doc = crate::report::document(params, &m.rows)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", text(args, paths, points, m));
        println!("\nwrote {}.{{csv,json,svg}}", base.display());
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn x_of(r: &Row) -> f64 {
    r.extra
        .get("x")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN)
}

/// The rows as CSV (no field needs quoting: names and numbers only).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let u = &r.usecs_per_call;
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        // Infallible: writing to a String.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{},{},{}",
            r.case,
            r.path,
            r.order,
            r.block_size,
            opt(r.position),
            opt(r.write_size),
            x_of(r),
            u.median,
            u.min,
            u.max,
            r.device_reads,
            r.device_writes,
            r.walked_heads
        );
    }
    out
}

fn params(args: &Args, paths: &[String], m: &Measured) -> serde_json::Value {
    serde_json::json!({
        "command": "sweep",
        "sweep": args.kind.name(),
        "runs": args.runs,
        "batch": args.batch,
        "paths": paths,
        "write_size": (args.kind != Kind::Size).then(|| args.write_size.unwrap_or(super::DEFAULT_WRITE)),
        "device": m.device,
        "backend": m.backend,
        "memcpy_usecs_per_call": m.memcpy,
    })
}

/// Axis texts and scales of each sweep.
fn axes(kind: Kind, write_size: u64) -> (String, &'static str, Scale, Scale) {
    let size = human(write_size, Units::Spelled);
    let (title, x, xs, ys) = match kind {
        Kind::Order => (
            format!("Cached {size} overwrite at offset 0 vs folio order"),
            "folio order (folio = 4 KiB << order)",
            Scale::Linear,
            Scale::Linear,
        ),
        Kind::Position => (
            format!("Cached {size} overwrite across an uptodate 2 MiB folio"),
            "write position in the folio (KiB)",
            Scale::Linear,
            Scale::Linear,
        ),
        Kind::Blocksize => (
            format!("Cached {size} overwrite in a 2 MiB folio vs block size"),
            "block size (KiB)",
            Scale::Log2,
            Scale::Linear,
        ),
        Kind::Cold => (
            format!("Cold {size} write (partial-block read-in) across a 2 MiB folio"),
            "write position in the folio (KiB)",
            Scale::Linear,
            Scale::Linear,
        ),
        Kind::Size => (
            "Cached overwrite at the head of a 2 MiB folio vs write size".to_string(),
            "write size (bytes, log scale)",
            Scale::Log2,
            Scale::Log2,
        ),
    };
    (title, x, xs, ys)
}

fn chart(kind: Kind, paths: &[String], points: &[Point], m: &Measured) -> Chart {
    let write_size = points.first().map_or(1024, |p| p.write_size);
    let (title, x_label, x_scale, y_scale) = axes(kind, write_size);
    let y_label = match y_scale {
        Scale::Linear => "usecs/call (median)",
        Scale::Log2 => "usecs/call (median, log scale)",
    };
    let series = paths
        .iter()
        .map(|p| Series {
            label: p.clone(),
            points: m
                .rows
                .iter()
                .filter(|r| &r.path == p)
                .map(|r| (x_of(r), r.usecs_per_call.median))
                .collect(),
        })
        .collect();
    Chart {
        title,
        x_label: x_label.to_string(),
        y_label: y_label.to_string(),
        x_scale,
        y_scale,
        series,
        reference: m.memcpy.map(|s| Reference {
            label: format!("bare {} memcpy", human(write_size, Units::Spelled)),
            y: s.median,
        }),
        // Cold calls all cost about the same: their lines run along the top.
        legend_low: kind == Kind::Cold,
    }
}

/// The table printed on stdout: medians per point and path, then the
/// seed's ratio columns.
fn text(args: &Args, paths: &[String], points: &[Point], m: &Measured) -> String {
    let has = |p: &str| paths.iter().any(|q| q == p);
    let ratios: Vec<(&str, &str)> = [("bh-legacy", "legacy"), ("bh-tailskip", "tailskip")]
        .into_iter()
        .filter(|(p, _)| has(p) && has("iomap"))
        .collect();
    let mut header = vec![args.kind.name().to_string()];
    header.extend(paths.iter().cloned());
    header.extend(ratios.iter().map(|(_, n)| format!("{n}/iomap")));
    if args.kind == Kind::Cold {
        header.push("reads/call".into());
    }
    let rows: Vec<Vec<String>> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = |path: &str| {
                let j = paths.iter().position(|q| q == path)?;
                m.rows.get(i * paths.len() + j)
            };
            let med = |path: &str| at(path).map(|r| r.usecs_per_call.median);
            let mut row = vec![point_label(args.kind, p)];
            row.extend(
                paths
                    .iter()
                    .map(|q| med(q).map_or("-".into(), |v| format!("{v:.4}"))),
            );
            row.extend(ratios.iter().map(|(q, _)| match (med(q), med("iomap")) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => "-".into(),
            }));
            if args.kind == Kind::Cold {
                let reads: Vec<String> = paths
                    .iter()
                    .filter_map(|q| at(q))
                    .map(|r| format!("{:.1}", r.device_reads as f64 / f64::from(args.runs)))
                    .collect();
                row.push(reads.join("/"));
            }
            row
        })
        .collect();
    let mut out = format!(
        "bufwrite sweep {}: {}, runs {}; usecs/call (median; lower is better)\n\n",
        args.kind.name(),
        m.device,
        args.runs
    );
    out += &table::render(&header, &rows);
    if let Some(s) = m.memcpy {
        let size = points.first().map_or(1024, |p| p.write_size);
        out += &format!(
            "\nbare {} memcpy: {:.4} usecs/call (min {:.4}, max {:.4})\n",
            human(size, Units::Spelled),
            s.median,
            s.min,
            s.max
        );
    }
    out
}

fn point_label(kind: Kind, p: &Point) -> String {
    match kind {
        Kind::Order => p.order.to_string(),
        Kind::Blocksize => human(u64::from(p.block_size), Units::Spelled),
        Kind::Size => human(p.write_size, Units::Spelled),
        Kind::Position | Kind::Cold => format!("{} KiB", p.position as f64 / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::Summary;

    #[test]
    fn csv_has_a_line_per_row_under_the_header() {
        let mut extra = serde_json::Map::new();
        extra.insert("x".into(), 9.0.into());
        let row = Row {
            case: "order".into(),
            path: "iomap".into(),
            order: 9,
            block_size: 4096,
            position: Some(0),
            write_size: Some(1024),
            usecs_per_call: Summary {
                median: 0.25,
                min: 0.2,
                max: 0.5,
            },
            device_reads: 0,
            device_writes: 0,
            walked_heads: 0,
            extra,
        };
        let text = csv(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "order,iomap,9,4096,0,1024,9,0.2500,0.2000,0.5000,0,0,0"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {}
}
