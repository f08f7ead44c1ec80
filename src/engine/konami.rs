//! Feature-code transfers (D1–D7): the attended transfer a party starts by pressing `*2` + an extension
//! (the `transfer` module of [`super::metaflow`]), as a phase of a connected call.
//!
//! Names: P the transferor (who pressed the code), O the transferee (the other party), T the target,
//! bridge1 the call's bridge, bridge2 the consultation bridge. On the code, P leaves bridge1 for bridge2, O
//! hears music on hold, P hears ringback, T is dialed.
//!
//! | stage      | input                             | outcome                                                     |
//! |------------|-----------------------------------|-------------------------------------------------------------|
//! | Ringing    | T answers                         | ringback stops, T joins bridge2 → Talking (P and T talk)    |
//! | Ringing    | T answers after P hung up (D3)    | T joins O in bridge1, music stops → Connected (O, T)        |
//! | Ringing    | T fails, ring timeout (D4)        | P back in bridge1 with O, music stops → Connected (P, O)    |
//! | Ringing    | T fails after P hung up (D3)      | P's phone is called back (Recalling)                       |
//! | Ringing    | P hangs up (D3)                   | the transfer goes on                                        |
//! | Ringing    | P presses complete                | P is hung up: as "P hangs up"                               |
//! | any but Recalling, RecallPause | P presses takeback or resume (D5, D7) | T hung up, P back with O → Connected (P, O) |
//! | Talking    | P hangs up (D2), P presses complete (D6) | T joins O in bridge1, music stops → Connected (O, T); P hung up |
//! | Talking    | P presses swap (D6)               | T held in bridge2, P back with O → Swapped                  |
//! | Swapped    | P presses swap                    | O held, P back with T → Talking                             |
//! | Swapped    | P hangs up, P presses complete    | as in Talking                                               |
//! | Talking, Swapped | P presses three-way (D6)    | all three in bridge1, nobody held → Threeway                |
//! | Talking, Swapped | T hangs up                  | P with O → Connected (P, O)                                 |
//! | Ringing    | O hangs up                        | T and P hung up → ended                                     |
//! | Talking, Swapped | O hangs up                  | P with T in bridge2 → Connected (P, T)                      |
//! | Recalling  | the recall answers                | it joins O in bridge1, music stops → Connected (O, recall)  |
//! | Recalling  | the recall fails or rings out     | retries left: RecallPause; else O hung up → ended           |
//! | RecallPause | the pause is over                | P's phone is called again → Recalling                       |
//! | Recalling, RecallPause | O hangs up            | the recall hung up → ended                                  |
//! | any        | a request of the transfer fails   | as takeback (best-effort ones, like the music, change nothing; after P hung up, nothing) |
//!
//! Threeway: when one of the three hangs up, the other two stay connected → Connected.

use crate::ari::request::{AriRequest, HangupCause};

use super::api::{self, Note, Source, TransferKind};
use super::metaflow::{CommandBuffer, TransferFlow};
use super::routing::{bridge_name, Call, Flow, Leg, Phase};
use super::timers::{TimerKind, Timers};
use super::{route, CallKey, Effects, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Ringing,
    Talking,
    Swapped,
    Recalling,
    RecallPause,
}

#[derive(Debug)]
pub(super) struct Konami {
    /// P's party index; O is the other one.
    transferor: usize,
    /// T, or the recall of P; `None` between recalls.
    target: Option<String>,
    consult_bridge: String,
    ringback: String,
    flow: TransferFlow,
    stage: Stage,
    /// T's or a recall's ring timeout, or the end of the pause before a recall.
    deadline: Option<(Millis, TimerKind)>,
    transferor_gone: bool,
    dialed: bool,
    commands: CommandBuffer,
    /// The resume code as P dials it, when one is configured.
    resume_dtmf: Option<String>,
    /// P's endpoint, to call P back (D3).
    recall: Option<String>,
    recalls_left: u32,
    /// Names the recall channels.
    base: String,
}

/// What a feature-code transfer needs at its start.
pub(super) struct KonamiPlan {
    pub transferor: usize,
    pub exten: String,
    pub flow: TransferFlow,
    pub resume_dtmf: Option<String>,
    /// P's endpoint, to call P back (D3).
    pub recall: Option<String>,
    /// Who asked: a feature code, or the API.
    pub source: Source,
    /// Channel variables for the target's channel (an API transfer's `variables`).
    pub variables: Vec<(String, String)>,
}

