//! The replay trace grammar: one operation a line, as `bufwrite replay`
//! reads it and the model tests print it (docs/DESIGN.md §7 specifies it).
//!
//! [`Op`] is an operation; its `Display` is the line that stands for it and
//! [`parse`] reads a whole trace back, refusing the first malformed line
//! with its line number ([`ParseError`]). Errors echo what they quote
//! clipped ([`Clipped`], [`WORD_CLIP`], [`LINE_CLIP`]), so a trace holding a
//! 100,000-digit number does not come back as a 100,000-character message.
//! The bytes a write carries and the hash a read prints are in
//! [`crate::pattern`].
//!
//! ```
//! use bufwrite_engine::trace::{parse, Op};
//!
//! let lines = parse("# a comment\npwrite 0x1000 512 7\nfsync\n")?;
//! assert_eq!(lines[0].number, 2);
//! assert_eq!(lines[0].op, Op::Pwrite { off: 4096, len: 512, seed: 7 });
//! assert_eq!(lines[0].op.to_string(), "pwrite 4096 512 7");
//! assert!(parse("fsync\nfsink").unwrap_err().to_string().starts_with("trace line 2:"));
//! # Ok::<(), bufwrite_engine::trace::ParseError>(())
//! ```

use std::fmt;

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
    /// `fdatasync`: write back and flush as `fsync` does; the mapper is
    /// asked only for the metadata fdatasync needs.
    Fdatasync,
    /// `truncate SIZE`: set the file size (ftruncate).
    Truncate {
        /// The new size.
        size: u64,
    },
    /// `fallocate OFF LEN [keep_size]`: allocate (unwritten) the blocks
    /// covering the range; without `keep_size` the size grows to OFF+LEN.
    Fallocate {
        /// File offset.
        off: u64,
        /// Length.
        len: u64,
        /// FALLOC_FL_KEEP_SIZE.
        keep_size: bool,
    },
    /// `punch OFF LEN`: punch a hole (the range reads as zeroes; whole
    /// blocks are freed; the size stays).
    Punch {
        /// File offset.
        off: u64,
        /// Length.
        len: u64,
    },
}

impl Op {
    /// The operation's name, its trace line's first word.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Pwrite { .. } => "pwrite",
            Op::Write { .. } => "write",
            Op::Seek { .. } => "seek",
            Op::Writev { .. } => "writev",
            Op::Read { .. } => "read",
            Op::Fsync => "fsync",
            Op::Fdatasync => "fdatasync",
            Op::Truncate { .. } => "truncate",
            Op::Fallocate { .. } => "fallocate",
            Op::Punch { .. } => "punch",
        }
    }
}

impl fmt::Display for Op {
    /// The operation as a trace line (without the newline), in the form
    /// [`parse`] reads back: decimal numbers, one space between words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Pwrite { off, len, seed } => write!(f, "pwrite {off} {len} {seed}"),
            Op::Write { len, seed } => write!(f, "write {len} {seed}"),
            Op::Seek { off } => write!(f, "seek {off}"),
            Op::Writev { seed, lens } => {
                write!(f, "writev {seed}")?;
                lens.iter().try_for_each(|l| write!(f, " {l}"))
            }
            Op::Read { off, len } => write!(f, "read {off} {len}"),
            Op::Fsync | Op::Fdatasync => f.write_str(self.name()),
            Op::Truncate { size } => write!(f, "truncate {size}"),
            Op::Fallocate {
                off,
                len,
                keep_size,
            } => {
                write!(f, "fallocate {off} {len}")?;
                if *keep_size {
                    f.write_str(" keep_size")?;
                }
                Ok(())
            }
            Op::Punch { off, len } => write!(f, "punch {off} {len}"),
        }
    }
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
        }
    }
}

