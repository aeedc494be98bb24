//! stdio on mount paths. glibc's `fopen` opens files with internal calls
//! that never reach an interposed `open`, so `fopen`/`fopen64`/`fdopen` are
//! hooked themselves: on a mount path (or a bufwrite fd) they return a
//! `fopencookie` stream whose callbacks are the library's own read, write,
//! seek and close of a bufwrite fd. `fileno()` of such a stream is -1
//! (glibc's answer for cookie streams).

use crate::hooks::{do_close, do_lseek, do_open, do_read, do_write, mount_path, ours};
use crate::real::{self, real};
use crate::serve;
use crate::state::count;
use libc::{c_char, c_int, c_void, size_t, ssize_t, FILE};
use std::ffi::CStr;

/// glibc's `cookie_io_functions_t`.
#[repr(C)]
struct CookieIo {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut FILE;
}

/// The fd a cookie stands for (the cookie is the fd number itself).
fn fd_of(cookie: *mut c_void) -> c_int {
    cookie as usize as c_int
}

unsafe extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    serve(-1, || {
        let of = crate::state::lookup_fd(fd_of(cookie)).ok_or(libc::EBADF)?;
        count("fread");
        if n == 0 || buf.is_null() {
            return Ok(0);
        }
        // SAFETY: stdio's buffer of `n` bytes.
        do_read(&of, unsafe {
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), n)
        })
    })
}

unsafe extern "C" fn cookie_write(cookie: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // fopencookie's write returns 0 on error, never a negative value.
    serve(0, || {
        let of = crate::state::lookup_fd(fd_of(cookie)).ok_or(libc::EBADF)?;
        count("fwrite");
        if n == 0 || buf.is_null() {
            return Ok(0);
        }
        // SAFETY: stdio's buffer of `n` bytes.
        do_write(&of, unsafe {
            std::slice::from_raw_parts(buf.cast::<u8>(), n)
        })
    })
}

unsafe extern "C" fn cookie_seek(cookie: *mut c_void, off: *mut i64, whence: c_int) -> c_int {
    serve(-1, || {
        let of = crate::state::lookup_fd(fd_of(cookie)).ok_or(libc::EBADF)?;
        count("fseek");
        if off.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: stdio passes the offset to seek to, and takes the result.
        let new = do_lseek(&of, unsafe { *off }, whence)?;
        // SAFETY: as above.
        unsafe { *off = new };
        Ok(0)
    })
}

unsafe extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    serve(-1, || do_close(fd_of(cookie)))
}

/// open(2) flags for an fopen mode string (`r`, `w+`, `ax`, `re`, ...).
fn mode_flags(mode: &[u8]) -> Option<c_int> {
    let plus = mode.contains(&b'+');
    let mut flags = match (mode.first()?, plus) {
        (b'r', false) => libc::O_RDONLY,
        (b'r', true) => libc::O_RDWR,
        (b'w', false) => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        (b'w', true) => libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        (b'a', false) => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        (b'a', true) => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
        _ => return None,
    };
    if mode.contains(&b'x') {
        flags |= libc::O_EXCL;
    }
    if mode.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    Some(flags)
}

/// A cookie stream over bufwrite fd `fd` (null with errno set on failure).
pub(crate) fn stream(fd: c_int, mode: *const c_char) -> *mut FILE {
    let io = CookieIo {
        read: Some(cookie_read),
        write: Some(cookie_write),
        seek: Some(cookie_seek),
        close: Some(cookie_close),
    };
    // SAFETY: `mode` is the caller's mode string; the cookie is a number.
    unsafe { fopencookie(fd as usize as *mut c_void, mode, io) }
}

