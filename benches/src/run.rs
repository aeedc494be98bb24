//! `bufwrite run -- CMD`: runs an unmodified program with the preload
//! library (`libbufwrite_preload.so`), so that its file calls under the
//! mount directory are served by a bufwrite mount of an ext4 image.
//!
//! This command does no file I/O of its own for CMD: it checks every flag,
//! makes (or checks) the image, finds the library, sets the environment the
//! library reads (the contract of issue 13: `BUFWRITE_IMAGE`,
//! `BUFWRITE_MOUNT_AT`, `BUFWRITE_PATH`, ...) plus `LD_PRELOAD`, runs CMD
//! with stdin, stdout and stderr inherited, and exits with its status. The
//! environment is inherited by everything CMD starts, so a script of
//! several programs runs on one image. Afterwards it merges the per-process
//! statistics (`--stats`) and checks the image with `e2fsck -fn`.

use crate::image::find_tool;
use crate::setup::{memory_available, open_path, parse_backend, parse_cache_budget, run_helper};
use crate::units::{human, parse_size, Units};
use anyhow::{bail, Context, Result};
use bufwrite_engine::device::Backend;
use bufwrite_engine::folio::MAX_ORDER;
use bufwrite_engine::AllocPolicy;
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// The library's file name (what `cargo build -p bufwrite-preload` makes).
pub const LIBRARY: &str = "libbufwrite_preload.so";

/// Size of the default temporary image.
pub const DEFAULT_IMAGE_SIZE: u64 = 256 << 20;

/// Smallest `--mem` image: below it mkfs.ext4 leaves too little room for a
/// journal and the files of any real program.
pub const MIN_MEM_SIZE: u64 = 16 << 20;

/// Where `--mem` makes its image: tmpfs, so the image lives in RAM.
const SHM_DIR: &str = "/dev/shm";

/// How to build the library, for the error when it is not found.
const BUILD_HINT: &str = "build it with `cargo build --release -p bufwrite-preload` \
     (it is made in target/release/), then pass --preload PATH or set BUFWRITE_PRELOAD";

/// Arguments of `bufwrite run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An existing ext4 image to run on (never mkfs'ed, never deleted).
    /// Default: a temporary 256M image made with mkfs.ext4 in the system
    /// temp dir and removed at the end.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["mem", "device"])]
    image: Option<PathBuf>,
    /// A temporary image of SIZE (K/M/G suffixes, at least 16M) made in
    /// /dev/shm (tmpfs: in RAM), removed at the end.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "device")]
    mem: Option<u64>,
    /// An unmounted block device (or image file) holding an ext4
    /// filesystem: as --image.
    #[arg(long, value_name = "PATH")]
    device: Option<PathBuf>,
    /// The absolute directory whose paths are bufwrite files.
    #[arg(long, value_name = "DIR", default_value = "/bufwrite")]
    mount_at: PathBuf,
    /// Write path: iomap, bh-legacy, bh-tailskip or bh-seek.
    #[arg(long, value_name = "P", default_value = "iomap")]
    path: String,
    /// Device I/O backend: sync (pread/pwrite) or uring (io_uring, O_DIRECT).
    #[arg(long, value_name = "B", default_value = "sync", value_parser = parse_backend)]
    backend: Backend,
    /// Largest folio order (0..=9: 4 KiB .. 2 MiB); folios are sized from
    /// each write, up to it.
    #[arg(long, value_name = "N", default_value_t = MAX_ORDER,
          value_parser = clap::value_parser!(u8).range(0..=9))]
    order: u8,
    /// Most bytes of file data the page cache may hold (K/M/G suffixes, at
    /// least 64K). Default: the engine's.
    #[arg(long, value_name = "SIZE", value_parser = parse_cache_budget)]
    cache_budget: Option<u64>,
    /// ext4 allocation policy at writeback: unwritten or ordered.
    #[arg(long, value_name = "POLICY", default_value = "unwritten", value_parser = parse_policy)]
    policy: AllocPolicy,
    /// Write every process's counters, and every call on a mount path the
    /// library did not serve, to this file as one JSON document.
    #[arg(long, value_name = "PATH")]
    stats: Option<PathBuf>,
    /// A call on a mount path that the library does not serve fails
    /// (EOPNOTSUPP) instead of only being recorded: for CI.
    #[arg(long)]
    strict: bool,
    /// Record every call on one mount file to this trace, in the replay
    /// grammar (`bufwrite replay --trace TRACE`): created or truncated
    /// before CMD runs. The file is --record-file, else the first mount
    /// file CMD (or anything it starts) opens.
    #[arg(long, value_name = "TRACE")]
    record: Option<PathBuf>,
    /// The mount file --record records (an absolute path under
    /// --mount-at, e.g. /bufwrite/f).
    #[arg(long, value_name = "PATH", requires = "record")]
    record_file: Option<PathBuf>,
    /// The preload library. Default: $BUFWRITE_PRELOAD, else
    /// libbufwrite_preload.so next to this executable or in its deps/.
    #[arg(long, value_name = "LIB")]
    preload: Option<PathBuf>,
    /// Keep the temporary image afterwards and print its path.
    #[arg(long)]
    keep_image: bool,
    /// The program and its arguments (after `--`).
    #[arg(last = true, value_name = "CMD", value_parser = clap::value_parser!(OsString))]
    cmd: Vec<OsString>,
}

