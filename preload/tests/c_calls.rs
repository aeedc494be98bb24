//! The C program `tests/c/calls.c` calls every hooked libc function (and its
//! usual errors) on a bufwrite mount with the library preloaded, built twice:
//! `-O1`, and `-O2 -D_FORTIFY_SOURCE=2` so the fortified entry points
//! (`__open_2`, `__read_chk`, `__pread_chk`, ...) are the ones called. The
//! program checks the answers itself; these tests then judge from outside:
//! - e2fsprogs: `e2fsck -fn` is clean, and `debugfs dump` of each file the
//!   program says it left (`LEFT name size seed zeros`) is that pattern;
//! - the host: the file the program wrote outside the mount holds what it
//!   says (`OUTSIDE size seed`), read with std::fs, and a few host files
//!   hash the same before and after; the mount directory never exists;
//! - strace: no traced system call names a path under the mount directory,
//!   and while the program holds its bufwrite fds open (the numbers it
//!   writes to a side file, between two marker calls) no system call names
//!   one of them. A kernel control fd used in the same window proves the
//!   parsing sees such calls.
//!
//! The mount directory is `<tempdir>/bufwrite-mnt`: unique per test, and a
//! name strace output can only contain if a mount path reached the kernel.

mod common;

use bufwrite_testkit::e2fs;
use common::{require_tool, so};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/calls.c");

/// The mount directory's name (inside the test's temp dir, never created).
const MOUNT_NAME: &str = "bufwrite-mnt";

/// The two builds: a name and the flags before the common ones.
const BUILDS: [(&str, &[&str]); 2] = [
    ("O1", &["-O1"]),
    ("fortified", &["-O2", "-D_FORTIFY_SOURCE=2"]),
];

/// The fortified entry points the `-O2 -D_FORTIFY_SOURCE=2` build must
/// import. That the library serves them (not glibc's, which would hand the
/// mount path or the placeholder fd to the kernel) the strace test shows:
/// the program calls `__open_2` and friends on mount paths, and
/// `__read_chk`/`__pread_chk` on bufwrite fds inside the fd window.
const FORTIFIED: [&str; 7] = [
    "__open_2",
    "__open64_2",
    "__openat_2",
    "__openat64_2",
    "__read_chk",
    "__pread_chk",
    "__pread64_chk",
];

/// How many files the program leaves in the mount (its LEFT lines): a
/// section that returned early shows up here too.
const LEFT_FILES: usize = 18;

/// The byte at offset `i` of a file written with `seed` (calls.c's `pat`).
fn pat(seed: u64, i: u64) -> u8 {
    ((i * 131 + seed * 17 + (i >> 12)) % 251) as u8
}

/// `size` pattern bytes with the `off:len,...` ranges zero (`-`: none).
fn expected(size: u64, seed: u64, zeros: &str) -> Vec<u8> {
    let mut v: Vec<u8> = (0..size).map(|i| pat(seed, i)).collect();
    for range in zeros.split(',').filter(|z| *z != "-" && !z.is_empty()) {
        let (off, len) = range.split_once(':').expect("off:len");
        let (off, len): (usize, usize) = (off.parse().unwrap(), len.parse().unwrap());
        v[off..off + len].fill(0);
    }
    v
}

