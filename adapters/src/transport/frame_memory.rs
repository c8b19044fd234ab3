//! Memory for the frames being read, shared by every connection of a node.
//! A frame's buffer grows as its bytes arrive and each piece is paid for
//! here first, so a length prefix alone costs nothing, and all the
//! connections together never hold more than the budget in half-read
//! frames.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a frame may take to arrive once its first byte has: a peer
/// that starts a frame and stalls loses the connection. At the largest
/// frame it asks for about 140 KiB/s.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// The default total: room for 16 frames of the largest size at once.
pub const DEFAULT_FRAME_MEMORY: usize = 64 * 1024 * 1024;

/// A node's budget of bytes for frames being read.
#[derive(Debug, Clone)]
pub struct FrameMemory {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl Default for FrameMemory {
    fn default() -> Self {
        Self::new(DEFAULT_FRAME_MEMORY)
    }
}

impl FrameMemory {
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// Bytes held by frames being read now.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// Waits for `bytes` of the budget; they return when the permit drops.
    /// A request larger than the whole budget waits for all of it.
    pub(crate) async fn take(&self, bytes: usize) -> OwnedSemaphorePermit {
        let wanted = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        // The semaphore is never closed.
        Arc::clone(&self.bytes).acquire_many_owned(wanted).await.expect("the frame budget is never closed")
    }
}

/// What frames being read may take: the node's memory for them, and how
/// long one may take to arrive once begun.
#[derive(Debug, Clone)]
pub struct FrameLimits {
    pub memory: FrameMemory,
    pub deadline: std::time::Duration,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self { memory: FrameMemory::default(), deadline: FRAME_DEADLINE }
    }
}
