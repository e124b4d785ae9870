//! TLS for the wiresh protocol: the server's own identity, and the
//! client's pinning of it (trust on first use, as ssh does).
//!
//! There is no certificate authority: the server creates a key and a
//! self-signed certificate in `$WIRESH_HOME` on first start and prints the
//! certificate's SHA-256 fingerprint. A client remembers the fingerprint of
//! each server in `$WIRESH_HOME/known_hosts` the first time it connects
//! (or is given it in advance with `--fingerprint`), and refuses a server
//! whose fingerprint has changed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

pub use crate::cert::{fingerprint, BadFingerprint, Fingerprint};
use crate::cert::{provider, Signatures};
use crate::error::SetupError;
use crate::home::{append_private_file, check_private, create_private_file};
use crate::keys::{AnyClientCert, ClientKey};

/// The name the server's certificate is issued to, and the name the client
/// asks for (only the pinned fingerprint is checked, never the name).
const SERVER_NAME: &str = "wiresh";

/// The server's key and certificate, and the fingerprint clients pin.
pub struct ServerIdentity {
    /// TLS configuration for the acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// Fingerprint of the certificate, to print and to give to clients.
    pub fingerprint: String,
    /// Whether the identity was created just now.
    pub created: bool,
}

impl ServerIdentity {
    /// Loads `server.key` and `server.crt` from `dir`, creating them (key
    /// mode 600) on first use. A key readable by others is refused.
    pub fn load_or_create(dir: &Path) -> Result<ServerIdentity, SetupError> {
        ServerIdentity::open(dir, true)
    }

    /// Loads `server.key` and `server.crt` from `dir`, which must exist
    /// (for `serve --check`, which creates nothing).
    pub fn load(dir: &Path) -> Result<ServerIdentity, SetupError> {
        ServerIdentity::open(dir, false)
    }

    fn open(dir: &Path, create: bool) -> Result<ServerIdentity, SetupError> {
        let key_path = dir.join("server.key");
        let cert_path = dir.join("server.crt");
        let created = create && !key_path.exists();
        if created {
            create_identity(&key_path, &cert_path)?;
        }
        check_private(&key_path, KEY)?;
        let invalid = |what, path: &Path, e: rustls::pki_types::pem::Error| SetupError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let cert =
            CertificateDer::from_pem_file(&cert_path).map_err(|e| invalid(CERT, &cert_path, e))?;
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| invalid(KEY, &key_path, e))?;
        let fingerprint = fingerprint(&cert);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            // Client keys are checked at the `auth` step (crate::keys).
            .with_client_cert_verifier(Arc::new(AnyClientCert(Signatures(provider()))))
            .with_single_cert(vec![cert], key)
            .map_err(|e| SetupError::Invalid {
                what: KEY,
                path: key_path.clone(),
                reason: format!(
                    "it does not match the certificate {} ({e})",
                    cert_path.display()
                ),
            })?;
        // No session tickets: no client could use them. Each `wiresh`
        // process is a new client whose memory dies with it, and rustls
        // 0.23 offers no way to keep a ticket on disk (a session value
        // cannot be serialized: rustls/rustls#2287). Making two tickets
        // per handshake would only cost the server time and memory.
        config.send_tls13_tickets = 0;
        Ok(ServerIdentity {
            config: Arc::new(config),
            fingerprint,
            created,
        })
    }
}

/// Whether this kernel could take TLS records over from rustls (kTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelTls {
    /// `setsockopt(TCP_ULP, "tls")` worked on a loopback connection.
    Available,
    /// It failed: the reason (ENOENT: no `tls` module in this kernel).
    Unavailable(String),
}

/// Checks once, on a loopback connection of its own, whether the kernel
/// offers TLS offload (`TCP_ULP` "tls"). wiresh keeps its records in
/// rustls either way; this only says, in the log, what the machine could
/// do.
pub fn kernel_tls() -> KernelTls {
    let probe = || -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let _server = listener.accept()?;
        nix::sys::socket::setsockopt(
            &client,
            nix::sys::socket::sockopt::TcpUlp::default(),
            b"tls",
        )
        .map_err(std::io::Error::from)
    };
    match probe() {
        Ok(()) => KernelTls::Available,
        Err(e) => KernelTls::Unavailable(e.to_string()),
    }
}

/// What the key and certificate files are called in messages.
const KEY: &str = "TLS key";
const CERT: &str = "TLS certificate";