impl Konami {
    pub fn channels(&self) -> Vec<String> {
        self.target.iter().cloned().collect()
    }

    pub fn leg_of(&self, channel: &str) -> Option<Leg> {
        (self.target.as_deref() == Some(channel)).then_some(Leg::Target)
    }

    /// The target or recall being created, while it has not entered the app.
    pub fn not_in_the_app_yet(&self) -> Option<&str> {
        self.target.as_deref().filter(|_| !self.dialed)
    }

    pub fn cancel_timer(&self, call: CallKey, timers: &mut Timers) {
        if let Some((at, kind)) = self.deadline {
            timers.cancel(at, call, kind);
        }
    }

    /// The bridge `leg` of the call (whose bridge is `bridge`) is meant to be in during this transfer.
    pub fn belongs_in<'a>(&'a self, leg: Leg, bridge: &'a str) -> Option<&'a str> {
        let consult = self.consult_bridge.as_str();
        match (leg, self.stage) {
            (Leg::Party(p), Stage::Swapped) if p == self.transferor => Some(bridge),
            (Leg::Party(p), _) if p == self.transferor => Some(consult),
            (Leg::Party(_), _) => Some(bridge),
            (Leg::Target, Stage::Talking | Stage::Swapped) => Some(consult),
            _ => None,
        }
    }

    /// Whether `leg` of the call is meant to hear music on hold: O, or T while P talks to O (swapped).
    pub fn holds(&self, leg: Leg) -> bool {
        match (leg, self.stage) {
            (Leg::Target, Stage::Swapped) => true,
            (Leg::Party(_), Stage::Swapped) => false,
            (Leg::Party(p), _) => p != self.transferor,
            _ => false,
        }
    }

    pub fn owns_bridge(&self, bridge: &str) -> bool {
        self.consult_bridge == bridge
    }

    /// Whether a takeback (or an API cancel) applies now: not once P left, nor during a recall.
    pub fn can_take_back(&self) -> bool {
        !self.transferor_gone && !matches!(self.stage, Stage::Recalling | Stage::RecallPause)
    }

    /// Whether an API complete applies now: P is still consulting (ringing, talking or swapped).
    pub fn can_complete(&self) -> bool {
        self.can_take_back()
    }

    /// For a target or recall not dialed yet: marks it dialed, and gives the party on whose behalf it is
    /// dialed (P for the target, O for a recall).
    pub fn dial_once(&mut self) -> Option<usize> {
        if std::mem::replace(&mut self.dialed, true) {
            return None;
        }
        Some(match self.stage {
            Stage::Recalling => 1 - self.transferor,
            _ => self.transferor,
        })
    }
}

impl Call {
    fn konami(&mut self) -> Option<&mut Konami> {
        match &mut self.phase {
            Phase::Konami(konami) => Some(konami),
            _ => None,
        }
    }

    /// The transferor pressed the transfer code: O is held, P hears ringback in bridge2, T is dialed. A
    /// misdial (no route for the extension) changes nothing.
    pub(super) fn start_konami(&mut self, plan: KonamiPlan, fx: &mut Effects) -> Flow {
        let Some(dial) = route(fx.config, &plan.exten) else {
            tracing::info!(call = %self.key, exten = %plan.exten, "feature code transfer: no route for the extension");
            return Flow::Continue;
        };
        let p = plan.transferor;
        let (transferor, transferee) = (self.party(p).to_owned(), self.other_party(p).to_owned());
        let base = self.new_ids();
        let konami = Konami {
            transferor: p,
            target: Some(format!("{base}-t")),
            consult_bridge: format!("{base}-bridge"),
            ringback: format!("{base}-ring"),
            stage: Stage::Ringing,
            deadline: None,
            transferor_gone: false,
            dialed: false,
            commands: CommandBuffer::default(),
            resume_dtmf: plan.resume_dtmf,
            recalls_left: plan.flow.recall_retries,
            recall: plan.recall,
            flow: plan.flow,
            base,
        };
        tracing::info!(call = %self.key, exten = %plan.exten, %dial, source = ?plan.source, "attended transfer through a consultation");
        fx.note(
            self.key,
            Note::Started {
                source: plan.source,
                kind: TransferKind::Attended,
                target: plan.exten.clone(),
                transferor: p,
            },
        );
        fx.request(
            self,
            AriRequest::CreateBridge {
                bridge: konami.consult_bridge.clone(),
                name: bridge_name(fx, self.key, "-consult"),
            },
        );
        // One addChannel moves P out of bridge1 into bridge2.
        self.add_to_bridge(konami.consult_bridge.clone(), vec![transferor.clone()], fx);
        self.hold(transferee, &konami.flow, fx);
        fx.request(
            self,
            AriRequest::PlayOnChannel {
                channel: transferor,
                playback: konami.ringback.clone(),
                media: konami.flow.ringback.clone(),
            },
        );
        let timeout = konami.flow.target_timeout;
        let target = konami.target.clone().unwrap_or_default();
        self.phase = Phase::Konami(Box::new(konami));
        self.ring_konami(target, (&dial, &plan.variables), p, timeout, fx);
        Flow::Continue
    }