/// fopen on `rel` in the mount: open, then wrap in a stream.
fn do_fopen(rel: String, mode: *const c_char) -> Result<*mut FILE, c_int> {
    count("fopen");
    if mode.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-null mode string of the caller.
    let m = unsafe { CStr::from_ptr(mode) }.to_bytes();
    let flags = mode_flags(m).ok_or(libc::EINVAL)?;
    let fd = do_open(rel, flags)?;
    // glibc starts an "a" stream (not "a+", which reads from 0) at EOF, so
    // ftell before the first write says where it will land.
    if m.first() == Some(&b'a') && !m.contains(&b'+') {
        if let Some(of) = crate::state::lookup_fd(fd) {
            let _ = do_lseek(&of, 0, libc::SEEK_END);
        }
    }
    let f = stream(fd, mode);
    if f.is_null() {
        let e = real::errno();
        let _ = do_close(fd);
        return Err(e);
    }
    Ok(f)
}

macro_rules! fopen_hook {
    ($name:ident) => {
        /// fopen(3) (and its alias): a mount path gives a cookie stream.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE {
            // SAFETY: `path` is the caller's C string.
            if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
                return serve(std::ptr::null_mut(), || do_fopen(rel, mode));
            }
            let f = real!($name: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE);
            // SAFETY: forwarding the caller's arguments to the real function.
            unsafe { f(path, mode) }
        }
    };
}
fopen_hook!(fopen);
fopen_hook!(fopen64);

/// fdopen(3): a bufwrite fd gives a cookie stream that owns the fd
/// (fclose closes it). The mode is not checked against the fd's flags;
/// reads and writes are, as on the fd.
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    if ours(fd).is_some() {
        return serve(std::ptr::null_mut(), || {
            count("fdopen");
            let f = stream(fd, mode);
            if f.is_null() {
                return Err(real::errno());
            }
            Ok(f)
        });
    }
    let f = real!(fdopen: unsafe extern "C" fn(c_int, *const c_char) -> *mut FILE);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(fd, mode) }
}

extern "C" {
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
    static mut stderr: *mut FILE;
}

/// After an exec handed bufwrite fds 0, 1 or 2 over (a shell's `> /bufwrite/f`):
/// glibc's standard streams write and read with internal calls no hook
/// sees, so each one on a bufwrite fd is replaced by a cookie stream over
/// it (stdout and stderr as their stdio defaults buffer: fully and not at
/// all; the exit path flushes).
pub(crate) fn rebind_std_streams() {
    for fd in 0..3 {
        if crate::state::lookup_fd(fd).is_none() {
            continue;
        }
        let mode: &std::ffi::CStr = if fd == 0 { c"r" } else { c"w" };
        let s = stream(fd, mode.as_ptr());
        if s.is_null() {
            continue;
        }
        // SAFETY: the constructor runs before the program does; assigning
        // the standard stream pointers is what glibc documents for
        // redirecting them (the old stream is left, unused).
        unsafe {
            if fd == 2 {
                libc::setvbuf(s, std::ptr::null_mut(), libc::_IONBF, 0);
            }
            match fd {
                0 => stdin = s,
                1 => stdout = s,
                _ => stderr = s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mode_flags;

    #[test]
    fn fopen_modes_map_to_open_flags() {
        use libc::*;
        assert_eq!(mode_flags(b"r"), Some(O_RDONLY));
        assert_eq!(mode_flags(b"rb"), Some(O_RDONLY));
        assert_eq!(mode_flags(b"r+"), Some(O_RDWR));
        assert_eq!(mode_flags(b"w"), Some(O_WRONLY | O_CREAT | O_TRUNC));
        assert_eq!(mode_flags(b"wb+"), Some(O_RDWR | O_CREAT | O_TRUNC));
        assert_eq!(mode_flags(b"a"), Some(O_WRONLY | O_CREAT | O_APPEND));
        assert_eq!(
            mode_flags(b"a+e"),
            Some(O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC)
        );
        assert_eq!(
            mode_flags(b"wx"),
            Some(O_WRONLY | O_CREAT | O_TRUNC | O_EXCL)
        );
        assert_eq!(mode_flags(b"q"), None);
        assert_eq!(mode_flags(b""), None);
    }
}
