//! `bufwrite fio`: the real-program benchmark. The same fio binary runs
//! the same jobs (psync, one job each) on the kernel's ext4 (a file in
//! `--kernel-dir`) and, through `bufwrite run` (this executable, so the
//! library is found as a user's run finds it), on each bufwrite write
//! path, with a fresh ext4 image in the same directory. The jobs:
//!
//! - `rand1k`, `rand4k`: 1 KiB / 4 KiB random overwrites of a cached file
//!   of `--size`, time-based (`--runtime`);
//! - `seq1m`: a sequential write of a new file of `--size` in 1 MiB
//!   requests and one fsync at the end (`end_fsync=1`, inside fio's
//!   timing): one pass, not time-based, since a time-based pass would wrap
//!   around and overwrite cached data instead (`--runtime` only caps it).
//!
//! "Cached": fio lays the overwrite jobs' file out at full size before the
//! job (`overwrite=1`) and a ramp (`ramp_time`, untimed) of the job's own
//! writes brings every page into the cache. `pre_read=1` does not do it
//! for bufwrite: fio opens files lazily, so pre_read opens the file, reads
//! it and closes it again, and the library lets go of the mount (and its
//! cache) whenever the process holds no bufwrite file; the timed job then
//! reopens a cold mount (checked with `--stats`: a 1 KiB run read the file
//! from the image twice). The ramp runs on the job's open file, in the
//! same process, for both targets; `invalidate=0` keeps fio from dropping
//! the kernel's cache when it opens the file. The ramp must last one pass
//! of fio's random map over the file (`--size / bs` writes; a 64M file at
//! 1 KiB is 65536 writes), hence `--ramp` (default 2s).
//!
//! All jobs run with `thread=1`: one process holds the one mount (a forked
//! fio job would get a private mount with no flusher thread), and the
//! kernel's runs get the same command line. Targets alternate within each
//! run (rotating which goes first), since the disk is noisy: the figures
//! are side by side, medians over `--runs`. Between runs the file or image
//! is deleted and the directory's filesystem synced, untimed.

use crate::image::find_tool;
use crate::setup::{remove_on_signal, run_helper, warn};
use crate::timing::{summary, Summary};
use crate::units::{human, parse_size, Units};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mount directory the bufwrite runs use (`bufwrite run`'s default).
const MOUNT: &str = "/bufwrite";

/// How to get fio, for the error when it is missing.
const INSTALL_HINT: &str =
    "install it (`apt-get install fio`, or your distribution's fio package) or give --fio PATH";

/// Arguments of `bufwrite fio`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write paths run through `bufwrite run` (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Jobs (comma-separated): rand1k, rand4k, seq1m.
    #[arg(long, value_delimiter = ',', default_value = "rand1k,rand4k,seq1m")]
    jobs: Vec<String>,
    /// The directory for the kernel's file and the bufwrite images (a
    /// temporary directory is made in it). Default: $TMPDIR, else /var/tmp
    /// (often on disk where /tmp is tmpfs). Its filesystem type is printed;
    /// a warning says when it is not ext4.
    #[arg(long, value_name = "DIR")]
    kernel_dir: Option<PathBuf>,
    /// Seconds each time-based job is measured (after its ramp).
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    runtime: u64,
    /// Seconds of untimed writes before the overwrite jobs' timing starts:
    /// they bring the file into the cache (see the command's doc).
    #[arg(long, value_name = "SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    ramp: u64,
    /// The file size of every job (K/M/G suffixes, at least 1M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    size: u64,
    /// Runs; every target runs every job once per run, alternating, and
    /// the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// The fio program. Default: `fio` on PATH.
    #[arg(long, value_name = "PATH")]
    fio: Option<PathBuf>,
}

/// One fio job of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// 1 KiB random overwrites of a cached file.
    Rand1k,
    /// 4 KiB random overwrites of a cached file.
    Rand4k,
    /// A new file written in 1 MiB requests, fsync'ed at the end.
    Seq1m,
}

impl Job {
    const ALL: [Job; 3] = [Job::Rand1k, Job::Rand4k, Job::Seq1m];

