//! `bufwrite fio` as a user runs it: a tiny run (1 s, a 4 MiB file, one
//! run) prints a table with every target and job and writes JSON that
//! parses and holds every pair; its temporary directory is gone
//! afterwards. A missing fio and a failing fio are clear errors. No timing
//! is asserted.
//!
//! fio is required for the tiny run (`.ci/run` installs it); the library
//! is the one `cargo test` builds into `deps/` beside the binary, which is
//! where `bufwrite run` looks for it.

mod common;

use common::{bufwrite, text};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const TARGETS: [&str; 5] = [
    "kernel",
    "bufwrite-iomap",
    "bufwrite-bh-legacy",
    "bufwrite-bh-tailskip",
    "bufwrite-bh-seek",
];
const JOBS: [&str; 3] = ["rand1k", "rand4k", "seq1m"];

fn path_with_sbin() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

fn have_fio() -> bool {
    std::env::split_paths(&path_with_sbin()).any(|d| d.join("fio").is_file())
}

#[test]
fn a_tiny_run_has_every_target_and_job() {
    assert!(
        have_fio(),
        "fio is not installed, and this test needs it: `.ci/run` installs it \
         (or `apt-get install fio`)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let json = dir.path().join("fio.json");
    let out = common::run(
        common::bin()
            .args(["fio", "--runtime", "1", "--ramp", "1", "--size", "4M"])
            .args(["--runs", "1", "--json"])
            .arg(&json)
            .env("TMPDIR", &tmp)
            .env("PATH", path_with_sbin())
            .env_remove("BUFWRITE_PRELOAD")
            .env_remove("LD_PRELOAD"),
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{stdout}");

    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("target"))
        .unwrap_or_else(|| panic!("no table header: {stdout}"));
    for job in JOBS {
        assert!(header.contains(&format!("{job} MB/s")), "{header}");
        assert!(header.contains(&format!("{job} us/op")), "{header}");
    }
    for target in TARGETS {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(target))
            .unwrap_or_else(|| panic!("no row for {target}: {stdout}"));
        // The target and a MB/s and us/op figure per job, all numbers.
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 1 + 2 * JOBS.len(), "{row}");
        for c in &cells[1..] {
            assert!(c.parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
        }
    }
    // Progress went to stderr, one line per fio run.
    assert_eq!(stderr.matches("] run 1/1: ").count(), 15, "{stderr}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["machine"]["cpu"].is_string(), "{doc}");
    assert_eq!(doc["params"]["command"], "fio");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), TARGETS.len() * JOBS.len());
    for job in JOBS {
        for target in TARGETS {
            let r = results
                .iter()
                .find(|r| r["job"] == job && r["target"] == target)
                .unwrap_or_else(|| panic!("no result for {job} on {target}"));
            assert!(r["mb_per_s"]["median"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["usecs_per_op"]["median"].as_f64().unwrap() > 0.0, "{r}");
            assert_eq!(r["runs"].as_array().unwrap().len(), 1, "{r}");
            let path = target.strip_prefix("bufwrite-");
            assert_eq!(r["path"].as_str(), path, "{r}");
        }
    }
    // The kernel's files and the images were in a temporary directory
    // under TMPDIR, removed at the end.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_missing_fio_says_how_to_install_it() {
    let out = common::run(common::bin().args(["fio"]).env("PATH", "/nonexistent"), "");
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("fio was not found on PATH"), "{e}");
    assert!(e.contains("apt-get install fio"), "{e}");

    let out = bufwrite(&["fio", "--fio", "/nonexistent/fio"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("apt-get install fio"));
}

#[test]
fn a_failing_fio_run_shows_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fio");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo fio-fake; exit 0; }\n\
         echo 'fio: the job went wrong' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::run(
        common::bin()
            .args(["fio", "--paths", "iomap", "--jobs", "rand4k", "--fio"])
            .arg(&fake)
            .arg("--kernel-dir")
            .arg(dir.path())
            .env("PATH", path_with_sbin()),
        "",
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("rand4k on kernel"), "{e}");
    assert!(e.contains("fio failed"), "{e}");
    assert!(e.contains("the job went wrong"), "{e}");
    // Only the script is left: the temporary directory went away.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(Path::new(&fake).is_file());
}

#[test]
fn bad_flags_are_refused() {
    for (args, want) in [
        (&["fio", "--jobs", "rand8k"][..], "unknown job \"rand8k\""),
        (&["fio", "--paths", "bh-nope"][..], "bh-nope"),
        (&["fio", "--size", "512K"][..], "at least 1M"),
        (
            &["fio", "--kernel-dir", "/nonexistent"][..],
            "not a directory",
        ),
    ] {
        let out = common::run(common::bin().args(args).env("PATH", path_with_sbin()), "");
        assert!(!out.status.success(), "{args:?}");
        let e = text(&out.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
    }
}
