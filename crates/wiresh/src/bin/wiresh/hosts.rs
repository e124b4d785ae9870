//! Which servers the command line names, and how to reach them: the host
//! operand (`exec HOST`, `shell HOST`, `put ... HOST:PATH`), `-H`, `-g`,
//! `-x`, or the default host; each found by the library's one endpoint
//! builder (`wiresh::reach`) with the connection flags over the client
//! settings.
//!
//! One host runs the single-host commands (ssh's behaviour); more than one,
//! or a fan-out display (`--gather`, `--diff`, `--json`, `--outdir`, `-S`),
//! the fan-out.

use std::time::Duration;

use anyhow::Result;
use wiresh::addr::Target;
use wiresh::client::{Endpoint, Security};
use wiresh::error::SetupError;
use wiresh::fanout::{select, Host, Options};
use wiresh::reach::{Reach, Resolver, SettingsFile, HOST_ENV};

use crate::args::{ConnectArgs, SshArgs};

/// A usage error (exit status 2): what was asked cannot be done as asked.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    SetupError::Usage(message.into()).into()
}

impl ConnectArgs {
    /// The one server to connect to, or the hosts of a fan-out;
    /// `fanout_display` forces the fan-out.
    pub fn endpoint_or_hosts(&self, fanout_display: bool) -> Result<Result<Endpoint, Vec<Host>>> {
        let (names, mut resolver) = self.selected()?;
        if let [name] = names.as_slice() {
            if !fanout_display {
                return Ok(Ok(resolver.endpoint(name)?));
            }
        }
        Ok(Err(select::hosts(&names, &mut resolver)?))
    }

    /// What the flags give the endpoint builder.
    fn reach(&self) -> Reach {
        let settings = match (&self.select.config, &self.select.inventory) {
            (Some(file), _) => SettingsFile::File(file.clone()),
            (None, Some(old)) => SettingsFile::Old(old.clone()),
            (None, None) => SettingsFile::Home,
        };
        Reach {
            port: self.port,
            token_file: self.token_file.clone(),
            key: self.key.clone(),
            fingerprint: self.fingerprint.as_ref().map(ToString::to_string),
            plaintext: self.plaintext,
            settings,
            connect_timeout: Some(self.select.connect_timeout.0),
            ..Reach::default()
        }
    }

    /// The names of the hosts selected, and the builder that finds them.
    fn selected(&self) -> Result<(Vec<String>, Resolver)> {
        for list in self.operand.iter().chain(&self.hosts) {
            refuse_user(list)?;
        }
        if self.operand.is_some() && (!self.hosts.is_empty() || !self.select.groups.is_empty()) {
            return Err(usage(format!(
                "{} names a host, and so do -H or -g: name the hosts one way",
                self.operand.as_deref().unwrap_or_default()
            )));
        }
        anyhow::ensure!(
            !self.select.connect_timeout.0.is_zero(),
            SetupError::Usage("--connect-timeout must be more than 0".into())
        );
        let resolver = Resolver::new(self.reach())?;
        for warning in resolver.inventory().warnings() {
            eprintln!("wiresh: warning: {warning}");
        }
        let mut selection = select::Selection {
            operand: self.operand.clone(),
            hosts: self.hosts.clone(),
            groups: self.select.groups.clone(),
            exclude: self.select.exclude.clone(),
        };
        // The default host is only a default: any host named replaces it.
        if selection.operand.is_none() && selection.hosts.is_empty() && selection.groups.is_empty()
        {
            selection.operand = Some(resolver.default_host());
        }
        let names = selection.names(resolver.inventory())?;
        Ok((names, resolver))
    }

    /// `-G`: how each selected host would be reached, one `key value`
    /// line per setting as `ssh -G` prints them, a blank line between hosts.
    pub fn print_settings(&self) -> Result<()> {
        let (names, mut resolver) = self.selected()?;
        let mut text = String::new();
        for name in names {
            let mut endpoint = resolver.endpoint(&name)?;
            // The command line wins over the host's setting.
            if let Some(every) = self.persist {
                endpoint.persist = Some(every.0);
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&describe(&name, &endpoint));
        }
        print!("{text}");
        Ok(())
    }

    /// The legacy server to connect to, as `HOST[:PORT]`: the operand,
    /// `-H`, else `$WIRESH_HOST`, else this machine; `-p` gives the port
    /// of a host that names none. Refuses many hosts.
    pub fn legacy_host(&self) -> Result<String> {
        let many = self.hosts.len() + usize::from(self.operand.is_some()) > 1
            || !self.select.groups.is_empty()
            || self
                .hosts
                .iter()
                .chain(&self.operand)
                .any(|h| h.contains(','));
        if many {
            return Err(usage(
                "--legacy talks to one server at a time; run it once per host",
            ));
        }
        let env = std::env::var(HOST_ENV)
            .ok()
            .filter(|h| !h.trim().is_empty());
        let host = self
            .operand
            .iter()
            .chain(&self.hosts)
            .next()
            .cloned()
            .or(env)
            .unwrap_or_else(|| wiresh::reach::DEFAULT_HOST.to_string());
        // `-p PORT` for a host that names none, as for the wiresh protocol.
        match self.port {
            Some(port) => Ok(Target::parse(&host, port)
                .map_err(|e| usage(format!("{host}: {e}")))?
                .to_string()),
            None => Ok(host),
        }
    }

    /// Runs, parallelism and timeouts for many hosts.
    pub fn fanout_options(&self) -> Options {
        Options {
            fanout: self.select.fanout,
            connect_timeout: self.select.connect_timeout.0,
            fail_fast: self.select.fail_fast,
        }
    }
}

