//! What a server allows to run: an optional policy file (`--policy FILE`).
//!
//! ```json
//! { "allow_shell": false, "allowed_programs": ["uptime", "/usr/bin/df"], "allow_files": false, "allow_pty": false }
//! ```
//!
//! An allow-list of programs only means something with `allow_shell` off:
//! a shell command line can run anything.

use std::path::Path;

use serde::Deserialize;
use wiresh_proto::{ExecRequest, Program};

use super::refusal::Refusal;
use crate::error::SetupError;

/// The rules, as read from the policy file. Every field is optional; an
/// absent file or field allows everything, as without a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether `exec` with a shell command line (`sh -c`) is allowed.
    #[serde(default = "yes")]
    pub allow_shell: bool,
    /// If present, `argv` requests may run only these programs: `argv[0]`
    /// must equal one of them exactly (a bare name is looked up in `PATH`).
    #[serde(default)]
    pub allowed_programs: Option<Vec<String>>,
    /// Whether `put`, `get` and the other file requests are allowed.
    #[serde(default = "yes")]
    pub allow_files: bool,
    /// Whether commands may run on a pty (`exec -t`, `wiresh shell` on a
    /// terminal).
    #[serde(default = "yes")]
    pub allow_pty: bool,
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_shell: true,
            allowed_programs: None,
            allow_files: true,
            allow_pty: true,
        }
    }
}

impl Policy {
    /// Reads a policy file, with errors that say what is wrong in it.
    pub fn load(path: &Path) -> Result<Policy, SetupError> {
        const WHAT: &str = "policy file";
        let text = std::fs::read_to_string(path).map_err(|source| SetupError::File {
            action: "read",
            what: WHAT,
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| SetupError::Invalid {
            what: WHAT,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Whether the allow-list is undermined by shell access.
    pub fn shell_defeats_allow_list(&self) -> bool {
        self.allow_shell && self.allowed_programs.is_some()
    }

    /// Refuses `req` if it may not run.
    pub fn check_exec(&self, req: &ExecRequest) -> Result<(), Refusal> {
        if req.pty.is_some() && !self.allow_pty {
            return Err(Refusal::Forbidden(
                "terminals (pty) are disabled by the server's policy; run without one \
                 (wiresh exec without -t, wiresh shell -T)"
                    .into(),
            ));
        }
        match req.program() {
            Ok(Program::Shell(_)) if !self.allow_shell => Err(Refusal::Forbidden(
                "shell commands are disabled by the server's policy; send an argv request (wiresh exec --argv)"
                    .into(),
            )),
            Ok(Program::LoginShell) if !self.allow_shell => Err(Refusal::Forbidden(
                "shells are disabled by the server's policy, login shells too; send an argv request (wiresh exec --argv)"
                    .into(),
            )),
            Ok(Program::Argv(argv)) => match &self.allowed_programs {
                Some(allowed) if !allowed.iter().any(|p| p == &argv[0]) => Err(Refusal::Forbidden(format!(
                    "{:?} is not among the programs the server's policy allows",
                    argv[0]
                ))),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let p: Policy =
            serde_json::from_str(r#"{"allow_shell": false, "allowed_programs": ["uptime"]}"#)
                .unwrap();
        assert!(p.check_exec(&ExecRequest::shell("id")).is_err());
        assert!(p
            .check_exec(&ExecRequest::argv(vec!["uptime".into()]))
            .is_ok());
        assert!(p.check_exec(&ExecRequest::argv(vec!["rm".into()])).is_err());
        assert!(p.allow_files);
        assert!(serde_json::from_str::<Policy>(r#"{"alow_shell": false}"#).is_err());
        assert!(p.check_exec(&ExecRequest::login_shell()).is_err());
        assert!(Policy::default()
            .check_exec(&ExecRequest::shell("id"))
            .is_ok());
        let no_pty: Policy = serde_json::from_str(r#"{"allow_pty": false}"#).unwrap();
        let on_pty = ExecRequest {
            pty: Some(Default::default()),
            ..ExecRequest::shell("id")
        };
        assert!(no_pty.check_exec(&on_pty).is_err());
        assert!(no_pty.check_exec(&ExecRequest::shell("id")).is_ok());
        assert!(Policy::default().check_exec(&on_pty).is_ok());
    }
}
