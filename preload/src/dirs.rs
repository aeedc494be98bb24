//! Directory streams on mount directories: `opendir`, `fdopendir`,
//! `readdir`/`readdir64`, `rewinddir`, `telldir`, `seekdir`, `dirfd` and
//! `closedir`. glibc's own stream reads with `getdents64`, a system call no
//! hook sees, so a stream on a bufwrite directory is the library's: a
//! snapshot of the entries taken at open (POSIX leaves entries added or
//! removed after the open unspecified), over a bufwrite directory fd that
//! `dirfd` returns and `closedir` closes. Streams are told from glibc's by
//! their address (a registry of the ones handed out).

use crate::hooks::{do_close, do_open, mount_path};
use crate::real::real;
use crate::serve;
use crate::state::{self, count};
use libc::{c_char, c_int, c_long, c_void, dirent64};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// One stream: the entries, the next index, the fd, and the record
/// `readdir` returns (valid until the next call on the stream, as glibc's).
struct Stream {
    entries: Vec<bufwrite_ext4::DirEntry>,
    next: usize,
    fd: c_int,
    ent: Box<dirent64>,
}

/// The streams handed out, by address.
static STREAMS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn streams() -> MutexGuard<'static, Option<HashSet<usize>>> {
    STREAMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream behind `d`, if it is one of ours.
fn ours(d: *mut c_void) -> Option<*mut Stream> {
    if d.is_null() {
        return None;
    }
    let g = streams();
    g.as_ref()?.contains(&(d as usize)).then_some(d.cast())
}

/// A stream over bufwrite directory fd `fd` (taking it over).
fn make(fd: c_int) -> Result<*mut c_void, c_int> {
    let of = state::lookup_fd(fd).ok_or(libc::EBADF)?;
    if !of.dir {
        return Err(libc::ENOTDIR);
    }
    let m = state::mounted()?;
    let entries = m.ext4.read_dir(&of.rel()).map_err(|e| {
        crate::real::log_line(&format!("readdir of {}: {e}", of.path));
        crate::hooks::ext4_errno(&e)
    })?;
    // SAFETY: dirent64 is plain old data; zeroes are a valid value.
    let ent: Box<dirent64> = Box::new(unsafe { std::mem::zeroed() });
    let p = Box::into_raw(Box::new(Stream {
        entries,
        next: 0,
        fd,
        ent,
    }));
    streams()
        .get_or_insert_with(HashSet::new)
        .insert(p as usize);
    Ok(p.cast())
}

/// opendir(3).
///
/// # Safety
/// `path` is the caller's C string.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut c_void {
    // SAFETY: the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(std::ptr::null_mut(), || {
            count("opendir");
            let fd = do_open(rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
            make(fd).inspect_err(|_| {
                let _ = do_close(fd);
            })
        });
    }
    let f = real!(opendir: unsafe extern "C" fn(*const c_char) -> *mut c_void);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(path) }
}

/// fdopendir(3) on a bufwrite directory fd.
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut c_void {
    if crate::hooks::ours(fd).is_some() {
        return serve(std::ptr::null_mut(), || {
            count("opendir");
            make(fd)
        });
    }
    let f = real!(fdopendir: unsafe extern "C" fn(c_int) -> *mut c_void);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(fd) }
}

macro_rules! readdir_hook {
    ($name:ident) => {
        /// readdir(3) (and its 64-bit alias: one layout on x86-64).
        #[no_mangle]
        pub unsafe extern "C" fn $name(d: *mut c_void) -> *mut dirent64 {
            if let Some(s) = ours(d) {
                return serve(std::ptr::null_mut(), || {
                    // SAFETY: a live stream of ours (the registry holds
                    // it until closedir); the caller does not share a
                    // stream between threads without locking, as for
                    // glibc's.
                    let s = unsafe { &mut *s };
                    let Some(e) = s.entries.get(s.next) else {
                        return Ok(std::ptr::null_mut());
                    };
                    s.next += 1;
                    let ent = &mut *s.ent;
                    let n = e.name.len().min(ent.d_name.len() - 1);
                    ent.d_ino = u64::from(e.ino);
                    ent.d_off = s.next as i64;
                    ent.d_reclen = std::mem::size_of::<dirent64>() as u16;
                    ent.d_type = match e.file_type {
                        1 => libc::DT_REG,
                        2 => libc::DT_DIR,
                        3 => libc::DT_CHR,
                        4 => libc::DT_BLK,
                        5 => libc::DT_FIFO,
                        6 => libc::DT_SOCK,
                        7 => libc::DT_LNK,
                        _ => libc::DT_UNKNOWN,
                    };
                    for (d, b) in ent.d_name.iter_mut().zip(&e.name[..n]) {
                        *d = *b as c_char;
                    }
                    ent.d_name[n] = 0;
                    Ok(ent as *mut dirent64)
                });
            }
            let f = real!($name: unsafe extern "C" fn(*mut c_void) -> *mut dirent64);
            // SAFETY: forwarding the caller's argument to the real function.
            unsafe { f(d) }
        }
    };
}
readdir_hook!(readdir);
readdir_hook!(readdir64);

/// closedir(3): frees the stream and closes its fd.
#[no_mangle]
pub unsafe extern "C" fn closedir(d: *mut c_void) -> c_int {
    if let Some(s) = ours(d) {
        return serve(-1, || {
            if let Some(set) = streams().as_mut() {
                set.remove(&(s as usize));
            }
            // SAFETY: made by Box::into_raw in `make`, out of the registry
            // now, so freed once.
            let s = unsafe { Box::from_raw(s) };
            do_close(s.fd)
        });
    }
    let f = real!(closedir: unsafe extern "C" fn(*mut c_void) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(d) }
}

/// dirfd(3).
#[no_mangle]
pub unsafe extern "C" fn dirfd(d: *mut c_void) -> c_int {
    if let Some(s) = ours(d) {
        // SAFETY: a live stream of ours.
        return unsafe { (*s).fd };
    }
    let f = real!(dirfd: unsafe extern "C" fn(*mut c_void) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(d) }
}

/// rewinddir(3).
#[no_mangle]
pub unsafe extern "C" fn rewinddir(d: *mut c_void) {
    if let Some(s) = ours(d) {
        // SAFETY: a live stream of ours.
        unsafe { (*s).next = 0 };
        return;
    }
    let f = real!(rewinddir: unsafe extern "C" fn(*mut c_void));
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(d) }
}

/// telldir(3): the index of the next entry.
#[no_mangle]
pub unsafe extern "C" fn telldir(d: *mut c_void) -> c_long {
    if let Some(s) = ours(d) {
        // SAFETY: a live stream of ours.
        return unsafe { (*s).next } as c_long;
    }
    let f = real!(telldir: unsafe extern "C" fn(*mut c_void) -> c_long);
    // SAFETY: forwarding the caller's argument to the real function.
    unsafe { f(d) }
}

/// seekdir(3): back to a position telldir gave.
#[no_mangle]
pub unsafe extern "C" fn seekdir(d: *mut c_void, pos: c_long) {
    if let Some(s) = ours(d) {
        // SAFETY: a live stream of ours.
        unsafe { (*s).next = usize::try_from(pos).unwrap_or(0) };
        return;
    }
    let f = real!(seekdir: unsafe extern "C" fn(*mut c_void, c_long));
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(d, pos) }
}
