//! The node's TOML configuration. Every key is optional: a node with no
//! configuration at all runs on built-in defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use netmachine_adapters::networked::ListenSpec;
use netmachine_adapters::runtime::DEFAULT_MAILBOX_CAPACITY;
use netmachine_domain::{TransportAddress, TransportProtocol, WeightedAddress};
use serde::Deserialize;
use thiserror::Error;

/// The largest config file read, so a wrong path (a log, a disk image)
/// fails fast instead of filling memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is {len} bytes, more than the {MAX_CONFIG_BYTES} bytes a config may be")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("config {path}, line {line}{key}: {message}")]
    Invalid { path: PathBuf, line: usize, key: KeyName, message: String },
}

/// The key an error is about, when known; displayed as ", key `a.b`".
#[derive(Debug, Default)]
pub struct KeyName(Option<String>);

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(key) => write!(f, ", key `{key}`"),
            None => Ok(()),
        }
    }
}

/// An address this node listens on and advertises, with its weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenEntry {
    /// Port 0 picks a free port (the advert carries the one picked).
    pub address: BindAddressText,
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// What peers should dial, when it differs from `address` (a wildcard
    /// bind such as 0.0.0.0, or a NAT).
    pub advertise: Option<AddressText>,
}

fn default_weight() -> u8 {
    100
}

/// A transport address parsed from its text form.
#[derive(Debug, Clone, Copy)]
pub struct AddressText(pub TransportAddress);

/// A QUIC congestion controller by name, as the config file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionName {
    Bbr,
    Cubic,
}

/// An address to bind, where port 0 is allowed.
#[derive(Debug, Clone, Copy)]
pub struct BindAddressText(pub TransportAddress);

impl<'de> Deserialize<'de> for BindAddressText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TransportAddress::parse_bind(&text).map(BindAddressText).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for AddressText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(AddressText).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the key and the identity records live.
    pub data_dir: Option<PathBuf>,
    /// The node key file; defaults to `node.key` in the data directory.
    pub key_file: Option<PathBuf>,
    /// A display name carried in this node's advert.
    pub name: Option<String>,
    /// Capacity of each engine's mailbox.
    pub mailbox_capacity: Option<usize>,
    /// Log filter, e.g. "info" or "netmachine=debug".
    pub log: Option<String>,
    /// Addresses to listen on; without any, QUIC and TLS over TCP on
    /// 127.0.0.1:4100.
    #[serde(default)]
    pub listen: Vec<ListenEntry>,
    /// Peers this node keeps connected, by the advert text that
    /// `netmachine advert` prints on each of them.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The control API's Unix socket; defaults to `control.sock` in the
    /// data directory.
    pub control_socket: Option<PathBuf>,
    /// Largest UDP payload QUIC may use, 1200..=9000 (default 1500).
    pub max_mtu: Option<u16>,
    /// QUIC's congestion controller, "bbr" (default) or "cubic".
    pub quic_congestion: Option<CongestionName>,
    /// Sign every message that leaves the node, not only those whose
    /// sender asks (default false: the authenticated channel vouches).
    pub sign_all: Option<bool>,
    /// Connections in total (default 1024) and per IP address (default 32).
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    /// Where to serve metrics (Prometheus text format, at `/metrics`), a
    /// loopback address such as "127.0.0.1:9464"; off when unset.
    pub metrics: Option<std::net::SocketAddr>,
    /// What peers may make the node spend (docs/limits.md); every key
    /// defaults to the value given there.
    #[serde(default)]
    pub limits: Limits,
}

