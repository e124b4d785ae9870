//! The host inventory: `$WIRESH_HOME/hosts.toml` (or `--inventory FILE`),
//! with named groups for `-g` and per-host connection settings.
//!
//! ```toml
//! [groups]
//! web = ["web[01-20]", "web-canary"]   # or one string: "web[01-20],web-canary"
//! db = "db[1-2]"
//!
//! [hosts."web[01-20]"]                 # a name or a host list
//! port = 7900
//! token_file = "tokens/web"            # relative to this file's directory
//!
//! [hosts.db1]
//! address = "10.0.0.5"                 # connect here; `db1` names it in output
//! fingerprint = "sha256:4242cd48..."
//! ```
//!
//! Unknown keys are refused, so a typo is an error rather than a silently
//! ignored setting.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::SetupError;
use crate::hostlist;

/// Name of the default inventory file inside the wiresh home directory.
pub const INVENTORY_FILE: &str = "hosts.toml";

/// What an inventory file is called in messages.
const WHAT: &str = "inventory";

/// How to reach one host, where it differs from the command line's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The server's port, unless the name carries one.
    pub port: Option<u16>,
    /// Where the host's token is (relative paths start at the inventory's
    /// directory).
    pub token_file: Option<PathBuf>,
    /// The server's TLS fingerprint (`sha256:...`), pinned in advance.
    pub fingerprint: Option<String>,
    /// The address to connect to, when it is not the host's name.
    pub address: Option<String>,
}

/// A group's members: one host list, or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Members {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    groups: BTreeMap<String, Members>,
    #[serde(default)]
    hosts: BTreeMap<String, HostSettings>,
}

/// A parsed inventory: groups expanded to host names, settings per host.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Where it was read from (`None`: no inventory).
    path: Option<PathBuf>,
    groups: BTreeMap<String, Vec<String>>,
    hosts: HashMap<String, HostSettings>,
}

