//! The engine: every call decision, as a pure state machine.
//!
//! It takes one [`Input`] at a time (an ARI event, a node re-sync, a failed request) together with the current
//! time, and returns [`Output`]s (ARI requests to make, calls that ended). Deadlines it needs are kept inside
//! and exposed through [`Engine::poll_timeout`]; the runtime calls [`Engine::handle_timeout`] when one is due.
//! No sockets, no clock, no tasks, no locks: a scenario is a unit test that feeds events and reads requests.

mod adopt;
pub mod api;
pub mod events;
mod index;
mod konami;
pub mod metaflow;
mod replaces;
mod routing;
mod timers;
mod transfer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use regex::Regex;

use crate::ari::models::{Bridge, Channel, ChannelTransfer, Event};
use crate::ari::request::{AriRequest, HangupCause, TransferProgress};

use index::ChannelIndex;
use metaflow::Metaflows;
pub use routing::CallPhase;
use routing::{Call, Flow, Leg};
use timers::{TimerKind, Timers};
use transfer::{BlindPlan, LinkSignal};

/// Milliseconds on the runtime's monotonic clock.
pub type Millis = u64;

/// The configured name of an Asterisk node (`[[nodes]] name`).
pub type NodeName = Arc<str>;

/// The engine's handle for one call. It is also the runtime's ordering key: requests of one call are
/// executed in the order the engine issued them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey(pub u64);

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// `appArgs` of the channels the engine originates, so that a restarted app recognises them.
pub const DIALED_LEG_ARG: &str = "dialed";

/// The channel function that puts a PJSIP channel's REFER handling in ARI's hands.
pub const TRANSFER_HANDLING_VAR: &str = "PJSIP_TRANSFER_HANDLING()";

/// One routing rule: an extension pattern and the dial string it leads to.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: Regex,
    dial: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("invalid regular expression: {0}")]
    Pattern(String),
    #[error("unknown placeholder {{{0}}}: use {{exten}} or a capture group number {{1}}..{{{1}}}")]
    Placeholder(String, usize),
    #[error("unbalanced braces in the dial string")]
    Braces,
}

impl Route {
    /// `pattern` must match the whole extension; `dial` may use `{exten}` and capture groups `{1}`, `{2}`...
    pub fn new(pattern: &str, dial: &str) -> Result<Route, RouteError> {
        let pattern = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| RouteError::Pattern(one_line(&e.to_string())))?;
        let groups = pattern.captures_len() - 1;
        for placeholder in placeholders(dial)? {
            let known = placeholder == "exten"
                || placeholder
                    .parse::<usize>()
                    .is_ok_and(|n| (1..=groups).contains(&n));
            if !known {
                return Err(RouteError::Placeholder(placeholder.to_owned(), groups));
            }
        }
        Ok(Route {
            pattern,
            dial: dial.to_owned(),
        })
    }

    /// The dial string for `exten`, if this route matches it.
    pub fn dial_string(&self, exten: &str) -> Option<String> {
        let captures = self.pattern.captures(exten)?;
        let mut out = self.dial.clone();
        // Placeholders were validated in `new`, so every one has a value here.
        for placeholder in placeholders(&self.dial).ok()? {
            let value = match placeholder {
                "exten" => exten,
                n => captures.get(n.parse().ok()?).map_or("", |m| m.as_str()),
            };
            out = out.replacen(&format!("{{{placeholder}}}"), value, 1);
        }
        Some(out)
    }
}

/// Folds a multi-line message (regex errors draw a caret under the pattern) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names between braces in a dial string template.
fn placeholders(template: &str) -> Result<Vec<&str>, RouteError> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(RouteError::Braces)?;
        if after[..close].contains('{') {
            return Err(RouteError::Braces);
        }
        found.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(RouteError::Braces);
    }
    Ok(found)
}

/// A SIP trunk: on `node`, the PJSIP endpoint `endpoint` reaches node `peer`. Calls between nodes arrive on
/// the endpoint named for the calling node, so a channel of a trunk endpoint is never a phone's dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub node: NodeName,
    pub peer: NodeName,
    pub endpoint: String,
}

