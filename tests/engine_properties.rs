//! Property tests of the engine against a small model of Asterisk.
//!
//! Thousands of generated runs: two calls are placed, then phones hang up, answer, fail, send blind and
//! attended REFERs, requests fail, time passes and Asterisk's own events are delivered late, all in
//! generated orders, some events twice. The model carries out the engine's requests the way Asterisk does (a hangup gives
//! HangupRequest and StasisEnd, a created channel enters the app at once, a move gives ChannelEnteredBridge,
//! a request about something gone fails with 404). Whatever the order:
//! * no REFER is told its outcome twice, no transferer is hung up before it was told, and once the run
//!   settles, no phone still waits for the outcome of its REFER;
//! * once every phone has hung up, no channel or bridge the app created is left, and the engine forgets
//!   every call and deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use ari_transfer::ari::models::Event;
use ari_transfer::ari::request::AriRequest;
use ari_transfer::engine::{Engine, EngineConfig, Input, Output, Route};
use proptest::prelude::*;
use serde_json::{json, Value};

const NODE: &str = "node1";
const RING_TIMEOUT: u64 = 30_000;

#[derive(Debug, Clone)]
enum Action {
    /// Asterisk delivers its oldest pending event.
    Deliver,
    /// Asterisk delivers the last event it delivered once more.
    Duplicate,
    /// Asterisk carries out the oldest request the engine made (requests run in the order they were
    /// made, like the runtime's per-call lanes; one global order is one of the orders lanes allow).
    Execute,
    /// The phone of the n-th live channel hangs up.
    Hangup(usize),
    /// The n-th ringing channel answers.
    Answer(usize),
    /// The n-th ringing channel fails with a cause.
    Fail(usize, i32),
    /// The n-th live channel sends a blind REFER, to a routable destination or not.
    BlindRefer(usize, bool),
    /// The n-th live channel sends an attended REFER replacing the m-th's dialog, resolved by Asterisk or not.
    AttendedRefer(usize, usize, bool),
    /// Time passes.
    Tick(u64),
    /// The next request the engine makes fails (Asterisk answers 500). Failures are isolated: the engine's
    /// one retry of a failed request does not fail again (Asterisk failing everything is the lost-connection
    /// case, which the re-sync after reconnecting covers).
    FailNextRequest,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::Deliver),
        6 => Just(Action::Execute),
        1 => Just(Action::Duplicate),
        2 => (0..8usize).prop_map(Action::Hangup),
        3 => (0..4usize).prop_map(Action::Answer),
        1 => ((0..4usize), prop::sample::select(vec![0, 16, 17, 19, 21, 34])).prop_map(|(n, c)| Action::Fail(n, c)),
        2 => ((0..8usize), any::<bool>()).prop_map(|(n, r)| Action::BlindRefer(n, r)),
        2 => ((0..8usize), (0..8usize), any::<bool>()).prop_map(|(n, m, r)| Action::AttendedRefer(n, m, r)),
        1 => (1..40_000u64).prop_map(Action::Tick),
        1 => Just(Action::FailNextRequest),
    ]
}

#[derive(Debug, Default)]
struct ChannelState {
    up: bool,
    /// Created by the app (dialed), as opposed to a phone calling in.
    dialed: bool,
}

/// What Asterisk holds, and what each REFER is owed.
struct World {
    engine: Engine,
    now: u64,
    channels: BTreeMap<String, ChannelState>,
    bridges: BTreeSet<String>,
    pending: VecDeque<Value>,
    last_delivered: Option<Value>,
    requests: VecDeque<(ari_transfer::engine::CallKey, AriRequest)>,
    fail_next: bool,
    /// Requests that failed once: their retry succeeds.
    failed: Vec<AriRequest>,
    /// REFERs of each live transferer channel still waiting for their outcome. Like Asterisk 22, one
    /// terminal report to a channel ends all of them.
    owed: HashMap<String, u32>,
    /// Channels whose pending REFERs the engine tried to end, but Asterisk failed the report.
    attempted: BTreeSet<String>,
    /// Per channel, the REFERs the engine took on (answered with a report) minus the terminal reports it
    /// made: never negative, or a REFER was told its outcome twice.
    taken_on: HashMap<String, i64>,
    violations: Vec<String>,
    next_inbound: u32,
}