impl Inventory {
    /// Reads `path`. A missing file is an error only when `required` (it
    /// was named with `--inventory`); otherwise it is an empty inventory.
    pub fn load(path: &Path, required: bool) -> Result<Inventory, SetupError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Inventory::default())
            }
            Err(source) => {
                return Err(SetupError::File {
                    action: "read",
                    what: WHAT,
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Inventory::parse(&text, path)
    }

    /// Parses an inventory's text; `path` is where it came from, for
    /// messages and relative token files.
    pub fn parse(text: &str, path: &Path) -> Result<Inventory, SetupError> {
        let invalid = |reason: String| SetupError::Invalid {
            what: WHAT,
            path: path.to_path_buf(),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut groups = BTreeMap::new();
        for (name, members) in file.groups {
            let lists = match members {
                Members::One(list) => vec![list],
                Members::Many(lists) => lists,
            };
            let mut hosts = Vec::new();
            for list in &lists {
                let expanded =
                    hostlist::expand(list).map_err(|e| invalid(format!("group {name:?}: {e}")))?;
                hosts.extend(expanded);
            }
            groups.insert(name, hosts);
        }
        // A host named by two keys may take settings from both, but not
        // the same setting twice: which would win is anyone's guess.
        let mut hosts: HashMap<String, (HostSettings, BTreeMap<&'static str, String>)> =
            HashMap::new();
        for (key, mut settings) in file.hosts {
            if let Some(f) = &settings.fingerprint {
                check_fingerprint(f).map_err(|why| invalid(format!("hosts.{key:?}: {why}")))?;
            }
            settings.token_file = settings.token_file.map(|t| base.join(t));
            let names =
                hostlist::expand(&key).map_err(|e| invalid(format!("hosts.{key:?}: {e}")))?;
            for name in names {
                let (merged, from) = hosts.entry(name.clone()).or_default();
                let mut take = |field: &'static str, set: bool| {
                    if !set {
                        return Ok(());
                    }
                    match from.insert(field, key.clone()) {
                        Some(other) => Err(invalid(format!(
                            "host {name:?} gets `{field}` from both hosts.{other:?} and hosts.{key:?}; keep one"
                        ))),
                        None => Ok(()),
                    }
                };
                take("port", settings.port.is_some())?;
                take("token_file", settings.token_file.is_some())?;
                take("fingerprint", settings.fingerprint.is_some())?;
                take("address", settings.address.is_some())?;
                merged.port = merged.port.or(settings.port);
                merged.token_file = merged.token_file.take().or(settings.token_file.clone());
                merged.fingerprint = merged.fingerprint.take().or(settings.fingerprint.clone());
                merged.address = merged.address.take().or(settings.address.clone());
            }
        }
        Ok(Inventory {
            path: Some(path.to_path_buf()),
            groups,
            hosts: hosts.into_iter().map(|(k, (s, _))| (k, s)).collect(),
        })
    }

    /// The hosts of group `name` (`-g NAME`).
    pub fn group(&self, name: &str) -> Result<&[String], SetupError> {
        self.lookup(name)
            .map_err(|why| SetupError::Config(format!("-g {name}: {why}")))
    }

    /// The hosts of group `name`, or why there are none.
    fn lookup(&self, name: &str) -> Result<&[String], String> {
        match (&self.path, self.groups.get(name)) {
            (_, Some(hosts)) => Ok(hosts),
            (None, None) => Err(format!(
                "there is no inventory; write the group in $WIRESH_HOME/{INVENTORY_FILE} \
                 (or pass --inventory FILE), e.g. [groups] {name} = \"web[01-20]\""
            )),
            (Some(path), None) => {
                let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
                Err(format!(
                    "no such group {name} in {} (groups: {})",
                    path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }

    /// The settings for host `name` (empty when it has none).
    pub fn host(&self, name: &str) -> HostSettings {
        self.hosts.get(name).cloned().unwrap_or_default()
    }
}

/// `@group` in a host list (`-H @web`, `-x @db`) is an inventory group.
impl hostlist::Groups for Inventory {
    fn group(&self, name: &str) -> Result<Vec<String>, String> {
        self.lookup(name).map(<[String]>::to_vec)
    }
}

/// A fingerprint as `wiresh serve` prints it: `sha256:` and 64 hex digits.
fn check_fingerprint(f: &str) -> Result<(), String> {
    let hex = f.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "fingerprint {f:?} is not sha256: and 64 hex digits, as `wiresh serve` prints it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, String> {
        Inventory::parse(text, Path::new("/inv/hosts.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn groups_and_settings() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let inv = parse(&format!(
            r#"
            [groups]
            web = ["web[01-03]", "canary"]
            db = "db[1-2]"

            [hosts."web[01-03]"]
            port = 7900
            token_file = "tokens/web"

            [hosts.web02]
            fingerprint = "{fp}"
            address = "10.1.2.3"
            "#
        ))
        .unwrap();
        assert_eq!(
            inv.group("web").unwrap(),
            ["web01", "web02", "web03", "canary"]
        );
        assert_eq!(inv.group("db").unwrap(), ["db1", "db2"]);
        let web02 = inv.host("web02");
        assert_eq!(web02.port, Some(7900));
        assert_eq!(web02.token_file, Some(PathBuf::from("/inv/tokens/web")));
        assert_eq!(web02.fingerprint, Some(fp));
        assert_eq!(web02.address.as_deref(), Some("10.1.2.3"));
        assert_eq!(inv.host("canary"), HostSettings::default());
        let err = inv.group("nope").unwrap_err().to_string();
        assert!(err.contains("groups: db, web"), "{err}");
    }

    #[test]
    fn mistakes_are_explained() {
        let err = parse("[hosts.a]\nprot = 1\n").unwrap_err();
        assert!(err.contains("unknown field `prot`"), "{err}");
        let err = parse("[groups]\nweb = \"web[3-1]\"\n").unwrap_err();
        assert!(
            err.contains("group \"web\"") && err.contains("before its start"),
            "{err}"
        );
        let err = parse("[hosts.a]\nfingerprint = \"abc\"\n").unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = parse("[hosts.\"a[1-2]\"]\nport = 1\n[hosts.a2]\nport = 2\n").unwrap_err();
        assert!(err.contains("gets `port` from both"), "{err}");
        let err = Inventory::default().group("web").unwrap_err().to_string();
        assert!(err.contains("there is no inventory"), "{err}");
        assert!(parse("not toml [").is_err());
    }

    #[test]
    fn a_missing_default_inventory_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(INVENTORY_FILE);
        assert!(Inventory::load(&missing, false).unwrap().path.is_none());
        assert!(Inventory::load(&missing, true).is_err());
    }
}
