//! Building the device and files of a run from the command line's flags:
//! the shared flags (and warnings for those a target ignores), opening a
//! device with the advice the command line can give, and the temporary
//! files a signal must not leave behind.

use anyhow::Context;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::folio::MAX_ORDER;
use bufwrite_engine::memory::MIN_BUDGET;
use bufwrite_engine::{
    BlockDevice, CacheLimits, CacheMemory, File, FileOptions, Flat, MemStats, OrderPolicy,
    WritePath,
};
use clap::parser::ValueSource;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The flags every command shares: how device I/O is done, the block size
/// and the folio order.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Device I/O backend: sync (pread/pwrite) or uring (io_uring, O_DIRECT);
    /// ignored with --mem (a RAM device does no device I/O).
    #[arg(long, default_value = "sync", value_parser = parse_backend)]
    pub backend: Backend,
    /// Filesystem block size in bytes: 1024, 2048 or 4096; ignored with
    /// --image (the image's own is used).
    #[arg(long, default_value_t = 4096, value_parser = parse_block_size)]
    pub block_size: u32,
    /// Order of every folio (0..=9: 4 KiB .. 2 MiB); 9 is the seed's
    /// large-folio case.
    #[arg(long, default_value_t = MAX_ORDER, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub order: u8,
}

impl CommonArgs {
    /// Folio size in bytes.
    pub fn folio_size(&self) -> u64 {
        folio_size(self.order)
    }

    /// File options for the chosen order.
    pub fn file_options(&self) -> FileOptions {
        FileOptions {
            order: OrderPolicy::Fixed(self.order),
        }
    }
}

/// The `--cache-budget` flag: the most folio data the run's page cache
/// holds (one budget for every file of a run), the engine's default
/// limits otherwise (dirty limits at 10 % / 20 % of it, the flusher on).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct CacheArgs {
    /// Most bytes of file data the page cache may hold (K/M/G suffixes; at
    /// least 64K): past it clean folios are reclaimed and dirty ones
    /// written back first. Writers are throttled above 10 % / 20 % of it
    /// dirty, as the kernel's default dirty ratios do.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_cache_budget)]
    pub cache_budget: u64,
}

impl CacheArgs {
    /// The limits of the budget (checked when the flag was parsed).
    pub fn limits(&self) -> CacheLimits {
        CacheLimits::with_budget(self.cache_budget)
    }

    /// A new cache memory (and its flusher thread) under the budget.
    pub fn memory(&self) -> anyhow::Result<Arc<CacheMemory>> {
        CacheMemory::new(self.limits()).context("--cache-budget")
    }
}

/// Parses a `--cache-budget` value: a size of at least the engine's
/// minimum, whose limits the engine accepts. Refused here, by clap, so
/// nothing has been opened or written when it is wrong.
pub fn parse_cache_budget(s: &str) -> Result<u64, String> {
    let n = crate::units::parse_size(s)?;
    if n < MIN_BUDGET {
        return Err(format!(
            "a cache budget of {n} bytes is below the minimum of {} ({MIN_BUDGET} bytes)",
            crate::units::human(MIN_BUDGET, crate::units::Units::Flag)
        ));
    }
    // `with_budget` would raise a small budget to the minimum: checked above.
    CacheLimits::with_budget(n)
        .validate()
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// A cache memory's counters as a JSON object (the field names of
/// [`MemStats`]), for reports and `--mem-stats`.
pub fn mem_stats_json(s: &MemStats) -> serde_json::Value {
    serde_json::json!({
        "cached": s.cached,
        "peak_cached": s.peak_cached,
        "dirty": s.dirty,
        "writeback": s.writeback,
        "peak_dirty": s.peak_dirty,
        "reclaimed": s.reclaimed,
        "overcommits": s.overcommits,
        "throttled": s.throttled,
        "throttled_us": s.throttled_us,
        "flusher_passes": s.flusher_passes,
        "flusher_bytes": s.flusher_bytes,
    })
}

/// This process's peak resident set size in bytes (`VmHWM` in
/// /proc/self/status), or `None` where the kernel does not say.
pub fn peak_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Largest `--batch` (calls per sample) accepted: 10^9 calls of a
/// nanosecond already make a 1 s sample, and batch x runs (u32) stays far
/// inside a u64.
pub const MAX_BATCH: u64 = 1_000_000_000;

/// Bytes in a folio of `order`.
pub fn folio_size(order: u8) -> u64 {
    bufwrite_engine::folio::folio_size(order) as u64
}

/// Parses a `--backend` value: `sync` or `uring`.
pub fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a backend (expected sync or uring)"))
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(bs @ (1024 | 2048 | 4096)) => Ok(bs),
        _ => Err(format!(
            "{s:?} is not a block size (expected 1024, 2048 or 4096)"
        )),
    }
}

