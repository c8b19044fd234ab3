//! Inbound handshakes in progress on a listener. Silent sockets must not
//! starve honest diallers: one address may hold only a few handshakes at
//! once, and when the listener holds as many as it may, the oldest
//! unfinished one is pushed out to make room. An honest handshake takes
//! milliseconds, so it is pushed out only if the whole table turns over
//! while it runs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Handshakes in progress from one address.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;
/// Handshakes in progress on one listener.
pub const MAX_PENDING: usize = 256;

#[derive(Debug)]
pub(crate) struct PendingHandshakes {
    per_address: usize,
    total: usize,
    state: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// Oldest first: each handshake and what tells it to give up.
    by_age: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddressBusy;

/// A handshake's place in the table; leaving frees it.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    table: Arc<PendingHandshakes>,
    /// Fires when a newer handshake pushed this one out.
    pub pushed_out: oneshot::Receiver<()>,
}

impl Default for PendingHandshakes {
    fn default() -> Self {
        Self::new(MAX_PENDING_PER_ADDRESS, MAX_PENDING)
    }
}

impl PendingHandshakes {
    pub(crate) fn new(per_address: usize, total: usize) -> Self {
        Self { per_address: per_address.max(1), total: total.max(1), state: Mutex::default() }
    }

    /// Takes a slot for a handshake from `address`, pushing out the oldest
    /// if the table is full; refused if the address holds its share.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, AddressBusy> {
        let mut table = self.state.lock();
        let held = table.per_address.get(&address).copied().unwrap_or(0);
        if held >= self.per_address {
            return Err(AddressBusy);
        }
        while table.by_age.len() >= self.total {
            let Some((_, (oldest, give_up))) = table.by_age.pop_first() else { break };
            table.release(oldest);
            let _ = give_up.send(());
        }
        let id = table.next;
        table.next += 1;
        let (give_up, pushed_out) = oneshot::channel();
        table.by_age.insert(id, (address, give_up));
        *table.per_address.entry(address).or_default() += 1;
        Ok(Slot { id, table: Arc::clone(self), pushed_out })
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().by_age.len()
    }
}

impl Table {
    fn release(&mut self, address: IpAddr) {
        if let Some(held) = self.per_address.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                self.per_address.remove(&address);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.table.state.lock();
        if let Some((address, _)) = table.by_age.remove(&self.id) {
            table.release(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share() {
        let table = Arc::new(PendingHandshakes::new(2, 10));
        let first = table.admit(ip(1)).expect("room");
        let _second = table.admit(ip(1)).expect("room");
        assert_eq!(table.admit(ip(1)).map(|_| ()), Err(AddressBusy));
        assert!(table.admit(ip(2)).is_ok(), "another address is not held back");
        drop(first);
        assert!(table.admit(ip(1)).is_ok(), "a finished handshake frees its address's share");
    }

    #[test]
    fn a_full_table_pushes_out_the_oldest() {
        let table = Arc::new(PendingHandshakes::new(4, 3));
        let mut oldest = table.admit(ip(1)).expect("room");
        let mut middle = table.admit(ip(2)).expect("room");
        let _newer = table.admit(ip(3)).expect("room");
        let _newest = table.admit(ip(4)).expect("room");
        assert!(oldest.pushed_out.try_recv().is_ok(), "the oldest was told to give up");
        assert!(middle.pushed_out.try_recv().is_err(), "the others were not");
        assert_eq!(table.len(), 3);
        drop(oldest);
        assert_eq!(table.len(), 3, "a pushed-out slot was already freed");
        assert!(table.admit(ip(1)).is_ok());
    }
}
