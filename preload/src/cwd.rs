//! A working directory inside the mount. The kernel cannot `chdir` into a
//! directory it does not have, so `chdir`/`fchdir` to a mount directory
//! set a working directory the library keeps: relative paths of hooked
//! calls resolve against it and `getcwd` returns it (gnulib's `mkdir -p`
//! walks into each directory it makes; shells `cd`). A `chdir` anywhere
//! else goes to the kernel and clears it. Across exec it travels in
//! `BUFWRITE_CWD` (tagged with the pid, as [`crate::handover`]'s table).
//! Calls the library does not hook (exec of a relative path, for one) still
//! resolve against the kernel's working directory.

use crate::hooks::{mount_path, ours};
use crate::real::{self, real};
use crate::serve;
use crate::state::{self, count};
use libc::{c_char, c_int, size_t};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The environment variable for exec.
pub const VAR: &str = "BUFWRITE_CWD";

static IS_VIRTUAL: AtomicBool = AtomicBool::new(false);
static CWD: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The working directory inside the mount (an absolute, normalised path),
/// when there is one.
pub fn virtual_cwd() -> Option<Vec<u8>> {
    if !IS_VIRTUAL.load(Ordering::Acquire) {
        return None;
    }
    let g = CWD.lock().unwrap_or_else(|e| e.into_inner());
    (!g.is_empty()).then(|| g.clone())
}

fn set(path: Option<Vec<u8>>) {
    let mut g = CWD.lock().unwrap_or_else(|e| e.into_inner());
    IS_VIRTUAL.store(path.is_some(), Ordering::Release);
    *g = path.unwrap_or_default();
}

/// Enters mount directory `rel` (ENOENT, ENOTDIR as chdir).
fn enter(rel: &str) -> Result<c_int, c_int> {
    count("chdir");
    let m = state::mounted()?;
    let r = match m.ext4.lookup(rel) {
        Ok(i) if i.is_dir() => {
            let prefix = state::config().prefix.as_deref().unwrap_or(b"");
            let mut p = prefix.to_vec();
            if rel != "/" {
                p.extend_from_slice(rel.as_bytes());
            }
            set(Some(p));
            Ok(0)
        }
        Ok(_) => Err(libc::ENOTDIR),
        Err(bufwrite_ext4::Ext4Error::NotFound(_)) => Err(libc::ENOENT),
        Err(e) => Err(crate::hooks::ext4_errno(&e)),
    };
    drop(m);
    state::release_if_idle();
    r
}

/// chdir(2).
///
/// # Safety
/// `path` is the caller's C string.
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    // SAFETY: the caller's C string.
    if let Some(rel) = unsafe { mount_path(libc::AT_FDCWD, path) } {
        return serve(-1, || enter(&rel));
    }
    let f = real!(chdir: unsafe extern "C" fn(*const c_char) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    let r = unsafe { f(path) };
    if r == 0 {
        set(None);
    }
    r
}

/// fchdir(2): into a bufwrite directory fd, or the kernel's.
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    if let Some(of) = ours(fd) {
        return serve(-1, || {
            if !of.dir {
                return Err(libc::ENOTDIR);
            }
            enter(&of.rel())
        });
    }
    let f = real!(fchdir: unsafe extern "C" fn(c_int) -> c_int);
    // SAFETY: forwarding the caller's argument to the real function.
    let r = unsafe { f(fd) };
    if r == 0 {
        set(None);
    }
    r
}

/// getcwd(3): the working directory inside the mount, when there is one
/// (a null `buf` allocates, as glibc does).
#[no_mangle]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    if !crate::in_hook() {
        if let Some(p) = virtual_cwd() {
            let need = p.len() + 1;
            let (out, cap) = if buf.is_null() {
                let cap = if size == 0 { need } else { size };
                // SAFETY: malloc of `cap` bytes; the caller frees it.
                (unsafe { libc::malloc(cap) }.cast::<c_char>(), cap)
            } else {
                (buf, size)
            };
            if out.is_null() {
                real::set_errno(libc::ENOMEM);
                return std::ptr::null_mut();
            }
            if cap < need {
                if buf.is_null() {
                    // SAFETY: ours, just allocated.
                    unsafe { libc::free(out.cast()) };
                }
                real::set_errno(libc::ERANGE);
                return std::ptr::null_mut();
            }
            // SAFETY: `out` has room for `need` bytes (checked).
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr().cast::<c_char>(), out, p.len());
                *out.add(p.len()) = 0;
            }
            return out;
        }
    }
    let f = real!(getcwd: unsafe extern "C" fn(*mut c_char, size_t) -> *mut c_char);
    // SAFETY: forwarding the caller's arguments to the real function.
    unsafe { f(buf, size) }
}

/// The `BUFWRITE_CWD` value for an exec by process `pid`, if the working
/// directory is inside the mount.
pub fn encode(pid: i64) -> Option<String> {
    let p = virtual_cwd()?;
    let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{pid};{hex}"))
}

/// The constructor's part: takes the working directory an exec handed
/// over (if this process wrote it) and removes the variable.
pub fn adopt() {
    let Ok(v) = std::env::var(VAR) else { return };
    // SAFETY: the constructor runs before the program's threads exist.
    unsafe { libc::unsetenv(c"BUFWRITE_CWD".as_ptr()) };
    let Some((pid, hex)) = v.split_once(';') else {
        return;
    };
    if pid.parse::<i64>().ok() != Some(real::sys_getpid()) || hex.len() % 2 != 0 {
        return;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    if let Some(b) = bytes.filter(|b| b.first() == Some(&b'/')) {
        set(Some(b));
    }
}