/// Where a run's device comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A RAM device of exactly the size the run needs.
    Mem,
    /// A temporary image file in the system temp dir, sized for the run and
    /// deleted afterwards.
    TempImage,
    /// An existing image file or block device.
    Device(PathBuf),
}

/// An opened device, and the temporary image behind it (kept alive, and
/// deleted on drop or by a signal).
pub struct Opened {
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    // Declared (so dropped) before its guard: the file is gone before the
    // signal handler forgets it.
    _temp: Option<tempfile::NamedTempFile>,
    _guard: Option<RemoveOnSignal>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("device", &self.device.describe())
            .finish_non_exhaustive()
    }
}

/// Opens the device of `target` with room for at least `needed` bytes
/// (a RAM device or temporary image is made exactly that big).
pub fn open_target(target: &Target, needed: u64, backend: Backend) -> anyhow::Result<Opened> {
    let opened = match target {
        Target::Mem => {
            // The RAM device is allocated in one piece up front: more than
            // the memory there is would abort the process, not fail.
            let avail = memory_available();
            let size = usize::try_from(needed)
                .ok()
                .filter(|_| avail.is_none_or(|a| needed <= a))
                .with_context(|| {
                    format!(
                        "a RAM device of {needed} bytes does not fit in memory ({} bytes \
                         available)",
                        avail.map_or_else(|| "?".to_string(), |a| a.to_string())
                    )
                })?;
            Opened {
                device: Arc::new(Mem::with_block_size(size as u64, 512)),
                _temp: None,
                _guard: None,
            }
        }
        Target::TempImage => {
            let temp = tempfile::Builder::new()
                .prefix("bufwrite-")
                .suffix(".img")
                .tempfile()
                .context("cannot create a temporary image in the system temp dir")?;
            let guard = remove_on_signal(temp.path())?;
            temp.as_file().set_len(needed).with_context(|| {
                format!("cannot size {} to {needed} bytes", temp.path().display())
            })?;
            Opened {
                device: open_path(temp.path(), backend)?,
                _temp: Some(temp),
                _guard: Some(guard),
            }
        }
        Target::Device(path) => Opened {
            device: open_path(path, backend)?,
            _temp: None,
            _guard: None,
        },
    };
    let size = opened.device.size();
    if size < needed {
        anyhow::bail!(
            "{} holds {size} bytes; this run needs {needed}",
            opened.device.describe()
        );
    }
    Ok(opened)
}

/// The memory the kernel says can be allocated without swapping
/// (`MemAvailable` in /proc/meminfo), or `None` when it does not say.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Tells the user what opening `path` for writing recovered: a journal
/// replay, orphans a crash left (on stderr: the image was changed).
pub fn note_recovery(fs: &bufwrite_ext4::Ext4, path: &Path) {
    if let Some(r) = fs.recovery() {
        eprintln!("{}: journal recovered: {r}", path.display());
    }
    let orphans = fs.orphans();
    if !orphans.is_empty() {
        let list: Vec<String> = orphans.iter().map(ToString::to_string).collect();
        eprintln!(
            "{}: finished the orphan list a crash left: {}",
            path.display(),
            list.join(", ")
        );
    }
}

/// Opens an image file or block device with `backend` (io_uring always
/// O_DIRECT; sync buffered).
pub fn open_path(path: &Path, backend: Backend) -> anyhow::Result<Arc<dyn BlockDevice>> {
    let opts = OpenOptions {
        backend,
        // io_uring always goes O_DIRECT; the sync baseline stays buffered
        // unless a caller asks otherwise.
        direct: backend == Backend::Uring,
        ..OpenOptions::default()
    };
    open_device(path, opts).map_err(|e| with_advice(e, backend))
}

/// An engine error from opening a device, with what to do about it where
/// the command line has an answer. The engine states facts (it knows no
/// flags); the advice is the CLI's. Its message already names the path.
pub fn with_advice(e: bufwrite_engine::Error, backend: Backend) -> anyhow::Error {
    let advice = match &e {
        e if e.is_direct_io_unsupported() && backend == Backend::Uring => {
            Some("cannot use the uring backend here (`--backend sync` does not need O_DIRECT)")
        }
        bufwrite_engine::Error::UringSetup { .. } => {
            Some("cannot use the uring backend (`--backend sync` does not need io_uring)")
        }
        _ => None,
    };
    let e = anyhow::Error::new(e);
    match advice {
        Some(advice) => e.context(advice),
        None => e,
    }
}

// ---- Flags given, and warnings for flags a target ignores ----

/// Which of the shared flags the command line gave (their defaults make the
/// parsed values unable to tell), for the warnings about ignored ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    /// `--backend`.
    pub backend: bool,
    /// `--block-size`.
    pub block_size: bool,
    /// `--image`.
    pub image: bool,
    /// `--mem`.
    pub mem: bool,
}

