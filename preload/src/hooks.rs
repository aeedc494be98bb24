//! The exported libc entry points. Each one decides "ours?" (a mount path,
//! or a bufwrite fd) without locking or allocating on the common path, and
//! either serves the call through the engine or forwards it unchanged to
//! the real libc function.
//!
//! x86-64 only: `off_t == off64_t` and `struct stat == struct stat64`, so
//! each `X`/`X64` pair shares one implementation. C variadics (`open`'s
//! mode, `fcntl`'s and `ioctl`'s argument) are taken as one fixed argument,
//! which the SysV ABI passes in the same register; `mode` is read only
//! when `O_CREAT`/`O_TMPFILE` says it was passed.

#![allow(clippy::missing_safety_doc)]

use crate::handover;
use crate::path;
use crate::real::{self, real};
use crate::record;
use crate::state::{self, count, errno_of, not_served, OpenFile};
use crate::{in_hook, serve};
use bufwrite_engine::trace::Op;
use bufwrite_engine::{FallocMode, OpenFlags};
use libc::{c_char, c_int, c_uint, c_ulong, c_void, iovec, mode_t, off_t, size_t, ssize_t};
use std::ffi::{CStr, CString};
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// st_dev of every bufwrite file: a device number no real device uses
/// (cp and cat compare (st_dev, st_ino) to detect copying a file onto
/// itself).
const ST_DEV: u64 = 0xbf0b_f000;

/// `O_TMPFILE` (`__O_TMPFILE | O_DIRECTORY`).
const O_TMPFILE: c_int = libc::O_TMPFILE;

/// Most iovecs one call takes (UIO_MAXIOV).
const IOV_MAX: c_int = 1024;

const FICLONE: c_ulong = 0x4004_9409;
const FICLONERANGE: c_ulong = 0x4020_940d;
const FIDEDUPERANGE: c_ulong = 0xc018_9436;

/// The bufwrite open file behind `fd`, unless this thread is inside a
/// served call (then everything is the kernel's).
pub(crate) fn ours(fd: c_int) -> Option<Arc<OpenFile>> {
    if in_hook() {
        return None;
    }
    state::lookup_fd(fd)
}

/// The path inside the mount that `(dirfd, path)` names, when it is one.
/// Absolute paths that cannot be under the prefix return without
/// allocating; relative ones are joined to the real cwd (or the dir fd's
/// path) and normalised.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub(crate) unsafe fn mount_path(dirfd: c_int, path: *const c_char) -> Option<String> {
    if in_hook() || path.is_null() {
        return None;
    }
    let prefix = state::config().prefix.as_deref()?;
    // SAFETY: non-null and NUL-terminated (the caller's contract, as for
    // the libc call it replaces).
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    if p.first() == Some(&b'/') {
        if !path::may_be_under(prefix, p) {
            return None;
        }
        let norm = path::normalise(b"/", p)?;
        return path::under_mount(prefix, &norm).map(|rel| dir_only(rel, p));
    }
    if p.is_empty() {
        return None;
    }
    let mut buf = [0u8; 4096];
    let dir_path;
    let cwd;
    let base = if dirfd == libc::AT_FDCWD {
        match crate::cwd::virtual_cwd() {
            Some(c) => {
                cwd = c;
                &cwd[..]
            }
            None => real::sys_getcwd(&mut buf)?,
        }
    } else if let Some(of) = state::lookup_fd(dirfd) {
        // A bufwrite directory fd is the base of its `*at` calls (a file
        // fd is no directory: the placeholder's ENOTDIR is right then).
        if !of.dir {
            return None;
        }
        dir_path = of.path.clone().into_bytes();
        &dir_path[..]
    } else {
        real::sys_fd_path(dirfd, &mut buf)?
    };
    let norm = path::normalise(base, p)?;
    path::under_mount(prefix, &norm).map(|rel| dir_only(rel, p))
}

/// Normalising drops a trailing `/` or `/.`, which the kernel takes to mean
/// "a directory": it is kept as a trailing `/` on `rel`, so that
/// [`lookup`] fails a file named so with ENOTDIR.
fn dir_only(mut rel: String, raw: &[u8]) -> String {
    if rel != "/" && (raw.ends_with(b"/") || raw.ends_with(b"/.")) {
        rel.push('/');
    }
    rel
}

/// The library's own fds (the image, files the engine reads while a
/// served call runs) are moved up to a high number, out of the range
/// programs pick for themselves: a shell's `exec 3>FILE` does `dup2(x, 3)`,
/// which would otherwise close the image under the cache.
pub(crate) fn relocate_own_fd(fd: c_int) -> c_int {
    if fd < 0 || !in_hook() {
        return fd;
    }
    let base = own_fd_base();
    if fd >= base {
        return fd;
    }
    // SAFETY: plain fcntl(F_DUPFD_CLOEXEC) and close system calls on an fd
    // this library just opened.
    let high = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, base) };
    if high < 0 {
        // No room up there (a low RLIMIT_NOFILE): keep the low number.
        return fd;
    }
    let _ = real::sys_close(fd);
    high as c_int
}

/// Where the library's own fds go: three quarters of the soft fd limit,
/// at most 4096 (the kernel's fd table grows to the highest fd in use).
pub(crate) fn own_fd_base() -> c_int {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit system call filling a local struct.
    let r = unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_NOFILE, &mut lim) };
    let soft = if r == 0 { lim.rlim_cur } else { 1024 };
    (soft.saturating_mul(3) / 4).clamp(16, 4096) as c_int
}

/// A C buffer as a slice (empty for a zero length, where C may pass null).
///
/// # Safety
/// `p` is valid for reads of `n` bytes when `n > 0`.
unsafe fn buf_ref<'a>(p: *const c_void, n: usize) -> &'a [u8] {
    if n == 0 || p.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) }
}

/// A C buffer as a mutable slice.
///
/// # Safety
/// `p` is valid for writes of `n` bytes when `n > 0`.
unsafe fn buf_mut<'a>(p: *mut c_void, n: usize) -> &'a mut [u8] {
    if n == 0 || p.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) }
}

/// A C iovec array as a slice (EINVAL for a bad count).
///
/// # Safety
/// `iov` is valid for `cnt` entries.
unsafe fn iovs<'a>(iov: *const iovec, cnt: c_int) -> Result<&'a [iovec], c_int> {
    if !(0..=IOV_MAX).contains(&cnt) {
        return Err(libc::EINVAL);
    }
    if cnt == 0 || iov.is_null() {
        return Ok(&[]);
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(iov, cnt as usize) })
}

fn readable(of: &OpenFile) -> Result<(), c_int> {
    let acc = of.flags() & (libc::O_ACCMODE | libc::O_PATH);
    if acc == libc::O_WRONLY || acc & libc::O_PATH != 0 {
        return Err(libc::EBADF);
    }
    Ok(())
}

fn writable(of: &OpenFile) -> Result<(), c_int> {
    let f = of.flags();
    if f & libc::O_PATH != 0 || f & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(libc::EBADF);
    }
    Ok(())
}

/// An engine result as an errno; an error that maps to EIO (nothing more
/// specific) is printed, since the program will only say "I/O error".
fn eng<T>(r: bufwrite_engine::Result<T>) -> Result<T, c_int> {
    r.map_err(|e| {
        let errno = errno_of(&e);
        if errno == libc::EIO {
            real::log_line(&format!("I/O error: {e}"));
        }
        errno
    })
}

fn offset(off: off_t) -> Result<u64, c_int> {
    u64::try_from(off).map_err(|_| libc::EINVAL)
}

/// A path call's result, after letting go of the mount if no bufwrite fd
/// is open (see [`state::release_if_idle`]).
fn idle_after<T>(r: Result<T, c_int>) -> Result<T, c_int> {
    state::release_if_idle();
    r
}

/// O_SYNC / O_DSYNC: write back after a write.
fn sync_after_write(of: &OpenFile) -> Result<(), c_int> {
    let f = of.flags();
    if f & libc::O_SYNC == libc::O_SYNC {
        eng(of.file()?.fsync())?;
        record::call(of, || Op::Fsync);
    } else if f & libc::O_DSYNC != 0 {
        eng(of.file()?.fdatasync())?;
        record::call(of, || Op::Fdatasync);
    }
    Ok(())
}

/// Records a write of `n` bytes at `at` (the offset it really went to).
fn record_write(of: &OpenFile, at: u64, n: usize) {
    record::call(of, || Op::Pwrite {
        off: at,
        len: n as u64,
        seed: record::seed(),
    });
}

/// Records a read of `len` bytes asked for at `at`.
fn record_read(of: &OpenFile, at: u64, len: usize) {
    record::call(of, || Op::Read {
        off: at,
        len: len as u64,
    });
}

/// The total length of an iovec array.
fn iov_len(iov: &[iovec]) -> usize {
    iov.iter().map(|v| v.iov_len).fold(0, usize::saturating_add)
}

// ---------------------------------------------------------------- open

fn is_dir(mode: u16) -> bool {
    u32::from(mode) & libc::S_IFMT == libc::S_IFDIR
}