    fn name(self) -> &'static str {
        match self {
            Job::Rand1k => "rand1k",
            Job::Rand4k => "rand4k",
            Job::Seq1m => "seq1m",
        }
    }

    fn parse(s: &str) -> Result<Job> {
        Job::ALL
            .into_iter()
            .find(|j| j.name() == s)
            .with_context(|| {
                format!(
                    "--jobs: unknown job {s:?} (valid jobs: {})",
                    Job::ALL.map(Job::name).join(", ")
                )
            })
    }

    /// fio's arguments for this job on `file` (without the output format).
    fn fio_args(self, file: &Path, a: &Args) -> Vec<String> {
        let mut v = vec![
            format!("--name={}", self.name()),
            format!("--filename={}", file.display()),
            format!("--size={}", a.size),
            "--ioengine=psync".into(),
            "--thread=1".into(),
            // Blocks are allocated by the writes (delalloc on the kernel,
            // at writeback on bufwrite), not preallocated.
            "--fallocate=none".into(),
        ];
        match self {
            Job::Rand1k | Job::Rand4k => {
                let bs = if self == Job::Rand1k { "1k" } else { "4k" };
                v.extend([
                    "--rw=randwrite".to_string(),
                    format!("--bs={bs}"),
                    "--overwrite=1".into(),
                    "--invalidate=0".into(),
                    format!("--ramp_time={}", a.ramp),
                    "--time_based=1".into(),
                    format!("--runtime={}", a.runtime),
                ]);
            }
            Job::Seq1m => v.extend([
                "--rw=write".to_string(),
                "--bs=1M".into(),
                "--end_fsync=1".into(),
                format!("--runtime={}", a.runtime),
            ]),
        }
        v
    }
}

/// Where a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The kernel's filesystem, in the work directory.
    Kernel,
    /// A bufwrite write path, through `bufwrite run`.
    Bufwrite(String),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Kernel => "kernel".into(),
            Target::Bufwrite(p) => format!("bufwrite-{p}"),
        }
    }
}

/// What one fio run reported for the writes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Write bandwidth, MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Write operations per second.
    pub iops: f64,
    /// Mean completion latency of a write, usecs (psync: the pwrite call).
    pub usecs_per_op: f64,
    /// Bytes written in the timed part.
    pub io_bytes: u64,
    /// The timed part's length, ms.
    pub runtime_ms: u64,
}

/// Reads [`Sample`] from fio's `--output-format=json` output (fio may
/// print notes before the JSON); a job that reports an error is one.
pub fn parse_output(text: &str) -> Result<Sample> {
    let start = text
        .find('{')
        .context("fio printed no JSON (--output-format=json)")?;
    let v: Value =
        serde_json::from_str(&text[start..]).context("fio's JSON output does not parse")?;
    let job = &v["jobs"][0];
    if job.is_null() {
        bail!("fio's JSON has no jobs");
    }
    match job["error"].as_i64() {
        Some(0) | None => {}
        Some(e) => bail!("fio's job reports error {e}"),
    }
    let w = &job["write"];
    let num = |field: &Value, name: &str| {
        field
            .as_f64()
            .with_context(|| format!("fio's JSON has no jobs[0].write.{name}"))
    };
    let bytes_per_s = match (w["bw_bytes"].as_f64(), w["bw"].as_f64()) {
        (Some(b), _) => b,
        (None, Some(kib)) => kib * 1024.0,
        (None, None) => bail!("fio's JSON has no jobs[0].write.bw_bytes or .bw"),
    };
    let clat_ns = match (w["clat_ns"]["mean"].as_f64(), w["clat"]["mean"].as_f64()) {
        (Some(ns), _) => ns,
        // Older fio: usecs.
        (None, Some(us)) => us * 1000.0,
        (None, None) => bail!("fio's JSON has no jobs[0].write.clat_ns.mean"),
    };
    let io_bytes = num(&w["io_bytes"], "io_bytes")? as u64;
    if io_bytes == 0 {
        bail!("fio wrote nothing in the timed part (jobs[0].write.io_bytes is 0)");
    }
    Ok(Sample {
        mb_per_s: bytes_per_s / 1e6,
        iops: num(&w["iops"], "iops")?,
        usecs_per_op: clat_ns / 1000.0,
        io_bytes,
        runtime_ms: num(&w["runtime"], "runtime").map_or(0, |ms| ms as u64),
    })
}

/// One line of the results: a job on a target, over the runs.
#[derive(Debug, Clone, Serialize)]
struct Row {
    /// The job's name.
    job: String,
    /// `kernel` or `bufwrite-PATH`.
    target: String,
    /// The bufwrite write path; null for the kernel.
    path: Option<String>,
    /// MB/s over the runs.
    mb_per_s: Summary,
    /// Mean usecs per write over the runs.
    usecs_per_op: Summary,
    /// Writes per second over the runs.
    iops: Summary,
    /// Every run's figures.
    runs: Vec<Sample>,
}

