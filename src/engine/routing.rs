//! A call: two parties in one bridge, and how it gets there (R1–R3).
//!
//! ```text
//!   caller --(StasisStart)--> Dialing --(callee answers)--> Connected --(either hangs up)--> ended
//!                                |                          |     ^
//!                                |                  (REFER) v     | (transfer ends)
//!                                |                        Transferring (see transfer.rs)
//!                                +--(busy, rejected, unreachable, no answer, caller cancels)--> ended
//! ```
//!
//! Every input in every phase of routing has one outcome:
//!
//! | phase     | input                                  | outcome                                                     |
//! |-----------|----------------------------------------|-------------------------------------------------------------|
//! | Dialing   | callee rings (Dial RINGING, PROGRESS)  | nothing: the caller already hears ringing                   |
//! | Dialing   | callee answers (state Up, Dial ANSWER) | answer the caller, create the bridge, add both → Connected  |
//! | Dialing   | Dial failure status (BUSY, ...)        | remember it as the cause, if the callee's hangup has none   |
//! | Dialing   | callee hangs up / is destroyed         | hang up the caller with the callee's cause → ended          |
//! | Dialing   | caller hangs up                        | hang up the callee (SIP CANCEL) → ended                     |
//! | Dialing   | ring timeout                           | hang up the callee, the caller with "no answer" → ended     |
//! | Dialing   | a request of the call failed           | hang up both, the caller with a cause that fits → ended     |
//! | Connected | either party hangs up                  | hang up the other, destroy the bridge → ended               |
//! | Connected | a request of the call failed           | hang up both, destroy the bridge → ended                    |
//! | any       | a best-effort request failed           | nothing (transfer mode, progress reports, ring tone, moves) |
//! | any       | a hangup or bridge removal failed 404  | nothing: it is already gone                                 |

use std::sync::Arc;

use crate::ari::models::{Channel, Event};
use crate::ari::request::{AriRequest, HangupCause};

use super::api;
use super::events::{HoldBy, HoldStep};
use super::konami::{Konami, KonamiPlan};
use super::metaflow::{Collector, Metaflows, Module, Press};
use super::timers::{TimerKind, Timers};
use super::transfer::Transfer;
use super::{CallKey, Effects, Millis, NodeName, DIALED_LEG_ARG, TRANSFER_HANDLING_VAR};

/// Where a call stands, for status reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    Dialing,
    Connected,
    Transferring,
    /// Three parties in one bridge, after a feature-code three-way.
    Threeway,
}

/// What a channel is to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leg {
    /// One of the two parties: 0 entered the app (the caller), 1 was dialed (the callee). A transfer puts
    /// its target in the transferer's place.
    Party(usize),
    /// A channel joining the call through a transfer: the dialed target of a blind transfer, or the party
    /// an attended transfer moves in.
    Target,
    /// The transferer's consult leg that an attended transfer replaces.
    Replaced,
    /// The transferer's leg after its transfer succeeded, given a moment to hang up by itself.
    Departing,
}

/// The transferer's legs after a transfer told 200: S, whose phone usually hangs up by itself, is hung up
/// at `at` if it has not; R (an attended transfer's consult leg) as soon as Asterisk has reported S's REFER
/// ended (the ChannelTransfer event with a terminal state, published after Asterisk's last use of R's
/// channel: hanging R up while Asterisk still reports on it reads a freed channel), or at `at`.
#[derive(Debug)]
pub(super) struct Departing {
    pub transferer: Option<String>,
    pub replaced: Option<String>,
    pub at: Millis,
}

impl Departing {
    pub fn channels(&self) -> impl Iterator<Item = &String> {
        self.transferer.iter().chain(self.replaced.iter())
    }
}

/// Whether a call goes on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Ended,
}

#[derive(Debug)]
pub(super) enum Phase {
    Dialing {
        ring_deadline: Millis,
        /// The cause a Dial failure status implies, used if the callee's own hangup carries none.
        failure: Option<HangupCause>,
        /// Whether the callee was dialed (once it entered the app).
        dialed: bool,
    },
    Connected,
    Transferring(Transfer),
    /// A feature-code transfer (see konami.rs).
    Konami(Box<Konami>),
    /// A third party joined the call's bridge (a feature-code three-way).
    Threeway {
        third: String,
    },
}

