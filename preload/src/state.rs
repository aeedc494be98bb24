//! The library's global state: the configuration (environment, read once),
//! the lazily opened mount, the fd table and the counters.

use crate::offsets::{Offset, OffsetGuard};
use crate::path;
use crate::real;
use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{
    AllocPolicy, BlockDevice, CacheLimits, Error, File, FileOptions, IoStats, IomapPath, MemStats,
    Mount, OpenFlags, OrderPolicy, WritePath,
};
use bufwrite_ext4::Ext4;
use libc::c_int;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// The configuration from the environment (see the crate docs for the
/// variables). Values are checked when the mount is opened, so a bad one
/// fails the first mount-touching call, not the program's start.
#[derive(Debug)]
pub struct Config {
    /// The normalised mount prefix; `None` when `BUFWRITE_IMAGE` is unset
    /// (the library is inactive).
    pub prefix: Option<Vec<u8>>,
    image: String,
    write_path: String,
    backend: String,
    order: String,
    budget: Option<String>,
    policy: String,
    stats: Option<String>,
    wait: Option<String>,
    /// `BUFWRITE_STRICT=1`.
    pub strict: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Set by the exit destructor: from then on nothing is served.
pub static SHUT_DOWN: AtomicBool = AtomicBool::new(false);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    fn from_env() -> Config {
        let image = var("BUFWRITE_IMAGE");
        let mount_at = var("BUFWRITE_MOUNT_AT").unwrap_or_else(|| "/bufwrite".into());
        // A relative or root prefix would claim paths the program did not
        // mean; such a prefix makes the library inactive (reported at the
        // mount's open, below).
        let prefix = image.as_ref().and_then(|_| {
            let p = path::normalise(b"/", mount_at.as_bytes())?;
            (mount_at.starts_with('/') && p != b"/").then_some(p)
        });
        if image.is_some() && prefix.is_none() {
            real::log_line(&format!(
                "BUFWRITE_MOUNT_AT={mount_at:?}: must be an absolute directory other than /; \
                 the library is inactive"
            ));
        }
        Config {
            prefix,
            image: image.unwrap_or_default(),
            write_path: var("BUFWRITE_PATH").unwrap_or_else(|| "iomap".into()),
            backend: var("BUFWRITE_BACKEND").unwrap_or_else(|| "sync".into()),
            order: var("BUFWRITE_ORDER").unwrap_or_else(|| "9".into()),
            budget: var("BUFWRITE_CACHE_BUDGET"),
            policy: var("BUFWRITE_POLICY").unwrap_or_else(|| "unwritten".into()),
            stats: var("BUFWRITE_STATS"),
            wait: var("BUFWRITE_WAIT"),
            strict: var("BUFWRITE_STRICT").as_deref() == Some("1"),
        }
    }
}

/// The configuration, read from the environment on first use (getenv does
/// no file I/O, so this cannot re-enter a hook).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(Config::from_env)
}

/// The open mount and what each open needs to build its file.
pub struct Mounted {
    /// The mount (cache memory, open inodes).
    pub mount: Mount,
    /// Which opening of the image this is (see [`OpenFile::file`]).
    pub epoch: u64,
    /// The image's canonical path (what /proc/self/fd links name).
    image: PathBuf,
    /// The filesystem, for lookups (inode numbers, types).
    pub ext4: Arc<Ext4>,
    write_path: String,
    /// The options every file is opened with.
    pub opts: FileOptions,
}

impl Mounted {
    /// A fresh write path of the configured name (checked at mount time).
    pub fn make_path(&self) -> Box<dyn WritePath> {
        make_path(&self.write_path).unwrap_or_else(|| Box::new(IomapPath::new()))
    }
}

fn make_path(name: &str) -> Option<Box<dyn WritePath>> {
    if name == "iomap" {
        return Some(Box::new(IomapPath::new()));
    }
    Mode::from_name(name).map(|m| Box::new(BufferHeadPath::new(m)) as Box<dyn WritePath>)
}

