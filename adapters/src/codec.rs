//! Frames as deterministic CBOR (ciborium) behind a two-byte header: the
//! format version, then the frame kind. The size limit is checked before
//! any decoding, and every decode failure is a typed error.

use bytes::Bytes;
use netmachine_domain::limits::MAX_FRAME_BYTES;
use netmachine_domain::{Frame, FrameKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The frame format this codec writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the CBOR body.
pub const HEADER_LEN: usize = 2;
/// The header kind of a channel message: a node message in the compact
/// form an established connection allows (see [`ChannelEnds`]). Kinds 1 to
/// 7 are the [`FrameKind`]s, which stand alone.
pub const CHANNEL_MESSAGE_KIND: u8 = 8;

pub use engine_frame::{ChannelEnds, DeferredBody, NameCache};

/// A frame that could not be encoded or decoded. Every decode failure is one
/// of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame is truncated: {len} bytes, a header needs {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("frame format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("frame kind {0} is unknown")]
    UnknownKind(u8),
    #[error("frame header says kind {header:?} but the body is {body:?}")]
    KindMismatch { header: u8, body: u8 },
    #[error("frame body is malformed: {0}")]
    Malformed(String),
    #[error("frame could not be encoded: {0}")]
    Encode(String),
}

/// Turns frames into bytes and back.
pub trait Codec: Send + Sync {
    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, CodecError>;
    fn decode(&self, bytes: &[u8]) -> Result<Frame, CodecError>;
}

#[derive(Debug, Clone, Copy)]
pub struct CborCodec {
    max_frame: usize,
}

impl Default for CborCodec {
    fn default() -> Self {
        Self { max_frame: MAX_FRAME_BYTES }
    }
}

impl CborCodec {
    /// A codec with a lower frame limit than the protocol maximum.
    pub fn with_max_frame(max_frame: usize) -> Self {
        Self { max_frame: max_frame.min(MAX_FRAME_BYTES) }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Writes header and body of a frame sent over an established
    /// connection: a node message from this node's own engines in the
    /// compact channel form, anything else as [`Codec::encode`] does.
    pub fn encode_on_channel(&self, frame: &Frame, ends: ChannelEnds, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let _whole = self.encode_on_channel_deferring(frame, ends, out, usize::MAX)?;
        Ok(())
    }

    /// As [`Self::encode_on_channel`], but a channel message's body of
    /// `defer_from` bytes or more is left out and handed back, with the
    /// place it belongs, to be written as it is.
    pub fn encode_on_channel_deferring(
        &self,
        frame: &Frame,
        ends: ChannelEnds,
        out: &mut Vec<u8>,
        defer_from: usize,
    ) -> Result<Option<DeferredBody>, CodecError> {
        let start = out.len();
        out.extend_from_slice(&[FORMAT_VERSION, CHANNEL_MESSAGE_KIND]);
        match engine_frame::encode_on_channel(frame, ends, out, defer_from) {
            Ok(deferred) => Ok(deferred),
            Err(engine_frame::NotChannel) => {
                out[start + 1] = frame.kind() as u8;
                frame_to_cbor(frame, out)?;
                Ok(None)
            }
        }
    }

    /// Reads a frame that arrived over an established connection, where
    /// channel messages may appear besides every other kind.
    pub fn decode_on_channel(
        &self,
        bytes: &[u8],
        ends: ChannelEnds,
        names: &mut NameCache,
    ) -> Result<Frame, CodecError> {
        self.decode_on_channel_from(bytes, None, ends, names)
    }

    /// As [`Self::decode_on_channel`], for a frame that has a buffer of its
    /// own: a channel message's body is then a view of that buffer, not a
    /// copy (what large frames want; a small one is better copied than
    /// holding a whole read buffer alive).
    pub fn decode_on_channel_shared(
        &self,
        frame: &Bytes,
        ends: ChannelEnds,
        names: &mut NameCache,
    ) -> Result<Frame, CodecError> {
        self.decode_on_channel_from(frame, Some(frame), ends, names)
    }

    fn decode_on_channel_from(
        &self,
        bytes: &[u8],
        backing: Option<&Bytes>,
        ends: ChannelEnds,
        names: &mut NameCache,
    ) -> Result<Frame, CodecError> {
        if bytes.len() >= HEADER_LEN && bytes[0] == FORMAT_VERSION && bytes[1] == CHANNEL_MESSAGE_KIND {
            if bytes.len() > self.max_frame {
                return Err(CodecError::TooLarge { len: bytes.len(), max: self.max_frame });
            }
            return engine_frame::decode_on_channel(&bytes[HEADER_LEN..], backing, ends, names)
                .ok_or_else(|| CodecError::Malformed("not a valid channel message".into()));
        }
        self.decode(bytes)
    }
}

/// Encodes any serde value as CBOR.
pub fn to_cbor<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    ciborium::into_writer(value, out).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes a frame's CBOR body: the hand-written writer for engine messages,
/// serde for everything else.
pub fn frame_to_cbor(frame: &Frame, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if engine_frame::encode(frame, out) {
        return Ok(());
    }
    to_cbor(frame, out)
}

/// Decodes a frame's CBOR body (after the header), refusing trailing bytes
/// and any encoding but the one this codec writes: serde's reader takes
/// tags, non-minimal lengths and integers that stand for the same value,
/// and one frame must have one encoding (repeat filters, signatures over
/// relayed bytes and golden tests rely on it).
fn frame_from_cbor(kind: FrameKind, bytes: &[u8]) -> Result<Frame, CodecError> {
    if kind == FrameKind::Node {
        if let Some(frame) = engine_frame::decode(bytes) {
            return Ok(frame);
        }
    }
    let frame: Frame = from_cbor(bytes)?;
    let mut again = Vec::with_capacity(bytes.len());
    frame_to_cbor(&frame, &mut again)?;
    if again != bytes {
        return Err(CodecError::Malformed("not in the canonical encoding".into()));
    }
    Ok(frame)
}

/// Decodes a serde value from CBOR, refusing trailing bytes.
pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(CodecError::Malformed(format!("{} bytes after the end of the value", reader.len())));
    }
    Ok(value)
}

impl Codec for CborCodec {
    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.push(FORMAT_VERSION);
        out.push(frame.kind() as u8);
        frame_to_cbor(frame, &mut out)?;
        if out.len() > self.max_frame {
            return Err(CodecError::TooLarge { len: out.len(), max: self.max_frame });
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Frame, CodecError> {
        if bytes.len() > self.max_frame {
            return Err(CodecError::TooLarge { len: bytes.len(), max: self.max_frame });
        }
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::Truncated { len: bytes.len(), needed: HEADER_LEN });
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion(bytes[0]));
        }
        if bytes[1] == CHANNEL_MESSAGE_KIND {
            return Err(CodecError::Malformed("a channel message outside an established connection".into()));
        }
        let kind = FrameKind::from_u8(bytes[1]).ok_or(CodecError::UnknownKind(bytes[1]))?;
        let frame = frame_from_cbor(kind, &bytes[HEADER_LEN..])?;
        if frame.kind() != kind {
            return Err(CodecError::KindMismatch { header: kind as u8, body: frame.kind() as u8 });
        }
        Ok(frame)
    }
}

mod engine_frame;

#[cfg(test)]
mod tests;
