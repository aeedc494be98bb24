//! fio, unmodified, on every write path with the library preloaded: a
//! random-write job of mixed sizes (1 KiB .. 32 KiB, so sub-page and
//! multi-page writes) with `verify=crc32c` reads back what it wrote
//! (`do_verify`, from the cache), then a second fio process (a new mount,
//! so from the image) checks it all again (`verify_only`). Laid out with
//! `fallocate=none` (blocks allocated at writeback) and with
//! `fallocate=native` / `posix` (the writes land in unwritten extents).
//! Afterwards e2fsprogs judge the image: `e2fsck -fn` is clean and
//! `debugfs dump` of the file equals a read of it through the library.
//!
//! fio is required: the test fails, saying how to install it, when it is
//! missing. Most jobs use `thread=1` (one process, one mount); the forked
//! cases (fio's default: a process per job) are tested on their own.

mod common;
use bufwrite_testkit::e2fs;
use common::so;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MOUNT: &str = "/bufwrite";
const FILE: &str = "/bufwrite/fio.dat";
const PATHS: [&str; 4] = ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"];
/// The job's file size: small, so 16 runs stay fast.
const SIZE: u64 = 4 << 20;

/// fio on PATH, or a panic that says how to get it.
fn fio() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("fio"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "fio is not installed, and these tests need it: `.ci/run` installs it \
                 (or `apt-get install fio`)"
            )
        })
}

/// A temp dir (fio's working directory: its verify state files land
/// there) holding a fresh 64 MiB image.
struct Env {
    dir: tempfile::TempDir,
    img: PathBuf,
}

impl Env {
    fn new() -> Env {
        let (dir, img) = common::image_off_host(MOUNT);
        Env { dir, img }
    }

    fn stats(&self) -> PathBuf {
        self.dir.path().join("stats.jsonl")
    }

    /// `program ARGS` with the library preloaded on `path`, in the temp dir.
    fn preloaded(&self, program: &Path, path: &str, args: &[String]) -> Output {
        Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .env("LD_PRELOAD", so())
            .env("BUFWRITE_IMAGE", &self.img)
            .env("BUFWRITE_MOUNT_AT", MOUNT)
            .env("BUFWRITE_PATH", path)
            .env("BUFWRITE_STATS", self.stats())
            .output()
            .unwrap()
    }