fn is_reg(mode: u16) -> bool {
    u32::from(mode) & libc::S_IFMT == libc::S_IFREG
}

/// The inode at `rel`, or None when absent. A path through a file
/// (`file/x`), or a file named as a directory (`file/`), is ENOTDIR, as
/// the kernel says.
fn lookup(m: &state::Mounted, rel: &str) -> Result<Option<bufwrite_ext4::Inode>, c_int> {
    match m.ext4.lookup(rel) {
        Ok(i) if rel.len() > 1 && rel.ends_with('/') && !is_dir(i.mode) => Err(libc::ENOTDIR),
        Ok(i) => Ok(Some(i)),
        Err(bufwrite_ext4::Ext4Error::NotFound(_)) => Ok(None),
        Err(bufwrite_ext4::Ext4Error::WrongType(_)) => Err(libc::ENOTDIR),
        Err(e) => eng(Err(e.into())),
    }
}

/// A new name needs its directory: ENOENT when it is missing (the ext4
/// layer's create reports that as unsupported), ENOTDIR when it is a file.
fn parent_exists(m: &state::Mounted, rel: &str) -> Result<(), c_int> {
    let parent = match rel.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &rel[..i],
    };
    match lookup(m, parent)? {
        None => Err(libc::ENOENT),
        Some(i) if !is_dir(i.mode) => Err(libc::ENOTDIR),
        Some(_) => Ok(()),
    }
}

pub(crate) fn do_open(rel: String, flags: c_int) -> Result<c_int, c_int> {
    count("open");
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(not_served("open(O_TMPFILE)", &rel, libc::EOPNOTSUPP));
    }
    let m = state::mounted()?;
    let acc = flags & libc::O_ACCMODE;
    let wants_write = acc != libc::O_RDONLY && flags & libc::O_PATH == 0;
    let create = flags & libc::O_CREAT != 0;
    let excl = create && flags & libc::O_EXCL != 0;
    match lookup(&m, &rel)? {
        Some(_) if excl => return Err(libc::EEXIST),
        Some(i) if is_dir(i.mode) => {
            if wants_write || create {
                return Err(libc::EISDIR);
            }
            return open_dir(&rel, flags, &i);
        }
        Some(i) if !is_reg(i.mode) => {
            return Err(not_served(
                "open(not a regular file)",
                &rel,
                libc::EOPNOTSUPP,
            ))
        }
        Some(_) if flags & libc::O_DIRECTORY != 0 => return Err(libc::ENOTDIR),
        None if !create => return Err(libc::ENOENT),
        None => parent_exists(&m, &rel)?,
        _ => {}
    }
    let oflags = OpenFlags {
        create,
        exclusive: excl,
        truncate: flags & libc::O_TRUNC != 0 && flags & libc::O_PATH == 0,
    };
    let file = eng(m.mount.open(&rel, oflags, m.make_path(), m.opts))?;
    let inode = lookup(&m, &rel)?.ok_or(libc::ENOENT)?;
    let fd = real::sys_open(
        b"/dev/null\0",
        libc::O_RDONLY | (flags & libc::O_CLOEXEC),
        0,
    )?;
    let prefix = String::from_utf8_lossy(state::config().prefix.as_deref().unwrap_or(b""));
    let kept =
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOCTTY);
    let path = format!("{prefix}{rel}");
    let of = Arc::new(OpenFile::new(
        file,
        m.epoch,
        kept,
        u64::from(inode.ino),
        u32::from(inode.mode),
        rel,
        path,
    ));
    if oflags.truncate && wants_write {
        record::call(&of, || Op::Truncate { size: 0 });
    }
    drop(state::insert_fd(fd, of));
    Ok(fd)
}

macro_rules! open_hook {
    ($name:ident) => {
        /// open(2) (and its aliases): a mount path opens a bufwrite file.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || do_open(rel, flags));
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            relocate_own_fd(unsafe { f(path, flags, mode) })
        }
    };
}
open_hook!(open);
open_hook!(open64);

macro_rules! openat_hook {
    ($name:ident) => {
        /// openat(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: c_uint,
        ) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(dirfd, path) } {
                return serve(-1, || do_open(rel, flags));
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            relocate_own_fd(unsafe { f(dirfd, path, flags, mode) })
        }
    };
}
openat_hook!(openat);
openat_hook!(openat64);

macro_rules! creat_hook {
    ($name:ident) => {
        /// creat(2) = open(O_CREAT|O_WRONLY|O_TRUNC).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: mode_t) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    do_open(rel, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC)
                });
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, mode_t) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, mode) }
        }
    };
}
creat_hook!(creat);
creat_hook!(creat64);

macro_rules! open2_hook {
    ($name:ident) => {
        /// The fortified two-argument open (no mode).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || do_open(rel, flags));
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, c_int) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, flags) }
        }
    };
}
open2_hook!(__open_2);
open2_hook!(__open64_2);

macro_rules! openat2_hook {
    ($name:ident) => {
        /// The fortified three-argument openat (no mode).
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(dirfd, path) } {
                return serve(-1, || do_open(rel, flags));
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(dirfd, path, flags) }
        }
    };
}
openat2_hook!(__openat_2);
openat2_hook!(__openat64_2);

// ---------------------------------------------------------------- close, dup

/// close(2): a bufwrite fd drops its entry (the last one of an open file
/// writes back, as the engine's File does on drop) and its placeholder.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if ours(fd).is_some() {
        return serve(-1, || do_close(fd));
    }
    let f = real!(close: unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(fd) }
}

/// Closes bufwrite fd `fd`: its entry (the last one of an open file writes
/// back, as the engine's File does on drop), its placeholder, and the
/// mount if nothing else is open.
pub(crate) fn do_close(fd: c_int) -> Result<c_int, c_int> {
    count("close");
    let of = state::remove_fd(fd);
    let r = real::sys_close(fd);
    drop(of);
    state::release_if_idle();
    r.map(|()| 0)
}

/// Mirrors a kernel dup of a placeholder: `new` names `of` too.
fn mirror(new: c_int, of: Option<Arc<OpenFile>>) -> c_int {
    if new >= 0 {
        let old = match of {
            Some(of) => state::insert_fd(new, of),
            None => state::remove_fd(new),
        };
        drop(old);
        state::release_if_idle();
    }
    new
}

/// dup(2).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let f = real!(dup: unsafe extern "C" fn(c_int) -> c_int);
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("dup");
            // SAFETY: dup of the placeholder.
            let new = unsafe { f(fd) };
            if new < 0 {
                return Err(real::errno());
            }
            Ok(mirror(new, Some(of)))
        });
    }
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(fd) }
}

/// dup2(2): whichever side is ours, the kernel does the fd operation on
/// the placeholders and the table follows.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let f = real!(dup2: unsafe extern "C" fn(c_int, c_int) -> c_int);
    // Only whether `new` is ours: holding its entry would keep the open
    // file alive past the dup2 that replaces it.
    let (o, n) = (ours(old), ours(new).is_some());
    if o.is_none() && !n {
        // SAFETY: forwarding the caller's arguments to the real function.
        return unsafe { f(old, new) };
    }
    serve(-1, || {
        count("dup2");
        if old == new {
            return Ok(new);
        }
        // SAFETY: the kernel dup2 of (placeholder) fds.
        let r = unsafe { f(old, new) };
        if r < 0 {
            return Err(real::errno());
        }
        Ok(mirror(r, o))
    })
}

/// dup3(2).
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let f = real!(dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int);
    // Only whether `new` is ours: holding its entry would keep the open
    // file alive past the dup2 that replaces it.
    let (o, n) = (ours(old), ours(new).is_some());
    if o.is_none() && !n {
        // SAFETY: forwarding the caller's arguments to the real function.
        return unsafe { f(old, new, flags) };
    }
    serve(-1, || {
        count("dup3");
        // SAFETY: the kernel dup3 of (placeholder) fds; it rejects old == new.
        let r = unsafe { f(old, new, flags) };
        if r < 0 {
            return Err(real::errno());
        }
        Ok(mirror(r, o))
    })
}

fn do_fcntl(fd: c_int, of: Arc<OpenFile>, cmd: c_int, arg: c_ulong) -> Result<c_int, c_int> {
    count("fcntl");
    let f = real!(fcntl: unsafe extern "C" fn(c_int, c_int, ...) -> c_int);
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: the kernel's F_DUPFD on the placeholder.
            let new = unsafe { f(fd, cmd, arg) };
            if new < 0 {
                return Err(real::errno());
            }
            Ok(mirror(new, Some(of)))
        }
        libc::F_GETFD | libc::F_SETFD => {
            // SAFETY: FD_CLOEXEC lives on the placeholder.
            let r = unsafe { f(fd, cmd, arg) };
            if r < 0 {
                return Err(real::errno());
            }
            Ok(r)
        }
        libc::F_GETFL => Ok(of.flags() | libc::O_LARGEFILE),
        libc::F_SETFL => {
            let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME;
            let arg = arg as c_int;
            let _ = of
                .flags
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some((old & !settable) | (arg & settable))
                });
            Ok(0)
        }
        // One process owns the image, and POSIX locks never conflict
        // within a process: every lock is granted.
        libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => Ok(0),
        libc::F_GETLK | libc::F_OFD_GETLK => {
            let lk = arg as *mut libc::flock;
            if lk.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: F_GETLK's argument is the caller's struct flock.
            unsafe { (*lk).l_type = libc::F_UNLCK as libc::c_short };
            Ok(0)
        }
        _ => Err(not_served("fcntl(other command)", &of.path, libc::EINVAL)),
    }
}