fn parse_policy(s: &str) -> Result<AllocPolicy, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a policy (expected unwritten or ordered)"))
}

/// Where the run's image comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A new image of this size in this directory, deleted afterwards
    /// unless `--keep-image`.
    Temp { dir: PathBuf, size: u64 },
    /// The user's image or device (absolute).
    Given(PathBuf),
}

/// Everything the flags say, checked, before anything is made or run.
#[derive(Debug)]
struct Plan {
    target: Target,
    mount_at: PathBuf,
    library: PathBuf,
    stats: Option<PathBuf>,
    /// `--record`, absolute, and `--record-file`, checked.
    record: Option<(PathBuf, Option<PathBuf>)>,
}

/// Runs the command; returns the exit status `bufwrite` should exit with
/// (CMD's own, or 128 + N when a signal N ended it).
pub fn run(args: Args) -> Result<i32> {
    let plan = check(&args)?;
    // From here until CMD has exited, SIGINT/SIGQUIT (which the terminal
    // sends to CMD as well) must not kill this process before it can clean
    // up, and SIGTERM/SIGHUP are passed on to CMD: the exit then follows
    // CMD's, as a shell's does.
    let signals = Signals::install()?;

    let image = match &plan.target {
        Target::Temp { dir, size } => Some(make_image(dir, *size)?),
        Target::Given(_) => None,
    };
    let image_path = match (&image, &plan.target) {
        (Some(temp), _) => temp.to_path_buf(),
        (None, Target::Given(p)) => p.clone(),
        (None, Target::Temp { .. }) => unreachable!("a temporary target has an image"),
    };
    check_image(&image_path, args.backend)?;

    // The library appends one JSON line per process here; merged afterwards.
    let stats_lines = match &plan.stats {
        Some(_) => Some(
            tempfile::Builder::new()
                .prefix("bufwrite-stats-")
                .suffix(".jsonl")
                .tempfile()
                .context("cannot create the statistics file in the system temp dir")?
                .into_temp_path(),
        ),
        None => None,
    };
    if let Some(lines) = &stats_lines {
        check_outside_mount(lines, &plan.mount_at, "the statistics file")?;
    }

    if let Some((trace, _)) = &plan.record {
        std::fs::File::create(trace)
            .with_context(|| format!("--record {}: cannot create it", trace.display()))?;
    }

    let mut cmd = Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..]);
    set_env(&mut cmd, &args, &plan, &image_path, stats_lines.as_deref());

    if let Some(sig) = signals.pending() {
        // Asked to stop while the image was being made: nothing has run.
        return Ok(128 + sig);
    }
    let status =
        match cmd.spawn() {
            Ok(mut child) => {
                signals.forward_to(child.id());
                let status = child.wait();
                signals.forward_to(0);
                exit_code(status.with_context(|| {
                    format!("cannot wait for {}", args.cmd[0].to_string_lossy())
                })?)
            }
            Err(e) => {
                // As a shell reports it: 127 not found, 126 not executable.
                eprintln!(
                    "bufwrite: cannot run {}: {e}",
                    args.cmd[0].to_string_lossy()
                );
                if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                }
            }
        };

    if let (Some(out), Some(lines)) = (&plan.stats, &stats_lines) {
        write_stats(lines, out)?;
    }
    if let Some((trace, _)) = &plan.record {
        report_trace(trace)?;
    }
    fsck(&image_path);
    if let Some(temp) = image {
        if args.keep_image {
            let kept = temp.keep().context("cannot keep the temporary image")?;
            eprintln!("bufwrite: kept the image at {}", kept.display());
        }
        // Otherwise dropped here: the image is deleted.
    }
    Ok(status)
}

