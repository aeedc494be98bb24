//! `libbufwrite_preload.so`: an `LD_PRELOAD` library that makes the files
//! under one directory (`BUFWRITE_MOUNT_AT`, default `/bufwrite`) files of a
//! bufwrite [`bufwrite_engine::Mount`] on an ext4 image (`BUFWRITE_IMAGE`),
//! for unmodified dynamically linked programs. Every other path and fd goes
//! to the kernel untouched. Configuration (read once, from the environment
//! only): `BUFWRITE_IMAGE` (unset: inactive), `BUFWRITE_MOUNT_AT`,
//! `BUFWRITE_PATH` (iomap, bh-legacy, bh-tailskip, bh-seek), `BUFWRITE_BACKEND`
//! (sync, uring), `BUFWRITE_ORDER` (0..=9), `BUFWRITE_CACHE_BUDGET` (bytes),
//! `BUFWRITE_POLICY` (unwritten, ordered), `BUFWRITE_STATS` (a file: one JSON
//! line per process at exit), `BUFWRITE_STRICT=1` (calls not served fail
//! with EOPNOTSUPP), `BUFWRITE_RECORD` (a trace file: the calls on one mount
//! file appended as replay lines, see [`record`]) and `BUFWRITE_RECORD_FILE`
//! (that file's absolute mount path). A bad value fails the first mount-touching call (EIO,
//! ENOENT for a missing image, EBUSY for an image another process holds)
//! with one `bufwrite-preload:` line on stderr.
//!
//! How it stays safe inside someone else's process:
//! - the real libc functions are found with `dlsym(RTLD_NEXT)` and cached
//!   ([`real`]); the library's own I/O uses raw system calls, because std
//!   inside this library calls `open64`/`write`/... by symbol and would land
//!   in our own exports;
//! - a const thread-local flag marks "inside a hook": anything called while
//!   it is set (the engine opening the image, std's internals) passes
//!   straight through to libc, and fds opened then are moved above
//!   3/4 of RLIMIT_NOFILE (at most 4096), out of the numbers programs pick
//!   (`exec 3>FILE`);
//! - every served call runs inside `catch_unwind`: a panic becomes EIO and
//!   one stderr line, never an unwind into C;
//! - the mount is opened lazily at the first call that touches a mount
//!   path, and let go of (written back, synced, image closed and unlocked)
//!   whenever the process has no bufwrite file open, so a shell that
//!   redirected into the mount does not hold the image against the
//!   programs it starts next;
//! - each bufwrite fd is a real kernel fd (`/dev/null`, read-only, with the
//!   caller's `O_CLOEXEC`), so fd numbers stay the kernel's to allocate,
//!   `dup2` onto 0/1 works, and a call the library does not hook fails on
//!   the placeholder instead of reaching a path the kernel does not have.
//!
//! Semantics: `O_DIRECT` is accepted and served buffered (through the
//! cache, no alignment checks); `O_SYNC`/`O_DSYNC` fsync/fdatasync after
//! each write; `O_APPEND` writes (and, as on Linux, pwrites) at EOF;
//! `SEEK_DATA`/`SEEK_HOLE` see data everywhere below EOF; `st_blocks` is
//! the size rounded up to 4 KiB (holes not counted out), `st_dev` a number
//! no real device uses, times are 0; `posix_fadvise` is accepted; POSIX
//! and OFD locks are granted (one process owns the image). Refused with
//! the errno that makes programs fall back, recorded in the stats'
//! `not_served`: `mmap` ENODEV, `copy_file_range` EXDEV, `sendfile` and
//! `splice` EINVAL, `ioctl` ENOTTY (FICLONE* EOPNOTSUPP), `O_TMPFILE`,
//! a rename the ext4 layer does not make (a directory to another parent,
//! anything over a directory) EXDEV (`mv` copies), fallocate modes other
//! than 0, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE EOPNOTSUPP; extended
//! attributes ENOTSUP (an empty list for listxattr). `chmod`, `chown` and
//! the utime family are accepted and change nothing (`attr_ignored`).
//!
//! Directories: `mkdir`/`mkdirat`, `rmdir` and `unlinkat(AT_REMOVEDIR)`,
//! `rename` of files and of directories within their parent are the ext4
//! layer's; an `open` of a directory gives a directory fd (`fstat`,
//! `fsync`, the base of `*at` calls, `fdopendir`); `opendir`/`readdir`
//! streams are the library's (`dirs.rs`); `chdir`/`fchdir` into the mount
//! keep a working directory inside it (`cwd.rs`).
//!
//! At exit (the `.fini_array` destructor, which runs after the program's
//! atexit handlers, and `_exit`/`_Exit`) stdio is flushed, every open file
//! written back and the mount synced, so the image is fsck-clean, and the
//! `BUFWRITE_STATS` line appended (raw writes, never fd 2).
//!
//! Processes (see [`state`], [`handover`], [`offsets`]): **one process at
//! a time uses an image**, and the mount follows the process that uses it.
//! - The image is locked (`flock`) while a process has it open; another
//!   process that touches the mount waits for it to let go, up to
//!   `BUFWRITE_WAIT` seconds (default 30; 0 refuses at once), then fails
//!   with EBUSY and one line naming the image. A process lets go when it
//!   has no bufwrite file open, at fork, at exec and at exit; whoever opens
//!   the image next reads what the others wrote from the disk (the cache
//!   of an earlier opening is dropped: that is the revalidation).
//! - **fork**: the prepare handler waits for the calls in progress, writes
//!   everything back, syncs and lets go; parent and child keep the fd
//!   table, and whichever touches a bufwrite file first takes the mount
//!   over (its inherited fds attach again by name, checked by inode
//!   number: ESTALE if another process replaced the file).
//! - **exec**: `execve`/`execv`/`execvp`/`execvpe` let go of the mount and
//!   hand the bufwrite fds without FD_CLOEXEC to the new program through
//!   `BUFWRITE_FDS` (so `sh -c 'cmd > /bufwrite/f'` works). A vfork child
//!   (dash runs commands so) lets go on its parent's behalf: it syncs the
//!   shared mount and drops the parent's image lock; the parent drops its
//!   copy at its next call. `posix_spawn` lets go first, but hands no fds.
//! - **Offsets are shared** between the processes that inherited an open
//!   file description, as on the kernel (`{ cmd1; cmd2; } > /bufwrite/f`
//!   appends cmd2's output after cmd1's), through a memfd table that fork
//!   shares and exec passes on.
//! - Two processes that both hold bufwrite files and wait for each other
//!   (a pipeline `cat /bufwrite/a | cmd > /bufwrite/b` with more than a pipe
//!   buffer of data) cannot both have the image: the second waits, then
//!   fails with EBUSY.
//!
//! Not done (this slice):
//! - A vfork child that exits without exec writes nothing back (its
//!   parent does); `close_range`/`closefrom`, `isatty`, `statfs`,
//!   `scandir` (glibc's reads with internal calls), `freopen`,
//!   `preadv2`/`pwritev2` flags other than RWF_HIPRI, are not hooked or not
//!   served (placeholder or kernel answers).
//! - glibc's standard streams on inherited bufwrite fds 0-2 are replaced
//!   by cookie streams at start-up (glibc's own write with internal calls
//!   no hook sees); `fileno(stdout)` is then -1, and a program that
//!   `dup2`s onto 0-2 itself keeps glibc's stream (EBADF on the
//!   placeholder).
//! - Unlinking a file open in this process is refused (EBUSY: the engine
//!   frees the blocks at unlink). The create mode is ignored (ext4 layer's
//!   default). Symlinks outside the mount pointing into it are not followed.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod handover;
pub mod offsets;
pub mod path;
pub mod real;
pub mod record;
pub mod state;

