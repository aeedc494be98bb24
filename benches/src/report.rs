//! The one JSON schema of every command's results (documented in the
//! README):
//!
//! ```text
//! {"machine": {"cpu": STR, "kernel": STR, "cores": N},
//!  "params":  {"command": STR, ...},           // the run's settings
//!  "results": [{"case": STR, "path": "iomap"|"bh-legacy"|"bh-tailskip"|"bh-seek",
//!               "order": N, "block_size": N, "position": N|null, "write_size": N|null,
//!               "usecs_per_call": {"median": X, "min": X, "max": X},
//!               "device_reads": N, "device_writes": N, "walked_heads": N,
//!               ...}]}                          // command-specific extras
//! ```
//!
//! Every result carries at least the fields of [`Row`]; a command may add
//! fields of its own after them, never rename or drop one.

use crate::timing::Summary;
use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The fields every result carries, in order.
#[cfg(test)]
pub const RESULT_FIELDS: &[&str] = &[
    "case",
    "path",
    "order",
    "block_size",
    "position",
    "write_size",
    "usecs_per_call",
    "device_reads",
    "device_writes",
    "walked_heads",
];

/// What machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`), or `unknown`.
    pub kernel: String,
    /// CPUs this process may use.
    pub cores: usize,
}

/// The machine this process runs on.
pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    Machine { cpu, kernel, cores }
}

/// One result: a case on one write path.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured (a libMicro case, a sweep point, an operation kind).
    pub case: String,
    /// The write path, as [`crate::paths::names`] names it.
    pub path: String,
    /// Folio order (0..=9).
    pub order: u8,
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// Byte offset of the write in the file; null when the calls had no
    /// single position (a replayed trace).
    pub position: Option<u64>,
    /// Bytes one call writes; null when the calls had no single size.
    pub write_size: Option<u64>,
    /// usecs per call over the samples.
    pub usecs_per_call: Summary,
    /// Device read requests during the timed calls (all of them, not per
    /// call).
    pub device_reads: u64,
    /// Device write requests during the timed calls.
    pub device_writes: u64,
    /// Buffer heads visited per call (write_begin plus commit; 0 on iomap).
    pub walked_heads: u64,
    /// Command-specific fields, written after the common ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The whole document of a run: this machine, `params`, `results`.
pub fn document<R: Serialize>(params: Value, results: &[R]) -> anyhow::Result<Value> {
    Ok(serde_json::json!({
        "machine": machine(),
        "params": params,
        "results": serde_json::to_value(results)?,
    }))
}

/// Writes [`document`] to `path`, pretty-printed.
pub fn write_json<R: Serialize>(path: &Path, params: Value, results: &[R]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&document(params, results)?)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the JSON results to {}", path.display()))
}

/// Checks, before a run measures anything, that its results can be written
/// to `path` (`--json PATH`; `None`, no `--json`, passes), so that a long
/// run is not lost to a typo at the end (see [`check_output_path`]), and
/// that `path` is none of the run's `targets` (its `--image` or `--device`),
/// which the results would overwrite.
pub fn check_json_path(path: Option<&Path>, targets: &[Option<&Path>]) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    check_output_path(path, "--json")?;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    if let Some(json) = id(path) {
        if let Some(t) = targets.iter().flatten().find(|t| id(t) == Some(json)) {
            anyhow::bail!(
                "--json {}: it is the run's target {}; give another file",
                path.display(),
                t.display()
            );
        }
    }
    Ok(())
}