    /// Creates `channel` towards `dial` for party `on_behalf_of`, ringing at most `timeout`.
    fn ring_konami(
        &mut self,
        channel: String,
        dial: (&str, &[(String, String)]),
        on_behalf_of: usize,
        timeout: Millis,
        fx: &mut Effects,
    ) {
        let deadline = self.ring(channel, dial, on_behalf_of, timeout, fx);
        if let Some(konami) = self.konami() {
            konami.dialed = false;
            konami.deadline = Some((deadline, TimerKind::RingTimeout));
        }
    }

    fn hold(&self, channel: String, flow: &TransferFlow, fx: &mut Effects) {
        let class = flow.moh.clone();
        fx.request(self, AriRequest::StartMoh { channel, class });
    }

    fn unhold(&self, channel: String, fx: &mut Effects) {
        fx.request(self, AriRequest::StopMoh { channel });
    }

    /// Leaves the feature-code transfer: its deadline cancelled, back to Connected. Whoever is still in
    /// bridge2 is moved out before [`Call::destroy_consult_bridge`].
    fn finish_konami(&mut self, fx: &mut Effects) -> Option<Konami> {
        let Phase::Konami(konami) = std::mem::replace(&mut self.phase, Phase::Connected) else {
            return None;
        };
        konami.cancel_timer(self.key, fx.timers);
        Some(*konami)
    }

    fn destroy_consult_bridge(&self, konami: &Konami, fx: &mut Effects) {
        let bridge = konami.consult_bridge.clone();
        fx.request(self, AriRequest::DestroyBridge { bridge });
    }

    fn stop_ringback(&self, konami: &Konami, fx: &mut Effects) {
        if konami.stage == Stage::Ringing && !konami.transferor_gone {
            let playback = konami.ringback.clone();
            fx.request(self, AriRequest::StopPlayback { playback });
        }
    }

    /// `joined` (T, or a recall) takes P's place beside O in bridge1; whoever was held hears no more music.
    fn hand_over(&mut self, joined: String, fx: &mut Effects) -> Flow {
        let Some(konami) = self.finish_konami(fx) else {
            return Flow::Continue;
        };
        fx.note(self.key, Note::Completed);
        let p = konami.transferor;
        self.stop_ringback(&konami, fx);
        let held = match konami.stage {
            Stage::Swapped => joined.clone(),
            _ => self.other_party(p).to_owned(),
        };
        self.unhold(held, fx);
        self.add_to_bridge(self.bridge.clone(), vec![joined.clone()], fx);
        self.destroy_consult_bridge(&konami, fx);
        let transferor = std::mem::replace(&mut self.parties[p], joined);
        if !konami.transferor_gone {
            let cause = HangupCause::NORMAL_CLEARING;
            fx.request(
                self,
                AriRequest::Hangup {
                    channel: transferor,
                    cause,
                },
            );
        }
        tracing::info!(call = %self.key, "feature code transfer completed");
        Flow::Continue
    }