mod cwd;
mod dirs;
mod hooks;
mod stdio;

use libc::c_int;
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

thread_local! {
    /// Set while this thread runs a served call: calls made then (by the
    /// engine, by std) pass through. Const-initialised with no destructor,
    /// so touching it never allocates or registers anything.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside a served call (or the TLS slot is
/// gone, at thread exit: then pass through too).
pub(crate) fn in_hook() -> bool {
    IN_HOOK.try_with(Cell::get).unwrap_or(true)
}

/// Sets the re-entrancy flag; returns its previous value for
/// [`leave_hook`].
pub(crate) fn enter_hook() -> bool {
    IN_HOOK.try_with(|g| g.replace(true)).unwrap_or(true)
}

/// Restores the re-entrancy flag [`enter_hook`] returned.
pub(crate) fn leave_hook(prev: bool) {
    let _ = IN_HOOK.try_with(|g| g.set(prev));
}

/// Runs a served call: sets the re-entrancy flag, catches a panic (EIO),
/// maps `Err(errno)` to `fail` with errno set, and restores errno's old
/// value on success (the calls we replace do not touch it then).
pub(crate) fn serve<R>(fail: R, f: impl FnOnce() -> Result<R, c_int>) -> R {
    let saved = real::errno();
    let prev = enter_hook();
    // The outermost call of a thread holds the fork gate.
    let gate = (!prev).then(state::Gate::enter);
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(gate);
    leave_hook(prev);
    match r {
        Ok(Ok(v)) => {
            real::set_errno(saved);
            v
        }
        Ok(Err(e)) => {
            real::set_errno(e);
            fail
        }
        Err(_) => {
            real::set_errno(libc::EIO);
            fail
        }
    }
}

/// The constructor: reads the configuration (getenv only) and installs a
/// panic hook that prints a panic inside a hook as one line through a raw
/// write (std's hook would write through our own `write`).
extern "C" fn init() {
    let _ = std::panic::catch_unwind(|| {
        let _ = state::config();
        let prev = enter_hook();
        handover::adopt();
        cwd::adopt();
        stdio::rebind_std_streams();
        leave_hook(prev);
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if in_hook() {
                let msg = info.to_string().replace('\n', " ");
                real::log_line(&format!("panic in a hook (the call fails with EIO): {msg}"));
            } else {
                prev(info);
            }
        }));
    });
}