// ---- Checking the flags ----

/// Checks every flag, and finds the library, before anything is made.
fn check(args: &Args) -> Result<Plan> {
    if args.cmd.is_empty() {
        bail!(
            "no command to run: give it after `--`, e.g. \
             `bufwrite run -- sh -c 'echo hi > /bufwrite/x && cat /bufwrite/x'`"
        );
    }
    crate::paths::make_path(&args.path).context("--path")?;
    let mount_at = check_mount_at(&args.mount_at)?;
    let target = match (&args.image, &args.device, args.mem) {
        (Some(p), None, None) => Target::Given(check_given(p, "--image")?),
        (None, Some(p), None) => Target::Given(check_given(p, "--device")?),
        (None, None, Some(size)) => Target::Temp {
            dir: PathBuf::from(SHM_DIR),
            size: check_mem(size)?,
        },
        (None, None, None) => Target::Temp {
            dir: std::env::temp_dir(),
            size: DEFAULT_IMAGE_SIZE,
        },
        _ => bail!("give at most one of --image, --mem and --device"),
    };
    match &target {
        Target::Given(p) => {
            if args.keep_image {
                bail!(
                    "--keep-image keeps a temporary image; {} is yours and is never deleted",
                    p.display()
                );
            }
            check_outside_mount(p, &mount_at, "the image")?;
        }
        Target::Temp { dir, .. } => {
            let dir = absolute(dir)?;
            check_outside_mount(&dir, &mount_at, "the temporary image's directory")?;
        }
    }
    let library = find_library(args.preload.as_deref())?;
    check_outside_mount(&library, &mount_at, "the preload library")?;
    let stats = match &args.stats {
        Some(p) => Some(check_stats_path(p, &mount_at)?),
        None => None,
    };
    let record = match &args.record {
        Some(p) => {
            let trace = check_file_path(p, &mount_at, "--record")?;
            if stats.as_ref() == Some(&trace) {
                bail!("--record and --stats name the same file");
            }
            let file = match &args.record_file {
                Some(f) => Some(check_record_file(f, &mount_at)?),
                None => None,
            };
            Some((trace, file))
        }
        None => None,
    };
    Ok(Plan {
        target,
        mount_at,
        library,
        stats,
        record,
    })
}

