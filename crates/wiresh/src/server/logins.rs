//! Who is logged in, with which credentials, so that a reload can close
//! the connections whose credentials it no longer accepts.
//!
//! An operator removes a key from `authorized_clients` (or replaces the
//! token) because it leaked: the connections it opened must not run on. A
//! session registers its [`Login`] once authenticated; after every reload
//! the server checks each registered login against the new settings
//! ([`Logins::revoke_unaccepted`]), and a connection whose login they no
//! longer accept is wound down as in a shutdown: its running command gets
//! the shutdown grace, then the connection ends with `auth_failed` saying
//! why ([`Revocation`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use wiresh_proto::Secret;

use super::clients::AuthMode;
use super::config::ServerConfig;

/// The credentials a connection logged in with: a client key, the token,
/// or both (`--auth both`). The token is kept as a hash only.
#[derive(Debug, Clone)]
pub(super) struct Login {
    /// The fingerprint of the client key it logged in with.
    pub key: Option<String>,
    /// The BLAKE3 of the token, when the login rested on it.
    token: Option<blake3::Hash>,
}

impl Login {
    /// A login by client key; `token` too when the mode asked for both.
    pub fn by_key(fingerprint: &str, token: Option<&Secret>) -> Login {
        Login {
            key: Some(fingerprint.to_string()),
            token: token.map(hash),
        }
    }

    /// A login by the token.
    pub fn by_token(token: &Secret) -> Login {
        Login {
            key: None,
            token: Some(hash(token)),
        }
    }

    /// Why `config` would not let this login in now; `None` if it would.
    pub fn refused_by(&self, config: &ServerConfig) -> Option<String> {
        let mode = config.auth;
        let token_ok = || self.token == Some(hash(&config.token));
        match &self.key {
            Some(fp) if !mode.uses_keys() => Some(format!(
                "the server no longer accepts client keys (--auth {mode}); the key {fp} was \
                 revoked at a reload"
            )),
            Some(fp) if config.clients.get(fp).is_none() => Some(format!(
                "the client key {fp} is no longer authorized on this server (removed from \
                 authorized_clients at a reload)"
            )),
            Some(_) if mode == AuthMode::Both && self.token.is_none() => Some(
                "the server now needs the token as well as the client key (--auth both, since \
                 a reload)"
                    .to_string(),
            ),
            Some(_) if mode == AuthMode::Both && !token_ok() => Some(
                "the token this connection presented was replaced at a reload (--auth both)"
                    .to_string(),
            ),
            Some(_) => None,
            None if !mode.uses_token() || mode == AuthMode::Both => Some(format!(
                "the server no longer accepts the token alone (--auth {mode}, since a reload)"
            )),
            None if !token_ok() => {
                Some("the token this connection logged in with was replaced at a reload".into())
            }
            None => None,
        }
    }
}

fn hash(token: &Secret) -> blake3::Hash {
    blake3::hash(token.expose().as_bytes())
}

/// What a session holds to learn that its login was revoked: the reason,
/// once there is one. Its shutdown token is cancelled at the same moment.
#[derive(Debug, Clone, Default)]
pub(super) struct Revocation(Arc<OnceLock<String>>);

impl Revocation {
    /// Why the login was revoked, if it was.
    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// One registered session.
#[derive(Debug)]
struct Live {
    peer: SocketAddr,
    identity: String,
    login: Login,
    shutdown: CancellationToken,
    revocation: Revocation,
}

/// The logins of the open connections.
#[derive(Debug)]
pub(super) struct Logins {
    live: Mutex<HashMap<u64, Live>>,
    next: AtomicU64,
    /// The settings in force (the newest reload's).
    settings: watch::Receiver<Arc<ServerConfig>>,
}

/// A session's entry, removed when dropped.
#[derive(Debug)]
pub(super) struct Registration {
    logins: Arc<Logins>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.logins.lock().remove(&self.id);
    }
}

impl Logins {
    /// No logins yet, under the settings `settings` holds.
    pub fn new(settings: watch::Receiver<Arc<ServerConfig>>) -> Arc<Logins> {
        Arc::new(Logins {
            live: Mutex::default(),
            next: AtomicU64::new(0),
            settings,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session that logged in as `identity` with `login`; a
    /// revocation cancels `shutdown` and says why in `revocation`. A login
    /// the settings in force refuse already (a reload came while it was
    /// authenticating, under the settings of before) is revoked at once.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        identity: &str,
        login: Login,
        shutdown: CancellationToken,
        revocation: Revocation,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let live = Live {
            peer,
            identity: identity.to_string(),
            login,
            shutdown,
            revocation,
        };
        // Under the lock, as a reload's check: a login is either seen by
        // the check or checks itself against the settings it installed.
        let mut all = self.lock();
        let current = self.settings.borrow().clone();
        if let Some(why) = live.login.refused_by(&current) {
            revoke(&live, why);
        }
        all.insert(id, live);
        Registration {
            logins: self.clone(),
            id,
        }
    }

    /// After a reload: winds down every connection whose login the new
    /// settings refuse; returns how many.
    pub fn revoke_unaccepted(&self) -> usize {
        let all = self.lock();
        let current = self.settings.borrow().clone();
        let mut revoked = 0;
        for live in all.values() {
            if live.revocation.reason().is_some() {
                continue;
            }
            if let Some(why) = live.login.refused_by(&current) {
                revoke(live, why);
                revoked += 1;
            }
        }
        revoked
    }
}

fn revoke(live: &Live, why: String) {
    warn!(
        peer = %live.peer,
        client = %live.identity,
        "closing the connection: {why}; a running command gets the shutdown grace"
    );
    let _ = live.revocation.0.set(why);
    live.shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::clients::AuthorizedClients;

    fn config(mode: AuthMode, token: &str, keys: &str) -> ServerConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_clients");
        std::fs::write(&path, keys).unwrap();
        ServerConfig {
            auth: mode,
            clients: Arc::new(AuthorizedClients::load(&path).unwrap()),
            ..ServerConfig::new(Secret(token.into()))
        }
    }

    const ALICE: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000a11";

    #[test]
    fn a_login_is_refused_once_its_credentials_are_gone() {
        let token = Secret("t".repeat(32));
        let with_alice = format!("{ALICE} alice\n");
        let key = Login::by_key(ALICE, None);
        let both = Login::by_key(ALICE, Some(&token));
        let by_token = Login::by_token(&token);
        let same = config(AuthMode::Either, &token.0, &with_alice);
        for login in [&key, &by_token] {
            assert_eq!(login.refused_by(&same), None);
        }
        let without = config(AuthMode::Either, &token.0, "");
        assert!(key
            .refused_by(&without)
            .unwrap()
            .contains("no longer authorized"));
        assert_eq!(by_token.refused_by(&without), None);
        let new_token = config(AuthMode::Either, &"u".repeat(32), &with_alice);
        assert!(by_token
            .refused_by(&new_token)
            .unwrap()
            .contains("replaced"));
        assert_eq!(key.refused_by(&new_token), None);
        let keys_only = config(AuthMode::Key, &token.0, &with_alice);
        assert!(by_token.refused_by(&keys_only).is_some());
        assert_eq!(key.refused_by(&keys_only), None);
        let token_only = config(AuthMode::Token, &token.0, &with_alice);
        assert!(key.refused_by(&token_only).is_some());
        let both_mode = config(AuthMode::Both, &token.0, &with_alice);
        assert_eq!(both.refused_by(&both_mode), None);
        let both_new_token = config(AuthMode::Both, &"u".repeat(32), &with_alice);
        assert!(both.refused_by(&both_new_token).is_some());
    }
}
