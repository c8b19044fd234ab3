//! TLS 1.3 whose certificates are the node keys themselves.
//!
//! Each node presents one self-signed certificate whose public key is its
//! Ed25519 node key. A verifier accepts exactly one certificate with an
//! Ed25519 key, and the handshake signature must verify with that key, so
//! the peer proves it holds the node key. The dialler puts the identity it
//! means to reach in the server name and refuses any other key; the
//! listener learns the dialler's identity from its certificate. No CA is
//! involved: identities are keys.

use std::collections::HashMap;
use std::sync::Arc;

use netmachine_domain::NodeIdentity;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;

use crate::crypto::Ed25519Keys;

/// The ALPN protocol of netmachine connections.
pub const ALPN: &[u8] = b"netmachine/1";

/// DER of an Ed25519 SubjectPublicKeyInfo, before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("cannot make the node certificate: {0}")]
    Certificate(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The node identity a certificate's key is, if it is an Ed25519 key.
pub fn identity_of_certificate(der: &CertificateDer<'_>) -> Option<NodeIdentity> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    let spki = cert.subject_public_key_info();
    let bytes = spki.as_ref();
    let key = bytes.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    Some(NodeIdentity::ed25519(key))
}

/// The server name that carries a node identity: its text form, which is a
/// valid DNS label.
pub fn server_name_of(identity: &NodeIdentity) -> String {
    identity.to_string()
}

/// Certificate and key material of one node.
#[derive(Debug)]
pub struct NodeCertificate {
    pub certificate: CertificateDer<'static>,
    pkcs8: Vec<u8>,
    pub identity: NodeIdentity,
}

impl NodeCertificate {
    pub fn new(keys: &Ed25519Keys) -> Result<Self, TlsSetupError> {
        let pkcs8 = PrivatePkcs8KeyDer::from(keys.pkcs8().to_vec());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![server_name_of(&keys.node_identity())])
            .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        let cert = params.self_signed(&key_pair).map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
        Ok(Self { certificate: cert.der().clone(), pkcs8: keys.pkcs8().to_vec(), identity: keys.node_identity() })
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

/// The crypto library under TLS's record layer and QUIC's packet
/// protection. Identities (certificates, adverts, messages) are signed and
/// checked with ring whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCrypto {
    Ring,
    /// aws-lc-rs: rustls's default, whose AES-GCM was faster on x86-64 in
    /// runs quoted in `docs/benchmarks.md` (not told apart in those
    /// printed there). Key exchange and randomness come from it too.
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

impl Default for RecordCrypto {
    /// aws-lc-rs when the `aws-lc` feature is on (the default), else ring.
    fn default() -> Self {
        #[cfg(feature = "aws-lc")]
        return Self::AwsLc;
        #[cfg(not(feature = "aws-lc"))]
        return Self::Ring;
    }
}

/// What protects the bytes of a connection once it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLayer {
    pub crypto: RecordCrypto,
    /// AES-128-GCM before AES-256-GCM: the cheaper of the two (fewer AES
    /// rounds) at the same hardware support.
    pub aes_128_first: bool,
}

impl Default for RecordLayer {
    fn default() -> Self {
        Self { crypto: RecordCrypto::default(), aes_128_first: true }
    }
}

/// TLS 1.3 suites only (all of which QUIC can use), in the order `record`
/// says; a server picks the first suite both sides offer in its own order.
pub fn crypto_provider(record: RecordLayer) -> Arc<CryptoProvider> {
    let base = match record.crypto {
        RecordCrypto::Ring => rustls::crypto::ring::default_provider(),
        #[cfg(feature = "aws-lc")]
        RecordCrypto::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
    };
    let rank = |s: &rustls::SupportedCipherSuite| match (s.suite(), record.aes_128_first) {
        (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, true)
        | (rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, false) => 0,
        (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 | rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, _) => 1,
        _ => 2,
    };
    let mut suites: Vec<_> =
        base.cipher_suites.iter().copied().filter(|s| s.version() == &rustls::version::TLS13).collect();
    suites.sort_by_key(rank);
    // The handshake's identity signatures are made and checked by ring, in
    // either case.
    let ring = rustls::crypto::ring::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: suites,
        signature_verification_algorithms: ring.signature_verification_algorithms,
        key_provider: ring.key_provider,
        ..base
    })
}

