//! Events for apps (P3), as the engine decides them: which, in which order, numbered per call.

use serde_json::{json, Value};

use super::transfer::{
    attended_refer, blind_refer, entered_bridge, BRIDGE1, CONSULT, CONSULTED, TRANSFEREE,
};
use super::*;
use crate::engine::api::{Command, Scope, TransferKind, TransferSpec};
use crate::engine::events::{Event, EventKind};

/// An engine whose every output is watched for events.
struct Watched {
    engine: Engine,
    /// Events not looked at yet, and those already looked at.
    events: Vec<Event>,
    seen: Vec<Event>,
}

impl Watched {
    fn new() -> Watched {
        Watched {
            engine: engine(),
            events: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn keep(&mut self, out: Vec<Output>) -> Vec<AriRequest> {
        let requests = requests(&out);
        self.events.extend(out.into_iter().filter_map(|o| match o {
            Output::Event(event) => Some(event),
            _ => None,
        }));
        requests
    }

    fn handle(&mut self, now: Millis, input: Input) -> Vec<AriRequest> {
        let out = self.engine.handle(now, input);
        self.keep(out)
    }

    fn ask(&mut self, now: Millis, command: Command) -> Vec<AriRequest> {
        let (_, out) = self.engine.command(now, &Scope::Admin, command);
        self.keep(out)
    }

    /// The types of the events so far, and forgets them.
    fn kinds(&mut self) -> Vec<&'static str> {
        let kinds = self.events.iter().map(|e| e.kind.as_str()).collect();
        self.seen.append(&mut self.events);
        kinds
    }
}

impl Watched {
    /// A connected call: caller and bob's leg.
    fn connected() -> Watched {
        let mut watched = Watched::new();
        watched.handle(0, stasis_start(CALLER, &[]));
        watched.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
        watched.handle(100, state_change(TRANSFEREE, "Up"));
        watched
    }
}

fn data(event: &Event) -> &Value {
    &event.data
}

#[test]
fn p3_a_call_is_created_answered_and_ended_and_its_events_are_numbered() {
    let mut watched = Watched::connected();
    assert_eq!(watched.kinds(), ["call.created", "call.answered"]);
    watched.handle(9_000, stasis_end_of(CALLER));
    assert_eq!(watched.kinds(), ["call.ended"]);
    let seqs: Vec<u64> = watched
        .seen
        .iter()
        .map(|e| data(e)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    for event in &watched.seen {
        assert_eq!(data(event)["call_id"], CALLER);
    }
    let created = &watched.seen[0];
    assert_eq!(data(created)["call"]["destination"], "bob");
    assert_eq!(data(created)["call"]["state"], "dialing");
    assert_eq!(data(&watched.seen[1])["call"]["state"], "connected");
}

#[test]
fn p3_a_blind_refer_reports_its_transfer_and_every_notify_the_phone_got() {
    let mut watched = Watched::connected();
    watched.kinds();
    watched.handle(1_000, blind_refer(CALLER, "carol"));
    assert_eq!(
        watched.kinds(),
        ["transfer.created", "transfer.ringing", "transfer.notify"]
    );
    let notify = watched.seen.last().unwrap();
    let transfer_id = data(&watched.seen[watched.seen.len() - 3])["transfer"]["id"].clone();
    assert_eq!(data(notify)["status"], 100);
    assert_eq!(data(notify)["final"], false);
    assert_eq!(data(notify)["transfer_id"], transfer_id);
    assert_eq!(data(notify)["channel"], CALLER);

    watched.handle(1_001, stasis_start(TARGET, &["dialed"]));
    watched.handle(1_500, state_change(TARGET, "Up"));
    assert_eq!(watched.kinds(), ["transfer.completed", "transfer.notify"]);
    let completed = &watched.seen[watched.seen.len() - 2];
    assert_eq!(data(completed)["transfer"]["status"], "completed");
    assert_eq!(data(completed)["transfer"]["source"], "refer");
    let notify = watched.seen.last().unwrap();
    assert_eq!(
        (&data(notify)["status"], &data(notify)["final"]),
        (&json!(200), &json!(true))
    );
    assert_eq!(data(notify)["transfer_id"], transfer_id);
}

#[test]
fn p3_a_failed_blind_refer_is_failed_with_its_reason_then_notify_603() {
    let mut watched = Watched::connected();
    watched.handle(1_000, blind_refer(CALLER, "carol"));
    watched.handle(1_001, stasis_start(TARGET, &["dialed"]));
    watched.kinds();
    let busy = json!({"type": "ChannelHangupRequest", "cause": 17, "channel": channel(TARGET)});
    watched.handle(1_500, event(busy));
    assert_eq!(watched.kinds(), ["transfer.failed", "transfer.notify"]);
    let failed = &watched.seen[watched.seen.len() - 2];
    assert_eq!(data(failed)["transfer"]["reason"], "busy");
    assert_eq!(data(watched.seen.last().unwrap())["status"], 603);
}

#[test]
fn p3_an_attended_api_transfer_is_created_ringing_answered_and_completed() {
    let mut watched = Watched::connected();
    watched.kinds();
    let spec = TransferSpec {
        call: CALLER.into(),
        target: "carol".into(),
        kind: TransferKind::Attended,
        ..TransferSpec::default()
    };
    watched.ask(200, Command::StartTransfer(spec));
    assert_eq!(watched.kinds(), ["transfer.created", "transfer.ringing"]);
    watched.handle(300, stasis_start(API_TARGET, &["dialed"]));
    watched.handle(400, state_change(API_TARGET, "Up"));
    assert_eq!(watched.kinds(), ["transfer.answered"]);
    let id = data(watched.seen.last().unwrap())["transfer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    watched.ask(500, Command::CompleteTransfer { id });
    assert_eq!(watched.kinds(), ["transfer.completed"]);
    // No REFER, no NOTIFY.
    assert!(!watched
        .seen
        .iter()
        .any(|e| e.kind == EventKind::TransferNotify));
}

#[test]
fn p3_an_api_hold_is_done_when_the_leg_has_left_the_bridge_and_unhold_when_it_is_back() {
    let mut watched = Watched::connected();
    watched.kinds();
    watched.ask(200, hold_bob());
    assert_eq!(watched.kinds(), ["hold.start"]);
    watched.handle(210, left_bridge(BRIDGE1, TRANSFEREE));
    assert_eq!(watched.kinds(), ["hold.ok"]);
    let ok = watched.seen.last().unwrap();
    assert_eq!(
        (&data(ok)["channel"], &data(ok)["by"]),
        (&json!(TRANSFEREE), &json!("api"))
    );
    let unhold = Command::Unhold {
        call: TRANSFEREE.into(),
    };
    watched.ask(300, unhold);
    assert_eq!(watched.kinds(), ["unhold.start"]);
    watched.handle(310, entered_bridge(BRIDGE1, TRANSFEREE));
    assert_eq!(watched.kinds(), ["unhold.ok"]);
    // The same moves with no hold asked say nothing.
    watched.handle(400, left_bridge(BRIDGE1, TRANSFEREE));
    assert_eq!(watched.kinds(), Vec::<&str>::new());
}

#[test]
fn p3_a_hold_that_asterisk_refuses_fails_and_the_leg_is_back_in_the_call() {
    let mut watched = Watched::connected();
    watched.kinds();
    watched.ask(200, hold_bob());
    let moh = AriRequest::StartMoh {
        channel: TRANSFEREE.into(),
        class: None,
    };
    // Made once more, then given up.
    watched.handle(210, failed(moh.clone(), 500));
    let requests = watched.handle(220, failed(moh, 500));
    assert_eq!(watched.kinds(), ["hold.start", "hold.fail"]);
    assert!(requests.iter().any(|r| matches!(r, AriRequest::AddToBridge { bridge, channels, .. } if bridge == BRIDGE1 && channels == &[TRANSFEREE.to_owned()])));
    // Not held any more: a new hold is accepted.
    watched.ask(300, hold_bob());
    assert_eq!(watched.kinds(), ["hold.start"]);
}

#[test]
fn p3_a_phones_own_hold_and_unhold_are_reported_once() {
    let mut watched = Watched::connected();
    watched.kinds();
    let hold = || event(json!({"type": "ChannelHold", "channel": channel(TRANSFEREE)}));
    watched.handle(300, hold());
    watched.handle(310, hold());
    assert_eq!(watched.kinds(), ["hold.start", "hold.ok"]);
    assert_eq!(data(watched.seen.last().unwrap())["by"], "phone");
    watched.handle(
        400,
        event(json!({"type": "ChannelUnhold", "channel": channel(TRANSFEREE)})),
    );
    assert_eq!(watched.kinds(), ["unhold.start", "unhold.ok"]);
}

#[test]
fn p3_an_accounts_calls_carry_its_id() {
    let mut config = engine_config();
    config.accounts = Accounts {
        ids: ["acme".to_owned()].into(),
        endpoints: [("alice".to_owned(), "acme".to_owned())].into(),
        variable: "ARI_TRANSFER_ACCOUNT".into(),
    };
    let mut watched = Watched::new();
    watched.engine = Engine::new(config);
    watched.handle(0, stasis_start(CALLER, &[]));
    assert_eq!(watched.events[0].account.as_deref(), Some("acme"));
    let mut plain = Watched::new();
    plain.handle(0, stasis_start(CALLER, &[]));
    assert_eq!(plain.events[0].account, None);
}

#[test]
fn p3_an_attended_refer_ends_the_consult_call_for_apps_and_its_party_keeps_who_it_is() {
    let mut watched = Watched::connected();
    watched.handle(200, stasis_start(CONSULT, &["carol"]));
    watched.handle(300, state_change(CONSULTED, "Up"));
    watched.kinds();
    watched.handle(1_000, attended_refer(CALLER, CONSULT, true));
    let told: Vec<(&str, &Value)> = watched
        .events
        .iter()
        .map(|e| (e.kind.as_str(), &e.data["call_id"]))
        .collect();
    assert_eq!(
        told,
        [
            ("call.ended", &json!(CONSULT)),
            ("transfer.created", &json!(CALLER)),
            ("transfer.ringing", &json!(CALLER)),
            ("transfer.notify", &json!(CALLER)),
        ]
    );
    watched.kinds();
    watched.handle(1_010, entered_bridge(BRIDGE1, CONSULTED));
    assert_eq!(watched.kinds(), ["transfer.completed", "transfer.notify"]);
    // carol, whom the consult call dialed, is still shown as carol in the transferee's call.
    let (reply, _) = watched.engine.command(
        1_100,
        &Scope::Admin,
        Command::GetCall {
            call: CALLER.into(),
        },
    );
    let crate::engine::api::Reply::Call(call) = reply else {
        panic!("{reply:?}");
    };
    let carol = call.legs.iter().find(|l| l.channel == CONSULTED).unwrap();
    assert_eq!(carol.number.as_deref(), Some("carol"));
}

/// The blind REFER's target.
const TARGET: &str = "t-2-t";
/// The attended API transfer's target (the feature-code machinery's).
const API_TARGET: &str = "t-1-f1-t";

fn hold_bob() -> Command {
    Command::Hold {
        call: TRANSFEREE.into(),
        moh: None,
    }
}

fn left_bridge(bridge: &str, id: &str) -> Input {
    event(
        json!({"type": "ChannelLeftBridge", "bridge": {"id": bridge, "channels": []}, "channel": channel(id)}),
    )
}

fn stasis_end_of(id: &str) -> Input {
    event(json!({"type": "StasisEnd", "channel": channel(id)}))
}