/// The name of a bridge of call `key` (`ari-transfer/call-1`, `ari-transfer/call-1-consult`): it begins
/// with the application's name, so that a later run knows the bridges an earlier one left behind.
pub(super) fn bridge_name(fx: &Effects, key: CallKey, suffix: &str) -> String {
    format!("{}/{key}{suffix}", fx.config.app)
}

/// A two-party call.
#[derive(Debug)]
pub struct Call {
    pub key: CallKey,
    pub node: NodeName,
    pub(super) parties: [String; 2],
    pub(super) bridge: String,
    caller_is_pjsip: bool,
    pub(super) phase: Phase,
    /// The transferer's legs after its transfer succeeded, until they are hung up.
    pub(super) departing: Option<Departing>,
    /// The ids of channels and bridges the call creates begin with this.
    base: String,
    serial: u32,
    /// The call's feature codes, if it has any.
    pub(super) metaflows: Option<Arc<Metaflows>>,
    /// The feature-code digits each party is pressing, and its endpoint (to call it back).
    collectors: [Collector; 2],
    endpoints: [Option<String>; 2],
    /// The call's id for the API: its first leg's channel id.
    id: String,
    /// The account the call belongs to, if any.
    pub account: Option<Arc<str>>,
    /// The extension the caller dialed.
    pub exten: String,
    /// When the call entered the app.
    pub created: Millis,
    /// Which parties the API holds (out of the bridge, hearing music).
    pub(super) held: [bool; 2],
    /// Which parties' phones hold the call themselves (ChannelHold, ChannelUnhold).
    pub(super) phone_hold: [bool; 2],
    /// The transfer in progress reports to no phone: the API joined two calls, no REFER awaits NOTIFYs.
    pub(super) quiet: bool,
    /// Who the channels this call dialed are, as another phone should be shown them: the user part of
    /// their dial string (`bob` for `PJSIP/bob`). Asterisk gives a dialed channel no caller id of its own
    /// (its caller field is the caller's), so a target dialed on behalf of one is shown this instead.
    dialed_identity: std::collections::HashMap<String, String>,
    /// The caller id the first caller came with.
    caller_id: crate::ari::models::CallerId,
    /// How many events the call has had ([`super::events`]): the last one's `seq`.
    pub(super) event_seq: u64,
    /// An API hold (`true`) or unhold of a party asked and not yet seen done (the leg leaving, or
    /// entering, the call's bridge).
    pub(super) hold_pending: [Option<bool>; 2],
}

