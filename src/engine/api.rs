//! The HTTP API's commands (P1, P2), as inputs to the engine, and what it answers.
//!
//! A command is decided here, against the same call state the events drive, and answered at once: the
//! answer says what the engine did (a transfer created, and its id), the ARI requests carry it out, and
//! what happens next (the target answers, the transfer completes) shows in the transfer's status. The HTTP
//! layer only parses, authenticates and serialises.
//!
//! | command            | when                                          | outcome                               |
//! |--------------------|-----------------------------------------------|---------------------------------------|
//! | any on a call      | the call is not the scope's account's          | 404, as for a call that does not exist |
//! | start transfer     | the call is connected, nobody held, no transfer | 201: attended as the `*2` feature code, blind as a REFER whose transferer left at once |
//! | start transfer     | otherwise                                     | 409 (`not_connected`, `on_hold`, `transfer_in_progress`) |
//! | start transfer     | no route for the target                        | 422 `no_route`, nothing changes        |
//! | cancel             | attended, before it completes; blind REFER ringing | target hung up, transferor back with the transferee |
//! | cancel             | otherwise (over, or nobody to return to)        | 409                                    |
//! | complete           | attended, talking: transferee and target bridged, transferor hung up; ringing: the partial transfer (D3) | 200 |
//! | complete           | blind (it completes when the target answers), or over | 409                            |
//! | hold               | a party of a connected call, not held          | out of the bridge, hears music (nobody hears it) |
//! | unhold             | a held party                                   | music stops, back in the bridge        |
//! | hold, unhold       | already held, not held, the call not connected | 409                                    |
//! | hang up            | any leg of the call                            | that leg hung up; the call reacts as to a phone's hangup |
//!
//! Every transfer, whatever started it (API, REFER, feature code), gets a record here; its status follows
//! the notes the call's phases leave ([`Note`]) and it is kept a while after it ended.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ari::request::{AriRequest, HangupCause};

use super::events::{EventKind, Happened, HoldBy, HoldStep};
use super::konami::KonamiPlan;
use super::metaflow::TransferFlow;
use super::routing::{Call, Flow, Leg, Phase};
use super::transfer::BlindPlan;
use super::{CallKey, CallPhase, Engine, Millis, Output};

/// Whose request it is: the admin token's (every account) or one account's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Account(Arc<str>),
}

impl Scope {
    fn sees(&self, account: Option<&str>) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Account(id) => account == Some(&**id),
        }
    }
}

/// What an app asks. A call is named by the ARI channel id or the SIP Call-ID of one of its legs.
#[derive(Debug, Clone)]
pub enum Command {
    ListCalls,
    GetCall { call: String },
    Hangup { call: String },
    StartTransfer(TransferSpec),
    ListTransfers,
    GetTransfer { id: String },
    CancelTransfer { id: String },
    CompleteTransfer { id: String },
    Hold { call: String, moh: Option<String> },
    Unhold { call: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferKind {
    #[default]
    Attended,
    Blind,
}

/// What started a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    Refer,
    Dtmf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferStatus {
    Ringing,
    Answered,
    Completed,
    Cancelled,
    Failed,
}

impl TransferStatus {
    fn is_over(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

/// A transfer an app starts: `call` is the transferor's leg; the other party of its call is the transferee.
#[derive(Debug, Clone, Default)]
pub struct TransferSpec {
    pub call: String,
    /// An extension, routed like a dialed one.
    pub target: String,
    /// Instead of `target`: another call (a leg's id), the transferor's consultation; its other party
    /// joins the transferee and the transferor's two legs are hung up (attended only).
    pub target_call: Option<String>,
    pub kind: TransferKind,
    /// How long the target may ring (else the ring timeout of the configuration).
    pub timeout: Option<Millis>,
    /// The music-on-hold class the transferee hears (attended).
    pub moh: Option<String>,
    /// What the transferor hears while the target rings (attended).
    pub ringback: Option<String>,
    /// The code with which the transferor takes the transferee back (attended; default `*1`).
    pub takeback_dtmf: Option<String>,
    /// Channel variables set on the target's channel.
    pub variables: Vec<(String, String)>,
}

/// The engine's answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Calls(Vec<CallView>),
    Call(CallView),
    Transfers(Vec<TransferView>),
    /// A transfer just created (201), or shown, cancelled, completed.
    Transfer(TransferView),
    Done,
    Error(ApiError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Unprocessable,
    /// The call's node is down.
    Unavailable,
}

/// Why a command was refused: `code` for programs, `message` for people, `field` the input at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn on(mut self, field: &'static str) -> ApiError {
        self.field = Some(field);
        self
    }

    fn no_call(field: &'static str) -> ApiError {
        ApiError::new(ErrorKind::NotFound, "call_not_found", "no such call").on(field)
    }

    fn no_transfer() -> ApiError {
        ApiError::new(
            ErrorKind::NotFound,
            "transfer_not_found",
            "no such transfer",
        )
        .on("id")
    }

    fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, code, message)
    }
}

