//! The `wiresh` command: parses the command line and dispatches to the
//! library; nothing else.
//!
//! - `args`: every flag and its help;
//! - `serve`: settings → the daemon's configuration, then the daemon;
//! - `settings`: `serve`'s flags, environment and config file, merged;
//! - `client`: `exec`, `shell`, `put` and `get`, on one server or many;
//! - `hosts`: the connection flags → one endpoint, or the hosts of a
//!   fan-out;
//! - `fanout`: the fan-out flags → the library's fan-out;
//! - `keygen`: a client key pair;
//! - `master`: `wiresh master`, and `--persist` for the other commands;
//! - `reload`: `wiresh reload`, and the pid file `serve` keeps for it;
//! - `known_hosts`: the pinned server fingerprints, listed or forgotten;
//! - `help`: completion scripts and manual pages from the same definition;
//! - `manual`: the manual pages' sections clap does not know (exit
//!   statuses, environment, files, examples);
//! - `alloc`: how the allocator keeps freed memory (set before anything).

mod alloc;
mod args;
mod client;
mod fanout;
mod help;
mod hosts;
mod keygen;
mod known_hosts;
mod manual;
mod master;
mod reload;
mod serve;
mod settings;

use std::process::ExitCode;

use wiresh::error::SetupError;
use wiresh::exit;

use args::{Cli, Command};

fn main() -> ExitCode {
    // `wiresh serve`'s spawn helper: before anything else, so that it
    // stays small (no allocator tuning, no clap, no runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == wiresh::exec::helper::HELPER_ARG)
    {
        return wiresh::exec::helper::run();
    }
    alloc::keep_freed_memory();
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come this way too, to stdout.
            let _ = e.print();
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            return ExitCode::from(exit::process_code(code));
        }
    };
    let (outcome, failure) = match cli.command {
        // serve reads its settings itself: the command line, the
        // environment and the config file, merged (settings.rs).
        Command::Serve(_) => (serve::run().map(|()| exit::SUCCESS), exit::SERVE_FAILED),
        Command::Exec(args) => (client::exec(args), exit::CLIENT_FAILURE),
        Command::Shell(args) => (client::shell(args), exit::CLIENT_FAILURE),
        Command::Put(args) => (client::put(args), exit::CLIENT_FAILURE),
        Command::Get(args) => (client::get(args), exit::CLIENT_FAILURE),
        Command::Master(args) => (master::run(args), exit::CLIENT_FAILURE),
        Command::Keygen(args) => (
            keygen::run(args).map(|()| exit::SUCCESS),
            exit::LOCAL_FAILED,
        ),
        Command::Reload(args) => (
            reload::run(args).map(|()| exit::SUCCESS),
            exit::LOCAL_FAILED,
        ),
        Command::KnownHosts(args) => (
            known_hosts::run(args).map(|()| exit::SUCCESS),
            exit::LOCAL_FAILED,
        ),
        Command::Completions(args) => (
            help::completions(args).map(|()| exit::SUCCESS),
            exit::LOCAL_FAILED,
        ),
        Command::Man(args) => (help::man(args).map(|()| exit::SUCCESS), exit::LOCAL_FAILED),
    };
    let code = outcome.unwrap_or_else(|e| {
        eprintln!("wiresh: {}", describe(&e));
        // A usage error is one whatever the subcommand (exit.rs).
        e.chain()
            .find_map(|cause| cause.downcast_ref::<SetupError>())
            .map_or(failure, |setup| exit::for_setup(setup, failure))
    });
    ExitCode::from(exit::process_code(code))
}

/// An error and its causes in one line, each cause said once: the
/// library's errors already name their cause in their own text.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let setup = wiresh::error::SetupError::File {
            action: "read",
            what: "token file",
            path: "/x/token".into(),
            source: io,
        };
        let text = describe(&anyhow::Error::new(setup).context("--token-file /x/token"));
        assert_eq!(text.matches("no such file").count(), 1, "{text}");
        assert!(text.starts_with("--token-file /x/token: cannot read token file /x/token"));
    }
}
