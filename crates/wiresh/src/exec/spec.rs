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

    /// The command, with everything but its stdio and process group;
    /// `what` names it in the error.
    pub(super) fn command(&self, what: &str) -> Result<Command, SpawnError> {
        let account =
            (self.login || self.program == Program::LoginShell).then(LoginAccount::current);
        let mut cmd = match &self.program {
            Program::Shell(line) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
            Program::Argv(argv) => {
                let program = resolve_program(&argv[0]).map_err(|e| SpawnError::new(what, e))?;
                let mut c = Command::new(program);
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
            check_work_dir(&dir, what)?;
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

/// Fails with the directory named when `dir` cannot be a command's working
/// directory: told here, before the start, the child's failed `chdir`
/// would read as the program's "No such file or directory".
fn check_work_dir(dir: &std::path::Path, what: &str) -> Result<(), SpawnError> {
    let failed = |source| SpawnError {
        what: what.to_string(),
        work_dir: Some(dir.to_path_buf()),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(failed)?;
    if !meta.is_dir() {
        return Err(failed(io::Error::from_raw_os_error(nix::libc::ENOTDIR)));
    }
    nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).map_err(|e| failed(e.into()))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The operating system refused to start a command.
#[derive(Debug)]
pub struct SpawnError {
    /// What was being started.
    pub what: String,
    /// Set when the working directory was what failed, not the program.
    pub work_dir: Option<PathBuf>,
    /// The underlying error.
    pub source: io::Error,
}

impl SpawnError {
    /// Starting `what` failed.
    pub fn new(what: &str, source: io::Error) -> SpawnError {
        SpawnError {
            what: what.to_string(),
            work_dir: None,
            source,
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(dir) = &self.work_dir else {
            return write!(f, "cannot start {}: {}", self.what, self.source);
        };
        let dir = dir.display();
        match (self.source.kind(), self.source.raw_os_error()) {
            (io::ErrorKind::NotFound, _) => write!(f, "working directory {dir} does not exist"),
            (_, Some(nix::libc::ENOTDIR)) => {
                write!(f, "working directory {dir} is not a directory")
            }
            _ => write!(f, "cannot use working directory {dir}: {}", self.source),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
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

    #[test]
    fn a_working_directory_that_cannot_be_used_is_named_not_the_program() {
        let file = tempfile::NamedTempFile::new().unwrap();
        for (dir, says) in [
            ("/nonexistent/wiresh-test".into(), "does not exist"),
            (file.path().to_path_buf(), "is not a directory"),
        ] {
            let spec = Spec {
                cwd: Some(dir.clone()),
                ..Spec::shell("pwd")
            };
            let err = spec.command("pwd").unwrap_err();
            assert_eq!(err.work_dir.as_ref(), Some(&dir));
            assert_eq!(
                err.to_string(),
                format!("working directory {} {says}", dir.display())
            );
        }
        let missing_program = Spec {
            program: Program::Argv(vec!["wiresh-no-such-program".into()]),
            ..Spec::shell("")
        };
        let err = missing_program
            .command("wiresh-no-such-program")
            .unwrap_err();
        assert!(err.work_dir.is_none());
        assert!(err
            .to_string()
            .starts_with("cannot start wiresh-no-such-program: "));
    }
}
