//! How to reach one host: the host as the command line takes it (a name,
//! an address, `HOST:PORT`, a name from the host settings), plus what was
//! given explicitly, resolved into an [`Endpoint`] with everything else
//! taken from `$WIRESH_HOME` exactly as `wiresh exec -H HOST` finds it:
//! the token (`--token-file`, `WIRESH_TOKEN`, `token`), the pinned
//! fingerprints (`known_hosts`), the client key (`client.key`), and the
//! host's own settings (`hosts.toml`, else `client.toml`).
//!
//! The library's users (the Python package, scripts) call [`endpoint`]; the
//! binary's `ConnectArgs` can too, so that both find a host the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wiresh_proto::{Secret, DEFAULT_PORT};

use crate::addr::Target;
use crate::auth::{self, TOKEN_ENV};
use crate::client::config::{ClientConfig, HostDefaults, CLIENT_CONFIG};
use crate::client::{Endpoint, Pinning, Security};
use crate::error::SetupError;
use crate::home::wiresh_home;
use crate::hostlist;
use crate::inventory::{HostSettings, Inventory, INVENTORY_FILE};
use crate::keys::{ClientKey, KEY_FILE};

/// The host given when none is: the server on this machine.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Name of the token file in `$WIRESH_HOME` (as [`auth`] reads it).
const TOKEN_FILE: &str = "token";

/// Name of the pinned fingerprints file in `$WIRESH_HOME`.
pub const KNOWN_HOSTS: &str = "known_hosts";

/// What the caller gives; everything left `None` comes from the home.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// The host as `-H` takes it; [`DEFAULT_HOST`] when `None`.
    pub host: Option<String>,
    /// The port, over the one the host names or its settings give.
    pub port: Option<u16>,
    /// The token itself (over `token_file`, `WIRESH_TOKEN` and the home's).
    pub token: Option<Secret>,
    /// A token file (`--token-file`).
    pub token_file: Option<PathBuf>,
    /// A client key file (`--key`).
    pub key: Option<PathBuf>,
    /// The server's fingerprint, pinned in advance (`--fingerprint`).
    pub fingerprint: Option<String>,
    /// No TLS: for a loopback server started with `--allow-plaintext`.
    pub plaintext: bool,
    /// The wiresh home; `$WIRESH_HOME` (else `~/.wiresh`) when `None`.
    pub home: Option<PathBuf>,
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

/// The endpoint of the one host `reach` names. A host with settings in
/// `hosts.toml` (or written as a one-host list) takes them from there, as
/// the fan-out does; any other takes `client.toml`'s.
pub fn endpoint(reach: &Reach) -> Result<Endpoint, SetupError> {
    let home = reach.home()?;
    let host = reach.host.as_deref().unwrap_or(DEFAULT_HOST).trim();
    let names =
        hostlist::expand(host).map_err(|e| SetupError::Config(format!("-H {host}: {e}")))?;
    let [name] = names.as_slice() else {
        return Err(SetupError::Config(format!(
            "{host} names {} hosts; connect to one at a time, or run on many at once",
            names.len()
        )));
    };
    let inventory = Inventory::load(&home.join(INVENTORY_FILE), false)?;
    let settings = inventory.host(name);
    if name == host && settings == HostSettings::default() {
        plain(reach, &home, host)
    } else {
        from_inventory(reach, &home, name, settings)
    }
}

/// A host named as it always was: `client.toml`'s defaults apply.
fn plain(reach: &Reach, home: &Path, host: &str) -> Result<Endpoint, SetupError> {
    // Port 0 stands for "none given": no client connects to port 0.
    let mut target =
        Target::parse(host, 0).map_err(|e| SetupError::Config(format!("-H {host}: {e}")))?;
    let config_path = home.join(CLIENT_CONFIG);
    let defaults = match config_path.exists() {
        true => ClientConfig::load(&config_path, home)?
            .host(&target.host)
            .cloned()
            .unwrap_or_default(),
        false => HostDefaults::default(),
    };
    if target.port == 0 {
        target.port = defaults.port.unwrap_or(DEFAULT_PORT);
    }
    if let Some(port) = reach.port {
        target.port = port;
    }
    let client_key = client_key(reach, home, defaults.key.as_deref())?;
    let token = match token(reach, home, reach.token_file.as_deref()) {
        Ok(token) => token,
        // A key alone is enough for a server that knows it.
        Err(SetupError::NoToken { .. }) if client_key.is_some() => Secret::default(),
        Err(e) => return Err(e),
    };
    let fingerprint = reach.fingerprint.clone().or(defaults.fingerprint);
    let refusal = format!("a server on loopback, not {target}");
    let security = security(reach, home, &target, fingerprint, client_key, &refusal)?;
    Ok(Endpoint {
        target,
        token,
        security,
    })
}