/// A call, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallView {
    /// The call's id: the ARI channel id of its first leg.
    pub id: String,
    pub node: String,
    pub account: Option<String>,
    #[schema(value_type = String, example = "connected")]
    pub state: &'static str,
    /// The extension the caller dialed.
    pub destination: String,
    /// How long the call has lasted, in milliseconds.
    pub duration_ms: u64,
    /// Its two parties (caller first), then whoever a transfer brings in.
    pub legs: Vec<LegView>,
    /// The transfer in progress, if any.
    pub transfer: Option<TransferView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LegView {
    /// The ARI channel id.
    pub channel: String,
    /// The SIP Call-ID of its dialog, for PJSIP legs.
    pub sip_call_id: Option<String>,
    /// `caller`, `callee` (the two parties), `target` (brought in by a transfer) or `transferor`
    /// (leaving after one).
    #[schema(value_type = String, example = "caller")]
    pub role: &'static str,
    /// Held through the API (it hears music, nobody hears it).
    pub held: bool,
    /// Its phone holds the call itself (a re-INVITE with `sendonly` or `inactive`).
    pub phone_hold: bool,
    /// Who it is: the caller id name and number it came with (the first caller), or the user its dial
    /// string names (a leg the app dialed); null when unknown.
    pub name: Option<String>,
    pub number: Option<String>,
}

/// A transfer, whatever started it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TransferView {
    pub id: String,
    /// The call (its id) the transfer is on.
    pub call: String,
    /// The transferor's leg and the transferee's (channel ids).
    pub transferor: String,
    pub transferee: String,
    pub kind: TransferKind,
    pub source: Source,
    /// The extension dialed, or for an attended REFER the SIP Call-ID of the replaced dialog.
    pub target: String,
    pub status: TransferStatus,
    /// Why it failed: busy, no_answer, rejected, no_route, unreachable, hangup, target_hangup,
    /// transferee_hangup, error.
    pub reason: Option<String>,
    pub node: String,
    pub account: Option<String>,
}

/// What a call's phases report about its transfer, collected in [`super::Effects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    Started {
        source: Source,
        kind: TransferKind,
        target: String,
        transferor: usize,
    },
    Answered,
    Completed,
    Cancelled,
    Failed(&'static str),
    /// The call entered the app (or a restart adopted it).
    CallCreated,
    /// The callee answered: the call is connected.
    CallAnswered,
    /// A step of a hold (`hold`) or an unhold of a party's leg.
    Hold {
        channel: String,
        hold: bool,
        step: HoldStep,
        by: HoldBy,
    },
}

pub(crate) fn hold_note(channel: &str, hold: bool, step: HoldStep, by: HoldBy) -> Note {
    Note::Hold {
        channel: channel.to_owned(),
        hold,
        step,
        by,
    }
}

/// Why a transfer's target failed, from its hangup cause.
pub(crate) fn reason(cause: HangupCause) -> &'static str {
    match cause {
        HangupCause::USER_BUSY => "busy",
        HangupCause::NO_ANSWER | HangupCause(18) => "no_answer",
        HangupCause::CALL_REJECTED => "rejected",
        HangupCause::UNALLOCATED => "no_route",
        HangupCause::NORMAL_CLEARING => "target_hangup",
        _ => "unreachable",
    }
}

/// How many ended transfers stay visible.
const KEPT: usize = 1000;

/// Every transfer's record: those in progress by call, and the last [`KEPT`] that ended.
#[derive(Debug, Default)]
pub(super) struct TransferLog {
    records: HashMap<String, (CallKey, TransferView)>,
    active: HashMap<CallKey, String>,
    /// Each call's latest transfer, for the NOTIFYs that follow its end.
    latest: HashMap<CallKey, String>,
    ended: VecDeque<String>,
    serial: u64,
}