fn algorithms(provider: &CryptoProvider) -> WebPkiSupportedAlgorithms {
    provider.signature_verification_algorithms
}

/// Checks that a presented chain is one Ed25519 certificate and returns its
/// identity.
fn single_identity(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeIdentity, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General("a netmachine peer presents exactly one certificate".into()));
    }
    identity_of_certificate(end_entity).ok_or_else(|| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Records, per dialled identity, the identity a responder proved instead,
/// so a failed dial can say "wrong identity" rather than a bare TLS alert.
#[derive(Debug, Default)]
pub struct MismatchLog(Mutex<HashMap<NodeIdentity, NodeIdentity>>);

impl MismatchLog {
    pub fn take(&self, expected: &NodeIdentity) -> Option<NodeIdentity> {
        self.0.lock().remove(expected)
    }
}

/// The dialler's verifier: the responder must prove the identity named in
/// the server name.
#[derive(Debug)]
pub struct ExpectedIdentityVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    mismatches: Arc<MismatchLog>,
}

impl ServerCertVerifier for ExpectedIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = single_identity(end_entity, intermediates)?;
        let ServerName::DnsName(name) = server_name else {
            return Err(rustls::Error::General("the server name must be a node identity".into()));
        };
        let expected: NodeIdentity = name
            .as_ref()
            .parse()
            .map_err(|_| rustls::Error::General("the server name must be a node identity".into()))?;
        if presented != expected {
            self.mismatches.0.lock().insert(expected, presented);
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("netmachine speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The listener's verifier: any node may dial, but it must prove one
/// Ed25519 identity. Admission (bans, caps) is decided after the handshake.
#[derive(Debug)]
pub struct AnyNodeVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyNodeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        single_identity(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("netmachine speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server and client TLS configurations for one node.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    pub mismatches: Arc<MismatchLog>,
}

impl TlsConfigs {
    pub fn new(keys: &Ed25519Keys) -> Result<Self, TlsSetupError> {
        Self::with_record_layer(keys, RecordLayer::default())
    }

    pub fn with_record_layer(keys: &Ed25519Keys, record: RecordLayer) -> Result<Self, TlsSetupError> {
        let cert = NodeCertificate::new(keys)?;
        let provider = crypto_provider(record);
        let mismatches = Arc::new(MismatchLog::default());

        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyNodeVerifier { algorithms: algorithms(&provider) }))
            .with_single_cert(vec![cert.certificate.clone()], cert.private_key())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.max_early_data_size = 0;
        server.max_fragment_size = None;
        server.ignore_client_order = true;

        let mut client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedIdentityVerifier {
                algorithms: algorithms(&provider),
                mismatches: Arc::clone(&mismatches),
            }))
            .with_client_auth_cert(vec![cert.certificate.clone()], cert.private_key())?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_early_data = false;
        client.max_fragment_size = None;
        // Tickets would let a later session skip the certificate, and
        // identities are proven by certificates: never resume.
        client.resumption = rustls::client::Resumption::disabled();

        Ok(Self { server: Arc::new(server), client: Arc::new(client), mismatches })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_carries_the_node_key() {
        let keys = Ed25519Keys::generate().expect("keys");
        let cert = NodeCertificate::new(&keys).expect("cert");
        assert_eq!(identity_of_certificate(&cert.certificate), Some(keys.node_identity()));
        assert!(server_name_of(&keys.node_identity()).len() <= 63);
        TlsConfigs::new(&keys).expect("configs build");
    }

    #[test]
    fn the_record_layer_offers_tls13_suites_in_the_order_asked() {
        use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
        let suites = |layer| crypto_provider(layer).cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>();
        let default = suites(RecordLayer::default());
        assert_eq!(default.first(), Some(&TLS13_AES_128_GCM_SHA256));
        let aes_256 = suites(RecordLayer { aes_128_first: false, ..RecordLayer::default() });
        assert_eq!(aes_256.first(), Some(&TLS13_AES_256_GCM_SHA384));
        let ring = crypto_provider(RecordLayer { crypto: RecordCrypto::Ring, aes_128_first: true });
        assert!(ring.cipher_suites.iter().all(|s| s.version() == &rustls::version::TLS13));
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(identity_of_certificate(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])), None);
    }
}
