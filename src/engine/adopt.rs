//! What an earlier run left behind (S3): the app stopped (a crash, a restart, a deploy) while calls were up.
//!
//! Asterisk keeps the channels in the Stasis application when its websocket goes: the calls that were
//! connected go on talking in their bridges, and the next run's websocket receives their events. At every
//! re-sync (the first one after start-up included) the engine looks at the channels of its application and
//! the bridges named after it that no call of this run knows, and takes them over:
//!
//! | left in Asterisk                                     | outcome                                                   |
//! |------------------------------------------------------|-----------------------------------------------------------|
//! | two channels of the app talking in a bridge          | adopted as a connected call: hangups, REFERs and feature codes work as for any call; music on hold is stopped and a REFER left pending is told 503 (both no-ops if there is none) |
//! | one channel of the app alone in a bridge (its peer left meanwhile) | hung up (Asterisk tells a pending REFER 503), the bridge destroyed |
//! | an empty bridge named after the app                   | destroyed                                                 |
//! | a channel of the app in no bridge (a call still ringing, a transfer under way) | hung up, unless a call of this run claims it within [`STRAY_GRACE`] (its StasisStart may still be queued behind the re-sync); a REFER on it meanwhile is told 503 |
//! | three channels of the app in a bridge (a three-way)   | adopted as a three-way call: when one leaves, the other two stay connected |
//! | a bridge of four channels or more                     | left as it is (logged): the app makes none                |
//!
//! Only what Asterisk shows is known: which transfer was under way is not, so a transfer in flight at the
//! restart does not finish. An attended move in flight rolls back (both calls adopted, the REFER told 503);
//! the legs of a blind transfer or a feature-code consultation in flight are hung up.

use std::collections::HashSet;

use crate::ari::models::{Bridge, Channel};
use crate::ari::request::{AriRequest, HangupCause, TransferProgress};

use super::api::Note;
use super::routing::{Call, Flow};
use super::timers::TimerKind;
use super::{CallKey, Engine, Millis, NodeName, Output, DIALED_LEG_ARG};

/// How long a channel of the app found in no bridge at a re-sync may take to be claimed by a call of this
/// run before it is taken for a leftover and hung up.
pub const STRAY_GRACE: Millis = 2_000;

/// The key the engine's own deadlines (not a call's) are armed under; calls are numbered from 1.
pub(super) const ENGINE_TIMERS: CallKey = CallKey(0);

impl Engine {
    /// Takes over what the app's Stasis application on `node` holds that no call of this run knows.
    pub(super) fn adopt_leftovers(
        &mut self,
        now: Millis,
        node: &NodeName,
        channels: &[Channel],
        bridges: &[Bridge],
        out: &mut Vec<Output>,
    ) {
        let strangers: Vec<&Channel> = channels
            .iter()
            .filter(|c| {
                c.stasis_app()
                    .is_some_and(|(app, _)| app == self.config.app)
            })
            .filter(|c| self.index.call_of(node, &c.id).is_none())
            .collect();
        let stranger = |id: &str| strangers.iter().copied().find(|c| c.id == id);
        let mut bridged = HashSet::new();
        // This run's own bridges are the re-sync's business (Engine::on_synced), not leftovers.
        let this_run = format!("{}-", self.config.instance);
        for bridge in bridges {
            if bridge.id.starts_with(&this_run)
                || bridge
                    .channels
                    .iter()
                    .any(|id| self.index.call_of(node, id).is_some())
                || self.calls.values().any(|call| call.owns_bridge(&bridge.id))
            {
                continue;
            }
            let members: Vec<&Channel> = bridge
                .channels
                .iter()
                .filter_map(|id| stranger(id))
                .collect();
            bridged.extend(bridge.channels.iter().map(String::as_str));
            let named_ours = bridge.name.starts_with(&format!("{}/", self.config.app));
            match members[..] {
                _ if members.len() < bridge.channels.len() => {
                    tracing::info!(bridge = %bridge.id, "a bridge with channels of other applications: left alone");
                }
                [_, _] | [_, _, _] => self.adopt(now, node, &members, &bridge.id, out),
                [lone] => {
                    tracing::info!(bridge = %bridge.id, channel = %lone.id, "a channel an earlier run left alone in a bridge: hanging it up");
                    self.hang_up_leftover(node, &lone.id, out);
                    self.destroy_leftover(node, &bridge.id, out);
                }
                [] if named_ours => {
                    tracing::info!(bridge = %bridge.id, "destroying an empty bridge an earlier run left");
                    self.destroy_leftover(node, &bridge.id, out);
                }
                [] => {}
                _ => {
                    tracing::warn!(bridge = %bridge.id, channels = members.len(), "a bridge of four channels or more an earlier run left: left as it is");
                }
            }
        }
        let deadline = now + STRAY_GRACE;
        let strays: Vec<(NodeName, String, Millis)> = strangers
            .iter()
            .filter(|c| !bridged.contains(c.id.as_str()))
            .map(|c| (node.clone(), c.id.clone(), deadline))
            .collect();
        if !strays.is_empty() {
            self.strays.extend(strays);
            self.timers.arm(deadline, ENGINE_TIMERS, TimerKind::Strays);
        }
    }