/// `--mount-at`: absolute, not the root (every path would be a bufwrite
/// file), and without `.` or `..` (the library compares normalised paths
/// against it). A trailing slash is dropped.
fn check_mount_at(dir: &Path) -> Result<PathBuf> {
    if !dir.is_absolute() {
        bail!(
            "--mount-at {}: the mount directory must be an absolute path (e.g. /bufwrite)",
            dir.display()
        );
    }
    let mut clean = PathBuf::new();
    for c in dir.components() {
        match c {
            Component::RootDir | Component::Normal(_) => clean.push(c),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => bail!(
                "--mount-at {}: the mount directory must not contain `.` or `..`",
                dir.display()
            ),
        }
    }
    if clean == Path::new("/") {
        bail!("--mount-at /: every path would be a bufwrite file; name a directory");
    }
    if clean.as_os_str().as_encoded_bytes().contains(&b'\0') {
        bail!("--mount-at must not contain a NUL byte");
    }
    Ok(clean)
}

/// An `--image` or `--device` path: it must exist and not be a directory;
/// returned absolute (CMD may change directory).
fn check_given(p: &Path, flag: &str) -> Result<PathBuf> {
    let meta = std::fs::metadata(p).with_context(|| format!("{flag} {}", p.display()))?;
    if meta.is_dir() {
        bail!(
            "{flag} {}: is a directory, not an image or device",
            p.display()
        );
    }
    std::fs::canonicalize(p).with_context(|| format!("{flag} {}", p.display()))
}

/// A `--mem` size: at least [`MIN_MEM_SIZE`], and room in memory and in
/// /dev/shm.
fn check_mem(size: u64) -> Result<u64> {
    if size < MIN_MEM_SIZE {
        bail!(
            "--mem {}: an image needs at least {}",
            human(size, Units::Flag),
            human(MIN_MEM_SIZE, Units::Flag)
        );
    }
    if !Path::new(SHM_DIR).is_dir() {
        bail!("--mem needs {SHM_DIR} (tmpfs), which this system does not have");
    }
    if let Some(avail) = memory_available() {
        if size > avail {
            bail!(
                "--mem {}: more than the memory available ({} bytes)",
                human(size, Units::Flag),
                avail
            );
        }
    }
    if let Ok(st) = rustix::fs::statvfs(SHM_DIR) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if size > free {
            bail!(
                "--mem {}: {SHM_DIR} has only {free} bytes free",
                human(size, Units::Flag)
            );
        }
    }
    Ok(size)
}

/// `--stats PATH`: its directory must exist and PATH must not be a
/// directory or a mount path; returned absolute.
fn check_stats_path(p: &Path, mount_at: &Path) -> Result<PathBuf> {
    check_file_path(p, mount_at, "--stats")
}

/// A file this command writes (`--stats`, `--record`): its directory must
/// exist and it must not be a directory or a mount path; returned absolute
/// (CMD may change directory).
fn check_file_path(p: &Path, mount_at: &Path, flag: &str) -> Result<PathBuf> {
    let abs = absolute(p)?;
    check_outside_mount(&abs, mount_at, flag)?;
    if abs.is_dir() {
        bail!("{flag} {}: is a directory", p.display());
    }
    match abs.parent() {
        Some(dir) if dir.is_dir() => {}
        _ => bail!("{flag} {}: its directory does not exist", p.display()),
    }
    Ok(abs)
}

/// `--record-file`: an absolute path under the mount directory, without
/// `.` or `..` (the library compares it with the normalised paths it
/// serves).
fn check_record_file(f: &Path, mount_at: &Path) -> Result<PathBuf> {
    let clean = check_mount_at(f).with_context(|| format!("--record-file {}", f.display()))?;
    if clean == mount_at || !clean.starts_with(mount_at) {
        bail!(
            "--record-file {}: must name a file under --mount-at {}",
            f.display(),
            mount_at.display()
        );
    }
    Ok(clean)
}

/// What a recorded trace holds: the file its `# file` line names and its
/// operation lines (neither blank nor comments).
fn trace_summary(text: &str) -> (Option<&str>, usize) {
    let file = text.lines().next().and_then(|l| l.strip_prefix("# file "));
    let ops = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    (file, ops)
}

