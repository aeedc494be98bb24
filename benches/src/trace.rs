//! The replay trace: its grammar, and (re-exported from
//! [`bufwrite_engine::pattern`]) the fixed byte pattern writes carry and the
//! hash printed for reads. All are specified in docs/DESIGN.md §7
//! so that any other tool can reproduce a replay byte for byte.

use std::fmt;

/// The byte pattern and read hash of the replay contract.
pub use bufwrite_engine::pattern::{fill as fill_pattern, fnv1a64};

/// One operation of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `pwrite OFF LEN SEED`: write at OFF; the file position stays.
    Pwrite {
        /// File offset.
        off: u64,
        /// Bytes to write.
        len: u64,
        /// Pattern seed.
        seed: u64,
    },
    /// `write LEN SEED`: write at the file position and advance it.
    Write {
        /// Bytes to write.
        len: u64,
        /// Pattern seed.
        seed: u64,
    },
    /// `seek OFF`: set the file position.
    Seek {
        /// The new position.
        off: u64,
    },
    /// `writev SEED LEN LEN ...`: one vectored write at the file position
    /// (the buffers land consecutively), advancing it.
    Writev {
        /// Pattern seed.
        seed: u64,
        /// Length of each buffer.
        lens: Vec<u64>,
    },
    /// `read OFF LEN`: read at OFF and print its hash; the position stays.
    Read {
        /// File offset.
        off: u64,
        /// Bytes asked for.
        len: u64,
    },
    /// `fsync`: write back every dirty block and flush the device.
    Fsync,
    /// `fdatasync`: the same as `fsync` here (the engine keeps no inode
    /// metadata apart from the data, so there is nothing fsync writes that
    /// fdatasync may skip).
    Fdatasync,
}

/// An operation and the trace line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Line number in the trace, counting from 1.
    pub number: usize,
    /// The operation.
    pub op: Op,
}

/// What is wrong with a malformed trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The first word is not an operation.
    UnknownOp(String),
    /// An argument is missing.
    Missing {
        /// The operation.
        op: &'static str,
        /// The argument's name.
        arg: &'static str,
    },
    /// More arguments than the operation takes.
    Extra {
        /// The operation.
        op: &'static str,
        /// The first surplus word.
        word: String,
    },
    /// An argument is not a decimal or `0x` hex number that fits in 64 bits.
    BadNumber {
        /// The argument's name.
        arg: &'static str,
        /// What was written.
        word: String,
    },
    /// The range's end (offset plus lengths) does not fit in 64 bits.
    Overflow,
    /// An operation of the trace grammar that replay does not run yet.
    NotSupported(&'static str),
}

/// A malformed trace line: its number and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace line {line}: {kind}")]
pub struct ParseError {
    /// Line number, counting from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOp(w) => write!(
                f,
                "unknown operation {} (expected {SUPPORTED})",
                Clipped(w, WORD_CLIP)
            ),
            Self::Missing { op, arg } => write!(f, "{op} is missing its {arg} argument"),
            Self::Extra { op, word } => write!(
                f,
                "{op} takes no more arguments, found {}",
                Clipped(word, WORD_CLIP)
            ),
            Self::BadNumber { arg, word } => write!(
                f,
                "{arg} {} is not a number (decimal or 0x hex, at most 64 bits)",
                Clipped(word, WORD_CLIP)
            ),
            Self::Overflow => f.write_str("offset plus length overflows 64 bits"),
            Self::NotSupported(op) => write!(
                f,
                "{op} is not supported yet by replay (it runs {SUPPORTED})"
            ),
        }
    }
}

/// The operations replay runs, for error messages.
const SUPPORTED: &str = "pwrite, write, seek, writev, read, fsync and fdatasync";

/// Operations the replay trace grammar names that replay does not run yet
/// (truncate, punch-hole, fallocate): a trace using them is refused as
/// such, not as unknown.
const NOT_YET: &[&str] = &["truncate", "punch", "fallocate"];

/// Characters of a word (a number, an operation name) an error echoes.
pub const WORD_CLIP: usize = 40;