fn channel(id: &str, up: bool) -> Value {
    json!({
        "id": id,
        "name": format!("PJSIP/{id}"),
        "state": if up { "Up" } else { "Ring" },
        "protocol_id": format!("{id}@test"),
        "dialplan": {"context": "from-phones", "exten": "s", "priority": 1, "app_name": "Stasis", "app_data": ""}
    })
}

impl World {
    fn new() -> World {
        let engine = Engine::new(EngineConfig {
            instance: "p".into(),
            routes: vec![Route::new("[a-z]+", "PJSIP/{exten}").unwrap()],
            ring_timeout: RING_TIMEOUT,
            recall_transferer: true,
            trunks: Vec::new(),
            metaflows: Default::default(),
        });
        World {
            engine,
            now: 0,
            channels: BTreeMap::new(),
            bridges: BTreeSet::new(),
            pending: VecDeque::new(),
            last_delivered: None,
            requests: VecDeque::new(),
            fail_next: false,
            failed: Vec::new(),
            owed: HashMap::new(),
            attempted: BTreeSet::new(),
            taken_on: HashMap::new(),
            violations: Vec::new(),
            next_inbound: 0,
        }
    }

    fn feed(&mut self, input: Input) {
        let outputs = self.engine.handle(self.now, input);
        self.carry_out(outputs);
    }

    fn feed_event(&mut self, value: Value) {
        let event: Event = serde_json::from_value(value).unwrap();
        self.feed(Input::Event {
            node: NODE.into(),
            event,
        });
    }

    /// A phone calls `exten`.
    fn inbound(&mut self, exten: &str) {
        self.next_inbound += 1;
        let id = format!("in{}", self.next_inbound);
        self.channels.insert(id.clone(), ChannelState::default());
        self.feed_event(
            json!({"type": "StasisStart", "args": [exten], "channel": channel(&id, false)}),
        );
    }

