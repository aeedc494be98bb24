//! What the sync and io_uring backends do alike with a request's scatter
//! list, kept once: the segments left after a partial transfer (capped at
//! the kernel's iovec limit), the bounce copy for memory O_DIRECT cannot
//! use, and which errnos mean "try again".
//!
//! All of it is plain Rust over slices, so its tests also run under Miri.

use super::IoBufs;
use crate::align::AlignedBuf;

/// Most segments one `preadv`/`pwritev` or one Readv/Writev SQE may take:
/// the kernel's `UIO_MAXIOV` (include/uapi/linux/uio.h), which both
/// syscalls and io_uring's vectored opcodes refuse to exceed (EINVAL).
/// Longer scatter lists continue in the next call, as after a short
/// transfer.
pub(crate) const MAX_IOVECS: usize = 1024;

/// Where the segment of length `len` starts once `skip` bytes of the list
/// are done: `None` when all of it is done (or it is empty), else the
/// offset into it. Consumes the skipped bytes from `skip`.
fn cut(len: usize, skip: &mut u64) -> Option<usize> {
    if *skip >= len as u64 {
        *skip -= len as u64;
        return None;
    }
    // skip < len, which is a usize.
    let start = *skip as usize;
    *skip = 0;
    Some(start)
}

/// The write segments from byte `skip` on, at most [`MAX_IOVECS`] of them;
/// empty segments are left out (they would use up an iovec for nothing).
pub(crate) fn tail<'s>(segs: &'s [&[u8]], mut skip: u64) -> impl Iterator<Item = &'s [u8]> {
    segs.iter()
        .filter_map(move |s| cut(s.len(), &mut skip).map(|at| &s[at..]))
        .take(MAX_IOVECS)
}

/// The read segments from byte `skip` on, as [`tail`].
pub(crate) fn tail_mut<'s, 'b>(
    segs: &'s mut [&'b mut [u8]],
    mut skip: u64,
) -> impl Iterator<Item = &'s mut [u8]> + use<'s, 'b> {
    segs.iter_mut()
        .filter_map(move |s| cut(s.len(), &mut skip).map(|at| &mut s[at..]))
        .take(MAX_IOVECS)
}

/// True when some segment's address is not a multiple of `mem_align` (the
/// O_DIRECT memory alignment; 0 and 1 mean any address will do), so the
/// request must go through a bounce buffer.
pub(crate) fn needs_bounce(bufs: &IoBufs<'_>, mem_align: usize) -> bool {
    mem_align > 1
        && bufs
            .segments()
            .any(|(addr, _)| !addr.is_multiple_of(mem_align))
}

/// An aligned buffer for `bufs`: a write's segments gathered into it, or
/// zeroes for a read to land in (copied out by [`scatter`]).
pub(crate) fn bounce_for(bufs: &IoBufs<'_>) -> AlignedBuf {
    match bufs {
        IoBufs::Write(segs) => gather(segs),
        IoBufs::Read(segs) => AlignedBuf::zeroed(segs.iter().map(|s| s.len()).sum()),
    }
}