/// What the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The Stasis application's name: the channels in it are the app's, and so are the bridges whose
    /// name begins with it.
    pub app: String,
    /// Makes the ids of bridges and channels this instance creates unique across instances and restarts.
    pub instance: String,
    /// Tried in order; the first that matches the dialed extension wins.
    pub routes: Vec<Route>,
    /// How long a dialed party may ring before the call fails with "no answer".
    pub ring_timeout: Millis,
    /// Whether a blind transfer whose target fails after the transferer hung up calls the transferer
    /// back (else the transferee is hung up).
    pub recall_transferer: bool,
    /// The trunks between nodes, for attended transfers whose two calls are on different nodes (A3).
    pub trunks: Vec<Trunk>,
    /// In-call feature codes (D1–D7).
    pub metaflows: MetaflowConfig,
    /// Whether the first progress report on each REFER waits for Asterisk to have finished handling that
    /// REFER ([`AriRequest::AwaitSession`] before it). Off only to reproduce the Asterisk 22 crash.
    pub refer_barrier: bool,
    /// Which calls belong to which account.
    pub accounts: Accounts,
}

/// Which feature codes a call has: those of its caller's endpoint, else its account's, else the default
/// ones, else none.
#[derive(Debug, Clone, Default)]
pub struct MetaflowConfig {
    pub default: Option<Arc<Metaflows>>,
    /// By PJSIP endpoint name (`alice` for `PJSIP/alice-00000001`).
    pub endpoints: HashMap<String, Arc<Metaflows>>,
    /// By account id.
    pub accounts: HashMap<String, Arc<Metaflows>>,
}

impl MetaflowConfig {
    fn for_caller(&self, caller: &Channel, account: Option<&str>) -> Option<Arc<Metaflows>> {
        caller
            .endpoint()
            .and_then(|e| self.endpoints.get(e.trim_start_matches("PJSIP/")))
            .or_else(|| account.and_then(|a| self.accounts.get(a)))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// Which account each call belongs to (see [`Accounts::of_call`]).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// Every account id.
    pub ids: HashSet<String>,
    /// By PJSIP endpoint name.
    pub endpoints: HashMap<String, String>,
    /// The channel variable the dialplan sets to name the account (shown in channel snapshots through
    /// ari.conf's `channelvars`).
    pub variable: String,
}

impl Accounts {
    /// The account of a call from `caller` dialed as `dial`: the one the dialplan named, else the one of
    /// the caller's endpoint, else that of the dialed endpoint.
    pub fn of_call(&self, caller: &Channel, dial: &str) -> Option<Arc<str>> {
        let named = caller
            .variable(&self.variable)
            .filter(|id| self.ids.contains(*id));
        let by_endpoint = |endpoint: Option<&str>| {
            let name = endpoint?.strip_prefix("PJSIP/")?;
            let name = name.split(['/', '@', '&']).next()?;
            self.endpoints.get(name).map(String::as_str)
        };
        named
            .or_else(|| by_endpoint(caller.endpoint().as_deref()))
            .or_else(|| by_endpoint(Some(dial)))
            .map(Arc::from)
    }
}

/// How the extensions of an instance's link legs begin (letters and digits only: the dialplan's pattern
/// takes nothing else).
pub(crate) fn link_prefix(instance: &str) -> String {
    format!("xfer{instance}n")
}

/// The dial string for `exten` by the first route that matches it.
pub(crate) fn route(config: &EngineConfig, exten: &str) -> Option<String> {
    config
        .routes
        .iter()
        .find_map(|route| route.dial_string(exten))
}

/// One input to the engine.
// An event is moved a handful of times on its way into the engine; boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Input {
    /// An event from a node's websocket.
    Event { node: NodeName, event: Event },
    /// The node's websocket (re)connected; `channels` is what `GET /channels` answered right after.
    NodeSynced {
        node: NodeName,
        channels: Vec<Channel>,
        bridges: Vec<Bridge>,
    },
    /// The node's websocket is down (it is re-synced when it comes back).
    NodeLost { node: NodeName },
    /// An ARI request the engine issued failed.
    RequestFailed {
        node: NodeName,
        call: CallKey,
        request: AriRequest,
        /// The HTTP status, if Asterisk answered at all.
        status: Option<u16>,
        message: String,
    },
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Execute this request on `node`, after every earlier request of the same call.
    Ari {
        node: NodeName,
        call: CallKey,
        request: AriRequest,
    },
    /// The call is over: once its queued requests are done, nothing more will come for it.
    CallEnded { call: CallKey },
    /// Something apps are told about ([`events`]): delivered, never waited for.
    Event(events::Event),
}