/// After CMD: says on stderr how many lines were recorded, for which file.
fn report_trace(trace: &Path) -> Result<()> {
    let text = std::fs::read_to_string(trace)
        .with_context(|| format!("cannot read the trace {}", trace.display()))?;
    match trace_summary(&text) {
        (Some(file), n) => eprintln!(
            "bufwrite run: recorded {n} line{} for {file} in {}",
            if n == 1 { "" } else { "s" },
            trace.display()
        ),
        (None, _) => crate::setup::warn(&format!(
            "nothing was recorded in {} (did CMD open a mount file, and was the library loaded?)",
            trace.display()
        )),
    }
    Ok(())
}

/// `p` made absolute against the current directory (not resolved).
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// Refuses a file this command hands to the library (the image, the
/// library, the statistics file) that lies under the mount directory: the
/// library would take it for a bufwrite file.
fn check_outside_mount(p: &Path, mount_at: &Path, what: &str) -> Result<()> {
    if p.starts_with(mount_at) {
        bail!(
            "{what} ({}) is inside --mount-at {}: choose another mount directory",
            p.display(),
            mount_at.display()
        );
    }
    Ok(())
}

/// The library: `--preload`, else `$BUFWRITE_PRELOAD`, else
/// [`LIBRARY`] next to this executable or in its `deps/`. Returned
/// absolute, since CMD may change directory.
fn find_library(flag: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os("BUFWRITE_PRELOAD").filter(|v| !v.is_empty());
    let (given, how) = match (flag, &env) {
        (Some(p), _) => (Some(p.to_path_buf()), "--preload"),
        (None, Some(v)) => (Some(PathBuf::from(v)), "BUFWRITE_PRELOAD"),
        (None, None) => (None, ""),
    };
    let lib = match given {
        Some(p) => {
            if !p.is_file() {
                bail!("{how} {}: no such library file; {BUILD_HINT}", p.display());
            }
            p
        }
        None => {
            let exe = std::env::current_exe().context("cannot find this executable's path")?;
            let dir = exe.parent().unwrap_or(Path::new("/"));
            let candidates = [dir.join(LIBRARY), dir.join("deps").join(LIBRARY)];
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => p.clone(),
                None => bail!(
                    "the preload library {LIBRARY} was not found (no --preload, no \
                     BUFWRITE_PRELOAD, not in {} or {}); {BUILD_HINT}",
                    candidates[0].parent().unwrap_or(dir).display(),
                    candidates[1].parent().unwrap_or(dir).display()
                ),
            }
        }
    };
    let lib = std::fs::canonicalize(&lib).with_context(|| format!("{}", lib.display()))?;
    // ld.so splits LD_PRELOAD at spaces and colons.
    if lib
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|b| matches!(b, b' ' | b':'))
    {
        bail!(
            "the preload library's path {} holds a space or a colon, which LD_PRELOAD \
             cannot carry: move it",
            lib.display()
        );
    }
    if !is_elf(&lib) {
        crate::setup::warn(&format!(
            "{} is not an ELF file: the dynamic loader will refuse to preload it and CMD will \
             run on the kernel alone",
            lib.display()
        ));
    }
    Ok(lib)
}

/// True when the file starts with the ELF magic.
fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

// ---- The image ----

/// Makes a temporary ext4 image of `size` bytes in `dir`:
/// `mkfs.ext4 -q -F -b 4096 IMG SIZEk` (with its default journal, clean).
fn make_image(dir: &Path, size: u64) -> Result<tempfile::TempPath> {
    let mkfs = find_tool("mkfs.ext4")?;
    let image = tempfile::Builder::new()
        .prefix("bufwrite-run-")
        .suffix(".ext4.img")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary image in {}", dir.display()))?
        .into_temp_path();
    let size_kib = size.div_ceil(1 << 10);
    let out = run_helper(
        Command::new(&mkfs)
            .args(["-q", "-F", "-b", "4096"])
            .arg(&image)
            .arg(format!("{size_kib}k")),
    )
    .with_context(|| format!("cannot run {}", mkfs.display()))?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 failed on {} ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(image)
}

