//! Who may log in: the authorized clients file and the authentication mode.
//!
//! Like ssh's `authorized_keys`, `$WIRESH_HOME/authorized_clients` (or
//! `--authorized-clients FILE`) lists one client per line: the fingerprint
//! of its key (as `wiresh keygen` prints it), a name for the logs and the
//! audit log, and optionally a policy that narrows what the server's
//! policy allows it:
//!
//! ```text
//! # fingerprint                                                           name       [policy]
//! sha256:3f1c...e9 alice
//! sha256:77ab...01 deploy-bot {"allow_shell": false, "allowed_programs": ["/usr/local/bin/deploy"]}
//! sha256:09de...5c backup     policy=backup-policy.json
//! ```
//!
//! A policy is written inline (a JSON object, the `--policy` format) or as
//! `policy=FILE` (relative to the file's directory). The file is re-read on
//! reload, so deleting a line locks that key out for new connections.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::policy::{Policy, PolicyError};
use crate::error::SetupError;
use crate::home::{mode_of, read_text, wiresh_home};

/// Name of the default authorized clients file in `$WIRESH_HOME`.
pub const CLIENTS_FILE: &str = "authorized_clients";

/// What the file is called in messages.
const WHAT: &str = "authorized clients file";

/// The default authorized clients file, `$WIRESH_HOME/authorized_clients`.
pub fn default_path() -> Result<PathBuf, SetupError> {
    Ok(wiresh_home()?.join(CLIENTS_FILE))
}

/// Which proofs of identity the server accepts (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// The token, or an authorized client key (the default).
    #[default]
    Either,
    /// The token only; client keys are ignored.
    Token,
    /// An authorized client key only; the token is refused.
    Key,
    /// An authorized client key and the token, together.
    Both,
}

impl AuthMode {
    /// Every mode, as written in flags and the config file.
    pub const NAMES: [&'static str; 4] = ["either", "token", "key", "both"];

    /// Whether this mode can let a key in.
    pub fn uses_keys(self) -> bool {
        self != AuthMode::Token
    }

    /// Whether this mode can let a token in.
    pub fn uses_token(self) -> bool {
        self != AuthMode::Key
    }
}

/// A word that names no [`AuthMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an authentication mode; use one of {names}", names = AuthMode::NAMES.join(", "))]
pub struct UnknownAuthMode(pub String);

impl FromStr for AuthMode {
    type Err = UnknownAuthMode;

    fn from_str(s: &str) -> Result<AuthMode, UnknownAuthMode> {
        match s {
            "either" => Ok(AuthMode::Either),
            "token" => Ok(AuthMode::Token),
            "key" => Ok(AuthMode::Key),
            "both" => Ok(AuthMode::Both),
            _ => Err(UnknownAuthMode(s.to_string())),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = match self {
            AuthMode::Either => 0,
            AuthMode::Token => 1,
            AuthMode::Key => 2,
            AuthMode::Both => 3,
        };
        f.write_str(AuthMode::NAMES[i])
    }
}

/// One line of the file: a client the server knows.
#[derive(Debug, Clone)]
pub struct AuthorizedClient {
    /// The name the logs and the audit log use for it.
    pub name: String,
    /// What it may do, within the server's own policy.
    pub policy: Option<Policy>,
}

/// The clients whose keys may log in, by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedClients {
    by_fingerprint: HashMap<String, Arc<AuthorizedClient>>,
}

impl AuthorizedClients {
    /// No client keys at all.
    pub fn none() -> AuthorizedClients {
        AuthorizedClients::default()
    }

