//! Property tests of the engine against a small model of Asterisk.
//!
//! Thousands of generated runs: two calls are placed, then phones hang up, answer, fail, send blind and
//! attended REFERs, requests fail, time passes and Asterisk's own events are delivered late, all in
//! generated orders, some events twice. The model carries out the engine's requests the way Asterisk does (a hangup gives
//! HangupRequest and StasisEnd, a created channel enters the app at once, a move gives ChannelEnteredBridge,
//! a request about something gone fails with 404). Whatever the order:
//! * no REFER is told its outcome twice, no transferer is hung up before it was told, and once the run
//!   settles, no phone still waits for the outcome of its REFER;
//! * once the run settles, every answered phone is in a bridge with another live phone, or hears music on
//!   hold (a consultation in progress): nobody is left in silence;
//! * once every phone has hung up, no channel or bridge the app created is left, and the engine forgets
//!   every call and deadline.
//!
//! Calls have feature codes (`*2201` transfers to carol, `*1`..`*4` and `*9` act during that transfer), and
//! phones press them at random too. There are two Asterisk nodes joined by trunks: two calls start on node1,
//! one on node2, so that attended transfers happen on one node and across nodes (the model carries a
//! link leg over the trunk like SIP does: the far leg arrives with the dialed extension, its answer answers
//! the near leg, a hangup of either ends the other). A request sent to the wrong node fails, as it would.
//! And the app crashes at any point: a new run (another engine) re-syncs with what the model holds and
//! takes over (S3); the same promises hold afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ari_transfer::ari::models::Event;
use ari_transfer::ari::request::AriRequest;
use ari_transfer::engine::metaflow::{ListenOn, Metaflows, Module, Pattern, TransferFlow};
use ari_transfer::engine::{Engine, EngineConfig, Input, MetaflowConfig, Output, Route, Trunk};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};

const NODE1: &str = "node1";
const NODE2: &str = "node2";
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
    /// The n-th answered phone presses the m-th of [`PRESSED`].
    Press(usize, usize),
    /// The app crashes and a new run starts (S3): the requests and events in flight are lost, and the new
    /// engine re-syncs with what Asterisk holds.
    Restart,
}

/// What phones press: a transfer to carol (201), the consultation codes, resume, a misdial, a plain digit.
const PRESSED: [&str; 8] = ["*2201", "*1", "*2", "*3", "*4", "*9", "*2999", "5"];

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
        2 => ((0..8usize), (0..PRESSED.len())).prop_map(|(n, m)| Action::Press(n, m)),
        1 => Just(Action::Restart),
    ]
}

