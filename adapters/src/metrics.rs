//! The node's metrics for its operator: what the node core counts (see
//! `netmachine_engines::metrics`), each engine's mailbox, and the frames
//! on the wire, written in the Prometheus text format (OpenMetrics 1.0,
//! which Prometheus scrapes natively) by the `prometheus-client` crate,
//! and served over HTTP at `/metrics` by [`http`].
//!
//! Every metric is read from the core when scraped: the core keeps plain
//! counters, so counting costs the message path no atomic operation and
//! no lock of its own.

pub mod http;

use crate::transport::InboundFailureCounts;
use netmachine_engines::metrics::{
    Depths, DropReason, Guarded, HandshakeFailure, InOut, MetricsSnapshot, PeerClass, Side,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Frames and bytes moved by the node's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounts {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    /// Streams closed for frames that broke the framing rules.
    pub framing_violations: u64,
}

/// One local engine's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxDepth {
    pub engine: String,
    pub capacity: u64,
    /// Deliveries in the mailbox, not yet taken by the engine.
    pub queued: u64,
    /// Messages from peers waiting for room in the mailbox.
    pub parked: u64,
}

/// Everything `/metrics` shows, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    pub core: MetricsSnapshot,
    pub mailboxes: Vec<MailboxDepth>,
    pub wire: WireCounts,
    /// Inbound connections the listeners dropped before the node heard of
    /// them (filled by `NetworkedNode::metrics`; a node without listeners
    /// has none).
    pub inbound: InboundFailureCounts,
}

/// The content type of [`NodeMetrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl NodeMetrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collected(self.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct Collected(NodeMetrics);

type Labels = Vec<(&'static str, String)>;

/// Reads one figure of a peer class's depths.
type ReadDepth = fn(&Depths) -> u64;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// One metric with a row per label set.
fn write_rows(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let row = family.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(row)?,
            _ => ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(row)?,
        }
    }
    Ok(())
}