impl TransferLog {
    /// Applies a call's note: a start creates the record, the first terminal note ends it. What changed
    /// goes to `happened`; notes about the call itself or its holds go there as they are.
    pub fn apply(&mut self, instance: &str, call: &Call, note: Note, happened: &mut Vec<Happened>) {
        if let Note::Started {
            source,
            kind,
            target,
            transferor,
        } = note
        {
            self.end(call.key, TransferStatus::Failed, Some("ended"), happened);
            self.serial += 1;
            let id = format!("{instance}-x{}", self.serial);
            let view = TransferView {
                id: id.clone(),
                call: call.party(0).to_owned(),
                transferor: call.party(transferor).to_owned(),
                transferee: call.other_party(transferor).to_owned(),
                kind,
                source,
                target,
                status: TransferStatus::Ringing,
                reason: None,
                node: call.node.to_string(),
                account: call.account.as_deref().map(str::to_owned),
            };
            tracing::info!(call = %call.key, transfer = %id, source = ?view.source, kind = ?view.kind, target = %view.target, "transfer created");
            happened.push(Happened::Transfer(EventKind::TransferCreated, view.clone()));
            happened.push(Happened::Transfer(EventKind::TransferRinging, view.clone()));
            self.records.insert(id.clone(), (call.key, view));
            self.latest.insert(call.key, id.clone());
            self.active.insert(call.key, id);
            return;
        }
        match note {
            Note::Answered => {
                if let Some(view) = self.active_view(call.key) {
                    view.status = TransferStatus::Answered;
                    let view = view.clone();
                    happened.push(Happened::Transfer(EventKind::TransferAnswered, view));
                }
            }
            Note::Completed => self.end(call.key, TransferStatus::Completed, None, happened),
            Note::Cancelled => self.end(call.key, TransferStatus::Cancelled, None, happened),
            Note::Failed(reason) => {
                self.end(call.key, TransferStatus::Failed, Some(reason), happened)
            }
            Note::CallCreated => happened.push(Happened::Call(EventKind::CallCreated)),
            Note::CallAnswered => happened.push(Happened::Call(EventKind::CallAnswered)),
            Note::Hold {
                channel,
                hold,
                step,
                by,
            } => happened.push(Happened::Hold {
                channel,
                hold,
                step,
                by,
            }),
            Note::Started { .. } => {}
        }
    }

    /// A call whose phase no longer transfers (or that ended) has no transfer in progress: one the notes
    /// did not end is recorded as failed.
    pub fn settle(&mut self, call: CallKey, transferring: bool, happened: &mut Vec<Happened>) {
        if !transferring {
            self.end(call, TransferStatus::Failed, Some("hangup"), happened);
        }
    }

    /// The id of the call's latest transfer, in progress or not.
    pub fn latest(&self, call: CallKey) -> Option<&str> {
        self.latest.get(&call).map(String::as_str)
    }

    /// The call ended.
    pub fn forget(&mut self, call: CallKey) {
        self.latest.remove(&call);
    }

    fn active_view(&mut self, call: CallKey) -> Option<&mut TransferView> {
        let id = self.active.get(&call)?;
        self.records.get_mut(id).map(|(_, view)| view)
    }

    fn end(
        &mut self,
        call: CallKey,
        status: TransferStatus,
        reason: Option<&str>,
        happened: &mut Vec<Happened>,
    ) {
        let Some(id) = self.active.remove(&call) else {
            return;
        };
        if let Some((_, view)) = self.records.get_mut(&id) {
            view.status = status;
            view.reason = reason.map(str::to_owned);
            tracing::info!(%call, transfer = %id, ?status, reason, "transfer over");
            let kind = match status {
                TransferStatus::Completed => EventKind::TransferCompleted,
                TransferStatus::Cancelled => EventKind::TransferCancelled,
                _ => EventKind::TransferFailed,
            };
            happened.push(Happened::Transfer(kind, view.clone()));
        }
        self.ended.push_back(id);
        while self.ended.len() > KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.records.remove(&old);
            }
        }
    }

    pub fn in_progress(&self, call: CallKey) -> Option<&TransferView> {
        let id = self.active.get(&call)?;
        self.records.get(id).map(|(_, view)| view)
    }

    fn get(&self, id: &str) -> Option<&(CallKey, TransferView)> {
        self.records.get(id)
    }
}

