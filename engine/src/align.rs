//! `AlignedBuf`: a zeroed heap buffer aligned to 4096 bytes.
//!
//! Folio data lives in these so that it can go to an O_DIRECT read or write
//! (pread/pwrite or io_uring) without a bounce copy. `Vec<u8>` only promises
//! the allocator's alignment, which is not enough.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every [`AlignedBuf`]: a page, which satisfies the O_DIRECT
/// memory alignment of every device seen (512 or 4096).
pub const BUF_ALIGN: usize = 4096;

/// A zero-initialised, 4096-aligned, fixed-size byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Box<[u8]>); access
// goes through &self / &mut self, so the usual borrow rules make sharing safe.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; &AlignedBuf only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes aligned to [`BUF_ALIGN`].
    ///
    /// # Panics
    /// Panics (through `handle_alloc_error`) only when the allocator fails,
    /// as `Vec` does. `len` is rounded up to a multiple of 4096 internally
    /// for the layout but the buffer exposes exactly `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: layout has non-zero size (len > 0) and a power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        let rounded = len.div_ceil(BUF_ALIGN) * BUF_ALIGN;
        match Layout::from_size_align(rounded, BUF_ALIGN) {
            Ok(l) => l,
            // Only reachable for sizes near isize::MAX, which no caller asks for.
            Err(_) => panic!("AlignedBuf of {len} bytes exceeds the address space"),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes for as long
        // as self lives; for len == 0 a dangling, aligned pointer is allowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: ptr came from alloc_zeroed with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        // Under Miri a 2 MiB buffer takes many minutes to check byte by
        // byte; a two-page one exercises the same rounding.
        let big = if cfg!(miri) { 8193 } else { 1 << 21 };
        for len in [1usize, 512, 4096, 4097, big] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % BUF_ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
            b[len - 1] = 7;
            assert_eq!(b[len - 1], 7);
        }
    }

    #[test]
    fn empty() {
        let b = AlignedBuf::zeroed(0);
        assert!(b.is_empty());
        assert_eq!(&*b, &[] as &[u8]);
    }
}