macro_rules! fcntl_hook {
    ($name:ident) => {
        /// fcntl(2): F_DUPFD*, F_GETFD/SETFD (on the placeholder),
        /// F_GETFL/SETFL (the open file's flags), locks (granted).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
            if let Some(of) = ours(fd) {
                return serve(-1, || do_fcntl(fd, of, cmd, arg));
            }
            let f = real!($name: unsafe extern "C" fn(c_int, c_int, ...) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, cmd, arg) }
        }
    };
}
fcntl_hook!(fcntl);
fcntl_hook!(fcntl64);

// ---------------------------------------------------------------- data path

pub(crate) fn do_read(of: &OpenFile, buf: &mut [u8]) -> Result<ssize_t, c_int> {
    readable(of)?;
    let mut pos = of.pos();
    let at = *pos;
    let n = eng(of.file()?.pread(at, buf))?;
    *pos += n as u64;
    drop(pos);
    record_read(of, at, buf.len());
    Ok(n as ssize_t)
}

pub(crate) fn do_write(of: &OpenFile, buf: &[u8]) -> Result<ssize_t, c_int> {
    writable(of)?;
    let file = of.file()?;
    let mut pos = of.pos();
    let at = if of.flags() & libc::O_APPEND != 0 {
        file.size()
    } else {
        *pos
    };
    let n = eng(file.pwrite(at, buf))?;
    *pos = at + n as u64;
    drop(pos);
    record_write(of, at, n);
    sync_after_write(of)?;
    Ok(n as ssize_t)
}

fn do_pread(of: &OpenFile, buf: &mut [u8], off: off_t) -> Result<ssize_t, c_int> {
    readable(of)?;
    let at = offset(off)?;
    let n = eng(of.file()?.pread(at, buf))?;
    record_read(of, at, buf.len());
    Ok(n as ssize_t)
}

fn do_pwrite(of: &OpenFile, buf: &[u8], off: off_t) -> Result<ssize_t, c_int> {
    writable(of)?;
    let mut at = offset(off)?;
    let file = of.file()?;
    // Linux: pwrite on an O_APPEND fd appends whatever the offset says.
    if of.flags() & libc::O_APPEND != 0 {
        at = file.size();
    }
    let n = eng(file.pwrite(at, buf))?;
    record_write(of, at, n);
    sync_after_write(of)?;
    Ok(n as ssize_t)
}

/// Reads into each iovec in turn from `at`, stopping at a short read.
fn preadv_at(of: &OpenFile, iov: &[iovec], mut at: u64) -> Result<usize, c_int> {
    let mut total = 0usize;
    let file = of.file()?;
    for v in iov {
        // SAFETY: each iovec of the caller's array describes a buffer it
        // owns for writing.
        let b = unsafe { buf_mut(v.iov_base, v.iov_len) };
        let n = eng(file.pread(at, b))?;
        total += n;
        at += n as u64;
        if n < b.len() {
            break;
        }
    }
    Ok(total)
}

fn slices(iov: &[iovec]) -> Vec<IoSlice<'_>> {
    iov.iter()
        // SAFETY: each iovec of the caller's array describes a buffer it
        // owns for reading.
        .map(|v| IoSlice::new(unsafe { buf_ref(v.iov_base, v.iov_len) }))
        .collect()
}

fn do_readv(of: &OpenFile, iov: &[iovec], off: Option<off_t>) -> Result<ssize_t, c_int> {
    readable(of)?;
    let (at, n) = match off {
        Some(off) => {
            let at = offset(off)?;
            (at, preadv_at(of, iov, at)?)
        }
        None => {
            let mut pos = of.pos();
            let at = *pos;
            let n = preadv_at(of, iov, at)?;
            *pos += n as u64;
            (at, n)
        }
    };
    record_read(of, at, iov_len(iov));
    Ok(n as ssize_t)
}

fn do_writev(of: &OpenFile, iov: &[iovec], off: Option<off_t>) -> Result<ssize_t, c_int> {
    writable(of)?;
    let bufs = slices(iov);
    let append = of.flags() & libc::O_APPEND != 0;
    let file = of.file()?;
    let (at, n) = match off {
        Some(off) => {
            let at = if append { file.size() } else { offset(off)? };
            (at, eng(file.pwritev(at, &bufs))?)
        }
        None => {
            let mut pos = of.pos();
            let at = if append { file.size() } else { *pos };
            let n = eng(file.pwritev(at, &bufs))?;
            *pos = at + n as u64;
            (at, n)
        }
    };
    record_write(of, at, n);
    sync_after_write(of)?;
    Ok(n as ssize_t)
}

/// read(2).
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("read");
            // SAFETY: the caller's buffer of `n` bytes.
            do_read(&of, unsafe { buf_mut(buf, n) })
        });
    }
    let f = real!(read: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, buf, n) }
}

/// The fortified read: `n` must fit the buffer's known size.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if let Some(of) = ours(fd) {
        if n > buflen {
            // What glibc's __chk_fail does: the program has a bug.
            real::log_line("buffer overflow detected (__read_chk)");
            std::process::abort();
        }
        return serve(-1, || {
            count("read");
            // SAFETY: the caller's buffer of `n` bytes.
            do_read(&of, unsafe { buf_mut(buf, n) })
        });
    }
    let f = real!(__read_chk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, buf, n, buflen) }
}

/// write(2).
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("write");
            // SAFETY: the caller's buffer of `n` bytes.
            do_write(&of, unsafe { buf_ref(buf, n) })
        });
    }
    let f = real!(write: unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, buf, n) }
}

macro_rules! pread_hook {
    ($name:ident) => {
        /// pread(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("pread");
                    // SAFETY: the caller's buffer of `n` bytes.
                    do_pread(&of, unsafe { buf_mut(buf, n) }, off)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *mut c_void, size_t, off_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, buf, n, off) }
        }
    };
}
pread_hook!(pread);
pread_hook!(pread64);

macro_rules! pread_chk_hook {
    ($name:ident) => {
        /// The fortified pread (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            buf: *mut c_void,
            n: size_t,
            off: off_t,
            buflen: size_t,
        ) -> ssize_t {
            if let Some(of) = ours(fd) {
                if n > buflen {
                    real::log_line("buffer overflow detected (__pread_chk)");
                    std::process::abort();
                }
                return serve(-1, || {
                    count("pread");
                    // SAFETY: the caller's buffer of `n` bytes.
                    do_pread(&of, unsafe { buf_mut(buf, n) }, off)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *mut c_void, size_t, off_t, size_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, buf, n, off, buflen) }
        }
    };
}
pread_chk_hook!(__pread_chk);
pread_chk_hook!(__pread64_chk);

macro_rules! pwrite_hook {
    ($name:ident) => {
        /// pwrite(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("pwrite");
                    // SAFETY: the caller's buffer of `n` bytes.
                    do_pwrite(&of, unsafe { buf_ref(buf, n) }, off)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const c_void, size_t, off_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, buf, n, off) }
        }
    };
}
pwrite_hook!(pwrite);
pwrite_hook!(pwrite64);

/// readv(2).
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("readv");
            // SAFETY: the caller's iovec array of `cnt` entries.
            do_readv(&of, unsafe { iovs(iov, cnt) }?, None)
        });
    }
    let f = real!(readv: unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, iov, cnt) }
}

/// writev(2).
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("writev");
            // SAFETY: the caller's iovec array of `cnt` entries.
            do_writev(&of, unsafe { iovs(iov, cnt) }?, None)
        });
    }
    let f = real!(writev: unsafe extern "C" fn(c_int, *const iovec, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, iov, cnt) }
}

macro_rules! preadv_hook {
    ($name:ident) => {
        /// preadv(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("preadv");
                    // SAFETY: the caller's iovec array of `cnt` entries.
                    do_readv(&of, unsafe { iovs(iov, cnt) }?, Some(off))
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const iovec, c_int, off_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, iov, cnt, off) }
        }
    };
}
preadv_hook!(preadv);
preadv_hook!(preadv64);

macro_rules! pwritev_hook {
    ($name:ident) => {
        /// pwritev(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("pwritev");
                    // SAFETY: the caller's iovec array of `cnt` entries.
                    do_writev(&of, unsafe { iovs(iov, cnt) }?, Some(off))
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const iovec, c_int, off_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, iov, cnt, off) }
        }
    };
}
pwritev_hook!(pwritev);
pwritev_hook!(pwritev64);