/// Characters of a whole trace line an error echoes.
pub const LINE_CLIP: usize = 80;

/// `text` quoted (`{:?}`) as an error echoes it: whole when it has at most
/// `max` characters, else its first `max` and how long it was, so that a
/// 100,000-digit number in a trace does not come back as a 100,000-character
/// error.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(pub &'a str, pub usize);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Clipped(text, max) = *self;
        match text.char_indices().nth(max) {
            None => write!(f, "{text:?}"),
            Some((cut, _)) => write!(
                f,
                "{:?}... ({} characters)",
                &text[..cut],
                text.chars().count()
            ),
        }
    }
}

/// `text` cut to its first `max` characters with how long it was, unquoted
/// (for a trace line rebuilt from its parsed fields, e.g. a `writev` of
/// thousands of buffers).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} characters)", &text[..cut], text.chars().count()),
    }
}

/// Parses a whole trace; the first malformed line is an error and nothing
/// is returned. Blank lines and `#` comments (whole-line or trailing) are
/// skipped.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("");
        let mut words = code.split_whitespace();
        let Some(name) = words.next() else { continue };
        let op = parse_op(name, &mut words).map_err(|kind| ParseError { line: i + 1, kind })?;
        lines.push(Line { number: i + 1, op });
    }
    Ok(lines)
}

type Words<'a, 'b> = &'b mut std::str::SplitWhitespace<'a>;

fn parse_op(name: &str, words: Words<'_, '_>) -> Result<Op, ParseErrorKind> {
    let op = match name {
        "pwrite" => {
            let off = arg(words, "pwrite", "OFF")?;
            let len = arg(words, "pwrite", "LEN")?;
            let seed = arg(words, "pwrite", "SEED")?;
            off.checked_add(len).ok_or(ParseErrorKind::Overflow)?;
            Op::Pwrite { off, len, seed }
        }
        "write" => Op::Write {
            len: arg(words, "write", "LEN")?,
            seed: arg(words, "write", "SEED")?,
        },
        "seek" => Op::Seek {
            off: arg(words, "seek", "OFF")?,
        },
        "writev" => return parse_writev(words),
        "read" => {
            let off = arg(words, "read", "OFF")?;
            let len = arg(words, "read", "LEN")?;
            off.checked_add(len).ok_or(ParseErrorKind::Overflow)?;
            Op::Read { off, len }
        }
        "fsync" => Op::Fsync,
        "fdatasync" => Op::Fdatasync,
        _ => {
            if let Some(op) = NOT_YET.iter().find(|op| **op == name) {
                return Err(ParseErrorKind::NotSupported(op));
            }
            return Err(ParseErrorKind::UnknownOp(name.to_string()));
        }
    };
    no_more(words, op_name(&op))?;
    Ok(op)
}

fn parse_writev(words: Words<'_, '_>) -> Result<Op, ParseErrorKind> {
    let seed = arg(words, "writev", "SEED")?;
    let lens = words
        .map(|w| number(w, "LEN"))
        .collect::<Result<Vec<u64>, _>>()?;
    if lens.is_empty() {
        return Err(ParseErrorKind::Missing {
            op: "writev",
            arg: "LEN",
        });
    }
    lens.iter()
        .try_fold(0u64, |sum, &l| sum.checked_add(l))
        .ok_or(ParseErrorKind::Overflow)?;
    Ok(Op::Writev { seed, lens })
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Pwrite { .. } => "pwrite",
        Op::Write { .. } => "write",
        Op::Seek { .. } => "seek",
        Op::Writev { .. } => "writev",
        Op::Read { .. } => "read",
        Op::Fsync => "fsync",
        Op::Fdatasync => "fdatasync",
    }
}

fn arg(words: Words<'_, '_>, op: &'static str, name: &'static str) -> Result<u64, ParseErrorKind> {
    let word = words
        .next()
        .ok_or(ParseErrorKind::Missing { op, arg: name })?;
    number(word, name)
}

fn no_more(words: Words<'_, '_>, op: &'static str) -> Result<(), ParseErrorKind> {
    match words.next() {
        Some(w) => Err(ParseErrorKind::Extra {
            op,
            word: w.to_string(),
        }),
        None => Ok(()),
    }
}

