//! The text form of signed adverts: a prefix, `1`, then lowercase base32 of
//! the advert's encoded frame. This is what `netmachine advert` prints and
//! what a peer's configuration accepts.

use data_encoding::BASE32_NOPAD;
use netmachine_domain::{DomainAdvert, Frame, NodeAdvert};
use thiserror::Error;

use crate::codec::{CborCodec, Codec, CodecError};

pub const NODE_ADVERT_PREFIX: &str = "nodeadvert1";
pub const DOMAIN_ADVERT_PREFIX: &str = "domainadvert1";

#[derive(Debug, Error)]
pub enum AdvertTextError {
    #[error("a node advert starts with {NODE_ADVERT_PREFIX:?}; run `netmachine advert` on the peer to get one")]
    WrongPrefix,
    #[error("the node advert text is not valid base32 (was it cut or wrapped?): {0}")]
    Base32(String),
    #[error("the node advert text does not decode: {0}")]
    Codec(#[from] CodecError),
    #[error("the text holds a {0:?} frame, not the advert expected")]
    NotANodeAdvert(netmachine_domain::FrameKind),
    #[error("a domain advert starts with {DOMAIN_ADVERT_PREFIX:?}; run `netmachine domain advert <domain>` on a member to get one")]
    WrongDomainPrefix,
}

/// The text form of `frame` under `prefix`.
fn frame_to_text(prefix: &str, frame: &Frame) -> Result<String, CodecError> {
    let bytes = CborCodec::default().encode(frame)?;
    Ok(format!("{prefix}{}", BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()))
}

/// The frame in text of the form [`frame_to_text`] writes.
fn frame_from_text(prefix: &str, text: &str, wrong_prefix: AdvertTextError) -> Result<Frame, AdvertTextError> {
    let body = text.trim().strip_prefix(prefix).ok_or(wrong_prefix)?;
    // Base32 inflates by 8/5: refuse text that could not fit a frame.
    let max_chars = CborCodec::default().max_frame() * 8 / 5 + 8;
    if body.len() > max_chars {
        return Err(AdvertTextError::Codec(CodecError::TooLarge { len: body.len() * 5 / 8, max: max_chars * 5 / 8 }));
    }
    let bytes = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|e| AdvertTextError::Base32(e.to_string()))?;
    Ok(CborCodec::default().decode(&bytes)?)
}

pub fn node_advert_to_text(advert: &NodeAdvert) -> Result<String, CodecError> {
    frame_to_text(NODE_ADVERT_PREFIX, &Frame::NodeAdvert(advert.clone()))
}

/// Parses advert text. The signature is not checked here: the identity
/// store checks it when the advert is offered.
pub fn node_advert_from_text(text: &str) -> Result<NodeAdvert, AdvertTextError> {
    match frame_from_text(NODE_ADVERT_PREFIX, text, AdvertTextError::WrongPrefix)? {
        Frame::NodeAdvert(advert) => Ok(advert),
        other => Err(AdvertTextError::NotANodeAdvert(other.kind())),
    }
}

pub fn domain_advert_to_text(advert: &DomainAdvert) -> Result<String, CodecError> {
    frame_to_text(DOMAIN_ADVERT_PREFIX, &Frame::DomainAdvert(advert.clone()))
}

/// Parses domain advert text; the signature is the domain engine's to
/// check.
pub fn domain_advert_from_text(text: &str) -> Result<DomainAdvert, AdvertTextError> {
    match frame_from_text(DOMAIN_ADVERT_PREFIX, text, AdvertTextError::WrongDomainPrefix)? {
        Frame::DomainAdvert(advert) => Ok(advert),
        other => Err(AdvertTextError::NotANodeAdvert(other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::{Advert, NodeAdvertBody, Timestamp, WeightedAddress};
    use netmachine_engines::ports::Signer;

    use super::*;
    use crate::crypto::Ed25519Keys;

    #[test]
    fn adverts_round_trip_through_text() {
        let keys = Ed25519Keys::generate().expect("keygen");
        let address = "quic://127.0.0.1:4100".parse().expect("valid");
        let body = NodeAdvertBody::new(
            keys.node_identity(),
            vec![WeightedAddress { address, weight: 100 }],
            Some("alpha"),
            3,
            Timestamp(42),
        )
        .expect("valid");
        let sig = keys.sign(&NodeAdvert::signing_bytes_of(&body));
        let advert = Advert::from_parts(body, sig);
        let text = node_advert_to_text(&advert).expect("encodes");
        assert!(text.starts_with(NODE_ADVERT_PREFIX));
        assert_eq!(node_advert_from_text(&text).expect("parses"), advert);
        assert!(matches!(node_advert_from_text("node1abc"), Err(AdvertTextError::WrongPrefix)));
        assert!(matches!(node_advert_from_text("nodeadvert1!!!"), Err(AdvertTextError::Base32(_))));
        let cut = &text[..text.len() - 10];
        assert!(node_advert_from_text(cut).is_err());
    }
}
