//! The libMicro write cases: what each one writes and how it calls the
//! file.

use crate::harness;
use crate::setup;
use anyhow::Context;
use bufwrite_engine::File;
use std::io::IoSlice;

/// How a case calls the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `seek(0)` then `write`.
    Write,
    /// `pwrite` at 0.
    Pwrite,
    /// `seek(0)` then `writev` of [`WRITEV_BUFS`] buffers.
    Writev,
}

/// Buffers per `writev` call (libMicro's default `-V 10`).
const WRITEV_BUFS: usize = 10;

/// One libMicro case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The libMicro name, e.g. `pwrite_u10k`.
    pub name: &'static str,
    /// How it calls the file.
    pub call: Call,
    /// Bytes per buffer (libMicro's `-s`, where `k` is 1024).
    pub size: usize,
}

impl Case {
    /// Buffers per call.
    pub fn bufs(self) -> usize {
        if self.call == Call::Writev {
            WRITEV_BUFS
        } else {
            1
        }
    }

    /// Bytes one call writes.
    pub fn bytes_per_call(self) -> u64 {
        (self.size * self.bufs()) as u64
    }

    /// The file: at least ten times the case size and one folio, in whole
    /// folios so that every folio of it is uptodate.
    pub fn file_size(self, folio: u64) -> u64 {
        setup::round_up((self.size as u64 * 10).max(folio), folio)
    }
}

/// Every case, in report order.
pub const CASES: &[Case] = &[
    case("write_u1k", Call::Write, 1),
    case("write_u10k", Call::Write, 10),
    case("write_u100k", Call::Write, 100),
    case("pwrite_u1k", Call::Pwrite, 1),
    case("pwrite_u10k", Call::Pwrite, 10),
    case("pwrite_u100k", Call::Pwrite, 100),
    case("writev_u1k", Call::Writev, 1),
    case("writev_u10k", Call::Writev, 10),
    case("writev_u100k", Call::Writev, 100),
];

const fn case(name: &'static str, call: Call, kib: usize) -> Case {
    Case {
        name,
        call,
        size: kib * 1024,
    }
}

/// The cases `--cases` names, or all of them when it names none.
pub fn select_cases(names: &[String]) -> anyhow::Result<Vec<Case>> {
    if names.is_empty() {
        return Ok(CASES.to_vec());
    }
    names
        .iter()
        .map(|n| {
            CASES
                .iter()
                .find(|c| c.name == n)
                .copied()
                .with_context(|| {
                    let valid: Vec<&str> = CASES.iter().map(|c| c.name).collect();
                    format!("unknown case {n:?} (valid cases: {})", valid.join(", "))
                })
        })
        .collect()
}

impl harness::Call for Case {
    /// One call of the case: `write` and `writev` seek to 0 first, `pwrite`
    /// writes at 0. The timed loop and the counting pass make the same call.
    #[inline]
    fn call(&self, f: &File, buf: &[u8], iov: &[IoSlice<'_>]) -> anyhow::Result<()> {
        let done = match self.call {
            Call::Write => {
                f.seek(0);
                f.write(buf)?
            }
            Call::Pwrite => f.pwrite(0, buf)?,
            Call::Writev => {
                f.seek(0);
                f.writev(iov)?
            }
        };
        let want = self.bytes_per_call() as usize;
        if done != want {
            anyhow::bail!("{}: short write of {done} of {want} bytes", self.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_files_cover_ten_sizes_and_a_folio() {
        let c = select_cases(&["writev_u100k".into()]).unwrap()[0];
        assert_eq!(c.bytes_per_call(), 1_024_000);
        assert_eq!(c.file_size(2 << 20), 2 << 20);
        assert_eq!(c.file_size(4096), 1_024_000);
        assert!(select_cases(&["read_u1k".into()])
            .unwrap_err()
            .to_string()
            .contains("write_u1k"));
    }
}
