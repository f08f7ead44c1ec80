//! Phone-initiated transfers (SIP REFER, ChannelTransfer), as a phase of a connected call.
//!
//! Names follow the call schema `A --- bridge1 --- S` (A the transferee, S the transferer's leg the REFER
//! arrived on) and, for attended transfers, `C --- bridge2 --- R` (C the party S's phone consulted, R the
//! transferer's consult leg, the dialog the REFER's `Replaces` names). The engine posts NOTIFY 100 (progress)
//! before a transfer starts; each transfer then ends in exactly one terminal report to S, unless S is gone
//! (then Asterisk itself has sent the phone a 503).
//!
//! Blind (`Transfer::Blind`): S leaves bridge1, A hears ringing, the target T is dialed.
//!
//! | input                                   | outcome                                                        |
//! |-----------------------------------------|----------------------------------------------------------------|
//! | T answers                               | T joins bridge1, NOTIFY 200, S hung up → Connected (A, T)       |
//! | T busy or rejected (cause 17, 21)       | S back in bridge1, NOTIFY 603 → Connected (A, S)                |
//! | T fails otherwise, T's dial fails       | S back in bridge1, NOTIFY 503 → Connected (A, S)                |
//! | ring timeout                            | T hung up, S back in bridge1, NOTIFY 503 → Connected (A, S)     |
//! | A hangs up (B5)                         | T hung up, NOTIFY 503, S hung up, bridge1 destroyed → ended    |
//! | S hangs up (B6)                         | the transfer goes on                                           |
//! | T fails after S hung up (B6)            | S's endpoint is called back for A (the recall, ringback goes on)|
//! | the recall answers                      | it joins bridge1 → Connected (A, recall)                       |
//! | the recall fails, or recalls are off    | A hung up with the cause (nobody to return to) → ended         |
//!
//! Attended (`Transfer::Attended`): C is moved from bridge2 into bridge1 (one addChannel).
//!
//! | input                                   | outcome                                                        |
//! |-----------------------------------------|----------------------------------------------------------------|
//! | C entered bridge1                       | bridge2 destroyed, NOTIFY 200, S and R hung up → Connected (A, C)|
//! | C hangs up, or the move fails (A5)      | NOTIFY 503, R (and C) hung up, bridge2 destroyed → Connected (A, S)|
//! | A hangs up (A5)                         | NOTIFY 503, S, R and C hung up, both bridges destroyed → ended  |
//! | S or R hangs up                         | the transfer goes on (both are hung up at the end anyway)      |
//! | C hangs up, or the move fails, after S hung up | R (and C) hung up, A hung up (nobody left for it) → ended |
//!
//! Attended across nodes (A3): S's call is on node 1, the consult call (C, R) on node 2. Node 1 dials a link
//! leg L1 through its trunk to node 2, where it arrives as L2 (its extension is a token the engine chose).
//! S's call is `Transfer::Remote`, the consult call `Transfer::Linked`; they tell each other the outcome
//! ([`LinkSignal`]). Afterwards they are two ordinary calls, (A, L1) and (L2, C), joined by the trunk: a
//! hangup on either side reaches the other through it.
//!
//! | input (call)                            | outcome                                                        |
//! |-----------------------------------------|----------------------------------------------------------------|
//! | L2 arrives (consult call)               | L2 answered and added to bridge2                               |
//! | L1 answers (S's call)                   | L1 added to bridge1                                            |
//! | L1 entered bridge1 (S's call)           | NOTIFY 200, S hung up → Connected (A, L1); the consult call: R hung up → Connected (L2, C) |
//! | L1 fails, ring timeout, a request of L1 or L2 fails, C or L2 hangs up | NOTIFY 503, L1 hung up → Connected (A, S); the consult call is over (C, R, L2 hung up, bridge2 destroyed) |
//! | A hangs up                              | NOTIFY 503, S and L1 hung up → ended; the consult call is over |
//! | S or R hangs up                         | the transfer goes on (if it then fails, A is hung up)          |
//!
//! A REFER on a call that is not idle is answered NOTIFY 603 at once, by the engine, unless it comes on the
//! channel whose REFER is pending (B7: the phone sent a second REFER in the same dialog). Asterisk 22 posts
//! every transfer_progress to all REFERs pending on a channel (its NOTIFYs carry no `id`), so that one
//! cannot be declined alone: it is left to share the first REFER's NOTIFYs, and the first goes on.

use crate::ari::request::{AriRequest, HangupCause, TransferProgress};

use super::api::{self, Note, Source, TransferKind};

