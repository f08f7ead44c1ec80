//! Delivering the engine's events (P3). Each event is numbered, stamped and serialised once, kept in a
//! bounded log for `Last-Event-ID` replay, and handed to every SSE client ([`Hub::subscribe`]) and to the
//! webhook receivers of its account ([`webhooks`]). Publishing never blocks the engine's loop: a short
//! lock, a push, and sends that do not wait (a client that lags too far behind is dropped; a receiver's
//! queue that is full drops the event and counts it).
//!
//! An event's id is `<instance>-<n>`: `n` counts this run's events from 1, the instance tag tells runs
//! apart, so that a client reconnecting to a new run with an id of the old one is given everything kept.

pub mod webhooks;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::broadcast;

use crate::engine::api::Scope;
use crate::engine::events::{Event, EventKind};

/// An event as it is delivered.
#[derive(Debug)]
pub struct Stamped {
    /// Its number in this run.
    pub n: u64,
    /// `<instance>-<n>`: the envelope's `id`, the SSE `id:`, the `webhook-id`.
    pub id: String,
    pub kind: EventKind,
    pub account: Option<String>,
    /// When it was published, in Unix seconds (the `webhook-timestamp`).
    pub unix: u64,
    /// The envelope: `{"id","type","timestamp","account_id","data"}`.
    pub json: Arc<str>,
}

impl Stamped {
    /// Whether a client of `scope` may see it.
    pub fn visible_to(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Admin => true,
            Scope::Account(id) => self.account.as_deref() == Some(&**id),
        }
    }
}

/// Which event types a client or receiver wants: names, or prefixes ending in `*` (`transfer.*`);
/// empty: all.
#[derive(Debug, Clone, Default)]
pub struct TypeFilter(Vec<String>);

impl TypeFilter {
    /// The filter of `names`, or the first name that matches no event type.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<TypeFilter, String> {
        let mut wanted = Vec::new();
        for name in names.iter().map(|n| n.as_ref().trim()) {
            if name.is_empty() {
                continue;
            }
            let known = EventKind::ALL.iter().any(|k| matches(name, k.as_str()));
            if !known {
                return Err(name.to_owned());
            }
            wanted.push(name.to_owned());
        }
        Ok(TypeFilter(wanted))
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.0.is_empty() || self.0.iter().any(|w| matches(w, kind.as_str()))
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Where published events go.
pub struct Hub {
    instance: String,
    log: Mutex<Log>,
    live: broadcast::Sender<Arc<Stamped>>,
    webhooks: webhooks::Webhooks,
}

struct Log {
    next: u64,
    kept: VecDeque<Arc<Stamped>>,
    keep: usize,
}

impl Hub {
    /// A hub keeping the last `keep` events, whose SSE clients may lag `client_buffer` events behind.
    pub fn new(
        instance: &str,
        keep: usize,
        client_buffer: usize,
        webhooks: webhooks::Webhooks,
    ) -> Hub {
        Hub {
            instance: instance.to_owned(),
            log: Mutex::new(Log {
                next: 0,
                kept: VecDeque::new(),
                keep: keep.max(1),
            }),
            live: broadcast::channel(client_buffer.max(1)).0,
            webhooks,
        }
    }

    /// Numbers, stamps and hands out one event.
    pub fn publish(&self, event: Event) {
        let now = SystemTime::now();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.next += 1;
        let n = log.next;
        let id = format!("{}-{n}", self.instance);
        let envelope = json!({
            "id": id,
            "type": event.kind.as_str(),
            "timestamp": humantime::format_rfc3339_micros(now).to_string(),
            "account_id": event.account,
            "data": event.data,
        });
        let stamped = Arc::new(Stamped {
            n,
            id,
            kind: event.kind,
            account: event.account,
            unix: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            json: envelope.to_string().into(),
        });
        log.kept.push_back(stamped.clone());
        while log.kept.len() > log.keep {
            log.kept.pop_front();
        }
        // Sent under the lock, so that a subscriber sees the log and the live events without a gap.
        let _ = self.live.send(stamped.clone());
        drop(log);
        self.webhooks.offer(&stamped);
    }