/// RWF_ flags the library honours (as no-ops: the cache is always
/// "high priority", and appends follow O_APPEND only). Others: EOPNOTSUPP,
/// so the program stops using them.
fn rwf_ok(flags: c_int) -> Result<(), c_int> {
    if flags & !libc::RWF_HIPRI != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    Ok(())
}

macro_rules! preadv2_hook {
    ($name:ident) => {
        /// preadv2(2) (and its alias): offset -1 uses the file offset.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const iovec,
            cnt: c_int,
            off: off_t,
            flags: c_int,
        ) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("preadv2");
                    rwf_ok(flags)?;
                    // SAFETY: the caller's iovec array of `cnt` entries.
                    let iov = unsafe { iovs(iov, cnt) }?;
                    do_readv(&of, iov, (off != -1).then_some(off))
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const iovec, c_int, off_t, c_int) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, iov, cnt, off, flags) }
        }
    };
}
preadv2_hook!(preadv2);
preadv2_hook!(preadv64v2);

macro_rules! pwritev2_hook {
    ($name:ident) => {
        /// pwritev2(2) (and its alias): offset -1 uses the file offset.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            fd: c_int,
            iov: *const iovec,
            cnt: c_int,
            off: off_t,
            flags: c_int,
        ) -> ssize_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("pwritev2");
                    rwf_ok(flags)?;
                    // SAFETY: the caller's iovec array of `cnt` entries.
                    let iov = unsafe { iovs(iov, cnt) }?;
                    do_writev(&of, iov, (off != -1).then_some(off))
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const iovec, c_int, off_t, c_int) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, iov, cnt, off, flags) }
        }
    };
}
pwritev2_hook!(pwritev2);
pwritev2_hook!(pwritev64v2);

pub(crate) fn do_lseek(of: &OpenFile, off: off_t, whence: c_int) -> Result<off_t, c_int> {
    let mut pos = of.pos();
    let size = of.file()?.size() as i128;
    let off = i128::from(off);
    let new = match whence {
        libc::SEEK_SET => off,
        libc::SEEK_CUR => *pos as i128 + off,
        libc::SEEK_END => size + off,
        // Data everywhere below EOF: the next data is here, the next hole
        // is EOF.
        libc::SEEK_DATA | libc::SEEK_HOLE if off < 0 || off >= size => return Err(libc::ENXIO),
        libc::SEEK_DATA => off,
        libc::SEEK_HOLE => size,
        _ => return Err(libc::EINVAL),
    };
    if new < 0 || new > i128::from(i64::MAX) {
        return Err(libc::EINVAL);
    }
    *pos = new as u64;
    Ok(new as off_t)
}

macro_rules! lseek_hook {
    ($name:ident) => {
        /// lseek(2) (and its alias): SEEK_SET/CUR/END/DATA/HOLE.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off_t, whence: c_int) -> off_t {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("lseek");
                    do_lseek(&of, off, whence)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, off_t, c_int) -> off_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, off, whence) }
        }
    };
}
lseek_hook!(lseek);
lseek_hook!(lseek64);

// ---------------------------------------------------------------- stat

/// What stat reports of a bufwrite file or directory.
struct StatInfo {
    ino: u64,
    mode: u32,
    nlink: u64,
    size: u64,
}

fn stat_of_file(of: &OpenFile) -> Result<StatInfo, c_int> {
    if of.dir {
        return stat_of_path(&of.rel());
    }
    Ok(StatInfo {
        ino: of.ino,
        mode: of.mode,
        nlink: 1,
        size: of.file()?.size(),
    })
}

fn stat_of_path(rel: &str) -> Result<StatInfo, c_int> {
    let m = state::mounted()?;
    let inode = lookup(&m, rel)?.ok_or(libc::ENOENT)?;
    // A regular file's size is the cache's (the on-disk inode may lag
    // behind writes not yet written back).
    let size = if is_reg(inode.mode) {
        let f = eng(m
            .mount
            .open(rel, OpenFlags::default(), m.make_path(), m.opts))?;
        f.size()
    } else {
        inode.size
    };
    Ok(StatInfo {
        ino: u64::from(inode.ino),
        mode: u32::from(inode.mode),
        nlink: u64::from(inode.links),
        size,
    })
}

/// 512-byte blocks: the size rounded up to whole 4 KiB blocks (files are
/// reported as fully allocated; holes are not counted out).
fn blocks_of(size: u64) -> u64 {
    size.div_ceil(4096) * 8
}

fn fill_stat(st: *mut libc::stat, s: &StatInfo) -> Result<c_int, c_int> {
    if st.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `stat` is plain old data; all zeroes is a valid value.
    let mut out: libc::stat = unsafe { std::mem::zeroed() };
    out.st_dev = ST_DEV;
    out.st_ino = s.ino;
    out.st_mode = s.mode;
    out.st_nlink = s.nlink;
    // SAFETY: getuid/getgid cannot fail.
    out.st_uid = unsafe { libc::getuid() };
    // SAFETY: as above.
    out.st_gid = unsafe { libc::getgid() };
    out.st_size = s.size as i64;
    out.st_blksize = 4096;
    out.st_blocks = blocks_of(s.size) as i64;
    // SAFETY: the caller's struct stat (checked non-null).
    unsafe { st.write(out) };
    Ok(0)
}

fn fill_statx(stx: *mut libc::statx, s: &StatInfo) -> Result<c_int, c_int> {
    if stx.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `statx` is plain old data; all zeroes is a valid value.
    let mut out: libc::statx = unsafe { std::mem::zeroed() };
    out.stx_mask = libc::STATX_TYPE
        | libc::STATX_MODE
        | libc::STATX_NLINK
        | libc::STATX_UID
        | libc::STATX_GID
        | libc::STATX_INO
        | libc::STATX_SIZE
        | libc::STATX_BLOCKS;
    out.stx_blksize = 4096;
    out.stx_nlink = s.nlink as u32;
    // SAFETY: getuid/getgid cannot fail.
    out.stx_uid = unsafe { libc::getuid() };
    // SAFETY: as above.
    out.stx_gid = unsafe { libc::getgid() };
    out.stx_mode = s.mode as u16;
    out.stx_ino = s.ino;
    out.stx_size = s.size;
    out.stx_blocks = blocks_of(s.size);
    out.stx_dev_major = (ST_DEV >> 8) as u32 & 0xfff;
    out.stx_dev_minor = (ST_DEV & 0xff) as u32;
    // SAFETY: the caller's struct statx (checked non-null).
    unsafe { stx.write(out) };
    Ok(0)
}

macro_rules! fstat_hook {
    ($name:ident) => {
        /// fstat(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, st: *mut libc::stat) -> c_int {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("fstat");
                    fill_stat(st, &stat_of_file(&of)?)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, st) }
        }
    };
}
fstat_hook!(fstat);
fstat_hook!(fstat64);

macro_rules! stat_hook {
    ($name:ident) => {
        /// stat(2)/lstat(2) (and aliases); bufwrite has no symlinks, so
        /// lstat is stat.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, st: *mut libc::stat) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    count("stat");
                    idle_after(fill_stat(st, &stat_of_path(&rel)?))
                });
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, st) }
        }
    };
}
stat_hook!(stat);
stat_hook!(stat64);
stat_hook!(lstat);
stat_hook!(lstat64);

/// `(dirfd, "", AT_EMPTY_PATH)` names the fd itself.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn empty_path(path: *const c_char, flags: c_int) -> bool {
    // SAFETY: the caller's C string, checked non-null.
    flags & libc::AT_EMPTY_PATH != 0 && (path.is_null() || unsafe { *path } == 0)
}

/// fstatat on `(dirfd, path)`: `Some(result)` when it is ours.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn fstatat_ours(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> Option<c_int> {
    // SAFETY: the caller's C string.
    if unsafe { empty_path(path, flags) } {
        let of = ours(dirfd)?;
        return Some(serve(-1, || {
            count("fstat");
            fill_stat(st, &stat_of_file(&of)?)
        }));
    }
    // SAFETY: the caller's C string.
    let rel = unsafe { mount_path(dirfd, path) }?;
    Some(serve(-1, || {
        count("stat");
        idle_after(fill_stat(st, &stat_of_path(&rel)?))
    }))
}

macro_rules! fstatat_hook {
    ($name:ident, $real:ident) => {
        /// fstatat(2) (and aliases), with `AT_EMPTY_PATH`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            st: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            // SAFETY: the caller's arguments.
            if let Some(r) = unsafe { fstatat_ours(dirfd, path, st, flags) } {
                return r;
            }
            let f = real!($real: unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(dirfd, path, st, flags) }
        }
    };
}
fstatat_hook!(fstatat, fstatat);
fstatat_hook!(fstatat64, fstatat64);
// Not a glibc export (the system call's name), kept for programs that
// resolve it by name anyway; it forwards to fstatat.
fstatat_hook!(newfstatat, fstatat);

// glibc before 2.33 compiled stat calls to these (`ver` is
// _STAT_VER_LINUX); 2.36 still exports them for old binaries.
macro_rules! fxstat_hook {
    ($name:ident) => {
        /// The pre-2.33 fstat entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("fstat");
                    fill_stat(st, &stat_of_file(&of)?)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, c_int, *mut libc::stat) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(ver, fd, st) }
        }
    };
}
fxstat_hook!(__fxstat);
fxstat_hook!(__fxstat64);