/// The mount: `None` until the first mount-touching call; then the mount,
/// or the errno its opening failed with (reported once).
static MOUNT: Mutex<Option<Result<Arc<Mounted>, c_int>>> = Mutex::new(None);

/// The epoch of the open mount, 0 when none is open: a file attached in
/// another epoch is attached again (see [`OpenFile::file`]).
static CURRENT: AtomicU64 = AtomicU64::new(0);
/// The epoch the next opening of the image gets.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mount, opened on first use. A failure prints one line (naming the
/// variable and the reason) and every later call fails with the same errno
/// (a configuration does not get better). An image another process holds
/// is waited for (up to `BUFWRITE_WAIT` seconds, then EBUSY) and the
/// refusal is not remembered: that process may let go of it later.
pub fn mounted() -> Result<Arc<Mounted>, c_int> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(libc::EIO);
    }
    let mut m = lock(&MOUNT);
    if VFORK_RELEASED.swap(false, Ordering::AcqRel) {
        drop_released(&mut m);
    }
    if let Some(r) = m.as_ref() {
        return r.clone();
    }
    let r = open_waiting(config()).map(Arc::new);
    if let Ok(mt) = &r {
        CURRENT.store(mt.epoch, Ordering::Release);
        OWNER_PID.store(real::sys_getpid(), Ordering::Release);
        if !ATFORK.swap(true, Ordering::AcqRel) {
            // SAFETY: registering plain extern "C" handlers that take no
            // arguments.
            unsafe {
                libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child))
            };
        }
    }
    if !matches!(r, Err(libc::EBUSY)) {
        *m = Some(r.clone());
    }
    r
}

/// How long to wait for an image another process holds (`BUFWRITE_WAIT`,
/// seconds; default 30).
fn wait_limit(c: &Config) -> Result<Duration, c_int> {
    match &c.wait {
        None => Ok(Duration::from_secs(30)),
        Some(w) => match w.parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            _ => {
                real::log_line(&format!(
                    "BUFWRITE_WAIT={w:?}: must be a number of seconds from 0 to 86400"
                ));
                Err(libc::EIO)
            }
        },
    }
}

/// Opens the mount, waiting while the image is locked by another process
/// (one line on stderr when the wait starts, one if it gives up).
fn open_waiting(c: &Config) -> Result<Mounted, c_int> {
    let limit = wait_limit(c)?;
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    let mut said = false;
    loop {
        match open_mount(c) {
            Ok(m) => return Ok(m),
            Err((libc::EBUSY, msg)) => {
                let waited = start.elapsed();
                if waited >= limit {
                    real::log_line(&format!(
                        "{msg}; gave up after {:.1} s (BUFWRITE_WAIT={}): one process \
                         at a time uses a bufwrite image",
                        waited.as_secs_f64(),
                        limit.as_secs_f64()
                    ));
                    return Err(libc::EBUSY);
                }
                if !said {
                    real::log_line(&format!(
                        "{msg}; waiting up to {} s for it to let go (BUFWRITE_WAIT)",
                        limit.as_secs_f64()
                    ));
                    said = true;
                }
                // nanosleep: a system call no hook serves.
                std::thread::sleep(nap.min(limit - waited));
                nap = (nap * 2).min(Duration::from_millis(50));
            }
            Err((errno, msg)) => {
                real::log_line(&msg);
                return Err(errno);
            }
        }
    }
}

/// The atfork handlers are registered (once per process image).
static ATFORK: AtomicBool = AtomicBool::new(false);

/// Lets go of the mount when this process has no bufwrite fd open and no
/// call is using it: writes everything back, syncs, and closes the image
/// (releasing its lock). So a shell that redirected into the mount (`echo x >
/// /bufwrite/a`) does not keep the image from the programs it starts next;
/// the next mount-touching call opens it again.
pub fn release_if_idle() {
    if LIVE.load(Ordering::Acquire) != 0 {
        return;
    }
    let mut g = lock(&MOUNT);
    let idle = matches!(g.as_ref(), Some(Ok(m)) if Arc::strong_count(m) == 1);
    if !idle || LIVE.load(Ordering::Acquire) != 0 {
        return;
    }
    let Some(Ok(m)) = g.take() else { return };
    CURRENT.store(0, Ordering::Release);
    if let Err(e) = m.mount.sync() {
        real::log_line(&format!("sync of the mount failed: {e}"));
    }
    add_totals(&m);
    // Every file of it is closed: this drops the device (and its lock).
    drop(m);
    drop(g);
}