use super::routing::{Call, Departing, Flow, Leg, Phase};
use super::timers::{TimerKind, Timers};
use super::{CallKey, Effects, Millis};

/// What one half of a cross-node transfer tells the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkSignal {
    /// The link leg took the transferer's place on node 1: the consult call swaps R for L2.
    Completed,
    /// The transfer cannot complete: each half rolls back (S's call) or ends (the consult call).
    Failed,
}

/// What a blind transfer dials, and for whom.
pub(super) struct BlindPlan {
    /// The party index of the transferer's leg S.
    pub source: usize,
    /// The extension asked for, and the dial string it routes to.
    pub exten: String,
    pub dial: String,
    /// The id of the target's channel.
    pub target: String,
    /// The id of the transferee's ringback playback.
    pub ringback: String,
    /// The transferer's endpoint, to call it back (B6).
    pub recall: Option<String>,
    /// Who asked: a REFER, or the API.
    pub origin: Source,
    /// How long the target may ring (else the configured ring timeout).
    pub timeout: Option<Millis>,
    /// Channel variables for the target's channel (an API transfer's `variables`).
    pub variables: Vec<(String, String)>,
}

/// How long a transferer told 200 may take to hang up by itself before the app hangs it up.
pub const TRANSFERER_GRACE: Millis = 1_000;

/// The media a transferee hears while a blind transfer's target rings.
const RINGBACK: &str = "tone:ring";

#[derive(Debug)]
pub(super) enum Transfer {
    Blind {
        /// The party index of S.
        source: usize,
        target: String,
        ring_deadline: Millis,
        ringback: String,
        /// The cause a Dial failure status implies, if the target's hangup carries none.
        failure: Option<HangupCause>,
        source_gone: bool,
        /// Whether the target was dialed (once it entered the app).
        dialed: bool,
        /// Where to call the transferer back if the target fails after the transferer left (B6); `None`
        /// once that recall is under way, or when recalls are off.
        recall: Option<String>,
    },
    Attended {
        source: usize,
        replaced: String,
        /// C, being moved into this call's bridge.
        newcomer: String,
        old_bridge: String,
        source_gone: bool,
    },
    /// Attended across nodes, on S's call: the link leg L1 to the consult call's node.
    Remote {
        source: usize,
        link: String,
        ring_deadline: Millis,
        dialed: bool,
        answered: bool,
        source_gone: bool,
        /// The consult call, on the other node.
        far: CallKey,
    },
    /// Attended across nodes, on the consult call: R (party `replaced`) is replaced by the link leg L2
    /// arriving from S's call (`near`).
    Linked {
        replaced: usize,
        link: Option<String>,
        near: CallKey,
    },
}

impl Transfer {
    pub fn channels(&self) -> Vec<String> {
        match self {
            Transfer::Blind { target, .. } => vec![target.clone()],
            Transfer::Attended {
                replaced, newcomer, ..
            } => vec![replaced.clone(), newcomer.clone()],
            Transfer::Remote { link, .. } => vec![link.clone()],
            Transfer::Linked { link, .. } => link.iter().cloned().collect(),
        }
    }

    pub fn leg_of(&self, channel: &str) -> Option<Leg> {
        match self {
            Transfer::Blind { target, .. } if target == channel => Some(Leg::Target),
            Transfer::Attended { newcomer, .. } if newcomer == channel => Some(Leg::Target),
            Transfer::Attended { replaced, .. } if replaced == channel => Some(Leg::Replaced),
            Transfer::Remote { link, .. } if link == channel => Some(Leg::Target),
            Transfer::Linked { link, .. } if link.as_deref() == Some(channel) => Some(Leg::Target),
            _ => None,
        }
    }

    /// The target or link leg this transfer created, while it has not entered the app.
    pub fn not_in_the_app_yet(&self) -> Option<&str> {
        match self {
            Transfer::Blind {
                target,
                dialed: false,
                ..
            } => Some(target),
            Transfer::Remote {
                link,
                dialed: false,
                ..
            } => Some(link),
            _ => None,
        }
    }

    pub fn note_dial_failure(&mut self, cause: HangupCause) {
        if let Transfer::Blind { failure, .. } = self {
            *failure = Some(cause);
        }
    }

    pub fn cancel_timer(&self, call: CallKey, timers: &mut Timers) {
        if let Transfer::Blind { ring_deadline, .. } | Transfer::Remote { ring_deadline, .. } = self
        {
            timers.cancel(*ring_deadline, call, TimerKind::RingTimeout);
        }
    }

