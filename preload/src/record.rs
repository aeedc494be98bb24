//! `BUFWRITE_RECORD=PATH`: every served call on one mount file appended to
//! PATH as a replay line (docs/DESIGN.md §7), so a real program's workload
//! can be replayed with `bufwrite replay`.
//!
//! Which file: `BUFWRITE_RECORD_FILE` (an absolute mount path), or else the
//! first mount file the process tree opens. The choice is shared through
//! the trace itself: its first line is `# file /path`. The first process
//! to open a mount file takes an exclusive `flock` on a fresh open of the
//! trace (a fresh open file description, so a forked relative holding an
//! inherited fd does not share the lock), reads the first line, writes it
//! when the trace is empty, and lets go; every later process reads it.
//!
//! Lines carry offsets and lengths resolved at call time (after the file
//! position, `O_APPEND` and dup'ed fds are applied), so they are exact:
//! - writes of every kind: `pwrite OFF LEN SEED`, LEN the bytes written,
//!   SEED the pid (high 32 bits) and a per-process counter (low 32 bits);
//! - reads of every kind: `read OFF LEN`, LEN the length the program asked
//!   for (not clipped at EOF: replay's read clips as pread does);
//! - `fsync`, `fdatasync`; an `O_SYNC`/`O_DSYNC` write is followed by the
//!   fsync/fdatasync it implies;
//! - `ftruncate`/`truncate` and `open(O_TRUNC)` for writing: `truncate SIZE`;
//! - `fallocate`/`posix_fallocate`: `fallocate OFF LEN [keep_size]`,
//!   `punch OFF LEN`.
//!
//! Only successful calls are recorded; `lseek`, `stat` and
//! `sync_file_range` have no line (positions are resolved into the lines,
//! and the grammar has no range writeback). Each line is one raw write(2)
//! on an `O_APPEND` fd (moved to a high number, close-on-exec), so the lines
//! of several processes never interleave mid-line. Calls on other mount
//! files are counted, as the stats' `record.not_recorded`.

use crate::path;
use crate::real;
use crate::state::OpenFile;
use bufwrite_engine::trace::Op;
use libc::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The first line of a trace that names its file.
pub const HEADER: &str = "# file ";

/// The recording configuration, from the environment.
struct Config {
    /// `BUFWRITE_RECORD` with a NUL appended, for the raw open.
    trace: Vec<u8>,
    /// `BUFWRITE_RECORD` as given, for messages.
    shown: String,
    /// `BUFWRITE_RECORD_FILE`, normalised.
    file: Option<String>,
}

static CONFIG: OnceLock<Option<Config>> = OnceLock::new();

fn config() -> Option<&'static Config> {
    CONFIG
        .get_or_init(|| {
            let trace = std::env::var("BUFWRITE_RECORD")
                .ok()
                .filter(|v| !v.is_empty())?;
            let file = std::env::var("BUFWRITE_RECORD_FILE")
                .ok()
                .filter(|v| !v.is_empty());
            let file = match file {
                Some(f) if f.starts_with('/') => {
                    path::normalise(b"/", f.as_bytes()).and_then(|p| String::from_utf8(p).ok())
                }
                Some(f) => {
                    real::log_line(&format!(
                        "BUFWRITE_RECORD_FILE={f:?}: must be an absolute mount path; \
                         recording is off"
                    ));
                    return None;
                }
                None => None,
            };
            let mut t = trace.clone().into_bytes();
            t.push(0);
            Some(Config {
                trace: t,
                shown: trace,
                file,
            })
        })
        .as_ref()
}

/// Set when recording had to stop (an unusable trace): nothing more is
/// recorded, and the reason was printed once.
static OFF: AtomicBool = AtomicBool::new(false);

/// True when `BUFWRITE_RECORD` is set and recording has not stopped.
pub fn enabled() -> bool {
    !OFF.load(Ordering::Acquire) && config().is_some()
}

