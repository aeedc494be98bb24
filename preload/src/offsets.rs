//! File offsets shared by a process family, as the kernel shares an open
//! file description's offset between the processes that inherited it.
//!
//! After `fork`, or across `exec`, each process has its own copy of the fd
//! table, but `{ cmd1; cmd2; } > /bufwrite/f` needs cmd2 to write where
//! cmd1 stopped, and a parent to read on from where its child left the
//! offset. So each open file description's offset lives in a slot of one
//! table of `AtomicU64`s in a `memfd` mapped `MAP_SHARED`: a fork shares
//! the mapping, and the memfd's fd (kept open across exec, at a high
//! number) lets the next image map it again ([`crate::handover`] passes
//! its number). Only one process of the family uses the mount at a time
//! (the image lock), so the slots need no cross-process locking beyond
//! their atomicity. Slots are never freed (a family gets [`SLOTS`] - 2
//! opens); when the table is full or cannot be made, offsets are private to
//! the process, as before.

use libc::c_int;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Slots in the table (512 KiB of shared memory, touched only as used).
pub const SLOTS: usize = 1 << 16;
const BYTES: usize = SLOTS * 8;
/// Slot 0: tells our table from any other file behind the fd.
const MAGIC: u64 = 0x6275_6677_6f66_6631; // "buf wofs1"

static TABLE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static TABLE_FD: AtomicI32 = AtomicI32::new(-1);
/// Serialises making the table (the first open, or the constructor).
static MAKING: Mutex<()> = Mutex::new(());

fn slots() -> Option<&'static [AtomicU64]> {
    let p = TABLE.load(Ordering::Acquire);
    // SAFETY: a non-null TABLE points at a MAP_SHARED mapping of BYTES
    // bytes that is never unmapped, 8-aligned (page-aligned), which every
    // process of the family only accesses atomically.
    (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, SLOTS) })
}

/// Maps the table behind `fd`; checks its size and, unless `fresh`, its
/// magic. Returns the mapping.
fn map(fd: c_int, fresh: bool) -> Option<*mut AtomicU64> {
    // SAFETY: fstat into a zeroed buffer of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFREG
        || st.st_size != BYTES as i64
    {
        return None;
    }
    // SAFETY: a new shared mapping of the whole file; no Rust object
    // aliases it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let p = p.cast::<AtomicU64>();
    // SAFETY: the mapping is BYTES long and page-aligned.
    let magic = unsafe { &*p };
    if fresh {
        magic.store(MAGIC, Ordering::Release);
    } else if magic.load(Ordering::Acquire) != MAGIC {
        // SAFETY: unmapping the mapping made above, never published.
        unsafe { libc::munmap(p.cast(), BYTES) };
        return None;
    }
    Some(p)
}

/// Makes the table on first use (inside a hook: the calls pass through).
fn ensure() -> Option<&'static [AtomicU64]> {
    if let Some(s) = slots() {
        return Some(s);
    }
    let _g = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slots() {
        return Some(s);
    }
    // SAFETY: memfd_create with a C string name; no CLOEXEC: the fd is
    // meant to survive exec.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, c"bufwrite-offsets".as_ptr(), 0) };
    if fd < 0 {
        return None;
    }
    let fd = fd as c_int;
    // SAFETY: plain system calls on the memfd just made.
    let high = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd,
            libc::F_DUPFD,
            crate::hooks::own_fd_base(),
        )
    };
    let fd = if high >= 0 {
        let _ = crate::real::sys_close(fd);
        high as c_int
    } else {
        fd
    };
    // SAFETY: sizing the memfd.
    if unsafe { libc::syscall(libc::SYS_ftruncate, fd, BYTES as i64) } != 0 {
        let _ = crate::real::sys_close(fd);
        return None;
    }
    let Some(p) = map(fd, true) else {
        let _ = crate::real::sys_close(fd);
        return None;
    };
    TABLE_FD.store(fd, Ordering::Release);
    TABLE.store(p, Ordering::Release);
    slots()
}