    /// Reads the file at `path`. A file that group or others may write is
    /// refused (whoever can write it can let themselves in), as sshd
    /// refuses such an `authorized_keys`.
    pub fn load(path: &Path) -> Result<AuthorizedClients, SetupError> {
        check_not_writable_by_others(path, WHAT)?;
        let text = read_text(path, WHAT)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let invalid = |n: usize, reason: LineError| SetupError::Invalid {
            what: WHAT,
            path: path.to_path_buf(),
            reason: format!("line {n}: {reason}"),
        };
        let mut by_fingerprint = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (fingerprint, rest) = split_word(line);
            let fingerprint = parse_fingerprint(fingerprint).map_err(|e| invalid(n, e))?;
            let (name, rest) = split_word(rest);
            check_name(name).map_err(|e| invalid(n, e.into()))?;
            let policy = parse_policy(rest, dir).map_err(|e| invalid(n, e))?;
            if policy
                .as_ref()
                .is_some_and(Policy::shell_defeats_allow_list)
            {
                tracing::warn!(
                    "{}, line {n}: the policy of {name} lists allowed programs but allows shell \
                     commands, which can run anything; add \"allow_shell\": false",
                    path.display()
                );
            }
            let client = AuthorizedClient {
                name: name.to_string(),
                policy,
            };
            if let Some(earlier) = by_fingerprint.insert(fingerprint.clone(), Arc::new(client)) {
                let earlier = earlier.name.clone();
                return Err(invalid(
                    n,
                    LineError::Duplicate {
                        fingerprint,
                        earlier,
                    },
                ));
            }
        }
        Ok(AuthorizedClients { by_fingerprint })
    }

    /// The client whose certificate has this fingerprint, if it is listed.
    pub fn get(&self, fingerprint: &str) -> Option<&Arc<AuthorizedClient>> {
        self.by_fingerprint.get(fingerprint)
    }

    /// How many clients are listed.
    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    /// Whether no client is listed.
    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// The listed clients' names, sorted (for `serve --check`).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_fingerprint
            .values()
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

/// The first whitespace-separated word of `s`, and what follows it.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// What is wrong with one line of the file.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The first word is not a fingerprint.
    #[error(
        "{0:?} is not a fingerprint; each line starts with `sha256:` and 64 hex digits, as \
         `wiresh keygen` prints them on the client"
    )]
    Fingerprint(String),
    /// The name is missing or not a name.
    #[error(transparent)]
    Name(#[from] BadName),
    /// The policy written on the line is not one.
    #[error("the inline policy is not valid: {0}")]
    InlinePolicy(PolicyError),
    /// The policy file the line names cannot be used.
    #[error(transparent)]
    PolicyFile(SetupError),
    /// Something after the name that is no policy.
    #[error(
        "unexpected {0:?} after the name; a policy is written inline as a JSON object (the \
         --policy format) or as policy=FILE"
    )]
    Trailing(String),
    /// A key listed twice.
    #[error("{fingerprint} is already listed (for {earlier:?}); each key may appear once")]
    Duplicate {
        /// The key.
        fingerprint: String,
        /// The name it was listed with first.
        earlier: String,
    },
}

/// Why a client name is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// No name at all.
    #[error("the fingerprint must be followed by a name for the client (such as alice@laptop)")]
    Missing,
    /// Characters or a length a name may not have.
    #[error(
        "{0:?} is not a valid client name: use up to 64 letters, digits, `.`, `_`, `@` or `-`"
    )]
    Invalid(String),
}

fn parse_fingerprint(word: &str) -> Result<String, LineError> {
    word.parse::<crate::cert::Fingerprint>()
        .map(|f| f.to_string())
        .map_err(|_| LineError::Fingerprint(word.to_string()))
}

/// Checks a client name: 1 to 64 letters, digits, `.`, `_`, `@` or `-`.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    match (name.is_empty(), ok) {
        (true, _) => Err(BadName::Missing),
        (false, true) => Ok(()),
        (false, false) => Err(BadName::Invalid(name.to_string())),
    }
}

