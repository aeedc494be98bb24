//! The message for a missing io_uring. (Opening the file or block device
//! and its geometry are the shared [`crate::device::probe::open_for_io`].)

use crate::error::Error;
use std::io;

/// The error for a failed io_uring_setup: when the kernel says no (EPERM,
/// ENOSYS, EACCES), the message says io_uring is unavailable and why it may
/// be. What to do instead is the caller's to say: the engine does not know
/// its command line.
pub(super) fn setup_error(source: io::Error) -> Error {
    let unavailable = matches!(
        source.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
    );
    let what = if unavailable {
        let why = match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            Ok(v) if v.trim() != "0" => format!("kernel.io_uring_disabled = {}", v.trim()),
            _ => "a seccomp filter (e.g. a container's default profile) or a kernel \
                  without io_uring"
                .to_string(),
        };
        format!("io_uring is unavailable on this system ({why})")
    } else {
        "io_uring_setup failed".to_string()
    };
    Error::UringSetup { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_error_says_so_and_names_no_flag() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let e = setup_error(io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::UringSetup { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("io_uring is unavailable"), "{text}");
            assert!(!text.contains("--"), "{text}");
            let cause = std::error::Error::source(&e).unwrap().to_string();
            assert!(!text.contains(&cause), "{text}");
        }
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert_eq!(e, "io_uring_setup failed");
    }
}