impl Call {
    /// A call from `caller`; `base` begins the ids of what the call creates (its callee's channel, its
    /// bridge, ...).
    pub fn new(
        key: CallKey,
        node: NodeName,
        caller: &Channel,
        base: String,
        metaflows: Option<Arc<Metaflows>>,
    ) -> Call {
        Call {
            key,
            node,
            parties: [caller.id.clone(), format!("{base}-b")],
            bridge: format!("{base}-bridge"),
            caller_is_pjsip: caller.technology() == "PJSIP",
            phase: Phase::Dialing {
                ring_deadline: 0,
                failure: None,
                dialed: false,
            },
            departing: None,
            base,
            serial: 0,
            metaflows,
            collectors: Default::default(),
            endpoints: [None, None],
            id: caller.id.clone(),
            account: None,
            exten: String::new(),
            created: 0,
            held: [false; 2],
            phone_hold: [false; 2],
            quiet: false,
            dialed_identity: Default::default(),
            caller_id: caller.caller.clone(),
            event_seq: 0,
            hold_pending: [None; 2],
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a transfer (of any kind) is in progress.
    pub fn is_transferring(&self) -> bool {
        matches!(self.phase, Phase::Transferring(_) | Phase::Konami(_))
    }

    /// A party the API holds, if any.
    pub fn held_party(&self) -> Option<usize> {
        self.held.iter().position(|h| *h)
    }

    pub fn is_held_by_api(&self, channel: &str) -> bool {
        matches!(self.leg_of(channel), Some(Leg::Party(p)) if self.held[p])
    }

    pub fn is_held_by_phone(&self, channel: &str) -> bool {
        matches!(self.leg_of(channel), Some(Leg::Party(p)) if self.phone_hold[p])
    }

    /// A call an earlier run left behind (S3): `caller`, `callee` (and a third party, for a three-way)
    /// talking in `bridge`.
    pub fn adopted(
        key: CallKey,
        node: NodeName,
        [caller, callee]: [&Channel; 2],
        third: Option<&Channel>,
        (bridge, base): (&str, String),
        metaflows: Option<Arc<Metaflows>>,
    ) -> Call {
        let mut call = Call::new(key, node, caller, base, metaflows);
        call.parties[1] = callee.id.clone();
        // An earlier run dialed the callee: it is shown by its endpoint, as the run did.
        if let Some(endpoint) = callee.endpoint() {
            call.remember_identity(&callee.id, identity_of_dial(&endpoint));
        }
        call.bridge = bridge.to_owned();
        call.phase = match third {
            Some(third) => Phase::Threeway {
                third: third.id.clone(),
            },
            None => Phase::Connected,
        };
        call
    }

    /// Who a leg is, as its caller id shows it: (name, number). The first caller by the caller id it
    /// came with, a channel the app dialed by its dial string's user; others are unknown.
    pub fn shown(&self, channel: &str) -> (Option<String>, Option<String>) {
        let known = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if channel == self.id {
            return (known(&self.caller_id.name), known(&self.caller_id.number));
        }
        (None, self.dialed_identity.get(channel).cloned())
    }

    /// What a leg is shown as, if the call knows (it came from another call).
    pub(super) fn identity_of(&self, channel: &str) -> Option<String> {
        match self.shown(channel) {
            (_, Some(number)) => Some(number),
            (name, None) => name,
        }
    }

    pub(super) fn remember_identity(&mut self, channel: &str, identity: Option<String>) {
        if let Some(identity) = identity {
            self.dialed_identity.insert(channel.to_owned(), identity);
        }
    }

    /// A fresh prefix for the ids of a transfer's channels and bridges.
    pub(super) fn new_ids(&mut self) -> String {
        self.serial += 1;
        format!("{}-f{}", self.base, self.serial)
    }

    pub fn phase(&self) -> CallPhase {
        match self.phase {
            Phase::Dialing { .. } => CallPhase::Dialing,
            Phase::Connected => CallPhase::Connected,
            Phase::Transferring(_) | Phase::Konami(_) => CallPhase::Transferring,
            Phase::Threeway { .. } => CallPhase::Threeway,
        }
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Whether `bridge` is one of this call's: its own, a feature-code consultation's, or the consult call's
    /// bridge an attended transfer is emptying.
    pub fn owns_bridge(&self, bridge: &str) -> bool {
        self.bridge == bridge
            || match &self.phase {
                Phase::Konami(konami) => konami.owns_bridge(bridge),
                Phase::Transferring(Transfer::Attended { old_bridge, .. }) => old_bridge == bridge,
                _ => false,
            }
    }

    /// The party at `index`, and the other one.
    pub(super) fn party(&self, index: usize) -> &str {
        &self.parties[index]
    }

    pub(super) fn other_party(&self, index: usize) -> &str {
        &self.parties[1 - index]
    }

    /// Every channel of this call, to index them.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = self.parties.to_vec();
        match &self.phase {
            Phase::Transferring(transfer) => channels.extend(transfer.channels()),
            Phase::Konami(konami) => channels.extend(konami.channels()),
            Phase::Threeway { third } => channels.push(third.clone()),
            Phase::Dialing { .. } | Phase::Connected => {}
        }
        channels.extend(self.departing.iter().flat_map(Departing::channels).cloned());
        channels
    }

    pub fn leg_of(&self, channel: &str) -> Option<Leg> {
        if let Some(index) = self.parties.iter().position(|p| p == channel) {
            return Some(Leg::Party(index));
        }
        if self
            .departing
            .as_ref()
            .is_some_and(|d| d.channels().any(|c| c == channel))
        {
            return Some(Leg::Departing);
        }
        match &self.phase {
            Phase::Transferring(transfer) => transfer.leg_of(channel),
            Phase::Konami(konami) => konami.leg_of(channel),
            Phase::Threeway { third } => (third == channel).then_some(Leg::Target),
            Phase::Dialing { .. } | Phase::Connected => None,
        }
    }

    /// The bridge a channel of this call is meant to be in now, if any.
    pub fn belongs_in(&self, channel: &str) -> Option<&str> {
        let leg = self.leg_of(channel)?;
        match (&self.phase, leg) {
            (_, Leg::Departing | Leg::Replaced) | (Phase::Dialing { .. }, _) => None,
            (Phase::Connected, Leg::Party(p)) if self.held[p] => None,
            (Phase::Connected | Phase::Threeway { .. }, _) => Some(&self.bridge),
            (Phase::Transferring(transfer), leg) => transfer.belongs_in(leg, &self.bridge),
            (Phase::Konami(konami), leg) => konami.belongs_in(leg, &self.bridge),
        }
    }

    /// Whether a bridge creation or a move into a bridge that failed is still what this call wants.
    pub fn still_wants(&self, request: &AriRequest) -> bool {
        match request {
            AriRequest::AddToBridge {
                bridge, channels, ..
            } => channels
                .iter()
                .all(|channel| self.belongs_in(channel) == Some(bridge.as_str())),
            AriRequest::CreateBridge { bridge, .. } => match &self.phase {
                Phase::Dialing { .. } => false,
                Phase::Konami(_) => self.owns_bridge(bridge),
                _ => *bridge == self.bridge,
            },
            AriRequest::StartMoh { channel, .. } => self.is_held(channel),
            AriRequest::StopMoh { channel } => {
                self.leg_of(channel).is_some() && !self.is_held(channel)
            }
            _ => false,
        }
    }

    /// Whether a channel of this call is meant to hear music on hold now.
    fn is_held(&self, channel: &str) -> bool {
        match (&self.phase, self.leg_of(channel)) {
            (Phase::Konami(konami), Some(leg)) => konami.holds(leg),
            (Phase::Connected, Some(Leg::Party(p))) => self.held[p],
            _ => false,
        }
    }

    /// Whether a transfer can start now: connected, and nobody on hold.
    pub fn is_idle_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected) && self.held_party().is_none()
    }