fn stop(msg: &str) {
    if !OFF.swap(true, Ordering::AcqRel) {
        real::log_line(&format!("{msg}; recording is off"));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The recorded file, once this process knows it (inherited at fork).
static CHOSEN: Mutex<Option<String>> = Mutex::new(None);

/// Called when `path` (a full mount path, `/bufwrite/f`) is opened (or
/// truncated by name): true when it is the recorded file. Without
/// `BUFWRITE_RECORD_FILE` the first such call of the process tree chooses
/// it.
pub fn is_recorded(path: &str) -> bool {
    let Some(c) = config() else { return false };
    if OFF.load(Ordering::Acquire) {
        return false;
    }
    let mut chosen = lock(&CHOSEN);
    if let Some(f) = chosen.as_ref() {
        return f == path;
    }
    let candidate = match &c.file {
        Some(f) if f != path => return false,
        Some(f) => f.as_str(),
        // A newline would break the header line: such a file is never
        // chosen.
        None if path.contains('\n') => return false,
        None => path,
    };
    match choose(c, candidate) {
        Ok(f) => {
            if c.file.as_ref().is_some_and(|want| *want != f) {
                stop(&format!(
                    "BUFWRITE_RECORD={:?} already records {f}, not BUFWRITE_RECORD_FILE",
                    c.shown
                ));
                return false;
            }
            let yes = f == path;
            *chosen = Some(f);
            yes
        }
        Err(msg) => {
            stop(&msg);
            false
        }
    }
}

/// Reads the trace's `# file` line under an exclusive flock, writing it
/// (naming `candidate`) when the trace is empty; returns the file it names.
fn choose(c: &Config, candidate: &str) -> Result<String, String> {
    let shown = &c.shown;
    let fd = real::sys_open(
        &c.trace,
        libc::O_RDWR | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
        0o644,
    )
    .map_err(|e| format!("BUFWRITE_RECORD={shown:?}: cannot open (errno {e})"))?;
    let r = (|| {
        // SAFETY: flock system call on the fd just opened.
        if unsafe { libc::syscall(libc::SYS_flock, fd, libc::LOCK_EX) } < 0 {
            return Err(format!(
                "BUFWRITE_RECORD={shown:?}: cannot lock (errno {})",
                real::errno()
            ));
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::syscall(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), 0) };
        if n < 0 {
            return Err(format!(
                "BUFWRITE_RECORD={shown:?}: cannot read (errno {})",
                real::errno()
            ));
        }
        let head = &buf[..n as usize];
        if head.is_empty() {
            let line = format!("{HEADER}{candidate}\n");
            real::sys_write_all(fd, line.as_bytes())
                .map_err(|e| format!("BUFWRITE_RECORD={shown:?}: cannot write (errno {e})"))?;
            return Ok(candidate.to_string());
        }
        header_file(head).ok_or_else(|| {
            format!("BUFWRITE_RECORD={shown:?}: not empty and its first line is not `{HEADER}PATH`")
        })
    })();
    // Closing the only fd of this open file description drops the lock.
    let _ = real::sys_close(fd);
    r
}

/// The file a trace's first line names (`# file /path`), if it does.
pub fn header_file(text: &[u8]) -> Option<String> {
    let end = text.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&text[..end]).ok()?;
    line.strip_prefix(HEADER).map(str::to_string)
}

/// The append-only fd of the trace (-1 until the first line).
static TRACE_FD: AtomicI32 = AtomicI32::new(-1);
/// Serialises opening `TRACE_FD`.
static OPENING: Mutex<()> = Mutex::new(());

fn trace_fd(c: &Config) -> Option<c_int> {
    let fd = TRACE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return Some(fd);
    }
    let _g = lock(&OPENING);
    let fd = TRACE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return Some(fd);
    }
    match real::sys_open(
        &c.trace,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
        0,
    ) {
        Ok(fd) => {
            let fd = crate::hooks::relocate_own_fd(fd);
            TRACE_FD.store(fd, Ordering::Release);
            Some(fd)
        }
        Err(e) => {
            stop(&format!(
                "BUFWRITE_RECORD={:?}: cannot open (errno {e})",
                c.shown
            ));
            None
        }
    }
}

/// Lines this process appended.
static LINES: AtomicU64 = AtomicU64::new(0);
/// Served calls on mount files other than the recorded one.
static NOT_RECORDED: AtomicU64 = AtomicU64::new(0);
/// The per-process part of the seeds.
static SEEDS: AtomicU64 = AtomicU64::new(0);

/// A fresh seed for a recorded write: the pid mixed with a per-process
/// counter, so that no two writes of the process tree share one.
pub fn seed() -> u64 {
    let n = SEEDS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    ((real::sys_getpid() as u64) << 32) ^ (n & 0xffff_ffff)
}

/// Records the operation `op` builds, when `of` is the recorded file;
/// otherwise counts a call not recorded. `op` runs only when recording.
pub fn call(of: &OpenFile, op: impl FnOnce() -> Op) {
    if !enabled() {
        return;
    }
    if of.recorded {
        append(&op());
    } else {
        NOT_RECORDED.fetch_add(1, Ordering::Relaxed);
    }
}

/// As [`call`], for a call that names the file by path (`truncate`).
pub fn path_call(path: &str, op: impl FnOnce() -> Op) {
    if !enabled() {
        return;
    }
    if is_recorded(path) {
        append(&op());
    } else {
        NOT_RECORDED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends one line, with one write(2) (O_APPEND: whole lines, in the
/// order the calls completed).
fn append(op: &Op) {
    let Some(c) = config() else { return };
    let Some(fd) = trace_fd(c) else { return };
    let line = format!("{op}\n");
    // SAFETY: `line` is valid for its length.
    let n = unsafe { libc::syscall(libc::SYS_write, fd, line.as_ptr(), line.len()) };
    if n == line.len() as i64 {
        LINES.fetch_add(1, Ordering::Relaxed);
    } else {
        stop(&format!(
            "BUFWRITE_RECORD={:?}: a line could not be appended (errno {})",
            c.shown,
            if n < 0 { real::errno() } else { libc::EIO }
        ));
    }
}

/// The stats' `record` object (`,"record":{...}`), empty when not
/// recording.
pub fn stats_json() -> String {
    if config().is_none() {
        return String::new();
    }
    format!(
        ",\"record\":{{\"lines\":{},\"not_recorded\":{}}}",
        LINES.load(Ordering::Relaxed),
        NOT_RECORDED.load(Ordering::Relaxed)
    )
}
