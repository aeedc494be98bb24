//! Setting up a ring, and the error that says why io_uring is missing when
//! the kernel refuses one. (Opening the file or block device and its
//! geometry are the shared [`crate::device::probe::open_for_io`].)

use crate::error::{Error, Result};
use io_uring::IoUring;
use std::io;

/// A ring with `qd` SQ entries and a CQ twice that size, so that `qd`
/// requests in flight can never overflow it. COOP_TASKRUN (5.19+) spares an
/// interrupt per completion, since the submitting thread also reaps; older
/// kernels get a plain ring.
pub(super) fn setup_ring(qd: u32) -> Result<IoUring> {
    let cq = 2 * qd.next_power_of_two();
    IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(qd)
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => IoUring::builder().setup_cqsize(cq).build(qd),
            _ => Err(e),
        })
        .map_err(setup_error)
}

/// Checks that io_uring can be used here: sets up (and drops) a small ring.
/// The error ([`Error::UringSetup`]) says why not.
pub fn probe() -> Result<()> {
    setup_ring(1).map(drop)
}

/// The error for a failed io_uring_setup: when the kernel says no (EPERM,
/// ENOSYS, EACCES), the message says io_uring is unavailable and why it may
/// be. What to do instead is the caller's to say: the engine does not know
/// its command line.
fn setup_error(source: io::Error) -> Error {
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