    /// The channels whose absence after a re-sync means they hung up unseen: every channel of the call,
    /// parties first, but one the call created that has not entered the app yet (a callee, a transfer's
    /// target or link leg, a recall: its create request can still be queued).
    pub fn channels_to_check_after_sync(&self) -> Vec<String> {
        let unborn = match &self.phase {
            Phase::Dialing { dialed: false, .. } => Some(self.parties[1].as_str()),
            Phase::Transferring(transfer) => transfer.not_in_the_app_yet(),
            Phase::Konami(konami) => konami.not_in_the_app_yet(),
            _ => None,
        };
        let mut channels = self.channels();
        channels.retain(|c| Some(c.as_str()) != unborn);
        channels
    }

    /// Puts the caller in ari-only transfer mode, rings it, and dials `dial`.
    pub fn start(&mut self, dial: &str, fx: &mut Effects) {
        let ring_deadline = fx.now + fx.config.ring_timeout;
        self.phase = Phase::Dialing {
            ring_deadline,
            failure: None,
            dialed: false,
        };
        fx.timers
            .arm(ring_deadline, self.key, TimerKind::RingTimeout);
        let caller = self.parties[0].clone();
        if self.caller_is_pjsip {
            fx.request(
                self,
                AriRequest::SetVariable {
                    channel: caller.clone(),
                    name: TRANSFER_HANDLING_VAR.to_owned(),
                    value: "ari-only".to_owned(),
                },
            );
        }
        fx.request(self, AriRequest::Ring { channel: caller });
        self.create(self.parties[1].clone(), (dial, &[]), 0, fx);
    }

    /// Creates `channel` towards `dial` (with the channel variables `extra`, an API transfer's), on behalf
    /// of party `on_behalf_of`. It is dialed once it is in the app (its StasisStart): `channels/create`
    /// answers before that, and a dial that comes first fails with 409 "Channel not in Stasis application".
    pub(super) fn create(
        &mut self,
        channel: String,
        (dial, extra): (&str, &[(String, String)]),
        on_behalf_of: usize,
        fx: &mut Effects,
    ) {
        let mut variables = if dial.starts_with("PJSIP/") {
            vec![(TRANSFER_HANDLING_VAR.to_owned(), "ari-only".to_owned())]
        } else {
            vec![]
        };
        // Shown to the new channel's phone: the party it is dialed for. A party the app dialed itself is
        // shown by its identity (the dial that follows passes no caller, which would overwrite it).
        if let Some(identity) = self.dialed_identity.get(&self.parties[on_behalf_of]) {
            variables.push(("CONNECTEDLINE(num)".to_owned(), identity.clone()));
            variables.push(("CONNECTEDLINE(name)".to_owned(), identity.clone()));
        }
        variables.extend(extra.iter().cloned());
        // A link leg's dial names a token, not a party: whoever answers it is shown by Asterisk.
        let link = super::link_prefix(&fx.config.instance);
        if let Some(identity) = identity_of_dial(dial).filter(|i| !i.starts_with(&link)) {
            self.dialed_identity.insert(channel.clone(), identity);
        }
        fx.request(
            self,
            AriRequest::CreateChannel {
                channel,
                endpoint: dial.to_owned(),
                app_args: DIALED_LEG_ARG.to_owned(),
                originator: Some(self.parties[on_behalf_of].clone()),
                variables,
            },
        );
    }

