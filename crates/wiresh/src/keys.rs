//! Client keys: a client proves who it is with a key pair of its own, as
//! with ssh's `authorized_keys`, instead of (or beside) the shared token.
//!
//! `wiresh keygen` makes a key (`client.key`, PEM, mode 600) and a
//! self-signed certificate for it (`client.crt`) in `$WIRESH_HOME`. The
//! client presents the certificate with TLS client authentication; TLS
//! itself proves that the client holds the private key (the handshake's
//! signature). The server knows clients by the certificate's fingerprint
//! (`sha256:...`, as for the server's own certificate), listed in its
//! authorized clients file ([`crate::server::clients`]); there is no
//! certificate authority and names in certificates mean nothing.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cert::{fingerprint, Signatures};
use crate::error::SetupError;
use crate::home::{check_private, create_private_file, wiresh_home};

/// Name of the default client key file in `$WIRESH_HOME`.
pub const KEY_FILE: &str = "client.key";

/// What the files are called in messages.
const KEY: &str = "client key";
const CERT: &str = "client certificate";

/// The default client key, `$WIRESH_HOME/client.key`.
pub fn default_key_path() -> Result<PathBuf, SetupError> {
    Ok(wiresh_home()?.join(KEY_FILE))
}

/// The certificate that goes with a key file: the same path ending in
/// `.crt` (`client.key` → `client.crt`).
pub fn cert_path(key: &Path) -> PathBuf {
    key.with_extension("crt")
}

/// A client's key pair, ready to present in a TLS handshake.
pub struct ClientKey {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// The certificate's fingerprint, as the server's operator lists it.
    pub fingerprint: String,
    /// The key file it was read from.
    pub path: PathBuf,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("ClientKey")
            .field("fingerprint", &self.fingerprint)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Makes a new key pair: the key at `key_path` (mode 600, never over an
    /// existing file) and its certificate beside it.
    pub fn generate(key_path: &Path) -> Result<ClientKey, SetupError> {
        let cert_path = cert_path(key_path);
        if key_path.exists() {
            return Err(SetupError::Config(format!(
                "{} already exists; its fingerprint is {}. To make another key, pass \
                 --key with a new path, or delete {} and {} first",
                key_path.display(),
                ClientKey::load(key_path)
                    .map(|k| k.fingerprint)
                    .unwrap_or_else(|e| format!("unknown ({e})")),
                key_path.display(),
                cert_path.display(),
            )));
        }
        let generated = rcgen::generate_simple_self_signed(vec!["wiresh-client".to_string()])
            .map_err(|e| SetupError::Config(format!("cannot generate a key: {e}")))?;
        let failed = |action, what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SetupError::File {
                action,
                what,
                path,
                source,
            }
        };
        let mut key = create_private_file(key_path).map_err(failed("create", KEY, key_path))?;
        key.write_all(generated.signing_key.serialize_pem().as_bytes())
            .and_then(|()| key.sync_all())
            .map_err(failed("write", KEY, key_path))?;
        std::fs::write(&cert_path, generated.cert.pem())
            .map_err(failed("write", CERT, &cert_path))?;
        ClientKey::load(key_path)
    }

    /// Reads a key and its certificate; a key that others can read is
    /// refused, as ssh refuses one.
    pub fn load(key_path: &Path) -> Result<ClientKey, SetupError> {
        check_private(key_path, KEY)?;
        let cert_path = cert_path(key_path);
        let invalid = |what, path: &Path, e: rustls::pki_types::pem::Error| SetupError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!("{e}; make a new key pair with `wiresh keygen`"),
        };
        let cert =
            CertificateDer::from_pem_file(&cert_path).map_err(|e| invalid(CERT, &cert_path, e))?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| invalid(KEY, key_path, e))?;
        Ok(ClientKey {
            fingerprint: fingerprint(&cert),
            cert,
            key,
            path: key_path.to_path_buf(),
        })
    }

    /// The certificate chain and key, as rustls takes them.
    pub(crate) fn for_rustls(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], self.key.clone_key())
    }
}

/// The server's side of TLS client authentication: a certificate is asked
/// for but optional, and any certificate is accepted *by TLS*, which still
/// checks the client's signature with it (so the client holds its key).
/// Whether that key may log in is decided afterwards, at the protocol's
/// `auth` step, against the authorized clients of the moment; that way an
/// unknown or revoked key gets an `auth_failed` error that says what to
/// do, not a bare TLS alert.
#[derive(Debug)]
pub(crate) struct AnyClientCert(pub(crate) Signatures);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .check(rustls::crypto::verify_tls12_signature, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .check(rustls::crypto::verify_tls13_signature, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_once_private_and_reloadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.key");
        let made = ClientKey::generate(&path).unwrap();
        assert!(made.fingerprint.starts_with("sha256:"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            ClientKey::load(&path).unwrap().fingerprint,
            made.fingerprint
        );
        let again = ClientKey::generate(&path).unwrap_err().to_string();
        assert!(again.contains(&made.fingerprint), "{again}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClientKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!format!("{made:?}").contains("PRIVATE"));
    }
}
