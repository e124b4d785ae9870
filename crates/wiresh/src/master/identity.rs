//! Which master serves which client: the [`Identity`] of an endpoint, and
//! the files a master keeps under `$WIRESH_HOME/masters/`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::client::{Endpoint, Security};
use crate::home::create_private_dir;
use crate::tls::PinError;

/// The directory of the masters' sockets, locks and logs, in
/// `$WIRESH_HOME`.
pub const MASTERS_DIR: &str = "masters";

/// Longest path a Unix socket can have (`sun_path`, with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// What a master must share with a client to serve it: the server's
/// address, the credentials (token and client key), how the connection is
/// protected and the pinned fingerprint, and this program's version. Two
/// endpoints that differ in any of them have different identities, so a
/// client never runs over a connection made with other settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    digest: blake3::Hash,
}

impl Identity {
    /// The identity of `endpoint`; `None` over TLS when no fingerprint is
    /// pinned for the server yet (a first connection pins it directly, so
    /// that the user sees it happen).
    pub fn of(endpoint: &Endpoint) -> Result<Option<Identity>, PinError> {
        let target = endpoint.target.to_string();
        let mut hasher = blake3::Hasher::new_derive_key("wiresh master identity v1");
        let mut part = |label: &str, value: &str| {
            for text in [label, value] {
                hasher.update(&(text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
        };
        part("version", env!("CARGO_PKG_VERSION"));
        part("target", &target);
        part("token", endpoint.token.expose());
        match &endpoint.security {
            Security::Plaintext => part("security", "plaintext"),
            Security::Tls(pinning) => {
                let Some(pin) = pinning.pin_for(&target)? else {
                    return Ok(None);
                };
                part("security", "tls");
                part("pin", &pin);
                let key = pinning.client_key.as_ref().map(|k| k.fingerprint.as_str());
                part("key", key.unwrap_or("-"));
            }
        }
        Ok(Some(Identity {
            digest: hasher.finalize(),
        }))
    }

    /// The whole identity in hex, as the handshake carries it.
    pub fn hex(&self) -> String {
        self.digest.to_hex().to_string()
    }

    /// The name of its files: 16 hex digits of the identity (the
    /// handshake checks all of it).
    pub fn name(&self) -> String {
        self.hex()[..16].to_string()
    }

    /// Where the master of this identity keeps its files in `home`.
    pub fn places(&self, home: &Path) -> Places {
        Places::named(&home.join(MASTERS_DIR), &self.name())
    }
}

/// The files of one master.
#[derive(Debug, Clone)]
pub struct Places {
    /// Its name (16 hex digits of its identity).
    pub name: String,
    /// The Unix socket clients connect to.
    pub socket: PathBuf,
    /// The lock it holds while it runs: a socket whose lock can be taken
    /// is stale.
    pub lock: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl Places {
    /// The files of the master `name` in the masters directory `dir`.
    pub fn named(dir: &Path, name: &str) -> Places {
        Places {
            name: name.to_string(),
            socket: dir.join(format!("{name}.sock")),
            lock: dir.join(format!("{name}.lock")),
            log: dir.join(format!("{name}.log")),
        }
    }

    /// Checks that the socket's path fits a Unix socket address.
    pub fn check_socket_path(&self) -> Result<(), String> {
        let len = self.socket.as_os_str().len();
        match len <= SOCKET_PATH_MAX {
            true => Ok(()),
            false => Err(format!(
                "the socket path {} is {len} bytes, more than a Unix socket takes \
                 ({SOCKET_PATH_MAX}); use a shorter $WIRESH_HOME",
                self.socket.display()
            )),
        }
    }
}

/// The masters directory of `home`, created (mode 700) when `create`;
/// `Ok(None)` when it does not exist and was not to be made. Refused when
/// it belongs to another user or others may enter it: its sockets would
/// not be this user's alone.
pub fn masters_dir(home: &Path, create: bool) -> Result<Option<PathBuf>, String> {
    let dir = home.join(MASTERS_DIR);
    if create {
        create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = match fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a directory of this user's alone (owner uid {}, mode {:o}); masters \
             are not used until it is (chmod 700, or remove it)",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Pinning, Target};
    use wiresh_proto::Secret;

    fn endpoint(port: u16, token: &str, pin: Option<&str>) -> Endpoint {
        Endpoint {
            target: Target {
                host: "127.0.0.1".into(),
                port,
            },
            token: Secret(token.into()),
            security: match pin {
                None => Security::Plaintext,
                Some(pin) => Security::Tls(Pinning {
                    known_hosts: "/nonexistent/known_hosts".into(),
                    fingerprint: Some(pin.into()),
                    client_key: None,
                }),
            },
            connect_timeout: crate::client::CONNECT_TIMEOUT,
            persist: None,
        }
    }

    #[test]
    fn any_difference_in_settings_is_another_identity() {
        let id = |e: &Endpoint| Identity::of(e).unwrap().unwrap();
        let base = id(&endpoint(1, "t", Some("sha256:aa")));
        assert_eq!(base, id(&endpoint(1, "t", Some("sha256:AA"))));
        for other in [
            endpoint(2, "t", Some("sha256:aa")),
            endpoint(1, "u", Some("sha256:aa")),
            endpoint(1, "t", Some("sha256:ab")),
            endpoint(1, "t", None),
        ] {
            assert_ne!(base, id(&other), "{other:?}");
        }
        assert_eq!(base.name().len(), 16);
        assert!(base.hex().starts_with(&base.name()));
    }

    #[test]
    fn no_identity_before_a_pin() {
        let mut e = endpoint(1, "t", Some("sha256:aa"));
        if let Security::Tls(p) = &mut e.security {
            p.fingerprint = None;
        }
        assert_eq!(Identity::of(&e).unwrap(), None);
    }

    #[test]
    fn the_directory_must_be_private() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(masters_dir(home.path(), false).unwrap(), None);
        let dir = masters_dir(home.path(), true).unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = masters_dir(home.path(), false).unwrap_err();
        assert!(
            err.contains("not a directory of this user's alone"),
            "{err}"
        );
    }
}
