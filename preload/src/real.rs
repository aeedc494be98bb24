//! The real libc functions, found with `dlsym(RTLD_NEXT, ...)` and cached
//! in statics, and raw system calls for the library's own I/O (which must
//! never reach our own exports: std inside this library would call them).

use libc::{c_char, c_int};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The address of the next definition of `name` (NUL-terminated), cached
/// in `slot`. The store is an idempotent race (every thread finds the same
/// address), so no once-cell is needed: a `OnceLock` would deadlock if the
/// lookup re-entered a hook. Panics when libc lacks the symbol (the hook's
/// `catch_unwind` turns that into EIO).
pub fn resolve(name: &'static [u8], slot: &AtomicUsize) -> usize {
    let p = slot.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT is valid in a
    // shared object (and in an executable, where it means "libc").
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast::<c_char>()) } as usize;
    assert!(
        p != 0,
        "libc has no {}",
        String::from_utf8_lossy(&name[..name.len() - 1])
    );
    slot.store(p, Ordering::Relaxed);
    p
}

/// `real!(name: TYPE)`: the next definition of libc's `name` as a function
/// pointer of `TYPE`.
macro_rules! real {
    ($name:ident : $ty:ty) => {{
        static SLOT: ::std::sync::atomic::AtomicUsize = ::std::sync::atomic::AtomicUsize::new(0);
        let p = $crate::real::resolve(concat!(stringify!($name), "\0").as_bytes(), &SLOT);
        // SAFETY: `p` is the address dlsym gave for this libc symbol, whose
        // C prototype `$ty` spells out.
        unsafe { ::std::mem::transmute::<usize, $ty>(p) }
    }};
}
pub(crate) use real;

/// Raw `openat(AT_FDCWD, path, flags, mode)`; the fd or -errno.
pub fn sys_open(path: &[u8], flags: c_int, mode: libc::mode_t) -> Result<c_int, c_int> {
    // The path must be NUL-terminated for the kernel.
    debug_assert_eq!(path.last(), Some(&0));
    // SAFETY: a plain system call on a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            libc::c_uint::from(mode),
        )
    };
    ret(r).map(|fd| fd as c_int)
}

/// Raw close(2).
pub fn sys_close(fd: c_int) -> Result<(), c_int> {
    // SAFETY: closing a descriptor number is memory safe.
    ret(unsafe { libc::syscall(libc::SYS_close, fd) }).map(drop)
}

/// Raw write(2) of the whole buffer (loops on short writes).
pub fn sys_write_all(fd: c_int, mut buf: &[u8]) -> Result<(), c_int> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = ret(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })?;
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Raw getpid(2).
pub fn sys_getpid() -> i64 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) }
}

/// The current directory through the raw system call (no allocation).
pub fn sys_getcwd(buf: &mut [u8]) -> Option<&[u8]> {
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n <= 0 {
        return None;
    }
    // The kernel counts the NUL.
    let n = (n as usize).saturating_sub(1);
    Some(&buf[..n])
}

/// The path a directory fd names (`readlink /proc/self/fd/N`), raw.
pub fn sys_fd_path(fd: c_int, buf: &mut [u8]) -> Option<&[u8]> {
    let link = format!("/proc/self/fd/{fd}\0");
    // SAFETY: NUL-terminated link name; `buf` valid for its length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            link.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n <= 0 || n as usize >= buf.len() {
        return None;
    }
    Some(&buf[..n as usize])
}

fn ret(r: i64) -> Result<i64, c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// The calling thread's errno.
pub fn errno() -> c_int {
    // SAFETY: glibc's errno location is valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set_errno(e: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

/// One line on stderr through the raw system call (std's stderr would
/// call our own `write`, and coreutils may have closed fd 2 already).
pub fn log_line(msg: &str) {
    let line = format!("bufwrite-preload: {msg}\n");
    let _ = sys_write_all(2, line.as_bytes());
}