macro_rules! xstat_hook {
    ($name:ident) => {
        /// The pre-2.33 stat/lstat entry points.
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    count("stat");
                    idle_after(fill_stat(st, &stat_of_path(&rel)?))
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const c_char, *mut libc::stat) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(ver, path, st) }
        }
    };
}
xstat_hook!(__xstat);
xstat_hook!(__xstat64);
xstat_hook!(__lxstat);
xstat_hook!(__lxstat64);

macro_rules! fxstatat_hook {
    ($name:ident) => {
        /// The pre-2.33 fstatat entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            ver: c_int,
            dirfd: c_int,
            path: *const c_char,
            st: *mut libc::stat,
            flags: c_int,
        ) -> c_int {
            // SAFETY: the caller's arguments.
            if let Some(r) = unsafe { fstatat_ours(dirfd, path, st, flags) } {
                return r;
            }
            let f = real!($name: unsafe extern "C" fn(c_int, c_int, *const c_char, *mut libc::stat, c_int) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(ver, dirfd, path, st, flags) }
        }
    };
}
fxstatat_hook!(__fxstatat);
fxstatat_hook!(__fxstatat64);

/// statx(2): the basic fields (no times).
#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    stx: *mut libc::statx,
) -> c_int {
    // SAFETY: the caller's C string.
    if unsafe { empty_path(path, flags) } {
        if let Some(of) = ours(dirfd) {
            return serve(-1, || {
                count("statx");
                fill_statx(stx, &stat_of_file(&of)?)
            });
        }
    // SAFETY: the caller's C string.
    } else if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || {
            count("statx");
            idle_after(fill_statx(stx, &stat_of_path(&rel)?))
        });
    }
    let f = real!(statx: unsafe extern "C" fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, flags, mask, stx) }
}

// ---------------------------------------------------------------- sync, size

/// fsync(2): write back, make durable, flush the device.
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("fsync");
            if of.dir {
                // A directory's edits are in the journal's running
                // transaction (or already in place without a journal).
                let m = state::mounted()?;
                return m
                    .ext4
                    .journal_commit()
                    .map(|()| 0)
                    .map_err(|e| ext4_errno(&e));
            }
            eng(of.file()?.fsync())?;
            record::call(&of, || Op::Fsync);
            Ok(0)
        });
    }
    let f = real!(fsync: unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(fd) }
}

/// fdatasync(2).
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("fdatasync");
            if of.dir {
                let m = state::mounted()?;
                return m
                    .ext4
                    .journal_commit()
                    .map(|()| 0)
                    .map_err(|e| ext4_errno(&e));
            }
            eng(of.file()?.fdatasync())?;
            record::call(&of, || Op::Fdatasync);
            Ok(0)
        });
    }
    let f = real!(fdatasync: unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(fd) }
}

/// sync_file_range(2): writeback of the range (`nbytes` 0 = to EOF).
#[no_mangle]
pub unsafe extern "C" fn sync_file_range(
    fd: c_int,
    off: off_t,
    nbytes: off_t,
    flags: c_uint,
) -> c_int {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            count("sync_file_range");
            let known = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            if flags & !known != 0 {
                return Err(libc::EINVAL);
            }
            let off = offset(off)?;
            let file = of.file()?;
            let len = match offset(nbytes)? {
                0 => file.size().saturating_sub(off),
                n => n,
            };
            eng(file.writeback(off, len)).map(|()| 0)
        });
    }
    let f = real!(sync_file_range: unsafe extern "C" fn(c_int, off_t, off_t, c_uint) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, off, nbytes, flags) }
}

fn do_ftruncate(of: &OpenFile, len: off_t) -> Result<c_int, c_int> {
    writable(of).map_err(|_| libc::EINVAL)?;
    let size = offset(len)?;
    eng(of.file()?.set_len(size))?;
    record::call(of, || Op::Truncate { size });
    Ok(0)
}

macro_rules! ftruncate_hook {
    ($name:ident) => {
        /// ftruncate(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, len: off_t) -> c_int {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("ftruncate");
                    do_ftruncate(&of, len)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, off_t) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, len) }
        }
    };
}
ftruncate_hook!(ftruncate);
ftruncate_hook!(ftruncate64);

fn do_truncate(rel: &str, len: off_t) -> Result<c_int, c_int> {
    count("truncate");
    let len = offset(len)?;
    let m = state::mounted()?;
    match lookup(&m, rel)? {
        None => return Err(libc::ENOENT),
        Some(i) if is_dir(i.mode) => return Err(libc::EISDIR),
        Some(i) if !is_reg(i.mode) => return Err(libc::EINVAL),
        Some(_) => {}
    }
    let f = eng(m
        .mount
        .open(rel, OpenFlags::default(), m.make_path(), m.opts))?;
    eng(f.set_len(len))?;
    if record::enabled() {
        let prefix = String::from_utf8_lossy(state::config().prefix.as_deref().unwrap_or(b""));
        record::path_call(&format!("{prefix}{rel}"), || Op::Truncate { size: len });
    }
    Ok(0)
}

macro_rules! truncate_hook {
    ($name:ident) => {
        /// truncate(2) (and its alias).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, len: off_t) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || idle_after(do_truncate(&rel, len)));
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, off_t) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, len) }
        }
    };
}
truncate_hook!(truncate);
truncate_hook!(truncate64);

fn do_fallocate(of: &OpenFile, mode: c_int, off: off_t, len: off_t) -> Result<(), c_int> {
    writable(of)?;
    let (off, len) = (offset(off)?, offset(len)?);
    if len == 0 {
        return Err(libc::EINVAL);
    }
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    let punch = libc::FALLOC_FL_PUNCH_HOLE;
    let mode = match mode {
        0 => FallocMode::Allocate,
        m if m == keep => FallocMode::KeepSize,
        m if m == punch | keep => FallocMode::PunchHole,
        _ => return Err(libc::EOPNOTSUPP),
    };
    eng(of.file()?.fallocate(off, len, mode))?;
    record::call(of, || match mode {
        FallocMode::PunchHole => Op::Punch { off, len },
        m => Op::Fallocate {
            off,
            len,
            keep_size: m == FallocMode::KeepSize,
        },
    });
    Ok(())
}

macro_rules! fallocate_hook {
    ($name:ident) => {
        /// fallocate(2) (and its alias): mode 0, KEEP_SIZE and
        /// PUNCH_HOLE|KEEP_SIZE; other modes EOPNOTSUPP.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
            if let Some(of) = ours(fd) {
                return serve(-1, || {
                    count("fallocate");
                    do_fallocate(&of, mode, off, len).map(|()| 0)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, c_int, off_t, off_t) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, mode, off, len) }
        }
    };
}
fallocate_hook!(fallocate);
fallocate_hook!(fallocate64);

macro_rules! posix_fallocate_hook {
    ($name:ident) => {
        /// posix_fallocate(3) (and its alias): returns the error number,
        /// errno untouched.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off_t, len: off_t) -> c_int {
            if let Some(of) = ours(fd) {
                let saved = real::errno();
                let r = serve(-1, || {
                    count("posix_fallocate");
                    do_fallocate(&of, 0, off, len).map(|()| 0)
                });
                let code = if r == 0 { 0 } else { real::errno() };
                real::set_errno(saved);
                return code;
            }
            let f = real!($name: unsafe extern "C" fn(c_int, off_t, off_t) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, off, len) }
        }
    };
}
posix_fallocate_hook!(posix_fallocate);
posix_fallocate_hook!(posix_fallocate64);

macro_rules! fadvise_hook {
    ($name:ident) => {
        /// posix_fadvise(2) (and its alias): any valid advice is accepted
        /// (0) on bufwrite fds; an unknown one or a negative length is
        /// EINVAL, returned (errno untouched), as the kernel's.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
            if ours(fd).is_some() {
                // A panic (EIO in errno) returns EIO too: the call's result
                // is its error number.
                return serve(libc::EIO, || {
                    count("posix_fadvise");
                    if len < 0 || !(libc::POSIX_FADV_NORMAL..=libc::POSIX_FADV_NOREUSE).contains(&advice) {
                        return Ok(libc::EINVAL);
                    }
                    Ok(0)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, off_t, off_t, c_int) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, off, len, advice) }
        }
    };
}
fadvise_hook!(posix_fadvise);
fadvise_hook!(posix_fadvise64);

// ---------------------------------------------------------------- names

fn do_unlink(rel: &str, flags: c_int) -> Result<c_int, c_int> {
    count("unlink");
    if flags & !libc::AT_REMOVEDIR != 0 {
        return Err(libc::EINVAL);
    }
    let m = state::mounted()?;
    let inode = lookup(&m, rel)?.ok_or(libc::ENOENT)?;
    if flags & libc::AT_REMOVEDIR != 0 {
        if !is_dir(inode.mode) {
            return Err(libc::ENOTDIR);
        }
        return m
            .ext4
            .remove_dir(rel)
            .map(|()| 0)
            .map_err(|e| ext4_errno(&e));
    }
    if is_dir(inode.mode) {
        return Err(libc::EISDIR);
    }
    eng(m.mount.unlink(rel)).map(|()| 0)
}

