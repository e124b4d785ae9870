//! What a server allows to run: an optional policy file (`--policy FILE`).
//!
//! ```json
//! { "allow_shell": false, "allowed_programs": ["uptime", "/usr/bin/df"],
//!   "allowed_env": ["LANG", "TZ"], "allowed_cwd": ["/srv/reports"],
//!   "allow_files": false, "allow_pty": false }
//! ```
//!
//! A policy *restricts programs* when it turns the shell off or lists
//! programs. Then what a client sends is checked for every way it could
//! still choose what runs:
//! - a program is matched, and run, by its absolute path, found with the
//!   server's own `PATH` (a bare name in the request is resolved the same
//!   way, and `argv[0]` becomes that path);
//! - the environment a client may set is the `allowed_env` list (empty by
//!   default), and never a variable that changes how programs are loaded or
//!   how shells start ([`never_settable`]), whatever the list says;
//! - the working directory, when `allowed_cwd` is given, must lie inside
//!   one of its directories.
//!
//! An allow-list of programs only means something with `allow_shell` off:
//! a shell command line can run anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::refusal::Refusal;
use crate::error::SetupError;
use crate::exec::{resolve_program, Program, Spec};

/// The rules, as read from the policy file. Every field is optional; an
/// absent file or field allows everything, as without a policy. Written
/// back (`serve --check`), it is the file that says the same.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether `exec` with a shell command line (`sh -c`) is allowed.
    #[serde(default = "yes")]
    pub allow_shell: bool,
    /// If present, `argv` requests may run only these programs: absolute
    /// paths, or bare names found in the server's `PATH` when the policy is
    /// loaded.
    #[serde(default)]
    pub allowed_programs: Option<Vec<String>>,
    /// Environment variables a client may set when the policy restricts
    /// programs (none by default).
    #[serde(default)]
    pub allowed_env: Vec<String>,
    /// If present, a command's working directory must be one of these
    /// directories or inside one.
    #[serde(default)]
    pub allowed_cwd: Option<Vec<PathBuf>>,
    /// Whether `put`, `get` and the other file requests are allowed.
    #[serde(default = "yes")]
    pub allow_files: bool,
    /// Whether commands may run on a pty (`exec -t`, `wiresh shell` on a
    /// terminal).
    #[serde(default = "yes")]
    pub allow_pty: bool,
    /// The allowed programs as found when the policy was loaded.
    #[serde(skip)]
    programs: Vec<AllowedProgram>,
    /// When this is the server's policy narrowed by a client's line in
    /// `authorized_clients`: the server's own, to tell a refusal of the
    /// server's from one of the client's line.
    #[serde(skip)]
    server_alone: Option<Arc<Policy>>,
}

/// Whose rules a refusal names.
const SERVERS: &str = "the server's policy";
/// A refusal the server's policy alone would not make.
const CLIENT_LINES: &str =
    "the policy on this client key's line in the server's authorized_clients";

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not the JSON of a policy.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// An allowed program named by a relative path.
    #[error("allowed program {0:?} must be an absolute path or a bare name")]
    RelativeProgram(String),
    /// An allowed program that is not there.
    #[error("allowed program {name:?} cannot be found ({source}); fix the name or install it")]
    ProgramNotFound {
        /// The name as the policy gives it.
        name: String,
        /// Why it was not found.
        source: std::io::Error,
    },
    /// An allowed working directory that is not there.
    #[error("allowed_cwd {}: {source}; it must be an existing directory", dir.display())]
    NoSuchCwd {
        /// The directory as the policy gives it.
        dir: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
}

/// One allowed program, as the operator wrote it and as it is run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedProgram {
    /// The path it is run by.
    path: PathBuf,
    /// The same path with its directory's symlinks resolved, for matching.
    key: PathBuf,
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_shell: true,
            allowed_programs: None,
            allowed_env: Vec::new(),
            allowed_cwd: None,
            allow_files: true,
            programs: Vec::new(),
            allow_pty: true,
            server_alone: None,
        }
    }
}