/// The destructor (`.fini_array`, after the program's atexit handlers):
/// see [`exit_flush`].
extern "C" fn fini() {
    exit_flush();
}

/// At process exit (the destructor, or `_exit`/`_Exit`): writes back every
/// open bufwrite file, syncs the mount (metadata and a device flush: the
/// image is left as after an unmount) and writes the stats line. Runs once;
/// from then on nothing new is served. Only the process that owns the
/// mount flushes: a vfork child (which shares our memory but ran no
/// atfork handler) never does.
pub(crate) fn exit_flush() {
    if state::SHUT_DOWN.load(Ordering::Acquire) {
        return;
    }
    if state::is_owner() && state::mounted_if_open().is_some() {
        // glibc flushes stdio only after the destructors (`_IO_cleanup`):
        // flush now, so a bufwrite stream's last buffer reaches the cache
        // before it is written back. Outside the re-entrancy flag, so a
        // kernel stream on a bufwrite fd (stdout redirected into the
        // mount) is served too.
        // SAFETY: fflush(NULL) flushes every open stream.
        unsafe { libc::fflush(std::ptr::null_mut()) };
    }
    if state::SHUT_DOWN.swap(true, Ordering::AcqRel) {
        return;
    }
    let _ = IN_HOOK.try_with(|g| g.set(true));
    let _ = std::panic::catch_unwind(|| {
        if !state::is_owner() {
            return;
        }
        let m = state::mounted_if_open();
        if let Some(m) = &m {
            for of in state::all_fds() {
                if let Some(f) = of.attached_file() {
                    if let Err(e) = f.fsync() {
                        real::log_line(&format!("exit: writeback of {} failed: {e}", of.path));
                    }
                }
            }
            if let Err(e) = m.mount.sync() {
                real::log_line(&format!("exit: sync of the mount failed: {e}"));
            }
        }
        state::write_stats(m.as_deref());
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;