impl Engine {
    /// Decides a command from `scope` at `now`: its answer, and the requests that carry it out.
    pub fn command(
        &mut self,
        now: Millis,
        scope: &Scope,
        command: Command,
    ) -> (Reply, Vec<Output>) {
        let mut out = Vec::new();
        let reply = match self.decide(now, scope, command, &mut out) {
            Ok(reply) => reply,
            Err(error) => Reply::Error(error),
        };
        self.fence_refers(&mut out);
        (reply, out)
    }

    fn decide(
        &mut self,
        now: Millis,
        scope: &Scope,
        command: Command,
        out: &mut Vec<Output>,
    ) -> Result<Reply, ApiError> {
        match command {
            Command::ListCalls => {
                let mut keys: Vec<CallKey> = self
                    .calls
                    .values()
                    .filter(|c| scope.sees(c.account.as_deref()))
                    .map(|c| c.key)
                    .collect();
                keys.sort();
                Ok(Reply::Calls(
                    keys.iter()
                        .filter_map(|k| self.call_view(now, *k))
                        .collect(),
                ))
            }
            Command::GetCall { call } => {
                let (key, _) = self.find_leg(scope, &call, "call_id")?;
                self.call_view(now, key)
                    .map(Reply::Call)
                    .ok_or(ApiError::no_call("call_id"))
            }
            Command::Hangup { call } => {
                let (key, channel) = self.find_leg(scope, &call, "call_id")?;
                self.check_node(key)?;
                let node = self.calls[&key].node.clone();
                out.push(Output::Ari {
                    node,
                    call: key,
                    request: AriRequest::Hangup {
                        channel,
                        cause: HangupCause::NORMAL_CLEARING,
                    },
                });
                Ok(Reply::Done)
            }
            Command::StartTransfer(spec) => self.start_api_transfer(now, scope, spec, out),
            Command::ListTransfers => {
                let mut views: Vec<TransferView> = self
                    .transfers
                    .records
                    .values()
                    .filter(|(_, v)| scope.sees(v.account.as_deref()))
                    .map(|(_, v)| v.clone())
                    .collect();
                views.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Reply::Transfers(views))
            }
            Command::GetTransfer { id } => Ok(Reply::Transfer(self.transfer(scope, &id)?.1)),
            Command::CancelTransfer { id } => {
                self.act_on_transfer(now, scope, &id, out, Call::cancel_transfer)
            }
            Command::CompleteTransfer { id } => {
                self.act_on_transfer(now, scope, &id, out, Call::complete_transfer_now)
            }
            Command::Hold { call, moh } => {
                let (key, channel) = self.find_leg(scope, &call, "call_id")?;
                self.check_node(key)?;
                self.act(now, key, out, |call, fx| call.hold_leg(&channel, moh, fx))
            }
            Command::Unhold { call } => {
                let (key, channel) = self.find_leg(scope, &call, "call_id")?;
                self.check_node(key)?;
                self.act(now, key, out, |call, fx| call.unhold_leg(&channel, fx))
            }
        }
    }

    /// The call and channel a call id names (a channel id or a SIP Call-ID of one of its legs), if the
    /// scope may see that call.
    fn find_leg(
        &self,
        scope: &Scope,
        id: &str,
        field: &'static str,
    ) -> Result<(CallKey, String), ApiError> {
        let by_call_id = self
            .index
            .with_call_id(id)
            .iter()
            .find_map(|(node, channel)| {
                Some((self.index.call_of(node, channel)?, channel.clone()))
            });
        let by_channel = || {
            self.calls
                .values()
                .find(|c| c.channels().iter().any(|ch| ch == id))
                .map(|c| (c.key, id.to_owned()))
        };
        by_call_id
            .or_else(by_channel)
            .filter(|(key, _)| {
                self.calls
                    .get(key)
                    .is_some_and(|c| scope.sees(c.account.as_deref()))
            })
            .ok_or(ApiError::no_call(field))
    }

    /// 503 when the call's node is not connected: a command sent now could not be carried out.
    fn check_node(&self, key: CallKey) -> Result<(), ApiError> {
        let node = &self.calls[&key].node;
        if self.down.contains(node) {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "node_unavailable",
                format!("the call's Asterisk node {node} is not connected"),
            ));
        }
        Ok(())
    }

    fn transfer(&self, scope: &Scope, id: &str) -> Result<(CallKey, TransferView), ApiError> {
        self.transfers
            .get(id)
            .filter(|(_, view)| scope.sees(view.account.as_deref()))
            .cloned()
            .ok_or(ApiError::no_transfer())
    }

    /// Runs a call's API action; its answer is the call's transfer as it stands after (or `Done`).
    fn act(
        &mut self,
        now: Millis,
        key: CallKey,
        out: &mut Vec<Output>,
        f: impl FnOnce(&mut Call, &mut super::Effects) -> Result<Flow, ApiError>,
    ) -> Result<Reply, ApiError> {
        let mut result = Ok(());
        self.with_call(now, key, out, |call, fx| match f(call, fx) {
            Ok(flow) => flow,
            Err(error) => {
                result = Err(error);
                Flow::Continue
            }
        });
        result.map(|()| Reply::Done)
    }

    fn act_on_transfer(
        &mut self,
        now: Millis,
        scope: &Scope,
        id: &str,
        out: &mut Vec<Output>,
        f: fn(&mut Call, &mut super::Effects) -> Result<Flow, ApiError>,
    ) -> Result<Reply, ApiError> {
        let (key, view) = self.transfer(scope, id)?;
        if view.status.is_over() {
            return Err(ApiError::conflict(
                "transfer_over",
                format!("the transfer is {:?} already", view.status).to_lowercase(),
            ));
        }
        self.check_node(key)?;
        self.act(now, key, out, f)?;
        let (_, view) = self.transfer(scope, id)?;
        Ok(Reply::Transfer(view))
    }

    fn start_api_transfer(
        &mut self,
        now: Millis,
        scope: &Scope,
        spec: TransferSpec,
        out: &mut Vec<Output>,
    ) -> Result<Reply, ApiError> {
        let (key, channel) = self.find_leg(scope, &spec.call, "call")?;
        let call = &self.calls[&key];
        let Some(Leg::Party(transferor)) = call.leg_of(&channel) else {
            return Err(ApiError::conflict(
                "not_a_party",
                "that leg is not one of the call's two parties",
            )
            .on("call"));
        };
        match call.phase() {
            CallPhase::Connected if call.held_party().is_some() => {
                return Err(ApiError::conflict(
                    "on_hold",
                    "a party of the call is on hold",
                ))
            }
            CallPhase::Connected => {}
            CallPhase::Transferring => {
                return Err(ApiError::conflict(
                    "transfer_in_progress",
                    "the call has a transfer in progress",
                ))
            }
            CallPhase::Dialing | CallPhase::Threeway => {
                return Err(ApiError::conflict(
                    "not_connected",
                    "the call is not a connected two-party call",
                ))
            }
        }
        self.check_node(key)?;
        if let Some(target_call) = &spec.target_call {
            return self.start_join(now, scope, (key, transferor), target_call, out);
        }
        let Some(dial) = self.route(&spec.target) else {
            return Err(ApiError::new(
                ErrorKind::Unprocessable,
                "no_route",
                format!("no route leads to '{}'", spec.target),
            )
            .on("target"));
        };
        let recall = self
            .index
            .endpoint_of(&call.node, &channel)
            .map(str::to_owned)
            .filter(|_| self.config.recall_transferer);
        match spec.kind {
            TransferKind::Attended => {
                let metaflows = call.metaflows.clone();
                let mut flow = TransferFlow {
                    target_timeout: spec.timeout.unwrap_or(self.config.ring_timeout),
                    ..TransferFlow::default()
                };
                if let Some(moh) = spec.moh {
                    flow.moh = Some(moh);
                }
                if let Some(ringback) = spec.ringback {
                    flow.ringback = ringback;
                }
                if let Some(takeback) = spec.takeback_dtmf {
                    flow.takeback_dtmf = takeback;
                }
                let plan = KonamiPlan {
                    transferor,
                    exten: spec.target,
                    flow,
                    resume_dtmf: metaflows.and_then(|m| m.resume_dtmf()),
                    recall,
                    source: Source::Api,
                    variables: spec.variables,
                };
                self.with_call(now, key, out, |call, fx| call.start_konami(plan, fx));
            }
            TransferKind::Blind => {
                let n = self.new_key().0;
                let base = format!("{}-{n}", self.config.instance);
                let plan = BlindPlan {
                    source: transferor,
                    exten: spec.target.clone(),
                    dial,
                    target: format!("{base}-t"),
                    ringback: format!("{base}-ring"),
                    recall,
                    origin: Source::Api,
                    timeout: spec.timeout,
                    variables: spec.variables,
                };
                self.with_call(now, key, out, |call, fx| {
                    call.start_blind(plan, fx);
                    call.leave_blind_transfer(fx);
                    Flow::Continue
                });
            }
        }
        self.transfers
            .in_progress(key)
            .cloned()
            .map(Reply::Transfer)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Unprocessable,
                    "not_started",
                    "the transfer could not start",
                )
            })
    }

    /// Joins the transferee of call `key` with the other party of the call `target_call` names (the
    /// transferor's leg in it), as an attended REFER would.
    fn start_join(
        &mut self,
        now: Millis,
        scope: &Scope,
        (key, transferor): (CallKey, usize),
        target_call: &str,
        out: &mut Vec<Output>,
    ) -> Result<Reply, ApiError> {
        let (other, replaced) = self.find_leg(scope, target_call, "target_call")?;
        if other == key {
            return Err(ApiError::new(
                ErrorKind::Unprocessable,
                "same_call",
                "target_call names the transferor's own call",
            )
            .on("target_call"));
        }
        self.check_node(other)?;
        if !self.join_calls(now, key, transferor, (other, &replaced), out) {
            return Err(ApiError::conflict(
                "cannot_join",
                "the target call is not a connected two-party call of this account that can be \
                 reached from the transferor's node",
            )
            .on("target_call"));
        }
        self.transfers
            .in_progress(key)
            .cloned()
            .map(Reply::Transfer)
            .ok_or_else(|| ApiError::conflict("cannot_join", "the calls could not be joined"))
    }

    pub(super) fn call_view(&self, now: Millis, key: CallKey) -> Option<CallView> {
        let call = self.calls.get(&key)?;
        let leg = |channel: &str, role: &'static str| {
            let (name, number) = call.shown(channel);
            LegView {
                channel: channel.to_owned(),
                sip_call_id: self
                    .index
                    .call_id_of(&call.node, channel)
                    .map(str::to_owned),
                role,
                held: call.is_held_by_api(channel),
                phone_hold: call.is_held_by_phone(channel),
                name,
                number,
            }
        };
        let mut legs = vec![leg(call.party(0), "caller"), leg(call.party(1), "callee")];
        for channel in call.channels().iter().skip(2) {
            let role = match call.leg_of(channel) {
                Some(Leg::Departing | Leg::Replaced) => "transferor",
                _ => "target",
            };
            legs.push(leg(channel, role));
        }
        Some(CallView {
            id: call.id().to_owned(),
            node: call.node.to_string(),
            account: call.account.as_deref().map(str::to_owned),
            state: match call.phase() {
                CallPhase::Dialing => "dialing",
                CallPhase::Connected => "connected",
                CallPhase::Transferring => "transferring",
                CallPhase::Threeway => "threeway",
            },
            destination: call.exten.clone(),
            duration_ms: now.saturating_sub(call.created),
            legs,
            transfer: self.transfers.in_progress(key).cloned(),
        })
    }
}

