//! Ordered execution of the engine's ARI requests.
//!
//! Requests of one call run one after another, in the order the engine issued them (a bridge must exist
//! before a channel joins it); requests of different calls run concurrently. Each call gets a lane, a small
//! task fed by a queue, which ends once the engine has said the call is over and its queue is drained.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::ari::client::{AriClient, AriError};
use crate::ari::request::AriRequest;
use crate::engine::{CallKey, NodeName};
use crate::metrics::Metrics;

/// A request that failed, on its way back to the engine.
#[derive(Debug)]
pub struct Failure {
    pub node: NodeName,
    pub call: CallKey,
    pub request: AriRequest,
    pub error: AriError,
}

pub struct Lanes {
    clients: HashMap<NodeName, AriClient>,
    lanes: HashMap<CallKey, mpsc::UnboundedSender<(NodeName, AriRequest)>>,
    failures: mpsc::Sender<Failure>,
    metrics: Arc<Metrics>,
}

impl Lanes {
    pub fn new(
        clients: HashMap<NodeName, AriClient>,
        failures: mpsc::Sender<Failure>,
        metrics: Arc<Metrics>,
    ) -> Lanes {
        Lanes {
            clients,
            lanes: HashMap::new(),
            failures,
            metrics,
        }
    }

    pub fn submit(&mut self, call: CallKey, node: NodeName, request: AriRequest) {
        let lane = self.lanes.entry(call).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_lane(
                call,
                self.clients.clone(),
                rx,
                (self.failures.clone(), self.metrics.clone()),
            ));
            tx
        });
        // The lane task only stops once its sender is dropped, so it is alive here.
        let _ = lane.send((node, request));
    }

    /// No more requests will come for `call`: its lane finishes what is queued and ends.
    pub fn close(&mut self, call: CallKey) {
        self.lanes.remove(&call);
    }
}

async fn run_lane(
    call: CallKey,
    clients: HashMap<NodeName, AriClient>,
    mut queue: mpsc::UnboundedReceiver<(NodeName, AriRequest)>,
    (failures, metrics): (mpsc::Sender<Failure>, Arc<Metrics>),
) {
    while let Some((node, request)) = queue.recv().await {
        let Some(client) = clients.get(&node) else {
            tracing::error!(%call, node = %node, "request for an unknown node dropped");
            continue;
        };
        tracing::debug!(%call, node = %node, ?request, "ARI request");
        let sent = Instant::now();
        let result = client.execute(&request).await;
        metrics.ari_request(&node, request.kind(), sent.elapsed(), result.is_err());
        if let Err(error) = result {
            let failure = Failure {
                node,
                call,
                request,
                error,
            };
            if failures.send(failure).await.is_err() {
                return;
            }
        }
    }
}