/// The `[limits]` table: budgets for what peers can make the node spend.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// MiB that frames being read may hold over all connections (64).
    pub frame_memory_mib: Option<usize>,
    /// Seconds a frame may take to arrive once begun (30).
    pub frame_deadline_secs: Option<u64>,
    /// Entries of the peer table (65536), and per remote IP address (256).
    pub max_peers: Option<usize>,
    pub max_peers_per_ip: Option<usize>,
    /// Adverts a peer may send at once (256), per second after that (16),
    /// and refused before it is disconnected (256).
    pub advert_burst: Option<u32>,
    pub adverts_per_second: Option<u32>,
    pub advert_refusals_to_disconnect: Option<u32>,
    /// Records peers sent unasked kept per kind: node (65536), topic
    /// (8192) and domain (1024) records; MiB per kind (32, 32, 8); and
    /// topic and domain records one peer may be the source of (256).
    pub cached_node_records: Option<usize>,
    pub cached_topic_records: Option<usize>,
    pub cached_domain_records: Option<usize>,
    pub cached_node_mib: Option<usize>,
    pub cached_topic_mib: Option<usize>,
    pub cached_domain_mib: Option<usize>,
    pub cached_records_per_peer: Option<usize>,
    /// Log lines of one kind one peer may cause per 10 s (5), and all
    /// peers together (60).
    pub log_lines_per_peer: Option<u32>,
    pub log_lines_total: Option<u32>,
    /// QUIC: MiB a peer may have in flight to this node beyond what it has
    /// read, per connection and per stream (4), and MiB this node keeps
    /// per stream until acknowledged (4).
    pub quic_receive_window_mib: Option<u32>,
    pub quic_send_buffer_mib: Option<u32>,
}
impl Limits {
    fn validate(&self, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        let sizes = [
            // At least the largest frame (4 MiB + 64 KiB), or such a frame
            // could never be read.
            ("frame_memory_mib", self.frame_memory_mib.map(|v| v as u64), 5, 65_536),
            ("frame_deadline_secs", self.frame_deadline_secs, 1, 3600),
            ("max_peers", self.max_peers.map(|v| v as u64), 1, 16_777_216),
            ("max_peers_per_ip", self.max_peers_per_ip.map(|v| v as u64), 1, 16_777_216),
            ("advert_burst", self.advert_burst.map(u64::from), 1, 1_000_000),
            ("adverts_per_second", self.adverts_per_second.map(u64::from), 1, 1_000_000),
            ("advert_refusals_to_disconnect", self.advert_refusals_to_disconnect.map(u64::from), 1, 1_000_000_000),
            ("cached_node_records", self.cached_node_records.map(|v| v as u64), 0, 16_777_216),
            ("cached_topic_records", self.cached_topic_records.map(|v| v as u64), 0, 16_777_216),
            ("cached_domain_records", self.cached_domain_records.map(|v| v as u64), 0, 16_777_216),
            ("cached_node_mib", self.cached_node_mib.map(|v| v as u64), 0, 65_536),
            ("cached_topic_mib", self.cached_topic_mib.map(|v| v as u64), 0, 65_536),
            ("cached_domain_mib", self.cached_domain_mib.map(|v| v as u64), 0, 65_536),
            ("cached_records_per_peer", self.cached_records_per_peer.map(|v| v as u64), 0, 16_777_216),
            ("log_lines_per_peer", self.log_lines_per_peer.map(u64::from), 0, 1_000_000),
            ("log_lines_total", self.log_lines_total.map(u64::from), 0, 1_000_000),
            ("quic_receive_window_mib", self.quic_receive_window_mib.map(u64::from), 1, 1024),
            ("quic_send_buffer_mib", self.quic_send_buffer_mib.map(u64::from), 1, 1024),
        ];
        for (key, value, min, max) in sizes {
            if let Some(value) = value {
                if !(min..=max).contains(&value) {
                    return Err(invalid(key, format!("{value} is outside {min}..={max}")));
                }
            }
        }
        Ok(())
    }
}