/// The table's fd, for the exec hand-over (-1 when there is none).
pub fn table_fd() -> c_int {
    if slots().is_some() {
        TABLE_FD.load(Ordering::Acquire)
    } else {
        -1
    }
}

/// The constructor's part: maps the table the previous image handed over
/// (its fd and magic checked). False if it is not there.
pub fn adopt(fd: c_int) -> bool {
    if fd < 0 || slots().is_some() {
        return slots().is_some();
    }
    match map(fd, false) {
        Some(p) => {
            TABLE_FD.store(fd, Ordering::Release);
            TABLE.store(p, Ordering::Release);
            true
        }
        None => false,
    }
}

/// One open file description's offset: a slot of the shared table, or
/// private; with the in-process lock that makes read/write and the
/// offset's advance one step (the kernel's `f_pos_lock`).
pub struct Offset {
    slot: Option<(usize, &'static AtomicU64)>,
    private: AtomicU64,
    lock: Mutex<()>,
}

impl Offset {
    /// A new offset at `pos`, in a fresh slot when the table has one.
    pub fn new(pos: u64) -> Offset {
        let slot = ensure().and_then(|s| {
            let i = s[1].fetch_add(1, Ordering::AcqRel) as usize + 2;
            let cell = s.get(i)?;
            cell.store(pos, Ordering::Release);
            Some((i, cell))
        });
        Offset {
            slot,
            private: AtomicU64::new(pos),
            lock: Mutex::new(()),
        }
    }

    /// The offset in slot `index` of the table (handed over across exec),
    /// or a private one at `pos` if there is no such slot.
    pub fn inherited(index: Option<usize>, pos: u64) -> Offset {
        let slot = index.and_then(|i| {
            let s = slots()?;
            (i >= 2).then(|| s.get(i).map(|c| (i, c)))?
        });
        Offset {
            slot,
            private: AtomicU64::new(pos),
            lock: Mutex::new(()),
        }
    }

    /// The slot's index, for the exec hand-over.
    pub fn slot(&self) -> Option<usize> {
        self.slot.map(|(i, _)| i)
    }

    fn cell(&self) -> &AtomicU64 {
        self.slot.map_or(&self.private, |(_, c)| c)
    }

    /// The offset, locked: the guard reads it, and writes it back when it
    /// drops.
    pub fn lock(&self) -> OffsetGuard<'_> {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let cell = self.cell();
        OffsetGuard {
            _guard: guard,
            cell,
            val: cell.load(Ordering::Acquire),
        }
    }
}

/// A locked offset (see [`Offset::lock`]).
pub struct OffsetGuard<'a> {
    _guard: MutexGuard<'a, ()>,
    cell: &'a AtomicU64,
    val: u64,
}

impl Deref for OffsetGuard<'_> {
    type Target = u64;
    fn deref(&self) -> &u64 {
        &self.val
    }
}

impl DerefMut for OffsetGuard<'_> {
    fn deref_mut(&mut self) -> &mut u64 {
        &mut self.val
    }
}

impl Drop for OffsetGuard<'_> {
    fn drop(&mut self) {
        self.cell.store(self.val, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_live_in_the_shared_table_and_read_back() {
        let a = Offset::new(5);
        let b = Offset::new(7);
        assert_eq!(*a.lock(), 5);
        {
            let mut g = a.lock();
            *g += 10;
        }
        assert_eq!(*a.lock(), 15);
        assert_eq!(*b.lock(), 7);
        // A second view of the same slot (what exec's hand-over makes)
        // sees the first one's writes.
        let i = a.slot().expect("memfd works here");
        let a2 = Offset::inherited(Some(i), 0);
        assert_eq!(*a2.lock(), 15);
        *a2.lock() = 99;
        assert_eq!(*a.lock(), 99);
        // Out of range or reserved slots fall back to a private offset.
        assert_eq!(Offset::inherited(Some(SLOTS), 3).slot(), None);
        assert_eq!(Offset::inherited(Some(1), 3).slot(), None);
        assert_eq!(*Offset::inherited(Some(0), 3).lock(), 3);
    }
}