/// unlink(2). Unlinking a file open in this process is refused (EBUSY):
/// the engine frees an inode's blocks at unlink.
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || idle_after(do_unlink(&rel, 0)));
    }
    let f = real!(unlink: unsafe extern "C" fn(*const c_char) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(path) }
}

/// unlinkat(2); AT_REMOVEDIR (rmdir) is not served.
#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || idle_after(do_unlink(&rel, flags)));
    }
    let f = real!(unlinkat: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, flags) }
}

fn do_access(rel: &str, mode: c_int, flags: c_int) -> Result<c_int, c_int> {
    count("access");
    let known = libc::AT_EACCESS | libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
    if mode & !(libc::F_OK | libc::R_OK | libc::W_OK | libc::X_OK) != 0 || flags & !known != 0 {
        return Err(libc::EINVAL);
    }
    let m = state::mounted()?;
    let inode = lookup(&m, rel)?.ok_or(libc::ENOENT)?;
    if mode & libc::X_OK != 0 && u32::from(inode.mode) & 0o111 == 0 {
        return Err(libc::EACCES);
    }
    Ok(0)
}

/// access(2): existence, and X_OK against the mode bits (the process
/// owns the image, so read and write are always allowed).
#[no_mangle]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || idle_after(do_access(&rel, mode, 0)));
    }
    let f = real!(access: unsafe extern "C" fn(*const c_char, c_int) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(path, mode) }
}

/// faccessat(2).
#[no_mangle]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || idle_after(do_access(&rel, mode, flags)));
    }
    let f = real!(faccessat: unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, mode, flags) }
}

// ---------------------------------------------------------------- refused

macro_rules! mmap_hook {
    ($name:ident) => {
        /// mmap(2): a bufwrite fd cannot be mapped (ENODEV, recorded);
        /// anonymous maps and other fds pass through.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            addr: *mut c_void,
            len: size_t,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: off_t,
        ) -> *mut c_void {
            if flags & libc::MAP_ANONYMOUS == 0 {
                if let Some(of) = ours(fd) {
                    return serve(libc::MAP_FAILED, || {
                        Err(not_served("mmap", &of.path, libc::ENODEV))
                    });
                }
            }
            let f = real!($name: unsafe extern "C" fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(addr, len, prot, flags, fd, off) }
        }
    };
}
mmap_hook!(mmap);
mmap_hook!(mmap64);

/// ioctl(2): ENOTTY on bufwrite fds (EOPNOTSUPP for the clone requests,
/// which cp then falls back from).
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if ours(fd).is_some() {
        return serve(-1, || {
            count("ioctl");
            match req {
                FICLONE | FICLONERANGE | FIDEDUPERANGE => Err(libc::EOPNOTSUPP),
                _ => Err(libc::ENOTTY),
            }
        });
    }
    let f = real!(ioctl: unsafe extern "C" fn(c_int, c_ulong, ...) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, req, arg) }
}

/// copy_file_range(2): EXDEV when either side is a bufwrite fd, which
/// makes coreutils and others fall back to read/write.
#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    if ours(fd_in).is_some() || ours(fd_out).is_some() {
        return serve(-1, || {
            count("copy_file_range");
            Err(libc::EXDEV)
        });
    }
    let f = real!(copy_file_range: unsafe extern "C" fn(c_int, *mut i64, c_int, *mut i64, size_t, c_uint) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd_in, off_in, fd_out, off_out, len, flags) }
}

macro_rules! sendfile_hook {
    ($name:ident) => {
        /// sendfile(2): EINVAL on bufwrite fds (Python then copies with
        /// read/write).
        #[no_mangle]
        pub unsafe extern "C" fn $name(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
            if ours(out).is_some() || ours(inp).is_some() {
                return serve(-1, || {
                    count("sendfile");
                    Err(libc::EINVAL)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, c_int, *mut off_t, size_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(out, inp, off, n) }
        }
    };
}
sendfile_hook!(sendfile);
sendfile_hook!(sendfile64);

/// splice(2): EINVAL on bufwrite fds.
#[no_mangle]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    if ours(fd_in).is_some() || ours(fd_out).is_some() {
        return serve(-1, || {
            count("splice");
            Err(libc::EINVAL)
        });
    }
    let f = real!(splice: unsafe extern "C" fn(c_int, *mut i64, c_int, *mut i64, size_t, c_uint) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd_in, off_in, fd_out, off_out, len, flags) }
}

// ---------------------------------------------------------------- exit

macro_rules! exit_hook {
    ($name:ident) => {
        /// `_exit`/`_Exit` skip the destructors, yet data written to the
        /// kernel survives a process's end: flush first, as at `exit`.
        #[no_mangle]
        pub unsafe extern "C" fn $name(status: c_int) -> ! {
            if !in_hook() {
                crate::exit_flush();
            }
            let f = real!($name: unsafe extern "C" fn(c_int) -> !);
            // SAFETY: forwarding the caller's argument to the real function.
            unsafe { f(status) }
        }
    };
}
exit_hook!(_exit);
exit_hook!(_Exit);

// ---------------------------------------------------------------- directories

fn do_rmdir(rel: &str) -> Result<c_int, c_int> {
    do_unlink(rel, libc::AT_REMOVEDIR)
}

/// rmdir(2): removes an empty directory (ENOTEMPTY, ENOTDIR); as on Linux
/// also one this process has open (its fd then lists nothing).
#[no_mangle]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || idle_after(do_rmdir(&rel)));
    }
    let f = real!(rmdir: unsafe extern "C" fn(*const c_char) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(path) }
}

fn do_mkdir(rel: &str) -> Result<c_int, c_int> {
    count("mkdir");
    let m = state::mounted()?;
    if lookup(&m, rel)?.is_some() {
        return Err(libc::EEXIST);
    }
    m.ext4.make_dir(rel).map(|()| 0).map_err(|e| ext4_errno(&e))
}

/// mkdir(2) (the mode is the ext4 layer's default, 0755).
#[no_mangle]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || idle_after(do_mkdir(&rel)));
    }
    let f = real!(mkdir: unsafe extern "C" fn(*const c_char, mode_t) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(path, mode) }
}

/// mkdirat(2): as [`mkdir`].
#[no_mangle]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is the caller's C string.
    if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || idle_after(do_mkdir(&rel)));
    }
    let f = real!(mkdirat: unsafe extern "C" fn(c_int, *const c_char, mode_t) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, mode) }
}

/// rename on mount paths: both inside the mount, a file anywhere or a
/// directory within its parent (else EXDEV, so `mv` copies and unlinks;
/// between the mount and the kernel's files too).
///
/// # Safety
/// Both paths are null or NUL-terminated strings.
unsafe fn rename_ours(
    olddir: c_int,
    old: *const c_char,
    newdir: c_int,
    new: *const c_char,
    flags: c_uint,
) -> Option<c_int> {
    // SAFETY: the caller's C strings.
    let (a, b) = unsafe { (mount_path(olddir, old), mount_path(newdir, new)) };
    if a.is_none() && b.is_none() {
        return None;
    }
    Some(serve(-1, || {
        count("rename");
        // RENAME_NOREPLACE is served; EXCHANGE and WHITEOUT are not.
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        let (Some(a), Some(b)) = (a, b) else {
            return Err(libc::EXDEV);
        };
        if flags & libc::RENAME_NOREPLACE != 0 {
            let m = state::mounted()?;
            if lookup(&m, &b)?.is_some() {
                return Err(libc::EEXIST);
            }
        }
        let r = idle_after(do_rename(&a, &b));
        if r == Err(libc::EXDEV) {
            state::record_not_served("rename", &a);
        }
        r
    }))
}

fn do_rename(a: &str, b: &str) -> Result<c_int, c_int> {
    let m = state::mounted()?;
    m.ext4.rename(a, b).map_err(|e| ext4_errno(&e))?;
    // Open descriptions of the moved file (or below a moved directory)
    // follow it: they attach again by name after a fork or an exec.
    for of in state::all_fds() {
        let rel = of.rel();
        if rel == a {
            of.set_rel(b.to_string());
        } else if let Some(rest) = rel.strip_prefix(a).filter(|r| r.starts_with('/')) {
            of.set_rel(format!("{b}{rest}"));
        }
    }
    Ok(0)
}

/// The errno an ext4 layer error means to a program.
pub(crate) fn ext4_errno(e: &bufwrite_ext4::Ext4Error) -> c_int {
    use bufwrite_ext4::Ext4Error as E;
    match e {
        E::NotFound(_) => libc::ENOENT,
        E::AlreadyExists(_) => libc::EEXIST,
        E::WrongType(_) => libc::ENOTDIR,
        E::NotEmpty(_) => libc::ENOTEMPTY,
        E::CrossDir(_) => libc::EXDEV,
        E::NoSpace(_) => libc::ENOSPC,
        E::Unsupported(_) | E::Refused(_) => {
            real::log_line(&format!("not supported here: {e}"));
            libc::EOPNOTSUPP
        }
        _ => {
            real::log_line(&format!("I/O error: {e}"));
            libc::EIO
        }
    }
}

