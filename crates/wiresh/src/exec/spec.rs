//! What a command is: the program, its environment, directory and input,
//! and the error of a command that could not be started.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

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

    /// What exactly to start: the program found, the whole environment
    /// decided and the working directory checked, here in the server, so
    /// that a command started elsewhere (the spawn helper) starts the same
    /// and fails the same; `what` names it in the error.
    pub(super) fn resolve(&self, what: &str) -> Result<Resolved, SpawnError> {
        let account =
            (self.login || self.program == Program::LoginShell).then(LoginAccount::current);
        let mut cwd = None;
        let (program, arg0, args) = match &self.program {
            Program::Shell(line) => (
                PathBuf::from("/bin/sh"),
                OsString::from("/bin/sh"),
                vec![OsString::from("-c"), OsString::from(line)],
            ),
            Program::Argv(argv) => {
                let program = resolve_program(&argv[0]).map_err(|e| SpawnError::new(what, e))?;
                let args = argv[1..].iter().map(OsString::from).collect();
                (program, OsString::from(&argv[0]), args)
            }
            Program::LoginShell => {
                let account = account.as_ref().expect("looked up for a login shell");
                let shell = &account.shell;
                let name = shell.file_name().unwrap_or_default().to_string_lossy();
                cwd = Some(account.start_dir());
                (shell.clone(), format!("-{name}").into(), Vec::new())
            }
        };
        let login = account.as_ref().filter(|_| self.login);
        let mut env = Vec::new();
        if let Some(account) = login {
            env = account.login_environment();
            cwd = Some(account.start_dir());
        }
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        if let Some(dir) = &self.cwd {
            // A login's relative directory is under its home, as `cd` there.
            let dir = match login {
                Some(account) => account.start_dir().join(dir),
                None => dir.clone(),
            };
            check_work_dir(&dir, what)?;
            cwd = Some(dir);
        }
        Ok(Resolved {
            program,
            arg0,
            args,
            clear_env: login.is_some(),
            env,
            cwd,
        })
    }
}

/// A command resolved ([`Spec::resolve`]): exactly what to start, with
/// nothing left to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The file to run.
    pub program: PathBuf,
    /// Its `argv[0]`.
    pub arg0: OsString,
    /// The rest of its arguments.
    pub args: Vec<OsString>,
    /// Start from an empty environment (a login's), not the server's.
    pub clear_env: bool,
    /// Variables set, in order (a later one wins).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory; the starter's own when `None`.
    pub cwd: Option<PathBuf>,
}

impl Resolved {
    /// The standard library's command for it, stdio and hooks not set.
    pub(crate) fn std_command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.program);
        cmd.arg0(&self.arg0).args(&self.args);
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
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
            let err = spec.resolve("pwd").unwrap_err();
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
            .resolve("wiresh-no-such-program")
            .unwrap_err();
        assert!(err.work_dir.is_none());
        assert!(err
            .to_string()
            .starts_with("cannot start wiresh-no-such-program: "));
    }
}
