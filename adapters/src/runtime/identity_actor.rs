//! Hosts the Network Identity Store on a thread of its own with a bounded
//! mailbox. Its record store does blocking disk I/O, which must never stall
//! the async workers that carry messages. Each change the store checks comes
//! back as a `Persist`: it is written here, and only once the write has
//! succeeded is it committed and announced.

use std::sync::Arc;

use crate::clock::Clock;
use crate::store::RecordStore;
use netmachine_domain::{EngineName, IdentityRecord, NodeAdvert, NodeIdentity, Permanence, RecordKey, Trust};
use netmachine_engines::identity_store::{Accepted, AdvertUpdate, IdentityStore, Persist, UpdateError};
use tokio::sync::{mpsc, oneshot};

use super::error::NodeError;
use crate::crypto::RingVerifier;

/// What the identity actor can be asked.
pub(crate) enum IdentityCommand {
    Apply(AdvertUpdate, oneshot::Sender<Result<Accepted, NodeError>>),
    SetOwnAdvert(NodeAdvert, oneshot::Sender<Result<Accepted, NodeError>>),
    SetPermanence(NodeIdentity, Permanence, oneshot::Sender<Result<Accepted, NodeError>>),
    SetTrust(NodeIdentity, Trust, oneshot::Sender<Result<Accepted, NodeError>>),
    Lookup(RecordKey, oneshot::Sender<Option<IdentityRecord>>),
    All(oneshot::Sender<Vec<IdentityRecord>>),
    Subscribe(EngineName, oneshot::Sender<bool>),
    Unsubscribe(EngineName),
}

/// Called with every accepted change, on the actor's thread, so the node
/// can update the Router and tell subscribers.
pub(crate) type OnAccepted = Box<dyn Fn(&Accepted) + Send>;

pub(crate) const IDENTITY_MAILBOX: usize = 1024;

pub(crate) fn spawn_identity_actor(
    mut store: IdentityStore,
    mut disk: Box<dyn RecordStore>,
    clock: Arc<dyn Clock>,
    on_accepted: OnAccepted,
) -> std::io::Result<(mpsc::Sender<IdentityCommand>, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<IdentityCommand>(IDENTITY_MAILBOX);
    let thread = std::thread::Builder::new().name("identity-store".into()).spawn(move || {
        let verifier = RingVerifier;
        // The loop ends when every sender is gone: the node has shut down.
        while let Some(command) = rx.blocking_recv() {
            match command {
                IdentityCommand::Apply(update, reply) => {
                    let outcome = {
                        let change = store.apply_advert(update, clock.now(), &verifier);
                        persist(&mut store, disk.as_mut(), &on_accepted, change)
                    };
                    if let Err(err) = &outcome {
                        tracing::info!(%err, "identity update refused");
                    }
                    let _ = reply.send(outcome);
                }
                IdentityCommand::SetOwnAdvert(advert, reply) => {
                    let _ = reply.send({
                        let change = store.set_own_advert(advert, &verifier);
                        persist(&mut store, disk.as_mut(), &on_accepted, change)
                    });
                }
                IdentityCommand::SetTrust(node, trust, reply) => {
                    let _ = reply.send({
                        let change = store.set_trust(node, trust);
                        persist(&mut store, disk.as_mut(), &on_accepted, change)
                    });
                }
                IdentityCommand::SetPermanence(node, permanence, reply) => {
                    let _ = reply.send({
                        let change = store.set_permanence(node, permanence);
                        persist(&mut store, disk.as_mut(), &on_accepted, change)
                    });
                }
                IdentityCommand::Lookup(key, reply) => {
                    let _ = reply.send(store.lookup(&key).cloned());
                }
                IdentityCommand::All(reply) => {
                    let _ = reply.send(store.records().cloned().collect());
                }
                IdentityCommand::Subscribe(engine, reply) => {
                    let _ = reply.send(store.subscribe(engine));
                }
                IdentityCommand::Unsubscribe(engine) => store.unsubscribe(&engine),
            }
        }
        tracing::debug!("identity store stopped; every accepted record is on disk");
    });
    Ok((tx, thread?))
}

/// Writes a checked change to disk, then commits and announces it. A write
/// that fails leaves the store as it was, and nobody hears of the change.
fn persist(
    store: &mut IdentityStore,
    disk: &mut dyn RecordStore,
    on_accepted: &OnAccepted,
    change: Result<Persist, UpdateError>,
) -> Result<Accepted, NodeError> {
    let change = change?;
    disk.put(change.record())?;
    let accepted = store.commit(change)?;
    on_accepted(&accepted);
    Ok(accepted)
}