    /// For a transfer whose target (or link leg) was not dialed yet: marks it dialed, and gives the party on
    /// whose behalf it is dialed (the transferee).
    pub fn dial_once(&mut self) -> Option<usize> {
        match self {
            Transfer::Blind { source, dialed, .. } | Transfer::Remote { source, dialed, .. }
                if !*dialed =>
            {
                *dialed = true;
                Some(1 - *source)
            }
            _ => None,
        }
    }

    /// Whether the REFER of this transfer came on channel `channel` of the call, and waits for its outcome.
    fn refer_pending_on(&self, parties: &[String; 2], channel: &str) -> bool {
        let has_refer = !matches!(self, Transfer::Linked { .. });
        has_refer && !self.source_gone() && parties[self.source()] == channel
    }

    /// Whether S hung up during the transfer (it then has no REFER waiting; Asterisk told it 503).
    fn source_gone(&self) -> bool {
        match self {
            Transfer::Blind { source_gone, .. }
            | Transfer::Attended { source_gone, .. }
            | Transfer::Remote { source_gone, .. } => *source_gone,
            Transfer::Linked { .. } => false,
        }
    }

    /// The bridge `leg` of the call (whose bridge is `bridge`) is meant to be in during this transfer.
    pub fn belongs_in<'a>(&self, leg: Leg, bridge: &'a str) -> Option<&'a str> {
        match (self, leg) {
            // S waits outside bridge1 while a blind transfer's target rings; the target joins on answer.
            (Transfer::Blind { source, .. }, Leg::Party(p)) if p == *source => None,
            (Transfer::Blind { .. }, Leg::Target) => None,
            (Transfer::Remote { answered, .. }, Leg::Target) if !answered => None,
            _ => Some(bridge),
        }
    }

    fn is_blind(&self) -> bool {
        matches!(self, Transfer::Blind { .. })
    }

    fn is_attended(&self) -> bool {
        matches!(self, Transfer::Attended { .. })
    }

    fn is_remote(&self) -> bool {
        matches!(self, Transfer::Remote { .. })
    }

    fn is_linked(&self) -> bool {
        matches!(self, Transfer::Linked { .. })
    }

    /// The party the transfer replaces: S (whose REFER it is), or R on a consult call linked across nodes.
    /// Whether an API cancel applies: a blind transfer still ringing, its transferer still there to
    /// return to.
    pub fn can_cancel(&self) -> bool {
        matches!(
            self,
            Transfer::Blind {
                source_gone: false,
                ..
            }
        )
    }

    fn source(&self) -> usize {
        match self {
            Transfer::Blind { source, .. }
            | Transfer::Attended { source, .. }
            | Transfer::Remote { source, .. } => *source,
            Transfer::Linked { replaced, .. } => *replaced,
        }
    }
}

/// The NOTIFY a failed target's hangup cause gives the transferer: 603 for busy and rejected, else 503.
pub fn failure_report(cause: HangupCause) -> TransferProgress {
    match cause {
        HangupCause::USER_BUSY | HangupCause::CALL_REJECTED => TransferProgress::Declined,
        _ => TransferProgress::Unavailable,
    }
}

impl Call {
    /// Whether a REFER that arrived on `channel` is still waiting for its outcome.
    pub(super) fn has_pending_refer_on(&self, channel: &str) -> bool {
        matches!(&self.phase, Phase::Transferring(t) if t.refer_pending_on(&self.parties, channel))
    }

    /// Blind transfer of party `source`'s peer to `dial`, through the new channel `target`.
    pub(super) fn start_blind(&mut self, plan: BlindPlan, fx: &mut Effects) {
        self.quiet = false;
        tracing::info!(call = %self.key, target = %plan.target, dial = %plan.dial, source = ?plan.origin, "blind transfer");
        fx.note(
            self.key,
            Note::Started {
                source: plan.origin,
                kind: TransferKind::Blind,
                target: plan.exten.clone(),
                transferor: plan.source,
            },
        );
        fx.request(
            self,
            AriRequest::RemoveFromBridge {
                bridge: self.bridge.clone(),
                channels: vec![self.party(plan.source).to_owned()],
            },
        );
        fx.request(
            self,
            AriRequest::PlayOnBridge {
                bridge: self.bridge.clone(),
                playback: plan.ringback.clone(),
                media: RINGBACK.to_owned(),
            },
        );
        self.ring_target(plan, false, fx);
    }

