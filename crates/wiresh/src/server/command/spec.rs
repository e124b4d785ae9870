//! What an `exec` request asks the server to run, and for how long.

use std::time::Duration;

use wiresh_proto::ExecRequest;

use crate::exec::{self, Deadlines, Spec};
use crate::server::config::ServerConfig;
use crate::server::refusal::Refusal;

/// What the server runs for a request, or why the request is malformed.
pub(super) fn spec_for(req: &ExecRequest) -> Result<Spec, Refusal> {
    let program = match req.program().map_err(|e| Refusal::BadRequest(e.into()))? {
        wiresh_proto::Program::Shell(line) => exec::Program::Shell(line.to_string()),
        wiresh_proto::Program::Argv(argv) => exec::Program::Argv(argv.to_vec()),
        wiresh_proto::Program::LoginShell => exec::Program::LoginShell,
    };
    if let Some(pty) = &req.pty {
        pty.check().map_err(Refusal::BadRequest)?;
    }
    Ok(Spec {
        program,
        env: req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: req.cwd.as_ref().map(Into::into),
        stdin: req.stdin,
        login: true,
    })
}

/// The deadlines of a command: the sooner of the request's timeout and
/// the server's, and the server's graces.
pub(super) fn deadlines(req: &ExecRequest, config: &ServerConfig) -> Deadlines {
    let asked = req.timeout_ms.map(Duration::from_millis);
    Deadlines {
        timeout: match (asked, config.command_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        shutdown_grace: config.shutdown_grace,
        kill_grace: config.kill_grace,
    }
}