fn number(word: &str, arg: &'static str) -> Result<u64, ParseErrorKind> {
    parse_number(word).ok_or_else(|| ParseErrorKind::BadNumber {
        arg,
        word: word.to_string(),
    })
}

/// Parses a decimal or `0x`/`0X` hex number that fits in a `u64`. Signs,
/// separators and empty digits are refused.
pub fn parse_number(word: &str) -> Option<u64> {
    let (digits, radix) = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (word, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// The largest file offset a system call takes: Linux file offsets are
/// `loff_t`, signed 64-bit. A trace line stands for a pwrite(2) or write(2),
/// so replay refuses what those refuse, on every target alike.
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Checks that a write of `len` bytes at `off` (a `pwrite`, or a `write` /
/// `writev` at the file position) can run on `file`, without running it, in
/// the order Linux checks a buffered write:
///
/// 1. the range must fit in a file offset: pwrite64 refuses a negative
///    `loff_t` offset, and `rw_verify_area` (fs/read_write.c) one whose end
///    is past 2^63 - 1, both with EINVAL, whatever the length (so
///    `pwrite 18446744073709551615 0 1` fails);
/// 2. a zero-length write then succeeds and writes nothing:
///    `generic_write_checks` (mm/filemap.c) returns 0 for a count of 0
///    before the size limits, so no capacity, i_size or s_maxbytes check
///    applies to it (`pwrite 9223372036854775807 0 1` succeeds);
/// 3. anything else goes to the file's mapper (`Mapper::prepare_write`: a
///    Flat file's capacity; the ext4 file's i_size and written extents).
pub fn check_write(file: &bufwrite_engine::File, off: u64, len: u64) -> anyhow::Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => {}
        _ if off > MAX_OFFSET => anyhow::bail!(
            "write of {len} bytes at offset {off}: the offset is past the largest file offset \
             {MAX_OFFSET} (2^63 - 1); pwrite(2) refuses it with EINVAL, even for 0 bytes"
        ),
        _ => anyhow::bail!(
            "write of {len} bytes at offset {off} would end past the largest file offset \
             {MAX_OFFSET} (2^63 - 1); pwrite(2) refuses it with EINVAL"
        ),
    }
    if len == 0 {
        return Ok(());
    }
    file.mapping()
        .mapper
        .prepare_write(bufwrite_engine::FilePos::new(off), len)?;
    Ok(())
}

/// The pattern bytes of a write of `len` at `off` for `seed`, after
/// [`check_write`] (so a bad trace line cannot allocate past the file's
/// capacity). A buffer the allocator refuses is an error, not an abort.
pub fn write_bytes(
    file: &bufwrite_engine::File,
    seed: u64,
    off: u64,
    len: u64,
) -> anyhow::Result<Vec<u8>> {
    check_write(file, off, len)?;
    let mut buf = alloc_zeroed(len, "the write's bytes")?;
    fill_pattern(seed, off, &mut buf);
    Ok(buf)
}

/// A zeroed buffer of `len` bytes, or an error naming `what` when it does
/// not fit in memory.
pub fn alloc_zeroed(len: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let n = usize::try_from(len)
        .map_err(|_| anyhow::anyhow!("{what} ({len} bytes) do not fit in memory"))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|_| anyhow::anyhow!("cannot allocate {len} bytes for {what}"))?;
    buf.resize(n, 0);
    Ok(buf)
}