/// Runs the benchmark: checks everything, then every job on every target
/// `--runs` times, then prints the table (and writes `--json`).
pub fn run(args: Args) -> Result<()> {
    if args.size < 1 << 20 {
        bail!("--size {}: give at least 1M", human(args.size, Units::Flag));
    }
    let mut jobs = Vec::new();
    for j in &args.jobs {
        let job = Job::parse(j)?;
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    let paths = crate::paths::select_paths(&args.paths)?;
    crate::report::check_json_path(args.json.as_deref(), &[])?;
    let base = match &args.kernel_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("TMPDIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
    };
    if !base.is_dir() {
        bail!("--kernel-dir {}: not a directory", base.display());
    }
    let fio = find_fio(args.fio.as_deref())?;
    let version = fio_version(&fio)?;
    let mkfs = find_tool("mkfs.ext4")?;
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let work = tempfile::Builder::new()
        .prefix("bufwrite-fio-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a temporary directory in {}", base.display()))?;
    let _guard = remove_on_signal(work.path())?;
    let dir = work.path().to_path_buf();
    // fio splits --filename at colons.
    if dir.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!(
            "--kernel-dir {}: fio cannot take a file name with a colon; choose another directory",
            base.display()
        );
    }
    let fs = fs_type(&dir);
    eprintln!("bufwrite fio: kernel target in {} ({fs})", dir.display());
    if fs != "ext4" {
        warn(&format!(
            "{} is on {fs}, not ext4: the kernel's figures are not ext4's (give --kernel-dir \
             a directory on ext4)",
            base.display()
        ));
    }

    let mut targets = vec![Target::Kernel];
    targets.extend(paths.iter().cloned().map(Target::Bufwrite));
    let image_size = (args.size + args.size / 4 + (64 << 20)).max(128 << 20);
    let total = args.runs as usize * jobs.len() * targets.len();
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); targets.len()]; jobs.len()];
    let mut done = 0;
    for run in 0..args.runs as usize {
        for (ji, &job) in jobs.iter().enumerate() {
            for k in 0..targets.len() {
                let ti = (run + k) % targets.len();
                let target = &targets[ti];
                done += 1;
                eprintln!(
                    "bufwrite fio: [{done}/{total}] run {}/{}: {} on {}",
                    run + 1,
                    args.runs,
                    job.name(),
                    target.name()
                );
                let one = One {
                    fio: &fio,
                    exe: &exe,
                    mkfs: &mkfs,
                    dir: &dir,
                    image_size,
                };
                let s = one
                    .measure(job, target, &args)
                    .with_context(|| format!("{} on {}", job.name(), target.name()))?;
                samples[ji][ti].push(s);
            }
        }
    }

    let mut rows = Vec::new();
    for (ji, job) in jobs.iter().enumerate() {
        for (ti, target) in targets.iter().enumerate() {
            let runs = samples[ji][ti].clone();
            let of = |f: fn(&Sample) -> f64| summary(&runs.iter().map(f).collect::<Vec<_>>());
            rows.push(Row {
                job: job.name().into(),
                target: target.name(),
                path: match target {
                    Target::Kernel => None,
                    Target::Bufwrite(p) => Some(p.clone()),
                },
                mb_per_s: of(|s| s.mb_per_s),
                usecs_per_op: of(|s| s.usecs_per_op),
                iops: of(|s| s.iops),
                runs,
            });
        }
    }

    println!(
        "bufwrite fio: {version}, ioengine=psync, one job, --size {}, --runtime {}s \
         (ramp {}s), median of {} run{}; kernel: {fs} in {}",
        human(args.size, Units::Flag),
        args.runtime,
        args.ramp,
        args.runs,
        if args.runs == 1 { "" } else { "s" },
        base.display()
    );
    print!("{}", render(&jobs, &targets, &rows));
    println!("MB/s: fio's write bandwidth (10^6 bytes/s; seq1m includes its end fsync);");
    println!("us/op: fio's mean completion latency of one write (the pwrite call).");
    println!("fio jobs (FILE: the kernel's file, or /bufwrite/<job>.dat under `bufwrite run`):");
    for &job in &jobs {
        println!(
            "  {}: fio {}",
            job.name(),
            job.fio_args(Path::new("FILE"), &args).join(" ")
        );
    }

    if let Some(path) = &args.json {
        let params = json!({
            "command": "fio",
            "fio_version": version,
            "size": args.size,
            "runtime_s": args.runtime,
            "ramp_s": args.ramp,
            "runs": args.runs,
            "paths": paths,
            "jobs": jobs.iter().map(|&j| json!({
                "name": j.name(),
                "fio": format!("fio {}", j.fio_args(Path::new("FILE"), &args).join(" ")),
            })).collect::<Vec<_>>(),
            "kernel_dir": base,
            "kernel_fs": fs,
        });
        crate::report::write_json(path, params, &rows)?;
    }
    drop(work);
    Ok(())
}