    /// Dials a created channel, now in the app, with party `on_behalf_of`'s caller id.
    fn dial(&self, channel: &str, on_behalf_of: usize, fx: &mut Effects) {
        // The engine's own deadline ends the ring; Asterisk's dial timeout is only a safety net in case this
        // service is gone by then.
        let safety_net = (fx.config.ring_timeout / 1000) as u32 + 5;
        fx.request(
            self,
            AriRequest::Dial {
                channel: channel.to_owned(),
                caller: Some(self.parties[on_behalf_of].clone())
                    .filter(|party| !self.dialed_identity.contains_key(party)),
                timeout_secs: safety_net,
            },
        );
    }

    /// A channel the call created entered the app: it can be dialed now (once).
    fn on_created(&mut self, leg: Leg, channel: &str, fx: &mut Effects) -> Flow {
        let on_behalf_of = match (&mut self.phase, leg) {
            (Phase::Dialing { dialed, .. }, Leg::Party(1)) if !*dialed => {
                *dialed = true;
                0
            }
            (Phase::Transferring(transfer), Leg::Target) => match transfer.dial_once() {
                Some(transferee) => transferee,
                None => return Flow::Continue,
            },
            (Phase::Konami(konami), Leg::Target) => match konami.dial_once() {
                Some(party) => party,
                None => return Flow::Continue,
            },
            _ => return Flow::Continue,
        };
        self.dial(channel, on_behalf_of, fx);
        Flow::Continue
    }

    pub fn on_event(&mut self, leg: Leg, event: &Event, fx: &mut Effects) -> Flow {
        match event {
            Event::StasisStart(e) => self.on_created(leg, &e.channel.id, fx),
            // A created channel is in the app (StasisStart) from the start; it answers when it goes Up.
            Event::ChannelStateChange(e) if e.channel.state == "Up" => self.on_answered(leg, fx),
            Event::Dial(dial) if dial.dialstatus == "ANSWER" => self.on_answered(leg, fx),
            Event::Dial(dial) => {
                if let Some(cause) = dial_failure_cause(&dial.dialstatus) {
                    self.note_dial_failure(leg, cause);
                }
                Flow::Continue
            }
            Event::ChannelEnteredBridge(e) if e.bridge.id == self.bridge && leg == Leg::Target => {
                self.on_target_joined(fx)
            }
            Event::ChannelHold(_) | Event::ChannelUnhold(_) => {
                let hold = matches!(event, Event::ChannelHold(_));
                if let Leg::Party(party) = leg {
                    if self.phone_hold[party] != hold {
                        self.phone_hold[party] = hold;
                        let channel = self.parties[party].clone();
                        for step in [HoldStep::Start, HoldStep::Ok] {
                            fx.note(
                                self.key,
                                api::hold_note(&channel, hold, step, HoldBy::Phone),
                            );
                        }
                    }
                }
                Flow::Continue
            }
            Event::ChannelLeftBridge(e) | Event::ChannelEnteredBridge(e)
                if e.bridge.id == self.bridge && matches!(leg, Leg::Party(_)) =>
            {
                if let Leg::Party(party) = leg {
                    let entered = matches!(event, Event::ChannelEnteredBridge(_));
                    self.on_hold_moved(party, entered, fx);
                }
                Flow::Continue
            }
            Event::ChannelDtmfReceived(e) => match (leg, e.digit.chars().next()) {
                (Leg::Party(party), Some(digit)) => {
                    self.endpoints[party] = e.channel.endpoint();
                    self.on_dtmf(party, digit, fx)
                }
                _ => Flow::Continue,
            },
            Event::ChannelHangupRequest(_) | Event::ChannelDestroyed(_) | Event::StasisEnd(_)
                if leg == Leg::Departing =>
            {
                event
                    .channel()
                    .map_or(Flow::Continue, |c| self.on_departed(&c.id, fx))
            }
            Event::ChannelHangupRequest(e) => self.on_leg_gone(leg, e.cause.unwrap_or(0), fx),
            Event::ChannelDestroyed(e) => self.on_leg_gone(leg, e.cause, fx),
            Event::StasisEnd(_) => self.on_leg_gone(leg, 0, fx),
            _ => Flow::Continue,
        }
    }