    /// Creates the plan's target (dialed once it is in the app) and waits for it, with a ring timeout.
    fn ring_target(&mut self, plan: BlindPlan, source_gone: bool, fx: &mut Effects) {
        let timeout = plan.timeout.unwrap_or(fx.config.ring_timeout);
        let ring_deadline = self.ring(
            plan.target.clone(),
            (&plan.dial, &plan.variables),
            1 - plan.source,
            timeout,
            fx,
        );
        self.phase = Phase::Transferring(Transfer::Blind {
            source: plan.source,
            target: plan.target,
            ring_deadline,
            ringback: plan.ringback,
            failure: None,
            source_gone,
            dialed: false,
            recall: plan.recall,
        });
    }

    /// Creates `channel` towards `dial` for party `on_behalf_of`, ringing at most `timeout`; gives the
    /// deadline.
    pub(super) fn ring(
        &mut self,
        channel: String,
        dial: (&str, &[(String, String)]),
        on_behalf_of: usize,
        timeout: Millis,
        fx: &mut Effects,
    ) -> Millis {
        let ring_deadline = fx.now + timeout;
        fx.timers
            .arm(ring_deadline, self.key, TimerKind::RingTimeout);
        self.create(channel, dial, on_behalf_of, fx);
        ring_deadline
    }

    /// An API blind transfer: the transferor leaves at once (hung up), as a REFER's transferer that hangs
    /// up on the 202; the transfer goes on for the transferee (B6: the transferor is called back if the
    /// target fails, when recalls are on).
    pub(super) fn leave_blind_transfer(&mut self, fx: &mut Effects) {
        let Phase::Transferring(Transfer::Blind {
            source,
            source_gone,
            ..
        }) = &mut self.phase
        else {
            return;
        };
        *source_gone = true;
        let source = *source;
        self.hang_up(source, HangupCause::NORMAL_CLEARING, fx);
    }

    /// API cancel of a blind transfer that rings: the target is hung up, the transferer is back with the
    /// transferee, and a REFERing phone is told 603.
    pub(super) fn cancel_blind(&mut self, fx: &mut Effects) -> Flow {
        let Some(Transfer::Blind {
            source,
            target,
            ringback,
            ..
        }) = self.finish_transfer(Transfer::is_blind, fx)
        else {
            return Flow::Continue;
        };
        fx.note(self.key, Note::Cancelled);
        self.release(vec![target], fx);
        fx.request(self, AriRequest::StopPlayback { playback: ringback });
        self.add_to_bridge(self.bridge.clone(), vec![self.party(source).to_owned()], fx);
        self.report(source, TransferProgress::Declined, fx);
        Flow::Continue
    }

    /// Attended transfer across nodes, on S's call: the link leg `link` is dialed through the trunk
    /// (`dial`) to the consult call `far`, and takes party `source`'s place once it is answered.
    pub(super) fn start_remote(
        &mut self,
        source: usize,
        (link, dial): (String, &str),
        far: CallKey,
        origin: Source,
        fx: &mut Effects,
    ) {
        tracing::info!(call = %self.key, %link, %dial, consult_call = %far, "attended transfer across nodes");
        fx.note(
            self.key,
            Self::attended_started(source, link.clone(), origin),
        );
        self.quiet = origin == Source::Api;
        let timeout = fx.config.ring_timeout;
        let ring_deadline = self.ring(link.clone(), (dial, &[]), 1 - source, timeout, fx);
        self.phase = Phase::Transferring(Transfer::Remote {
            source,
            link,
            ring_deadline,
            dialed: false,
            answered: false,
            source_gone: false,
            far,
        });
    }

    /// Attended transfer across nodes, on the consult call: party `replaced` (R) waits to be replaced by
    /// the link leg from call `near`.
    pub(super) fn start_linked(&mut self, replaced: usize, near: CallKey) {
        self.phase = Phase::Transferring(Transfer::Linked {
            replaced,
            link: None,
            near,
        });
    }

    /// The link leg from the transferer's node arrived: it is answered (which answers L1 on the other
    /// node) and joins this call's bridge. False if this call no longer waits for it.
    pub(super) fn on_link_arrived(&mut self, channel: &str, fx: &mut Effects) -> bool {
        let Phase::Transferring(Transfer::Linked { link, .. }) = &mut self.phase else {
            return false;
        };
        if link.is_some() {
            return false;
        }
        *link = Some(channel.to_owned());
        let channel = channel.to_owned();
        fx.request(
            self,
            AriRequest::Answer {
                channel: channel.clone(),
            },
        );
        self.add_to_bridge(self.bridge.clone(), vec![channel], fx);
        true
    }

