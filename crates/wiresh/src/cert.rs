//! What the TLS of both ends and client keys share: the crypto provider, a
//! certificate's fingerprint, and the handshake signature checks.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::home::hex;

/// The crypto wiresh's TLS uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `sha256:<hex>` fingerprint of a certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(cert)))
}

/// The handshake signature checks, done as usual with the certificate
/// presented, by both of our verifiers (the client's pin of the server, the
/// server's acceptance of client keys): what proves the peer holds the key.
#[derive(Debug)]
pub(crate) struct Signatures(pub(crate) Arc<CryptoProvider>);

/// `rustls::crypto::verify_tls12_signature` or its TLS 1.3 twin.
pub(crate) type VerifySignature = fn(
    &[u8],
    &CertificateDer<'_>,
    &DigitallySignedStruct,
    &rustls::crypto::WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error>;

impl Signatures {
    pub(crate) fn check(
        &self,
        verify: VerifySignature,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub(crate) fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