/// One host's settings as `-G` prints them.
fn describe(name: &str, endpoint: &Endpoint) -> String {
    let mut lines = vec![
        format!("host {name}"),
        format!("address {}", endpoint.target.host),
        format!("port {}", endpoint.target.port),
    ];
    match &endpoint.security {
        Security::Plaintext => lines.push("tls no".into()),
        Security::Tls(pin) => {
            lines.push("tls yes".into());
            lines.push(match &pin.fingerprint {
                Some(f) => format!("fingerprint {f}"),
                None => format!("known-hosts {}", pin.known_hosts.display()),
            });
            lines.push(match &pin.client_key {
                Some(key) => format!("key {}", key.path.display()),
                None => "key none".into(),
            });
        }
    }
    let token = if endpoint.token.expose().is_empty() {
        "none"
    } else {
        "yes"
    };
    lines.push(format!("token {token}"));
    lines.push(format!(
        "connect-timeout {}",
        humantime::format_duration(endpoint.connect_timeout)
    ));
    lines.push(match endpoint.persist.filter(|d| !d.is_zero()) {
        Some(idle) => format!("persist {}", humantime::format_duration(idle)),
        None => "persist no".into(),
    });
    lines.join("\n") + "\n"
}

/// `user@host`: wiresh logs in as no one; the server's account runs
/// every command. Caught before the host list parser, whose `@` means a
/// group.
fn refuse_user(list: &str) -> Result<()> {
    let user = list
        .split(',')
        .find_map(|host| host.split_once('@').map(|(user, _)| user))
        .filter(|user| !user.is_empty() && !user.contains(['[', '!', '&', '^']));
    match user {
        Some(user) => Err(not_as(user, &format!("drop `{user}@` from {list}"))),
        None => Ok(()),
    }
}

/// The error for asking to run as `user`.
fn not_as(user: &str, fix: &str) -> anyhow::Error {
    usage(format!(
        "wiresh cannot log in as {user:?}: commands run as the account the server runs as \
         (`wiresh exec HOST id -un` prints it), and wiresh has no other login; {fix}"
    ))
}

impl SshArgs {
    /// Applies ssh's options to the connection flags; returns the
    /// environment `-o SendEnv` sends.
    pub fn apply(&self, connect: &mut ConnectArgs) -> Result<Vec<(String, String)>> {
        if let Some(user) = &self.login {
            return Err(not_as(user, &format!("drop `-l {user}`")));
        }
        let mut env = Vec::new();
        for option in &self.options {
            let (key, value) = option
                .split_once(['=', ' '])
                .map(|(k, v)| (k.trim(), v.trim()))
                .unwrap_or((option.trim(), ""));
            let bad = || usage(format!("-o {option}: not a value for {key}"));
            match key.to_ascii_lowercase().as_str() {
                "sendenv" => env.extend(send_env(value)),
                "port" => {
                    let port: u16 = value.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
                    connect.port = connect.port.or(Some(port));
                }
                "connecttimeout" => {
                    let secs: u64 = value.parse().ok().filter(|s| *s != 0).ok_or_else(bad)?;
                    connect.select.connect_timeout.0 = Duration::from_secs(secs);
                }
                "batchmode" if ["yes", "no"].contains(&value) => {}
                "user" => return Err(not_as(value, &format!("drop `-o {option}`"))),
                _ => {
                    return Err(usage(format!(
                        "-o {option}: wiresh has, of ssh's -o options, only SendEnv, Port, \
                         ConnectTimeout and BatchMode"
                    )))
                }
            }
        }
        connect.port = self.port.or(connect.port);
        Ok(env)
    }
}

/// The local variables `SendEnv` names (names, or patterns ending in `*`),
/// as they are set here.
fn send_env(names: &str) -> Vec<(String, String)> {
    let wanted: Vec<&str> = names.split_whitespace().collect();
    std::env::vars()
        .filter(|(name, _)| {
            wanted.iter().any(|w| match w.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == w,
            })
        })
        .collect()
}

/// scp's reading of an operand: `HOST:PATH` names a remote file when a
/// `:` comes before any `/` (`[V6]:PATH` for an IPv6 address); a name
/// that starts with `:` or has a `/` before its first `:` is local
/// (`./name:x`).
pub fn split_remote(operand: &str) -> Option<(&str, &str)> {
    if operand.starts_with(':') {
        return None;
    }
    let bracketed = operand.starts_with('[');
    let bytes = operand.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b']' if bracketed && bytes.get(i + 1) == Some(&b':') => {
                return Some((&operand[..=i], &operand[i + 2..]))
            }
            b':' if !bracketed => return Some((&operand[..i], &operand[i + 1..])),
            b'/' => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_operands() {
        assert_eq!(split_remote("web01:docs/"), Some(("web01", "docs/")));
        assert_eq!(split_remote("web[01-03]:a"), Some(("web[01-03]", "a")));
        assert_eq!(split_remote("[::1]:a:b"), Some(("[::1]", "a:b")));
        assert_eq!(split_remote("h:"), Some(("h", "")));
        assert_eq!(split_remote("./name:x"), None);
        assert_eq!(split_remote("/abs/a:b"), None);
        assert_eq!(split_remote(":x"), None);
        assert_eq!(split_remote("plain/path"), None);
    }

    #[test]
    fn users_are_refused_and_groups_are_not() {
        for list in ["root@web01", "a,bob@b", "git@[::1]"] {
            let err = refuse_user(list).unwrap_err().to_string();
            assert!(
                err.contains("commands run as the account the server runs as"),
                "{err}"
            );
        }
        for list in ["@web", "a,@db", "web[01-02]", "a!@db"] {
            assert!(refuse_user(list).is_ok(), "{list}");
        }
    }
}