    /// What the other half of a cross-node transfer says.
    pub(super) fn on_link_signal(&mut self, signal: LinkSignal, fx: &mut Effects) -> Flow {
        match (&self.phase, signal) {
            (Phase::Transferring(Transfer::Remote { .. }), LinkSignal::Failed) => {
                self.remote_failed(fx)
            }
            (
                Phase::Transferring(Transfer::Linked { link: Some(_), .. }),
                LinkSignal::Completed,
            ) => {
                let Some(Transfer::Linked {
                    replaced,
                    link: Some(link),
                    ..
                }) = self.finish_transfer(Transfer::is_linked, fx)
                else {
                    return Flow::Continue;
                };
                let consult_leg = std::mem::replace(&mut self.parties[replaced], link);
                self.release(vec![consult_leg], fx);
                Flow::Continue
            }
            (Phase::Transferring(Transfer::Linked { .. }), _) => self.linked_failed(fx),
            _ => Flow::Continue,
        }
    }

    /// S's half of a cross-node transfer failed: S is told 503 and stays with A (if S hung up meanwhile, A
    /// has nobody left and is released); the link leg goes, and so does the consult call.
    fn remote_failed(&mut self, fx: &mut Effects) -> Flow {
        let Some(Transfer::Remote {
            source,
            link,
            far,
            source_gone,
            ..
        }) = self.finish_transfer(Transfer::is_remote, fx)
        else {
            return Flow::Continue;
        };
        fx.note(self.key, Note::Failed("unreachable"));
        if !source_gone {
            self.report(source, TransferProgress::Unavailable, fx);
        }
        self.release(vec![link], fx);
        fx.signal(far, LinkSignal::Failed);
        self.keep_or_release_transferee(source, source_gone, fx)
    }

    /// After a failed attended transfer (S told 503 first): S keeps A; if S hung up meanwhile, A has
    /// nobody left and is released.
    fn keep_or_release_transferee(
        &mut self,
        source: usize,
        source_gone: bool,
        fx: &mut Effects,
    ) -> Flow {
        if !source_gone {
            return Flow::Continue;
        }
        tracing::info!(call = %self.key, "transfer failed after the transferer left; releasing the transferee");
        self.hang_up(1 - source, HangupCause::NORMAL_CLEARING, fx);
        self.end(fx)
    }

    /// The consult call's half of a cross-node transfer failed (or was told so): the consult call is over.
    fn linked_failed(&mut self, fx: &mut Effects) -> Flow {
        let Some(Transfer::Linked { link, near, .. }) =
            self.finish_transfer(Transfer::is_linked, fx)
        else {
            return Flow::Continue;
        };
        self.release(link.into_iter().collect(), fx);
        self.release(self.parties.to_vec(), fx);
        fx.signal(near, LinkSignal::Failed);
        self.end(fx)
    }

    /// Attended transfer: `newcomer` (C) moves from `old_bridge` into this call's bridge, replacing party
    /// `source`; `replaced` (R) is the transferer's consult leg.
    pub(super) fn start_attended(
        &mut self,
        source: usize,
        (replaced, newcomer, old_bridge): (String, String, String),
        origin: Source,
        fx: &mut Effects,
    ) {
        tracing::info!(call = %self.key, %newcomer, %replaced, ?origin, "attended transfer");
        fx.note(
            self.key,
            Self::attended_started(source, newcomer.clone(), origin),
        );
        self.quiet = origin == Source::Api;
        self.add_to_bridge(self.bridge.clone(), vec![newcomer.clone()], fx);
        self.phase = Phase::Transferring(Transfer::Attended {
            source,
            replaced,
            newcomer,
            old_bridge,
            source_gone: false,
        });
    }

    /// The record of an attended transfer (a REFER's, or the API's between two calls): its target is the
    /// party joining.
    fn attended_started(transferor: usize, target: String, source: Source) -> Note {
        Note::Started {
            source,
            kind: TransferKind::Attended,
            target,
            transferor,
        }
    }

    /// Ends the transfer phase if its transfer is of the kind `kind` accepts: back to Connected, the
    /// transfer's deadline cancelled.
    fn finish_transfer(
        &mut self,
        kind: impl Fn(&Transfer) -> bool,
        fx: &mut Effects,
    ) -> Option<Transfer> {
        if !matches!(&self.phase, Phase::Transferring(transfer) if kind(transfer)) {
            return None;
        }
        let Phase::Transferring(transfer) = std::mem::replace(&mut self.phase, Phase::Connected)
        else {
            return None;
        };
        transfer.cancel_timer(self.key, fx.timers);
        Some(transfer)
    }