#[derive(Debug, Default)]
struct ChannelState {
    up: bool,
    /// Created by the app (dialed), as opposed to a phone calling in.
    dialed: bool,
    /// Hears music on hold.
    moh: bool,
    /// For a trunk leg: (the other node, the extension it dials there) until dialed, then the far leg.
    trunk_to: Option<(&'static str, String)>,
    trunk_peer: Option<String>,
}

/// What a channel's snapshots say, kept after it is gone (its last events need them).
#[derive(Debug, Clone)]
struct Info {
    node: &'static str,
    name: String,
    call_id: String,
    exten: String,
    dialed: bool,
}

/// What Asterisk holds, and what each REFER is owed.
struct World {
    engine: Engine,
    now: u64,
    channels: BTreeMap<String, ChannelState>,
    bridges: BTreeSet<String>,
    /// Which bridge each channel is in.
    membership: BTreeMap<String, String>,
    info: HashMap<String, Info>,
    /// Events, with the node they come from.
    pending: VecDeque<(&'static str, Value)>,
    last_delivered: Option<(&'static str, Value)>,
    requests: VecDeque<(ari_transfer::engine::CallKey, String, AriRequest)>,
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
    /// Channels with a REFER whose event the engine got and that Asterisk may still be setting up (no
    /// session barrier since): a progress report reaching one would crash Asterisk 22. With each, the
    /// reports to it the engine had already issued when that event came (it could not fence those).
    setting_up: BTreeMap<String, usize>,
    next_inbound: u32,
    /// The node each bridge is on.
    bridge_node: HashMap<String, &'static str>,
    restarts: u32,
}

/// A run of the app: `instance` tells its ids from an earlier run's.
fn engine(instance: &str) -> Engine {
    Engine::new(EngineConfig {
        app: "ari-transfer".into(),
        instance: instance.into(),
        routes: vec![
            Route::new("201", "PJSIP/carol").unwrap(),
            Route::new("[a-z]+", "PJSIP/{exten}").unwrap(),
        ],
        ring_timeout: RING_TIMEOUT,
        recall_transferer: true,
        trunks: vec![trunk(NODE1, NODE2), trunk(NODE2, NODE1)],
        metaflows: feature_codes(),
        refer_barrier: true,
        accounts: Default::default(),
    })
}

impl World {
    fn new() -> World {
        World {
            engine: engine("p"),
            now: 0,
            channels: BTreeMap::new(),
            bridges: BTreeSet::new(),
            membership: BTreeMap::new(),
            info: HashMap::new(),
            pending: VecDeque::new(),
            last_delivered: None,
            requests: VecDeque::new(),
            fail_next: false,
            failed: Vec::new(),
            owed: HashMap::new(),
            attempted: BTreeSet::new(),
            taken_on: HashMap::new(),
            violations: Vec::new(),
            setting_up: BTreeMap::new(),
            next_inbound: 0,
            bridge_node: HashMap::new(),
            restarts: 0,
        }
    }

    fn feed(&mut self, input: Input) {
        let outputs = self.engine.handle(self.now, input);
        self.carry_out(outputs);
    }

    fn feed_event(&mut self, node: &str, value: Value) {
        let event: Event = serde_json::from_value(value).unwrap();
        self.feed(Input::Event {
            node: node.into(),
            event,
        });
    }

    /// A channel's snapshot, as its node's events carry it.
    fn snapshot(&self, id: &str, up: bool) -> Value {
        let info = &self.info[id];
        let app_data = if info.dialed {
            "ari-transfer,dialed"
        } else {
            "ari-transfer"
        };
        json!({
            "id": id,
            "name": info.name,
            "state": if up { "Up" } else { "Ring" },
            "protocol_id": info.call_id,
            "dialplan": {"context": "from-phones", "exten": info.exten, "priority": 1, "app_name": "Stasis", "app_data": app_data}
        })
    }

    /// Queues an event of `kind` about channel `id`, from its node, with more fields.
    fn event_about(&mut self, kind: &str, id: &str, up: bool, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["channel"] = self.snapshot(id, up);
        let node = self.info[id].node;
        self.pending.push_back((node, fields));
    }

    /// A new channel on `node`.
    fn add_channel(
        &mut self,
        id: &str,
        node: &'static str,
        name: String,
        call_id: String,
        exten: &str,
        state: ChannelState,
    ) {
        let exten = exten.to_owned();
        let dialed = state.dialed;
        self.info.insert(
            id.to_owned(),
            Info {
                node,
                name,
                call_id,
                exten,
                dialed,
            },
        );
        self.channels.insert(id.to_owned(), state);
    }

    /// A phone on `node` calls `exten`. Every call comes from alice's phone (with several lines, on either
    /// node), so that a REFER's Replaces may name another inbound call as the transferer's own dialog; one
    /// from a called phone naming alice's dialog is refused (replaces.rs), and that is modelled too.
    fn inbound(&mut self, exten: &str, node: &'static str) {
        self.next_inbound += 1;
        let id = format!("in{}", self.next_inbound);
        let name = format!("PJSIP/alice-{:08x}", self.next_inbound);
        let call_id = format!("{id}@test");
        self.add_channel(&id, node, name, call_id, exten, ChannelState::default());
        let start =
            json!({"type": "StasisStart", "args": [exten], "channel": self.snapshot(&id, false)});
        self.feed_event(node, start);
    }

    fn carry_out(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            if let Output::Ari {
                call,
                node,
                request,
            } = output
            {
                self.requests.push_back((call, node.to_string(), request));
            }
        }
    }

    /// Carries out the oldest request; a failure goes back to the engine.
    fn execute_next(&mut self) {
        let Some((call, node, request)) = self.requests.pop_front() else {
            return;
        };
        if let Some(status) = self.execute(&node, &request) {
            self.feed(Input::RequestFailed {
                node: node.as_str().into(),
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

    /// Whether a channel lives on `node` (a request about it sent elsewhere finds nothing).
    fn on(&self, node: &str, id: &str) -> bool {
        self.alive(id) && self.info[id].node == node
    }

    /// Carries out one request on `node`; `Some(status)` if it fails.
    fn execute(&mut self, node: &str, request: &AriRequest) -> Option<u16> {
        if let Some(channel) = request
            .channel()
            .filter(|_| !matches!(request, AriRequest::CreateChannel { .. }))
        {
            if self.alive(channel) && !self.on(node, channel) {
                self.violations.push(format!(
                    "{request:?} sent to {node}, not to its channel's node"
                ));
                return Some(404);
            }
        }
        if let AriRequest::AwaitSession { channel } = request {
            // Answered (even with an error) only after the session's queued work: the REFER is set up.
            self.setting_up.remove(channel);
        }
        if let AriRequest::TransferProgress { channel, .. } = request {
            let alive = self.alive(channel);
            match self.setting_up.get_mut(channel) {
                Some(0) if alive => self.violations.push(format!(
                    "{request:?} reached a REFER Asterisk may still be setting up (no barrier)"
                )),
                Some(issued_before) => *issued_before = issued_before.saturating_sub(1),
                None => {}
            }
        }
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
                let node = if node == NODE1 { NODE1 } else { NODE2 };
                self.bridge_node.insert(bridge.clone(), node);
                None
            }
            AriRequest::DestroyBridge { bridge } => {
                self.membership.retain(|_, b| b != bridge);
                missing(self.bridges.remove(bridge))
            }
            AriRequest::AddToBridge {
                bridge, channels, ..
            } => {
                if !self.bridges.contains(bridge) || !channels.iter().all(|c| self.on(node, c)) {
                    return Some(422);
                }
                for c in channels {
                    self.membership.insert(c.clone(), bridge.clone());
                    let fields = json!({"bridge": {"id": bridge}});
                    self.event_about("ChannelEnteredBridge", c, true, fields);
                }
                None
            }
            AriRequest::RemoveFromBridge { bridge, channels } => {
                for c in channels {
                    if self.membership.get(c) == Some(bridge) {
                        self.membership.remove(c);
                    }
                }
                missing(self.bridges.contains(bridge))
            }
            AriRequest::PlayOnBridge { bridge, .. } => missing(self.bridges.contains(bridge)),
            AriRequest::StopPlayback { .. } => None,
            // Music on hold plays until it is stopped, or until anything else is played to the channel.
            AriRequest::StartMoh { channel, .. } => self.set_moh(channel, true),
            AriRequest::StopMoh { channel } | AriRequest::PlayOnChannel { channel, .. } => {
                self.set_moh(channel, false)
            }
            AriRequest::SendDtmf { channel, .. } => missing(self.alive(channel)),
            AriRequest::CreateChannel {
                channel: id,
                endpoint,
                ..
            } => {
                let node = if node == NODE1 { NODE1 } else { NODE2 };
                // `PJSIP/<exten>@<peer node>` goes over the trunk to that node.
                let trunk = endpoint
                    .strip_prefix("PJSIP/")
                    .and_then(|rest| rest.split_once('@'))
                    .and_then(|(exten, peer)| {
                        [NODE1, NODE2]
                            .into_iter()
                            .find(|n| *n == peer)
                            .map(|n| (n, exten.to_owned()))
                    });
                let (name, call_id) = match &trunk {
                    Some((peer, _)) => {
                        (format!("PJSIP/{peer}-00000001"), format!("trunk-{id}@test"))
                    }
                    None => (format!("PJSIP/{id}"), format!("{id}@test")),
                };
                let state = ChannelState {
                    dialed: true,
                    trunk_to: trunk,
                    ..ChannelState::default()
                };
                self.add_channel(id, node, name, call_id, "s", state);
                self.event_about("StasisStart", id, false, json!({"args": ["dialed"]}));
                None
            }
            AriRequest::Dial { channel, .. } => {
                let trunk = self.channels.get(channel).and_then(|s| s.trunk_to.clone());
                if let (Some((peer, exten)), None) = (
                    trunk,
                    self.channels
                        .get(channel)
                        .and_then(|s| s.trunk_peer.clone()),
                ) {
                    self.carry_over_the_trunk(node, channel, peer, &exten);
                }
                missing(self.alive(channel))
            }
            AriRequest::Ring { channel }
            | AriRequest::SetVariable { channel, .. }
            | AriRequest::AwaitSession { channel } => missing(self.alive(channel)),
            AriRequest::Answer { channel } => {
                let alive = self.alive(channel);
                if let Some(state) = self.channels.get_mut(channel) {
                    state.up = true;
                }
                // The far leg of a trunk call answered: so is its near leg, on the other node.
                let near = self
                    .channels
                    .get(channel)
                    .and_then(|s| s.trunk_peer.clone());
                if let Some(near) = near.filter(|n| self.channels.get(n).is_some_and(|s| !s.up)) {
                    if let Some(state) = self.channels.get_mut(&near) {
                        state.up = true;
                    }
                    self.event_about("ChannelStateChange", &near, true, json!({}));
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
                    if self.owed.get(channel).is_some_and(|owed| *owed > 0) {
                        // Asterisk reports the REFER's end to the app after its final NOTIFY.
                        let referred_by = json!({"source_channel": self.snapshot(channel, true)});
                        let node = self.info[channel].node;
                        self.pending.push_back((
                            node,
                            json!({"type": "ChannelTransfer", "state": state.as_str(),
                                "refer_to": {"requested_destination": {"destination": "x"}},
                                "referred_by": referred_by}),
                        ));
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

    /// The near leg `near` on `node` dialed `exten` on node `peer`: the call arrives there, in the app.
    fn carry_over_the_trunk(&mut self, node: &str, near: &str, peer: &'static str, exten: &str) {
        let far = format!("{near}-far");
        let name = format!("PJSIP/{node}-00000002");
        let call_id = self.info[near].call_id.clone();
        let state = ChannelState {
            trunk_peer: Some(near.to_owned()),
            ..ChannelState::default()
        };
        self.add_channel(&far, peer, name, call_id, exten, state);
        if let Some(state) = self.channels.get_mut(near) {
            state.trunk_peer = Some(far.clone());
        }
        self.event_about("StasisStart", &far, false, json!({"args": []}));
    }

    fn set_moh(&mut self, id: &str, on: bool) -> Option<u16> {
        match self.channels.get_mut(id) {
            Some(state) => {
                state.moh = on;
                None
            }
            None => Some(404),
        }
    }

    /// The answered phones that are neither in a bridge with another live phone nor hear music.
    fn in_silence(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, state)| state.up && !state.moh)
            .filter(|(id, _)| {
                let bridge = self.membership.get(*id);
                !self
                    .membership
                    .iter()
                    .any(|(other, b)| other != *id && Some(b) == bridge && self.alive(other))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A channel hangs up: Asterisk's events for it are queued. False if it was gone already.
    fn gone(&mut self, id: &str, cause: i32) -> bool {
        let Some(state) = self.channels.remove(id) else {
            return false;
        };
        self.membership.remove(id);
        // Asterisk itself sends the phone a 503 when a transferer with a pending REFER goes away.
        self.owed.remove(id);
        self.event_about("ChannelHangupRequest", id, true, json!({"cause": cause}));
        self.event_about("StasisEnd", id, true, json!({}));
        self.event_about(
            "ChannelDestroyed",
            id,
            true,
            json!({"cause": cause, "cause_txt": ""}),
        );
        // The other end of a trunk call is hung up by its BYE.
        if let Some(peer) = state.trunk_peer {
            self.gone(&peer, cause);
        }
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
        if let Some((node, event)) = self.pending.pop_front() {
            self.last_delivered = Some((node, event.clone()));
            self.feed_event(node, event);
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
        let node = self.info[source].node;
        if let Some((replaced, resolved)) = replaces {
            requested["protocol_id"] = json!(self.info[replaced].call_id);
            // Asterisk resolves only a dialog it has.
            if resolved && self.info[replaced].node == node {
                refer_to["destination_channel"] = self.snapshot(replaced, true);
            }
        }
        refer_to["requested_destination"] = requested;
        let event = json!({
            "type": "ChannelTransfer",
            "refer_to": refer_to,
            "referred_by": {"source_channel": self.snapshot(source, true)}
        });
        let input = Input::Event {
            node: node.into(),
            event: serde_json::from_value(event).unwrap(),
        };
        let issued = self
            .requests
            .iter()
            .filter(|(_, _, r)| matches!(r, AriRequest::TransferProgress { channel, .. } if channel == source))
            .count();
        self.setting_up.insert(source.to_owned(), issued);
        let outputs = self.engine.handle(self.now, input);
        // A REFER on a channel the engine is already hanging up ends with the 503 Asterisk sends when the
        // channel goes (or with whatever the engine posts before that): it is owed nothing more. Nothing
        // posted is also right for a second REFER while the engine has one pending on the channel: its
        // next terminal report ends both, so this one is owed that outcome like the first (a REFER left
        // waiting is caught when the run settles).
        let condemned = self
            .requests
            .iter()
            .any(|(_, _, r)| matches!(r, AriRequest::Hangup { channel, .. } if channel == source));
        if !condemned {
            *self.owed.entry(source.to_owned()).or_default() += 1;
        }
        if outputs.is_empty() {
            return;
        }
        *self.taken_on.entry(source.to_owned()).or_default() += 1;
        self.carry_out(outputs);
    }

    fn act(&mut self, action: &Action) {
        match *action {
            Action::Deliver => self.deliver(),
            Action::Execute => self.execute_next(),
            Action::Duplicate => {
                if let Some((node, event)) = self.last_delivered.clone() {
                    self.feed_event(node, event);
                }
            }
            Action::Hangup(n) => {
                if let Some(id) = self.nth_alive(n, |_| true) {
                    self.gone(&id, 16);
                }
            }
            // A trunk leg is answered by its far end (the app on the other node), not by a phone.
            Action::Answer(n) => {
                if let Some(id) = self.nth_alive(n, |s| s.dialed && !s.up && s.trunk_to.is_none()) {
                    if let Some(state) = self.channels.get_mut(&id) {
                        state.up = true;
                    }
                    self.event_about("ChannelStateChange", &id, true, json!({}));
                }
            }
            // Failing a trunk leg is the trunk failing.
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
            Action::Restart => self.restart(),
            Action::FailNextRequest => self.fail_next = true,
            Action::Press(n, m) => {
                if let Some(id) = self.nth_alive(n, |s| s.up) {
                    let node = self.info[&id].node;
                    for digit in PRESSED[m].chars() {
                        let dtmf = json!({"type": "ChannelDtmfReceived", "digit": digit.to_string(), "duration_ms": 200, "channel": self.snapshot(&id, true)});
                        self.feed_event(node, dtmf);
                    }
                }
            }
        }
    }

    /// The app crashes; a new run connects to both nodes and re-syncs.
    fn restart(&mut self) {
        self.restarts += 1;
        self.engine = engine(&format!("r{}", self.restarts));
        self.requests.clear();
        self.pending.clear();
        self.last_delivered = None;
        self.fail_next = false;
        // Asterisk finished setting up those REFERs long before a new run connects.
        self.setting_up.clear();
        // The new run cannot know which REFER was pending where: it may end each pending one once (it
        // tells the parties of the calls it adopts 503, which is a no-op where none is pending), and it may
        // hang up a transferer (Asterisk then sends the 503).
        for (channel, owed) in &self.owed {
            if *owed > 0 {
                self.attempted.insert(channel.clone());
            }
        }
        for channel in self.channels.keys() {
            let taken_on = self.taken_on.entry(channel.clone()).or_default();
            *taken_on = (*taken_on).max(1);
        }
        for node in [NODE1, NODE2] {
            let channels = self
                .channels
                .iter()
                .filter(|(id, _)| self.info[*id].node == node)
                .map(|(id, state)| serde_json::from_value(self.snapshot(id, state.up)).unwrap())
                .collect();
            let bridges = self
                .bridges
                .iter()
                .filter(|b| self.bridge_node.get(*b) == Some(&node))
                .map(|b| {
                    let members: Vec<&String> = self
                        .membership
                        .iter()
                        .filter(|(_, of)| *of == b)
                        .map(|(channel, _)| channel)
                        .collect();
                    let bridge =
                        json!({"id": b, "name": format!("ari-transfer/{b}"), "channels": members});
                    serde_json::from_value(bridge).unwrap()
                })
                .collect();
            self.feed(Input::NodeSynced {
                node: node.into(),
                channels,
                bridges,
            });
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

/// One run: three calls (two on node1, one on node2), connected first if `connected` (so that the
/// transfers between connected calls, the ones most runs are about, come often), then `actions`.
fn run(connected: bool, actions: &[Action]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    world.inbound("bob", NODE1);
    world.inbound("carol", NODE1);
    world.inbound("dave", NODE2);
    if connected {
        world.deliver_all();
        while world.nth_alive(0, |s| s.dialed && !s.up).is_some() {
            world.act(&Action::Answer(0));
            world.deliver_all();
        }
    }
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
    let in_silence = world.in_silence();
    prop_assert!(in_silence.is_empty(), "left in silence: {in_silence:?}");
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
    fn every_refer_ends_once_and_nothing_is_left(
        connected in any::<bool>(),
        actions in prop::collection::vec(action(), 0..60),
    ) {
        run(connected, &actions)?;
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
    world.inbound("bob", NODE1);
    world.inbound("carol", NODE1);
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

/// The feature codes of the model's calls: `*2` + extension, resume `*9`, both legs listening.
fn feature_codes() -> MetaflowConfig {
    let flow = TransferFlow {
        recall_retries: 1,
        recall_delay: 5_000,
        ..TransferFlow::default()
    };
    let flows = Metaflows {
        binding_key: '*',
        digit_timeout: 1_000,
        listen_on: ListenOn::Both,
        numbers: vec![("9".into(), Module::Resume)],
        patterns: vec![Pattern {
            regex: Regex::new(r"^(?:2(\d+))$").unwrap(),
            module: Module::Transfer(flow),
        }],
    };
    MetaflowConfig {
        default: Some(Arc::new(flows)),
        endpoints: Default::default(),
        accounts: Default::default(),
    }
}

/// The feature-code transfer the generator is meant to reach does happen: in1 presses `*2201`, carol
/// answers, in1 hangs up, and its peer ends up bridged with carol's leg, no longer on hold.
#[test]
fn the_model_completes_a_feature_code_transfer() {
    let mut world = World::new();
    world.inbound("bob", NODE1);
    world.deliver_all();
    world.act(&Action::Answer(0));
    world.deliver_all();
    world.act(&Action::Press(0, 0));
    world.tick(1_000);
    world.deliver_all();
    assert!(world.channels["p-1-b"].moh, "the transferee is held");
    world.act(&Action::Answer(0));
    world.deliver_all();
    world.gone("in1", 16);
    world.settle();
    let target = "p-1-f1-t";
    assert_eq!(
        world.membership.get(target).map(String::as_str),
        Some("p-1-bridge")
    );
    assert_eq!(
        world.membership.get("p-1-b").map(String::as_str),
        Some("p-1-bridge")
    );
    assert!(!world.channels["p-1-b"].moh);
    assert!(world.in_silence().is_empty());
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

fn trunk(node: &str, peer: &str) -> Trunk {
    Trunk {
        node: node.into(),
        peer: peer.into(),
        endpoint: peer.into(),
    }
}

/// The cross-node transfer the generator is meant to reach does happen: in1 (node1) REFERs its call,
/// naming in2's dialog on node2; the link leg joins both sides, and a hangup on one side ends the other.
#[test]
fn the_model_completes_a_transfer_across_nodes() {
    let mut world = World::new();
    world.inbound("bob", NODE1);
    world.inbound("dave", NODE2);
    world.deliver_all();
    while world.nth_alive(0, |s| s.dialed && !s.up).is_some() {
        world.act(&Action::Answer(0));
        world.deliver_all();
    }
    world.refer("in1", "carol", Some(("in2", false)));
    world.deliver_all();
    assert_eq!(world.owed.get("in1"), Some(&0), "the REFER was reported");
    let bridge_of = |world: &World, id: &str| world.membership.get(id).cloned();
    assert_eq!(bridge_of(&world, "p-3-link").as_deref(), Some("p-1-bridge"));
    assert_eq!(
        bridge_of(&world, "p-3-link-far").as_deref(),
        Some("p-2-bridge")
    );
    assert_eq!(bridge_of(&world, "p-1-b"), bridge_of(&world, "p-3-link"));
    assert_eq!(
        bridge_of(&world, "p-2-b"),
        bridge_of(&world, "p-3-link-far")
    );
    world.tick(2_000);
    world.deliver_all();
    assert!(
        !world.alive("in1") && !world.alive("in2"),
        "the transferer's legs are hung up"
    );
    world.gone("p-1-b", 16);
    world.settle();
    assert!(
        world.channels.is_empty(),
        "left: {:?}",
        world.channels.keys()
    );
    assert!(world.bridges.is_empty());
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    assert_eq!(world.engine.call_count(), 0);
}

/// The restart the generator is meant to reach does take over: after a crash with two calls connected,
/// the new run adopts both, and a blind transfer on an adopted call succeeds.
#[test]
fn the_model_adopts_connected_calls_after_a_restart() {
    let mut world = World::new();
    world.inbound("bob", NODE1);
    world.inbound("carol", NODE1);
    world.deliver_all();
    while world.nth_alive(0, |s| s.dialed && !s.up).is_some() {
        world.act(&Action::Answer(0));
        world.deliver_all();
    }
    world.act(&Action::Restart);
    world.deliver_all();
    assert_eq!(world.engine.call_count(), 2, "both calls are adopted");
    world.refer("in1", "dave", None);
    world.deliver_all();
    world.act(&Action::Answer(0));
    world.deliver_all();
    assert_eq!(world.owed.get("in1"), Some(&0), "the transfer was reported");
    world.settle();
    assert!(world.in_silence().is_empty());
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    // p-1-b (bob's leg, dialed by the first run) now talks to the target the second run dialed.
    let bridge_of = |id: &str| world.membership.get(id).cloned();
    assert_eq!(bridge_of("p-1-b").as_deref(), Some("p-1-bridge"));
    assert_eq!(bridge_of("r1-3-t").as_deref(), Some("p-1-bridge"));
}
