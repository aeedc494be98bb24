//! `bufwrite run -- CMD` as a user runs it, without the preload library:
//! the flags are checked before anything runs, the library is looked for
//! where the command says, CMD gets the contract's environment and its
//! exit status is bufwrite's, the temporary image goes away (or is kept
//! and fsck-clean), and `--stats` merges the per-process lines. A "library"
//! that is not ELF stands in for the real one: ld.so says it cannot
//! preload it and runs CMD anyway. One test uses the real library when a
//! build left it in target/, and says SKIP otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A test's private temp dir (TMPDIR of the run, so the temporary image
/// and statistics lines land there) and a stand-in library in it.
struct Env {
    dir: tempfile::TempDir,
    tmp: PathBuf,
    fake_lib: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let fake_lib = dir.path().join("libfake.so");
        std::fs::write(&fake_lib, "not an ELF object\n").unwrap();
        Env { dir, tmp, fake_lib }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `bufwrite run ARGS`, with TMPDIR private and no library or
    /// preload in the inherited environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::bin();
        c.arg("run")
            .args(args)
            .env("TMPDIR", &self.tmp)
            .env_remove("BUFWRITE_PRELOAD")
            .env_remove("LD_PRELOAD")
            .env("PATH", path_with_sbin());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(&mut self.cmd(args), "")
    }

    /// `bufwrite run --preload FAKE ARGS`.
    fn run_fake(&self, args: &[&str]) -> Output {
        let lib = self.fake_lib.to_str().unwrap();
        let mut all = vec!["--preload", lib];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// The files left in the run's TMPDIR.
    fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

fn path_with_sbin() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

fn have(tool: &str) -> bool {
    std::env::split_paths(&path_with_sbin()).any(|d| d.join(tool).is_file())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `NAME=value` lines of an `env` dump.
fn var<'a>(dump: &'a str, name: &str) -> Option<&'a str> {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// A fresh ext4 image made with mkfs (None, with a SKIP line, without it).
fn mkfs_image(at: &Path) -> Option<()> {
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return None;
    }
    let out = Command::new("mkfs.ext4")
        .env("PATH", path_with_sbin())
        .args(["-q", "-F", "-b", "4096"])
        .arg(at)
        .arg("32M")
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs: {}", stderr(&out));
    Some(())
}