    /// Takeback: T (if any) is hung up, and P talks with O again; `outcome` is what the transfer's record
    /// says (cancelled, or failed when the target did).
    pub(super) fn take_back(&mut self, outcome: Note, fx: &mut Effects) -> Flow {
        let Some(konami) = self.finish_konami(fx) else {
            return Flow::Continue;
        };
        fx.note(self.key, outcome);
        self.stop_ringback(&konami, fx);
        if let Some(channel) = konami.target.clone() {
            let cause = HangupCause::NORMAL_CLEARING;
            fx.request(self, AriRequest::Hangup { channel, cause });
        }
        let p = konami.transferor;
        if konami.stage != Stage::Swapped {
            self.unhold(self.other_party(p).to_owned(), fx);
            self.add_to_bridge(self.bridge.clone(), vec![self.party(p).to_owned()], fx);
        }
        self.destroy_consult_bridge(&konami, fx);
        tracing::info!(call = %self.key, "feature code transfer taken back");
        Flow::Continue
    }

    /// O hung up: P keeps talking with T if they were talking; otherwise the call is over.
    fn transferee_gone(&mut self, fx: &mut Effects) -> Flow {
        fx.note(self.key, Note::Failed("transferee_hangup"));
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let talking =
            matches!(konami.stage, Stage::Talking | Stage::Swapped) && !konami.transferor_gone;
        let target = konami.target.clone();
        let p = konami.transferor;
        match (talking, target) {
            (true, Some(target)) => {
                let Some(konami) = self.finish_konami_keeping_bridge2(fx) else {
                    return Flow::Continue;
                };
                if konami.stage == Stage::Swapped {
                    self.unhold(target.clone(), fx);
                    self.add_to_bridge(
                        konami.consult_bridge.clone(),
                        vec![self.party(p).to_owned()],
                        fx,
                    );
                }
                let old_bridge = std::mem::replace(&mut self.bridge, konami.consult_bridge);
                fx.request(self, AriRequest::DestroyBridge { bridge: old_bridge });
                self.parties[1 - p] = target;
                Flow::Continue
            }
            (_, target) => {
                let Some(konami) = self.finish_konami(fx) else {
                    return Flow::Continue;
                };
                let mut leftovers: Vec<String> = target.into_iter().collect();
                if !konami.transferor_gone {
                    leftovers.push(self.party(p).to_owned());
                }
                for channel in leftovers {
                    let cause = HangupCause::NORMAL_CLEARING;
                    fx.request(self, AriRequest::Hangup { channel, cause });
                }
                self.destroy_consult_bridge(&konami, fx);
                self.end(fx)
            }
        }
    }

    /// Like [`Call::finish_konami`], but bridge2 stays: it becomes the call's bridge.
    fn finish_konami_keeping_bridge2(&mut self, fx: &mut Effects) -> Option<Konami> {
        let Phase::Konami(konami) = std::mem::replace(&mut self.phase, Phase::Connected) else {
            return None;
        };
        konami.cancel_timer(self.key, fx.timers);
        Some(*konami)
    }

    /// T (or a recall) is gone without having joined: back to O, or, with P gone, P's phone is called back.
    fn konami_target_failed(&mut self, cause: HangupCause, fx: &mut Effects) -> Flow {
        let key = self.key;
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        if let Some((at, kind)) = konami.deadline.take() {
            fx.timers.cancel(at, key, kind);
        }
        konami.target = None;
        let (stage, gone) = (konami.stage, konami.transferor_gone);
        fx.note(key, Note::Failed(api::reason(cause)));
        match stage {
            Stage::Ringing if gone => self.recall_or_release(cause, fx),
            Stage::Recalling => self.recall_or_release(cause, fx),
            Stage::Swapped => {
                if let Some(konami) = self.finish_konami(fx) {
                    self.destroy_consult_bridge(&konami, fx);
                }
                Flow::Continue
            }
            _ => self.take_back(Note::Failed(api::reason(cause)), fx),
        }
    }

    /// Calls P back after a pause, while retries are left; else O, alone, is hung up with `cause`.
    fn recall_or_release(&mut self, cause: HangupCause, fx: &mut Effects) -> Flow {
        let key = self.key;
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let first = konami.stage == Stage::Ringing;
        let p = konami.transferor;
        if konami.recall.is_some() && konami.recalls_left > 0 {
            konami.recalls_left -= 1;
            if first {
                // Asterisk calls the transferer back at once, and pauses between later tries.
                return self.on_recall_pause_over(fx);
            }
            konami.stage = Stage::RecallPause;
            let at = fx.now + konami.flow.recall_delay;
            konami.deadline = Some((at, TimerKind::RecallDelay));
            fx.timers.arm(at, key, TimerKind::RecallDelay);
            return Flow::Continue;
        }
        tracing::info!(call = %key, "feature code transfer failed after the transferor left; releasing the transferee");
        if let Some(konami) = self.finish_konami(fx) {
            self.destroy_consult_bridge(&konami, fx);
        }
        self.hang_up(1 - p, cause, fx);
        self.end(fx)
    }