    pub(super) fn on_answered(&mut self, leg: Leg, fx: &mut Effects) -> Flow {
        match (&self.phase, leg) {
            (Phase::Dialing { .. }, Leg::Party(1)) => self.on_callee_answered(fx),
            (Phase::Transferring(_), Leg::Target) => self.on_target_answered(fx),
            (Phase::Konami(_), Leg::Target) => self.on_konami_answered(fx),
            _ => Flow::Continue,
        }
    }

    fn note_dial_failure(&mut self, leg: Leg, cause: HangupCause) {
        match (&mut self.phase, leg) {
            (Phase::Dialing { failure, .. }, Leg::Party(1)) => *failure = Some(cause),
            (Phase::Transferring(transfer), Leg::Target) => transfer.note_dial_failure(cause),
            _ => {}
        }
    }

    fn on_callee_answered(&mut self, fx: &mut Effects) -> Flow {
        let Phase::Dialing { ring_deadline, .. } = self.phase else {
            return Flow::Continue;
        };
        fx.timers
            .cancel(ring_deadline, self.key, TimerKind::RingTimeout);
        self.phase = Phase::Connected;
        fx.note(self.key, api::Note::CallAnswered);
        tracing::info!(call = %self.key, "callee answered; bridging");
        fx.request(
            self,
            AriRequest::Answer {
                channel: self.parties[0].clone(),
            },
        );
        fx.request(
            self,
            AriRequest::CreateBridge {
                bridge: self.bridge.clone(),
                name: bridge_name(fx, self.key, ""),
            },
        );
        // One request per party: Asterisk refuses a whole list when one of its channels is gone, and the
        // other party must not be kept out of the bridge by that.
        for party in self.parties.clone() {
            self.add_to_bridge(self.bridge.clone(), vec![party], fx);
        }
        Flow::Continue
    }

    /// A leg hung up (or vanished). `cause` is its Q.850 cause, 0 when unknown.
    pub fn on_leg_gone(&mut self, leg: Leg, cause: i32, fx: &mut Effects) -> Flow {
        tracing::info!(call = %self.key, ?leg, cause, "leg hung up");
        match (&self.phase, leg) {
            (Phase::Transferring(_), leg) => self.on_leg_gone_in_transfer(leg, cause, fx),
            (Phase::Konami(_), leg) => self.on_leg_gone_in_konami(leg, cause, fx),
            (Phase::Threeway { .. }, leg) => self.on_leg_gone_in_threeway(leg),
            (Phase::Dialing { failure, .. }, Leg::Party(1)) => {
                let cause = match cause {
                    0 | 16 => failure.unwrap_or(HangupCause::NORMAL_CLEARING),
                    cause => HangupCause(cause),
                };
                self.hang_up(0, cause, fx);
                self.end(fx)
            }
            (Phase::Dialing { .. }, Leg::Party(_)) => {
                self.hang_up(1, HangupCause::NORMAL_CLEARING, fx);
                self.end(fx)
            }
            (Phase::Connected, Leg::Party(gone)) => {
                self.hang_up(1 - gone, HangupCause::NORMAL_CLEARING, fx);
                self.end(fx)
            }
            (_, Leg::Target | Leg::Replaced | Leg::Departing) => Flow::Continue,
        }
    }

    pub fn on_ring_timeout(&mut self, fx: &mut Effects) -> Flow {
        match self.phase {
            Phase::Dialing { .. } => {
                tracing::info!(call = %self.key, "no answer before the ring timeout");
                self.hang_up(1, HangupCause::NO_ANSWER, fx);
                self.hang_up(0, HangupCause::NO_ANSWER, fx);
                self.end(fx)
            }
            Phase::Transferring(_) => self.on_target_ring_timeout(fx),
            Phase::Konami(_) => self.on_konami_ring_timeout(fx),
            Phase::Connected | Phase::Threeway { .. } => Flow::Continue,
        }
    }

