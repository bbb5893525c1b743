//! Edit events: what each finished edit changed, for remeshing, caches and other processes.
//!
//! Every edit that completes (normally, or finished later by recovery) is published once on
//! an in-process broadcast channel and handed to every registered [`EditSink`]. A sink is
//! the seam for an external bus such as Pub/Sub: it must not block.

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::ChunkedGraph;

/// What one edit changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EditEvent {
    pub table: String,
    pub operation_id: u64,
    pub timestamp_micros: i64,
    /// `merge`, `split`, `undo` or `redo`.
    pub kind: String,
    pub old_roots: Vec<u64>,
    pub new_roots: Vec<u64>,
    /// Layer-2 nodes the edit created: the ones whose meshes must be built.
    pub new_l2_ids: Vec<u64>,
    /// True when the edit was cut off and finished by recovery.
    pub recovered: bool,
}

/// Receives every edit event of a graph, in the order edits finish in this process.
pub trait EditSink: Send + Sync {
    fn publish(&self, event: &EditEvent);
}

/// Slow receivers past this many events lose the oldest (they see `Lagged`).
const CHANNEL_CAPACITY: usize = 4096;

pub(crate) struct Events {
    channel: broadcast::Sender<EditEvent>,
    sinks: RwLock<Vec<Arc<dyn EditSink>>>,
}

impl Events {
    pub(crate) fn new() -> Events {
        Events {
            channel: broadcast::channel(CHANNEL_CAPACITY).0,
            sinks: RwLock::new(Vec::new()),
        }
    }

    pub(crate) fn publish(&self, event: EditEvent) {
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        for s in sinks.iter() {
            s.publish(&event);
        }
        // No subscribers is not an error.
        let _ = self.channel.send(event);
    }
}

impl ChunkedGraph {
    /// A receiver of the edits this process finishes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EditEvent> {
        self.events().channel.subscribe()
    }

    /// Registers a sink that gets every edit event of this graph in this process.
    pub fn add_sink(&self, sink: Arc<dyn EditSink>) {
        self.events()
            .sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }
}