/// Checks that `path`, given with the flag `flag`, can be written: not a
/// directory, in a directory that exists, and openable for writing. An
/// existing file is opened without truncating it (its contents are only
/// replaced once the results are there); a new one is created and removed
/// again. A block device is refused (results are never written over a
/// disk); anything else that exists (`/dev/stdout`, a FIFO) is left to
/// the final write.
pub fn check_output_path(path: &Path, flag: &str) -> anyhow::Result<()> {
    let shown = path.display();
    let open = |create: bool| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(create)
            .open(path)
            .with_context(|| format!("{flag} {shown}: cannot open it for writing"))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            anyhow::bail!("{flag} {shown}: it is a directory; give a file name")
        }
        Ok(m) if m.is_file() => open(false).map(drop),
        Ok(m) if m.file_type().is_block_device() => {
            anyhow::bail!("{flag} {shown}: it is a block device; give a file name")
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                anyhow::bail!(
                    "{flag} {shown}: the directory {} does not exist",
                    dir.display()
                );
            }
            open(true)?;
            std::fs::remove_file(path)
                .with_context(|| format!("{flag} {shown}: cannot remove the test file"))
        }
        Err(e) => Err(e).with_context(|| format!("{flag} {shown}: cannot look it up")),
    }
}

/// Checks a document against the schema: what the tests hold every
/// command's JSON to. The error names the first field that is wrong.
#[cfg(test)]
pub fn check(doc: &Value) -> Result<(), String> {
    let machine = &doc["machine"];
    if !(machine["cpu"].is_string() && machine["kernel"].is_string() && machine["cores"].is_u64()) {
        return Err(format!("bad machine: {machine}"));
    }
    if !doc["params"].is_object() {
        return Err("params is not an object".into());
    }
    let results = doc["results"].as_array().ok_or("results is not an array")?;
    for (i, r) in results.iter().enumerate() {
        let bad = |f: &str| Err(format!("result {i}: bad {f}: {r}"));
        let ok_path = r["path"]
            .as_str()
            .is_some_and(|p| crate::paths::names().any(|n| n == p));
        if !r["case"].is_string() {
            return bad("case");
        }
        if !ok_path {
            return bad("path");
        }
        for f in [
            "order",
            "block_size",
            "device_reads",
            "device_writes",
            "walked_heads",
        ] {
            if !r[f].is_u64() {
                return bad(f);
            }
        }
        for f in ["position", "write_size"] {
            if !(r[f].is_u64() || r[f].is_null()) {
                return bad(f);
            }
        }
        let u = &r["usecs_per_call"];
        if !["median", "min", "max"].iter().all(|k| u[k].is_number()) {
            return bad("usecs_per_call");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            case: "write_u1k".into(),
            path: "iomap".into(),
            order: 9,
            block_size: 4096,
            position: Some(0),
            write_size: Some(1024),
            usecs_per_call: Summary {
                median: 0.2,
                min: 0.1,
                max: 0.3,
            },
            device_reads: 0,
            device_writes: 0,
            walked_heads: 0,
            extra: Map::new(),
        }
    }

    #[test]
    fn rows_serialize_the_common_fields_in_order_then_extras() {
        let mut r = row();
        r.extra.insert("calls".into(), 7.into());
        let text = serde_json::to_string(&r).unwrap();
        let mut at = 0;
        for f in RESULT_FIELDS.iter().chain(&["calls"]) {
            let found = text[at..]
                .find(&format!("\"{f}\""))
                .unwrap_or_else(|| panic!("{f}"));
            at += found;
        }
        let doc = document(serde_json::json!({"command": "test"}), &[r]).unwrap();
        check(&doc).unwrap();
    }

    #[test]
    fn output_paths_are_checked_without_leaving_anything_behind() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("r.json");
        check_json_path(Some(&new), &[]).unwrap();
        assert!(!new.exists(), "the test file was removed");
        std::fs::write(&new, "old").unwrap();
        check_json_path(Some(&new), &[None]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&new).unwrap(),
            "old",
            "not truncated"
        );
        check_json_path(None, &[]).unwrap();
        let same = dir.path().join(".").join("r.json");
        let e = check_json_path(Some(&new), &[None, Some(&same)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("the run's target"), "{e}");
        let e = check_json_path(Some(dir.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_json_path(Some(&dir.path().join("no/r.json")), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist") && e.contains("--json"), "{e}");
        check_output_path(Path::new("/dev/null"), "--json").unwrap();
    }

    #[test]
    fn check_names_the_bad_field() {
        let mut r = row();
        r.path = "ext2".into();
        let doc = document(serde_json::json!({}), &[r]).unwrap();
        assert!(check(&doc).unwrap_err().contains("bad path"));
    }
}