    /// A digit from party `party`: a feature code's, passed on, or (during a feature-code transfer, from its
    /// transferor) a consultation code's.
    fn on_dtmf(&mut self, party: usize, digit: char, fx: &mut Effects) -> Flow {
        if matches!(self.phase, Phase::Konami(_)) {
            // Consultation codes work on every call: an API transfer's too.
            return self.on_konami_digit_from(party, digit, fx);
        }
        let Some(flows) = self.metaflows.clone() else {
            return Flow::Continue;
        };
        match &self.phase {
            Phase::Connected if flows.listen_on.listens(party) => {
                let before = self.collectors[party].deadline();
                match self.collectors[party].press(digit, fx.now, &flows) {
                    Press::PassOn => self.pass_on(party, digit, fx),
                    Press::Collecting { deadline } => {
                        if let Some(at) = before {
                            fx.timers.cancel(at, self.key, TimerKind::Digits(party));
                        }
                        fx.timers.arm(deadline, self.key, TimerKind::Digits(party));
                    }
                }
                Flow::Continue
            }
            Phase::Connected => {
                self.pass_on(party, digit, fx);
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    /// A digit the app absorbed that is no feature code goes on to the other party.
    fn pass_on(&self, party: usize, digit: char, fx: &mut Effects) {
        fx.request(
            self,
            AriRequest::SendDtmf {
                channel: self.other_party(party).to_owned(),
                dtmf: digit.to_string(),
            },
        );
    }

    /// Party `party` pressed no digit for the inter-digit timeout: its feature code is looked up and run.
    pub fn on_digits_timeout(&mut self, party: usize, fx: &mut Effects) -> Flow {
        let Some(digits) = self.collectors[party].expire() else {
            return Flow::Continue;
        };
        let Some(flows) = self.metaflows.clone() else {
            return Flow::Continue;
        };
        if !matches!(self.phase, Phase::Connected) {
            return Flow::Continue;
        }
        match flows.lookup(&digits) {
            Some(matched) => match matched.module {
                Module::Transfer(flow) => {
                    let plan = KonamiPlan {
                        transferor: party,
                        exten: matched.capture,
                        flow,
                        resume_dtmf: flows.resume_dtmf(),
                        recall: self.endpoints[party].clone(),
                        source: super::api::Source::Dtmf,
                        variables: Vec::new(),
                    };
                    self.start_konami(plan, fx)
                }
                Module::Resume => {
                    tracing::info!(call = %self.key, "resume: no transfer to resume");
                    Flow::Continue
                }
            },
            None => {
                tracing::info!(call = %self.key, %digits, "no feature code for these digits");
                Flow::Continue
            }
        }
    }

    /// A request failed. Best-effort requests change nothing; when an essential one fails, the call
    /// cannot go on as planned, and whoever would be left in silence is released with a fitting cause.
    pub fn on_request_failed(
        &mut self,
        request: &AriRequest,
        status: Option<u16>,
        fx: &mut Effects,
    ) -> Flow {
        if let Some(flow) = self.on_hold_request_failed(request, fx) {
            return flow;
        }
        let cause = match request {
            // A move or bridge the call no longer wants (a transfer has changed the plan since).
            AriRequest::AddToBridge { .. } | AriRequest::CreateBridge { .. }
                if !self.still_wants(request) =>
            {
                return Flow::Continue
            }
            AriRequest::SetVariable { .. }
            | AriRequest::TransferProgress { .. }
            | AriRequest::AwaitSession { .. }
            | AriRequest::RemoveFromBridge { .. }
            | AriRequest::PlayOnBridge { .. }
            | AriRequest::PlayOnChannel { .. }
            | AriRequest::StopPlayback { .. }
            | AriRequest::StartMoh { .. }
            | AriRequest::StopMoh { .. }
            | AriRequest::SendDtmf { .. } => return Flow::Continue,
            _ if matches!(self.phase, Phase::Transferring(_)) => {
                return self.on_request_failed_in_transfer(request, fx);
            }
            _ if matches!(self.phase, Phase::Konami(_)) => {
                return self.on_request_failed_in_konami(request, fx);
            }
            // Asterisk could not create a channel for the dial string: it names no endpoint, or one with
            // no contact (both answer 500 "Allocation failed"). The caller hears 404.
            AriRequest::CreateChannel { .. } if status.is_some() => HangupCause::UNALLOCATED,
            _ if matches!(self.phase, Phase::Dialing { .. }) => HangupCause::CONGESTION,
            _ => HangupCause::FAILURE,
        };
        self.hang_up(1, cause, fx);
        self.hang_up(0, cause, fx);
        self.end(fx)
    }

    /// Adds (or moves) channels into a bridge; on a call with feature codes their DTMF is absorbed (the
    /// engine passes on what is not a feature code).
    pub(super) fn add_to_bridge(&self, bridge: String, channels: Vec<String>, fx: &mut Effects) {
        let absorb_dtmf = self.metaflows.is_some();
        fx.request(
            self,
            AriRequest::AddToBridge {
                bridge,
                channels,
                absorb_dtmf,
            },
        );
    }

    pub(super) fn hang_up(&self, party: usize, cause: HangupCause, fx: &mut Effects) {
        let channel = self.parties[party].clone();
        fx.request(self, AriRequest::Hangup { channel, cause });
    }

    /// Destroys the bridge if it was created, hangs up a departing transferer, and ends the call.
    pub(super) fn end(&mut self, fx: &mut Effects) -> Flow {
        self.release_transferer(fx);
        if !matches!(self.phase, Phase::Dialing { .. }) {
            fx.request(
                self,
                AriRequest::DestroyBridge {
                    bridge: self.bridge.clone(),
                },
            );
        }
        Flow::Ended
    }

    pub fn cancel_timers(&self, timers: &mut Timers) {
        if let Some(departing) = &self.departing {
            timers.cancel(departing.at, self.key, TimerKind::ReleaseTransferer);
        }
        for (party, collector) in self.collectors.iter().enumerate() {
            if let Some(at) = collector.deadline() {
                timers.cancel(at, self.key, TimerKind::Digits(party));
            }
        }
        match &self.phase {
            Phase::Dialing { ring_deadline, .. } => {
                timers.cancel(*ring_deadline, self.key, TimerKind::RingTimeout)
            }
            Phase::Transferring(transfer) => transfer.cancel_timer(self.key, timers),
            Phase::Konami(konami) => konami.cancel_timer(self.key, timers),
            Phase::Connected | Phase::Threeway { .. } => {}
        }
    }
}

/// The identity a dialed channel is shown by: the user part of a PJSIP dial string (`PJSIP/bob`,
/// `PJSIP/2600@trunk`, `PJSIP/trunk/sip:bob@host` give `bob`, `2600`, `bob`).
fn identity_of_dial(dial: &str) -> Option<String> {
    let rest = dial.strip_prefix("PJSIP/")?;
    let user = match rest.split_once('/') {
        Some((_, uri)) => uri.trim_start_matches("sip:").split('@').next()?,
        None => rest.split('@').next()?,
    };
    let user = user.split('&').next()?;
    (!user.is_empty()).then(|| user.to_owned())
}

/// The cause a failed Dial status implies (the callee's own hangup cause is preferred when it has one).
fn dial_failure_cause(dialstatus: &str) -> Option<HangupCause> {
    match dialstatus {
        "BUSY" => Some(HangupCause::USER_BUSY),
        "NOANSWER" => Some(HangupCause::NO_ANSWER),
        "CONGESTION" => Some(HangupCause::CONGESTION),
        "CHANUNAVAIL" => Some(HangupCause::SUBSCRIBER_ABSENT),
        _ => None,
    }
}

#[cfg(test)]
mod identity_tests {
    use super::identity_of_dial;

    #[test]
    fn a_dialed_channel_is_shown_by_its_dial_strings_user() {
        assert_eq!(identity_of_dial("PJSIP/bob").as_deref(), Some("bob"));
        assert_eq!(
            identity_of_dial("PJSIP/2600@trunk").as_deref(),
            Some("2600")
        );
        assert_eq!(
            identity_of_dial("PJSIP/trunk/sip:bob@host").as_deref(),
            Some("bob")
        );
        assert_eq!(identity_of_dial("Local/100@ctx"), None);
        assert_eq!(identity_of_dial("PJSIP/"), None);
    }
}
