//! The client's defaults per server, `$WIRESH_HOME/client.toml`:
//!
//! ```toml
//! [hosts."build.example.org"]
//! port = 7979
//! fingerprint = "sha256:4242cd48..."
//! key = "keys/build.key"        # relative to $WIRESH_HOME
//! ```
//!
//! A table applies when `-H` names that host (without a port, or with
//! any); flags given on the command line win over it. Kept small on
//! purpose: the fan-out inventory (`hosts.toml`) describes groups of hosts,
//! this file only how to reach one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config_file::{suggest, ConfigFile, Value};
use crate::error::SetupError;
use crate::home::wiresh_home;

/// Name of the client config file in `$WIRESH_HOME`.
pub const CLIENT_CONFIG: &str = "client.toml";

/// What the file is called in messages.
const WHAT: &str = "client config file";

/// The keys a `[hosts."NAME"]` table may hold.
const HOST_KEYS: [&str; 3] = ["port", "fingerprint", "key"];

/// How to reach one server, as far as the file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDefaults {
    /// The port, when `-H` gives none.
    pub port: Option<u16>,
    /// The server's fingerprint, pinned in advance (as `--fingerprint`).
    pub fingerprint: Option<String>,
    /// The client key to present (as `--key`).
    pub key: Option<PathBuf>,
}

/// The client config file, read.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    hosts: HashMap<String, HostDefaults>,
}

impl ClientConfig {
    /// `$WIRESH_HOME/client.toml`, or nothing when it does not exist.
    pub fn load_default() -> Result<ClientConfig, SetupError> {
        let home = wiresh_home()?;
        let path = home.join(CLIENT_CONFIG);
        if !path.exists() {
            return Ok(ClientConfig::default());
        }
        ClientConfig::load(&path, &home)
    }

    /// Reads `path`; relative key paths are taken from `home`.
    pub fn load(path: &Path, home: &Path) -> Result<ClientConfig, SetupError> {
        let file = ConfigFile::read(path, WHAT)?;
        let mut hosts = HashMap::new();
        for entry in &file.entries {
            let Value::Table(table) =
                (entry.key == "hosts")
                    .then_some(&entry.value)
                    .ok_or_else(|| {
                        file.error(
                            entry.line,
                            format!(
                                "unknown key `{}`; the file holds only [hosts.\"NAME\"] tables",
                                entry.key
                            ),
                        )
                    })?
            else {
                return Err(file.error(entry.line, "`hosts` must be tables: [hosts.\"NAME\"]"));
            };
            for (name, settings) in table {
                let Value::Table(settings) = settings else {
                    return Err(file.error(
                        entry.line,
                        format!("hosts.{name} must be a table: [hosts.\"{name}\"]"),
                    ));
                };
                let host = host_defaults(&file, entry.line, name, settings, home)?;
                hosts.insert(name.clone(), host);
            }
        }
        Ok(ClientConfig { hosts })
    }

    /// The defaults for the host `-H` names (its host part), if any.
    pub fn host(&self, name: &str) -> Option<&HostDefaults> {
        self.hosts.get(name)
    }
}

/// The settings of host `name`, whose table starts at or after `line`.
fn host_defaults(
    file: &ConfigFile,
    line: usize,
    name: &str,
    settings: &toml::Table,
    home: &Path,
) -> Result<HostDefaults, SetupError> {
    let mut host = HostDefaults::default();
    // The table's own header, so a key is found under it.
    let header = file
        .line_where(line, |l| {
            l.starts_with("[hosts.")
                && (l.contains(&format!("\"{name}\"")) || l.contains(&format!(".{name}]")))
        })
        .unwrap_or(line);
    for (key, value) in settings {
        let line = file.line_in_table(header, key);
        let wrong = |what: &str| file.error(line, format!("`{key}` for {name:?}: {what}"));
        match (key.as_str(), value) {
            ("port", Value::Integer(n)) => {
                host.port = Some(
                    u16::try_from(*n)
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| wrong("a port is 1 to 65535"))?,
                )
            }
            ("fingerprint", Value::String(f)) => {
                let hex = f.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(wrong(
                        "expected sha256: and 64 hex digits, as `wiresh serve` prints it",
                    ));
                }
                host.fingerprint = Some(f.to_ascii_lowercase());
            }
            ("key", Value::String(k)) => host.key = Some(home.join(k)),
            ("port", _) => return Err(wrong("a port is a number")),
            ("fingerprint" | "key", _) => return Err(wrong("must be a string")),
            (other, _) => {
                let hint = suggest(other, HOST_KEYS)
                    .map(|k| format!("did you mean `{k}`?"))
                    .unwrap_or_else(|| format!("the keys are {}", HOST_KEYS.join(", ")));
                return Err(file.error(line, format!("unknown key `{other}` for {name:?}; {hint}")));
            }
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ClientConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, text).unwrap();
        ClientConfig::load(&path, Path::new("/home/w")).map_err(|e| e.to_string())
    }

    #[test]
    fn hosts_and_their_defaults() {
        let fp = format!("sha256:{}", "AB".repeat(32));
        let c = load(&format!(
            "[hosts.\"build\"]\nport = 7979\nfingerprint = \"{fp}\"\nkey = \"keys/b.key\"\n\n[hosts.\"::1\"]\nport = 1\n"
        ))
        .unwrap();
        let build = c.host("build").unwrap();
        assert_eq!(build.port, Some(7979));
        assert_eq!(build.fingerprint, Some(fp.to_ascii_lowercase()));
        assert_eq!(build.key, Some(PathBuf::from("/home/w/keys/b.key")));
        assert_eq!(c.host("::1").unwrap().port, Some(1));
        assert!(c.host("other").is_none());
    }

    #[test]
    fn mistakes_name_the_line() {
        for (text, want) in [
            ("port = 1\n", "line 1: unknown key `port`"),
            (
                "[hosts.\"a\"]\nprot = 1\n",
                "line 2: unknown key `prot` for \"a\"; did you mean `port`?",
            ),
            (
                "[hosts.\"a\"]\n\nport = 70000\n",
                "line 3: `port` for \"a\": a port is 1 to 65535",
            ),
            (
                "[hosts.\"a\"]\nfingerprint = \"md5:x\"\n",
                "line 2: `fingerprint`",
            ),
            (
                "[hosts.\"a\"]\nkey = 3\n",
                "line 2: `key` for \"a\": must be a string",
            ),
            (
                "[hosts.\"a\"]\nport = 1\n[hosts.\"b\"]\nport = 0\n",
                "line 4: `port` for \"b\"",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
