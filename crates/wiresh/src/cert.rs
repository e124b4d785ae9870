//! What the TLS of both ends and client keys share: the crypto provider, a
//! certificate's fingerprint, and the handshake signature checks.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::home::hex;

/// The crypto wiresh's TLS uses (ring), its cipher suites fastest first
/// for this CPU (see [`fastest_first`]).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    fastest_first(&mut provider.cipher_suites, cpu_has_aes());
    Arc::new(provider)
}

/// Orders cipher suites by speed, TLS 1.3 before TLS 1.2. The client's
/// order decides (rustls servers follow it), and ring's default puts
/// AES-256-GCM first: with AES instructions AES-128-GCM is cheaper (10
/// rounds, not 14) and both beat ChaCha20-Poly1305; without them
/// ChaCha20-Poly1305 is the fastest.
fn fastest_first(suites: &mut [rustls::SupportedCipherSuite], aes: bool) {
    suites.sort_by_key(|suite| {
        let name = format!("{:?}", suite.suite());
        let rank = match (aes, name.contains("CHACHA20"), name.contains("AES_128")) {
            (true, _, true) | (false, true, _) => 0,
            (true, false, false) | (false, false, true) => 1,
            _ => 2,
        };
        (
            matches!(suite, rustls::SupportedCipherSuite::Tls12(_)),
            rank,
        )
    });
}

/// Whether the CPU has the instructions that make AES-GCM fast.
fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[allow(unreachable_code)]
    false
}

/// The `sha256:<hex>` fingerprint of a certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    format!("sha256:{}", hex(digest.as_ref()))
}

/// A certificate fingerprint as wiresh writes it: `sha256:` and the 64 hex
/// digits of the certificate's SHA-256. Parsed once, wherever one is given
/// (`--fingerprint`, the host settings, `authorized_clients`), and always
/// shown in lowercase, as [`fingerprint`] makes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

/// Why a text is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a fingerprint: expected `sha256:` and 64 hex digits, as `wiresh serve` and `wiresh keygen` print them")]
pub struct BadFingerprint(pub String);

impl std::str::FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(text: &str) -> Result<Fingerprint, BadFingerprint> {
        let hex = text.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Fingerprint(text.to_ascii_lowercase()))
        } else {
            Err(BadFingerprint(text.to_string()))
        }
    }
}

impl Fingerprint {
    /// The fingerprint of a certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        Fingerprint(fingerprint(cert))
    }

    /// As written: `sha256:` and lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_certificate() {
        // FIPS 180-2's example, as `sha256sum` prints it for "abc".
        assert_eq!(
            fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fingerprints_parse_once_into_lowercase() {
        let upper = format!("sha256:{}", "AB".repeat(32));
        let parsed: Fingerprint = upper.parse().unwrap();
        assert_eq!(parsed.as_str(), upper.to_ascii_lowercase());
        assert_eq!(Fingerprint::of(b"abc").to_string(), fingerprint(b"abc"));
        for bad in [
            "",
            "sha256:",
            "md5:ab",
            "sha256:12",
            &format!("sha256:{}", "zz".repeat(32)),
        ] {
            let err = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
        }
    }

    #[test]
    fn suites_are_ordered_for_the_cpu() {
        let names = |aes| {
            let mut suites = rustls::crypto::ring::default_provider().cipher_suites;
            fastest_first(&mut suites, aes);
            suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        let (with, without) = (names(true), names(false));
        assert_eq!(
            with[..3],
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert_eq!(without[0], "TLS13_CHACHA20_POLY1305_SHA256");
        // Only the order changes.
        let mut all = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect::<Vec<_>>();
        let mut sorted = with.clone();
        all.sort();
        sorted.sort();
        assert_eq!(all, sorted);
        assert!(with.iter().position(|n| !n.starts_with("TLS13")).unwrap() == 3);
    }
}