/// The table: a row per target, MB/s and us/op per job.
fn render(jobs: &[Job], targets: &[Target], rows: &[Row]) -> String {
    let mut header = vec!["target".to_string()];
    for j in jobs {
        header.push(format!("{} MB/s", j.name()));
        header.push(format!("{} us/op", j.name()));
    }
    let body: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let mut line = vec![t.name()];
            for j in jobs {
                let r = rows
                    .iter()
                    .find(|r| r.job == j.name() && r.target == t.name());
                match r {
                    Some(r) => {
                        line.push(format!("{:.1}", r.mb_per_s.median));
                        line.push(format!("{:.2}", r.usecs_per_op.median));
                    }
                    None => line.extend(["-".to_string(), "-".to_string()]),
                }
            }
            line
        })
        .collect();
    crate::table::render(&header, &body)
}

/// What every measurement needs.
struct One<'a> {
    fio: &'a Path,
    exe: &'a Path,
    mkfs: &'a Path,
    dir: &'a Path,
    image_size: u64,
}

impl One<'_> {
    /// Runs `job` once on `target` and reads its figures; cleans up after.
    fn measure(&self, job: Job, target: &Target, args: &Args) -> Result<Sample> {
        let output_format = "--output-format=json".to_string();
        let (mut cmd, leftover) = match target {
            Target::Kernel => {
                let file = self.dir.join(format!("{}.dat", job.name()));
                remove_if_there(&file)?;
                let mut c = Command::new(self.fio);
                c.args(job.fio_args(&file, args)).arg(&output_format);
                (c, file)
            }
            Target::Bufwrite(path) => {
                let image = self.dir.join("image.ext4");
                self.mkfs(&image)?;
                let file = Path::new(MOUNT).join(format!("{}.dat", job.name()));
                let mut c = Command::new(self.exe);
                c.arg("run")
                    .arg("--image")
                    .arg(&image)
                    .args(["--mount-at", MOUNT, "--path", path, "--"])
                    .arg(self.fio)
                    .args(job.fio_args(&file, args))
                    .arg(&output_format);
                (c, image)
            }
        };
        cmd.current_dir(self.dir);
        let out = run_helper(&mut cmd)
            .with_context(|| format!("cannot run {}", cmd.get_program().to_string_lossy()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        remove_if_there(&leftover)?;
        sync_dir(self.dir);
        if !out.status.success() {
            bail!(
                "fio failed ({}): {}{}",
                out.status,
                stderr.trim(),
                if stderr.trim().is_empty() {
                    stdout.trim()
                } else {
                    ""
                }
            );
        }
        // `bufwrite run`'s warnings (an image e2fsck finds unclean, ...)
        // and fio's notes are passed on.
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("  {}: {line}", target.name());
        }
        parse_output(&stdout)
    }

    /// A fresh ext4 image (4 KiB blocks) at `image`.
    fn mkfs(&self, image: &Path) -> Result<()> {
        remove_if_there(image)?;
        let out = run_helper(
            Command::new(self.mkfs)
                .args(["-q", "-F", "-b", "4096"])
                .arg(image)
                .arg(format!("{}k", self.image_size.div_ceil(1 << 10))),
        )
        .with_context(|| format!("cannot run {}", self.mkfs.display()))?;
        if !out.status.success() {
            bail!(
                "mkfs.ext4 failed on {} ({}): {}",
                image.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn remove_if_there(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Syncs the filesystem holding `dir` (untimed, between runs), so that one
/// run's writeback does not land in the next run's timing.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        // Best effort: a failed sync only makes the next run noisier.
        let _ = rustix::fs::syncfs(&f);
    }
}

/// The fio program: `--fio`, else `fio` on PATH; a clear error otherwise.
fn find_fio(flag: Option<&Path>) -> Result<PathBuf> {
    let exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = flag {
        if !exec(p) {
            bail!(
                "--fio {}: not an executable file; {INSTALL_HINT}",
                p.display()
            );
        }
        return std::fs::canonicalize(p).with_context(|| format!("--fio {}", p.display()));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("fio"))
        .find(|p| exec(p))
        .with_context(|| format!("fio was not found on PATH: {INSTALL_HINT}"))
}

/// `fio --version` (e.g. `fio-3.33`).
fn fio_version(fio: &Path) -> Result<String> {
    let out = run_helper(Command::new(fio).arg("--version"))
        .with_context(|| format!("cannot run {}", fio.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed ({}): {}",
            fio.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The filesystem type of `dir`: statfs's magic number, named; for the
/// ext2/3/4 magic (which the three share) the mount table's name.
fn fs_type(dir: &Path) -> String {
    let Ok(st) = rustix::fs::statfs(dir) else {
        return "unknown (statfs failed)".into();
    };
    // The magic is a 32-bit value in a kernel long.
    let magic = st.f_type as u64 & 0xffff_ffff;
    match magic {
        0xef53 => mount_fs_type(dir).unwrap_or_else(|| "ext2/3/4".into()),
        other => fs_name(other).map_or_else(|| format!("magic {other:#x}"), str::to_string),
    }
}

/// Names of the filesystems statfs reports most often (linux/magic.h).
fn fs_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x0102_1994 => "tmpfs",
        0x9123_683e => "btrfs",
        0x5846_5342 => "xfs",
        0x794c_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2fc1_2fc1 => "zfs",
        0xf2f5_2010 => "f2fs",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        _ => return None,
    })
}

/// The type the mount table gives the mount holding `dir` (the longest
/// mount point that is a prefix of its canonical path).
fn mount_fs_type(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?.replace("\\040", " ");
            let sep = f.iter().position(|&x| x == "-")?;
            Some((PathBuf::from(point), f.get(sep + 1)?.to_string()))
        })
        .filter(|(point, _)| dir.starts_with(point))
        .max_by_key(|(point, _)| point.as_os_str().len())
        .map(|(_, fs)| fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_gives_bandwidth_iops_and_latency() {
        let text = r#"note: a note first
{"fio version": "fio-3.33", "jobs": [{"jobname": "rand4k", "error": 0,
  "read": {"io_bytes": 0, "bw_bytes": 0},
  "write": {"io_bytes": 1048576, "bw_bytes": 2000000, "bw": 1953, "iops": 488.28,
            "runtime": 524, "clat_ns": {"mean": 1500.5}}}]}"#;
        let s = parse_output(text).unwrap();
        assert_eq!(
            s,
            Sample {
                mb_per_s: 2.0,
                iops: 488.28,
                usecs_per_op: 1.5005,
                io_bytes: 1048576,
                runtime_ms: 524
            }
        );
        assert!(parse_output("fio: no JSON").is_err());
        assert!(parse_output(r#"{"jobs": []}"#).is_err());
        let failed = r#"{"jobs": [{"error": 5, "write": {}}]}"#;
        assert!(parse_output(failed)
            .unwrap_err()
            .to_string()
            .contains("error 5"));
        let nothing = r#"{"jobs": [{"error": 0, "write": {"io_bytes": 0, "bw_bytes": 0,
            "iops": 0, "runtime": 0, "clat_ns": {"mean": 0}}}]}"#;
        assert!(parse_output(nothing).is_err());
    }

    #[test]
    fn jobs_parse_by_name() {
        assert_eq!(Job::parse("seq1m").unwrap(), Job::Seq1m);
        let e = Job::parse("rand8k").unwrap_err().to_string();
        assert!(e.contains("rand1k, rand4k, seq1m"), "{e}");
    }

    #[test]
    fn the_table_has_a_row_per_target_and_columns_per_job() {
        let s = summary(&[1.0]);
        let row = |job: &str, target: &str| Row {
            job: job.into(),
            target: target.into(),
            path: None,
            mb_per_s: s,
            usecs_per_op: s,
            iops: s,
            runs: Vec::new(),
        };
        let t = render(
            &[Job::Rand1k],
            &[Target::Kernel, Target::Bufwrite("iomap".into())],
            &[row("rand1k", "kernel")],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("rand1k MB/s") && lines[0].contains("rand1k us/op"));
        assert!(
            lines[1].starts_with("kernel") && lines[1].contains("1.00"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("bufwrite-iomap") && lines[2].ends_with('-'),
            "{t}"
        );
    }

    #[test]
    fn the_dir_of_this_test_has_a_filesystem_type() {
        let t = fs_type(Path::new("/"));
        assert!(!t.is_empty() && !t.contains("statfs failed"), "{t}");
    }
}
