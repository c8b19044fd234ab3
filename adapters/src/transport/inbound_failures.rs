//! Inbound connections that failed before the node heard of them: in
//! their TLS handshake (QUIC's or TCP's), by taking too long to finish it,
//! or with a certificate that carries no node key. The listeners count
//! them here; `NetworkedNode::metrics` reports them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct InboundFailures {
    secure_channel: AtomicU64,
    timed_out: AtomicU64,
    no_node_key: AtomicU64,
    too_many_pending: AtomicU64,
    pushed_out: AtomicU64,
    no_alpn: AtomicU64,
}

/// Why an inbound connection failed before the node heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboundFailure {
    /// The TLS handshake failed, or the connection ended before its stream.
    SecureChannel,
    /// The handshake and the stream took longer than their timeout.
    TimedOut,
    /// The peer's certificate is not a node key's.
    NoNodeKey,
    /// Its address already had as many handshakes in progress as one
    /// address may: closed before the handshake began.
    TooManyPending,
    /// Pushed out, unfinished, by newer handshakes when the listener had
    /// as many in progress as it may.
    PushedOut,
    /// The dialler did not negotiate the `netmachine/1` ALPN protocol.
    NoAlpn,
}

/// The counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundFailureCounts {
    pub secure_channel: u64,
    pub timed_out: u64,
    pub no_node_key: u64,
    pub too_many_pending: u64,
    pub pushed_out: u64,
    pub no_alpn: u64,
}

impl InboundFailures {
    pub(crate) fn count(&self, failure: InboundFailure) {
        let counter = match failure {
            InboundFailure::SecureChannel => &self.secure_channel,
            InboundFailure::TimedOut => &self.timed_out,
            InboundFailure::NoNodeKey => &self.no_node_key,
            InboundFailure::TooManyPending => &self.too_many_pending,
            InboundFailure::PushedOut => &self.pushed_out,
            InboundFailure::NoAlpn => &self.no_alpn,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> InboundFailureCounts {
        InboundFailureCounts {
            secure_channel: self.secure_channel.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            no_node_key: self.no_node_key.load(Ordering::Relaxed),
            too_many_pending: self.too_many_pending.load(Ordering::Relaxed),
            pushed_out: self.pushed_out.load(Ordering::Relaxed),
            no_alpn: self.no_alpn.load(Ordering::Relaxed),
        }
    }
}
