//! How many entries of the peer table each remote IP address holds. One
//! address (one machine, or one botnet member) may hold only a share of
//! the table, so fresh identities minted from it push out its own
//! strangers rather than every newcomer's room. Only peers that dialled in
//! from an address are counted (each peer keeps the address it first came
//! from); peers this node dialled are its choice.
//!
//! An IPv6 address counts by its /64 prefix, what one host is usually
//! given, and an IPv4-mapped one as its IPv4 address.
//!
//! The counts are kept only while the table holds more entries than one
//! address's share: below that no address can reach its share, and a
//! node with a small table (the simulator's, most embedded ones) pays
//! nothing for them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU64;

/// What a peer's entry counts against: its IPv4 address, or its IPv6
/// address's /64 prefix, in 8 bytes.
pub(super) type ShareKey = NonZeroU64;

pub(super) fn share_key(address: IpAddr) -> ShareKey {
    let v4 = |v4: std::net::Ipv4Addr| (1u64 << 32) | u64::from(u32::from(v4));
    let key = match address {
        IpAddr::V4(v4_address) => v4(v4_address),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => (u128::from(v6) >> 64) as u64,
        },
    };
    NonZeroU64::new(key).unwrap_or(NonZeroU64::MIN)
}

#[derive(Debug, Default)]
pub(super) struct IpShares {
    #[allow(clippy::box_collection, reason = "8 bytes in every node while unused, not the 48 of an empty map")]
    held: Option<Box<HashMap<ShareKey, u32>>>,
}

impl IpShares {
    pub(super) fn is_counting(&self) -> bool {
        self.held.is_some()
    }

    /// Starts counting, from the addresses of the peers in the table.
    pub(super) fn start(&mut self, addresses: impl Iterator<Item = ShareKey>) {
        let mut held = HashMap::new();
        for address in addresses {
            *held.entry(address).or_default() += 1;
        }
        self.held = Some(Box::new(held));
    }

    pub(super) fn stop(&mut self) {
        self.held = None;
    }

    /// Entries `address` holds (0 while not counting).
    pub(super) fn held_by(&self, address: ShareKey) -> usize {
        self.held.as_ref().and_then(|held| held.get(&address)).map_or(0, |n| *n as usize)
    }

    /// A peer from `address` entered the table.
    pub(super) fn count(&mut self, address: ShareKey) {
        if let Some(held) = &mut self.held {
            *held.entry(address).or_default() += 1;
        }
    }

    /// A peer from `address` left the table.
    pub(super) fn release(&mut self, address: ShareKey) {
        if let Some(held) = &mut self.held {
            if let Some(n) = held.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_by_its_prefix_and_a_mapped_address_as_ipv4() {
        let parse = |text: &str| share_key(text.parse().expect("address"));
        assert_eq!(parse("2001:db8::1"), parse("2001:db8::ffff:1"), "one /64");
        assert_ne!(parse("2001:db8::1"), parse("2001:db8:0:1::1"), "another /64");
        assert_eq!(parse("::ffff:10.0.0.1"), parse("10.0.0.1"));
        assert_ne!(parse("10.0.0.1"), parse("10.0.0.2"));
        assert_ne!(parse("10.0.0.1"), parse("0:0:a00:1::1"), "an IPv4 address is no IPv6 prefix");
    }

    #[test]
    fn counts_are_kept_only_between_start_and_stop() {
        let key = share_key("10.0.0.1".parse().expect("address"));
        let mut shares = IpShares::default();
        shares.count(key);
        assert!(!shares.is_counting());
        assert_eq!(shares.held_by(key), 0);
        shares.start([key, key].into_iter());
        assert!(shares.is_counting());
        shares.count(key);
        shares.release(key);
        assert_eq!(shares.held_by(key), 2);
        shares.release(key);
        shares.release(key);
        assert_eq!(shares.held_by(key), 0);
        shares.stop();
        assert!(!shares.is_counting());
    }
}