    /// The pause before a recall is over (or the first recall is due): P's endpoint is dialed.
    pub(super) fn on_recall_pause_over(&mut self, fx: &mut Effects) -> Flow {
        let ring_timeout = fx.config.ring_timeout;
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        konami.deadline = None;
        let Some(endpoint) = konami.recall.clone() else {
            return Flow::Continue;
        };
        let attempt = konami.flow.recall_retries - konami.recalls_left;
        let channel = format!("{}-r{attempt}", konami.base);
        konami.stage = Stage::Recalling;
        konami.target = Some(channel.clone());
        let o = 1 - konami.transferor;
        tracing::info!(call = %self.key, %endpoint, attempt, "calling the transferor back");
        self.ring_konami(channel, (&endpoint, &[]), o, ring_timeout, fx);
        Flow::Continue
    }

    pub(super) fn on_konami_answered(&mut self, fx: &mut Effects) -> Flow {
        let key = self.key;
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let (Some(target), Stage::Ringing | Stage::Recalling) =
            (konami.target.clone(), konami.stage)
        else {
            return Flow::Continue;
        };
        if let Some((at, kind)) = konami.deadline.take() {
            fx.timers.cancel(at, key, kind);
        }
        if konami.stage == Stage::Recalling || konami.transferor_gone {
            return self.hand_over(target, fx);
        }
        konami.stage = Stage::Talking;
        fx.note(key, Note::Answered);
        let (ringback, bridge) = (konami.ringback.clone(), konami.consult_bridge.clone());
        fx.request(self, AriRequest::StopPlayback { playback: ringback });
        self.add_to_bridge(bridge, vec![target], fx);
        Flow::Continue
    }

    pub(super) fn on_konami_ring_timeout(&mut self, fx: &mut Effects) -> Flow {
        let Some(channel) = self.konami().and_then(|k| k.target.clone()) else {
            return Flow::Continue;
        };
        let cause = HangupCause::NO_ANSWER;
        fx.request(self, AriRequest::Hangup { channel, cause });
        self.konami_target_failed(cause, fx)
    }

    pub(super) fn on_leg_gone_in_konami(&mut self, leg: Leg, cause: i32, fx: &mut Effects) -> Flow {
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let p = konami.transferor;
        match leg {
            Leg::Target => {
                let cause = match cause {
                    0 => HangupCause::NORMAL_CLEARING,
                    cause => HangupCause(cause),
                };
                self.konami_target_failed(cause, fx)
            }
            Leg::Party(party) if party == p => {
                if konami.transferor_gone {
                    return Flow::Continue;
                }
                konami.transferor_gone = true;
                match (konami.stage, konami.target.clone()) {
                    (Stage::Talking | Stage::Swapped, Some(target)) => self.hand_over(target, fx),
                    _ => Flow::Continue,
                }
            }
            Leg::Party(_) => self.transferee_gone(fx),
            Leg::Replaced | Leg::Departing => Flow::Continue,
        }
    }