    /// The transfer succeeded: `joined` has taken the transferer's place, and the transferer (unless it
    /// is gone already) is told 200 and given a moment to hang up by itself (phones do on the 200) before
    /// the app hangs it up. Asterisk's own transfers leave that hangup to the phone, too; hanging the REFER's
    /// channel up right on the 200 sometimes crashed Asterisk 22.10 (heap corruption), so the app does not.
    fn complete_transfer(&mut self, source: usize, joined: String, tell: bool, fx: &mut Effects) {
        fx.note(self.key, Note::Completed);
        let transferer = std::mem::replace(&mut self.parties[source], joined);
        if !tell {
            return;
        }
        if std::mem::take(&mut self.quiet) {
            // No REFER awaits the outcome (the API joined two calls): the transferor just goes.
            self.release(vec![transferer], fx);
            return;
        }
        fx.request(
            self,
            AriRequest::TransferProgress {
                channel: transferer.clone(),
                state: TransferProgress::Answered,
            },
        );
        tracing::info!(call = %self.key, status = 200, "transfer ended");
        // A transferer still departing from an earlier transfer goes now.
        self.release_transferer(fx);
        let at = fx.now + TRANSFERER_GRACE;
        fx.timers.arm(at, self.key, TimerKind::ReleaseTransferer);
        self.departing = Some(Departing {
            transferer: Some(transferer),
            replaced: None,
            at,
        });
    }

    /// Hangs up the departing transferer's legs, if there are any.
    pub(super) fn release_transferer(&mut self, fx: &mut Effects) -> Flow {
        if let Some(departing) = self.departing.take() {
            fx.timers
                .cancel(departing.at, self.key, TimerKind::ReleaseTransferer);
            self.release(departing.channels().cloned().collect(), fx);
        }
        Flow::Continue
    }

    /// Asterisk reported the end of a REFER on `channel` (a ChannelTransfer event with a state): if that
    /// is the departing transferer, its consult leg can go now.
    pub(super) fn on_refer_reported(&mut self, channel: &str, fx: &mut Effects) -> Flow {
        let Some(departing) = &mut self.departing else {
            return Flow::Continue;
        };
        if departing.transferer.as_deref() == Some(channel) {
            if let Some(replaced) = departing.replaced.take() {
                self.release(vec![replaced], fx);
            }
        }
        Flow::Continue
    }

    /// A departing leg hung up (or vanished).
    pub(super) fn on_departed(&mut self, channel: &str, fx: &mut Effects) -> Flow {
        let Some(departing) = &mut self.departing else {
            return Flow::Continue;
        };
        if departing.transferer.as_deref() == Some(channel) {
            departing.transferer = None;
        }
        if departing.replaced.as_deref() == Some(channel) {
            departing.replaced = None;
        }
        if departing.channels().next().is_none() {
            fx.timers
                .cancel(departing.at, self.key, TimerKind::ReleaseTransferer);
            self.departing = None;
        }
        Flow::Continue
    }

    /// Hangs up channels that leave with the transfer (targets, consult legs), normal clearing.
    fn release(&self, channels: Vec<String>, fx: &mut Effects) {
        for channel in channels {
            let cause = HangupCause::NORMAL_CLEARING;
            fx.request(self, AriRequest::Hangup { channel, cause });
        }
    }

    fn report(&mut self, source: usize, state: TransferProgress, fx: &mut Effects) {
        if std::mem::take(&mut self.quiet) {
            tracing::info!(call = %self.key, ?state, "transfer ended (no REFER to report to)");
            return;
        }
        tracing::info!(call = %self.key, status = state.sip_status(), "transfer ended");
        fx.request(
            self,
            AriRequest::TransferProgress {
                channel: self.party(source).to_owned(),
                state,
            },
        );
    }

    pub(super) fn on_target_answered(&mut self, fx: &mut Effects) -> Flow {
        if let Phase::Transferring(Transfer::Remote { link, answered, .. }) = &mut self.phase {
            if !std::mem::replace(answered, true) {
                let link = link.clone();
                self.add_to_bridge(self.bridge.clone(), vec![link], fx);
            }
            return Flow::Continue;
        }
        let Some(Transfer::Blind {
            source,
            target,
            ringback,
            source_gone,
            ..
        }) = self.finish_transfer(Transfer::is_blind, fx)
        else {
            return Flow::Continue;
        };
        fx.request(self, AriRequest::StopPlayback { playback: ringback });
        self.add_to_bridge(self.bridge.clone(), vec![target.clone()], fx);
        self.complete_transfer(source, target, !source_gone, fx);
        Flow::Continue
    }