#[test]
fn bad_flags_are_refused_before_cmd_runs() {
    let env = Env::new();
    let marker = env.path("ran");
    let touch = format!("touch {}", marker.display());
    let cases: &[(&[&str], &str)] = &[
        (&["--path", "bh-nope"], "unknown write path \"bh-nope\""),
        (&["--mount-at", "bufwrite"], "must be an absolute path"),
        (&["--mount-at", "/"], "every path would be a bufwrite file"),
        (&["--mount-at", "/a/../b"], "must not contain `.` or `..`"),
        (&["--mem", "lots"], "not a size"),
        (&["--mem", "1M"], "at least 16M"),
        (&["--cache-budget", "1K"], "below the minimum"),
        (&["--order", "10"], "--order"),
        (&["--backend", "aio"], "not a backend"),
        (&["--policy", "eager"], "not a policy"),
        (
            &["--image", "/nonexistent/bufwrite.img"],
            "--image /nonexistent",
        ),
        (&["--device", "/nonexistent/dev"], "--device /nonexistent"),
        (&["--image", "/tmp", "--mem", "32M"], "cannot be used with"),
        (
            &["--keep-image", "--image", "/dev/null"],
            "--keep-image keeps a temporary image",
        ),
        (
            &["--stats", "/nonexistent/dir/s.json"],
            "its directory does not exist",
        ),
        (&["--stats", "/bufwrite/s.json"], "inside --mount-at"),
    ];
    for (flags, want) in cases {
        let mut args = flags.to_vec();
        args.extend(["--", "sh", "-c", &touch]);
        let o = env.run_fake(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{flags:?} was accepted: {err}");
        assert!(err.contains(want), "{flags:?}: wanted {want:?} in: {err}");
        assert!(!marker.exists(), "{flags:?}: CMD ran");
    }
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());

    let o = env.run_fake(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no command to run"), "{}", stderr(&o));
}

#[test]
fn a_missing_library_says_how_to_build_it() {
    let env = Env::new();
    let o = env.run(&[
        "--preload",
        "/nonexistent/libbufwrite_preload.so",
        "--",
        "true",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--preload /nonexistent/libbufwrite_preload.so"),
        "{err}"
    );
    assert!(
        err.contains("cargo build --release -p bufwrite-preload"),
        "{err}"
    );

    let o = common::run(
        env.cmd(&["--", "true"])
            .env("BUFWRITE_PRELOAD", "/nonexistent/lib.so"),
        "",
    );
    assert!(
        stderr(&o).contains("BUFWRITE_PRELOAD /nonexistent/lib.so"),
        "{}",
        stderr(&o)
    );

    // Neither flag nor variable, and nothing next to the executable: a copy
    // of the binary in an empty directory looks there and in its deps/.
    let bin_dir = env.path("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let copy = bin_dir.join("bufwrite");
    std::fs::copy(env!("CARGO_BIN_EXE_bufwrite"), &copy).unwrap();
    // Another test thread forking while the copy's write fd was open
    // leaves the copy busy (ETXTBSY) until that child execs: wait it out.
    let mut tries = 0;
    let o = loop {
        match Command::new(&copy)
            .args(["run", "--", "true"])
            .env("TMPDIR", &env.tmp)
            .env_remove("BUFWRITE_PRELOAD")
            .output()
        {
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("libbufwrite_preload.so was not found"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}/deps", bin_dir.display())),
        "{err}"
    );
    assert!(
        err.contains("cargo build --release -p bufwrite-preload"),
        "{err}"
    );
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn cmd_gets_the_contracts_environment_and_the_temp_image_goes_away() {
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let out = env.path("env.txt");
    let script = format!("env > {}", out.display());
    let mut c = env.cmd(&[
        "--preload",
        env.fake_lib.to_str().unwrap(),
        "--mount-at",
        "/mnt/bw/",
        "--path",
        "bh-legacy",
        "--order",
        "3",
        "--cache-budget",
        "128M",
        "--policy",
        "ordered",
        "--strict",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    c.env("LD_PRELOAD", "/lib/other.so")
        .env("BUFWRITE_STATS", "/inherited/stats");
    let o = common::run(&mut c, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let dump = std::fs::read_to_string(&out).unwrap();
    let lib = std::fs::canonicalize(&env.fake_lib).unwrap();
    assert_eq!(
        var(&dump, "LD_PRELOAD"),
        Some(format!("{}:/lib/other.so", lib.display()).as_str())
    );
    assert_eq!(var(&dump, "BUFWRITE_MOUNT_AT"), Some("/mnt/bw"));
    assert_eq!(var(&dump, "BUFWRITE_PATH"), Some("bh-legacy"));
    assert_eq!(var(&dump, "BUFWRITE_BACKEND"), Some("sync"));
    assert_eq!(var(&dump, "BUFWRITE_ORDER"), Some("3"));
    assert_eq!(var(&dump, "BUFWRITE_CACHE_BUDGET"), Some("134217728"));
    assert_eq!(var(&dump, "BUFWRITE_POLICY"), Some("ordered"));
    assert_eq!(var(&dump, "BUFWRITE_STRICT"), Some("1"));
    // Not asked for: an inherited value would mislead the library.
    assert_eq!(var(&dump, "BUFWRITE_STATS"), None);
    // The temporary image was in TMPDIR while CMD ran, and is gone.
    let image = PathBuf::from(var(&dump, "BUFWRITE_IMAGE").unwrap());
    assert!(image.starts_with(&env.tmp), "{}", image.display());
    assert!(!image.exists());
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
    // ld.so refused the stand-in and said so; the run warned beforehand.
    assert!(stderr(&o).contains("not an ELF file"), "{}", stderr(&o));

    // The defaults.
    let o = env.run_fake(&["--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dump = std::fs::read_to_string(&out).unwrap();
    assert_eq!(var(&dump, "BUFWRITE_MOUNT_AT"), Some("/bufwrite"));
    assert_eq!(var(&dump, "BUFWRITE_PATH"), Some("iomap"));
    assert_eq!(var(&dump, "BUFWRITE_ORDER"), Some("9"));
    assert_eq!(var(&dump, "BUFWRITE_POLICY"), Some("unwritten"));
    assert_eq!(var(&dump, "BUFWRITE_CACHE_BUDGET"), None);
    assert_eq!(var(&dump, "BUFWRITE_STRICT"), None);
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn exit_status_and_signals_are_cmds() {
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let o = env.run_fake(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = env.run_fake(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    let o = env.run_fake(&["--", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot run /nonexistent/program"));
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

#[test]
fn keep_image_keeps_an_fsck_clean_image() {
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let o = env.run_fake(&["--keep-image", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("bufwrite: kept the image at "))
        .unwrap_or_else(|| panic!("no kept path in: {err}"));
    let kept = PathBuf::from(kept);
    assert!(kept.starts_with(&env.tmp));
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 256 << 20);
    assert!(!err.contains("not clean"), "{err}");
    if have("e2fsck") {
        let out = Command::new("e2fsck")
            .env("PATH", path_with_sbin())
            .arg("-fn")
            .arg(&kept)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("SKIP: e2fsck not installed (the image is not checked)");
    }
}

#[test]
fn mem_makes_the_image_in_dev_shm() {
    if !have("mkfs.ext4") || !Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP: mkfs.ext4 or /dev/shm missing");
        return;
    }
    let env = Env::new();
    let out = env.path("image-path");
    let script = format!(
        "stat -c %s \"$BUFWRITE_IMAGE\" > {0}; echo \"$BUFWRITE_IMAGE\" >> {0}",
        out.display()
    );
    let o = env.run_fake(&["--mem", "32M", "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("33554432"));
    let image = PathBuf::from(lines.next().unwrap());
    assert!(image.starts_with("/dev/shm"), "{}", image.display());
    assert!(!image.exists());
}

#[test]
fn a_given_image_is_used_as_is_and_checked_afterwards() {
    let env = Env::new();
    let img = env.path("user.img");
    if mkfs_image(&img).is_none() {
        return;
    }
    let before = std::fs::read(&img).unwrap();
    let out = env.path("image-path");
    let script = format!("echo \"$BUFWRITE_IMAGE\" > {}", out.display());
    let o = env.run_fake(&["--image", img.to_str().unwrap(), "--", "sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let named = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        named.trim(),
        std::fs::canonicalize(&img).unwrap().to_str().unwrap()
    );
    // Not mkfs'ed, not deleted, not written (the library did not load).
    assert_eq!(std::fs::read(&img).unwrap(), before);
    assert!(!stderr(&o).contains("not clean"), "{}", stderr(&o));

    // Not ext4: refused before CMD runs.
    let junk = env.path("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let o = env.run_fake(&[
        "--device",
        junk.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("as ext4"), "{}", stderr(&o));

    // CMD (not the library: it is not loaded) damages the image behind
    // bufwrite's back: the check after it warns, and the status stays CMD's.
    if !have("e2fsck") {
        eprintln!("SKIP: e2fsck not installed (no check after the run)");
        return;
    }
    let damage =
        "dd if=/dev/zero of=\"$BUFWRITE_IMAGE\" bs=4096 seek=1 count=2 conv=notrunc 2>/dev/null";
    let o = env.run_fake(&["--image", img.to_str().unwrap(), "--", "sh", "-c", damage]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: the image") && err.contains("is not clean"),
        "{err}"
    );
    assert!(img.exists());
}

#[test]
fn stats_lines_of_every_process_are_merged() {
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let stats = env.path("stats.json");
    // Two "processes" append their lines as the library does at exit.
    let script = r#"
echo '{"pid":1,"calls":{"open":1,"write":3},"not_served":[{"call":"mmap","path":"/bufwrite/x"}],"device":{"reads":0,"writes":2,"bytes_written":8192},"mem":{"peak_cached":4096}}' >> "$BUFWRITE_STATS"
sh -c 'echo "{\"pid\":2,\"calls\":{\"open\":1,\"read\":2},\"not_served\":[],\"device\":{\"reads\":1,\"writes\":0,\"bytes_written\":0},\"mem\":{\"peak_cached\":8192}}" >> "$BUFWRITE_STATS"'
"#;
    let o = env.run_fake(&["--stats", stats.to_str().unwrap(), "--", "sh", "-c", script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(doc["processes"].as_array().unwrap().len(), 2);
    assert_eq!(doc["processes"][1]["pid"], 2);
    let t = &doc["totals"];
    assert_eq!(t["calls"]["open"], 2);
    assert_eq!(t["calls_served"], 7);
    assert_eq!(t["not_served_count"], 1);
    assert_eq!(t["not_served"][0]["call"], "mmap");
    assert_eq!(t["device"]["writes"], 2);
    assert_eq!(t["device"]["reads"], 1);
    assert_eq!(t["mem"]["peak_cached"], 8192);
    let err = stderr(&o);
    assert!(
        err.contains("bufwrite run: 2 processes: 7 calls served, 1 not served"),
        "{err}"
    );
    // The lines file was temporary.
    assert!(env.leftovers().is_empty(), "{:?}", env.leftovers());
}

/// With the real library (built beside this test by the dev-dependency on
/// bufwrite-preload, or left in target/ by a build): a file under
/// /bufwrite is written and read back through it.
#[test]
fn with_the_library_a_shell_writes_and_reads_a_mount_file() {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("libbufwrite_preload.so")));
    let lib = beside
        .into_iter()
        .chain(
            ["release", "debug"]
                .iter()
                .map(|p| target.join(p).join("libbufwrite_preload.so")),
        )
        .find(|p| p.is_file());
    let Some(lib) = lib else {
        eprintln!("SKIP: target/*/libbufwrite_preload.so not built");
        return;
    };
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let o = env.run(&[
        "--preload",
        lib.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo hi > /bufwrite/x && cat /bufwrite/x",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
    assert!(!stderr(&o).contains("not clean"), "{}", stderr(&o));
}

/// The real library, when a build left it beside the test or in target/.
fn real_library() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("libbufwrite_preload.so")));
    beside
        .into_iter()
        .chain(
            ["release", "debug"]
                .iter()
                .map(|p| target.join(p).join("libbufwrite_preload.so")),
        )
        .find(|p| p.is_file())
}

#[test]
fn record_makes_a_trace_that_replay_runs() {
    let Some(lib) = real_library() else {
        eprintln!("SKIP: target/*/libbufwrite_preload.so not built");
        return;
    };
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let trace = env.path("dd.trace");
    // A stale trace is truncated first.
    std::fs::write(&trace, "garbage\n").unwrap();
    let o = env.run(&[
        "--preload",
        lib.to_str().unwrap(),
        "--record",
        trace.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/bufwrite/f bs=4k count=16 status=none && cat /bufwrite/f > /dev/null",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("recorded"), "{err}");
    assert!(err.contains("for /bufwrite/f"), "{err}");
    let text = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(text.lines().next(), Some("# file /bufwrite/f"), "{text}");
    let ops: Vec<_> = bufwrite_engine::trace::parse(&text)
        .unwrap()
        .into_iter()
        .map(|l| l.op)
        .collect();
    let writes: Vec<(u64, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            bufwrite_engine::trace::Op::Pwrite { off, len, .. } => Some((*off, *len)),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes,
        (0..16).map(|i| (i * 4096, 4096)).collect::<Vec<_>>()
    );
    assert!(ops.iter().any(|op| op.name() == "read"), "{text}");
    assert!(
        err.contains(&format!("recorded {} lines", ops.len())),
        "{err}"
    );

    let replay = common::run(
        common::bin()
            .args(["replay", "--mem", "64M", "--trace"])
            .arg(&trace),
        "",
    );
    assert!(replay.status.success(), "{}", stderr(&replay));
    // Replay prints one `read OFF LEN HASH` per read line.
    let reads = ops.iter().filter(|op| op.name() == "read").count();
    let out = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("read ")).count(),
        reads,
        "{out}"
    );
}

#[test]
fn record_file_records_only_that_file() {
    let Some(lib) = real_library() else {
        eprintln!("SKIP: target/*/libbufwrite_preload.so not built");
        return;
    };
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 not installed");
        return;
    }
    let env = Env::new();
    let trace = env.path("b.trace");
    let o = env.run(&[
        "--preload",
        lib.to_str().unwrap(),
        "--record",
        trace.to_str().unwrap(),
        "--record-file",
        "/bufwrite/b",
        "--",
        "sh",
        "-c",
        "echo one > /bufwrite/a && dd if=/dev/zero of=/bufwrite/b bs=4k count=2 \
         conv=notrunc status=none && cat /bufwrite/a",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        text,
        format!(
            "# file /bufwrite/b\n{}",
            text.lines()
                .skip(1)
                .filter(|l| l.starts_with("pwrite ") && l.split(' ').nth(2) == Some("4096"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        ),
        "only b's two writes: {text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        stderr(&o).contains("recorded 2 lines for /bufwrite/b"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn record_flags_are_checked_before_cmd_runs() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--record", "/bufwrite/t"], "inside --mount-at"),
        (
            &["--record", "/nonexistent-dir/t"],
            "its directory does not exist",
        ),
        (
            &["--record", "t", "--record-file", "/elsewhere/f"],
            "must name a file under --mount-at",
        ),
        (&["--record-file", "/bufwrite/f"], "--record"),
    ];
    for (args, want) in cases {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--", "true"]);
        let o = env.run_fake(&all);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}
