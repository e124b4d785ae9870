//! The `wiresh` command: parses the command line and dispatches to the
//! library; nothing else.
//!
//! - `args`: every flag and its help;
//! - `serve`: flags → the daemon's configuration, then the daemon;
//! - `client`: flags → an endpoint, then `exec`, `shell`, `put` or `get`;
//! - `fanout`: the flags for many hosts, and their fan-out.

mod args;
mod client;
mod fanout;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use wiresh::exit;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (outcome, failure) = match cli.command {
        Command::Serve(args) => (serve::run(args).map(|()| exit::SUCCESS), exit::SERVE_FAILED),
        Command::Exec(args) => (client::exec(args), exit::CLIENT_FAILURE),
        Command::Shell(args) => (client::shell(args), exit::CLIENT_FAILURE),
        Command::Put(args) => (client::put(args), exit::CLIENT_FAILURE),
        Command::Get(args) => (client::get(args), exit::CLIENT_FAILURE),
    };
    let code = outcome.unwrap_or_else(|e| {
        eprintln!("wiresh: {e:#}");
        failure
    });
    ExitCode::from(exit::process_code(code))
}
