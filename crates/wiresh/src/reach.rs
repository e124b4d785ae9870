//! How to reach a host: the one endpoint builder, used by `wiresh exec`,
//! `shell`, `put` and `get` on one host and on many, and by the library's
//! users (the Python package). What the caller gives ([`Reach`]: the
//! command line's flags, or a function's arguments) goes over what the
//! client settings say for the host ([`crate::inventory`]), which goes
//! over the wiresh home's defaults:
//!
//! | what | from, first found |
//! |---|---|
//! | the host | given; `$WIRESH_HOST`; `[defaults] host`; `127.0.0.1` |
//! | address | the host's `address`; its name |
//! | port | named with the host (`HOST:PORT`); given (`-p`); the host's `port`; `[defaults] port`; 7878 |
//! | token | given; `--token-file`; the host's `token-file`; `$WIRESH_TOKEN`; `[defaults] token-file`; the home's `token` |
//! | client key | given (`-i`); the host's `key`; `[defaults] key`; the home's `client.key` if it exists |
//! | fingerprint | given (`--fingerprint`); the host's `fingerprint`; `known_hosts` (pinned on first use) |
//!
//! A key of `none` (or `/dev/null`) presents no key; with no token found,
//! a key alone is presented (enough for a server that knows it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wiresh_proto::{Secret, DEFAULT_PORT};

use crate::addr::Target;
use crate::auth::{self, TOKEN_ENV};
use crate::client::{Endpoint, Pinning, Security, CONNECT_TIMEOUT};
use crate::error::SetupError;
use crate::home::wiresh_home;
use crate::hostlist;
use crate::inventory::{HostSettings, Inventory, NO_KEY};
use crate::keys::{ClientKey, KEY_FILE};
use crate::tls::Fingerprint;

/// The host when none is given, by the command line, `$WIRESH_HOST` or
/// the settings: the server on this machine.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// The environment variable naming the host when none is given.
pub const HOST_ENV: &str = "WIRESH_HOST";

/// Name of the token file in `$WIRESH_HOME` (as [`auth`] reads it).
const TOKEN_FILE: &str = "token";

/// Name of the pinned fingerprints file in `$WIRESH_HOME`.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// Which settings file to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SettingsFile {
    /// The home's `client.toml` (and, for this release, `hosts.toml`).
    #[default]
    Home,
    /// This file (`--config FILE`).
    File(PathBuf),
    /// An inventory of earlier releases (`--inventory FILE`).
    Old(PathBuf),
}

/// What the caller gives; everything left `None` comes from the settings
/// and the home.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The host as the command line takes it (a name, an address,
    /// `HOST:PORT`, `[V6]:PORT`, a one-host list); the default host when
    /// `None`.
    pub host: Option<String>,
    /// The port of hosts that name none (`-p`), over their settings'.
    pub port: Option<u16>,
    /// The token itself (over every token file and `WIRESH_TOKEN`).
    pub token: Option<Secret>,
    /// A token file (`--token-file`).
    pub token_file: Option<PathBuf>,
    /// A client key file (`-i`); `none` or `/dev/null` for no key.
    pub key: Option<PathBuf>,
    /// The server's fingerprint, pinned in advance (`--fingerprint`).
    pub fingerprint: Option<String>,
    /// No TLS: for a loopback server started with `--allow-plaintext`.
    pub plaintext: bool,
    /// The wiresh home; `$WIRESH_HOME` (else `~/.wiresh`) when `None`.
    pub home: Option<PathBuf>,
    /// The settings file.
    pub settings: SettingsFile,
    /// Most time to connect and authenticate; [`CONNECT_TIMEOUT`] when `None`.
    pub connect_timeout: Option<Duration>,
}

impl Reach {
    /// The wiresh home these settings use.
    pub fn home(&self) -> Result<PathBuf, SetupError> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => wiresh_home(),
        }
    }
}

/// The endpoints of hosts, all found the same way: the settings read
/// once, each token file and key loaded once.
#[derive(Debug)]
pub struct Resolver {
    given: Reach,
    fingerprint: Option<Fingerprint>,
    home: PathBuf,
    inventory: Inventory,
    tokens: HashMap<Option<PathBuf>, Secret>,
    keys: HashMap<PathBuf, Arc<ClientKey>>,
}