/// A bufwrite directory fd on `rel` (O_DIRECTORY or a read-only open of a
/// directory): for `fdopendir`, `fstat`, `fsync` and as the base of `*at`
/// calls.
fn open_dir(rel: &str, flags: c_int, inode: &bufwrite_ext4::Inode) -> Result<c_int, c_int> {
    let fd = real::sys_open(
        b"/dev/null\0",
        libc::O_RDONLY | (flags & libc::O_CLOEXEC),
        0,
    )?;
    let prefix = String::from_utf8_lossy(state::config().prefix.as_deref().unwrap_or(b""));
    let of = Arc::new(OpenFile::directory(
        flags & (libc::O_ACCMODE | libc::O_DIRECTORY | libc::O_NONBLOCK),
        u64::from(inode.ino),
        u32::from(inode.mode),
        rel.to_string(),
        format!("{prefix}{rel}"),
    ));
    drop(state::insert_fd(fd, of));
    Ok(fd)
}

/// rename(2): see [`rename_ours`].
#[no_mangle]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller's C strings.
    if let Some(r) = unsafe { rename_ours(libc::AT_FDCWD, old, libc::AT_FDCWD, new, 0) } {
        return r;
    }
    let f = real!(rename: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(old, new) }
}

/// renameat(2): see [`rename_ours`].
#[no_mangle]
pub unsafe extern "C" fn renameat(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
) -> c_int {
    // SAFETY: the caller's C strings.
    if let Some(r) = unsafe { rename_ours(od, old, nd, new, 0) } {
        return r;
    }
    let f =
        real!(renameat: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(od, old, nd, new) }
}

/// renameat2(2): see [`rename_ours`].
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: the caller's C strings.
    if let Some(r) = unsafe { rename_ours(od, old, nd, new, flags) } {
        return r;
    }
    let f = real!(renameat2: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_uint) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(od, old, nd, new, flags) }
}

// ---------------------------------------------------------------- exec

/// The environment an exec passes on when bufwrite fds survive it: the
/// caller's, with [`handover::VAR`] set (see [`crate::handover`]).
struct ExecEnv {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

/// Before an exec: the new program image has no cache and no fd table, so
/// everything is written back and synced, and the mount let go of (what
/// the kernel's page cache would have kept for the new program, it now
/// reads from the disk). The bufwrite fds that survive the exec (no
/// FD_CLOEXEC) are handed to the new image: the returned environment is
/// `envp` plus their table (None when there are none: `envp` as it is).
///
/// # Safety
///
/// `envp` is null or a null-terminated array of C strings.
unsafe fn before_exec(envp: *const *const c_char) -> Option<ExecEnv> {
    if in_hook() || state::SHUT_DOWN.load(Ordering::Acquire) {
        return None;
    }
    serve(None, || {
        let entries = state::all_fd_entries();
        if entries.is_empty()
            && state::mounted_if_open().is_none()
            && crate::cwd::virtual_cwd().is_none()
        {
            return Ok(None);
        }
        // Written back, synced, the image lock dropped (also from a vfork
        // child, on its parent's behalf).
        state::let_go_for_exec();
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|(fd, _)| {
                // SAFETY: F_GETFD on the placeholder.
                let fdflags = unsafe { libc::syscall(libc::SYS_fcntl, *fd, libc::F_GETFD) };
                fdflags >= 0 && fdflags & i64::from(libc::FD_CLOEXEC) == 0
            })
            .collect();
        let pid = real::sys_getpid();
        let ours: Vec<(&str, String)> = [
            handover::encode(pid, crate::offsets::table_fd(), &kept).map(|v| (handover::VAR, v)),
            crate::cwd::encode(pid).map(|v| (crate::cwd::VAR, v)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if ours.is_empty() {
            return Ok(None);
        }
        let strings = ours
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| libc::EINVAL))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|c| c.as_ptr()).collect();
        let skips: Vec<String> = [handover::VAR, crate::cwd::VAR]
            .iter()
            .map(|k| format!("{k}="))
            .collect();
        if !envp.is_null() {
            let mut p = envp;
            // SAFETY: a null-terminated array of C strings (the caller's
            // contract, as for execve).
            while let Some(e) = unsafe { p.as_ref() }.copied().filter(|e| !e.is_null()) {
                // SAFETY: each entry is a C string.
                let bytes = unsafe { CStr::from_ptr(e) }.to_bytes();
                if !skips.iter().any(|k| bytes.starts_with(k.as_bytes())) {
                    ptrs.push(e);
                }
                // SAFETY: within the array, up to its null terminator.
                p = unsafe { p.add(1) };
            }
        }
        ptrs.push(std::ptr::null());
        Ok(Some(ExecEnv {
            _strings: strings,
            ptrs,
        }))
    })
}

extern "C" {
    static environ: *const *const c_char;
}

/// The process's environment (for the exec calls that take none).
fn current_env() -> *const *const c_char {
    // SAFETY: reading libc's `environ` pointer.
    unsafe { environ }
}

/// execve(2): see [`before_exec`].
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's environment array.
    let env = unsafe { before_exec(envp) };
    let envp = env.as_ref().map_or(envp, |e| e.ptrs.as_ptr());
    let f = real!(execve: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(path, argv, envp) }
}

/// execv(3): see [`before_exec`].
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the process's environment.
    match unsafe { before_exec(current_env()) } {
        Some(env) => {
            let f = real!(execve: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int);
            // SAFETY: the caller's arguments, our environment array.
            unsafe { f(path, argv, env.ptrs.as_ptr()) }
        }
        None => {
            let f =
                real!(execv: unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, argv) }
        }
    }
}

/// execvp(3): see [`before_exec`].
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the process's environment.
    match unsafe { before_exec(current_env()) } {
        Some(env) => {
            let f = real!(execvpe: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int);
            // SAFETY: the caller's arguments, our environment array.
            unsafe { f(file, argv, env.ptrs.as_ptr()) }
        }
        None => {
            let f =
                real!(execvp: unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(file, argv) }
        }
    }
}

/// execvpe(3): see [`before_exec`].
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's environment array.
    let env = unsafe { before_exec(envp) };
    let envp = env.as_ref().map_or(envp, |e| e.ptrs.as_ptr());
    let f = real!(execvpe: unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(file, argv, envp) }
}

macro_rules! spawn_hook {
    ($name:ident) => {
        /// posix_spawn(3): glibc execs in the child with internal calls no
        /// hook sees, so the parent lets go of the mount first (written
        /// back, synced, the image unlocked) for the new program to open
        /// it; bufwrite fds are not handed to it (see the crate docs).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            pid: *mut libc::pid_t,
            path: *const c_char,
            actions: *const libc::posix_spawn_file_actions_t,
            attr: *const libc::posix_spawnattr_t,
            argv: *const *mut c_char,
            envp: *const *mut c_char,
        ) -> c_int {
            if !in_hook() && state::mounted_if_open().is_some() {
                serve((), || {
                    state::let_go_for_exec();
                    Ok(())
                });
            }
            let f = real!($name: unsafe extern "C" fn(*mut libc::pid_t, *const c_char, *const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t, *const *mut c_char, *const *mut c_char) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(pid, path, actions, attr, argv, envp) }
        }
    };
}
spawn_hook!(posix_spawn);
spawn_hook!(posix_spawnp);

// ---------------------------------------------------------------- links

/// Hard and symbolic links are not made (the ext4 layer makes regular
/// files and directories): EPERM, the errno of a filesystem without them,
/// recorded; between the mount and the kernel's files EXDEV.
fn no_links(call: &'static str, a: Option<String>, b: Option<String>) -> Result<c_int, c_int> {
    count(call);
    match (a, b) {
        (Some(a), Some(_)) => Err(not_served(call, &a, libc::EPERM)),
        (None, Some(b)) if call == "symlink" => Err(not_served(call, &b, libc::EPERM)),
        _ => Err(libc::EXDEV),
    }
}

/// link(2): see [`no_links`].
#[no_mangle]
pub unsafe extern "C" fn link(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller's C strings.
    let (a, b) = unsafe {
        (
            mount_path(libc::AT_FDCWD, old),
            mount_path(libc::AT_FDCWD, new),
        )
    };
    if a.is_some() || b.is_some() {
        return serve(-1, || no_links("link", a, b));
    }
    let f = real!(link: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(old, new) }
}

/// linkat(2): see [`no_links`].
#[no_mangle]
pub unsafe extern "C" fn linkat(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's C strings.
    let (a, b) = unsafe { (mount_path(od, old), mount_path(nd, new)) };
    if a.is_some() || b.is_some() {
        return serve(-1, || no_links("link", a, b));
    }
    let f = real!(linkat: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_int) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(od, old, nd, new, flags) }
}