impl Call {
    /// API cancel: an attended (feature-code machinery) transfer is taken back; a blind REFER's target
    /// is hung up while it rings and the transferer gets the call back (NOTIFY 603).
    fn cancel_transfer(&mut self, fx: &mut super::Effects) -> Result<Flow, ApiError> {
        match &self.phase {
            Phase::Konami(konami) if konami.can_take_back() => Ok(self.take_back(Note::Cancelled, fx)),
            Phase::Transferring(transfer) if transfer.can_cancel() => Ok(self.cancel_blind(fx)),
            _ => Err(ApiError::conflict(
                "cannot_cancel",
                "the transfer can no longer be cancelled (its transferor left, or it is completing)",
            )),
        }
    }

    /// API complete: the consultation ends with the transferee and the target together.
    fn complete_transfer_now(&mut self, fx: &mut super::Effects) -> Result<Flow, ApiError> {
        match &self.phase {
            Phase::Konami(konami) if konami.can_complete() => Ok(self.complete_konami(fx)),
            _ => Err(ApiError::conflict(
                "cannot_complete",
                "only an attended transfer whose transferor is still in it can be completed",
            )),
        }
    }

    fn hold_leg(
        &mut self,
        channel: &str,
        moh: Option<String>,
        fx: &mut super::Effects,
    ) -> Result<Flow, ApiError> {
        let party = self.connected_party(channel)?;
        if self.held[party] {
            return Err(ApiError::conflict(
                "already_held",
                "that leg is on hold already",
            ));
        }
        self.held[party] = true;
        self.hold_pending[party] = Some(true);
        let channel = channel.to_owned();
        fx.note(
            self.key,
            hold_note(&channel, true, HoldStep::Start, HoldBy::Api),
        );
        fx.request(
            self,
            AriRequest::RemoveFromBridge {
                bridge: self.bridge.clone(),
                channels: vec![channel.clone()],
            },
        );
        fx.request(
            self,
            AriRequest::StartMoh {
                channel,
                class: moh,
            },
        );
        Ok(Flow::Continue)
    }