    fn carry_out(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            if let Output::Ari { call, request, .. } = output {
                self.requests.push_back((call, request));
            }
        }
    }

    /// Carries out the oldest request; a failure goes back to the engine.
    fn execute_next(&mut self) {
        let Some((call, request)) = self.requests.pop_front() else {
            return;
        };
        if let Some(status) = self.execute(&request) {
            self.feed(Input::RequestFailed {
                node: NODE.into(),
                call,
                request,
                status: Some(status),
                message: "model".into(),
            });
        }
    }

    fn alive(&self, id: &str) -> bool {
        self.channels.contains_key(id)
    }

    /// Carries out one request; `Some(status)` if it fails.
    fn execute(&mut self, request: &AriRequest) -> Option<u16> {
        let retry = self.failed.contains(request);
        if std::mem::take(&mut self.fail_next) && !retry {
            self.failed.push(request.clone());
            if let AriRequest::TransferProgress { channel, state } = request {
                if state.is_terminal() {
                    self.attempted.insert(channel.clone());
                }
            }
            return Some(500);
        }
        let missing = |ok: bool| if ok { None } else { Some(404) };
        match request {
            AriRequest::CreateBridge { bridge, .. } => {
                self.bridges.insert(bridge.clone());
                None
            }
            AriRequest::DestroyBridge { bridge } => missing(self.bridges.remove(bridge)),
            AriRequest::AddToBridge {
                bridge, channels, ..
            } => {
                if !self.bridges.contains(bridge) || !channels.iter().all(|c| self.alive(c)) {
                    return Some(422);
                }
                for c in channels {
                    self.pending.push_back(json!({"type": "ChannelEnteredBridge", "bridge": {"id": bridge}, "channel": channel(c, true)}));
                }
                None
            }
            AriRequest::RemoveFromBridge { bridge, .. } => missing(self.bridges.contains(bridge)),
            AriRequest::PlayOnBridge { bridge, .. } => missing(self.bridges.contains(bridge)),
            AriRequest::StopPlayback { .. } => None,
            AriRequest::PlayOnChannel { channel, .. }
            | AriRequest::StartMoh { channel, .. }
            | AriRequest::StopMoh { channel }
            | AriRequest::SendDtmf { channel, .. } => missing(self.alive(channel)),
            AriRequest::CreateChannel { channel: id, .. } => {
                self.channels.insert(
                    id.clone(),
                    ChannelState {
                        up: false,
                        dialed: true,
                    },
                );
                self.pending.push_back(json!({"type": "StasisStart", "args": ["dialed"], "channel": channel(id, false)}));
                None
            }
            AriRequest::Dial { channel, .. }
            | AriRequest::Ring { channel }
            | AriRequest::SetVariable { channel, .. } => missing(self.alive(channel)),
            AriRequest::Answer { channel } => {
                let alive = self.alive(channel);
                if let Some(state) = self.channels.get_mut(channel) {
                    state.up = true;
                }
                missing(alive)
            }
            AriRequest::Hangup { channel, .. } => {
                // Hanging up a transferer tells its phone 503; that is only right if the engine tried to
                // report the outcome first (a successful transfer must be reported 200, not 503).
                let owed = self.owed.get(channel).copied().unwrap_or(0);
                if owed > 0 && !self.attempted.contains(channel) {
                    self.violations.push(format!(
                        "{channel} hung up before it was told how its REFER ended"
                    ));
                }
                missing(self.gone(channel, 16))
            }
            AriRequest::TransferProgress { channel, state } => {
                // A report to a channel that is gone reaches no phone (Asterisk answers 404); one that
                // reaches it ends every REFER pending there (and is a silent no-op if none is).
                if state.is_terminal() && self.alive(channel) {
                    let taken_on = self.taken_on.entry(channel.clone()).or_default();
                    *taken_on -= 1;
                    if *taken_on < 0 {
                        self.violations
                            .push(format!("{channel} told the outcome of a REFER twice"));
                    }
                    if let Some(owed) = self.owed.get_mut(channel) {
                        *owed = 0;
                    }
                    self.attempted.remove(channel);
                }
                missing(self.alive(channel))
            }
        }
    }

    /// A channel hangs up: Asterisk's events for it are queued. False if it was gone already.
    fn gone(&mut self, id: &str, cause: i32) -> bool {
        if self.channels.remove(id).is_none() {
            return false;
        }
        // Asterisk itself sends the phone a 503 when a transferer with a pending REFER goes away.
        self.owed.remove(id);
        self.pending.push_back(
            json!({"type": "ChannelHangupRequest", "cause": cause, "channel": channel(id, true)}),
        );
        self.pending
            .push_back(json!({"type": "StasisEnd", "channel": channel(id, true)}));
        self.pending.push_back(json!({"type": "ChannelDestroyed", "cause": cause, "cause_txt": "", "channel": channel(id, true)}));
        true
    }

    fn nth_alive(&self, n: usize, filter: impl Fn(&ChannelState) -> bool) -> Option<String> {
        let ids: Vec<&String> = self
            .channels
            .iter()
            .filter(|(_, s)| filter(s))
            .map(|(id, _)| id)
            .collect();
        (!ids.is_empty()).then(|| ids[n % ids.len()].clone())
    }

    fn deliver(&mut self) {
        if let Some(event) = self.pending.pop_front() {
            self.last_delivered = Some(event.clone());
            self.feed_event(event);
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        let outputs = self.engine.handle_timeout(self.now);
        self.carry_out(outputs);
    }

    fn refer(&mut self, source: &str, destination: &str, replaces: Option<(&str, bool)>) {
        let mut requested = json!({"destination": destination});
        let mut refer_to = json!({});
        if let Some((replaced, resolved)) = replaces {
            requested["protocol_id"] = json!(format!("{replaced}@test"));
            if resolved {
                refer_to["destination_channel"] = channel(replaced, true);
            }
        }
        refer_to["requested_destination"] = requested;
        let event = json!({
            "type": "ChannelTransfer",
            "refer_to": refer_to,
            "referred_by": {"source_channel": channel(source, true)}
        });
        let input = Input::Event {
            node: NODE.into(),
            event: serde_json::from_value(event).unwrap(),
        };
        let outputs = self.engine.handle(self.now, input);
        if outputs.is_empty() {
            // Nothing posted is right if the engine is hanging the channel up (Asterisk then tells the
            // phone 503 itself), or for a second REFER while the engine has one pending on the channel:
            // its next terminal report ends both, so this one is owed that outcome like the first (a
            // REFER left waiting is caught when the run settles).
            let condemned = self
                .requests
                .iter()
                .any(|(_, r)| matches!(r, AriRequest::Hangup { channel, .. } if channel == source));
            if !condemned {
                *self.owed.entry(source.to_owned()).or_default() += 1;
            }
            return;
        }
        *self.owed.entry(source.to_owned()).or_default() += 1;
        *self.taken_on.entry(source.to_owned()).or_default() += 1;
        self.carry_out(outputs);
    }

    fn act(&mut self, action: &Action) {
        match *action {
            Action::Deliver => self.deliver(),
            Action::Execute => self.execute_next(),
            Action::Duplicate => {
                if let Some(event) = self.last_delivered.clone() {
                    self.feed_event(event);
                }
            }
            Action::Hangup(n) => {
                if let Some(id) = self.nth_alive(n, |_| true) {
                    self.gone(&id, 16);
                }
            }
            Action::Answer(n) => {
                if let Some(id) = self.nth_alive(n, |s| s.dialed && !s.up) {
                    if let Some(state) = self.channels.get_mut(&id) {
                        state.up = true;
                    }
                    self.pending.push_back(
                        json!({"type": "ChannelStateChange", "channel": channel(&id, true)}),
                    );
                }
            }
            Action::Fail(n, cause) => {
                if let Some(id) = self.nth_alive(n, |s| s.dialed && !s.up) {
                    self.gone(&id, cause);
                }
            }
            Action::BlindRefer(n, routable) => {
                if let Some(id) = self.nth_alive(n, |s| s.up) {
                    self.refer(&id, if routable { "carol" } else { "12345" }, None);
                }
            }
            Action::AttendedRefer(n, m, resolved) => {
                let source = self.nth_alive(n, |s| s.up);
                let replaced = self.nth_alive(m, |s| s.up);
                if let (Some(source), Some(replaced)) = (source, replaced) {
                    self.refer(&source, "carol", Some((&replaced, resolved)));
                }
            }
            Action::Tick(ms) => self.tick(ms),
            Action::FailNextRequest => self.fail_next = true,
        }
    }

    /// Carries out every request and delivers every event, until Asterisk has nothing more to do or say.
    fn deliver_all(&mut self) {
        while !self.pending.is_empty() || !self.requests.is_empty() {
            while !self.requests.is_empty() {
                self.execute_next();
            }
            self.deliver();
        }
    }

    /// Delivers everything Asterisk still has to say, and lets every deadline pass.
    fn settle(&mut self) {
        for _ in 0..3 {
            self.deliver_all();
            self.tick(RING_TIMEOUT * 2);
        }
    }
}

