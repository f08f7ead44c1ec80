//! Prometheus metrics (O1), served at `/metrics` in the OpenMetrics text format (prometheus-client).
//!
//! Counted from what the engine decided (its events) and from the IO shell (ARI requests, websocket
//! connections, webhook deliveries), never from logs:
//!
//! | series | type | labels | counted |
//! |---|---|---|---|
//! | `ari_transfer_transfers_total` | counter | `source` (api, refer, dtmf), `flow` (attended, blind), `outcome` (completed, cancelled, failed) | each transfer's end event |
//! | `ari_transfer_refer_final_notify_seconds` | histogram | | a REFER's first NOTIFY (100) decided to its final one decided |
//! | `ari_transfer_calls_in_progress` | gauge | | the engine's calls after each input |
//! | `ari_transfer_events_total` | counter | `type` | every event for apps |
//! | `ari_transfer_ari_request_seconds` | histogram | `node`, `request` | each ARI request, sent to answered |
//! | `ari_transfer_ari_request_failures_total` | counter | `node`, `request` | each failed one (an error status or no answer) |
//! | `ari_transfer_websocket_connects_total` | counter | `node` | each events websocket connected and synced (the first, then every reconnect) |
//! | `ari_transfer_websocket_disconnects_total` | counter | `node` | each one lost |
//! | `ari_transfer_webhook_attempts_total` | counter | `account`, `outcome` (delivered, failed) | each POST to a receiver |
//! | `ari_transfer_webhook_dropped_total` | counter | `account` | events a receiver's full queue (or a disabled one) dropped |

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::events::{Event, EventKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    source: String,
    flow: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    node: String,
    request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    account: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// REFERs whose first NOTIFY was decided, by channel, kept at most this many.
const PENDING_REFERS: usize = 10_000;

pub struct Metrics {
    registry: Registry,
    transfers: Family<TransferLabels, Counter>,
    refer_latency: Histogram,
    calls: Gauge<i64, std::sync::atomic::AtomicI64>,
    events: Family<TypeLabels, Counter>,
    ari_latency: Timings<RequestLabels>,
    ari_failures: Family<RequestLabels, Counter>,
    connects: Family<NodeLabels, Counter>,
    disconnects: Family<NodeLabels, Counter>,
    webhook_attempts: Family<WebhookLabels, Counter>,
    webhook_dropped: Family<AccountLabels, Counter<u64, AtomicU64>>,
    /// When each REFER's first NOTIFY was decided, by the REFERing channel.
    refers: Mutex<HashMap<String, Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ari_transfer");
        let metrics = Metrics {
            transfers: Family::default(),
            refer_latency: latency(),
            calls: Gauge::default(),
            events: Family::default(),
            ari_latency: Family::new_with_constructor(latency),
            ari_failures: Family::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            webhook_attempts: Family::default(),
            webhook_dropped: Family::default(),
            refers: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "transfers",
            "Transfers that ended, by what started them, their flow and outcome",
            metrics.transfers.clone(),
        );
        registry.register(
            "refer_final_notify_seconds",
            "From a REFER's first NOTIFY (100) to its final one, as decided",
            metrics.refer_latency.clone(),
        );
        registry.register(
            "calls_in_progress",
            "Calls the service is handling",
            metrics.calls.clone(),
        );
        registry.register("events", "Events for apps, by type", metrics.events.clone());
        registry.register(
            "ari_request_seconds",
            "ARI requests, sent to answered, by node and request",
            metrics.ari_latency.clone(),
        );
        registry.register(
            "ari_request_failures",
            "ARI requests that failed, by node and request",
            metrics.ari_failures.clone(),
        );
        registry.register(
            "websocket_connects",
            "Events websockets connected and synced, by node",
            metrics.connects.clone(),
        );
        registry.register(
            "websocket_disconnects",
            "Events websockets lost, by node",
            metrics.disconnects.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook POSTs, by account and outcome",
            metrics.webhook_attempts.clone(),
        );
        registry.register(
            "webhook_dropped",
            "Events a webhook receiver dropped (its queue full, or it is disabled)",
            metrics.webhook_dropped.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// An event the engine decided, at `now`.
    pub fn event(&self, event: &Event, now: Instant) {
        let kind = event.kind.as_str();
        self.events
            .get_or_create(&TypeLabels {
                r#type: kind.to_owned(),
            })
            .inc();
        let outcome = match event.kind {
            EventKind::TransferCompleted => "completed",
            EventKind::TransferCancelled => "cancelled",
            EventKind::TransferFailed => "failed",
            EventKind::TransferNotify => return self.notify(event, now),
            _ => return,
        };
        let transfer = &event.data["transfer"];
        let label = |field: &str| transfer[field].as_str().unwrap_or("unknown").to_owned();
        self.transfers
            .get_or_create(&TransferLabels {
                source: label("source"),
                flow: label("kind"),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn notify(&self, event: &Event, now: Instant) {
        let Some(channel) = event.data["channel"].as_str() else {
            return;
        };
        let mut refers = self.refers.lock().unwrap_or_else(|e| e.into_inner());
        if event.data["final"] == true {
            if let Some(first) = refers.remove(channel) {
                self.refer_latency
                    .observe(now.duration_since(first).as_secs_f64());
            }
        } else {
            if refers.len() >= PENDING_REFERS {
                refers.clear();
            }
            refers.entry(channel.to_owned()).or_insert(now);
        }
    }

    pub fn calls(&self, count: usize) {
        self.calls.set(count as i64);
    }

    /// One ARI request to `node` took `elapsed`; `failed` if it did not succeed.
    pub fn ari_request(&self, node: &str, request: &'static str, elapsed: Duration, failed: bool) {
        let labels = RequestLabels {
            node: node.to_owned(),
            request: request.to_owned(),
        };
        self.ari_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if failed {
            self.ari_failures.get_or_create(&labels).inc();
        }
    }

    /// A node's websocket connected (`true`) or was lost.
    pub fn websocket(&self, node: &str, connected: bool) {
        let labels = NodeLabels {
            node: node.to_owned(),
        };
        let family = if connected {
            &self.connects
        } else {
            &self.disconnects
        };
        family.get_or_create(&labels).inc();
    }

    pub fn webhook_attempt(&self, account: &str, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&WebhookLabels {
                account: account.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn webhook_dropped(&self, account: &str) {
        self.webhook_dropped
            .get_or_create(&AccountLabels {
                account: account.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn notify(channel: &str, status: u16, last: bool) -> Event {
        Event {
            kind: EventKind::TransferNotify,
            account: None,
            data: json!({"call_id": "c", "seq": 1, "channel": channel, "status": status, "final": last}),
        }
    }

    #[test]
    fn transfers_and_the_refer_latency_are_counted_from_the_engines_events() {
        let metrics = Metrics::new();
        let start = Instant::now();
        metrics.event(&notify("alice", 100, false), start);
        metrics.event(
            &notify("alice", 200, true),
            start + Duration::from_millis(20),
        );
        // A final NOTIFY with no first one seen (a REFER declined before this run) is not timed.
        metrics.event(&notify("bob", 503, true), start);
        let completed = Event {
            kind: EventKind::TransferCompleted,
            account: Some("acme".into()),
            data: json!({"call_id": "c", "seq": 2, "transfer": {"source": "refer", "kind": "blind"}}),
        };
        metrics.event(&completed, start);
        metrics.calls(3);
        metrics.ari_request("node1", "hangup", Duration::from_millis(2), false);
        metrics.ari_request("node1", "hangup", Duration::from_millis(3), true);
        metrics.websocket("node1", true);
        metrics.webhook_attempt("acme", false);
        metrics.webhook_dropped("acme");
        let text = metrics.render();
        for line in [
            r#"ari_transfer_transfers_total{source="refer",flow="blind",outcome="completed"} 1"#,
            "ari_transfer_refer_final_notify_seconds_count 1",
            "ari_transfer_refer_final_notify_seconds_sum 0.02",
            "ari_transfer_calls_in_progress 3",
            r#"ari_transfer_events_total{type="transfer.notify"} 3"#,
            r#"ari_transfer_ari_request_seconds_count{node="node1",request="hangup"} 2"#,
            r#"ari_transfer_ari_request_failures_total{node="node1",request="hangup"} 1"#,
            r#"ari_transfer_websocket_connects_total{node="node1"} 1"#,
            r#"ari_transfer_webhook_attempts_total{account="acme",outcome="failed"} 1"#,
            r#"ari_transfer_webhook_dropped_total{account="acme"} 1"#,
        ] {
            assert!(text.contains(line), "no {line} in:\n{text}");
        }
    }
}
