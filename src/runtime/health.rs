//! What the health and readiness endpoints report: whether each node's websocket is connected and synced.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    nodes: Mutex<BTreeMap<String, NodeHealth>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeHealth {
    pub connected: bool,
    /// Why the node is not connected, if it is not.
    pub error: Option<String>,
}

impl Health {
    pub fn new<'a>(nodes: impl IntoIterator<Item = &'a str>) -> Health {
        let nodes = nodes
            .into_iter()
            .map(|name| {
                let status = NodeHealth {
                    connected: false,
                    error: Some("not connected yet".to_owned()),
                };
                (name.to_owned(), status)
            })
            .collect();
        Health {
            nodes: Mutex::new(nodes),
        }
    }

    pub fn set(&self, node: &str, status: NodeHealth) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(node.to_owned(), status);
        }
    }

    /// Every node's status, and whether all are connected.
    pub fn snapshot(&self) -> (bool, BTreeMap<String, NodeHealth>) {
        let nodes = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        let ready = !nodes.is_empty() && nodes.values().all(|n| n.connected);
        (ready, nodes)
    }
}
