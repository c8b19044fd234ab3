//! A hostile peer takes nothing from honest ones. Each test drives one
//! attack (`netmachine_harness::attacks`) against a real `netmachine run`
//! process on loopback and checks three things: the resource it goes for
//! stays within its budget (docs/limits.md), an honest newcomer's message
//! is acknowledged during and after the attack, and the attacker is slowed
//! or cut off. Each would fail against the node before these budgets; the
//! figures from before are in docs/limits.md.

use netmachine_harness::attacks::{run, Outcome};

const MIB: u64 = 1024 * 1024;

async fn attack(name: &str) -> Outcome {
    let outcome = run(name, true).await.expect("a known attack");
    eprintln!("{outcome:?}");
    assert_eq!(outcome.honest_during, Ok(()), "an honest newcomer got through during the attack");
    assert_eq!(outcome.honest_after, Ok(()), "an honest newcomer got through after the attack");
    assert!(outcome.attacker_stopped, "the attacker was slowed or cut off: {outcome:?}");
    outcome
}

/// Frame memory: 240 connections announcing 4 MiB frames (and sending 512
/// KiB of each) cost at most the 64 MiB frame budget and the connections'
/// own buffers; before, each announced length was reserved at once (1 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_lengths_are_not_trusted() {
    let outcome = attack("frame-lengths").await;
    assert!(outcome.spent <= 160 * MIB, "peak RSS grew by {} MiB", outcome.spent / MIB);
}

/// Records, disk and the spread: one peer's maximal topic adverts are
/// taken up to its share of the cache (256), its peer hears of no more,
/// and the peer is cut off; before, 37,000 were taken in a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_adverts_count_against_it() {
    let outcome = attack("advert-flood").await;
    assert!(outcome.note("records_taken") <= 260, "{outcome:?}");
    assert!(outcome.note("records_at_its_peer") <= 270, "{outcome:?}");
    assert!(outcome.spent <= 32 * MIB, "the store grew by {} MiB", outcome.spent / MIB);
}

/// The peer table: fresh identities churning from eight addresses hold at
/// most the table (1024 here), and a newcomer still gets a place; before,
/// a full table refused every newcomer for ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_lock_out_newcomers() {
    let outcome = attack("identity-churn").await;
    assert!(outcome.spent <= 1024, "{outcome:?}");
    assert!(outcome.note("evicted") > 0, "{outcome:?}");
}

/// Log volume: 20,000 dropped messages from one peer write a few dozen
/// lines and a summary naming it; before, a line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_flood_the_log() {
    let outcome = attack("log-flood").await;
    assert!(outcome.spent <= 64 * 1024, "the log grew by {} bytes: {outcome:?}", outcome.spent);
    assert!(outcome.note("lines_held_back") >= 19_000, "each held-back line is counted: {outcome:?}");
}

/// Pending handshakes and connection slots: 200 silent TCP sockets do not
/// keep an honest newcomer out, and are closed; a truncated frame after
/// the handshake loses its connection at the frame deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_starve_handshakes() {
    let outcome = attack("half-open").await;
    assert!(outcome.note("refused_address_busy") > 0, "{outcome:?}");
}

/// Mailbox space: a peer flooding the inbox loses its own messages and is
/// told; an honest peer's messages before and after the flood all stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_sender_loses_its_own_messages() {
    let outcome = attack("mailbox-flood").await;
    assert_eq!(outcome.spent, 0, "{outcome:?}");
}
