//! `bufwrite`: the head-to-head measurement of the buffered write paths.

use clap::{CommandFactory, FromArgMatches, Subcommand};

mod append;
mod fio;
mod gaps_cmd;
mod harness;
mod image;
mod libmicro;
mod paths;
mod plot;
mod progress;
mod replay;
mod replay_timing;
mod report;
mod run;
mod scale;
mod setup;
mod sweep;
mod table;
mod timing;
mod trace;
mod units;
mod writeback;

/// bufwrite: the Linux buffered write path in userspace, buffer heads against iomap.
#[derive(Debug, clap::Parser)]
#[command(
    name = "bufwrite",
    version,
    about = "bufwrite: the Linux buffered write path in userspace, buffer heads against iomap"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The libMicro write cases (cached overwrites at offset 0), usecs/call
    /// per path; by default on a temporary ext4 image through io_uring (sync
    /// where io_uring is unavailable).
    Libmicro(libmicro::Args),
    /// Sweep one parameter (folio order, write position, block size, cold
    /// cache, write size): usecs/call per path as CSV, JSON and an SVG chart.
    Sweep(sweep::Args),
    /// Apply a trace of writes, reads and fsyncs read from stdin; print a hash per read.
    Replay(replay::Args),
    /// pwrite + fsync through the engine per write path, backend, queue
    /// depth and write size: dirtying, durable and fsync-only MB/s, the
    /// flusher alone, write amplification, and fio's job beside them.
    ///
    /// `--device-only` keeps the old figure: hand-built device requests, no
    /// page cache.
    Writeback(writeback::Args),
    /// Appends per write path and allocation policy on ext4: usecs per
    /// call, fsync cost, metadata blocks per MiB, device requests.
    Append(append::Args),
    /// Writer threads per path (a file each, or one shared file), cached
    /// overwrites and appends: ops/s, speedup against one thread, cache
    /// memory held. `scale stream`: one long write under --cache-budget,
    /// with its peak RSS.
    Scale(scale::Args),
    /// The ext4 iomap feature-gap report for an image or unmounted device
    Gaps(gaps_cmd::Args),
    /// Run an unmodified program with the preload library: its file calls
    /// under --mount-at (default /bufwrite) go to a bufwrite mount of an
    /// ext4 image (a temporary one by default); exits with CMD's status.
    Run(run::Args),
    /// fio, unmodified, on the kernel's ext4 and through `bufwrite run` on
    /// each write path: 1 KiB and 4 KiB random overwrites of a cached file
    /// and a sequential write with an fsync; MB/s and usecs per write.
    Fio(fio::Args),
}

fn main() {
    let command = Cli::command().mut_subcommand("libmicro", libmicro::help);
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--backend` and `--block-size` have defaults, so only the matches
    // tell whether they were given: for the warnings about flags a target
    // ignores, and for libmicro's own choice of backend.
    if let Some(("libmicro" | "replay", m)) = matches.subcommand() {
        setup::record_given(setup::given_flags(m));
    }
    let result = match cli.command {
        Command::Libmicro(mut a) => {
            // libmicro's ext4 target picks its own backend unless given.
            a.backend_given = matches
                .subcommand_matches("libmicro")
                .is_some_and(|m| setup::given_flags(m).backend);
            libmicro::run(a)
        }
        Command::Sweep(a) => sweep::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Writeback(a) => writeback::run(a),
        Command::Append(a) => append::run(a),
        Command::Scale(a) => scale::run(a),
        Command::Gaps(a) => gaps_cmd::run(a),
        // CMD's exit status is this process's; everything `run` made is
        // gone (dropped) once it returns.
        Command::Fio(a) => fio::run(a),
        Command::Run(a) => run::run(a).map(|code| std::process::exit(code)),
    };
    if let Err(e) = result {
        eprintln!("bufwrite: {e:#}");
        std::process::exit(1);
    }
}