/// Lets go of the mount although files are open (at fork): writes
/// everything back and syncs, detaches every open file description from
/// it (each attaches again at its next use, to whichever opening of the
/// image is current then) and closes the image, so that another process
/// can open it. The cache goes with it: what this process reads next comes
/// from the disk, where another process may have written in between (the
/// revalidation). A failed sync keeps the mount (its dirty data is not
/// dropped) and says so.
fn let_go(why: &str) {
    let mut g = lock(&MOUNT);
    let m = match g.take() {
        Some(Ok(m)) => m,
        other => {
            *g = other;
            return;
        }
    };
    // Each file's fsync first, as at exit: it completes the data's I/O
    // (unwritten extents converted) before the metadata goes out.
    let mut failed = None;
    for of in all_fds() {
        if let Some(f) = of.attached_file() {
            if let Err(e) = f.fsync() {
                failed.get_or_insert(format!("{}: {e}", of.path));
            }
        }
    }
    if let Err(e) = m.mount.sync() {
        failed.get_or_insert(e.to_string());
    }
    if let Some(e) = failed {
        real::log_line(&format!(
            "{why}: writing back failed, so this process keeps the mount: {e}"
        ));
        *g = Some(Ok(m));
        return;
    }
    CURRENT.store(0, Ordering::Release);
    // The open files are the last users of the inodes, the cache memory
    // (and its flusher thread) and the device: all clean now.
    for of in all_fds() {
        drop(of.detach());
    }
    add_totals(&m);
    drop(m);
    drop(g);
}

/// The pid of the process that owns the mount: the one that opened it,
/// or after fork the child (see [`fork_prepare`]); 0 before the mount opens.
static OWNER_PID: AtomicI64 = AtomicI64::new(0);

/// True in the process that owns the mount (false in a vfork child,
/// which shares our memory but is another process).
pub fn is_owner() -> bool {
    let owner = OWNER_PID.load(Ordering::Acquire);
    owner == 0 || owner == real::sys_getpid()
}

