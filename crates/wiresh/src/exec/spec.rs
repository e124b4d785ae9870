//! What a command is: the program, its environment, directory and input,
//! and the error of a command that could not be started.

use std::io;
use std::path::PathBuf;

use tokio::process::Command;

use super::login::LoginAccount;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A command line for `/bin/sh -c`.
    Shell(String),
    /// A program and its arguments; never empty. A program name without a
    /// `/` is looked up in the server's own `PATH` (see [`resolve_program`]).
    Argv(Vec<String>),
    /// The login shell of the account the server runs as, as `ssh host`
    /// starts it: `argv[0]` is `-` and its name, and it starts in the
    /// account's home directory unless the spec names one.
    LoginShell,
}

/// A command to start: the program, its environment, directory and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// What to run.
    pub program: Program,
    /// Variables added to (or replacing in) the command's environment.
    pub env: Vec<(String, String)>,
    /// Working directory; when `None`, the account's home directory for a
    /// login, else the server's own.
    pub cwd: Option<PathBuf>,
    /// Whether the command runs as a login would (see [`super::login`]):
    /// the account's environment and home directory, not the server's.
    pub login: bool,
    /// Whether the command gets a pipe for its stdin (else `/dev/null`).
    pub stdin: bool,
}

impl Spec {
    /// `sh -c line` with the server's environment and no input.
    pub fn shell(line: impl Into<String>) -> Spec {
        Spec {
            program: Program::Shell(line.into()),
            env: Vec::new(),
            cwd: None,
            stdin: false,
            login: false,
        }
    }

    /// The command, with everything but its stdio and process group.
    pub(super) fn command(&self) -> io::Result<Command> {
        let account =
            (self.login || self.program == Program::LoginShell).then(LoginAccount::current);
        let mut cmd = match &self.program {
            Program::Shell(line) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
            Program::Argv(argv) => {
                let mut c = Command::new(resolve_program(&argv[0])?);
                c.arg0(&argv[0]).args(&argv[1..]);
                c
            }
            Program::LoginShell => {
                let account = account.as_ref().expect("looked up for a login shell");
                let shell = &account.shell;
                let name = shell.file_name().unwrap_or_default().to_string_lossy();
                let mut c = Command::new(shell);
                c.arg0(format!("-{name}")).current_dir(account.start_dir());
                c
            }
        };
        if let Some(account) = account.as_ref().filter(|_| self.login) {
            account.apply(&mut cmd);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            // A login's relative directory is under its home, as `cd` there.
            let dir = match account.as_ref().filter(|_| self.login) {
                Some(account) => account.start_dir().join(cwd),
                None => cwd.clone(),
            };
            cmd.current_dir(dir);
        }
        Ok(cmd)
    }
}

/// The file a program name runs: a name with a `/` as it is; a bare name
/// looked up in the *server's* `PATH`, never in a `PATH` the client put in
/// the command's environment (which would let a client choose what `date`
/// means). The standard library would search the child's `PATH`.
pub fn resolve_program(name: &str) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: not found in the server's PATH"),
        )
    };
    if name.is_empty() {
        return Err(not_found());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The operating system refused to start a command.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {what}: {source}")]
pub struct SpawnError {
    /// What was being started.
    pub what: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_in_the_servers_path_only() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(resolve_program("./x").unwrap(), PathBuf::from("./x"));
        assert!(resolve_program("no-such-program-wiresh").is_err());
        assert!(resolve_program("").is_err());
    }
}