fn create_identity(key_path: &Path, cert_path: &Path) -> Result<(), SetupError> {
    let failed = |action, what, path: &Path, source| SetupError::File {
        action,
        what,
        path: path.to_path_buf(),
        source,
    };
    let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| SetupError::Config(format!("cannot generate a TLS key: {e}")))?;
    let mut key = create_private_file(key_path).map_err(|e| failed("create", KEY, key_path, e))?;
    key.write_all(generated.signing_key.serialize_pem().as_bytes())
        .and_then(|()| key.sync_all())
        .map_err(|e| failed("write", KEY, key_path, e))?;
    fs::write(cert_path, generated.cert.pem()).map_err(|e| failed("write", CERT, cert_path, e))?;
    Ok(())
}

/// Why a client cannot check a server's identity.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// `known_hosts` could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    KnownHosts {
        /// `read` or `record the server's fingerprint in`.
        action: &'static str,
        /// The known-hosts file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
    /// The handshake finished without a certificate to pin.
    #[error("the server presented no certificate")]
    NoCertificate,
}

/// How a client checks the server's identity.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// Where pins are remembered (`$WIRESH_HOME/known_hosts`).
    pub known_hosts: PathBuf,
    /// A fingerprint given by the user, which overrides `known_hosts`.
    pub fingerprint: Option<String>,
    /// The client's own key, presented with TLS client authentication.
    pub client_key: Option<Arc<ClientKey>>,
}

/// The outcome of a handshake, for the caller to act on.
#[derive(Debug)]
pub(crate) struct PinCheck {
    verifier: Arc<PinVerifier>,
    host: String,
    known_hosts: PathBuf,
    pinned: Option<String>,
}

impl Pinning {
    /// The fingerprint pinned for `host`: the one given, else the one in
    /// the known-hosts file; `None` before the first connection.
    pub fn pin_for(&self, host: &str) -> Result<Option<String>, PinError> {
        match &self.fingerprint {
            Some(f) => Ok(Some(f.to_ascii_lowercase())),
            None => read_pin(&self.known_hosts, host),
        }
    }

    /// A rustls client configuration that accepts exactly the pinned
    /// fingerprint for `host` (any, on first use), and the check to run
    /// after the handshake.
    pub(crate) fn client_config(
        &self,
        host: &str,
    ) -> Result<(Arc<rustls::ClientConfig>, PinCheck), PinError> {
        let pinned = self.pin_for(host)?;
        let verifier = Arc::new(PinVerifier {
            expected: pinned.clone(),
            seen: Mutex::new(None),
            signatures: Signatures(provider()),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &self.client_key {
            Some(key) => {
                let (chain, key) = key.for_rustls();
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        // A configuration serves one connection; nothing would ever resume
        // from its session store (see the server's `send_tls13_tickets`).
        config.resumption = rustls::client::Resumption::disabled();
        Ok((
            Arc::new(config),
            PinCheck {
                verifier,
                host: host.to_string(),
                known_hosts: self.known_hosts.clone(),
                pinned,
            },
        ))
    }
}

impl PinCheck {
    /// The TLS server name to send.
    pub(crate) fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }

    /// Explains a failed handshake: a changed fingerprint gets the full
    /// warning, anything else the TLS error.
    pub(crate) fn explain(&self, error: &std::io::Error) -> String {
        let seen = self
            .verifier
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (&self.pinned, seen) {
            (Some(pinned), Some(seen)) if *pinned != seen => format!(
                "WARNING: the server at {host} presents the fingerprint\n  {seen}\nbut\n  {pinned}\n\
                 is pinned for it (in {file} or by --fingerprint). Someone may be intercepting the \
                 connection, or the server's key was regenerated. If you know the key changed, \
                 check the new fingerprint with the server's operator, then forget the old one with \
                 `wiresh known-hosts --remove {host}` (or pass --fingerprint with the new one).",
                host = self.host,
                file = self.known_hosts.display(),
            ),
            _ if matches!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
            {
                format!(
                    "{} closed the connection during the TLS handshake: the server may be \
                     overloaded or at its limit of connections (try again in a moment), or it \
                     is not a wiresh server",
                    self.host
                )
            }
            _ => format!(
                "TLS handshake with {} failed: {error}; check that it is a wiresh server's port \
                 (a legacy listener speaks no TLS: use --legacy), or connect with --plaintext \
                 to a loopback server started with --allow-plaintext",
                self.host
            ),
        }
    }

    /// After a failed handshake: whether the server presented another
    /// fingerprint than the pinned one.
    pub(crate) fn changed(&self) -> bool {
        let seen = self.verifier.seen.lock().unwrap_or_else(|e| e.into_inner());
        matches!((&self.pinned, &*seen), (Some(pinned), Some(seen)) if pinned != seen)
    }

    /// After a successful handshake: pins the fingerprint on first use.
    /// Returns it when it was pinned just now, for the caller to tell its
    /// user (the library says nothing itself).
    pub(crate) fn remember(&self) -> Result<Option<String>, PinError> {
        if self.pinned.is_some() {
            return Ok(None);
        }
        let Some(seen) = self
            .verifier
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Err(PinError::NoCertificate);
        };
        append_pin(&self.known_hosts, &self.host, &seen).map_err(|source| {
            PinError::KnownHosts {
                action: "record the server's fingerprint in",
                path: self.known_hosts.clone(),
                source,
            }
        })?;
        Ok(Some(seen))
    }
}

/// The pinned fingerprint of `host` in a known-hosts file, if any.
fn read_pin(file: &Path, host: &str) -> Result<Option<String>, PinError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PinError::KnownHosts {
                action: "read",
                path: file.to_path_buf(),
                source,
            })
        }
    };
    Ok(text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(host))
            .then(|| words.next().map(str::to_ascii_lowercase))
            .flatten()
    }))
}