/// Copies `segs` one after the other into a new aligned buffer.
pub(crate) fn gather(segs: &[&[u8]]) -> AlignedBuf {
    let mut out = AlignedBuf::zeroed(segs.iter().map(|s| s.len()).sum());
    let mut at = 0;
    for s in segs {
        out[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    out
}

/// Copies `src` out into `segs`, in order; `src` is at least as long as
/// the segments together (a bounce buffer made by [`bounce_for`]).
pub(crate) fn scatter(src: &[u8], segs: &mut [&mut [u8]]) {
    let mut at = 0;
    for s in segs.iter_mut() {
        let n = s.len();
        s.copy_from_slice(&src[at..at + n]);
        at += n;
    }
}

/// What a failed transfer's errno says about trying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errno {
    /// EINTR: a signal came before anything was transferred; the same
    /// call again is the answer (the sync backend retries it without
    /// bound, as the C library's callers do).
    Interrupted,
    /// EAGAIN or EBUSY: the kernel was short of something (request
    /// memory, CQ space) for the moment. io_uring resubmits a request up
    /// to [`MAX_RETRIES`] times; io_uring_enter returns so that the caller
    /// reaps and enters again.
    Busy,
    /// Anything else: the request failed.
    Fatal,
}

/// Resubmissions of one io_uring request (or flush) after a transient
/// errno ([`Errno::Interrupted`] or [`Errno::Busy`]) before giving up.
pub(crate) const MAX_RETRIES: u32 = 64;

/// Classifies a positive errno.
pub(crate) fn classify(errno: i32) -> Errno {
    match errno {
        libc::EINTR => Errno::Interrupted,
        libc::EAGAIN | libc::EBUSY => Errno::Busy,
        _ => Errno::Fatal,
    }
}

/// True when `errno` is worth a bounded retry ([`Errno::Interrupted`] or
/// [`Errno::Busy`]).
pub(crate) fn is_transient(errno: i32) -> bool {
    classify(errno) != Errno::Fatal
}

#[cfg(test)]
mod tests {
    use super::*;
    use smallvec::smallvec;

    #[test]
    fn tail_skips_whole_and_partial_segments() {
        let (a, b, c) = ([1u8; 4], [2u8; 4], [3u8; 4]);
        let segs = [&a[..], &b[..], &c[..]];
        let t: Vec<&[u8]> = tail(&segs, 6).collect();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], &[2, 2]);
        assert_eq!(t[1], &[3; 4]);
        assert_eq!(tail(&segs, 12).count(), 0);
    }

    #[test]
    fn tail_leaves_out_empty_segments() {
        let (a, b) = ([1u8; 4], [2u8; 4]);
        let segs = [&[][..], &a[..], &[][..], &b[..]];
        let t: Vec<&[u8]> = tail(&segs, 0).collect();
        assert_eq!(t, [&a[..], &b[..]]);
    }

    #[test]
    fn tail_caps_the_segment_count() {
        let one = [0u8; 1];
        let segs = vec![&one[..]; MAX_IOVECS + 5];
        assert_eq!(tail(&segs, 0).count(), MAX_IOVECS);
        assert_eq!(tail(&segs, MAX_IOVECS as u64).count(), 5);
    }

    #[test]
    fn tail_mut_skips() {
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let mut segs = [&mut a[..], &mut b[..]];
        let mut t: Vec<&mut [u8]> = tail_mut(&mut segs, 5).collect();
        assert_eq!(t.len(), 1);
        t[0].fill(9);
        drop(t);
        assert_eq!(b, [0, 9, 9, 9]);
    }

    #[test]
    fn gather_then_scatter_round_trips() {
        let (a, b) = ([1u8; 3], [2u8; 5]);
        let g = gather(&[&a[..], &b[..]]);
        assert_eq!(&g[..], &[1, 1, 1, 2, 2, 2, 2, 2]);
        let (mut x, mut y) = ([0u8; 5], [0u8; 3]);
        scatter(&g, &mut [&mut x[..], &mut y[..]]);
        assert_eq!((x, y), ([1, 1, 1, 2, 2], [2, 2, 2]));
    }

    #[test]
    fn bounce_only_for_misaligned_memory() {
        let buf = AlignedBuf::zeroed(1024);
        let aligned = IoBufs::Write(smallvec![&buf[..512]]);
        let off = IoBufs::Write(smallvec![&buf[1..513]]);
        assert!(!needs_bounce(&aligned, 512));
        assert!(needs_bounce(&off, 512));
        assert!(!needs_bounce(&off, 1));
        assert!(!needs_bounce(&off, 0));
        assert_eq!(&bounce_for(&off)[..], &buf[1..513]);
        let mut r = [0u8; 8];
        let read = IoBufs::Read(smallvec![&mut r[..]]);
        assert_eq!(bounce_for(&read).len(), 8);
    }

    #[test]
    fn errno_classes() {
        assert_eq!(classify(libc::EINTR), Errno::Interrupted);
        assert_eq!(classify(libc::EAGAIN), Errno::Busy);
        assert_eq!(classify(libc::EBUSY), Errno::Busy);
        assert_eq!(classify(libc::EIO), Errno::Fatal);
        assert!(is_transient(libc::EINTR) && !is_transient(libc::ENOSPC));
    }
}