/// Opens the image as the library will (read-write, with `backend`: a
/// mounted image, one another process holds, or one the backend cannot
/// open is refused here, with advice) and reads it as ext4; then lets go.
fn check_image(path: &Path, backend: Backend) -> Result<()> {
    let device = open_path(path, backend)?;
    let fs = bufwrite_ext4::Ext4::open(Arc::clone(&device))
        .with_context(|| format!("cannot read {} as ext4", path.display()))?;
    crate::setup::note_recovery(&fs, path);
    Ok(())
}

/// `e2fsck -fn` on the image (never modifying it), when e2fsck is there:
/// a warning if it is not clean.
fn fsck(image: &Path) {
    let Ok(e2fsck) = find_tool("e2fsck") else {
        crate::setup::warn("e2fsck not found: the image was not checked");
        return;
    };
    match run_helper(Command::new(&e2fsck).arg("-fn").arg(image)) {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(6).collect();
            crate::setup::warn(&format!(
                "the image {} is not clean: e2fsck -fn exited with {}:\n  {}",
                image.display(),
                out.status,
                first.join("\n  ")
            ));
        }
        Err(e) => crate::setup::warn(&format!("cannot run {}: {e}", e2fsck.display())),
    }
}

// ---- CMD's environment ----

/// Sets the contract's variables (and `LD_PRELOAD`, the library first) on
/// `cmd`; the optional ones CMD's own environment may hold are removed
/// when this run does not set them, so the contract's defaults apply.
fn set_env(cmd: &mut Command, args: &Args, plan: &Plan, image: &Path, stats: Option<&Path>) {
    let mut preload = plan.library.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload)
        .env("BUFWRITE_IMAGE", image)
        .env("BUFWRITE_MOUNT_AT", &plan.mount_at)
        .env("BUFWRITE_PATH", &args.path)
        .env("BUFWRITE_BACKEND", args.backend.to_string())
        .env("BUFWRITE_ORDER", args.order.to_string())
        .env("BUFWRITE_POLICY", args.policy.to_string());
    let record = plan.record.as_ref();
    let optional: [(&str, Option<OsString>); 5] = [
        (
            "BUFWRITE_CACHE_BUDGET",
            args.cache_budget.map(|b| b.to_string().into()),
        ),
        ("BUFWRITE_STATS", stats.map(|p| p.as_os_str().to_owned())),
        ("BUFWRITE_STRICT", args.strict.then(|| "1".into())),
        (
            "BUFWRITE_RECORD",
            record.map(|(t, _)| t.as_os_str().to_owned()),
        ),
        (
            "BUFWRITE_RECORD_FILE",
            record.and_then(|(_, f)| f.as_ref().map(|f| f.as_os_str().to_owned())),
        ),
    ];
    for (name, value) in optional {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
}

/// A shell's exit status for CMD's: its code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

// ---- Signals while CMD runs ----

