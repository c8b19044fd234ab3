//! Hosts the Network Identity Store on a thread of its own with a bounded
//! mailbox. Its record store does blocking disk I/O, which must never stall
//! the async workers that carry messages.

use std::sync::Arc;

use netmachine_domain::{EngineName, IdentityRecord, NodeAdvert, NodeIdentity, Permanence, RecordKey, Trust};
use netmachine_engines::identity_store::{Accepted, AdvertUpdate, IdentityStore, UpdateError};
use netmachine_engines::ports::{Clock, RecordStore};
use tokio::sync::{mpsc, oneshot};

use crate::crypto::RingVerifier;

/// What the identity actor can be asked.
pub(crate) enum IdentityCommand {
    Apply(AdvertUpdate, oneshot::Sender<Result<Accepted, UpdateError>>),
    SetOwnAdvert(NodeAdvert, oneshot::Sender<Result<Accepted, UpdateError>>),
    SetPermanence(NodeIdentity, Permanence, oneshot::Sender<Result<Accepted, UpdateError>>),
    SetTrust(NodeIdentity, Trust, oneshot::Sender<Result<Accepted, UpdateError>>),
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
                    let outcome = store.apply_advert(update, clock.now(), &verifier, disk.as_mut());
                    match &outcome {
                        Ok(accepted) => on_accepted(accepted),
                        Err(err) => tracing::info!(%err, "identity update refused"),
                    }
                    let _ = reply.send(outcome);
                }
                IdentityCommand::SetOwnAdvert(advert, reply) => {
                    let outcome = store.set_own_advert(advert, &verifier, disk.as_mut());
                    if let Ok(accepted) = &outcome {
                        on_accepted(accepted);
                    }
                    let _ = reply.send(outcome);
                }
                IdentityCommand::SetTrust(node, trust, reply) => {
                    let outcome = store.set_trust(node, trust, disk.as_mut());
                    if let Ok(accepted) = &outcome {
                        on_accepted(accepted);
                    }
                    let _ = reply.send(outcome);
                }
                IdentityCommand::SetPermanence(node, permanence, reply) => {
                    let outcome = store.set_permanence(node, permanence, disk.as_mut());
                    if let Ok(accepted) = &outcome {
                        on_accepted(accepted);
                    }
                    let _ = reply.send(outcome);
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
