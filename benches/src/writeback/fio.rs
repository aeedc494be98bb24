//! fio beside our figures: finding it (it is optional), the job that does
//! the same I/O as a configuration, running it and reading its write
//! bandwidth from its JSON output.

use super::plan::Config;
use super::Args;
use anyhow::{bail, Context, Result};
use bufwrite_engine::device::Backend;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The fio program to run, or `None`: `--no-fio`, or none on PATH (one line
/// on stderr says so). A `--fio` that is not an executable file is an error,
/// before anything is written.
pub fn find(args: &Args) -> Result<Option<PathBuf>> {
    if args.no_fio {
        return Ok(None);
    }
    if let Some(p) = &args.fio {
        if !is_executable(p) {
            bail!("--fio {}: not an executable file", p.display());
        }
        return Ok(Some(p.clone()));
    }
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("fio"))
        .find(|p| is_executable(p));
    if found.is_none() {
        eprintln!(
            "note: fio was not found on PATH: fio_mb_per_s is null (install fio to run \
             the same I/O beside ours)"
        );
    }
    Ok(found)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The arguments of the fio job doing the I/O of set-up `c` on `target`:
/// `bytes` in requests of `io_size`, O_DIRECT, one fsync at the end; for
/// the random layout fio's own random pattern of distinct blocks over the
/// first `region` bytes (ours spread over the same region); the file or
/// buffers registered with the ring when `c` registers them.
pub fn job_args(
    target: &Path,
    c: &Config,
    io_size: u64,
    layout: &str,
    bytes: u64,
    region: u64,
) -> Vec<String> {
    let mut a = vec![
        "--name=wb".to_string(),
        format!("--filename={}", target.display()),
    ];
    if layout == "seq" {
        a.push("--rw=write".into());
        a.push(format!("--size={bytes}"));
    } else {
        a.push("--rw=randwrite".into());
        a.push(format!("--size={}", region / io_size * io_size));
        a.push(format!("--io_size={bytes}"));
        a.push("--randrepeat=0".into());
    }
    a.push(format!("--bs={io_size}"));
    match c.backend {
        Backend::Uring => {
            a.push("--ioengine=io_uring".into());
            a.push(format!("--iodepth={}", c.qd));
            // The registration variants, as fio's io_uring engine names them.
            if c.registered_file {
                a.push("--registerfiles=1".into());
            }
            if c.registered_buffers {
                a.push("--fixedbufs=1".into());
            }
        }
        Backend::Sync => a.push("--ioengine=psync".into()),
    }
    a.push("--direct=1".into());
    a.push("--end_fsync=1".into());
    a
}

/// The job as a command line, for the report.
pub fn command(job: &[String]) -> String {
    format!("fio {}", job.join(" "))
}

/// Runs `program` with `job` (JSON output) and returns its write MB/s.
pub fn run(program: &Path, job: &[String]) -> Result<f64> {
    let out = crate::setup::run_helper(
        std::process::Command::new(program)
            .args(job)
            .arg("--output-format=json"),
    )
    .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    write_mb_per_s(&String::from_utf8_lossy(&out.stdout))
}

/// The write bandwidth (MB/s, 10^6 bytes) of fio's JSON output `text`:
/// the first job's `write.bw_bytes`, or its `write.bw` (KiB/s) where an
/// older fio has no `bw_bytes`. fio may print notes before the JSON.
pub fn write_mb_per_s(text: &str) -> Result<f64> {
    let start = text
        .find('{')
        .context("fio printed no JSON (--output-format=json)")?;
    let v: serde_json::Value =
        serde_json::from_str(&text[start..]).context("fio's JSON output does not parse")?;
    let write = &v["jobs"][0]["write"];
    let bytes_per_s = match (write["bw_bytes"].as_f64(), write["bw"].as_f64()) {
        (Some(b), _) => b,
        (None, Some(kib)) => kib * 1024.0,
        (None, None) => bail!("fio's JSON has no jobs[0].write.bw_bytes or .bw"),
    };
    Ok(bytes_per_s / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bandwidth_is_read_from_bw_bytes_or_bw() {
        let j = r#"note: something
{"fio version": "fio-3.33", "jobs": [{"jobname": "wb",
  "read": {"bw_bytes": 0, "bw": 0},
  "write": {"io_bytes": 8388608, "bw_bytes": 54471480, "bw": 53194}}]}"#;
        assert!((write_mb_per_s(j).unwrap() - 54.47148).abs() < 1e-9);
        let old = r#"{"jobs": [{"write": {"bw": 1000}}]}"#;
        assert!((write_mb_per_s(old).unwrap() - 1.024).abs() < 1e-9);
        assert!(write_mb_per_s("fio: no JSON here").is_err());
        assert!(write_mb_per_s(r#"{"jobs": []}"#).is_err());
    }

    #[test]
    fn the_job_does_our_io() {
        let c = Config {
            backend: Backend::Uring,
            qd: 32,
            registered_file: false,
            registered_buffers: false,
        };
        let t = Path::new("/x/img");
        let seq = command(&job_args(t, &c, 4096, "seq", 1 << 20, 1 << 30));
        assert_eq!(
            seq,
            "fio --name=wb --filename=/x/img --rw=write --size=1048576 --bs=4096 \
             --ioengine=io_uring --iodepth=32 --direct=1 --end_fsync=1"
        );
        let sync = Config {
            backend: Backend::Sync,
            qd: 1,
            ..c
        };
        let random = command(&job_args(t, &sync, 4096, "random", 1 << 20, 10_000_000));
        assert!(
            random.contains("--rw=randwrite --size=9998336 --io_size=1048576"),
            "{random}"
        );
        assert!(random.contains("--ioengine=psync"), "{random}");
        let reg = Config {
            registered_file: true,
            registered_buffers: true,
            ..c
        };
        let reg = command(&job_args(t, &reg, 4096, "seq", 1 << 20, 1 << 30));
        assert!(reg.contains("--registerfiles=1 --fixedbufs=1"), "{reg}");
    }
}