/// This process's handling of SIGINT, SIGQUIT, SIGTERM and SIGHUP for the
/// run: caught (so it outlives CMD and cleans up); SIGTERM and SIGHUP are
/// sent on to CMD while it runs (SIGINT and SIGQUIT from a terminal reach
/// CMD by themselves: it is in the same process group).
struct Signals {
    child: Arc<AtomicI32>,
    pending: Arc<AtomicI32>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGQUIT, SIGTERM, SIGHUP])
            .context("cannot install the signal handlers of `bufwrite run`")?;
        let child = Arc::new(AtomicI32::new(0));
        let pending = Arc::new(AtomicI32::new(0));
        let (c, p) = (Arc::clone(&child), Arc::clone(&pending));
        std::thread::Builder::new()
            .name("bufwrite-run-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let pid = c.load(Ordering::SeqCst);
                    if pid == 0 {
                        p.store(sig, Ordering::SeqCst);
                        continue;
                    }
                    if sig == SIGTERM || sig == SIGHUP {
                        if let (Some(pid), Some(sig)) = (
                            rustix::process::Pid::from_raw(pid),
                            rustix::process::Signal::from_named_raw(sig),
                        ) {
                            // Gone already: nothing to pass on.
                            let _ = rustix::process::kill_process(pid, sig);
                        }
                    }
                }
            })
            .context("cannot start the signal thread of `bufwrite run`")?;
        Ok(Signals { child, pending })
    }

    /// Sends SIGTERM/SIGHUP on to `pid` from now on (0: to no one). The
    /// child is not reaped while set, so its pid is still its own.
    fn forward_to(&self, pid: u32) {
        self.child
            .store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    }

    /// A signal that arrived while no CMD ran.
    fn pending(&self) -> Option<i32> {
        Some(self.pending.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

// ---- Statistics ----

/// What `--stats` found, for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    processes: usize,
    served: u64,
    not_served: u64,
    unparsed: usize,
}

/// Merges the library's per-process lines into one JSON document:
/// `{"processes":[...], "totals":{...}}`. Totals sum every counter of the
/// same name across processes (`peak_*` counters take the largest), count
/// the calls served (the sum of `calls`) and the ones not served.
fn merge_stats(text: &str) -> (Value, Summary) {
    let mut processes = Vec::new();
    let mut unparsed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => processes.push(v),
            _ => unparsed += 1,
        }
    }
    let mut sums = Map::new();
    let mut not_served = Vec::new();
    for p in &processes {
        if let Value::Object(obj) = p {
            for (k, v) in obj {
                match (k.as_str(), v) {
                    ("pid", _) => {}
                    ("not_served", Value::Array(calls)) => not_served.extend(calls.iter().cloned()),
                    (_, Value::Object(inner)) => {
                        let entry = sums
                            .entry(k.clone())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(total) = entry {
                            add_counters(total, inner);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let served = sums
        .get("calls")
        .and_then(Value::as_object)
        .map_or(0, |c| c.values().filter_map(Value::as_u64).sum());
    let summary = Summary {
        processes: processes.len(),
        served,
        not_served: not_served.len() as u64,
        unparsed,
    };
    let mut totals = Map::new();
    totals.insert("processes".into(), json!(summary.processes));
    totals.insert("calls_served".into(), json!(summary.served));
    totals.insert("not_served_count".into(), json!(summary.not_served));
    totals.insert("not_served".into(), Value::Array(not_served));
    if unparsed > 0 {
        totals.insert("unparsed_lines".into(), json!(unparsed));
    }
    totals.extend(sums);
    (json!({"processes": processes, "totals": totals}), summary)
}

/// Adds the numeric counters of `from` into `into` (`peak_*`: the larger).
fn add_counters(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        let Some(n) = v.as_u64() else { continue };
        let old = into.get(k).and_then(Value::as_u64).unwrap_or(0);
        let new = if k.starts_with("peak_") {
            old.max(n)
        } else {
            old.saturating_add(n)
        };
        into.insert(k.clone(), json!(new));
    }
}

/// Reads the per-process lines, writes the merged document to `out` and
/// prints the one-line summary.
fn write_stats(lines: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(lines)
        .with_context(|| format!("cannot read the statistics lines {}", lines.display()))?;
    let (doc, s) = merge_stats(&text);
    let mut body = serde_json::to_string_pretty(&doc)?;
    body.push('\n');
    std::fs::write(out, body).with_context(|| format!("cannot write {}", out.display()))?;
    if s.processes == 0 {
        crate::setup::warn(&format!(
            "no process wrote statistics (was the library loaded, and did CMD touch the \
             mount?); {} holds an empty document",
            out.display()
        ));
    } else {
        eprintln!(
            "bufwrite run: {} process{}: {} calls served, {} not served (see {})",
            s.processes,
            if s.processes == 1 { "" } else { "es" },
            s.served,
            s.not_served,
            out.display()
        );
    }
    if s.unparsed > 0 {
        crate::setup::warn(&format!(
            "{} statistics line(s) were not JSON objects and were left out",
            s.unparsed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_at_must_be_absolute_clean_and_not_root() {
        assert_eq!(
            check_mount_at(Path::new("/bufwrite/")).unwrap(),
            PathBuf::from("/bufwrite")
        );
        assert_eq!(
            check_mount_at(Path::new("/a//b")).unwrap(),
            PathBuf::from("/a/b")
        );
        let e = check_mount_at(Path::new("bufwrite"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = check_mount_at(Path::new("/a/../b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`..`"), "{e}");
        let e = check_mount_at(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("every path"), "{e}");
    }

    #[test]
    fn stats_lines_merge_into_processes_and_totals() {
        let text = r#"{"pid":10,"calls":{"open":2,"write":5},"not_served":[{"call":"mmap","path":"/bufwrite/x"}],"device":{"reads":1,"writes":3,"bytes_written":8192},"mem":{"cached":4096,"peak_cached":8192}}

{"pid":11,"calls":{"open":1,"read":4},"not_served":[],"device":{"reads":2,"writes":0,"bytes_written":0},"mem":{"cached":0,"peak_cached":4096}}
not json
"#;
        let (doc, s) = merge_stats(text);
        assert_eq!(
            s,
            Summary {
                processes: 2,
                served: 12,
                not_served: 1,
                unparsed: 1
            }
        );
        assert_eq!(doc["processes"].as_array().unwrap().len(), 2);
        assert_eq!(doc["processes"][1]["pid"], 11);
        let t = &doc["totals"];
        assert_eq!(t["calls"]["open"], 3);
        assert_eq!(t["calls"]["read"], 4);
        assert_eq!(t["device"]["reads"], 3);
        assert_eq!(t["device"]["bytes_written"], 8192);
        assert_eq!(t["mem"]["cached"], 4096);
        assert_eq!(t["mem"]["peak_cached"], 8192);
        assert_eq!(t["not_served"][0]["call"], "mmap");
        assert_eq!(t["not_served_count"], 1);
        assert_eq!(t["calls_served"], 12);
        assert_eq!(t["unparsed_lines"], 1);
    }

    #[test]
    fn no_lines_make_an_empty_document() {
        let (doc, s) = merge_stats("");
        assert_eq!(s, Summary::default());
        assert_eq!(doc["processes"], json!([]));
        assert_eq!(doc["totals"]["calls_served"], 0);
    }

    #[test]
    fn a_trace_names_its_file_and_counts_its_operations() {
        let (file, n) = trace_summary("# file /bufwrite/f\npwrite 0 4096 1\n\nread 0 10\n");
        assert_eq!((file, n), (Some("/bufwrite/f"), 2));
        assert_eq!(trace_summary(""), (None, 0));
    }

    #[test]
    fn record_file_must_be_under_the_mount() {
        let m = Path::new("/bufwrite");
        assert_eq!(
            check_record_file(Path::new("/bufwrite//f"), m).unwrap(),
            PathBuf::from("/bufwrite/f")
        );
        assert!(check_record_file(Path::new("/bufwrite"), m).is_err());
        assert!(check_record_file(Path::new("/tmp/f"), m).is_err());
        assert!(check_record_file(Path::new("bufwrite/f"), m).is_err());
        assert!(check_record_file(Path::new("/bufwrite/../f"), m).is_err());
    }

    #[test]
    fn files_inside_the_mount_are_refused() {
        let m = Path::new("/bufwrite");
        assert!(check_outside_mount(Path::new("/bufwrite/img"), m, "the image").is_err());
        assert!(check_outside_mount(Path::new("/bufwrite2/img"), m, "the image").is_ok());
    }
}
