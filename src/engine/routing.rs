//! Call routing (R1–R3): a caller entered the app, the engine dials the routed destination and bridges the
//! two legs on answer.
//!
//! ```text
//!   caller A --(StasisStart)--> Dialing --(callee answers)--> Connected --(either hangs up)--> ended
//!                                  |
//!                                  +--(busy, rejected, unreachable, no answer, caller cancels)--> ended
//! ```
//!
//! Every input in every phase has one outcome:
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
//! | Connected | either leg hangs up                    | hang up the other, destroy the bridge → ended               |
//! | Connected | a request of the call failed           | hang up both, destroy the bridge → ended                    |
//! | any       | a hangup or bridge removal failed 404  | nothing: it is already gone                                 |

use crate::ari::models::{Channel, Event};
use crate::ari::request::{AriRequest, HangupCause};

use super::timers::{TimerKind, Timers};
use super::{CallKey, Effects, Millis, NodeName, DIALED_LEG_ARG, TRANSFER_HANDLING_VAR};

/// Where a call stands, for status reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    Dialing,
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Caller,
    Callee,
}

/// Whether a call goes on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Ended,
}

#[derive(Debug)]
enum Phase {
    Dialing {
        ring_deadline: Millis,
        /// The cause a Dial failure status implies, used if the callee's own hangup carries none.
        failure: Option<HangupCause>,
    },
    Connected,
}

/// A two-party call: the caller that entered the app and the callee the engine dialed.
#[derive(Debug)]
pub struct Call {
    pub key: CallKey,
    pub node: NodeName,
    pub caller: String,
    pub callee: String,
    bridge: String,
    caller_is_pjsip: bool,
    phase: Phase,
}

impl Call {
    pub fn new(
        key: CallKey,
        node: NodeName,
        caller: &Channel,
        callee: String,
        bridge: String,
    ) -> Call {
        Call {
            key,
            node,
            caller: caller.id.clone(),
            callee,
            bridge,
            caller_is_pjsip: caller.technology() == "PJSIP",
            phase: Phase::Dialing {
                ring_deadline: 0,
                failure: None,
            },
        }
    }

