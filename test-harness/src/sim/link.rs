//! A simulated connection: two ends, and one ordered stream of frames in
//! each direction.

use std::collections::VecDeque;

use netmachine_domain::Frame;
use netmachine_engines::transport::ConnId;

/// What a frame other than a message weighs on a link (a handshake frame,
/// an acknowledgement, an advert).
pub(crate) const CONTROL_FRAME_BYTES: usize = 64;

/// One direction of a simulated connection: an ordered stream of frames.
#[derive(Debug, Default)]
pub(crate) struct Direction {
    /// Sent and not yet delivered: (seq, frame, arrived). Those that
    /// arrived wait behind an earlier one that has not (head-of-line).
    pub(crate) in_flight: VecDeque<(u64, Frame, bool)>,
    pub(crate) next_seq: u64,
    pub(crate) busy_until_us: u64,
    pub(crate) last_arrival_us: u64,
}

/// A simulated connection. Slots are reused once both ends have closed;
/// events name a link by slot and epoch, so late ones for a reused slot
/// are ignored.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) epoch: u32,
    pub(crate) ends: [u32; 2],
    pub(crate) generations: [u64; 2],
    pub(crate) conns: [ConnId; 2],
    pub(crate) open: [bool; 2],
    pub(crate) dirs: [Direction; 2],
}