/// `all` cut into consecutive iovecs of `lens` (a `writev` line's buffers
/// are consecutive in the file, so one pattern covers them all).
pub fn split_iovec<'a>(all: &'a [u8], lens: &[u64]) -> Vec<std::io::IoSlice<'a>> {
    let mut slices = Vec::with_capacity(lens.len());
    let mut rest = all;
    for &l in lens {
        let (head, tail) = rest.split_at((l as usize).min(rest.len()));
        slices.push(std::io::IoSlice::new(head));
        rest = tail;
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> (usize, ParseErrorKind) {
        let e = parse(text).unwrap_err();
        (e.line, e.kind)
    }

    #[test]
    fn parses_every_op_with_comments_blanks_and_hex() {
        let t = "# header\n\npwrite 0x10 4096 7\nwrite 5 1 # trailing\n  seek 0\n\
                 writev 3 1 2 0X3\nread 0 10\nfsync\n";
        let ops: Vec<(usize, Op)> = parse(t)
            .unwrap()
            .into_iter()
            .map(|l| (l.number, l.op))
            .collect();
        assert_eq!(
            ops,
            vec![
                (
                    3,
                    Op::Pwrite {
                        off: 16,
                        len: 4096,
                        seed: 7
                    }
                ),
                (4, Op::Write { len: 5, seed: 1 }),
                (5, Op::Seek { off: 0 }),
                (
                    6,
                    Op::Writev {
                        seed: 3,
                        lens: vec![1, 2, 3]
                    }
                ),
                (7, Op::Read { off: 0, len: 10 }),
                (8, Op::Fsync),
            ]
        );
    }

    #[test]
    fn every_malformed_kind_names_its_line() {
        use ParseErrorKind::*;
        assert_eq!(kind("fsync\nfsink"), (2, UnknownOp("fsink".into())));
        assert_eq!(
            kind("pwrite 0 1"),
            (
                1,
                Missing {
                    op: "pwrite",
                    arg: "SEED"
                }
            )
        );
        assert_eq!(
            kind("write"),
            (
                1,
                Missing {
                    op: "write",
                    arg: "LEN"
                }
            )
        );
        assert_eq!(
            kind("seek"),
            (
                1,
                Missing {
                    op: "seek",
                    arg: "OFF"
                }
            )
        );
        assert_eq!(
            kind("read 1"),
            (
                1,
                Missing {
                    op: "read",
                    arg: "LEN"
                }
            )
        );
        assert_eq!(
            kind("writev 1"),
            (
                1,
                Missing {
                    op: "writev",
                    arg: "LEN"
                }
            )
        );
        assert_eq!(
            kind("writev"),
            (
                1,
                Missing {
                    op: "writev",
                    arg: "SEED"
                }
            )
        );
        assert_eq!(
            kind("\n\nfsync now"),
            (
                3,
                Extra {
                    op: "fsync",
                    word: "now".into()
                }
            )
        );
        assert_eq!(
            kind("seek 1 2"),
            (
                1,
                Extra {
                    op: "seek",
                    word: "2".into()
                }
            )
        );
        assert_eq!(
            kind("read 0 -1"),
            (
                1,
                BadNumber {
                    arg: "LEN",
                    word: "-1".into()
                }
            )
        );
        assert_eq!(
            kind("write +5 1"),
            (
                1,
                BadNumber {
                    arg: "LEN",
                    word: "+5".into()
                }
            )
        );
        assert_eq!(
            kind("seek 0x"),
            (
                1,
                BadNumber {
                    arg: "OFF",
                    word: "0x".into()
                }
            )
        );
        assert_eq!(
            kind("seek 0xg"),
            (
                1,
                BadNumber {
                    arg: "OFF",
                    word: "0xg".into()
                }
            )
        );
        assert_eq!(
            kind("writev 1 2 x"),
            (
                1,
                BadNumber {
                    arg: "LEN",
                    word: "x".into()
                }
            )
        );
        assert_eq!(
            kind("pwrite 1 2 18446744073709551616"),
            (
                1,
                BadNumber {
                    arg: "SEED",
                    word: "18446744073709551616".into()
                }
            )
        );
        assert_eq!(kind("pwrite 0xffffffffffffffff 2 0"), (1, Overflow));
        assert_eq!(kind("read 0xffffffffffffffff 1"), (1, Overflow));
        assert_eq!(kind("writev 0 0xffffffffffffffff 1"), (1, Overflow));
        let msg = parse("fsync\nfsync\nwrite 1").unwrap_err().to_string();
        assert_eq!(msg, "trace line 3: write is missing its SEED argument");
    }

    #[test]
    fn fdatasync_parses_and_the_other_grammar_ops_are_not_supported_yet() {
        let ops: Vec<Op> = parse("fdatasync\nfsync # x\n")
            .unwrap()
            .into_iter()
            .map(|l| l.op)
            .collect();
        assert_eq!(ops, vec![Op::Fdatasync, Op::Fsync]);
        assert_eq!(
            kind("fdatasync now"),
            (
                1,
                ParseErrorKind::Extra {
                    op: "fdatasync",
                    word: "now".into()
                }
            )
        );
        for (line, op) in [
            ("truncate 4096", "truncate"),
            ("punch 0 4096", "punch"),
            ("fallocate 0 4096", "fallocate"),
            ("fallocate 0 4096 keep_size", "fallocate"),
        ] {
            assert_eq!(kind(line), (1, ParseErrorKind::NotSupported(op)));
            let msg = parse(line).unwrap_err().to_string();
            assert!(msg.contains("not supported yet"), "{msg}");
            assert!(!msg.contains("unknown"), "{msg}");
        }
        let msg = parse("frobnicate").unwrap_err().to_string();
        assert!(msg.contains("unknown operation \"frobnicate\""), "{msg}");
    }

    #[test]
    fn check_write_refuses_what_pwrite_refuses_in_its_order() {
        use bufwrite_engine::device::mem::Mem;
        use bufwrite_engine::{File, FileOptions, Flat, IomapPath};
        use std::sync::Arc;
        let cap = 1 << 20;
        let file = File::open(
            Arc::new(Mem::sparse(cap, 512)),
            Arc::new(Flat::new(0, cap, 4096, 0).unwrap()),
            Box::new(IomapPath::new()),
            FileOptions::default(),
        )
        .unwrap();
        // Zero bytes anywhere a file offset reaches: no size limit applies.
        for off in [0, cap, 1 << 40, MAX_OFFSET] {
            check_write(&file, off, 0).unwrap();
        }
        check_write(&file, 0, cap).unwrap();
        // Past 2^63 - 1 (even for zero bytes), or ending past it: EINVAL.
        for (off, len) in [
            (u64::MAX, 0),
            (MAX_OFFSET + 1, 0),
            (MAX_OFFSET, 1),
            (1, MAX_OFFSET),
            (u64::MAX, 1),
        ] {
            let e = check_write(&file, off, len).unwrap_err().to_string();
            assert!(
                e.contains("EINVAL") && e.contains("2^63 - 1"),
                "{off} {len}: {e}"
            );
        }
        // Inside the offset range, the mapper decides.
        let e = check_write(&file, cap, 1).unwrap_err().to_string();
        assert!(e.contains("capacity"), "{e}");
        // Nothing of it wrote anything.
        assert_eq!((file.size(), file.device_stats().writes), (0, 0));
        assert!(write_bytes(&file, 1, MAX_OFFSET, 0).unwrap().is_empty());
        assert!(write_bytes(&file, 1, u64::MAX, 0).is_err());
    }

    #[test]
    fn errors_clip_what_they_echo() {
        let long = "1".repeat(100_000);
        for text in [
            format!("pwrite {long} 1 1"),
            format!("seek 1 {long}"),
            format!("x{long}"),
            format!("write 1 0x{long}"),
        ] {
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.len() < 200, "{} characters: {}", msg.len(), &msg[..200]);
            assert!(msg.contains("characters)"), "{msg}");
        }
        let msg = parse(&format!("pwrite {long} 1 1"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "trace line 1: OFF \"{}\"... (100000 characters) is not a number \
                 (decimal or 0x hex, at most 64 bits)",
                "1".repeat(WORD_CLIP)
            )
        );
        // Short words stay whole; multi-byte characters are cut on a
        // character boundary.
        assert_eq!(Clipped("abc", 40).to_string(), "\"abc\"");
        let wide = "é".repeat(50);
        assert_eq!(
            Clipped(&wide, 40).to_string(),
            format!("{:?}... (50 characters)", "é".repeat(40))
        );
        assert_eq!(
            clip(&"w".repeat(81), 80),
            format!("{}... (81 characters)", "w".repeat(80))
        );
        assert_eq!(clip("fsync", 80), "fsync");
    }
}