/// The default port for both transports.
pub const DEFAULT_PORT: u16 = 4100;

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_path_buf(), len });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| {
            // toml locates an unknown field at its table, so find the
            // field's own line by its name.
            let unknown = unknown_field(err.message());
            let line = match &unknown {
                Some(field) => line_of_key(text, field),
                None => err.span().map_or(1, |span| text[..span.start.min(text.len())].lines().count().max(1)),
            };
            let key = unknown.or_else(|| err.span().and_then(|span| key_at(text, span.start)));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key: KeyName(key),
                message: err.message().to_string(),
            }
        })?;
        config.validate(text, path)?;
        Ok(config)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            key: KeyName(Some(key.to_string())),
            message,
        };
        if let Some(capacity) = self.mailbox_capacity {
            if capacity == 0 || capacity > 1_000_000 {
                return Err(invalid("mailbox_capacity", format!("{capacity} is outside 1..=1000000")));
            }
        }
        if let Some(name) = &self.name {
            netmachine_domain::BoundedText::<{ netmachine_domain::limits::MAX_NODE_NAME_BYTES }>::new(
                "name",
                name.as_str(),
            )
            .map_err(|e| invalid("name", e.to_string()))?;
        }
        for (i, peer) in self.peers.iter().enumerate() {
            netmachine_adapters::text_forms::node_advert_from_text(peer)
                .map_err(|e| invalid("peers", format!("entry {}: {e}", i + 1)))?;
        }
        for entry in &self.listen {
            if entry.address.0.socket.ip().is_unspecified() && entry.advertise.is_none() {
                return Err(invalid(
                    "listen",
                    format!(
                        "{} listens on every interface; add `advertise = \"...\"` with the address peers should dial",
                        entry.address.0
                    ),
                ));
            }
        }
        if let Some(address) = self.metrics {
            if !address.ip().is_loopback() {
                return Err(invalid(
                    "metrics",
                    format!("{address} is not a loopback address: metrics are served to this machine only"),
                ));
            }
        }
        if let Some(mtu) = self.max_mtu {
            if !(1200..=9000).contains(&mtu) {
                return Err(invalid("max_mtu", format!("{mtu} is outside 1200..=9000")));
            }
        }
        for (key, value) in
            [("max_connections", self.max_connections), ("max_connections_per_ip", self.max_connections_per_ip)]
        {
            if value == Some(0) {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        self.limits.validate(&invalid)?;
        if self.listen.len() > netmachine_domain::limits::MAX_ADVERT_ADDRESSES {
            return Err(invalid(
                "listen",
                format!(
                    "{} addresses, at most {} fit in an advert",
                    self.listen.len(),
                    netmachine_domain::limits::MAX_ADVERT_ADDRESSES
                ),
            ));
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.data_dir().join("node.key"))
    }

    pub fn mailbox_capacity(&self) -> usize {
        self.mailbox_capacity.unwrap_or(DEFAULT_MAILBOX_CAPACITY)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| self.data_dir().join("control.sock"))
    }

    /// For commands that talk to a node: `$NETMACHINE_CONTROL` names the
    /// socket when neither the flag nor the config did.
    pub fn with_control_from_env(mut self) -> Self {
        if self.control_socket.is_none() {
            self.control_socket = std::env::var_os("NETMACHINE_CONTROL").filter(|v| !v.is_empty()).map(PathBuf::from);
        }
        self
    }

    /// What to listen on: the configured addresses, or QUIC and TLS over
    /// TCP on loopback port 4100.
    pub fn listen_specs(&self) -> Vec<ListenSpec> {
        if self.listen.is_empty() {
            let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT));
            return vec![
                ListenSpec {
                    bind: TransportAddress::new(TransportProtocol::Quic, loopback),
                    advertise: None,
                    weight: 100,
                },
                ListenSpec {
                    bind: TransportAddress::new(TransportProtocol::TlsTcp, loopback),
                    advertise: None,
                    weight: 50,
                },
            ];
        }
        self.listen
            .iter()
            .map(|l| ListenSpec { bind: l.address.0, advertise: l.advertise.map(|a| a.0), weight: l.weight })
            .collect()
    }

    /// Addresses as advertised (for `netmachine advert`, which binds nothing).
    pub fn advertised_addresses(&self) -> Vec<WeightedAddress> {
        self.listen_specs()
            .into_iter()
            .map(|l| WeightedAddress { address: l.advertise.unwrap_or(l.bind), weight: l.weight })
            .collect()
    }
}

/// `$NETMACHINE_HOME`, else `$XDG_DATA_HOME/netmachine`, else
/// `~/.local/share/netmachine`, else `./netmachine-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("NETMACHINE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("netmachine");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/netmachine");
    }
    PathBuf::from("netmachine-data")
}

/// The field named by toml's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field.to_string())
}

/// The key written at the start of the line holding byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

