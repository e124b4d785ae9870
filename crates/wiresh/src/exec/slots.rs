//! How many commands may run at once, counted over every listener (the
//! wiresh protocol's and the legacy one's share one budget).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget of running commands; clones share it.
#[derive(Debug, Clone)]
pub struct CommandSlots {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

impl CommandSlots {
    /// A budget of `limit` commands at once.
    pub fn new(limit: usize) -> CommandSlots {
        CommandSlots {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The most commands at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one more command, held until it ends; `None` when the
    /// budget is spent.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }
}
