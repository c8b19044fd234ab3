//! The text form of binary identifiers: a human-readable prefix, the digit
//! `1`, then lowercase unpadded base32 (RFC 4648). Lowercase base32 stays a
//! valid DNS label for 32-byte keys, which lets a node identity travel as a
//! TLS server name.

use data_encoding::BASE32_NOPAD;

use crate::error::ParseError;

pub(crate) fn encode(prefix: &str, bytes: &[u8]) -> String {
    let mut text = String::with_capacity(prefix.len() + 1 + bytes.len() * 8 / 5 + 1);
    text.push_str(prefix);
    text.push('1');
    text.push_str(&BASE32_NOPAD.encode(bytes).to_ascii_lowercase());
    text
}

pub(crate) fn decode(prefix: &'static str, what: &'static str, text: &str) -> Result<Vec<u8>, ParseError> {
    let text = text.trim();
    let body = text.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('1')).ok_or_else(|| {
        ParseError::WrongPrefix { expected: prefix_with_separator(prefix), found: text.chars().take(16).collect() }
    })?;
    if body.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ParseError::Malformed { what, reason: "base32 part must be lowercase".into() });
    }
    BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|err| ParseError::Malformed { what, reason: format!("not valid base32: {err}") })
}

fn prefix_with_separator(prefix: &'static str) -> &'static str {
    match prefix {
        "node" => "node1",
        "topic" => "topic1",
        "domain" => "domain1",
        "key" => "key1",
        "nodeadvert" => "nodeadvert1",
        "topicadvert" => "topicadvert1",
        "domainadvert" => "domainadvert1",
        _ => "a known prefix",
    }
}