/// Set by [`fork_prepare`] until the fork is done: new served calls wait.
static FORKING: AtomicBool = AtomicBool::new(false);
/// Served calls in progress (outermost ones).
static INFLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A served call in progress: while one is, a fork waits for it (so that
/// no lock of ours or the engine's is held by a thread the child will not
/// have, and the mount is let go of between calls, not inside one).
pub struct Gate(());

impl Gate {
    /// Enters, waiting while a fork is being prepared.
    pub fn enter() -> Gate {
        loop {
            while FORKING.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            INFLIGHT.fetch_add(1, Ordering::SeqCst);
            if !FORKING.load(Ordering::SeqCst) {
                return Gate(());
            }
            INFLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// fork's prepare handler: waits for the served calls in progress, then
/// lets go of the mount ([`let_go`]): written back, synced and closed, so
/// that whichever of parent and child touches a bufwrite file next opens
/// the image afresh and takes it over (its inherited fds attach to it),
/// while the other waits for it to let go (see [`mounted`]).
extern "C" fn fork_prepare() {
    if crate::in_hook() {
        return;
    }
    FORKING.store(true, Ordering::SeqCst);
    while INFLIGHT.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
    let _ = std::panic::catch_unwind(|| {
        let prev = crate::enter_hook();
        let_go("fork");
        crate::leave_hook(prev);
    });
}

/// fork's parent handler: calls go on.
extern "C" fn fork_parent() {
    FORKING.store(false, Ordering::SeqCst);
}

/// fork's child handler: the child owns whatever it opens from now on
/// (and writes its own stats line at exit); calls go on.
extern "C" fn fork_child() {
    OWNER_PID.store(real::sys_getpid(), Ordering::Release);
    FORKING.store(false, Ordering::SeqCst);
}

/// Lets go of the mount before an exec (the new program image attaches
/// the fds it inherits to a fresh opening, see [`crate::handover`]).
///
/// A vfork child (a shell running a command) shares the owner's memory
/// but has its own copy of the fd table, and the owner cannot run until
/// the exec: so the child writes everything back and syncs on the owner's
/// behalf, drops the image lock of the owner's open file description
/// (`flock` locks belong to it, so the child's copy of the fd can), and
/// marks the mount released; the owner's next call drops its copy without
/// any I/O and opens the image again (waiting for the new program to let
/// go of it).
pub fn let_go_for_exec() {
    if is_owner() {
        let_go("exec");
        return;
    }
    let g = lock(&MOUNT);
    let Some(Ok(m)) = g.as_ref() else { return };
    for of in all_fds() {
        if let Some(f) = of.attached_file() {
            if let Err(e) = f.fsync() {
                real::log_line(&format!("exec: writeback of {} failed: {e}", of.path));
            }
        }
    }
    if let Err(e) = m.mount.sync() {
        real::log_line(&format!(
            "exec (vfork child): sync of the mount failed; the new program cannot have it: {e}"
        ));
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<c_int>().ok()) else {
            continue;
        };
        if std::fs::read_link(e.path()).is_ok_and(|t| t == m.image) {
            // SAFETY: flock on an fd of this process's table.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
        }
    }
    CURRENT.store(0, Ordering::Release);
    VFORK_RELEASED.store(true, Ordering::Release);
}

/// Set by a vfork child that let go of the mount on the owner's behalf
/// (see [`let_go_for_exec`]).
static VFORK_RELEASED: AtomicBool = AtomicBool::new(false);

/// Drops the mount a vfork child released: no I/O (it was synced, and
/// another process may be writing the image now), every open file
/// detached.
fn drop_released(g: &mut MutexGuard<'_, Option<Result<Arc<Mounted>, c_int>>>) {
    let Some(Ok(m)) = g.take() else { return };
    CURRENT.store(0, Ordering::Release);
    for of in all_fds() {
        if let Some(f) = of.detach() {
            f.set_writeback_on_drop(false);
        }
    }
    add_totals(&m);
    drop(m);
}

/// The mount if it is open (for the exit path: never opens it).
pub fn mounted_if_open() -> Option<Arc<Mounted>> {
    lock(&MOUNT).as_ref().and_then(|r| r.as_ref().ok().cloned())
}

fn open_mount(c: &Config) -> Result<Mounted, (c_int, String)> {
    let bad = |var: &str, val: &str, why: String| (libc::EIO, format!("{var}={val:?}: {why}"));
    if make_path(&c.write_path).is_none() {
        return Err(bad(
            "BUFWRITE_PATH",
            &c.write_path,
            "unknown write path (valid: iomap, bh-legacy, bh-tailskip, bh-seek)".into(),
        ));
    }
    let backend: Backend = c
        .backend
        .parse()
        .map_err(|e: Error| bad("BUFWRITE_BACKEND", &c.backend, e.to_string()))?;
    let order = match c.order.parse::<u8>() {
        Ok(o) if o <= 9 => o,
        _ => {
            return Err(bad(
                "BUFWRITE_ORDER",
                &c.order,
                "must be an integer 0..=9".into(),
            ))
        }
    };
    let policy: AllocPolicy = c
        .policy
        .parse()
        .map_err(|e: Error| bad("BUFWRITE_POLICY", &c.policy, e.to_string()))?;
    let limits = match &c.budget {
        None => CacheLimits::default(),
        Some(b) => match b.parse::<u64>() {
            Ok(n) => CacheLimits::with_budget(n),
            Err(_) => {
                return Err(bad(
                    "BUFWRITE_CACHE_BUDGET",
                    b,
                    "must be a plain decimal number of bytes".into(),
                ))
            }
        },
    };
    let image = PathBuf::from(&c.image);
    let opts = OpenOptions {
        backend,
        direct: backend == Backend::Uring,
        ..OpenOptions::default()
    };
    let device: Arc<dyn BlockDevice> = open_device(&image, opts).map_err(|e| {
        let errno = match &e {
            Error::Locked { .. } => libc::EBUSY,
            Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                libc::ENOENT
            }
            _ => libc::EIO,
        };
        (errno, format!("BUFWRITE_IMAGE={:?}: {e}", c.image))
    })?;
    let ext4 = Ext4::open_with(Arc::clone(&device), policy).map_err(|e| {
        (
            libc::EIO,
            format!("BUFWRITE_IMAGE={:?}: not a usable ext4 image: {e}", c.image),
        )
    })?;
    let ext4 = Arc::new(ext4);
    let mount = Mount::with_limits(device, ext4.clone(), limits).map_err(|e| {
        bad(
            "BUFWRITE_CACHE_BUDGET",
            c.budget.as_deref().unwrap_or(""),
            e.to_string(),
        )
    })?;
    Ok(Mounted {
        mount,
        epoch: NEXT_EPOCH.fetch_add(1, Ordering::AcqRel),
        image: std::fs::canonicalize(&image).unwrap_or_else(|_| image.clone()),
        ext4,
        write_path: c.write_path.clone(),
        opts: FileOptions {
            order: OrderPolicy::FromWrite { max_order: order },
        },
    })
}

/// One open file description on a bufwrite file (what an fd, and its
/// dups, share): the engine file, the offset, the status flags.
pub struct OpenFile {
    /// The engine file and the epoch of the mount it belongs to; `None`
    /// while detached (after a fork or an exec let go of the mount).
    /// First, so that it drops before `_live` (the drop writes back).
    attached: Mutex<Option<(u64, Arc<File>)>>,
    /// The file offset that read/write/lseek use (shared with the
    /// family's other processes, see [`crate::offsets`]).
    pos: Offset,
    /// Status flags (access mode, O_APPEND, O_SYNC, ...), F_GETFL's answer.
    pub flags: AtomicI32,
    /// The inode number, for st_ino (and to check a re-attach).
    pub ino: u64,
    /// The inode's mode (type and permission bits), for st_mode.
    pub mode: u32,
    /// The name inside the mount, as the engine takes it (to attach
    /// again; a rename in this process updates it).
    rel: Mutex<String>,
    /// A directory (opened with `open`/`opendir` for reading its entries
    /// and as the base of `*at` calls): no engine file.
    pub dir: bool,
    /// The path the program used (mount prefix + name), for messages and
    /// the stats' not_served entries.
    pub path: String,
    /// This is the file `BUFWRITE_RECORD` records (decided at open; the
    /// flag travels with the description to dups and forked children).
    pub recorded: bool,
    _live: Live,
}

/// Open files alive (in the table or held by a call in progress): the
/// mount is let go only when there are none.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one live [`OpenFile`].
struct Live;

impl Live {
    fn new() -> Live {
        LIVE.fetch_add(1, Ordering::AcqRel);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OpenFile {
    /// An open file description of `file`, opened in the mount of `epoch`.
    pub fn new(
        file: File,
        epoch: u64,
        flags: c_int,
        ino: u64,
        mode: u32,
        rel: String,
        path: String,
    ) -> OpenFile {
        OpenFile {
            attached: Mutex::new(Some((epoch, Arc::new(file)))),
            pos: Offset::new(0),
            flags: AtomicI32::new(flags),
            ino,
            mode,
            rel: Mutex::new(rel),
            dir: false,
            recorded: crate::record::is_recorded(&path),
            path,
            _live: Live::new(),
        }
    }

    /// An open directory `rel` (inode `ino`, `mode`).
    pub fn directory(flags: c_int, ino: u64, mode: u32, rel: String, path: String) -> OpenFile {
        OpenFile {
            attached: Mutex::new(None),
            pos: Offset::new(0),
            flags: AtomicI32::new(flags),
            ino,
            mode,
            rel: Mutex::new(rel),
            dir: true,
            recorded: false,
            path,
            _live: Live::new(),
        }
    }

    /// The name inside the mount.
    pub fn rel(&self) -> String {
        lock(&self.rel).clone()
    }

    /// The file was renamed to `rel` (by this process).
    pub fn set_rel(&self, rel: String) {
        *lock(&self.rel) = rel;
    }

    /// A detached description this process inherited across an exec: it
    /// attaches at its first use.
    pub(crate) fn inherited(h: crate::handover::Handed) -> OpenFile {
        OpenFile {
            attached: Mutex::new(None),
            pos: Offset::inherited(h.slot, h.pos),
            flags: AtomicI32::new(h.flags),
            ino: h.ino,
            mode: h.mode,
            recorded: h.recorded,
            path: h.path,
            dir: h.mode & libc::S_IFMT == libc::S_IFDIR,
            rel: Mutex::new(h.rel),
            _live: Live::new(),
        }
    }

    /// The engine file, attached to the open mount: after a fork or an
    /// exec let go of the mount, the first use opens the image again
    /// (taking it over, or waiting for the process that has it) and opens
    /// the file again by name, checking that the name still leads to the
    /// same inode (ESTALE if another process replaced it).
    pub fn file(&self) -> Result<Arc<File>, c_int> {
        let cur = CURRENT.load(Ordering::Acquire);
        if let Some((e, f)) = lock(&self.attached).as_ref() {
            if *e == cur {
                return Ok(Arc::clone(f));
            }
        }
        self.attach()
    }

    #[cold]
    fn attach(&self) -> Result<Arc<File>, c_int> {
        if self.dir {
            return Err(libc::EISDIR);
        }
        // Not under `attached`: opening the mount takes its own lock.
        let m = mounted()?;
        let rel = self.rel();
        let file = m
            .mount
            .open(&rel, OpenFlags::default(), m.make_path(), m.opts)
            .map_err(|e| {
                real::log_line(&format!("{}: cannot open it again: {e}", self.path));
                errno_of(&e)
            })?;
        match m.ext4.lookup(&rel) {
            Ok(i) if u64::from(i.ino) == self.ino => {}
            _ => {
                real::log_line(&format!(
                    "{}: the name leads to another file now (replaced by another process)",
                    self.path
                ));
                return Err(libc::ESTALE);
            }
        }
        let file = Arc::new(file);
        let mut g = lock(&self.attached);
        if let Some((e, f)) = g.as_ref() {
            if *e == m.epoch {
                return Ok(Arc::clone(f));
            }
        }
        let old = g.replace((m.epoch, Arc::clone(&file)));
        drop(g);
        drop(old);
        Ok(file)
    }

    /// The engine file if it is attached to the open mount (the exit
    /// path: never opens anything).
    pub fn attached_file(&self) -> Option<Arc<File>> {
        let cur = CURRENT.load(Ordering::Acquire);
        lock(&self.attached)
            .as_ref()
            .filter(|(e, _)| *e == cur)
            .map(|(_, f)| Arc::clone(f))
    }

    /// Takes the engine file off (the mount is being let go of).
    fn detach(&self) -> Option<Arc<File>> {
        lock(&self.attached).take().map(|(_, f)| f)
    }

    /// The offset, locked (read/write hold it across the I/O, so the
    /// shared offset advances atomically).
    pub fn pos(&self) -> OffsetGuard<'_> {
        self.pos.lock()
    }

    /// The offset's slot in the family's table (for the exec hand-over).
    pub fn offset_slot(&self) -> Option<usize> {
        self.pos.slot()
    }

    /// The status flags.
    pub fn flags(&self) -> c_int {
        self.flags.load(Ordering::Relaxed)
    }
}

/// fd -> open file. Every key is a real kernel fd (the placeholder), so
/// numbers never collide with the kernel's.
static FDS: RwLock<BTreeMap<c_int, Arc<OpenFile>>> = RwLock::new(BTreeMap::new());
/// Entries in `FDS`: when 0, fd hooks pass through without locking.
static NFDS: AtomicUsize = AtomicUsize::new(0);

/// The open file behind `fd`, when it is a bufwrite fd.
pub fn lookup_fd(fd: c_int) -> Option<Arc<OpenFile>> {
    if NFDS.load(Ordering::Acquire) == 0 {
        return None;
    }
    FDS.read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fd)
        .cloned()
}

/// Makes `fd` name `of` (replacing what it named); returns the old entry.
pub fn insert_fd(fd: c_int, of: Arc<OpenFile>) -> Option<Arc<OpenFile>> {
    let mut t = FDS.write().unwrap_or_else(|e| e.into_inner());
    let old = t.insert(fd, of);
    NFDS.store(t.len(), Ordering::Release);
    old
}

/// Forgets `fd`; returns its entry. The caller drops it outside the lock
/// (the last drop writes back).
pub fn remove_fd(fd: c_int) -> Option<Arc<OpenFile>> {
    let mut t = FDS.write().unwrap_or_else(|e| e.into_inner());
    let old = t.remove(&fd);
    NFDS.store(t.len(), Ordering::Release);
    old
}

/// Every open file (for the exit path).
pub fn all_fds() -> Vec<Arc<OpenFile>> {
    FDS.read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// Every bufwrite fd with its open file.
pub fn all_fd_entries() -> Vec<(c_int, Arc<OpenFile>)> {
    FDS.read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(fd, of)| (*fd, Arc::clone(of)))
        .collect()
}

/// The errno an engine error means to a program.
pub fn errno_of(e: &Error) -> c_int {
    match e {
        Error::NotFound(_) => libc::ENOENT,
        Error::AlreadyExists(_) => libc::EEXIST,
        Error::NoSpace { .. } => libc::ENOSPC,
        Error::Busy(_) => libc::EBUSY,
        Error::InvalidArgument(_) | Error::RangeOverflow { .. } => libc::EINVAL,
        Error::FileTooLarge { .. } => libc::EFBIG,
        Error::Unsupported(_) => libc::EOPNOTSUPP,
        Error::ReadOnly => libc::EROFS,
        _ => libc::EIO,
    }
}

/// Served calls by name.
static CALLS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
/// Calls on mount paths / bufwrite fds that were not served.
static NOT_SERVED: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

/// Counts a served call.
pub fn count(call: &'static str) {
    *lock(&CALLS).entry(call).or_insert(0) += 1;
}

/// Records a call the library does not serve on a mount path or bufwrite
/// fd, with one stderr line the first time each call is seen. Returns the
/// errno to fail with: `default`, or EOPNOTSUPP in strict mode.
pub fn not_served(call: &'static str, path: &str, default: c_int) -> c_int {
    let mut v = lock(&NOT_SERVED);
    if !v.iter().any(|(c, _)| *c == call) {
        real::log_line(&format!("{call} on {path} is not served"));
    }
    if v.len() < 1000 {
        v.push((call, path.to_string()));
    }
    if config().strict {
        libc::EOPNOTSUPP
    } else {
        default
    }
}

/// Device and memory counters summed over the mounts this process opened
/// (it lets go of the mount when idle and may open it again).
#[derive(Clone, Copy, Default)]
struct Totals {
    mounts: u64,
    dev: IoStats,
    mem: MemStats,
}

impl Totals {
    fn add(&mut self, m: &Mounted) {
        let d = m.mount.device().stats();
        let x = m.mount.memory_stats();
        self.mounts += 1;
        self.dev.reads += d.reads;
        self.dev.writes += d.writes;
        self.dev.bytes_read += d.bytes_read;
        self.dev.bytes_written += d.bytes_written;
        self.dev.flushes += d.flushes;
        // Levels are the last mount's; peaks the highest; events summed.
        self.mem.cached = x.cached;
        self.mem.dirty = x.dirty;
        self.mem.writeback = x.writeback;
        self.mem.peak_cached = self.mem.peak_cached.max(x.peak_cached);
        self.mem.peak_dirty = self.mem.peak_dirty.max(x.peak_dirty);
        self.mem.reclaimed += x.reclaimed;
        self.mem.overcommits += x.overcommits;
        self.mem.throttled += x.throttled;
        self.mem.throttled_us += x.throttled_us;
        self.mem.flusher_passes += x.flusher_passes;
        self.mem.flusher_bytes += x.flusher_bytes;
    }
}

static TOTALS: Mutex<Totals> = Mutex::new(Totals {
    mounts: 0,
    dev: IoStats {
        reads: 0,
        writes: 0,
        bytes_read: 0,
        bytes_written: 0,
        flushes: 0,
    },
    mem: MemStats {
        cached: 0,
        peak_cached: 0,
        dirty: 0,
        writeback: 0,
        peak_dirty: 0,
        reclaimed: 0,
        overcommits: 0,
        throttled: 0,
        throttled_us: 0,
        flusher_passes: 0,
        flusher_bytes: 0,
    },
});

fn add_totals(m: &Mounted) {
    lock(&TOTALS).add(m);
}

/// Records a call not served without printing (the caller printed a
/// better line itself).
pub fn record_not_served(call: &'static str, path: &str) {
    let mut v = lock(&NOT_SERVED);
    if v.len() < 1000 {
        v.push((call, path.to_string()));
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The BUFWRITE_STATS line of this process.
pub fn stats_line(m: Option<&Mounted>) -> String {
    let mut s = format!("{{\"pid\":{},\"calls\":{{", real::sys_getpid());
    for (i, (k, v)) in lock(&CALLS).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        json_str(&mut s, k);
        s.push_str(&format!(":{v}"));
    }
    s.push_str("},\"not_served\":[");
    for (i, (c, p)) in lock(&NOT_SERVED).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"call\":");
        json_str(&mut s, c);
        s.push_str(",\"path\":");
        json_str(&mut s, p);
        s.push('}');
    }
    s.push(']');
    s.push_str(&crate::record::stats_json());
    // The mounts this process let go of, plus the open one.
    let mut t = *lock(&TOTALS);
    if let Some(m) = m {
        t.add(m);
    }
    if t.mounts > 0 {
        let (d, x) = (t.dev, t.mem);
        s.push_str(&format!(
            ",\"device\":{{\"reads\":{},\"writes\":{},\"bytes_read\":{},\"bytes_written\":{},\"flushes\":{}}}",
            d.reads, d.writes, d.bytes_read, d.bytes_written, d.flushes
        ));
        s.push_str(&format!(
            ",\"mem\":{{\"cached\":{},\"peak_cached\":{},\"dirty\":{},\"writeback\":{},\"peak_dirty\":{},\
             \"reclaimed\":{},\"overcommits\":{},\"throttled\":{},\"throttled_us\":{},\
             \"flusher_passes\":{},\"flusher_bytes\":{}}}",
            x.cached,
            x.peak_cached,
            x.dirty,
            x.writeback,
            x.peak_dirty,
            x.reclaimed,
            x.overcommits,
            x.throttled,
            x.throttled_us,
            x.flusher_passes,
            x.flusher_bytes
        ));
        s.push_str(&format!(",\"mounts\":{}", t.mounts));
    }
    s.push_str("}\n");
    s
}

/// Appends the stats line to `BUFWRITE_STATS` (raw system calls: never
/// fd 2, which coreutils has closed by now, never our own hooks).
pub fn write_stats(m: Option<&Mounted>) {
    let Some(path) = config().stats.as_ref() else {
        return;
    };
    let line = stats_line(m);
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    match real::sys_open(
        &p,
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
        0o644,
    ) {
        Ok(fd) => {
            let _ = real::sys_write_all(fd, line.as_bytes());
            let _ = real::sys_close(fd);
        }
        Err(e) => real::log_line(&format!("BUFWRITE_STATS={path:?}: cannot open (errno {e})")),
    }
}
