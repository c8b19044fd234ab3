//! Slots for clients that have not yet said what they want: inbound
//! handshakes on a listener, control clients before their request line.
//! Silent sockets must not starve honest clients: one source (an IP
//! address) may hold only a few slots at once, and when the table is full
//! the oldest unfinished client is pushed out to make room. An honest
//! client takes milliseconds, so it is pushed out only if the whole table
//! turns over while it runs.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Handshakes in progress from one address on a listener.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;
/// Handshakes in progress on one listener.
pub const MAX_PENDING: usize = 256;

#[derive(Debug)]
pub struct PendingSlots<K> {
    per_source: usize,
    total: usize,
    state: Mutex<Table<K>>,
}

#[derive(Debug)]
struct Table<K> {
    next: u64,
    /// Oldest first: each client's source and what tells it to give up.
    by_age: BTreeMap<u64, (K, oneshot::Sender<()>)>,
    per_source: HashMap<K, usize>,
}

/// Why a client was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceBusy;

/// A client's place in the table; dropping it frees the place.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Copy> {
    id: u64,
    table: Arc<PendingSlots<K>>,
    /// Fires when a newer client pushed this one out.
    pub pushed_out: oneshot::Receiver<()>,
}

impl<K: Hash + Eq + Copy> PendingSlots<K> {
    /// At most `per_source` slots for one source and `total` in all.
    pub fn new(per_source: usize, total: usize) -> Self {
        let table = Table { next: 0, by_age: BTreeMap::new(), per_source: HashMap::new() };
        Self { per_source: per_source.max(1), total: total.max(1), state: Mutex::new(table) }
    }

    /// Takes a slot for a client from `source`, pushing out the oldest if
    /// the table is full; refused if the source holds its share.
    pub fn admit(self: &Arc<Self>, address: K) -> Result<Slot<K>, SourceBusy> {
        let mut table = self.state.lock();
        let held = table.per_source.get(&address).copied().unwrap_or(0);
        if held >= self.per_source {
            return Err(SourceBusy);
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
        *table.per_source.entry(address).or_default() += 1;
        Ok(Slot { id, table: Arc::clone(self), pushed_out })
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().by_age.len()
    }
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn release(&mut self, source: K) {
        if let Some(held) = self.per_source.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

impl<K: Hash + Eq + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut table = self.table.state.lock();
        if let Some((address, _)) = table.by_age.remove(&self.id) {
            table.release(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share() {
        let table = Arc::new(PendingSlots::new(2, 10));
        let first = table.admit(ip(1)).expect("room");
        let _second = table.admit(ip(1)).expect("room");
        assert_eq!(table.admit(ip(1)).map(|_| ()), Err(SourceBusy));
        assert!(table.admit(ip(2)).is_ok(), "another address is not held back");
        drop(first);
        assert!(table.admit(ip(1)).is_ok(), "a finished handshake frees its address's share");
    }

    #[test]
    fn a_full_table_pushes_out_the_oldest() {
        let table = Arc::new(PendingSlots::new(4, 3));
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