/// The line on which `key = ...` first appears (1 when it cannot be found).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines().position(|line| line.split_once('=').is_some_and(|(k, _)| k.trim() == key)).map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn limits_are_read_and_checked_with_their_key_and_line() {
        let config = parse("name = \"a\"\n[limits]\nmax_peers = 1024\nlog_lines_total = 10\n").expect("valid");
        assert_eq!(config.limits.max_peers, Some(1024));
        assert_eq!(config.limits.log_lines_total, Some(10));
        let err = parse("[limits]\nmax_peers = 8\nframe_deadline_secs = 0\n").expect_err("out of range");
        let text = err.to_string();
        assert!(text.contains("line 3, key `frame_deadline_secs`: 0 is outside 1..=3600"), "{text}");
        assert!(parse("[limits]\nno_such_limit = 1\n").is_err());
        let congestion = parse("quic_congestion = \"cubic\"\n").expect("valid");
        assert_eq!(congestion.quic_congestion, Some(CongestionName::Cubic));
        let err = parse("quic_congestion = \"reno\"\n").expect_err("no such controller");
        assert!(err.to_string().contains("quic_congestion"), "{err}");
        let quic = parse("[limits]\nquic_receive_window_mib = 8\nquic_send_buffer_mib = 4\n").expect("valid");
        assert_eq!((quic.limits.quic_receive_window_mib, quic.limits.quic_send_buffer_mib), (Some(8), Some(4)));
        let err = parse("[limits]\nquic_receive_window_mib = 0\n").expect_err("no window");
        assert!(err.to_string().contains("key `quic_receive_window_mib`: 0 is outside 1..=1024"), "{err}");
    }

    #[test]
    fn an_empty_config_is_all_defaults() {
        let config = parse("").expect("empty is fine");
        assert_eq!(config.mailbox_capacity(), DEFAULT_MAILBOX_CAPACITY);
        assert_eq!(config.listen_specs().len(), 2, "QUIC and TLS over TCP on loopback");
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"
data_dir = "/tmp/x"
name = "alpha"
mailbox_capacity = 64
log = "debug"

[[listen]]
address = "quic://127.0.0.1:4100"
weight = 200

[[listen]]
address = "tls-tcp://[::1]:4100"
"#,
        )
        .expect("valid");
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(config.key_file(), PathBuf::from("/tmp/x/node.key"));
        let addrs = config.advertised_addresses();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].weight, 200);
        assert_eq!(addrs[1].weight, 100);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("name = \"a\"\nmailbox_capacty = 3\n").expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("mailbox_capacty"), "{text}");
    }

    #[test]
    fn wrong_types_are_named_with_their_line() {
        let err = parse("name = \"a\"\n\nmailbox_capacity = \"lots\"\n").expect_err("type");
        let text = err.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("mailbox_capacity"), "{text}");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        let err = parse("[[listen]]\naddress = \"udp://1.2.3.4:5\"\n").expect_err("scheme");
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("unknown scheme"), "{text}");
    }

    #[test]
    fn peers_must_be_advert_text_and_wildcards_need_an_advertised_address() {
        let err = parse("peers = [\"nodeadvert1zz\"]\n").expect_err("bad advert");
        assert!(err.to_string().contains("peers") && err.to_string().contains("entry 1"), "{err}");
        let err = parse("[[listen]]\naddress = \"quic://0.0.0.0:4100\"\n").expect_err("wildcard");
        assert!(err.to_string().contains("advertise"), "{err}");
        let ok = parse("[[listen]]\naddress = \"quic://0.0.0.0:4100\"\nadvertise = \"quic://192.0.2.1:4100\"\n")
            .expect("advertised");
        assert_eq!(ok.advertised_addresses()[0].address.to_string(), "quic://192.0.2.1:4100");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = parse("\nmailbox_capacity = 0\n").expect_err("zero");
        let text = err.to_string();
        assert!(text.contains("line 2") && text.contains("mailbox_capacity"), "{text}");
    }

    #[test]
    fn broken_toml_is_located() {
        let err = parse("name = \"a\"\nname2 = [\n").expect_err("syntax");
        assert!(err.to_string().contains("line 2") || err.to_string().contains("line 3"), "{err}");
    }
}
