//! Size limits on every variable-length field. Inputs from outside are
//! checked against these before they touch any state.

/// The largest body of an engine message (4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The largest encoded frame a codec accepts: a maximal body plus headroom
/// for the envelope.
pub const MAX_FRAME_BYTES: usize = MAX_BODY_BYTES + 64 * 1024;
/// Transport addresses in one NodeAdvert.
pub const MAX_ADVERT_ADDRESSES: usize = 16;
/// Bytes in a node's optional display name.
pub const MAX_NODE_NAME_BYTES: usize = 64;
/// Publishers named in one TopicAdvert.
pub const MAX_TOPIC_PUBLISHERS: usize = 256;
/// Relays named in one TopicAdvert.
pub const MAX_TOPIC_RELAYS: usize = 64;
/// Tags of one TopicAdvert.
pub const MAX_TOPIC_TAGS: usize = 32;
/// Bytes in one topic tag.
pub const MAX_TAG_BYTES: usize = 64;
/// Contact nodes in one DomainAdvert.
pub const MAX_DOMAIN_NODES: usize = 64;
/// Nodes in a domain's allow-list join policy.
pub const MAX_DOMAIN_ALLOW_LIST: usize = 1024;
/// Bytes in a protocol name.
pub const MAX_PROTOCOL_NAME_BYTES: usize = 64;
/// Bytes of the sealed inner message of a relay message.
pub const MAX_RELAY_SEALED_BYTES: usize = MAX_BODY_BYTES + 16 * 1024;
/// How far ahead of the local clock an advert's `created` may be (clock skew
/// tolerated between nodes): five minutes.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