/// Variables that change how a program is loaded or how a shell or
/// interpreter starts: a client never sets them under a policy that
/// restricts programs, whatever `allowed_env` says.
pub fn never_settable(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "IFS",
        "ENV",
        "BASH_ENV",
        "CDPATH",
        "SHELLOPTS",
        "BASHOPTS",
        "GLOBIGNORE",
        "PS4",
        "PROMPT_COMMAND",
        "GLIBC_TUNABLES",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "PERL5LIB",
        "PERLLIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
        "LUA_PATH",
        "LUA_CPATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
    ];
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "MALLOC_"];
    let upper = name.to_ascii_uppercase();
    NAMES.contains(&upper.as_str()) || PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// `path` with the symlinks of its directory resolved and its own name
/// kept: a symlinked name (`/bin/date` → busybox) stays itself, so
/// allowing one applet of a multi-call binary does not allow all of them.
fn match_key(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

impl Policy {
    /// Reads a policy file, with errors that say what is wrong in it, and
    /// finds every allowed program.
    pub fn load(path: &Path) -> Result<Policy, SetupError> {
        const WHAT: &str = "policy file";
        let invalid = |reason: String| SetupError::Invalid {
            what: WHAT,
            path: path.to_path_buf(),
            reason,
        };
        let text = crate::home::read_text(path, WHAT)?;
        Policy::parse(&text).map_err(|e| invalid(e.to_string()))
    }

    /// Reads a policy from its JSON text and finds every allowed program.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut policy: Policy = serde_json::from_str(text)?;
        policy.resolve()?;
        Ok(policy)
    }

    /// What both this policy and `other` allow: each right only if both
    /// give it (a client's own policy narrowing the server's).
    pub fn narrowed_by(&self, other: &Policy) -> Policy {
        // Field by field, so that a new field must be decided here.
        let Policy {
            allow_shell,
            allowed_programs,
            allowed_env,
            allowed_cwd,
            allow_files,
            allow_pty,
            programs,
            server_alone: _,
        } = self;
        let (allowed_programs, programs) = match (allowed_programs, &other.allowed_programs) {
            (None, None) => (None, Vec::new()),
            (Some(_), None) => (allowed_programs.clone(), programs.clone()),
            (None, Some(_)) => (other.allowed_programs.clone(), other.programs.clone()),
            (Some(names), Some(_)) => {
                // By the file each name was found to be, names kept in order.
                let both: Vec<(String, AllowedProgram)> = names
                    .iter()
                    .cloned()
                    .zip(programs.iter().cloned())
                    .filter(|(_, p)| other.programs.iter().any(|o| o.key == p.key))
                    .collect();
                let (names, found) = both.into_iter().unzip();
                (Some(names), found)
            }
        };
        // The environment list counts only where programs are restricted.
        let allowed_env = match (self.restricts_programs(), other.restricts_programs()) {
            (true, true) => allowed_env
                .iter()
                .filter(|name| other.allowed_env.contains(name))
                .cloned()
                .collect(),
            (true, false) => allowed_env.clone(),
            (false, _) => other.allowed_env.clone(),
        };
        let allowed_cwd = match (allowed_cwd, &other.allowed_cwd) {
            (None, None) => None,
            (Some(dirs), None) | (None, Some(dirs)) => Some(dirs.clone()),
            // Where both allow: the deeper of each pair that nests.
            (Some(a), Some(b)) => Some(
                a.iter()
                    .flat_map(|x| b.iter().map(move |y| (x, y)))
                    .filter_map(|(x, y)| match (x.starts_with(y), y.starts_with(x)) {
                        (true, _) => Some(x.clone()),
                        (_, true) => Some(y.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        Policy {
            allow_shell: *allow_shell && other.allow_shell,
            allowed_programs,
            allowed_env,
            allowed_cwd,
            allow_files: *allow_files && other.allow_files,
            allow_pty: *allow_pty && other.allow_pty,
            programs,
            server_alone: Some(Arc::new(self.clone())),
        }
    }

    /// Finds the allowed programs and checks the lists.
    fn resolve(&mut self) -> Result<(), PolicyError> {
        for name in self.allowed_programs.iter().flatten() {
            if name.contains('/') && !name.starts_with('/') {
                return Err(PolicyError::RelativeProgram(name.clone()));
            }
            let path = resolve_program(name).map_err(|source| PolicyError::ProgramNotFound {
                name: name.clone(),
                source,
            })?;
            self.programs.push(AllowedProgram {
                key: match_key(&path),
                path,
            });
        }
        for name in &self.allowed_env {
            if never_settable(name) {
                warn!(
                    "policy: {name} is listed in allowed_env, but a client may never set it \
                     (it changes what programs run); it stays refused"
                );
            }
        }
        if let Some(dirs) = &mut self.allowed_cwd {
            for dir in dirs.iter_mut() {
                *dir = dir
                    .canonicalize()
                    .map_err(|source| PolicyError::NoSuchCwd {
                        dir: dir.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Whether the allow-list is undermined by shell access.
    pub fn shell_defeats_allow_list(&self) -> bool {
        self.allow_shell && self.allowed_programs.is_some()
    }

    /// Whether the policy restricts what programs run (and so the
    /// environment a client may set).
    pub fn restricts_programs(&self) -> bool {
        !self.allow_shell || self.allowed_programs.is_some()
    }

    /// Checks `spec` (on a pty when `pty`) against the policy, returning
    /// what may run: under an allow-list, the program by the absolute path
    /// the operator allowed. A refusal names whose rules refused: the
    /// server's policy, or the client's own line when the server's policy
    /// alone would have let it run.
    pub fn admit(&self, spec: Spec, pty: bool) -> Result<Spec, Refusal> {
        match self.admit_as(spec.clone(), pty, SERVERS) {
            Err(Refusal::Forbidden(_)) if self.servers_would_admit(&spec, pty) => {
                self.admit_as(spec, pty, CLIENT_LINES)
            }
            admitted => admitted,
        }
    }

    /// Why file requests are refused, if they are.
    pub fn files_refusal(&self) -> Option<String> {
        let servers_allow = self.server_alone.as_ref().is_some_and(|s| s.allow_files);
        let whose = if servers_allow { CLIENT_LINES } else { SERVERS };
        (!self.allow_files).then(|| format!("file transfer is disabled by {whose}"))
    }

    /// Whether the server's policy, without the client's line, would let
    /// `spec` run.
    fn servers_would_admit(&self, spec: &Spec, pty: bool) -> bool {
        let Some(server) = &self.server_alone else {
            return false;
        };
        server.admit_as(spec.clone(), pty, SERVERS).is_ok()
    }

    /// [`Policy::admit`], a refusal naming `whose` rules refused.
    fn admit_as(&self, mut spec: Spec, pty: bool, whose: &str) -> Result<Spec, Refusal> {
        let forbidden = |why: String| Err(Refusal::Forbidden(why));
        if pty && !self.allow_pty {
            return forbidden(format!(
                "terminals (pty) are disabled by {whose}; run without one \
                 (wiresh exec without -t, wiresh shell -T)"
            ));
        }
        match &mut spec.program {
            Program::LoginShell if !self.allow_shell => {
                return forbidden(format!(
                    "shells are disabled by {whose}, login shells too; send an argv \
                     request (wiresh exec --argv)"
                ))
            }
            Program::Shell(_) if !self.allow_shell => {
                return forbidden(format!(
                    "shell commands are disabled by {whose}; send an argv request \
                     (wiresh exec --argv)"
                ))
            }
            Program::Argv(argv) if self.allowed_programs.is_some() => {
                let requested = &argv[0];
                let found = resolve_program(requested)
                    .ok()
                    .map(|path| match_key(&path))
                    .and_then(|key| self.programs.iter().find(|p| p.key == key));
                let Some(allowed) = found else {
                    return forbidden(format!(
                        "{requested:?} is not among the programs {whose} allows"
                    ));
                };
                argv[0] = allowed.path.display().to_string();
            }
            _ => {}
        }
        if self.restricts_programs() {
            if let Some((name, _)) = spec
                .env
                .iter()
                .find(|(name, _)| never_settable(name) || !self.allowed_env.contains(name))
            {
                let why = if never_settable(name) {
                    "it changes what programs run, so no policy allows it"
                } else {
                    "it is not in the policy's allowed_env"
                };
                return forbidden(format!("{whose} does not let clients set {name}: {why}"));
            }
        }
        // A command that names no directory starts in the first allowed one
        // (not the server's own, nor a login shell's home).
        if let (Some(dirs), None) = (&self.allowed_cwd, &spec.cwd) {
            spec.cwd = dirs.first().cloned();
        }
        if let (Some(dirs), Some(cwd)) = (&self.allowed_cwd, &spec.cwd) {
            let inside = cwd
                .canonicalize()
                .ok()
                .filter(|real| dirs.iter().any(|dir| real.starts_with(dir)));
            match inside {
                Some(real) => spec.cwd = Some(real),
                None => {
                    return forbidden(format!(
                        "working directory {} is outside the directories {whose} allows",
                        cwd.display()
                    ))
                }
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        let mut p: Policy = serde_json::from_str(json).unwrap();
        p.resolve().unwrap();
        p
    }

    fn argv(words: &[&str]) -> Spec {
        Spec {
            program: Program::Argv(words.iter().map(|w| w.to_string()).collect()),
            env: Vec::new(),
            cwd: None,
            stdin: false,
            login: false,
        }
    }

    fn refused(result: Result<Spec, Refusal>) -> String {
        match result {
            Err(Refusal::Forbidden(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn rules() {
        let p = policy(r#"{"allow_shell": false, "allowed_programs": ["uptime"]}"#);
        refused(p.admit(Spec::shell("id"), false));
        let admitted = p.admit(argv(&["uptime"]), false).unwrap();
        let Program::Argv(run) = admitted.program else {
            panic!()
        };
        assert!(
            run[0].starts_with('/') && run[0].ends_with("/uptime"),
            "{run:?}"
        );
        refused(p.admit(argv(&["rm"]), false));
        assert!(p.allow_files);
        assert!(serde_json::from_str::<Policy>(r#"{"alow_shell": false}"#).is_err());
        assert!(Policy::default().admit(Spec::shell("id"), false).is_ok());
    }

    #[test]
    fn programs_match_by_path_not_by_name() {
        let p = policy(r#"{"allow_shell": false, "allowed_programs": ["true"]}"#);
        let real = resolve_program("true").unwrap();
        assert!(p.admit(argv(&[real.to_str().unwrap()]), false).is_ok());
        // The same name elsewhere is another program.
        let other = tempfile::tempdir().unwrap();
        let fake = other.path().join("true");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        refused(p.admit(argv(&[fake.to_str().unwrap()]), false));
    }

    #[test]
    fn the_environment_is_an_allow_list_with_a_floor() {
        let p = policy(
            r#"{"allow_shell": false, "allowed_programs": ["true"],
                "allowed_env": ["LANG", "LD_PRELOAD", "PATH"]}"#,
        );
        let with_env = |name: &str| {
            let mut spec = argv(&["true"]);
            spec.env.push((name.into(), "x".into()));
            p.admit(spec, false)
        };
        assert!(with_env("LANG").is_ok());
        for name in [
            "LD_PRELOAD",
            "PATH",
            "BASH_ENV",
            "ENV",
            "IFS",
            "ld_library_path",
            "TZ",
        ] {
            let why = refused(with_env(name));
            assert!(why.contains(name), "{why}");
        }
        // Without a restriction on programs, the environment is free.
        let open = Policy::default();
        let mut spec = Spec::shell("true");
        spec.env.push(("LD_PRELOAD".into(), "x".into()));
        assert!(open.admit(spec, false).is_ok());
    }

    #[test]
    fn the_working_directory_can_be_limited() {
        let allowed = tempfile::tempdir().unwrap();
        std::fs::create_dir(allowed.path().join("sub")).unwrap();
        let p = policy(&format!(
            r#"{{"allowed_cwd": [{:?}]}}"#,
            allowed.path().display().to_string()
        ));
        let in_dir = |dir: PathBuf| {
            let mut spec = Spec::shell("pwd");
            spec.cwd = Some(dir);
            p.admit(spec, false)
        };
        assert!(in_dir(allowed.path().join("sub")).is_ok());
        refused(in_dir(PathBuf::from("/")));
        refused(in_dir(allowed.path().join("sub/../..")));
        refused(in_dir(allowed.path().join("missing")));
        let defaulted = p.admit(Spec::shell("pwd"), false).unwrap();
        assert_eq!(
            defaulted.cwd,
            Some(allowed.path().canonicalize().unwrap()),
            "no cwd: the first allowed directory"
        );
    }

    #[test]
    fn narrowing_keeps_what_both_allow() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = dir.path().display().to_string();
        let sub = dir.path().join("sub").display().to_string();
        let server = policy(&format!(
            r#"{{"allow_shell": false, "allowed_programs": ["true", "false"],
                "allowed_env": ["LANG", "TZ"], "allowed_cwd": [{root:?}]}}"#
        ));
        let client = policy(&format!(
            r#"{{"allowed_programs": ["false", "echo"], "allowed_env": ["TZ"],
                "allowed_cwd": [{sub:?}], "allow_files": false}}"#
        ));
        let both = server.narrowed_by(&client);
        assert!(!both.allow_shell && !both.allow_files);
        assert_eq!(both.allowed_programs, Some(vec!["false".to_string()]));
        assert!(both.admit(argv(&["false"]), false).is_ok());
        refused(both.admit(argv(&["true"]), false));
        refused(both.admit(argv(&["echo"]), false));
        assert_eq!(both.allowed_env, ["TZ"]);
        let canonical_sub = std::path::Path::new(&sub).canonicalize().unwrap();
        assert_eq!(both.allowed_cwd, Some(vec![canonical_sub]));
        // Narrowing by an open policy changes nothing.
        let same = server.narrowed_by(&Policy::default());
        assert_eq!(same.allowed_programs, server.allowed_programs);
        assert_eq!(same.allowed_env, server.allowed_env);
    }

    #[test]
    fn a_refusal_names_whose_rules_refused() {
        let server = policy(r#"{"allow_pty": false}"#);
        let client = policy(r#"{"allow_shell": false, "allow_files": false}"#);
        let both = server.narrowed_by(&client);
        let why = refused(both.admit(Spec::shell("id"), false));
        assert!(
            why.contains("client key's line") && !why.contains("server's policy"),
            "{why}"
        );
        let why = refused(both.admit(argv(&["id"]), true));
        assert!(why.contains("the server's policy"), "{why}");
        assert!(both.admit(argv(&["id"]), false).is_ok());
        assert!(both.files_refusal().unwrap().contains("client key's line"));
        let no_files = policy(r#"{"allow_files": false}"#);
        assert!(no_files
            .files_refusal()
            .unwrap()
            .contains("server's policy"));
        let narrowed = no_files.narrowed_by(&client);
        assert!(narrowed
            .files_refusal()
            .unwrap()
            .contains("server's policy"));
        assert!(server.files_refusal().is_none());
    }

    #[test]
    fn a_missing_program_is_an_error_at_load() {
        let mut p: Policy =
            serde_json::from_str(r#"{"allowed_programs": ["no-such-program-wiresh"]}"#).unwrap();
        assert!(p
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("cannot be found"));
        let mut p: Policy = serde_json::from_str(r#"{"allowed_programs": ["bin/x"]}"#).unwrap();
        assert!(p.resolve().unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn terminals_and_login_shells_can_be_forbidden() {
        let login = Spec {
            program: Program::LoginShell,
            ..Spec::shell("")
        };
        let no_shell = policy(r#"{"allow_shell": false}"#);
        refused(no_shell.admit(login.clone(), false));
        assert!(Policy::default().admit(login, true).is_ok());
        let no_pty = policy(r#"{"allow_pty": false}"#);
        refused(no_pty.admit(Spec::shell("id"), true));
        assert!(no_pty.admit(Spec::shell("id"), false).is_ok());
    }
}