/// What [`record_given`] recorded for this process's one command.
static GIVEN: OnceLock<Given> = OnceLock::new();

/// Which of the flags `m` (a subcommand's matches) holds were given on the
/// command line; ids the subcommand does not have count as not given.
pub fn given_flags(m: &clap::ArgMatches) -> Given {
    let given = |id: &str| {
        // `value_source` panics (in debug builds) on an id the command
        // does not define: ask only about ids that are there.
        m.ids().any(|i| i.as_str() == id) && m.value_source(id) == Some(ValueSource::CommandLine)
    };
    Given {
        backend: given("backend"),
        block_size: given("block_size"),
        image: given("image"),
        mem: given("mem"),
    }
}

/// Records which shared flags this command was given (once; `main` calls
/// it for the commands that take [`CommonArgs`]) and warns at once about the
/// ignored flags whose replacement is known without opening anything:
/// `--backend` with `--mem`, whose RAM device does no device I/O.
pub fn record_given(given: Given) {
    let _ = GIVEN.set(given);
    if given.mem && given.backend {
        warn("--backend is ignored with --mem: a RAM device does no device I/O");
    }
}

/// Warns, once per process, that `--block-size` was given with `--image`
/// and `image_block_size` (the image's own) is used instead. Called where
/// an existing ext4 image is opened, so that every command taking
/// `--image` gets it.
pub fn warn_block_size_ignored(image_block_size: u32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let given = GIVEN.get().copied().unwrap_or_default();
    if given.image && given.block_size && !WARNED.swap(true, Ordering::Relaxed) {
        warn(&format!(
            "--block-size is ignored with --image: the image's block size \
             ({image_block_size}) is used"
        ));
    }
}

/// One warning line on stderr.
pub fn warn(msg: &str) {
    eprintln!("warning: {msg}");
}

// ---- Temporary files removed on SIGINT, SIGTERM and SIGHUP ----
//
// A temporary image is deleted when its owner drops, which a signal's
// default action skips: the process dies where it stands. So the first
// registration starts a thread (signal-hook's iterator: the handler itself
// only writes to a pipe, the deleting happens on that thread, outside
// signal context) that on the first of those signals kills the helper
// programs still running on a temporary file (mkfs.ext4, debugfs: a
// SIGTERM sent to this process alone does not reach them, and mkfs would
// create its image anew), deletes every registered path and exits with
// 128 + the signal number, as a shell reports a death by that signal.

/// Paths to delete, and pidfds of helper programs to kill, each under the
/// id of its guard.
struct Registry {
    paths: Vec<(u64, PathBuf)>,
    children: Vec<(u64, OwnedFd)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    paths: Vec::new(),
    children: Vec::new(),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding it leaves a consistent list behind.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the signal thread, once; its error, if it could not start.
fn install_signal_cleanup() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("bufwrite-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    clean_up_and_exit(sig);
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    installed.clone().map_err(|e| {
        anyhow::anyhow!("cannot install the signal handler that removes temporary files: {e}")
    })
}

fn clean_up_and_exit(sig: i32) -> ! {
    // Held until exit: a guard dropped meanwhile waits, and nothing is
    // registered behind the sweep's back.
    let reg = registry();
    for (_, pidfd) in &reg.children {
        // Gone already is fine: a pidfd names exactly that process, so a
        // reused pid is never hit.
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    }
    for (_, path) in &reg.paths {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
    }
    std::process::exit(128 + sig);
}

/// Deletes a temporary file or directory (with its contents) if SIGINT,
/// SIGTERM or SIGHUP ends the process while the guard lives. Drop the
/// guard after the temporary object itself (declare it after it), so that
/// no moment is left when the path exists unregistered.
#[must_use = "the path is forgotten when the guard drops"]
#[derive(Debug)]
pub struct RemoveOnSignal {
    id: u64,
}

/// Registers `path` for deletion on a signal (see [`RemoveOnSignal`]).
pub fn remove_on_signal(path: &Path) -> anyhow::Result<RemoveOnSignal> {
    install_signal_cleanup()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().paths.push((id, path.to_path_buf()));
    Ok(RemoveOnSignal { id })
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        registry().paths.retain(|(id, _)| *id != self.id);
    }
}

/// Runs a helper program to completion and returns its output, killed by
/// the signal cleanup if a signal ends this process meanwhile.
pub fn run_helper(cmd: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The child is not reaped before `wait_with_output`, so its pid is
    // still its own here. No pidfd (a kernel before 5.3): not killed.
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Some(fd) =
        pid.and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    {
        registry().children.push((id, fd));
    }
    let out = child.wait_with_output();
    registry().children.retain(|(i, _)| *i != id);
    out
}