    pub fn phase(&self) -> CallPhase {
        match self.phase {
            Phase::Dialing { .. } => CallPhase::Dialing,
            Phase::Connected => CallPhase::Connected,
        }
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn role_of(&self, channel: &str) -> Role {
        if channel == self.callee {
            Role::Callee
        } else {
            Role::Caller
        }
    }

    /// The legs whose absence after a re-sync means they hung up unseen. A callee still being dialed may
    /// not exist yet (its create request can be queued), so it is only checked once connected.
    pub fn legs_to_check_after_sync(&self) -> Vec<(Role, String)> {
        let mut legs = vec![(Role::Caller, self.caller.clone())];
        if matches!(self.phase, Phase::Connected) {
            legs.push((Role::Callee, self.callee.clone()));
        }
        legs
    }

    /// Puts the caller in ari-only transfer mode, rings it, and dials `dial`.
    pub fn start(&mut self, dial: &str, fx: &mut Effects) {
        let ring_deadline = fx.now + fx.config.ring_timeout;
        self.phase = Phase::Dialing {
            ring_deadline,
            failure: None,
        };
        fx.timers
            .arm(ring_deadline, self.key, TimerKind::RingTimeout);
        if self.caller_is_pjsip {
            fx.request(
                self,
                AriRequest::SetVariable {
                    channel: self.caller.clone(),
                    name: TRANSFER_HANDLING_VAR.to_owned(),
                    value: "ari-only".to_owned(),
                },
            );
        }
        fx.request(
            self,
            AriRequest::Ring {
                channel: self.caller.clone(),
            },
        );
        let variables = if dial.starts_with("PJSIP/") {
            vec![(TRANSFER_HANDLING_VAR.to_owned(), "ari-only".to_owned())]
        } else {
            vec![]
        };
        fx.request(
            self,
            AriRequest::CreateChannel {
                channel: self.callee.clone(),
                endpoint: dial.to_owned(),
                app_args: DIALED_LEG_ARG.to_owned(),
                originator: Some(self.caller.clone()),
                variables,
            },
        );
        // The engine's own deadline ends the ring; Asterisk's dial timeout is only a safety net in case this
        // service is gone by then.
        let safety_net = (fx.config.ring_timeout / 1000) as u32 + 5;
        fx.request(
            self,
            AriRequest::Dial {
                channel: self.callee.clone(),
                caller: Some(self.caller.clone()),
                timeout_secs: safety_net,
            },
        );
    }

    pub fn on_event(&mut self, role: Role, event: &Event, fx: &mut Effects) -> Flow {
        match event {
            // A created channel is in the app (StasisStart) from the start; it answers when it goes Up.
            Event::ChannelStateChange(e) if role == Role::Callee && e.channel.state == "Up" => {
                self.on_callee_answered(fx)
            }
            Event::Dial(dial) if role == Role::Callee => {
                if dial.dialstatus == "ANSWER" {
                    return self.on_callee_answered(fx);
                }
                if let Phase::Dialing { failure, .. } = &mut self.phase {
                    if let Some(cause) = dial_failure_cause(&dial.dialstatus) {
                        *failure = Some(cause);
                    }
                }
                Flow::Continue
            }
            Event::ChannelHangupRequest(e) => self.on_leg_gone(role, e.cause.unwrap_or(0), fx),
            Event::ChannelDestroyed(e) => self.on_leg_gone(role, e.cause, fx),
            Event::StasisEnd(_) => self.on_leg_gone(role, 0, fx),
            _ => Flow::Continue,
        }
    }

    fn on_callee_answered(&mut self, fx: &mut Effects) -> Flow {
        let Phase::Dialing { ring_deadline, .. } = self.phase else {
            return Flow::Continue;
        };
        fx.timers
            .cancel(ring_deadline, self.key, TimerKind::RingTimeout);
        self.phase = Phase::Connected;
        tracing::info!(call = %self.key, "callee answered; bridging");
        fx.request(
            self,
            AriRequest::Answer {
                channel: self.caller.clone(),
            },
        );
        fx.request(
            self,
            AriRequest::CreateBridge {
                bridge: self.bridge.clone(),
                name: self.key.to_string(),
            },
        );
        fx.request(
            self,
            AriRequest::AddToBridge {
                bridge: self.bridge.clone(),
                channels: vec![self.caller.clone(), self.callee.clone()],
            },
        );
        Flow::Continue
    }

    /// A leg hung up (or vanished). `cause` is its Q.850 cause, 0 when unknown.
    pub fn on_leg_gone(&mut self, role: Role, cause: i32, fx: &mut Effects) -> Flow {
        tracing::info!(call = %self.key, ?role, cause, "leg hung up");
        match (&self.phase, role) {
            (Phase::Dialing { failure, .. }, Role::Callee) => {
                let cause = match cause {
                    0 | 16 => failure.unwrap_or(HangupCause::NORMAL_CLEARING),
                    cause => HangupCause(cause),
                };
                self.hang_up(Role::Caller, cause, fx);
            }
            (Phase::Dialing { .. }, Role::Caller) => {
                self.hang_up(Role::Callee, HangupCause::NORMAL_CLEARING, fx);
            }
            (Phase::Connected, gone) => {
                let other = match gone {
                    Role::Caller => Role::Callee,
                    Role::Callee => Role::Caller,
                };
                self.hang_up(other, HangupCause::NORMAL_CLEARING, fx);
            }
        }
        self.end(fx)
    }

    pub fn on_ring_timeout(&mut self, fx: &mut Effects) -> Flow {
        if !matches!(self.phase, Phase::Dialing { .. }) {
            return Flow::Continue;
        }
        tracing::info!(call = %self.key, "no answer before the ring timeout");
        self.hang_up(Role::Callee, HangupCause::NO_ANSWER, fx);
        self.hang_up(Role::Caller, HangupCause::NO_ANSWER, fx);
        self.end(fx)
    }

    /// An essential request failed: the call cannot go on, so both legs are released with a cause that
    /// tells the caller why, instead of leaving anyone in silence.
    pub fn on_request_failed(
        &mut self,
        request: &AriRequest,
        status: Option<u16>,
        fx: &mut Effects,
    ) -> Flow {
        let cause = match request {
            // Setting the transfer mode is best effort: the call works without it.
            AriRequest::SetVariable { .. } => return Flow::Continue,
            // Asterisk could not create a channel for the dial string: it names no endpoint, or one with
            // no contact (both answer 500 "Allocation failed"). The caller hears 404.
            AriRequest::CreateChannel { .. } if status.is_some() => HangupCause::UNALLOCATED,
            _ if matches!(self.phase, Phase::Dialing { .. }) => HangupCause::CONGESTION,
            _ => HangupCause::FAILURE,
        };
        self.hang_up(Role::Callee, cause, fx);
        self.hang_up(Role::Caller, cause, fx);
        self.end(fx)
    }

    fn hang_up(&self, role: Role, cause: HangupCause, fx: &mut Effects) {
        let channel = match role {
            Role::Caller => self.caller.clone(),
            Role::Callee => self.callee.clone(),
        };
        fx.request(self, AriRequest::Hangup { channel, cause });
    }

    /// Destroys the bridge if it was created and ends the call.
    fn end(&mut self, fx: &mut Effects) -> Flow {
        if matches!(self.phase, Phase::Connected) {
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
        if let Phase::Dialing { ring_deadline, .. } = self.phase {
            timers.cancel(ring_deadline, self.key, TimerKind::RingTimeout);
        }
    }
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