/// Builds calls.c into `dir` with `flags` (then `-Wall -Werror -D_GNU_SOURCE`).
fn build(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    require_tool("cc", "gcc");
    let exe = dir.join(format!("calls-{name}"));
    let out = Command::new("cc")
        .args(flags)
        .args(["-Wall", "-Werror", "-D_GNU_SOURCE", "-o"])
        .arg(&exe)
        .arg(SOURCE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc {flags:?} calls.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Asserts the fortified build imports every [`FORTIFIED`] symbol.
fn assert_fortified_imports(exe: &Path) {
    require_tool("nm", "binutils");
    let out = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(exe)
        .output()
        .unwrap();
    assert!(out.status.success());
    let syms = String::from_utf8_lossy(&out.stdout);
    for sym in FORTIFIED {
        assert!(
            syms.lines().any(|l| l
                .split_whitespace()
                .last()
                .and_then(|s| s.split('@').next())
                == Some(sym)),
            "the fortified build does not call {sym}:\n{syms}"
        );
    }
}

/// One run's temp dir: a fresh image, the mount path (not created), the
/// outside file and the side file's paths.
struct Run {
    dir: tempfile::TempDir,
    img: PathBuf,
}

impl Run {
    fn new() -> Run {
        let (dir, img) = common::image();
        let run = Run { dir, img };
        assert!(!run.mount().exists());
        run
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join(MOUNT_NAME)
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside.dat")
    }

    fn fds(&self) -> PathBuf {
        self.dir.path().join("fds.txt")
    }

    /// The program's arguments.
    fn args(&self) -> [PathBuf; 3] {
        [self.mount(), self.outside(), self.fds()]
    }

    /// The program with the library preloaded.
    fn exec(&self, exe: &Path) -> Output {
        Command::new(exe)
            .args(self.args())
            .current_dir(self.dir.path())
            .env("LD_PRELOAD", so())
            .env("BUFWRITE_IMAGE", &self.img)
            .env("BUFWRITE_MOUNT_AT", self.mount())
            .output()
            .unwrap()
    }

    /// The program under `strace -f -o LOG`; the library is preloaded into
    /// the traced program only (`-E`), not into strace.
    fn exec_traced(&self, exe: &Path, log: &Path) -> Output {
        let env = |k: &str, v: &Path| format!("{k}={}", v.display());
        Command::new("strace")
            .args(["-f", "-o"])
            .arg(log)
            .args(["-e", "trace=all"])
            .arg("-E")
            .arg(env("LD_PRELOAD", &so()))
            .arg("-E")
            .arg(env("BUFWRITE_IMAGE", &self.img))
            .arg("-E")
            .arg(env("BUFWRITE_MOUNT_AT", &self.mount()))
            .arg(exe)
            .args(self.args())
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// After a run: it passed every check, the library said nothing but
    /// its "not served" lines, the image is clean and holds what the
    /// program says it left, the outside file holds what it wrote, and the
    /// mount directory still does not exist.
    fn judge(&self, what: &str, out: &Output) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.lines().last().is_some_and(|l| l.starts_with("ok ")),
            "{what}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        for line in stderr.lines() {
            assert!(
                line.starts_with("bufwrite-preload: ") && line.ends_with(" is not served"),
                "{what}: unexpected stderr line: {line}"
            );
        }
        assert!(
            !self.mount().exists(),
            "{what}: the mount dir appeared on the host"
        );
        e2fs::fsck_ok(&self.img);
        let mut left = 0;
        for line in stdout.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["LEFT", name, size, seed, zeros] => {
                    let want = expected(size.parse().unwrap(), seed.parse().unwrap(), zeros);
                    let got = e2fs::dump(&self.img, &format!("/{name}"));
                    assert!(
                        got == want,
                        "{what}: /{name} as debugfs dumps it ({} bytes) is not {line}",
                        got.len()
                    );
                    left += 1;
                }
                ["OUTSIDE", size, seed] => {
                    let want = expected(size.parse().unwrap(), seed.parse().unwrap(), "-");
                    let got = std::fs::read(self.outside()).unwrap();
                    assert!(
                        got == want,
                        "{what}: the outside file ({} bytes) is not {line}",
                        got.len()
                    );
                }
                _ => {}
            }
        }
        assert_eq!(left, LEFT_FILES, "{what}: LEFT lines:\n{stdout}");
        assert!(stdout.contains("\nOUTSIDE "), "{what}: no OUTSIDE line");
    }
}

/// A hash of each file (None when it cannot be read).
fn hashes(paths: &[PathBuf]) -> Vec<(PathBuf, Option<u64>)> {
    paths
        .iter()
        .map(|p| {
            let h = std::fs::read(p).ok().map(|bytes| {
                let mut h = DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            });
            (p.clone(), h)
        })
        .collect()
}

#[test]
fn c_program_runs_every_hooked_call_on_the_mount() {
    require_tool("cc", "gcc");
    for (name, flags) in BUILDS {
        let run = Run::new();
        let exe = build(run.dir.path(), name, flags);
        if name == "fortified" {
            assert_fortified_imports(&exe);
        }
        // Host files the program must leave alone: a file beside the mount
        // directory, system files, the library and the program.
        let beside = run.dir.path().join("beside.txt");
        std::fs::write(&beside, b"the host's own bytes\n").unwrap();
        let host = [
            beside,
            PathBuf::from("/etc/passwd"),
            PathBuf::from("/etc/hosts"),
            so(),
            exe.clone(),
        ];
        let before = hashes(&host);
        assert!(before.iter().all(|(_, h)| h.is_some()), "{before:?}");
        let out = run.exec(&exe);
        run.judge(name, &out);
        assert_eq!(hashes(&host), before, "{name}: a host file changed");
    }
}

/// A traced call: its name and its top-level arguments as strace prints
/// them (`PID name(a, b, ...) = r`, or `... <unfinished ...>`); None for
/// resumed calls, signals and exits.
fn parse_call(line: &str) -> Option<(&str, Vec<&str>)> {
    let rest = line
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    // Another thread's call between this call's start and its end splits
    // it: `fsync(12 <unfinished ...>` has its arguments before the marker.
    let rest = rest
        .strip_suffix("<unfinished ...>")
        .map_or(rest, str::trim_end);
    let open = rest.find('(')?;
    let name = &rest[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    Some((name, split_args(&rest[open + 1..])))
}

/// Splits strace's argument list at top-level commas (not inside strings,
/// structs, arrays or nested calls), up to the closing parenthesis.
fn split_args(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0u32, 0);
    let (mut in_str, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => {
                out.push(s[start..i].trim());
                return out;
            }
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out
}

/// The argument positions of a call that name fds. A dup or an fd-flag
/// fcntl on a bufwrite fd reaches the kernel by design (the placeholder
/// carries the fd number and FD_CLOEXEC): none. Every other call is taken
/// to name an fd first (a false match fails loudly; a missed fd would not).
fn fd_positions(name: &str, args: &[&str]) -> &'static [usize] {
    match name {
        "dup" | "dup2" | "dup3" => &[],
        "fcntl"
            if args.get(1).is_some_and(|c| {
                c.starts_with("F_GETFD") || c.starts_with("F_SETFD") || c.starts_with("F_DUPFD")
            }) =>
        {
            &[]
        }
        "mmap" => &[4],
        "copy_file_range" | "splice" => &[0, 2],
        "sendfile" | "tee" => &[0, 1],
        _ => &[0],
    }
}

