//! Running the `bufwrite` binary from the integration tests: one copy for
//! every test file that drives it.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bufwrite"))
}

/// Runs `cmd` with `stdin` and waits for it. A command that refuses its
/// flags may exit before reading stdin: a broken pipe is fine then.
pub fn run(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bufwrite");
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
    }
    child.wait_with_output().expect("wait for bufwrite")
}

/// Runs `bufwrite ARGS` with `stdin` and waits for it.
pub fn bufwrite(args: &[&str], stdin: &str) -> Output {
    run(bin().args(args), stdin)
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