fn run(actions: &[Action]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    world.inbound("bob");
    world.inbound("carol");
    for action in actions {
        world.act(action);
    }
    world.settle();
    for (channel, owed) in &world.owed {
        prop_assert!(
            *owed == 0,
            "{channel} still waits for the outcome of {owed} REFER(s)"
        );
    }
    // Every phone hangs up.
    while let Some(id) = world.nth_alive(0, |_| true) {
        world.gone(&id, 16);
        world.settle();
    }
    prop_assert!(world.violations.is_empty(), "{:?}", world.violations);
    prop_assert!(
        world.bridges.is_empty(),
        "bridges left: {:?}",
        world.bridges
    );
    prop_assert_eq!(world.engine.call_count(), 0);
    prop_assert_eq!(world.engine.poll_timeout(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn every_refer_ends_once_and_nothing_is_left(actions in prop::collection::vec(action(), 0..60)) {
        run(&actions)?;
    }
}

/// The runs the generator is meant to reach do happen: a blind and an attended transfer that succeed.
#[test]
fn the_model_completes_blind_and_attended_transfers() {
    let answer_all = |world: &mut World| {
        while world.nth_alive(0, |s| s.dialed && !s.up).is_some() {
            world.act(&Action::Answer(0));
            world.deliver_all();
        }
    };
    let mut world = World::new();
    world.inbound("bob");
    world.inbound("carol");
    world.deliver_all();
    answer_all(&mut world);
    world.refer("in1", "dave", None);
    world.deliver_all();
    answer_all(&mut world);
    assert_eq!(
        world.owed.get("in1"),
        Some(&0),
        "the blind transfer was reported"
    );
    // The transferer is hung up once its moment to hang up by itself has passed.
    world.tick(2_000);
    world.deliver_all();
    // in1 was hung up after its transfer succeeded; its peer now talks to dave's leg.
    assert!(!world.alive("in1"));
    world.refer("in2", "carol", Some(("p-1-b", true)));
    world.deliver_all();
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    assert_eq!(world.engine.call_count(), 1);
}