/// Every pin in a known-hosts file, as `(HOST:PORT, fingerprint)` in the
/// file's order (`wiresh known-hosts`); none when there is no file.
pub fn read_pins(file: &Path) -> Result<Vec<(String, String)>, PinError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PinError::KnownHosts {
                action: "read",
                path: file.to_path_buf(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect())
}

/// Forgets the pins of `host` (`HOST:PORT`, as pinned), as `ssh-keygen
/// -R` does: the file is rewritten without their lines and renamed into
/// place, so a reader sees the old file or the new one. Returns the
/// fingerprints forgotten.
pub fn remove_pins(file: &Path, host: &str) -> Result<Vec<String>, PinError> {
    let failed = |action, source| PinError::KnownHosts {
        action,
        path: file.to_path_buf(),
        source,
    };
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed("read", e)),
    };
    let mut removed = Vec::new();
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(h), Some(fp)) if h == host => removed.push(fp.to_string()),
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    if removed.is_empty() {
        return Ok(removed);
    }
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{}.new", std::process::id()));
    let new = PathBuf::from(name);
    let written = create_private_file(&new)
        .and_then(|mut f| f.write_all(kept.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&new, file));
    if let Err(e) = written {
        let _ = fs::remove_file(&new);
        return Err(failed("rewrite", e));
    }
    Ok(removed)
}

/// Appends a pin in one write: many connections (a fan-out, or several
/// wiresh processes) may pin at once, and their lines must not mix.
fn append_pin(file: &Path, host: &str, fingerprint: &str) -> std::io::Result<()> {
    append_private_file(file)?.write_all(format!("{host} {fingerprint}\n").as_bytes())
}

/// Accepts the one certificate whose fingerprint is pinned (or, with no
/// pin, any certificate, remembering what it saw), and checks the
/// handshake signatures with it as usual.
#[derive(Debug)]
struct PinVerifier {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
    signatures: Signatures,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen.clone());
        match &self.expected {
            Some(expected) if *expected != seen => Err(rustls::Error::General(format!(
                "server fingerprint {seen} is not the pinned {expected}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verify = rustls::crypto::verify_tls12_signature;
        self.signatures.check(verify, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verify = rustls::crypto::verify_tls13_signature;
        self.signatures.check(verify, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_tls_probe_answers() {
        // Whatever this kernel offers, the probe says so rather than fail.
        if let KernelTls::Unavailable(why) = kernel_tls() {
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn identity_is_created_once_and_pins_parse() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerIdentity::load_or_create(dir.path()).unwrap();
        assert!(a.created && a.fingerprint.starts_with("sha256:"));
        let b = ServerIdentity::load_or_create(dir.path()).unwrap();
        assert!(!b.created);
        assert_eq!(a.fingerprint, b.fingerprint);
        let hosts = dir.path().join("known_hosts");
        assert_eq!(read_pin(&hosts, "h:1").unwrap(), None);
        append_pin(&hosts, "h:1", &a.fingerprint).unwrap();
        append_pin(&hosts, "h:2", "sha256:00").unwrap();
        assert_eq!(
            read_pin(&hosts, "h:1").unwrap(),
            Some(a.fingerprint.clone())
        );
        assert_eq!(
            read_pin(&hosts, "h:2").unwrap().as_deref(),
            Some("sha256:00")
        );
        assert_eq!(
            read_pins(&hosts).unwrap(),
            [
                ("h:1".to_string(), a.fingerprint.clone()),
                ("h:2".to_string(), "sha256:00".to_string())
            ]
        );
        assert_eq!(remove_pins(&hosts, "h:1").unwrap(), [a.fingerprint]);
        assert_eq!(remove_pins(&hosts, "h:1").unwrap(), Vec::<String>::new());
        assert_eq!(read_pin(&hosts, "h:1").unwrap(), None);
        assert_eq!(read_pins(&hosts).unwrap().len(), 1);
        let mode = fs::metadata(&hosts).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
