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

pub fn node_advert_to_text(advert: &NodeAdvert) -> Result<String, CodecError> {
    let bytes = CborCodec::default().encode(&Frame::NodeAdvert(advert.clone()))?;
    Ok(format!("{NODE_ADVERT_PREFIX}{}", BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()))
}

/// Parses advert text. The signature is not checked here: the identity
/// store checks it when the advert is offered.
pub fn node_advert_from_text(text: &str) -> Result<NodeAdvert, AdvertTextError> {
    let body = text.trim().strip_prefix(NODE_ADVERT_PREFIX).ok_or(AdvertTextError::WrongPrefix)?;
    // Base32 inflates by 8/5: refuse text that could not fit a frame.
    let max_chars = CborCodec::default().max_frame() * 8 / 5 + 8;
    if body.len() > max_chars {
        return Err(AdvertTextError::Codec(CodecError::TooLarge { len: body.len() * 5 / 8, max: max_chars * 5 / 8 }));
    }
    let bytes = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|e| AdvertTextError::Base32(e.to_string()))?;
    match CborCodec::default().decode(&bytes)? {
        Frame::NodeAdvert(advert) => Ok(advert),
        other => Err(AdvertTextError::NotANodeAdvert(other.kind())),
    }
}

pub fn domain_advert_to_text(advert: &DomainAdvert) -> Result<String, CodecError> {
    let bytes = CborCodec::default().encode(&Frame::DomainAdvert(advert.clone()))?;
    Ok(format!("{DOMAIN_ADVERT_PREFIX}{}", BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()))
}

/// Parses domain advert text; the signature is the domain engine's to
/// check.
pub fn domain_advert_from_text(text: &str) -> Result<DomainAdvert, AdvertTextError> {
    let body = text.trim().strip_prefix(DOMAIN_ADVERT_PREFIX).ok_or(AdvertTextError::WrongDomainPrefix)?;
    let max_chars = CborCodec::default().max_frame() * 8 / 5 + 8;
    if body.len() > max_chars {
        return Err(AdvertTextError::Codec(CodecError::TooLarge { len: body.len() * 5 / 8, max: max_chars * 5 / 8 }));
    }
    let bytes = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|e| AdvertTextError::Base32(e.to_string()))?;
    match CborCodec::default().decode(&bytes)? {
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