    /// fio with `args` (JSON output) on `path`: asserts it succeeded and
    /// that every job had no error and read back (verified) `SIZE` bytes;
    /// returns the jobs.
    fn fio_ok(&self, path: &str, args: &[String]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.push("--output-format=json".into());
        let out = self.preloaded(&fio(), path, &all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "fio {args:?} on {path}: {}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let json = &stdout[stdout.find('{').expect("fio printed JSON")..];
        let doc: Value = serde_json::from_str(json).unwrap();
        let jobs = doc["jobs"].as_array().unwrap().clone();
        assert!(!jobs.is_empty(), "{doc}");
        for j in &jobs {
            assert_eq!(j["error"], 0, "fio job failed on {path}: {j}\n{stderr}");
            assert_eq!(
                j["read"]["io_bytes"].as_u64(),
                Some(SIZE),
                "the verify read everything back on {path}: {stderr}"
            );
        }
        jobs
    }

    /// The file as the library reads it (`cat`, preloaded).
    fn read_through_library(&self, file: &str) -> Vec<u8> {
        let out = self.preloaded(Path::new("cat"), "iomap", &[file.to_string()]);
        assert!(
            out.status.success(),
            "cat {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The image is fsck-clean and `debugfs dump` of `file` is what the
    /// library reads, `SIZE` bytes of it.
    fn check_image(&self, file: &str) {
        e2fs::fsck_ok(&self.img);
        let inside = file.strip_prefix(MOUNT).unwrap();
        let dumped = e2fs::dump(&self.img, inside);
        assert_eq!(dumped.len() as u64, SIZE, "{file}: size in the image");
        assert!(
            dumped == self.read_through_library(file),
            "{file}: debugfs dump differs from a read through the library"
        );
        assert!(!Path::new(MOUNT).exists());
    }

    /// The per-process statistics lines so far, as one string.
    fn stats_text(&self) -> String {
        std::fs::read_to_string(self.stats()).unwrap_or_default()
    }
}

/// The write job: random writes of 1 KiB .. 32 KiB over `SIZE` bytes of
/// `FILE`, each block carrying a crc32c header fio checks on read.
fn job(fallocate: &str) -> Vec<String> {
    [
        "--name=w".to_string(),
        format!("--filename={FILE}"),
        "--rw=randwrite".into(),
        "--bsrange=1k-32k".into(),
        format!("--size={SIZE}"),
        "--ioengine=psync".into(),
        "--verify=crc32c".into(),
        format!("--fallocate={fallocate}"),
    ]
    .to_vec()
}

/// `job` plus extra options.
fn with(mut job: Vec<String>, extra: &[&str]) -> Vec<String> {
    job.extend(extra.iter().map(|s| s.to_string()));
    job
}

/// Write and verify, verify again from a fresh process, then judge the
/// image; `fallocate` is fio's option, `call` the library call it must
/// have gone through (None: no preallocation).
fn write_then_verify(path: &str, fallocate: &str, call: Option<&str>) {
    let env = Env::new();
    let j = job(fallocate);
    let jobs = env.fio_ok(path, &with(j.clone(), &["--thread=1", "--do_verify=1"]));
    assert_eq!(jobs[0]["write"]["io_bytes"].as_u64(), Some(SIZE));
    env.fio_ok(path, &with(j, &["--thread=1", "--verify_only=1"]));
    let stats = env.stats_text();
    assert!(
        stats.contains("\"not_served\":[]"),
        "every call on the mount was served: {stats}"
    );
    if let Some(call) = call {
        assert!(
            stats.contains(&format!("\"{call}\":")),
            "fio's preallocation went through {call}: {stats}"
        );
    }
    env.check_image(FILE);
}

#[test]
fn fio_verifies_on_every_path_without_fallocate() {
    for path in PATHS {
        write_then_verify(path, "none", None);
    }
}

#[test]
fn fio_verifies_on_every_path_with_native_fallocate() {
    for path in PATHS {
        write_then_verify(path, "native", Some("fallocate"));
    }
}

#[test]
fn fio_verifies_with_posix_fallocate() {
    write_then_verify("bh-tailskip", "posix", Some("posix_fallocate"));
}

/// The verify is a real check: a block changed behind fio's back (through
/// the library) makes the verify-only run fail.
#[test]
fn fio_verify_catches_a_changed_block() {
    let env = Env::new();
    let j = job("none");
    env.fio_ok("iomap", &with(j.clone(), &["--thread=1", "--do_verify=1"]));
    let junk = env.dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let dd = env.preloaded(
        Path::new("dd"),
        "iomap",
        &[
            format!("if={}", junk.display()),
            format!("of={FILE}"),
            "bs=4096".into(),
            "seek=256".into(),
            "conv=notrunc".into(),
            "status=none".into(),
        ],
    );
    assert!(
        dd.status.success(),
        "{}",
        String::from_utf8_lossy(&dd.stderr)
    );
    let out = env.preloaded(
        &fio(),
        "iomap",
        &with(j, &["--thread=1", "--verify_only=1"]),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the verify missed the change: {text}"
    );
    assert!(text.contains("verify"), "{text}");
    e2fs::fsck_ok(&env.img);
}

/// fio's default: the parent lays the file out (create_serialize), closes
/// it (so the library lets go of the mount), then forks the job, whose
/// process opens the image itself. Its data verifies there and again in a
/// fresh process.
#[test]
fn fio_forked_job_verifies_on_every_path() {
    for path in PATHS {
        let env = Env::new();
        let j = job("none");
        env.fio_ok(path, &with(j.clone(), &["--do_verify=1"]));
        env.fio_ok(path, &with(j, &["--verify_only=1"]));
        env.check_image(FILE);
    }
}

/// Two jobs as threads of one fio process share its one mount: both
/// files verify.
#[test]
fn fio_two_thread_jobs_verify() {
    let env = Env::new();
    let j = two_jobs();
    env.fio_ok("iomap", &with(j.clone(), &["--thread=1", "--do_verify=1"]));
    env.fio_ok("iomap", &with(j, &["--thread=1", "--verify_only=1"]));
    e2fs::fsck_ok(&env.img);
}

/// Two forked jobs at once: one process at a time has the image, so the
/// second job waits (BUFWRITE_WAIT) until the first lets go of it at exit.
#[test]
fn fio_two_forked_jobs_verify() {
    let env = Env::new();
    let j = two_jobs();
    env.fio_ok("iomap", &with(j.clone(), &["--do_verify=1"]));
    env.fio_ok("iomap", &with(j, &["--verify_only=1"]));
    e2fs::fsck_ok(&env.img);
}

/// Two jobs of `SIZE` each, a file each in the mount directory.
fn two_jobs() -> Vec<String> {
    [
        "--name=w".to_string(),
        format!("--directory={MOUNT}"),
        "--numjobs=2".into(),
        "--rw=randwrite".into(),
        "--bsrange=1k-32k".into(),
        format!("--size={SIZE}"),
        "--ioengine=psync".into(),
        "--verify=crc32c".into(),
        "--fallocate=none".into(),
    ]
    .to_vec()
}