    /// Channels an earlier run connected (two, or three in a three-way) become a call of this run, the
    /// caller (a leg the app did not dial) first.
    fn adopt(
        &mut self,
        now: Millis,
        node: &NodeName,
        members: &[&Channel],
        bridge: &str,
        out: &mut Vec<Output>,
    ) {
        let dialed = |c: &&Channel| {
            c.stasis_app()
                .is_some_and(|(_, args)| args == DIALED_LEG_ARG)
        };
        let mut members = members.to_vec();
        // Stable: the legs keep the bridge's order otherwise.
        members.sort_by_key(|c| dialed(c));
        let (caller, callee, third) = (members[0], members[1], members.get(2).copied());
        let key = self.new_key();
        let base = format!("{}-{}", self.config.instance, key.0);
        let callee_endpoint = callee.endpoint().unwrap_or_default();
        let account = self.config.accounts.of_call(caller, &callee_endpoint);
        let metaflows = self.config.metaflows.for_caller(caller, account.as_deref());
        let ids = (bridge, base);
        let mut call = Call::adopted(key, node.clone(), [caller, callee], third, ids, metaflows);
        call.account = account;
        call.created = now;
        tracing::info!(call = %key, %bridge, caller = %caller.id, callee = %callee.id, "adopting a call an earlier run connected");
        for leg in call.channels() {
            self.index.insert(node, &leg, key);
        }
        self.calls.insert(key, call);
        // A party put on hold by a feature-code transfer that had not moved on yet hears music no more;
        // a REFER pending (only SIP legs have them) is told 503.
        let reports: Vec<AriRequest> = members
            .iter()
            .flat_map(|c| {
                let stop = AriRequest::StopMoh {
                    channel: c.id.clone(),
                };
                let report = AriRequest::TransferProgress {
                    channel: c.id.clone(),
                    state: TransferProgress::Unavailable,
                };
                std::iter::once(stop).chain((c.technology() == "PJSIP").then_some(report))
            })
            .collect();
        self.with_call(now, key, out, |call, fx| {
            fx.note(call.key, Note::CallCreated);
            for request in reports {
                fx.request(call, request);
            }
            Flow::Continue
        });
        for channel in members {
            self.note_call_id(node, channel);
        }
    }

    /// The deadline of the strays found at re-syncs: those still claimed by no call are hung up.
    pub(super) fn on_strays_due(&mut self, now: Millis, out: &mut Vec<Output>) {
        let (due, waiting) = std::mem::take(&mut self.strays)
            .into_iter()
            .partition(|(_, _, deadline)| *deadline <= now);
        self.strays = waiting;
        for (node, channel, _) in due {
            if self.index.call_of(&node, &channel).is_none() {
                tracing::info!(%channel, "a channel an earlier run left in no bridge: hanging it up");
                self.hang_up_leftover(&node, &channel, out);
            }
        }
    }

    /// Whether `channel` was found in no bridge at a re-sync and no call has claimed it yet.
    pub(super) fn is_stray(&self, node: &NodeName, channel: &str) -> bool {
        self.strays
            .iter()
            .any(|(n, id, _)| n == node && id == channel)
            && self.index.call_of(node, channel).is_none()
    }

    fn destroy_leftover(&mut self, node: &NodeName, bridge: &str, out: &mut Vec<Output>) {
        let bridge = bridge.to_owned();
        self.one_off(node.clone(), AriRequest::DestroyBridge { bridge }, out);
    }

    fn hang_up_leftover(&mut self, node: &NodeName, channel: &str, out: &mut Vec<Output>) {
        let hangup = AriRequest::Hangup {
            channel: channel.to_owned(),
            cause: HangupCause::NORMAL_CLEARING,
        };
        self.one_off(node.clone(), hangup, out);
    }
}
