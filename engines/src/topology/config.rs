//! The overlay's parameters: HyParView's, from the paper and iroh-gossip's
//! defaults, with the timeouts at WAN values (SPEC-v2 section 11 (e)).

/// How a view that lost a peer fills up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// HyParView: at once, from the passive view, when a peer is noticed
    /// gone.
    Reactive,
    /// The baseline the simulator compares against: only at the next
    /// shuffle period, as a view refreshed by shuffles alone would.
    PeriodicOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Connected neighbours kept.
    pub active: usize,
    /// Known members kept in reserve.
    pub passive: usize,
    /// Members met lately, kept apart from the views: the last resort of a
    /// node that a failure left with neither neighbour nor passive member.
    pub recent: usize,
    /// Hops a forward-join walks (ARWL).
    pub active_walk: u8,
    /// The hop at which a forward-join leaves its joiner in the passive
    /// view (PRWL).
    pub passive_walk: u8,
    /// Hops a shuffle walks.
    pub shuffle_walk: u8,
    /// Active entries a shuffle carries (`ka`).
    pub shuffle_active: usize,
    /// Passive entries a shuffle carries (`kp`).
    pub shuffle_passive: usize,
    pub shuffle_interval_ms: u64,
    /// How long a neighbour request waits for its answer.
    pub neighbor_timeout_ms: u64,
    pub repair: Repair,
    /// A domain whose allow-list names at most this many members keeps a
    /// full mesh.
    pub full_mesh_max: usize,
    /// The active view's size in a full mesh.
    pub full_mesh_active: usize,
    /// Shuffles accepted from one neighbour per shuffle period.
    pub shuffles_per_neighbor: u32,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            active: 5,
            passive: 30,
            recent: 64,
            active_walk: 6,
            passive_walk: 3,
            shuffle_walk: 6,
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_interval_ms: 60_000,
            neighbor_timeout_ms: 2_000,
            repair: Repair::Reactive,
            full_mesh_max: 8,
            full_mesh_active: 64,
            shuffles_per_neighbor: 16,
        }
    }
}