impl Resolver {
    /// Reads the settings `given` names; a malformed fingerprint is a
    /// usage error here, before anything connects.
    pub fn new(given: Reach) -> Result<Resolver, SetupError> {
        let fingerprint = match &given.fingerprint {
            Some(text) => Some(
                text.parse()
                    .map_err(|e| SetupError::Usage(format!("--fingerprint: {e}")))?,
            ),
            None => None,
        };
        let home = given.home()?;
        let inventory = match &given.settings {
            SettingsFile::Home => Inventory::load_home(&home)?,
            SettingsFile::File(path) => Inventory::load(path)?,
            SettingsFile::Old(path) => Inventory::load_old(path)?,
        };
        Ok(Resolver {
            given,
            fingerprint,
            home,
            inventory,
            tokens: HashMap::new(),
            keys: HashMap::new(),
        })
    }

    /// The settings read (their groups resolve `@group` and `-g`).
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Whether a fingerprint was given (it pins one server).
    pub fn pins_one(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// The host when none is named: `$WIRESH_HOST`, else the settings'
    /// `[defaults] host`, else [`DEFAULT_HOST`].
    pub fn default_host(&self) -> String {
        std::env::var(HOST_ENV)
            .ok()
            .filter(|h| !h.trim().is_empty())
            .or_else(|| self.inventory.default_host().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_HOST.to_string())
    }

    /// The host `given.host` names (or the default host): exactly one.
    pub fn the_host(&self) -> Result<String, SetupError> {
        let list = self
            .given
            .host
            .clone()
            .unwrap_or_else(|| self.default_host());
        let names = hostlist::expand_with(&list, &self.inventory)
            .map_err(|e| SetupError::Usage(format!("{list}: {e}")))?;
        match <[String; 1]>::try_from(names) {
            Ok([name]) => Ok(name),
            Err(names) => Err(SetupError::Usage(format!(
                "{list} names {} hosts; connect to one at a time, or run on many at once",
                names.len()
            ))),
        }
    }

    /// Where host `name` (one host, as a host list expands) is: the
    /// address and port to connect to.
    pub fn target(&self, name: &str) -> Result<Target, SetupError> {
        let (target, _) = self.located(name)?;
        Ok(target)
    }

    /// The target of `name` and its own settings.
    fn located(&self, name: &str) -> Result<(Target, HostSettings), SetupError> {
        let bad = |e: crate::addr::AddrError| SetupError::Usage(format!("host {name}: {e}"));
        // Port 0 stands for "none named": no client connects to port 0.
        let named = Target::parse(name, 0).map_err(bad)?;
        let own = self
            .inventory
            .host(name)
            .or_else(|| self.inventory.host(&named.host))
            .cloned()
            .unwrap_or_default();
        let mut target = match &own.address {
            Some(address) => Target::parse(address, 0)
                .map_err(|e| SetupError::Config(format!("the address of host {name}: {e}")))?,
            None => named.clone(),
        };
        let defaults = self.inventory.defaults();
        target.port = [
            Some(named.port).filter(|p| *p != 0),
            self.given.port,
            own.port,
            Some(target.port).filter(|p| *p != 0),
            defaults.port,
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(DEFAULT_PORT);
        Ok((target, own))
    }

    /// The endpoint of host `name`.
    pub fn endpoint(&mut self, name: &str) -> Result<Endpoint, SetupError> {
        let (target, own) = self.located(name)?;
        let client_key = self.client_key(own.key.as_deref())?;
        let token = match self.token(own.token_file.as_deref()) {
            Ok(token) => token,
            // A key alone is enough for a server that knows it.
            Err(SetupError::NoToken { .. }) if client_key.is_some() => Secret::default(),
            Err(e) => return Err(e),
        };
        let security = if self.given.plaintext {
            if !target.is_loopback() {
                return Err(SetupError::Usage(format!(
                    "--plaintext is allowed only for a server on loopback, not {name} ({target}): \
                     the token and all data would cross the network unencrypted"
                )));
            }
            Security::Plaintext
        } else {
            let fingerprint = self.fingerprint.clone().or(own.fingerprint);
            Security::Tls(Pinning {
                known_hosts: self.home.join(KNOWN_HOSTS),
                fingerprint: fingerprint.map(|f| f.to_string()),
                client_key,
            })
        };
        Ok(Endpoint {
            target,
            token,
            security,
            connect_timeout: self.given.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            persist: own.persist.or(self.inventory.defaults().persist),
        })
    }

    /// The token: given; `--token-file`; the host's token file;
    /// `WIRESH_TOKEN`; the defaults' token file; the home's `token`.
    fn token(&mut self, own: Option<&Path>) -> Result<Secret, SetupError> {
        if let Some(token) = &self.given.token {
            return Ok(token.clone());
        }
        let file = self
            .given
            .token_file
            .as_deref()
            .or(own)
            .map(Path::to_path_buf);
        if file.is_none() {
            if let Ok(token) = std::env::var(TOKEN_ENV) {
                if !token.trim().is_empty() {
                    return Ok(Secret(token.trim().to_string()));
                }
            }
        }
        let file = file.or_else(|| self.inventory.defaults().token_file.clone());
        if let Some(token) = self.tokens.get(&file) {
            return Ok(token.clone());
        }
        let token = match &file {
            Some(path) => auth::read_token_file(path)?,
            None => {
                let path = self.home.join(TOKEN_FILE);
                auth::read_token_file(&path).map_err(|e| match e {
                    SetupError::File { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        SetupError::NoToken {
                            path: path.clone(),
                            env: TOKEN_ENV,
                        }
                    }
                    e => e,
                })?
            }
        };
        self.tokens.insert(file, token.clone());
        Ok(token)
    }

    /// The client key: given; the host's; the defaults'; the home's
    /// `client.key` when it exists. None with plaintext (keys need TLS),
    /// and for `none` or `/dev/null`.
    fn client_key(&mut self, own: Option<&Path>) -> Result<Option<Arc<ClientKey>>, SetupError> {
        if self.given.plaintext {
            return Ok(None);
        }
        let chosen = self
            .given
            .key
            .as_deref()
            .or(own)
            .or(self.inventory.defaults().key.as_deref())
            .map(Path::to_path_buf);
        let path = match chosen {
            Some(path) if is_no_key(&path) => return Ok(None),
            Some(path) => path,
            None => {
                let path = self.home.join(KEY_FILE);
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
        };
        if let Some(key) = self.keys.get(&path) {
            return Ok(Some(key.clone()));
        }
        let key = Arc::new(ClientKey::load(&path)?);
        self.keys.insert(path, key.clone());
        Ok(Some(key))
    }
}

/// Whether a key path asks for no key: `none` (as ssh's `IdentityFile
/// none`) or `/dev/null`.
pub fn is_no_key(path: &Path) -> bool {
    path == Path::new(NO_KEY) || path == Path::new("/dev/null")
}

/// The endpoint of the one host `reach` names (or the default host).
pub fn endpoint(reach: &Reach) -> Result<Endpoint, SetupError> {
    let mut resolver = Resolver::new(reach.clone())?;
    let name = resolver.the_host()?;
    resolver.endpoint(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let mut f = crate::home::create_private_file(&dir.path().join(name)).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
        dir
    }

    fn reach(home: &tempfile::TempDir, host: &str) -> Reach {
        Reach {
            host: Some(host.into()),
            home: Some(home.path().to_path_buf()),
            ..Reach::default()
        }
    }

    fn pinned(endpoint: &Endpoint) -> Option<String> {
        match &endpoint.security {
            Security::Tls(pin) => pin.fingerprint.clone(),
            Security::Plaintext => panic!("TLS by default"),
        }
    }

    #[test]
    fn a_host_takes_its_settings_under_what_is_given() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let home = home_with(&[
            ("token", "hometoken\n"),
            ("t1", "one\n"),
            (
                "client.toml",
                &format!(
                    "[defaults]\nport = 7000\n[hosts.\"build\"]\nport = 7979\nfingerprint = \"{fp}\"\n\
                     [hosts.web1]\naddress = \"127.0.0.2\"\ntoken-file = \"t1\"\n"
                ),
            ),
        ]);
        let e = endpoint(&reach(&home, "build")).unwrap();
        assert_eq!(e.target.to_string(), "build:7979");
        assert_eq!(e.token.expose(), "hometoken");
        assert_eq!(pinned(&e), Some(fp.clone()));
        assert_eq!(e.connect_timeout, CONNECT_TIMEOUT);
        let e = endpoint(&reach(&home, "build:1234")).unwrap();
        assert_eq!(e.target.to_string(), "build:1234");
        assert_eq!(pinned(&e), Some(fp), "build's settings, another port");
        let e = endpoint(&reach(&home, "other")).unwrap();
        assert_eq!(e.target.to_string(), "other:7000", "the defaults' port");
        assert_eq!(pinned(&e), None);
        let e = endpoint(&reach(&home, "web1")).unwrap();
        assert_eq!(e.target.to_string(), "127.0.0.2:7000");
        assert_eq!(e.token.expose(), "one");
        let given = Reach {
            port: Some(9),
            token: Some(Secret("given".into())),
            connect_timeout: Some(Duration::from_secs(1)),
            ..reach(&home, "build")
        };
        let e = endpoint(&given).unwrap();
        assert_eq!((e.target.port, e.token.expose()), (9, "given"));
        assert_eq!(e.connect_timeout, Duration::from_secs(1));
        let many = endpoint(&reach(&home, "web[1-2]")).unwrap_err();
        assert!(matches!(many, SetupError::Usage(_)));
        assert!(many.to_string().contains("names 2 hosts"), "{many}");
    }

    #[test]
    fn a_key_alone_is_enough_and_none_means_none() {
        let home = tempfile::tempdir().unwrap();
        let key_path = home.path().join("keys/k.key");
        ClientKey::generate(&key_path).unwrap();
        std::fs::write(
            home.path().join("client.toml"),
            "[hosts.k]\nkey = \"keys/k.key\"\n[hosts.n]\nkey = \"none\"\n",
        )
        .unwrap();
        if std::env::var_os(TOKEN_ENV).is_some() {
            return; // a token from the environment would be presented too
        }
        let key_of = |e: &Endpoint| match &e.security {
            Security::Tls(pin) => pin.client_key.as_ref().map(|k| k.path.clone()),
            Security::Plaintext => None,
        };
        let e = endpoint(&reach(&home, "k")).unwrap();
        assert_eq!(key_of(&e), Some(key_path.clone()));
        assert_eq!(e.token.expose(), "", "no token: the key alone");
        let err = endpoint(&reach(&home, "n")).unwrap_err().to_string();
        assert!(err.starts_with("no token found at "), "{err}");
        for none in ["none", "/dev/null"] {
            let given = Reach {
                key: Some(none.into()),
                token: Some(Secret("t".into())),
                ..reach(&home, "k")
            };
            assert_eq!(key_of(&endpoint(&given).unwrap()), None, "{none}");
        }
    }

    #[test]
    fn mistakes_say_what_to_do() {
        let home = home_with(&[]);
        if std::env::var_os(TOKEN_ENV).is_none() {
            let none = endpoint(&reach(&home, "h")).unwrap_err().to_string();
            assert!(none.starts_with("no token found at "), "{none}");
        }
        let remote = Reach {
            plaintext: true,
            token: Some(Secret("t".into())),
            ..reach(&home, "example.org")
        };
        let err = endpoint(&remote).unwrap_err().to_string();
        assert!(
            err.starts_with("--plaintext is allowed only for a server on loopback"),
            "{err}"
        );
        let err = endpoint(&reach(&home, "h:x")).unwrap_err().to_string();
        assert!(err.contains("bad port"), "{err}");
        let bad = Reach {
            fingerprint: Some("sha256:12".into()),
            ..reach(&home, "h")
        };
        let err = Resolver::new(bad).unwrap_err();
        assert!(matches!(err, SetupError::Usage(_)), "{err:?}");
        assert!(err.to_string().starts_with("--fingerprint: "), "{err}");
    }
}
