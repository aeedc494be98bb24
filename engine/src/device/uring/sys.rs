//! The message for a missing io_uring. (Opening the file or block device
//! and its geometry are the shared [`crate::device::probe::open_for_io`].)

use crate::error::{Error, IoKind};
use std::io;

/// The error for a failed io_uring_setup: when the kernel says no (EPERM,
/// ENOSYS, EACCES), the message says io_uring is unavailable, why it may be,
/// and names the backend that works without it.
pub(super) fn setup_error(e: io::Error) -> Error {
    let unavailable = matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
    );
    let msg = if unavailable {
        let why = match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            Ok(v) if v.trim() != "0" => format!("kernel.io_uring_disabled = {}", v.trim()),
            _ => "a seccomp filter (e.g. a container's default profile) or a kernel \
                  without io_uring"
                .to_string(),
        };
        format!(
            "io_uring is unavailable on this system ({why}; io_uring_setup: {e}); \
             use `--backend sync`"
        )
    } else {
        format!("io_uring_setup failed: {e}; `--backend sync` does not need io_uring")
    };
    Error::io(IoKind::Open, 0, 0, io::Error::new(e.kind(), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_error_names_sync_backend() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let e = setup_error(io::Error::from_raw_os_error(errno)).to_string();
            assert!(e.contains("io_uring is unavailable"), "{e}");
            assert!(e.contains("--backend sync"), "{e}");
        }
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert!(e.contains("--backend sync"), "{e}");
    }
}