fn in_out_rows(rows: &mut Vec<(Labels, u64)>, key: &'static str, value: &str, counts: InOut) {
    rows.push((labels([(key, value), ("direction", "in")]), counts.messages_in));
    rows.push((labels([(key, value), ("direction", "out")]), counts.messages_out));
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let core = &m.core;
        let counts = &core.counts;
        let e = &mut encoder;

        let mut rows = Vec::new();
        for class in PeerClass::ALL {
            in_out_rows(&mut rows, "class", class.label(), counts.by_class(class));
        }
        write_rows(
            e,
            "netmachine_messages",
            "Messages taken in (from a peer, or from a local engine) and passed on (to a peer's queue, or to a local engine), by peer class.",
            MetricType::Counter,
            &rows,
        )?;

        let mut rows = Vec::new();
        for (engine, io) in counts.by_engine() {
            in_out_rows(&mut rows, "engine", engine, io);
        }
        write_rows(
            e,
            "netmachine_engine_messages",
            "Messages each engine of this node sent (out) and was handed (in).",
            MetricType::Counter,
            &rows,
        )?;

        let rows: Vec<_> =
            DropReason::ALL.iter().map(|r| (labels([("reason", r.label())]), counts.drops(*r))).collect();
        write_rows(e, "netmachine_drops", "Messages dropped, by reason.", MetricType::Counter, &rows)?;
        let rows: Vec<_> = Guarded::ALL.iter().map(|a| (labels([("action", a.label())]), counts.guarded(*a))).collect();
        write_rows(
            e,
            "netmachine_budget_actions",
            "What the node's budgets did to peers that reached them, by action.",
            MetricType::Counter,
            &rows,
        )?;

        let mut rows = Vec::new();
        for side in Side::ALL {
            for failure in HandshakeFailure::ALL {
                let value = counts.handshake_failures(side, failure);
                rows.push((labels([("side", side.label()), ("reason", failure.label())]), value));
            }
        }
        // Before the node heard of the connection: at the listeners.
        let inbound = m.inbound;
        for (reason, value) in [
            ("secure_channel", inbound.secure_channel),
            ("secure_channel_timeout", inbound.timed_out),
            ("no_node_key", inbound.no_node_key),
            ("too_many_pending_from_address", inbound.too_many_pending),
            ("pushed_out_by_newer_handshakes", inbound.pushed_out),
            ("no_alpn", inbound.no_alpn),
        ] {
            rows.push((labels([("side", "inbound"), ("reason", reason)]), value));
        }
        write_rows(
            e,
            "netmachine_handshake_failures",
            "Connection setups that failed, by which end dialled and why.",
            MetricType::Counter,
            &rows,
        )?;

        let c = core.connections;
        let rows = vec![
            (labels([("state", "dialling")]), c.dialling),
            (labels([("state", "handshaking")]), c.handshaking),
            (labels([("state", "established")]), c.established),
        ];
        write_rows(e, "netmachine_connections", "Connections, by state.", MetricType::Gauge, &rows)?;

        let classes = [("permanent", core.permanent), ("ephemeral", core.ephemeral)];
        let gauges: [(&str, &str, ReadDepth); 6] = [
            ("netmachine_queued_messages", "Messages queued for peers, not yet on a connection.", |d| {
                d.queued_messages
            }),
            ("netmachine_queued_bytes", "Bytes (by message cost) queued for peers.", |d| d.queued_bytes),
            ("netmachine_window_messages", "Messages on connections not yet acknowledged: the windows in use.", |d| {
                d.inflight_messages
            }),
            ("netmachine_window_bytes", "Bytes (by message cost) on connections not yet acknowledged.", |d| {
                d.inflight_bytes
            }),
            ("netmachine_peers", "Peers in the transport's table.", |d| d.peers),
            ("netmachine_connected_peers", "Peers with an established connection.", |d| d.connected_peers),
        ];
        for (name, help, read) in gauges {
            let rows: Vec<_> = classes.iter().map(|(class, d)| (labels([("class", *class)]), read(d))).collect();
            write_rows(e, name, help, MetricType::Gauge, &rows)?;
        }

        let rows: Vec<_> = m.mailboxes.iter().map(|b| (labels([("engine", &b.engine)]), b.queued)).collect();
        write_rows(
            e,
            "netmachine_mailbox_depth",
            "Deliveries waiting in each engine's mailbox.",
            MetricType::Gauge,
            &rows,
        )?;
        let rows: Vec<_> = m.mailboxes.iter().map(|b| (labels([("engine", &b.engine)]), b.capacity)).collect();
        write_rows(e, "netmachine_mailbox_capacity", "Each engine's mailbox capacity.", MetricType::Gauge, &rows)?;
        let rows: Vec<_> = m.mailboxes.iter().map(|b| (labels([("engine", &b.engine)]), b.parked)).collect();
        write_rows(
            e,
            "netmachine_mailbox_parked",
            "Messages from peers waiting for room in each engine's mailbox.",
            MetricType::Gauge,
            &rows,
        )?;

        let w = m.wire;
        let rows = vec![
            (labels([("direction", "sent")]), w.frames_sent),
            (labels([("direction", "received")]), w.frames_received),
        ];
        write_rows(e, "netmachine_frames", "Frames written and read on connections.", MetricType::Counter, &rows)?;
        write_rows(
            e,
            "netmachine_bytes_sent",
            "Bytes written on connections.",
            MetricType::Counter,
            &[(Vec::new(), w.bytes_sent)],
        )?;
        write_rows(
            e,
            "netmachine_framing_violations",
            "Streams closed for frames that broke the framing rules.",
            MetricType::Counter,
            &[(Vec::new(), w.framing_violations)],
        )?;
        write_rows(
            e,
            "netmachine_identity_records",
            "Records in the identity store.",
            MetricType::Gauge,
            &[(Vec::new(), core.identity_records)],
        )?;
        let records: Vec<_> = core.cached_records.iter().map(|(k, n, _)| (labels([("kind", *k)]), *n)).collect();
        write_rows(
            e,
            "netmachine_cached_records",
            "Records peers sent unasked, kept within the cache's budgets, by kind.",
            MetricType::Gauge,
            &records,
        )?;
        let bytes: Vec<_> = core.cached_records.iter().map(|(k, _, b)| (labels([("kind", *k)]), *b)).collect();
        write_rows(
            e,
            "netmachine_cached_record_bytes",
            "Bytes of the records peers sent unasked, as the cache counts them, by kind.",
            MetricType::Gauge,
            &bytes,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_rows() {
        let mut metrics = NodeMetrics::default();
        metrics.core.counts.count_drop(DropReason::QueueFull);
        metrics.core.counts.count_in(PeerClass::Ephemeral);
        metrics.core.counts.count_engine("app", true);
        metrics.core.connections.established = 3;
        metrics.inbound.no_node_key = 4;
        metrics.mailboxes.push(MailboxDepth { engine: "app".into(), capacity: 8, queued: 2, parked: 0 });
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("netmachine_drops_total{reason=\"queue_full\"} 1"), "{text}");
        assert!(text.contains("netmachine_drops_total{reason=\"repeat\"} 0"), "{text}");
        assert!(text.contains("netmachine_messages_total{class=\"ephemeral\",direction=\"in\"} 1"), "{text}");
        assert!(text.contains("netmachine_engine_messages_total{engine=\"app\",direction=\"out\"} 1"), "{text}");
        assert!(text.contains("netmachine_connections{state=\"established\"} 3"), "{text}");
        assert!(text.contains("netmachine_mailbox_depth{engine=\"app\"} 2"), "{text}");
        assert!(text.contains("# TYPE netmachine_handshake_failures counter"), "{text}");
        assert!(
            text.contains("netmachine_handshake_failures_total{side=\"inbound\",reason=\"no_node_key\"} 4"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
