//! Which hosts a fan-out runs on: `-H` host lists, `-g` inventory groups,
//! minus `-x` exclusions; and how to reach each one, from the command
//! line's settings and the host's own in the inventory.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use wiresh_proto::Secret;

use super::Host;
use crate::addr::Target;
use crate::auth;
use crate::client::{Endpoint, Pinning, Security};
use crate::error::SetupError;
use crate::hostlist;
use crate::inventory::Inventory;

/// The hosts asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `-H` values: host lists (`web[01-20],db1`, `@web`).
    pub hosts: Vec<String>,
    /// `-g` values: inventory groups.
    pub groups: Vec<String>,
    /// `-x` values: host lists to leave out.
    pub exclude: Vec<String>,
}

impl Selection {
    /// The selected host names, in the order given, each once.
    pub fn names(&self, inventory: &Inventory) -> Result<Vec<String>, SetupError> {
        let expand = |flag: &str, list: &str| {
            hostlist::expand_with(list, inventory)
                .map_err(|e| SetupError::Config(format!("{flag} {list}: {e}")))
        };
        let mut names = Vec::new();
        for list in &self.hosts {
            names.extend(expand("-H", list)?);
        }
        for group in &self.groups {
            names.extend(inventory.group(group)?.iter().cloned());
        }
        let mut excluded = HashSet::new();
        for list in &self.exclude {
            excluded.extend(expand("-x", list)?);
        }
        let mut seen = HashSet::new();
        names.retain(|n| !excluded.contains(n) && seen.insert(n.clone()));
        if names.is_empty() {
            return Err(SetupError::Config(
                "no hosts left to run on: -x excludes every host selected".into(),
            ));
        }
        Ok(names)
    }
}

/// The command line's connection settings, for every host.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `--token-file`: overrides every host's own.
    pub token_file: Option<PathBuf>,
    /// `--fingerprint`: only for a single host.
    pub fingerprint: Option<String>,
    /// `--plaintext`: only for hosts on loopback.
    pub plaintext: bool,
    /// Where TLS pins are kept.
    pub known_hosts: PathBuf,
    /// The port of hosts that name none.
    pub port: u16,
    /// The client key presented to every host (TLS only).
    pub client_key: Option<std::sync::Arc<crate::keys::ClientKey>>,
}

/// Each named host with its endpoint: the inventory's settings for it,
/// overridden by the command line's.
pub fn hosts(
    names: &[String],
    inventory: &Inventory,
    defaults: &Defaults,
) -> Result<Vec<Host>, SetupError> {
    if defaults.fingerprint.is_some() && names.len() > 1 {
        return Err(SetupError::Config(format!(
            "--fingerprint pins one server, but {} hosts are selected; put each host's \
             fingerprint in the inventory ([hosts.NAME] fingerprint = \"sha256:...\")",
            names.len()
        )));
    }
    let mut tokens: HashMap<Option<PathBuf>, Secret> = HashMap::new();
    names
        .iter()
        .map(|name| {
            let settings = inventory.host(name);
            let address = settings.address.as_deref().unwrap_or(name);
            let target = Target::parse(address, settings.port.unwrap_or(defaults.port))
                .map_err(|e| SetupError::Config(format!("host {name}: {e}")))?;
            let token_file = defaults.token_file.clone().or(settings.token_file);
            let token = match tokens.get(&token_file) {
                Some(token) => token.clone(),
                None => {
                    let token = auth::client_token(token_file.as_deref())?;
                    tokens.insert(token_file, token.clone());
                    token
                }
            };
            let security = if defaults.plaintext {
                if !target.is_loopback() {
                    return Err(SetupError::Config(format!(
                        "--plaintext is allowed only for servers on loopback, not {name} ({target}): \
                         the token and all data would cross the network unencrypted"
                    )));
                }
                Security::Plaintext
            } else {
                Security::Tls(Pinning {
                    known_hosts: defaults.known_hosts.clone(),
                    fingerprint: defaults.fingerprint.clone().or(settings.fingerprint),
                    client_key: defaults.client_key.clone(),
                })
            };
            Ok(Host {
                name: name.clone(),
                endpoint: Endpoint {
                    target,
                    token,
                    security,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn selection(hosts: &[&str], groups: &[&str], exclude: &[&str]) -> Selection {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Selection {
            hosts: own(hosts),
            groups: own(groups),
            exclude: own(exclude),
        }
    }

    #[test]
    fn lists_groups_and_exclusions() {
        let inv = Inventory::parse(
            "[groups]\nweb = \"web[1-4]\"\ndb = [\"db1\", \"web2\"]\n",
            Path::new("/i/hosts.toml"),
        )
        .unwrap();
        let names = |s: Selection| s.names(&inv).map_err(|e| e.to_string());
        assert_eq!(
            names(selection(&["a,b", "c:7900"], &[], &[])).unwrap(),
            ["a", "b", "c:7900"]
        );
        assert_eq!(
            names(selection(&["x"], &["web", "db"], &["web[3-4]"])).unwrap(),
            ["x", "web1", "web2", "db1"]
        );
        let err = names(selection(&["a"], &[], &["a"])).unwrap_err();
        assert!(err.contains("excludes every host"), "{err}");
        let err = names(selection(&["w[2-1]"], &[], &[])).unwrap_err();
        assert!(err.starts_with("-H w[2-1]: "), "{err}");
    }

    #[test]
    fn settings_come_from_the_inventory_and_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let fp = format!("sha256:{}", "cd".repeat(32));
        for (file, token) in [("t1", "one"), ("t2", "two")] {
            let mut f = crate::home::create_private_file(&dir.path().join(file)).unwrap();
            std::io::Write::write_all(&mut f, token.as_bytes()).unwrap();
        }
        let inv = Inventory::parse(
            &format!(
                "[hosts.\"h[1-2]\"]\nport = 9000\ntoken_file = \"t1\"\n\
                 [hosts.h2]\naddress = \"127.0.0.2\"\nfingerprint = \"{fp}\"\n"
            ),
            &dir.path().join("hosts.toml"),
        )
        .unwrap();
        let mut defaults = Defaults {
            token_file: None,
            fingerprint: None,
            plaintext: false,
            known_hosts: dir.path().join("known_hosts"),
            port: 7878,
            client_key: None,
        };
        let names: Vec<String> = ["h1", "h2", "h3:1"].map(String::from).into();
        let hosts = hosts(&names[..2], &inv, &defaults).unwrap();
        assert_eq!(hosts[0].endpoint.target.to_string(), "h1:9000");
        assert_eq!(hosts[1].endpoint.target.to_string(), "127.0.0.2:9000");
        assert_eq!(hosts[1].name, "h2");
        assert_eq!(hosts[0].endpoint.token.expose(), "one");
        let Security::Tls(pin) = &hosts[1].endpoint.security else {
            panic!("TLS by default")
        };
        assert_eq!(pin.fingerprint.as_deref(), Some(fp.as_str()));

        defaults.token_file = Some(dir.path().join("t2"));
        let h = super::hosts(&names[..1], &inv, &defaults).unwrap();
        assert_eq!(h[0].endpoint.token.expose(), "two", "the command line wins");

        defaults.plaintext = true;
        let err = super::hosts(&names[..1], &inv, &defaults).unwrap_err();
        assert!(
            err.to_string().contains("only for servers on loopback"),
            "{err}"
        );

        defaults.plaintext = false;
        defaults.fingerprint = Some(fp);
        let err = super::hosts(&names, &inv, &defaults).unwrap_err();
        assert!(err.to_string().contains("pins one server"), "{err}");
    }
}
