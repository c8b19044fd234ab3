//! The raw quinn baseline: one stream between two quinn endpoints on
//! loopback, TLS 1.3 from rustls on aws-lc-rs (AES-128-GCM first, quinn's
//! own choice), the same flow-control windows and MTU as netmachine's QUIC,
//! and the same bytes as the bulk row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use netmachine_adapters::transport::QuicTuning;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

const ALPN: &[u8] = b"bench";

fn transport(tuning: &QuicTuning) -> Arc<TransportConfig> {
    let mut config = TransportConfig::default();
    let window = VarInt::from_u32(tuning.receive_window);
    config.receive_window(window);
    config.stream_receive_window(window);
    config.send_window(u64::from(tuning.send_buffer));
    config.initial_mtu(1200.min(tuning.max_mtu.saturating_sub(28)));
    config.mtu_discovery_config(Some({
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        // quinn counts the UDP payload; s2n-quic's MTU includes the 28
        // bytes of IPv4 and UDP headers.
        discovery.upper_bound(tuning.max_mtu.saturating_sub(28));
        discovery
    }));
    config.enable_segmentation_offload(tuning.segmentation_offload);
    Arc::new(config)
}

/// A server and a client endpoint on loopback, and the server's address.
fn endpoints(tuning: &QuicTuning) -> (Endpoint, Endpoint, SocketAddr) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());

    let mut server_tls = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key.into())
        .expect("server TLS");
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).expect("QUIC TLS")));
    server_config.transport_config(transport(tuning));
    let server = Endpoint::server(server_config, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server endpoint");
    let address = server.local_addr().expect("bound");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls).expect("QUIC TLS")));
    client_config.transport_config(transport(tuning));
    let mut client = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    client.set_default_client_config(client_config);
    (server, client, address)
}

/// `count` writes of `size` bytes on one stream; seconds until the reader
/// has them all.
pub async fn stream(tuning: &QuicTuning, size: usize, count: usize) -> f64 {
    let (server, client, address) = endpoints(tuning);
    let accept = tokio::spawn(async move {
        let incoming = server.accept().await.expect("a connection");
        let connection = incoming.await.expect("handshake");
        let (_, mut reader) = connection.accept_bi().await.expect("a stream");
        let mut one = [0u8; 1];
        reader.read_exact(&mut one).await.expect("warm");
        (server, connection, reader)
    });
    let connection = client.connect(address, "localhost").expect("connect").await.expect("handshake");
    let (mut writer, _) = connection.open_bi().await.expect("stream");
    writer.write_all(b"w").await.expect("warm");
    let (server, server_connection, mut reader) = accept.await.expect("accept");
    let total = size * count;
    let start = Instant::now();
    let read = tokio::spawn(async move {
        // Reads as large as the writes, as netmachine reads a large frame.
        let mut buf = vec![0u8; size.max(256 * 1024)];
        let mut got = 0;
        while got < total {
            let n = reader.read(&mut buf).await.expect("read").expect("the stream ended early");
            got += n;
        }
    });
    // One `write_all` per chunk, as on the s2n-quic side (which copies what
    // it is given; quinn does too).
    let chunk = vec![7u8; size];
    for _ in 0..count {
        writer.write_all(&chunk).await.expect("write");
    }
    read.await.expect("reader");
    let secs = start.elapsed().as_secs_f64();
    connection.close(VarInt::from_u32(0), b"done");
    server_connection.close(VarInt::from_u32(0), b"done");
    client.wait_idle().await;
    drop(server);
    secs
}
