//! Client keys for the tests: a client home with a key made by the real
//! `wiresh keygen`, and the `authorized_clients` files that name them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use super::{cli_output, isolated, CliOutput, Server, BIN};

/// A client with a home of its own (its own known_hosts, no token) and a
/// key made by `wiresh keygen --name NAME`.
pub struct KeyClient {
    pub home: TempDir,
    /// The line `wiresh keygen` printed for authorized_clients.
    pub line: String,
    /// The key's fingerprint (the line's first word).
    pub fingerprint: String,
}

impl KeyClient {
    pub async fn new(name: &str) -> KeyClient {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["keygen", "--name", name]);
        isolated(&mut cmd, home.path());
        let out = cli_output(cmd, None).await;
        assert_eq!(out.code, Some(0), "keygen: {}", out.stderr_str());
        let line = out.stdout_str().trim().to_string();
        let fingerprint = line.split_whitespace().next().unwrap().to_string();
        assert!(line.ends_with(&format!(" {name}")), "{line}");
        KeyClient {
            home,
            line,
            fingerprint,
        }
    }

    /// `wiresh exec -H SERVER -- COMMAND` as this client (its key, no token).
    pub fn exec(&self, server: &Server, command: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["exec", "-H", &server.addr.to_string(), "--", command]);
        isolated(&mut cmd, self.home.path());
        cmd
    }

    /// Runs `command` on `server` as this client.
    pub async fn run(&self, server: &Server, command: &str) -> CliOutput {
        cli_output(self.exec(server, command), None).await
    }
}

/// Writes an authorized_clients file (mode 644, as an operator would)
/// holding `lines`, in `dir`.
pub fn authorized_clients(dir: &Path, lines: &[&str]) -> PathBuf {
    let path = dir.join("authorized_clients");
    write_clients(&path, lines);
    path
}

/// Replaces the lines of an authorized_clients file.
pub fn write_clients(path: &Path, lines: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let mut text = lines.join("\n");
    text.push('\n');
    // Written beside and renamed, as editors do: a reload never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS connection to `server` that presents the key at `key` (and its
/// certificate beside it) in the handshake, then stops: the wiresh
/// preamble and `auth` are the caller's to send, or not. The server's
/// certificate is not checked (tests only).
pub async fn tls_presenting(
    server: std::net::SocketAddr,
    key: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let cert = CertificateDer::from_pem_file(key.with_extension("crt")).unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    let socket = super::tcp(server).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("wiresh").unwrap();
    super::bounded("a TLS handshake", connector.connect(name, socket))
        .await
        .expect("the TLS handshake")
}

/// Takes any server certificate, checking only the handshake's signatures.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