/// A Flat file at device bytes `[base, base + capacity)` with current size
/// `size`, written through `path` (built by `paths::make_path`, or a
/// counting path for the untimed counting pass).
pub fn flat_file(
    device: &Arc<dyn BlockDevice>,
    base: u64,
    capacity: u64,
    size: u64,
    common: &CommonArgs,
    path: Box<dyn WritePath>,
) -> anyhow::Result<File> {
    flat_file_in(
        &CacheMemory::with_defaults(),
        device,
        base,
        capacity,
        size,
        common,
        path,
    )
}

/// As [`flat_file`], the file's cache charged to `memory` (a run's
/// `--cache-budget`, shared by the files given the same one).
pub fn flat_file_in(
    memory: &Arc<CacheMemory>,
    device: &Arc<dyn BlockDevice>,
    base: u64,
    capacity: u64,
    size: u64,
    common: &CommonArgs,
    path: Box<dyn WritePath>,
) -> anyhow::Result<File> {
    let flat = Flat::new(base, capacity, common.block_size, size)
        .context("cannot lay out the file on the device")?;
    let file = File::open_in(
        memory,
        Arc::clone(device),
        Arc::new(flat),
        path,
        common.file_options(),
    )
    .with_context(|| format!("cannot open a file on {}", device.describe()))?;
    Ok(file)
}

/// `n` rounded up to a multiple of `unit` (a power of two).
pub fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit) * unit
}

/// Writes the first `size` bytes of the file with pattern bytes (seed 1,
/// every folio it covers) and fsyncs: every folio uptodate and clean before
/// the timed calls. A Flat file grows to `size`; an ext4 file is overwritten
/// in place (a larger file keeps its tail, which timed calls never touch).
pub fn prefill(file: &File, size: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = CHUNK.min(size - off);
        crate::trace::fill_pattern(1, off, &mut buf[..n as usize]);
        file.pwrite(off, &buf[..n as usize])?;
        off += n;
    }
    file.fsync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_and_backend_flags() {
        assert_eq!(parse_block_size("2048"), Ok(2048));
        assert!(parse_block_size("512")
            .unwrap_err()
            .contains("1024, 2048 or 4096"));
        assert_eq!(parse_backend("uring"), Ok(Backend::Uring));
        assert!(parse_backend("aio").is_err());
    }

    #[test]
    fn open_errors_get_the_command_lines_advice_and_keep_the_engines_facts() {
        use bufwrite_engine::Error;
        let einval = || std::io::Error::from_raw_os_error(22);
        let no_direct = || Error::Open {
            path: "/dev/shm/x".into(),
            direct: true,
            source: einval(),
        };
        let text = format!("{:#}", with_advice(no_direct(), Backend::Uring));
        assert!(
            text.contains("`--backend sync` does not need O_DIRECT"),
            "{text}"
        );
        assert!(text.contains("cannot open /dev/shm/x"), "{text}");
        assert_eq!(text.matches("Invalid argument").count(), 1, "{text}");
        let ring = Error::UringSetup {
            what: "io_uring is unavailable on this system (test)".into(),
            source: std::io::Error::from_raw_os_error(1),
        };
        let text = format!("{:#}", with_advice(ring, Backend::Uring));
        assert!(
            text.contains("`--backend sync` does not need io_uring"),
            "{text}"
        );
        // Nothing to advise: the engine's message alone.
        let text = format!("{:#}", with_advice(no_direct(), Backend::Sync));
        assert!(!text.contains("--backend"), "{text}");
    }

    #[test]
    fn a_ram_device_larger_than_memory_is_refused_not_allocated() {
        let e = open_target(&Target::Mem, u64::MAX / 2, Backend::Sync).unwrap_err();
        assert!(e.to_string().contains("does not fit in memory"), "{e}");
    }

    #[test]
    fn cache_budgets_parse_and_small_ones_are_refused() {
        assert_eq!(parse_cache_budget("128M"), Ok(128 << 20));
        assert_eq!(parse_cache_budget("64K"), Ok(64 << 10));
        let e = parse_cache_budget("1K").unwrap_err();
        assert!(e.contains("below the minimum of 64K"), "{e}");
        assert!(parse_cache_budget("0").is_err());
        assert!(parse_cache_budget("lots")
            .unwrap_err()
            .contains("not a size"));
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        assert!(peak_rss().is_some_and(|b| b > 0));
        let j = mem_stats_json(&MemStats::default());
        assert_eq!(j["peak_cached"], 0);
        assert_eq!(j.as_object().unwrap().len(), 11);
    }

    #[test]
    fn mem_target_is_sized_as_asked() {
        let opened = open_target(&Target::Mem, 1 << 20, Backend::Sync).unwrap();
        assert_eq!(opened.device.size(), 1 << 20);
    }
}
