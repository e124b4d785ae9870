//! Which servers the connection flags name: one endpoint, or the hosts of
//! a fan-out; the one conversion of `-H`, `-g`, `-x`, the inventory,
//! client.toml, the token and the pinning into the library's endpoints.
//!
//! One plain host keeps the single-host commands exactly as they were;
//! the fan-out runs when more than one host is selected, or when a
//! fan-out display (`--gather`, `--diff`, `--json`, `--outdir`) is asked for.

use std::sync::Arc;

use anyhow::{Context, Result};
use wiresh::client::config::{ClientConfig, HostDefaults};
use wiresh::client::{Endpoint, Pinning, Security, Target};
use wiresh::error::SetupError;
use wiresh::fanout::{select, Host, Options};
use wiresh::inventory::{Inventory, INVENTORY_FILE};
use wiresh::keys::{self, ClientKey};
use wiresh::{auth, home};
use wiresh_proto::{Secret, DEFAULT_PORT};

use crate::args::ConnectArgs;

/// The hosts selected.
enum Selected {
    /// One host given as it always was (or none: the default host): the
    /// single-host command runs exactly as before.
    Plain,
    /// One host, with settings from the inventory.
    One(Box<Host>),
    /// Many hosts (or one, with a fan-out display).
    Many(Vec<Host>),
}

impl ConnectArgs {
    /// The one server to connect to, or the hosts of a fan-out;
    /// `fanout_display` forces the fan-out.
    pub fn endpoint_or_hosts(&self, fanout_display: bool) -> Result<Result<Endpoint, Vec<Host>>> {
        Ok(match self.selected(fanout_display)? {
            Selected::Plain => Ok(self.endpoint()?),
            Selected::One(host) => Ok(host.endpoint),
            Selected::Many(hosts) => Err(hosts),
        })
    }

    /// The server, its token and how to protect the connection.
    fn endpoint(&self) -> Result<Endpoint> {
        let (target, defaults) = self.target()?;
        let client_key = self.client_key(&defaults)?;
        let token = match auth::client_token(self.token_file.as_deref()) {
            Ok(token) => token,
            // A key alone is enough for a server that knows it.
            Err(SetupError::NoToken { .. }) if client_key.is_some() => Secret::default(),
            Err(e) => return Err(e.into()),
        };
        let security = if self.plaintext {
            anyhow::ensure!(
                target.is_loopback(),
                "--plaintext is allowed only for a server on loopback, not {target}: \
                 the token and all data would cross the network unencrypted"
            );
            Security::Plaintext
        } else {
            Security::Tls(Pinning {
                known_hosts: home::wiresh_home()?.join("known_hosts"),
                fingerprint: self.fingerprint.clone().or(defaults.fingerprint),
                client_key,
            })
        };
        Ok(Endpoint {
            target,
            token,
            security,
        })
    }

    /// The client key to present: `--key`, else the host's `key` in
    /// client.toml, else `$WIRESH_HOME/client.key` when it exists. None with
    /// `--plaintext`: keys need TLS.
    fn client_key(&self, defaults: &HostDefaults) -> Result<Option<Arc<ClientKey>>> {
        if self.plaintext {
            return Ok(None);
        }
        let path = match self.key.as_ref().or(defaults.key.as_ref()) {
            Some(path) => path.clone(),
            None => {
                let path = keys::default_key_path()?;
                if !path.exists() {
                    return Ok(None);
                }
                path
            }
        };
        Ok(Some(Arc::new(ClientKey::load(&path)?)))
    }

    /// The modern server to connect to, and what client.toml says about
    /// it (its port applies when -H gives none).
    fn target(&self) -> Result<(Target, HostDefaults)> {
        let host = self.hosts.first().map_or("127.0.0.1", String::as_str);
        // Port 0 stands for "none given": no client connects to port 0.
        let mut target = Target::parse(host, 0).with_context(|| format!("-H {host}"))?;
        let defaults = ClientConfig::load_default()?
            .host(&target.host)
            .cloned()
            .unwrap_or_default();
        if target.port == 0 {
            target.port = defaults.port.unwrap_or(DEFAULT_PORT);
        }
        Ok((target, defaults))
    }

    /// The legacy server to connect to, as `HOST[:PORT]`; refuses many
    /// hosts.
    pub fn legacy_host(&self) -> Result<&str> {
        let many = self.hosts.len() > 1
            || !self.select.groups.is_empty()
            || self.hosts.iter().any(|h| h.contains(','));
        anyhow::ensure!(
            !many,
            "--legacy talks to one server at a time; run it once per host"
        );
        Ok(self.hosts.first().map_or("127.0.0.1", String::as_str))
    }

    /// Which hosts the flags select; `fanout_display` forces the fan-out.
    fn selected(&self, fanout_display: bool) -> Result<Selected> {
        let select = &self.select;
        if self.hosts.len() <= 1 && select.groups.is_empty() && !fanout_display {
            // `-x` alone, or with one host, is still a selection to check.
            if select.exclude.is_empty() && select.inventory.is_none() {
                let plain = match self.hosts.first() {
                    None => true,
                    Some(h) => wiresh::hostlist::expand(h).is_ok_and(|names| names == [h.trim()]),
                };
                if plain && !self.in_default_inventory()? {
                    return Ok(Selected::Plain);
                }
            }
        }
        let inventory = self.inventory()?;
        let mut selection = select::Selection {
            hosts: self.hosts.clone(),
            groups: select.groups.clone(),
            exclude: select.exclude.clone(),
        };
        if selection.hosts.is_empty() && selection.groups.is_empty() {
            selection.hosts.push("127.0.0.1".into());
        }
        let names = selection.names(&inventory)?;
        let defaults = select::Defaults {
            token_file: self.token_file.clone(),
            fingerprint: self.fingerprint.clone(),
            plaintext: self.plaintext,
            known_hosts: home::wiresh_home()?.join("known_hosts"),
            port: DEFAULT_PORT,
            client_key: self.client_key(&Default::default())?,
        };
        let mut hosts = select::hosts(&names, &inventory, &defaults)?;
        Ok(match hosts.len() {
            1 if !fanout_display => Selected::One(Box::new(hosts.remove(0))),
            _ => Selected::Many(hosts),
        })
    }

    /// The inventory named by `--inventory`, else the default one if it exists.
    fn inventory(&self) -> Result<Inventory> {
        Ok(match &self.select.inventory {
            Some(path) => Inventory::load(path, true)?,
            None => Inventory::load(&home::wiresh_home()?.join(INVENTORY_FILE), false)?,
        })
    }

    /// Whether the one host given has settings in the default inventory.
    fn in_default_inventory(&self) -> Result<bool> {
        let Some(host) = self.hosts.first() else {
            return Ok(false);
        };
        let path = match home::wiresh_home() {
            Ok(home) => home.join(INVENTORY_FILE),
            Err(_) => return Ok(false),
        };
        if !path.exists() {
            return Ok(false);
        }
        let inventory = Inventory::load(&path, false)?;
        Ok(inventory.host(host.trim()) != Default::default())
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