    pub(super) fn on_target_joined(&mut self, fx: &mut Effects) -> Flow {
        if let Some(Transfer::Remote {
            source,
            link,
            far,
            source_gone,
            ..
        }) = self.finish_transfer(Transfer::is_remote, fx)
        {
            self.complete_transfer(source, link, !source_gone, fx);
            fx.signal(far, LinkSignal::Completed);
            return Flow::Continue;
        }
        let Some(Transfer::Attended {
            source,
            replaced,
            newcomer,
            old_bridge,
            source_gone,
        }) = self.finish_transfer(Transfer::is_attended, fx)
        else {
            return Flow::Continue;
        };
        fx.request(self, AriRequest::DestroyBridge { bridge: old_bridge });
        self.complete_transfer(source, newcomer, !source_gone, fx);
        match &mut self.departing {
            // Told 200: R waits until Asterisk is done reporting on the REFER, whose state holds it.
            Some(departing) if !source_gone => departing.replaced = Some(replaced),
            _ => self.release(vec![replaced], fx),
        }
        Flow::Continue
    }

    pub(super) fn on_target_ring_timeout(&mut self, fx: &mut Effects) -> Flow {
        let (Phase::Transferring(Transfer::Blind { target, .. })
        | Phase::Transferring(Transfer::Remote { link: target, .. })) = &self.phase
        else {
            return Flow::Continue;
        };
        let target = target.clone();
        fx.request(
            self,
            AriRequest::Hangup {
                channel: target,
                cause: HangupCause::NO_ANSWER,
            },
        );
        match &self.phase {
            Phase::Transferring(Transfer::Remote { .. }) => self.remote_failed(fx),
            _ => self.blind_failed(HangupCause::NO_ANSWER, fx),
        }
    }

    /// The blind transfer's target did not answer: the transferer gets its call back, or, if it hung up,
    /// the transferee is released rather than left alone.
    fn blind_failed(&mut self, cause: HangupCause, fx: &mut Effects) -> Flow {
        let Some(Transfer::Blind {
            source,
            target,
            ringback,
            source_gone,
            failure,
            recall,
            ..
        }) = self.finish_transfer(Transfer::is_blind, fx)
        else {
            return Flow::Continue;
        };
        let cause = match cause {
            HangupCause(0) | HangupCause::NORMAL_CLEARING => {
                failure.unwrap_or(HangupCause::NORMAL_CLEARING)
            }
            cause => cause,
        };
        fx.note(self.key, Note::Failed(api::reason(cause)));
        if source_gone {
            if let Some(endpoint) = recall {
                tracing::info!(call = %self.key, %endpoint, "transfer failed after the transferer left; calling the transferer back");
                let plan = BlindPlan {
                    source,
                    exten: endpoint.clone(),
                    dial: endpoint,
                    target: format!("{target}-recall"),
                    ringback,
                    recall: None,
                    origin: Source::Refer,
                    timeout: None,
                    variables: Vec::new(),
                };
                // Like a blind transfer whose transferer is gone: on answer the recall joins the
                // transferee, who keeps hearing ringback meanwhile; if it fails, the transferee is released.
                self.ring_target(plan, true, fx);
                return Flow::Continue;
            }
            tracing::info!(call = %self.key, "transfer failed after the transferer left; releasing the transferee");
            fx.request(self, AriRequest::StopPlayback { playback: ringback });
            self.hang_up(1 - source, cause, fx);
            return self.end(fx);
        }
        fx.request(self, AriRequest::StopPlayback { playback: ringback });
        self.add_to_bridge(self.bridge.clone(), vec![self.party(source).to_owned()], fx);
        self.report(source, failure_report(cause), fx);
        Flow::Continue
    }

    /// The attended move did not happen: the transferer keeps its first call; the consult call is over.
    fn attended_failed(&mut self, newcomer_alive: bool, fx: &mut Effects) -> Flow {
        let Some(Transfer::Attended {
            source,
            replaced,
            newcomer,
            old_bridge,
            source_gone,
        }) = self.finish_transfer(Transfer::is_attended, fx)
        else {
            return Flow::Continue;
        };
        fx.note(self.key, Note::Failed("target_hangup"));
        if !source_gone {
            self.report(source, TransferProgress::Unavailable, fx);
        }
        let mut leftovers = vec![replaced];
        if newcomer_alive {
            leftovers.push(newcomer);
        }
        self.release(leftovers, fx);
        fx.request(self, AriRequest::DestroyBridge { bridge: old_bridge });
        self.keep_or_release_transferee(source, source_gone, fx)
    }