fn parse_policy(rest: &str, dir: &Path) -> Result<Option<Policy>, LineError> {
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.starts_with('{') {
        return Policy::parse(rest)
            .map(Some)
            .map_err(LineError::InlinePolicy);
    }
    match rest.strip_prefix("policy=") {
        Some(file) if !file.is_empty() => {
            let path = dir.join(file);
            check_not_writable_by_others(&path, "policy file").map_err(LineError::PolicyFile)?;
            Policy::load(&path).map(Some).map_err(LineError::PolicyFile)
        }
        _ => Err(LineError::Trailing(rest.to_string())),
    }
}

/// Refuses a file that group or others may write.
fn check_not_writable_by_others(path: &Path, what: &'static str) -> Result<(), SetupError> {
    let mode = mode_of(path, what)?;
    if mode & 0o022 != 0 {
        return Err(SetupError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!(
                "group or others may write it (mode {mode:o}), and so let anyone in; \
                 run `chmod go-w {}`",
                path.display()
            ),
        });
    }
    Ok(())
}

/// The policy for a client: what both the server's policy and the client's
/// own allow. A client's line can only take rights away.
pub fn narrow(server: &Policy, client: &Policy) -> Policy {
    server.narrowed_by(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    fn fp(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn lines_comments_and_policies() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.json", r#"{"allow_files": false}"#);
        let path = write(
            dir.path(),
            "authorized_clients",
            &format!(
                "# who\n\n{} alice\n  {} bot {{\"allow_shell\": false}}\n{} backup policy=p.json\n",
                fp('a'),
                fp('B'),
                fp('c')
            ),
        );
        let clients = AuthorizedClients::load(&path).unwrap();
        assert_eq!(clients.names(), ["alice", "backup", "bot"]);
        assert!(clients.get(&fp('a')).unwrap().policy.is_none());
        let bot = clients.get(&fp('b')).expect("fingerprints are lowercased");
        assert!(!bot.policy.as_ref().unwrap().allow_shell);
        assert!(
            !clients
                .get(&fp('c'))
                .unwrap()
                .policy
                .as_ref()
                .unwrap()
                .allow_files
        );
        assert!(clients.get(&fp('d')).is_none());
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "sha256:12 alice\n",
                "line 1: \"sha256:12\" is not a fingerprint",
            ),
            (
                &format!("\n{}\n", fp('a')),
                "line 2: the fingerprint must be followed by a name",
            ),
            (&format!("{} al/ice\n", fp('a')), "not a valid client name"),
            (
                &format!("{} a\n{} b\n", fp('a'), fp('a')),
                "line 2: sha256:aaaa",
            ),
            (
                &format!("{} a {{\"nope\": 1}}\n", fp('a')),
                "inline policy is not valid",
            ),
            (&format!("{} a extra\n", fp('a')), "policy=FILE"),
            (
                &format!("{} a policy=missing.json\n", fp('a')),
                "missing.json",
            ),
        ];
        for (text, expected) in cases {
            let path = write(dir.path(), "ac", text);
            let err = AuthorizedClients::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let path = write(dir.path(), "ac", &format!("{} a\n", fp('a')));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = AuthorizedClients::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod go-w"), "{err}");
    }

    #[test]
    fn a_client_policy_only_narrows() {
        let server = Policy::parse(r#"{"allowed_programs": ["uptime", "df"]}"#).unwrap();
        let client =
            Policy::parse(r#"{"allow_shell": false, "allowed_programs": ["df", "rm"]}"#).unwrap();
        let p = narrow(&server, &client);
        assert!(!p.allow_shell && p.allow_files);
        assert_eq!(p.allowed_programs, Some(vec!["df".to_string()]));
        let p = narrow(&Policy::default(), &Policy::default());
        assert!(p.allow_shell && p.allow_files && p.allowed_programs.is_none());
    }

    #[test]
    fn modes_round_trip() {
        for name in AuthMode::NAMES {
            assert_eq!(name.parse::<AuthMode>().unwrap().to_string(), name);
        }
        assert!("keys"
            .parse::<AuthMode>()
            .unwrap_err()
            .to_string()
            .contains("either"));
    }
}
