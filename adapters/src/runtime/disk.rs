//! The identity store's disk writer: a thread of its own, since the record
//! store does blocking disk I/O that must never stall the async workers
//! that carry messages. It writes checked changes in the order the core
//! made them and reports each one back, so the core commits (and
//! announces) a record only once it is on disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

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

/// The queue to the writer. It has room for as many changes as the
/// identity store lets wait ([`MAX_STAGED`]) and as many deletions again,
/// so a change is only refused once the writer has stopped. Deletions
/// beyond their share are dropped: the record stays on disk until the
/// next start, when the cache gives it up again.
#[derive(Debug, Default)]
pub(crate) struct DiskQueue {
    tx: Mutex<Option<SyncSender<DiskJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    removals: Arc<AtomicUsize>,
}

impl DiskQueue {
    pub(crate) fn start(&self, mut disk: Box<dyn RecordStore>, written: Written) -> std::io::Result<()> {
        let (tx, rx) = sync_channel::<DiskJob>(2 * MAX_STAGED);
        let removals = Arc::clone(&self.removals);
        let thread = std::thread::Builder::new().name("identity-store".into()).spawn(move || {
            // Ends when the queue's sender is dropped: the node stopped.
            while let Ok(job) = rx.recv() {
                let outcome = match &job.work {
                    DiskWork::Put(change) => disk.put(change.record()),
                    DiskWork::Remove(key) => {
                        removals.fetch_sub(1, Ordering::AcqRel);
                        disk.remove(key)
                    }
                };
                written(job, outcome);
            }
            tracing::debug!("identity store stopped; every accepted record is on disk");
        })?;
        *self.tx.lock() = Some(tx);
        *self.thread.lock() = Some(thread);
        Ok(())
    }

    /// Queues a change; hands it back if the writer has stopped, or if it
    /// is a deletion and deletions have their share of the queue.
    pub(crate) fn push(&self, job: DiskJob) -> Result<(), Box<DiskJob>> {
        if matches!(job.work, DiskWork::Remove(_)) {
            if self.removals.fetch_add(1, Ordering::AcqRel) >= MAX_STAGED {
                self.removals.fetch_sub(1, Ordering::AcqRel);
                return Err(Box::new(job));
            }
            let pushed = self.send(job);
            if pushed.is_err() {
                self.removals.fetch_sub(1, Ordering::AcqRel);
            }
            return pushed;
        }
        self.send(job)
    }

    fn send(&self, job: DiskJob) -> Result<(), Box<DiskJob>> {
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
