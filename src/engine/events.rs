//! Events for apps (P3): what happened to a call, decided here and delivered by the IO shell (the SSE
//! stream and webhooks, [`crate::events`]).
//!
//! An event comes from what a call's phases report ([`Note`]) and from what the engine tells a phone:
//!
//! | what happened                                   | events                                          |
//! |-------------------------------------------------|-------------------------------------------------|
//! | a call enters the app, or a restart adopts one   | `call.created`                                  |
//! | its callee answers                              | `call.answered`                                 |
//! | it ends                                         | `call.ended` (the call's last event)            |
//! | a transfer starts (API, REFER, feature code)    | `transfer.created`, `transfer.ringing` (its target is being called) |
//! | its target answers (attended)                   | `transfer.answered`                             |
//! | it ends                                         | `transfer.completed`, `transfer.cancelled` or `transfer.failed` (with a reason) |
//! | a REFERing phone is sent a NOTIFY                | `transfer.notify` (the sipfrag status), after the transfer's own event of that step |
//! | an API hold: asked, the leg out of the bridge; a request failed | `hold.start`, `hold.ok`; `hold.fail` (the leg is back in the call) |
//! | an API unhold: asked, the leg back in the bridge; it could not be | `unhold.start`, `unhold.ok`; `unhold.fail` |
//! | a phone's own hold or unhold (re-INVITE)        | `hold.start` and `hold.ok` (or `unhold.`), `by: phone` |
//!
//! Every event of a call carries the call's id and a sequence number that counts that call's events from
//! 1, so that a receiver can order what it got (webhooks may arrive out of order).

use serde::Serialize;
use serde_json::{json, Value};

use crate::ari::request::TransferProgress;

use super::api::{CallView, TransferView};

/// An event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    #[serde(rename = "call.created")]
    CallCreated,
    #[serde(rename = "call.answered")]
    CallAnswered,
    #[serde(rename = "call.ended")]
    CallEnded,
    #[serde(rename = "transfer.created")]
    TransferCreated,
    #[serde(rename = "transfer.ringing")]
    TransferRinging,
    #[serde(rename = "transfer.answered")]
    TransferAnswered,
    #[serde(rename = "transfer.completed")]
    TransferCompleted,
    #[serde(rename = "transfer.cancelled")]
    TransferCancelled,
    #[serde(rename = "transfer.failed")]
    TransferFailed,
    #[serde(rename = "transfer.notify")]
    TransferNotify,
    #[serde(rename = "hold.start")]
    HoldStart,
    #[serde(rename = "hold.ok")]
    HoldOk,
    #[serde(rename = "hold.fail")]
    HoldFail,
    #[serde(rename = "unhold.start")]
    UnholdStart,
    #[serde(rename = "unhold.ok")]
    UnholdOk,
    #[serde(rename = "unhold.fail")]
    UnholdFail,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::CallCreated,
        EventKind::CallAnswered,
        EventKind::CallEnded,
        EventKind::TransferCreated,
        EventKind::TransferRinging,
        EventKind::TransferAnswered,
        EventKind::TransferCompleted,
        EventKind::TransferCancelled,
        EventKind::TransferFailed,
        EventKind::TransferNotify,
        EventKind::HoldStart,
        EventKind::HoldOk,
        EventKind::HoldFail,
        EventKind::UnholdStart,
        EventKind::UnholdOk,
        EventKind::UnholdFail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallCreated => "call.created",
            EventKind::CallAnswered => "call.answered",
            EventKind::CallEnded => "call.ended",
            EventKind::TransferCreated => "transfer.created",
            EventKind::TransferRinging => "transfer.ringing",
            EventKind::TransferAnswered => "transfer.answered",
            EventKind::TransferCompleted => "transfer.completed",
            EventKind::TransferCancelled => "transfer.cancelled",
            EventKind::TransferFailed => "transfer.failed",
            EventKind::TransferNotify => "transfer.notify",
            EventKind::HoldStart => "hold.start",
            EventKind::HoldOk => "hold.ok",
            EventKind::HoldFail => "hold.fail",
            EventKind::UnholdStart => "unhold.start",
            EventKind::UnholdOk => "unhold.ok",
            EventKind::UnholdFail => "unhold.fail",
        }
    }

    /// The kind named `name` (`transfer.completed`).
    pub fn named(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One event, as the engine decides it: the envelope's `type`, `account_id` and `data`. The IO shell
/// gives it its `id` and `timestamp` when it delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub account: Option<String>,
    /// Always has `call_id` and `seq`, then what the kind is about (`call`, `transfer`, `channel`...).
    pub data: Value,
}

/// A step of a hold or an unhold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldStep {
    Start,
    Ok,
    Fail,
}

/// Who holds: the API (music on hold, out of the bridge) or the phone itself (a re-INVITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HoldBy {
    Api,
    Phone,
}

/// What one step of a call made happen, before it is numbered and addressed as an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Happened {
    Call(EventKind),
    Transfer(EventKind, TransferView),
    Hold {
        channel: String,
        hold: bool,
        step: HoldStep,
        by: HoldBy,
    },
    /// A REFERing phone was sent a NOTIFY; `transfer` is the call's latest transfer, if it had one.
    Notify {
        channel: String,
        state: TransferProgress,
        transfer: Option<String>,
    },
}

impl Happened {
    /// The event's kind and what its `data` says besides `call_id` and `seq`; `view` is the call as it
    /// is now (for the `call.` events).
    pub fn describe(self, view: impl FnOnce() -> Option<CallView>) -> (EventKind, Value) {
        match self {
            Happened::Call(kind) => (kind, json!({ "call": view() })),
            Happened::Transfer(kind, transfer) => (kind, json!({ "transfer": transfer })),
            Happened::Hold {
                channel,
                hold,
                step,
                by,
            } => {
                let kind = match (hold, step) {
                    (true, HoldStep::Start) => EventKind::HoldStart,
                    (true, HoldStep::Ok) => EventKind::HoldOk,
                    (true, HoldStep::Fail) => EventKind::HoldFail,
                    (false, HoldStep::Start) => EventKind::UnholdStart,
                    (false, HoldStep::Ok) => EventKind::UnholdOk,
                    (false, HoldStep::Fail) => EventKind::UnholdFail,
                };
                (kind, json!({ "channel": channel, "by": by }))
            }
            Happened::Notify {
                channel,
                state,
                transfer,
            } => {
                let (status, last) = sipfrag(state);
                let data = json!({
                    "channel": channel,
                    "status": status,
                    "final": last,
                    "transfer_id": transfer,
                });
                (EventKind::TransferNotify, data)
            }
        }
    }
}

/// The status line a NOTIFY for `state` carries, and whether it ends the subscription.
fn sipfrag(state: TransferProgress) -> (u16, bool) {
    match state {
        TransferProgress::Progress => (100, false),
        TransferProgress::Answered => (200, true),
        TransferProgress::Unavailable => (503, true),
        TransferProgress::Declined => (603, true),
    }
}

/// Puts `call_id` and `seq` first into an event's `data`.
pub(crate) fn numbered(call_id: &str, seq: u64, rest: Value) -> Value {
    let mut data = serde_json::Map::new();
    data.insert("call_id".into(), json!(call_id));
    data.insert("seq".into(), json!(seq));
    if let Value::Object(fields) = rest {
        data.extend(fields);
    }
    Value::Object(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_as_it_serialises() {
        for kind in EventKind::ALL {
            assert_eq!(json!(kind), json!(kind.as_str()));
            assert_eq!(EventKind::named(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::named("transfer.nope"), None);
    }
}