    /// A digit pressed during the transfer: from P, a consultation code, or nothing; from O, nothing.
    pub(super) fn on_konami_digit_from(
        &mut self,
        party: usize,
        digit: char,
        fx: &mut Effects,
    ) -> Flow {
        let Some(konami) = self.konami().filter(|k| k.transferor == party) else {
            return Flow::Continue;
        };
        let flow = &konami.flow;
        let resume = konami.resume_dtmf.clone().unwrap_or_default();
        let codes = [
            flow.takeback_dtmf.clone(),
            flow.complete_dtmf.clone(),
            flow.threeway_dtmf.clone(),
            flow.swap_dtmf.clone(),
            resume,
        ];
        let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
        let Some(code) = konami.commands.press(digit, &refs) else {
            return Flow::Continue;
        };
        let code = code.to_owned();
        let stage = konami.stage;
        let p = konami.transferor;
        let target = konami.target.clone();
        let consult_bridge = konami.consult_bridge.clone();
        let flow = konami.flow.clone();
        tracing::info!(call = %self.key, %code, ?stage, "consultation code");
        match (stage, target) {
            _ if code == codes[0] || code == codes[4] => self.take_back(Note::Cancelled, fx),
            _ if code == codes[1] => self.complete_konami(fx),
            (Stage::Talking | Stage::Swapped, Some(target)) if code == codes[2] => {
                let Some(konami) = self.finish_konami(fx) else {
                    return Flow::Continue;
                };
                let held = match konami.stage {
                    Stage::Swapped => target.clone(),
                    _ => self.other_party(p).to_owned(),
                };
                self.unhold(held, fx);
                let mut joining = vec![target.clone()];
                if konami.stage == Stage::Talking {
                    joining.insert(0, self.party(p).to_owned());
                }
                self.add_to_bridge(self.bridge.clone(), joining, fx);
                self.destroy_consult_bridge(&konami, fx);
                fx.note(self.key, Note::Completed);
                self.phase = Phase::Threeway { third: target };
                Flow::Continue
            }
            (Stage::Talking, Some(target)) if code == codes[3] => {
                self.hold(target, &flow, fx);
                self.add_to_bridge(self.bridge.clone(), vec![self.party(p).to_owned()], fx);
                self.unhold(self.other_party(p).to_owned(), fx);
                self.set_stage(Stage::Swapped);
                Flow::Continue
            }
            (Stage::Swapped, Some(target)) if code == codes[3] => {
                self.hold(self.other_party(p).to_owned(), &flow, fx);
                self.add_to_bridge(consult_bridge, vec![self.party(p).to_owned()], fx);
                self.unhold(target, fx);
                self.set_stage(Stage::Talking);
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    /// Complete (the code, or the API): while T rings, P is hung up and T gets O when it answers (D3); once
    /// T talks, O and T are joined and P is hung up.
    pub(super) fn complete_konami(&mut self, fx: &mut Effects) -> Flow {
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let (stage, p, target) = (konami.stage, konami.transferor, konami.target.clone());
        match (stage, target) {
            (Stage::Ringing, _) => {
                let channel = self.party(p).to_owned();
                let cause = HangupCause::NORMAL_CLEARING;
                fx.request(self, AriRequest::Hangup { channel, cause });
                self.on_leg_gone_in_konami(Leg::Party(p), 16, fx)
            }
            (Stage::Talking | Stage::Swapped, Some(target)) => self.hand_over(target, fx),
            _ => Flow::Continue,
        }
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(konami) = self.konami() {
            konami.stage = stage;
        }
    }

    /// A request of the transfer failed: a target or recall that could not be created or dialed failed;
    /// anything else (a move, the consultation bridge) undoes the transfer.
    pub(super) fn on_request_failed_in_konami(
        &mut self,
        request: &AriRequest,
        fx: &mut Effects,
    ) -> Flow {
        let Some(konami) = self.konami() else {
            return Flow::Continue;
        };
        let about_target = match request {
            AriRequest::CreateChannel { channel, .. } | AriRequest::Dial { channel, .. } => {
                konami.target.as_deref() == Some(channel.as_str())
            }
            _ => false,
        };
        if about_target {
            let channel = konami.target.clone().unwrap_or_default();
            let cause = HangupCause::UNALLOCATED;
            fx.request(self, AriRequest::Hangup { channel, cause });
            return self.konami_target_failed(cause, fx);
        }
        match request {
            AriRequest::Hangup { .. } | AriRequest::DestroyBridge { .. } => Flow::Continue,
            // With P gone there is nobody to take back to: T's answer or failure decides.
            _ if konami.transferor_gone => Flow::Continue,
            _ => self.take_back(Note::Failed("error"), fx),
        }
    }

    /// In a three-way call, one of the three hung up: the other two stay connected.
    pub(super) fn on_leg_gone_in_threeway(&mut self, leg: Leg) -> Flow {
        let Phase::Threeway { third } = &self.phase else {
            return Flow::Continue;
        };
        let third = third.clone();
        match leg {
            Leg::Target => {}
            Leg::Party(gone) => self.parties[gone] = third,
            Leg::Replaced | Leg::Departing => return Flow::Continue,
        }
        self.phase = Phase::Connected;
        Flow::Continue
    }
}
