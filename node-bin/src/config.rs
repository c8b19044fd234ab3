//! The node's TOML configuration. Every key is optional: a node with no
//! configuration at all runs on built-in defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use netmachine_adapters::runtime::DEFAULT_MAILBOX_CAPACITY;
use netmachine_domain::{TransportAddress, WeightedAddress};
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
    pub address: AddressText,
    #[serde(default = "default_weight")]
    pub weight: u8,
}

fn default_weight() -> u8 {
    100
}

/// A transport address parsed from its text form.
#[derive(Debug, Clone, Copy)]
pub struct AddressText(pub TransportAddress);

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
    #[serde(default)]
    pub listen: Vec<ListenEntry>,
}

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

    pub fn advertised_addresses(&self) -> Vec<WeightedAddress> {
        self.listen.iter().map(|l| WeightedAddress { address: l.address.0, weight: l.weight }).collect()
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
    fn an_empty_config_is_all_defaults() {
        let config = parse("").expect("empty is fine");
        assert_eq!(config.mailbox_capacity(), DEFAULT_MAILBOX_CAPACITY);
        assert!(config.listen.is_empty());
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