    fn unhold_leg(&mut self, channel: &str, fx: &mut super::Effects) -> Result<Flow, ApiError> {
        let party = self.connected_party(channel)?;
        if !self.held[party] {
            return Err(ApiError::conflict("not_held", "that leg is not on hold"));
        }
        self.held[party] = false;
        self.hold_pending[party] = Some(false);
        let channel = channel.to_owned();
        fx.note(
            self.key,
            hold_note(&channel, false, HoldStep::Start, HoldBy::Api),
        );
        fx.request(
            self,
            AriRequest::StopMoh {
                channel: channel.clone(),
            },
        );
        self.add_to_bridge(self.bridge.clone(), vec![channel], fx);
        Ok(Flow::Continue)
    }

    /// A party's leg left or entered the call's bridge: an API hold or unhold waiting for it is done.
    pub(super) fn on_hold_moved(&mut self, party: usize, entered: bool, fx: &mut super::Effects) {
        if self.hold_pending[party] == Some(!entered) {
            self.hold_pending[party] = None;
            let channel = self.parties[party].clone();
            fx.note(
                self.key,
                hold_note(&channel, !entered, HoldStep::Ok, HoldBy::Api),
            );
        }
    }

    /// A request of an API hold or unhold failed (`None`: the request was none of theirs). A hold that
    /// failed gives the leg back to the call; an unhold that failed leaves it held, hearing music again,
    /// rather than in silence out of the bridge.
    pub(super) fn on_hold_request_failed(
        &mut self,
        request: &AriRequest,
        fx: &mut super::Effects,
    ) -> Option<Flow> {
        let (channel, hold) = match request {
            AriRequest::RemoveFromBridge { channels, .. } => (channels.first()?, true),
            AriRequest::StartMoh { channel, .. } => (channel, true),
            AriRequest::AddToBridge { channels, .. } => (channels.first()?, false),
            _ => return None,
        };
        let Some(Leg::Party(party)) = self.leg_of(channel) else {
            return None;
        };
        if self.hold_pending[party] != Some(hold) {
            return None;
        }
        let channel = channel.clone();
        self.hold_pending[party] = None;
        self.held[party] = !hold;
        fx.note(
            self.key,
            hold_note(&channel, hold, HoldStep::Fail, HoldBy::Api),
        );
        match request {
            // Still in the bridge; the music queued behind the removal is stopped.
            AriRequest::RemoveFromBridge { .. } => {
                fx.request(self, AriRequest::StopMoh { channel });
            }
            AriRequest::StartMoh { .. } => {
                self.add_to_bridge(self.bridge.clone(), vec![channel], fx);
            }
            _ => {
                let class = None;
                fx.request(self, AriRequest::StartMoh { channel, class });
            }
        }
        Some(Flow::Continue)
    }

    /// The party a hold or unhold is for: one of the two of a connected call.
    fn connected_party(&self, channel: &str) -> Result<usize, ApiError> {
        match (self.leg_of(channel), self.phase()) {
            (Some(Leg::Party(party)), CallPhase::Connected) => Ok(party),
            (Some(Leg::Party(_)), _) => Err(ApiError::conflict(
                "not_connected",
                "the call is not a connected two-party call",
            )),
            _ => Err(ApiError::conflict(
                "not_a_party",
                "that leg is not one of the call's two parties",
            )
            .on("call_id")),
        }
    }
}