    /// What was kept after the event `last_id` (all that is kept if it is not this run's, none if it
    /// is absent), and the events published from now on.
    pub fn subscribe(
        &self,
        last_id: Option<&str>,
    ) -> (Vec<Arc<Stamped>>, broadcast::Receiver<Arc<Stamped>>) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.subscribe();
        let after = match last_id {
            None => log.next,
            Some(id) => id
                .rsplit_once('-')
                .filter(|(instance, _)| *instance == self.instance)
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .unwrap_or(0),
        };
        let replay = log.kept.iter().filter(|e| e.n > after).cloned().collect();
        (replay, live)
    }

    /// The events kept, for `scope` (the newest last).
    pub fn recent(&self, scope: &Scope) -> Vec<Arc<Stamped>> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.kept
            .iter()
            .filter(|e| e.visible_to(scope))
            .cloned()
            .collect()
    }

    pub fn webhooks(&self) -> &webhooks::Webhooks {
        &self.webhooks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, account: &str) -> Event {
        Event {
            kind,
            account: Some(account.to_owned()),
            data: json!({"call_id": "c1", "seq": 1}),
        }
    }

    fn hub(keep: usize) -> Hub {
        Hub::new("run1", keep, 4, webhooks::Webhooks::none())
    }

    #[test]
    fn an_envelope_has_the_id_type_timestamp_account_and_data() {
        let hub = hub(10);
        hub.publish(event(EventKind::HoldOk, "acme"));
        let kept = hub.recent(&Scope::Admin);
        let envelope: serde_json::Value = serde_json::from_str(&kept[0].json).unwrap();
        assert_eq!(envelope["id"], "run1-1");
        assert_eq!(envelope["type"], "hold.ok");
        assert_eq!(envelope["account_id"], "acme");
        assert_eq!(envelope["data"]["call_id"], "c1");
        let timestamp = envelope["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
    }

    #[test]
    fn a_reconnecting_client_gets_what_it_missed_and_nothing_twice() {
        let hub = hub(3);
        for _ in 0..5 {
            hub.publish(event(EventKind::CallCreated, "acme"));
        }
        let ids = |events: Vec<Arc<Stamped>>| events.iter().map(|e| e.n).collect::<Vec<_>>();
        // Kept: 3, 4, 5.
        assert_eq!(ids(hub.subscribe(Some("run1-3")).0), [4, 5]);
        assert_eq!(ids(hub.subscribe(Some("run1-5")).0), Vec::<u64>::new());
        assert_eq!(ids(hub.subscribe(None).0), Vec::<u64>::new());
        // An id of another run (or none we made): everything kept.
        assert_eq!(ids(hub.subscribe(Some("run0-4")).0), [3, 4, 5]);
        assert_eq!(ids(hub.subscribe(Some("junk")).0), [3, 4, 5]);
        // What is published after subscribing comes live, after the replay.
        let (replay, mut live) = hub.subscribe(Some("run1-4"));
        hub.publish(event(EventKind::CallEnded, "acme"));
        assert_eq!(ids(replay), [5]);
        assert_eq!(live.try_recv().unwrap().n, 6);
    }

    #[test]
    fn an_account_sees_its_own_events_only() {
        let hub = hub(10);
        hub.publish(event(EventKind::CallCreated, "acme"));
        hub.publish(event(EventKind::CallCreated, "globex"));
        let acme = Scope::Account("acme".into());
        assert_eq!(hub.recent(&acme).len(), 1);
        assert_eq!(hub.recent(&Scope::Admin).len(), 2);
    }

    #[test]
    fn a_type_filter_takes_names_and_prefixes() {
        let filter = TypeFilter::new(&["transfer.*", "hold.ok"]).unwrap();
        assert!(filter.wants(EventKind::TransferNotify));
        assert!(filter.wants(EventKind::HoldOk));
        assert!(!filter.wants(EventKind::HoldStart));
        assert!(TypeFilter::new::<&str>(&[])
            .unwrap()
            .wants(EventKind::CallEnded));
        assert_eq!(TypeFilter::new(&["hold.maybe"]).unwrap_err(), "hold.maybe");
    }
}