/// A host with settings in `hosts.toml`: the inventory's address, port,
/// token file and fingerprint, under what was given.
fn from_inventory(
    reach: &Reach,
    home: &Path,
    name: &str,
    settings: HostSettings,
) -> Result<Endpoint, SetupError> {
    let address = settings.address.as_deref().unwrap_or(name);
    let mut target = Target::parse(address, settings.port.unwrap_or(DEFAULT_PORT))
        .map_err(|e| SetupError::Config(format!("host {name}: {e}")))?;
    if let Some(port) = reach.port {
        target.port = port;
    }
    let token_file = reach.token_file.clone().or(settings.token_file);
    let token = token(reach, home, token_file.as_deref())?;
    let client_key = client_key(reach, home, None)?;
    let fingerprint = reach.fingerprint.clone().or(settings.fingerprint);
    let refusal = format!("servers on loopback, not {name} ({target})");
    let security = security(reach, home, &target, fingerprint, client_key, &refusal)?;
    Ok(Endpoint {
        target,
        token,
        security,
    })
}

/// TLS pinned through the home's `known_hosts` (or `fingerprint`), or
/// plaintext where that is allowed (`refusal` says where it is not, in
/// the words of the path taken).
fn security(
    reach: &Reach,
    home: &Path,
    target: &Target,
    fingerprint: Option<String>,
    client_key: Option<Arc<ClientKey>>,
    refusal: &str,
) -> Result<Security, SetupError> {
    if !reach.plaintext {
        return Ok(Security::Tls(Pinning {
            known_hosts: home.join(KNOWN_HOSTS),
            fingerprint,
            client_key,
        }));
    }
    if !target.is_loopback() {
        return Err(SetupError::Config(format!(
            "--plaintext is allowed only for {refusal}: the token and all data would cross \
             the network unencrypted"
        )));
    }
    Ok(Security::Plaintext)
}

/// The token: given, else from `token_file`, else `WIRESH_TOKEN`, else the
/// home's token file (which the server on this account created).
fn token(reach: &Reach, home: &Path, token_file: Option<&Path>) -> Result<Secret, SetupError> {
    if let Some(token) = &reach.token {
        return Ok(token.clone());
    }
    if let Some(path) = token_file {
        return auth::read_token_file(path);
    }
    if reach.home.is_none() {
        return auth::client_token(None);
    }
    // An explicit home: its token file, with the environment's still first.
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        if !token.trim().is_empty() {
            return Ok(Secret(token.trim().to_string()));
        }
    }
    let path = home.join(TOKEN_FILE);
    auth::read_token_file(&path).map_err(|e| match e {
        SetupError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            SetupError::NoToken {
                path: path.clone(),
                env: TOKEN_ENV,
            }
        }
        e => e,
    })
}

/// The client key to present: given, else the host's `key` in
/// client.toml, else the home's `client.key` when it exists. None with
/// plaintext: keys need TLS.
fn client_key(
    reach: &Reach,
    home: &Path,
    configured: Option<&Path>,
) -> Result<Option<Arc<ClientKey>>, SetupError> {
    if reach.plaintext {
        return Ok(None);
    }
    let path = match reach.key.as_deref().or(configured) {
        Some(path) => path.to_path_buf(),
        None => {
            let path = home.join(KEY_FILE);
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    Ok(Some(Arc::new(ClientKey::load(&path)?)))
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
    fn a_plain_host_takes_client_toml_and_the_home_token() {
        let fp = format!("sha256:{}", "ab".repeat(32));
        let home = home_with(&[
            ("token", "hometoken\n"),
            (
                "client.toml",
                &format!("[hosts.\"build\"]\nport = 7979\nfingerprint = \"{fp}\"\n"),
            ),
        ]);
        let e = endpoint(&reach(&home, "build")).unwrap();
        assert_eq!(e.target.to_string(), "build:7979");
        assert_eq!(e.token.expose(), "hometoken");
        assert_eq!(pinned(&e), Some(fp));
        let e = endpoint(&reach(&home, "build:1234")).unwrap();
        assert_eq!(e.target.to_string(), "build:1234");
        let e = endpoint(&reach(&home, "other")).unwrap();
        assert_eq!(e.target.to_string(), "other:7878");
        assert_eq!(pinned(&e), None);
        let given = Reach {
            port: Some(9),
            token: Some(Secret("given".into())),
            ..reach(&home, "build")
        };
        let e = endpoint(&given).unwrap();
        assert_eq!((e.target.port, e.token.expose()), (9, "given"));
    }

    #[test]
    fn a_host_in_hosts_toml_takes_its_settings() {
        let home = home_with(&[
            ("t1", "one\n"),
            (
                "hosts.toml",
                "[hosts.web1]\naddress = \"127.0.0.2\"\nport = 9000\ntoken_file = \"t1\"\n",
            ),
            ("client.toml", "[hosts.\"web1\"]\nport = 1\n"),
        ]);
        let e = endpoint(&reach(&home, "web1")).unwrap();
        assert_eq!(e.target.to_string(), "127.0.0.2:9000");
        assert_eq!(e.token.expose(), "one");
        let many = endpoint(&reach(&home, "web[1-2]")).unwrap_err().to_string();
        assert!(many.contains("names 2 hosts"), "{many}");
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
        assert!(err.starts_with("-H h:x: bad port"), "{err}");
    }
}
