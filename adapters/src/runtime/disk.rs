//! The identity store's disk writer: a thread of its own, since the record
//! store does blocking disk I/O that must never stall the async workers
//! that carry messages. It writes checked changes in the order the core
//! made them and reports each one back, so the core commits (and
//! announces) a record only once it is on disk.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use netmachine_domain::RecordKey;
use netmachine_engines::identity_store::{Persist, MAX_STAGED};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::error::NodeError;
use crate::store::{RecordStore, StoreError};

/// Told the outcome of one change: taken, or why not.
pub(crate) type Reply = oneshot::Sender<Result<(), NodeError>>;

/// One change to write.
#[derive(Debug)]
pub(crate) struct DiskJob {
    pub work: DiskWork,
    pub reply: Option<Reply>,
}

/// What a job does to the disk.
#[derive(Debug)]
pub(crate) enum DiskWork {
    /// Write a change, then commit it.
    Put(Persist),
    /// Delete a record the identity store gave up.
    Remove(RecordKey),
}

/// Called on the writer's thread after each write.
pub(crate) type Written = Box<dyn Fn(DiskJob, Result<(), StoreError>) + Send>;

/// The queue to the writer. It holds at most as many changes as the
/// identity store lets wait ([`MAX_STAGED`]), so a push only fails once the
/// writer has stopped.
#[derive(Debug, Default)]
pub(crate) struct DiskQueue {
    tx: Mutex<Option<SyncSender<DiskJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl DiskQueue {
    pub(crate) fn start(&self, mut disk: Box<dyn RecordStore>, written: Written) -> std::io::Result<()> {
        let (tx, rx) = sync_channel::<DiskJob>(MAX_STAGED);
        let thread = std::thread::Builder::new().name("identity-store".into()).spawn(move || {
            // Ends when the queue's sender is dropped: the node stopped.
            while let Ok(job) = rx.recv() {
                let outcome = match &job.work {
                    DiskWork::Put(change) => disk.put(change.record()),
                    DiskWork::Remove(key) => disk.remove(key),
                };
                written(job, outcome);
            }
            tracing::debug!("identity store stopped; every accepted record is on disk");
        })?;
        *self.tx.lock() = Some(tx);
        *self.thread.lock() = Some(thread);
        Ok(())
    }

    /// Queues a change; hands it back if the writer has stopped.
    pub(crate) fn push(&self, job: DiskJob) -> Result<(), Box<DiskJob>> {
        match self.tx.lock().as_ref() {
            Some(tx) => tx.try_send(job).map_err(|err| match err {
                TrySendError::Full(job) | TrySendError::Disconnected(job) => Box::new(job),
            }),
            None => Err(Box::new(job)),
        }
    }

    /// Stops the writer after it has written everything queued.
    pub(crate) async fn stop(&self) {
        drop(self.tx.lock().take());
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the identity store thread ended abnormally");
            }
        }
    }
}