/// The side effects of handling one input, collected while the engine's call table is borrowed.
pub(crate) struct Effects<'a> {
    pub now: Millis,
    pub config: &'a EngineConfig,
    pub timers: &'a mut Timers,
    pub out: &'a mut Vec<Output>,
    /// What this call tells the other half of a cross-node transfer, delivered once it is done.
    signals: Vec<(CallKey, LinkSignal)>,
    /// What the calls report about their transfers, for the transfers' records.
    notes: Vec<(CallKey, api::Note)>,
}

impl Effects<'_> {
    pub fn note(&mut self, call: CallKey, note: api::Note) {
        self.notes.push((call, note));
    }

    pub fn signal(&mut self, call: CallKey, signal: LinkSignal) {
        self.signals.push((call, signal));
    }

    pub fn request(&mut self, call: &Call, request: AriRequest) {
        self.out.push(Output::Ari {
            node: call.node.clone(),
            call: call.key,
            request,
        });
    }
}

/// The whole state of the service's calls.
pub struct Engine {
    config: EngineConfig,
    calls: HashMap<CallKey, Call>,
    /// Which call each known channel belongs to, and their SIP Call-IDs.
    index: ChannelIndex,
    timers: Timers,
    next_key: u64,
    /// Requests made a second time after a failure.
    retried: HashSet<(NodeName, AriRequest)>,
    /// Cross-node transfers waiting for their link leg: (the node it arrives on, the extension it
    /// dials) to the consult call it joins.
    links: HashMap<(NodeName, String), CallKey>,
    /// How the extensions of this instance's link legs begin (letters and digits only: the dialplan's
    /// pattern takes nothing else).
    link_prefix: String,
    /// Channels of the app found in no bridge at a re-sync, and when they are taken for leftovers of an
    /// earlier run (see adopt.rs).
    strays: Vec<(NodeName, String, Millis)>,
    /// Channels with a REFER that Asterisk may still be handling: the next progress report to each waits
    /// for it (see [`Engine::fence_refers`]).
    unfenced: HashSet<(NodeName, String)>,
    /// Every transfer's record, for the API.
    transfers: api::TransferLog,
    /// Nodes whose websocket is down: commands for their calls are answered 503.
    down: HashSet<NodeName>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            calls: HashMap::new(),
            index: ChannelIndex::default(),
            timers: Timers::default(),
            next_key: 1,
            retried: HashSet::new(),
            links: HashMap::new(),
            link_prefix: link_prefix(&config.instance),
            strays: Vec::new(),
            unfenced: HashSet::new(),
            transfers: api::TransferLog::default(),
            down: HashSet::new(),
            config,
        }
    }

    /// The earliest time at which [`Engine::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }

    /// Calls in progress.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The phase of the call a channel belongs to, for status reporting.
    pub fn phase_of(&self, node: &str, channel: &str) -> Option<CallPhase> {
        let key = self.index.call_of(&NodeName::from(node), channel)?;
        self.calls.get(&key).map(Call::phase)
    }

    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Event { node, event } => self.on_event(now, node, event, &mut out),
            Input::NodeSynced {
                node,
                channels,
                bridges,
            } => {
                self.down.remove(&node);
                self.on_synced(now, node, channels, bridges, &mut out)
            }
            Input::NodeLost { node } => {
                self.down.insert(node);
            }
            Input::RequestFailed {
                node,
                call,
                request,
                status,
                message,
            } => {
                if request.done_if_missing() && status == Some(404) {
                    tracing::debug!(%call, target = request.target(), "already gone");
                } else if self.retry_once(&node, call, &request, status) {
                    tracing::warn!(%call, ?request, ?status, %message, "ARI request failed; trying once more");
                    out.push(Output::Ari {
                        node,
                        call,
                        request,
                    });
                } else {
                    tracing::warn!(%call, ?request, ?status, %message, "ARI request failed");
                    self.with_call(now, call, &mut out, |call, fx| {
                        call.on_request_failed(&request, status, fx)
                    });
                }
            }
        }
        self.fence_refers(&mut out);
        out
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((call, kind)) = self.timers.pop_due(now) {
            if kind == TimerKind::Strays {
                self.on_strays_due(now, &mut out);
                continue;
            }
            self.with_call(now, call, &mut out, |call, fx| match kind {
                TimerKind::RingTimeout => call.on_ring_timeout(fx),
                TimerKind::ReleaseTransferer => call.release_transferer(fx),
                TimerKind::Digits(party) => call.on_digits_timeout(party, fx),
                TimerKind::RecallDelay => call.on_recall_pause_over(fx),
                TimerKind::Strays => Flow::Continue,
            });
        }
        self.fence_refers(&mut out);
        out
    }

    /// Puts a session barrier ([`AriRequest::AwaitSession`], in the same call's order) before the first
    /// progress report on each new REFER. Asterisk 22 publishes a REFER's ChannelTransfer event before it
    /// has finished setting up the REFER's progress state, and a `transfer_progress` that reaches the
    /// channel in between makes it write through a NULL pointer (res_pjsip_refer's framehook): the
    /// barrier answers only once that setup is done. Every REFER on the channel since its last report is
    /// covered, a second one in the same dialog (B7) included.
    fn fence_refers(&mut self, out: &mut Vec<Output>) {
        if self.unfenced.is_empty() {
            return;
        }
        let mut i = 0;
        while i < out.len() {
            if let Output::Ari {
                node,
                call,
                request: AriRequest::TransferProgress { channel, .. },
            } = &out[i]
            {
                if self.unfenced.remove(&(node.clone(), channel.clone())) {
                    let barrier = Output::Ari {
                        node: node.clone(),
                        call: *call,
                        request: AriRequest::AwaitSession {
                            channel: channel.clone(),
                        },
                    };
                    out.insert(i, barrier);
                    i += 1;
                }
            }
            i += 1;
        }
    }

    fn on_event(&mut self, now: Millis, node: NodeName, event: Event, out: &mut Vec<Output>) {
        if let Event::ChannelTransfer(transfer) = &event {
            if transfer.state.is_none() && self.config.refer_barrier {
                let source = &transfer.referred_by.source_channel.id;
                self.unfenced.insert((node.clone(), source.clone()));
            }
            return self.on_channel_transfer(now, &node, transfer, out);
        }
        let Some(channel) = event.channel() else {
            return;
        };
        if matches!(event, Event::StasisEnd(_) | Event::ChannelDestroyed(_))
            && !self.unfenced.is_empty()
        {
            self.unfenced.remove(&(node.clone(), channel.id.clone()));
        }
        let known = self.index.call_of(&node, &channel.id);
        match (known, &event) {
            (Some(key), _) => {
                self.note_call_id(&node, channel);
                let Some(leg) = self.calls.get(&key).and_then(|c| c.leg_of(&channel.id)) else {
                    return;
                };
                self.with_call(now, key, out, |call, fx| call.on_event(leg, &event, fx));
            }
            (None, Event::StasisStart(start)) => self.on_new_channel(now, node, start, out),
            (None, _) => tracing::trace!(channel = %channel.id, "event for a channel of no call"),
        }
    }

    /// A channel entered the app that no call knows: a new inbound call, or a leftover of an earlier run.
    fn on_new_channel(
        &mut self,
        now: Millis,
        node: NodeName,
        start: &crate::ari::models::StasisStart,
        out: &mut Vec<Output>,
    ) {
        let channel = &start.channel;
        if let Some(token) = channel
            .dialed_exten()
            .filter(|exten| exten.starts_with(&self.link_prefix))
        {
            let mut joined = false;
            if let Some(consult) = self.links.remove(&(node.clone(), token.to_owned())) {
                self.with_call(now, consult, out, |call, fx| {
                    joined = call.on_link_arrived(&channel.id, fx);
                    Flow::Continue
                });
            }
            if !joined {
                tracing::info!(channel = %channel.id, "a link leg arrived for a transfer that is over; hanging it up");
                let hangup = AriRequest::Hangup {
                    channel: channel.id.clone(),
                    cause: HangupCause::NORMAL_CLEARING,
                };
                self.one_off(node, hangup, out);
            }
            return;
        }
        if start.args.first().map(String::as_str) == Some(DIALED_LEG_ARG) {
            tracing::warn!(channel = %channel.id, "a leg dialed by an earlier run entered the app; hanging it up");
            let hangup = AriRequest::Hangup {
                channel: channel.id.clone(),
                cause: HangupCause::NORMAL_CLEARING,
            };
            return self.one_off(node, hangup, out);
        }
        let exten = start
            .args
            .first()
            .map(String::as_str)
            .filter(|a| !a.is_empty())
            .or(channel.dialed_exten())
            .unwrap_or_default();
        let Some(dial) = self.route(exten) else {
            tracing::info!(channel = %channel.id, exten, "no route for the extension");
            let hangup = AriRequest::Hangup {
                channel: channel.id.clone(),
                cause: HangupCause::UNALLOCATED,
            };
            return self.one_off(node, hangup, out);
        };
        let key = self.new_key();
        let base = format!("{}-{}", self.config.instance, key.0);
        let account = self.config.accounts.of_call(channel, &dial);
        let metaflows = self
            .config
            .metaflows
            .for_caller(channel, account.as_deref());
        let mut call = Call::new(key, node.clone(), channel, base, metaflows);
        call.account = account;
        call.exten = exten.to_owned();
        call.created = now;
        tracing::info!(call = %key, caller = %channel.id, exten, %dial, "routing call");
        for leg in call.channels() {
            self.index.insert(&node, &leg, key);
        }
        self.calls.insert(key, call);
        self.with_call(now, key, out, |call, fx| {
            fx.note(call.key, api::Note::CallCreated);
            call.start(&dial, fx);
            Flow::Continue
        });
        self.note_call_id(&node, channel);
    }

    /// Indexes a known channel's SIP Call-ID, unless it is a trunk leg: the two legs of a call between
    /// nodes share one Call-ID, and neither is a phone's dialog that a REFER could replace.
    fn note_call_id(&mut self, node: &NodeName, channel: &Channel) {
        let Some(call_id) = channel.call_id() else {
            return;
        };
        if !self.index.has_call_id(node, &channel.id) && !self.is_trunk_leg(node, channel) {
            self.index
                .note_call_id(node, &channel.id, call_id, channel.endpoint());
        }
    }

    /// A REFER, on channel S. Follow-up events (with a `state`) and the echo Asterisk sends after a
    /// transferer hung up (S is in no call any more) start nothing, and neither does a second REFER on an S
    /// whose first is still pending (B7). Otherwise S's phone hears NOTIFY 100 at once, and the transfer
    /// starts if S's call is connected and has no transfer pending (else 603).
    fn on_channel_transfer(
        &mut self,
        now: Millis,
        node: &NodeName,
        transfer: &ChannelTransfer,
        out: &mut Vec<Output>,
    ) {
        let source = transfer.referred_by.source_channel.id.clone();
        let Some(key) = self.index.call_of(node, &source) else {
            // A REFER on a channel an earlier run left (about to be hung up) is declined at once; the
            // echo after a transferer hung up, on a channel gone, starts nothing.
            if transfer.state.is_none() && self.is_stray(node, &source) {
                tracing::info!(channel = %source, "a REFER on a channel an earlier run left: 503");
                let report = AriRequest::TransferProgress {
                    channel: source,
                    state: TransferProgress::Unavailable,
                };
                self.one_off(node.clone(), report, out);
            }
            return;
        };
        if let Some(state) = &transfer.state {
            // Asterisk reporting on a REFER it has sent a final NOTIFY for: it is done with its dialogs.
            if state != TransferProgress::Progress.as_str() {
                self.with_call(now, key, out, |call, fx| {
                    call.on_refer_reported(&source, fx)
                });
            }
            return;
        }
        if self
            .calls
            .get(&key)
            .is_some_and(|c| c.has_pending_refer_on(&source))
        {
            // Asterisk 22 applies every transfer_progress post to all REFERs pending on the channel: a
            // 603 for this one would end the first one at the phone, too. Left alone, it shares the
            // first one's NOTIFYs, final one included.
            tracing::info!(call = %key, channel = %source, "a second REFER while the first is pending: it shares the first one's outcome");
            return;
        }
        let report = |state| Output::Ari {
            node: node.clone(),
            call: key,
            request: AriRequest::TransferProgress {
                channel: source.clone(),
                state,
            },
        };
        out.push(report(TransferProgress::Progress));
        let party = match self
            .calls
            .get(&key)
            .map(|c| (c.leg_of(&source), c.is_idle_connected()))
        {
            Some((Some(Leg::Party(party)), true)) => party,
            _ => {
                tracing::info!(call = %key, channel = %source, "REFER declined: the call is not connected, or already transferring");
                out.push(report(TransferProgress::Declined));
                let told = [TransferProgress::Progress, TransferProgress::Declined];
                return self.told(now, key, &source, &told, false, out);
            }
        };
        let destination = &transfer.refer_to.requested_destination;
        let started = match destination.protocol_id {
            Some(_) => self.start_attended(now, node, key, party, transfer, out),
            None => self.start_blind(now, key, party, transfer, out),
        };
        if started {
            self.told(now, key, &source, &[TransferProgress::Progress], true, out);
        } else {
            out.push(report(TransferProgress::Unavailable));
            let told = [TransferProgress::Progress, TransferProgress::Unavailable];
            self.told(now, key, &source, &told, false, out);
        }
    }

    /// The events of NOTIFYs sent to `channel` of call `key` outside of the call's own steps (a REFER's
    /// first 100, or its refusal); `started`: they are about the transfer the REFER just started.
    fn told(
        &mut self,
        now: Millis,
        key: CallKey,
        channel: &str,
        states: &[TransferProgress],
        started: bool,
        out: &mut Vec<Output>,
    ) {
        let transfer = started
            .then(|| self.transfers.latest(key).map(str::to_owned))
            .flatten();
        let happened = states
            .iter()
            .map(|state| events::Happened::Notify {
                channel: channel.to_owned(),
                state: *state,
                transfer: transfer.clone(),
            })
            .collect();
        self.publish(now, key, happened, out);
    }

    /// Starts a blind transfer to the REFER's destination, if a route leads there.
    fn start_blind(
        &mut self,
        now: Millis,
        key: CallKey,
        party: usize,
        transfer: &ChannelTransfer,
        out: &mut Vec<Output>,
    ) -> bool {
        let destination = &transfer.refer_to.requested_destination.destination;
        let Some(dial) = self.route(destination) else {
            tracing::info!(call = %key, destination, "blind transfer: no route for the destination");
            return false;
        };
        let n = self.new_key().0;
        let base = format!("{}-{n}", self.config.instance);
        let recall = self
            .config
            .recall_transferer
            .then(|| transfer.referred_by.source_channel.endpoint())
            .flatten();
        let plan = BlindPlan {
            source: party,
            exten: destination.clone(),
            dial,
            target: format!("{base}-t"),
            ringback: format!("{base}-ring"),
            recall,
            origin: api::Source::Refer,
            timeout: None,
            variables: Vec::new(),
        };
        self.with_call(now, key, out, |call, fx| {
            call.start_blind(plan, fx);
            Flow::Continue
        });
        true
    }

    /// Whether a channel on `node` belongs to one of its trunk endpoints.
    fn is_trunk_leg(&self, node: &NodeName, channel: &Channel) -> bool {
        if self.config.trunks.is_empty() {
            return false;
        }
        channel.endpoint().is_some_and(|endpoint| {
            self.config
                .trunks
                .iter()
                .any(|t| t.node == *node && endpoint == format!("PJSIP/{}", t.endpoint))
        })
    }

    fn route(&self, exten: &str) -> Option<String> {
        route(&self.config, exten)
    }

    /// After a (re)connect: a call whose channels vanished while the websocket was down is ended as if
    /// their hangup had been seen, and a bridge this instance created that no call owns any more (its
    /// removal failed, or its call ended unseen) is destroyed.
    fn on_synced(
        &mut self,
        now: Millis,
        node: NodeName,
        channels: Vec<Channel>,
        bridges: Vec<Bridge>,
        out: &mut Vec<Output>,
    ) {
        self.adopt_leftovers(now, &node, &channels, &bridges, out);
        self.unfenced
            .retain(|(at, id)| *at != node || channels.iter().any(|c| c.id == *id));
        // Bridges are judged before any call ends here: an ending call destroys its own.
        let ours = format!("{}-", self.config.instance);
        let orphans: Vec<String> = bridges
            .iter()
            .filter(|b| b.id.starts_with(&ours))
            .filter(|b| !self.calls.values().any(|call| call.owns_bridge(&b.id)))
            .map(|b| b.id.clone())
            .collect();
        let present: HashSet<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        let mut vanished: Vec<(CallKey, String)> = self
            .calls
            .values()
            .filter(|call| call.node == node)
            .flat_map(|call| {
                call.channels_to_check_after_sync()
                    .into_iter()
                    .filter(|id| !present.contains(id.as_str()))
                    .map(|id| (call.key, id))
            })
            .collect();
        // Calls in key order, each call's channels parties first. Every vanished channel is reported, each
        // as what it is by then (an earlier one may have changed the call's phase, or ended it).
        vanished.sort_by_key(|(key, _)| *key);
        for (key, channel) in vanished {
            self.with_call(now, key, out, |call, fx| match call.leg_of(&channel) {
                Some(Leg::Departing) => call.on_departed(&channel, fx),
                Some(leg) => {
                    tracing::info!(call = %key, ?leg, %channel, "leg vanished while the websocket was down");
                    call.on_leg_gone(leg, 0, fx)
                }
                None => Flow::Continue,
            });
        }
        self.replay_missed(now, &node, &channels, &bridges, out);
        for bridge in orphans {
            tracing::info!(%bridge, "destroying a bridge no call owns");
            self.one_off(node.clone(), AriRequest::DestroyBridge { bridge }, out);
        }
    }

    /// What happened unseen while the websocket was down, read from what the re-sync shows: a call's
    /// channel found Up has answered (a target that answered in the gap joins its call), and a call's target
    /// found in the call's bridge has joined it (an attended move or a link confirmed in the gap). Each is a
    /// no-op for what the call already knew; calls in key order, as for the vanished channels.
    fn replay_missed(
        &mut self,
        now: Millis,
        node: &NodeName,
        channels: &[Channel],
        bridges: &[Bridge],
        out: &mut Vec<Output>,
    ) {
        let mut answered: Vec<(CallKey, &str)> = channels
            .iter()
            .filter(|c| c.state == "Up")
            .filter_map(|c| Some((self.index.call_of(node, &c.id)?, c.id.as_str())))
            .collect();
        answered.sort_by_key(|(key, _)| *key);
        for (key, channel) in answered {
            self.with_call(now, key, out, |call, fx| match call.leg_of(channel) {
                Some(leg) => call.on_answered(leg, fx),
                None => Flow::Continue,
            });
        }
        let mut joined: Vec<(CallKey, &str, &str)> = bridges
            .iter()
            .flat_map(|b| b.channels.iter().map(move |m| (b.id.as_str(), m)))
            .filter_map(|(bridge, m)| Some((self.index.call_of(node, m)?, bridge, m.as_str())))
            .collect();
        joined.sort_by_key(|(key, ..)| *key);
        for (key, bridge, channel) in joined {
            self.with_call(now, key, out, |call, fx| {
                if call.bridge == bridge && call.leg_of(channel) == Some(Leg::Target) {
                    call.on_target_joined(fx)
                } else {
                    Flow::Continue
                }
            });
        }
    }

    /// Whether a failed request should be made again: once, if its failure would leave something behind
    /// (a channel, a bridge, a phone waiting 600 s for its transfer's outcome, a party out of the bridge
    /// its call still wants it in) and the failure is not a 404 (already gone; for a transferer, Asterisk
    /// has then told the phone 503 itself). A move is made again only if the call that asked for it still
    /// wants it (and a bridge is created again only for a call that still wants it): by then a transfer
    /// may have sent the channel elsewhere, or the call may have ended, and the retry would undo that.
    fn retry_once(
        &mut self,
        node: &NodeName,
        call: CallKey,
        request: &AriRequest,
        status: Option<u16>,
    ) -> bool {
        let wanted = request.worth_a_retry()
            || self
                .calls
                .get(&call)
                .is_some_and(|c| c.still_wants(request));
        if !wanted || status == Some(404) {
            return false;
        }
        let key = (node.clone(), request.clone());
        if self.retried.remove(&key) {
            return false;
        }
        // Successful retries are never reported back; the set is only a guard, so it is kept small.
        if self.retried.len() >= 10_000 {
            self.retried.clear();
        }
        self.retried.insert(key)
    }

    fn new_key(&mut self) -> CallKey {
        let key = CallKey(self.next_key);
        self.next_key += 1;
        key
    }

    /// A request that belongs to no call (cleaning up what no call owns), in a lane of its own.
    fn one_off(&mut self, node: NodeName, request: AriRequest, out: &mut Vec<Output>) {
        let call = self.new_key();
        out.push(Output::Ari {
            node,
            call,
            request,
        });
        out.push(Output::CallEnded { call });
    }

    /// Runs `f` on a call with the effects context, keeps the channel index in step with the call's
    /// channels, and forgets the call when it ends.
    fn with_call(
        &mut self,
        now: Millis,
        key: CallKey,
        out: &mut Vec<Output>,
        f: impl FnOnce(&mut Call, &mut Effects) -> Flow,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // Every line logged about the call carries its node, whatever the input (a timer, an API command).
        let _node = tracing::info_span!("call", node = %call.node).entered();
        let before = call.channels();
        let first_output = out.len();
        let mut fx = Effects {
            now,
            config: &self.config,
            timers: &mut self.timers,
            out,
            signals: Vec::new(),
            notes: Vec::new(),
        };
        let flow = f(call, &mut fx);
        let signals = std::mem::take(&mut fx.signals);
        let mut happened = Vec::new();
        for (key, note) in std::mem::take(&mut fx.notes) {
            self.transfers
                .apply(&self.config.instance, call, note, &mut happened);
            debug_assert_eq!(key, call.key);
        }
        let transferring = flow == Flow::Continue && call.is_transferring();
        self.transfers.settle(key, transferring, &mut happened);
        happened.extend(self.notifies(key, &out[first_output..]));
        if flow == Flow::Ended {
            happened.push(events::Happened::Call(events::EventKind::CallEnded));
        }
        self.publish(now, key, happened, out);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let after = match flow {
            Flow::Continue => call.channels(),
            Flow::Ended => Vec::new(),
        };
        let node = call.node.clone();
        for channel in before.iter().filter(|c| !after.contains(c)) {
            self.index.remove(&node, channel, key);
        }
        for channel in after.iter().filter(|c| !before.contains(c)) {
            self.index.insert(&node, channel, key);
        }
        if flow == Flow::Ended {
            if let Some(call) = self.calls.remove(&key) {
                call.cancel_timers(&mut self.timers);
            }
            self.links.retain(|_, consult| *consult != key);
            self.transfers.forget(key);
            out.push(Output::CallEnded { call: key });
        }
        self.deliver_signals(now, signals, out);
    }

    /// The NOTIFYs a step of call `key` sends to REFERing phones, among its `outputs`.
    fn notifies(&self, key: CallKey, outputs: &[Output]) -> Vec<events::Happened> {
        let transfer = self.transfers.latest(key);
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Ari {
                    call,
                    request: AriRequest::TransferProgress { channel, state },
                    ..
                } if *call == key => Some(events::Happened::Notify {
                    channel: channel.clone(),
                    state: *state,
                    transfer: transfer.map(str::to_owned),
                }),
                _ => None,
            })
            .collect()
    }

    /// Numbers what happened to call `key` in this step and hands it out as events.
    fn publish(
        &mut self,
        now: Millis,
        key: CallKey,
        happened: Vec<events::Happened>,
        out: &mut Vec<Output>,
    ) {
        for what in happened {
            let (kind, rest) = what.describe(|| self.call_view(now, key));
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            call.event_seq += 1;
            out.push(Output::Event(events::Event {
                kind,
                account: call.account.as_deref().map(str::to_owned),
                data: events::numbered(call.id(), call.event_seq, rest),
            }));
        }
    }

    /// Hands each half of a cross-node transfer what the other half said.
    fn deliver_signals(
        &mut self,
        now: Millis,
        signals: Vec<(CallKey, LinkSignal)>,
        out: &mut Vec<Output>,
    ) {
        for (call, signal) in signals {
            self.with_call(now, call, out, |call, fx| call.on_link_signal(signal, fx));
        }
    }
}

#[cfg(test)]
mod tests;