/// The operations replay runs, for error messages.
const SUPPORTED: &str =
    "pwrite, write, seek, writev, read, fsync, fdatasync, truncate, fallocate and punch";

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
        "truncate" => Op::Truncate {
            size: arg(words, "truncate", "SIZE")?,
        },
        "fallocate" => {
            let off = arg(words, "fallocate", "OFF")?;
            let len = arg(words, "fallocate", "LEN")?;
            off.checked_add(len).ok_or(ParseErrorKind::Overflow)?;
            let keep_size = match words.next() {
                None => false,
                Some("keep_size") => true,
                Some(w) => {
                    return Err(ParseErrorKind::Extra {
                        op: "fallocate",
                        word: w.to_string(),
                    })
                }
            };
            Op::Fallocate {
                off,
                len,
                keep_size,
            }
        }
        "punch" => {
            let off = arg(words, "punch", "OFF")?;
            let len = arg(words, "punch", "LEN")?;
            off.checked_add(len).ok_or(ParseErrorKind::Overflow)?;
            Op::Punch { off, len }
        }
        _ => return Err(ParseErrorKind::UnknownOp(name.to_string())),
    };
    no_more(words, op.name())?;
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
    fn fdatasync_and_the_allocation_ops_parse() {
        let ops: Vec<Op> = parse(
            "fdatasync\nfsync # x\ntruncate 4096\npunch 0 0x1000\n\
             fallocate 0 4096\nfallocate 10 20 keep_size\n",
        )
        .unwrap()
        .into_iter()
        .map(|l| l.op)
        .collect();
        assert_eq!(
            ops,
            vec![
                Op::Fdatasync,
                Op::Fsync,
                Op::Truncate { size: 4096 },
                Op::Punch { off: 0, len: 4096 },
                Op::Fallocate {
                    off: 0,
                    len: 4096,
                    keep_size: false
                },
                Op::Fallocate {
                    off: 10,
                    len: 20,
                    keep_size: true
                },
            ]
        );
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
        use ParseErrorKind::*;
        assert_eq!(
            kind("truncate"),
            (
                1,
                Missing {
                    op: "truncate",
                    arg: "SIZE"
                }
            )
        );
        assert_eq!(
            kind("truncate 1 2"),
            (
                1,
                Extra {
                    op: "truncate",
                    word: "2".into()
                }
            )
        );
        assert_eq!(
            kind("fallocate 0 1 keepsize"),
            (
                1,
                Extra {
                    op: "fallocate",
                    word: "keepsize".into()
                }
            )
        );
        assert_eq!(
            kind("fallocate 0 1 keep_size x"),
            (
                1,
                Extra {
                    op: "fallocate",
                    word: "x".into()
                }
            )
        );
        assert_eq!(
            kind("punch 0"),
            (
                1,
                Missing {
                    op: "punch",
                    arg: "LEN"
                }
            )
        );
        assert_eq!(kind("punch 0xffffffffffffffff 1"), (1, Overflow));
        assert_eq!(kind("fallocate 0xffffffffffffffff 1"), (1, Overflow));
        let msg = parse("frobnicate").unwrap_err().to_string();
        assert!(msg.contains("unknown operation \"frobnicate\""), "{msg}");
        assert!(msg.contains("truncate, fallocate and punch"), "{msg}");
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

    #[test]
    fn printed_ops_parse_back_to_themselves() {
        let ops = vec![
            Op::Pwrite {
                off: 5000,
                len: 300,
                seed: u64::MAX,
            },
            Op::Write { len: 0, seed: 1 },
            Op::Seek { off: 7 },
            Op::Writev {
                seed: 9,
                lens: vec![1, 0, 4095],
            },
            Op::Read { off: 0, len: 6000 },
            Op::Fsync,
            Op::Fdatasync,
            Op::Truncate { size: 12345 },
            Op::Fallocate {
                off: 1,
                len: 2,
                keep_size: false,
            },
            Op::Fallocate {
                off: 3,
                len: 4,
                keep_size: true,
            },
            Op::Punch { off: 5, len: 6 },
        ];
        let text: String = ops.iter().map(|op| format!("{op}\n")).collect();
        assert_eq!(
            text,
            "pwrite 5000 300 18446744073709551615\nwrite 0 1\nseek 7\nwritev 9 1 0 4095\n\
             read 0 6000\nfsync\nfdatasync\ntruncate 12345\nfallocate 1 2\n\
             fallocate 3 4 keep_size\npunch 5 6\n"
        );
        let back: Vec<Op> = parse(&text).unwrap().into_iter().map(|l| l.op).collect();
        assert_eq!(back, ops);
        for op in &ops {
            assert!(op.to_string().starts_with(op.name()), "{op}");
        }
    }
}