    pub(super) fn on_leg_gone_in_transfer(
        &mut self,
        leg: Leg,
        cause: i32,
        fx: &mut Effects,
    ) -> Flow {
        let Phase::Transferring(transfer) = &mut self.phase else {
            return Flow::Continue;
        };
        let source = transfer.source();
        match (transfer, leg) {
            (
                Transfer::Blind { source_gone, .. }
                | Transfer::Attended { source_gone, .. }
                | Transfer::Remote { source_gone, .. },
                Leg::Party(p),
            ) if p == source => {
                *source_gone = true;
                Flow::Continue
            }
            (Transfer::Blind { .. }, Leg::Target) => self.blind_failed(HangupCause(cause), fx),
            (Transfer::Attended { .. }, Leg::Target) => self.attended_failed(false, fx),
            (Transfer::Remote { .. }, Leg::Target) => self.remote_failed(fx),
            // R hangs up: it is replaced anyway. C or the link leg hangs up: the transfer cannot complete.
            (Transfer::Linked { .. }, Leg::Party(p)) if p == source => Flow::Continue,
            (Transfer::Linked { .. }, _) => self.linked_failed(fx),
            (_, Leg::Replaced | Leg::Departing) => Flow::Continue,
            // The transferee hung up: nobody is left to transfer.
            (_, Leg::Party(_)) => self.abandon_transfer(fx),
        }
    }

    /// The transferee is gone: everything of the call is released, and the transferer told 503.
    fn abandon_transfer(&mut self, fx: &mut Effects) -> Flow {
        let Some(transfer) = self.finish_transfer(|_| true, fx) else {
            return Flow::Continue;
        };
        fx.note(self.key, Note::Failed("transferee_hangup"));
        let source = transfer.source();
        let mut leftovers = transfer.channels();
        if !transfer.source_gone() {
            self.report(source, TransferProgress::Unavailable, fx);
            leftovers.push(self.party(source).to_owned());
        }
        self.release(leftovers, fx);
        match transfer {
            Transfer::Attended { old_bridge, .. } => {
                fx.request(self, AriRequest::DestroyBridge { bridge: old_bridge });
            }
            Transfer::Remote { far, .. } => fx.signal(far, LinkSignal::Failed),
            _ => {}
        }
        self.end(fx)
    }

    pub(super) fn on_request_failed_in_transfer(
        &mut self,
        request: &AriRequest,
        fx: &mut Effects,
    ) -> Flow {
        let Phase::Transferring(transfer) = &self.phase else {
            return Flow::Continue;
        };
        let concerns_target = match (transfer, request) {
            (Transfer::Blind { target, .. }, AriRequest::CreateChannel { channel, .. })
            | (Transfer::Blind { target, .. }, AriRequest::Dial { channel, .. }) => {
                channel == target
            }
            (Transfer::Attended { newcomer, .. }, AriRequest::AddToBridge { channels, .. }) => {
                channels.contains(newcomer)
            }
            (Transfer::Remote { link, .. }, AriRequest::CreateChannel { channel, .. })
            | (Transfer::Remote { link, .. }, AriRequest::Dial { channel, .. }) => channel == link,
            (Transfer::Remote { link, .. }, AriRequest::AddToBridge { channels, .. }) => {
                channels.contains(link)
            }
            (
                Transfer::Linked {
                    link: Some(link), ..
                },
                AriRequest::Answer { channel },
            ) => channel == link,
            (
                Transfer::Linked {
                    link: Some(link), ..
                },
                AriRequest::AddToBridge { channels, .. },
            ) => channels.contains(link),
            _ => false,
        };
        match (transfer, concerns_target) {
            (Transfer::Blind { target, .. }, true) => {
                let channel = target.clone();
                let cause = HangupCause::UNALLOCATED;
                fx.request(self, AriRequest::Hangup { channel, cause });
                self.blind_failed(cause, fx)
            }
            (Transfer::Attended { .. }, true) => self.attended_failed(true, fx),
            (Transfer::Remote { .. }, true) => self.remote_failed(fx),
            (Transfer::Linked { .. }, true) => self.linked_failed(fx),
            // A request from before the transfer (or a cleanup) failed: nothing to undo.
            _ => Flow::Continue,
        }
    }
}