/// The calls in `lines` that name one of `fds`, as `name(args)` lines.
fn calls_on(lines: &[&str], fds: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| {
            parse_call(line).is_some_and(|(name, args)| {
                fd_positions(name, &args)
                    .iter()
                    .any(|&i| args.get(i).is_some_and(|a| fds.iter().any(|fd| fd == a)))
            })
        })
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn under_strace_no_mount_path_or_bufwrite_fd_reaches_the_kernel() {
    require_tool("cc", "gcc");
    require_tool("strace", "strace");
    for (name, flags) in BUILDS {
        let run = Run::new();
        let exe = build(run.dir.path(), name, flags);
        let log = run.dir.path().join("strace.log");
        let out = run.exec_traced(&exe, &log);
        run.judge(name, &out);
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        // Paths: only the program's own execve names the mount directory
        // (its argv). The library's "not served" stderr lines may too.
        let named: Vec<&&str> = lines.iter().filter(|l| l.contains(MOUNT_NAME)).collect();
        let execs = named
            .iter()
            .filter(|l| parse_call(l).is_some_and(|(n, _)| n == "execve"))
            .count();
        let leaks: Vec<&&&str> = named
            .iter()
            .filter(|l| {
                !parse_call(l).is_some_and(|(n, a)| {
                    n == "execve"
                        || (n == "write"
                            && a.first() == Some(&"2")
                            && a.get(1)
                                .is_some_and(|s| s.starts_with("\"bufwrite-preload:")))
                })
            })
            .collect();
        assert_eq!(execs, 1, "{name}: {named:?}");
        assert!(
            leaks.is_empty(),
            "{name}: mount paths reached the kernel:\n{leaks:#?}"
        );

        // Fds: the window between the two marker calls.
        let side = std::fs::read_to_string(run.fds()).unwrap();
        let list = |tag: &str| -> Vec<String> {
            side.lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_else(|| panic!("no {tag} line in {side}"))
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let (fds, ctl) = (list("FDS "), list("CTL "));
        assert_eq!(fds.len(), 11, "{side}");
        let mark = |what: &str| {
            let needle = format!("access(\"{}.{what}\"", run.fds().display());
            lines
                .iter()
                .position(|l| l.contains(&needle))
                .unwrap_or_else(|| panic!("{name}: no {needle} in the strace log"))
        };
        let (begin, end) = (mark("begin"), mark("end"));
        assert!(begin < end);
        let window = &lines[begin..end];
        // The control fd's calls are seen: the parsing finds what it must.
        let seen = calls_on(window, &ctl);
        for call in ["write", "pread64", "lseek", "newfstatat", "fsync"] {
            assert!(
                seen.iter()
                    .any(|l| parse_call(l).is_some_and(|(n, _)| n == call)),
                "{name}: the control fd's {call} is not in the window: {seen:#?}"
            );
        }
        let leaked = calls_on(window, &fds);
        assert!(
            leaked.is_empty(),
            "{name}: calls on bufwrite fds {fds:?} reached the kernel:\n{leaked:#?}"
        );
    }
}

#[test]
fn strace_lines_parse_into_names_and_fd_arguments() {
    let (name, args) = parse_call(r#"123 pwrite64(7, "a,b\"(", 2, 4096) = 2"#).unwrap();
    assert_eq!(
        (name, args.as_slice()),
        ("pwrite64", &["7", r#""a,b\"(""#, "2", "4096"][..])
    );
    let (name, args) = parse_call("9 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 5, 0) = -1").unwrap();
    assert_eq!((name, fd_positions(name, &args)), ("mmap", &[4usize][..]));
    assert_eq!(args[4], "5");
    let (_, args) =
        parse_call("9 newfstatat(5, \"\", {st_mode=S_IFREG, st_size=7, ...}, AT_EMPTY_PATH) = 0")
            .unwrap();
    assert_eq!(args.len(), 4);
    assert!(parse_call("9 pread64(5, <unfinished ...>").is_some());
    assert_eq!(
        parse_call("9 fsync(12 <unfinished ...>"),
        Some(("fsync", vec!["12"]))
    );
    assert!(parse_call("9 <... pread64 resumed>\"x\", 1, 0) = 1").is_none());
    assert!(parse_call("9 +++ exited with 0 +++").is_none());
    let fds = vec!["5".to_string()];
    let lines = [
        "9 fcntl(5, F_GETFD) = 0",
        "9 dup(5) = 6",
        "9 fcntl(5, F_GETFL) = 2",
        "9 read(15, \"\", 1) = 0",
        "9 read(5, \"\", 1) = 0",
    ];
    assert_eq!(calls_on(&lines, &fds), [lines[2], lines[4]]);
}