/// symlink(2): a link made inside the mount is refused (the target is
/// only a string: it may name anything).
#[no_mangle]
pub unsafe extern "C" fn symlink(target: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller's C string.
    if let Some(b) = unsafe { mount_path(libc::AT_FDCWD, new) } {
        return serve(-1, || no_links("symlink", None, Some(b)));
    }
    let f = real!(symlink: unsafe extern "C" fn(*const c_char, *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(target, new) }
}

/// symlinkat(2): as [`symlink`].
#[no_mangle]
pub unsafe extern "C" fn symlinkat(target: *const c_char, nd: c_int, new: *const c_char) -> c_int {
    // SAFETY: the caller's C string.
    if let Some(b) = unsafe { mount_path(nd, new) } {
        return serve(-1, || no_links("symlink", None, Some(b)));
    }
    let f = real!(symlinkat: unsafe extern "C" fn(*const c_char, c_int, *const c_char) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(target, nd, new) }
}

/// readlink on a mount path: no file there is a symbolic link the library
/// follows (EINVAL, as for any file that is not one; ENOENT if missing).
fn do_readlink(rel: &str) -> Result<ssize_t, c_int> {
    count("readlink");
    let m = state::mounted()?;
    let r = lookup(&m, rel)?.map_or(Err(libc::ENOENT), |_| Err(libc::EINVAL));
    drop(m);
    idle_after(r)
}

/// readlink(2).
#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    // SAFETY: the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || do_readlink(&rel));
    }
    let f = real!(readlink: unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(path, buf, size) }
}

/// readlinkat(2).
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: size_t,
) -> ssize_t {
    // SAFETY: the caller's C string.
    if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || do_readlink(&rel));
    }
    let f = real!(readlinkat: unsafe extern "C" fn(c_int, *const c_char, *mut c_char, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, buf, size) }
}

// ---------------------------------------------------------------- attributes

/// chmod, chown and the utime family on mount files are accepted and
/// change nothing (the ext4 layer keeps its default mode, owner and zero
/// times): `cp -p`, `shutil.copystat` and `touch` then succeed. Counted as
/// `attr_ignored` in the stats.
fn attr_ok(rel: &str) -> Result<c_int, c_int> {
    count("attr_ignored");
    let m = state::mounted()?;
    let r = lookup(&m, rel).and_then(|i| i.map(|_| 0).ok_or(libc::ENOENT));
    drop(m);
    idle_after(r)
}

macro_rules! attr_path_hook {
    ($name:ident ($($arg:ident: $ty:ty),*)) => {
        /// Accepted on mount paths (see [`attr_ok`]).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, $($arg: $ty),*) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || attr_ok(&rel));
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, $($ty),*) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, $($arg),*) }
        }
    };
}
attr_path_hook!(chmod(mode: mode_t));
attr_path_hook!(chown(uid: libc::uid_t, gid: libc::gid_t));
attr_path_hook!(lchown(uid: libc::uid_t, gid: libc::gid_t));
attr_path_hook!(utime(times: *const libc::utimbuf));
attr_path_hook!(utimes(times: *const libc::timeval));
attr_path_hook!(lutimes(times: *const libc::timeval));

macro_rules! attr_at_hook {
    ($name:ident ($($arg:ident: $ty:ty),*)) => {
        /// Accepted on mount paths (see [`attr_ok`]).
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, $($arg: $ty),*) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(dirfd, path) } {
                return serve(-1, || attr_ok(&rel));
            }
            // SAFETY: a non-null C string has at least its NUL byte.
            if !path.is_null() && unsafe { *path } == 0 {
                // An empty path with AT_EMPTY_PATH (or utimensat's null
                // path) names the fd itself.
                if ours(dirfd).is_some() {
                    return serve(-1, || {
                        count("attr_ignored");
                        Ok(0)
                    });
                }
            }
            let f = real!($name: unsafe extern "C" fn(c_int, *const c_char, $($ty),*) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(dirfd, path, $($arg),*) }
        }
    };
}
attr_at_hook!(fchmodat(mode: mode_t, flags: c_int));
attr_at_hook!(fchownat(uid: libc::uid_t, gid: libc::gid_t, flags: c_int));
attr_at_hook!(futimesat(times: *const libc::timeval));

/// utimensat(2): a null path names `dirfd` itself (futimens).
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    // SAFETY: a non-null C string has at least its NUL byte.
    if path.is_null() || unsafe { *path } == 0 {
        if ours(dirfd).is_some() {
            return serve(-1, || {
                count("attr_ignored");
                Ok(0)
            });
        }
    // SAFETY: `path` is the caller's C string.
    } else if let Some(rel) = unsafe { mount_path(dirfd, path) } {
        return serve(-1, || attr_ok(&rel));
    }
    let f = real!(utimensat: unsafe extern "C" fn(c_int, *const c_char, *const libc::timespec, c_int) -> c_int);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(dirfd, path, times, flags) }
}

macro_rules! attr_fd_hook {
    ($name:ident ($($arg:ident: $ty:ty),*)) => {
        /// Accepted on bufwrite fds (see [`attr_ok`]).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, $($arg: $ty),*) -> c_int {
            if ours(fd).is_some() {
                return serve(-1, || {
                    count("attr_ignored");
                    Ok(0)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, $($ty),*) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, $($arg),*) }
        }
    };
}
attr_fd_hook!(fchmod(mode: mode_t));
attr_fd_hook!(fchown(uid: libc::uid_t, gid: libc::gid_t));
attr_fd_hook!(futimens(times: *const libc::timespec));
attr_fd_hook!(futimes(times: *const libc::timeval));

// ---------------------------------------------------------------- xattrs

macro_rules! getxattr_hook {
    ($name:ident) => {
        /// Extended attributes are not kept: ENOTSUP (what `ls -l` and `cp`
        /// take as "no ACLs here"), never the kernel's ENOENT.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            name: *const c_char,
            value: *mut c_void,
            size: size_t,
        ) -> ssize_t {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    count("getxattr");
                    Err(xattr_errno(&rel))
                });
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void, size_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, name, value, size) }
        }
    };
}
getxattr_hook!(getxattr);
getxattr_hook!(lgetxattr);

macro_rules! listxattr_hook {
    ($name:ident) => {
        /// No extended attributes: an empty list.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    count("listxattr");
                    match xattr_errno(&rel) {
                        libc::ENOTSUP => Ok(0),
                        e => Err(e),
                    }
                });
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> ssize_t);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, list, size) }
        }
    };
}
listxattr_hook!(listxattr);
listxattr_hook!(llistxattr);

macro_rules! setxattr_hook {
    ($name:ident ($($arg:ident: $ty:ty),*)) => {
        /// Extended attributes are not kept: ENOTSUP (`cp -a` then sets
        /// the mode instead of an ACL).
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, $($arg: $ty),*) -> c_int {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(-1, || {
                    count("setxattr");
                    Err(xattr_errno(&rel))
                });
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, $($ty),*) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, $($arg),*) }
        }
    };
}
setxattr_hook!(setxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int));
setxattr_hook!(lsetxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int));
setxattr_hook!(removexattr(name: *const c_char));
setxattr_hook!(lremovexattr(name: *const c_char));

macro_rules! fsetxattr_hook {
    ($name:ident ($($arg:ident: $ty:ty),*)) => {
        /// Extended attributes are not kept: ENOTSUP.
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, $($arg: $ty),*) -> c_int {
            if ours(fd).is_some() {
                return serve(-1, || {
                    count("setxattr");
                    Err(libc::ENOTSUP)
                });
            }
            let f = real!($name: unsafe extern "C" fn(c_int, $($ty),*) -> c_int);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(fd, $($arg),*) }
        }
    };
}
fsetxattr_hook!(fsetxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int));
fsetxattr_hook!(fremovexattr(name: *const c_char));

/// ENOENT for a missing name, else ENOTSUP.
fn xattr_errno(rel: &str) -> c_int {
    let r = state::mounted().and_then(|m| lookup(&m, rel));
    state::release_if_idle();
    match r {
        Ok(Some(_)) => libc::ENOTSUP,
        Ok(None) => libc::ENOENT,
        Err(e) => e,
    }
}

/// fgetxattr(2) on a bufwrite fd: ENOTSUP.
#[no_mangle]
pub unsafe extern "C" fn fgetxattr(
    fd: c_int,
    name: *const c_char,
    value: *mut c_void,
    size: size_t,
) -> ssize_t {
    if ours(fd).is_some() {
        return serve(-1, || {
            count("getxattr");
            Err(libc::ENOTSUP)
        });
    }
    let f = real!(fgetxattr: unsafe extern "C" fn(c_int, *const c_char, *mut c_void, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, name, value, size) }
}

/// flistxattr(2) on a bufwrite fd: an empty list.
#[no_mangle]
pub unsafe extern "C" fn flistxattr(fd: c_int, list: *mut c_char, size: size_t) -> ssize_t {
    if ours(fd).is_some() {
        return serve(-1, || {
            count("listxattr");
            Ok(0)
        });
    }
    let f = real!(flistxattr: unsafe extern "C" fn(c_int, *mut c_char, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, list, size) }
}
