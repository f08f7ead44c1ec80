//! Attended transfers: which dialog a REFER's `Replaces` names, whether the transferer may replace it, and
//! how the two calls are joined (merged on one node, linked through a trunk across nodes).
//!
//! Asterisk resolves a Replaces to a channel itself only when the Call-ID and both tags match one of its
//! dialogs (RFC 3891), as its own transfers require. When it does not (stale or swapped tags, which some
//! phones send, or a dialog on another node), the engine's Call-ID index may stand in for it, but only for
//! a dialog that is provably the transferer's: the replaced leg's phone is the REFERing phone's endpoint.
//! Knowing a Call-ID is not enough to take over a call.
//!
//! | the Replaces                                            | outcome                                      |
//! |---------------------------------------------------------|----------------------------------------------|
//! | resolved by Asterisk to a party of another connected call | accepted (A1); merged or linked           |
//! | resolved by Asterisk to a trunk leg (both ends of a call between nodes share the Call-ID) | 503, nothing changes |
//! | not resolved; the Call-ID names a party of another connected call on a channel of the transferer's own endpoint, on this node or another (A2 swapped tags, A3) | accepted |
//! | not resolved; the Call-ID names a dialog of another phone (whatever its tags)         | 503, nothing changes (logged as refused) |
//! | the Call-ID names no connected call of this app (A4), or this very call | 503, nothing changes  |
//!
//! | any of the above, but the replaced dialog's call is another account's | 503, nothing changes  |

use crate::ari::models::ChannelTransfer;

use super::api::Source;
use super::events::{EventKind, Happened};
use super::routing::{Flow, Leg};
use super::{CallKey, Engine, Millis, NodeName, Output};

/// The call a REFER's `Replaces` names: R, party `party` of call `call` on `node`.
pub(super) struct Consult {
    node: NodeName,
    call: CallKey,
    party: usize,
    replaced: String,
}

impl Engine {
    /// Starts an attended transfer: finds the replaced dialog R by the rule above, and merges R's call
    /// into this one, or, when R is on another node, links the two calls through a trunk (A3). False (the
    /// REFER is told 503, nothing changes) if the Replaces names no dialog this transferer may replace.
    pub(super) fn start_attended(
        &mut self,
        now: Millis,
        node: &NodeName,
        key: CallKey,
        party: usize,
        transfer: &ChannelTransfer,
        out: &mut Vec<Output>,
    ) -> bool {
        match self.replaceable(node, key, transfer) {
            Some(consult) => self.join(now, node, (key, party), consult, Source::Refer, out),
            None => false,
        }
    }

    /// The API's attended transfer between two existing calls (`target_call`): party `party` of call
    /// `key` is the transferor, `replaced` (R) its leg in the other call `other`, whose other party joins
    /// the transferee, as an attended REFER would do, without a REFER to report to. Both calls must be
    /// connected and of the same account. False if they cannot be joined (the other call is not a
    /// connected two-party call, R is not one of its parties, or no trunk leads to its node).
    pub(super) fn join_calls(
        &mut self,
        now: Millis,
        key: CallKey,
        party: usize,
        (other, replaced): (CallKey, &str),
        out: &mut Vec<Output>,
    ) -> bool {
        let (Some(call), Some(consult)) = (self.calls.get(&key), self.calls.get(&other)) else {
            return false;
        };
        let (Some(Leg::Party(consult_party)), true, true, true) = (
            consult.leg_of(replaced),
            consult.is_idle_connected(),
            other != key,
            consult.account == call.account,
        ) else {
            return false;
        };
        let node = call.node.clone();
        let consult = Consult {
            node: consult.node.clone(),
            call: other,
            party: consult_party,
            replaced: replaced.to_owned(),
        };
        self.join(now, &node, (key, party), consult, Source::Api, out)
    }

    /// Joins the consult call into call `key` (party `party` the transferor): merged on one node, linked
    /// through a trunk across nodes.
    fn join(
        &mut self,
        now: Millis,
        node: &NodeName,
        transferor: (CallKey, usize),
        consult: Consult,
        origin: Source,
        out: &mut Vec<Output>,
    ) -> bool {
        if consult.node == *node {
            self.merge_consult(now, transferor, consult, origin, out);
            true
        } else {
            self.link_consult(now, node, transferor, consult, origin, out)
        }
    }

    /// The dialog the REFER's Replaces names, if the transferer may replace it: Asterisk's own
    /// resolution (not a trunk leg), else a channel with that Call-ID on any node (this one first) whose
    /// phone is the transferer's. Either way R must be a party of another connected call of this app.
    fn replaceable(
        &self,
        node: &NodeName,
        key: CallKey,
        transfer: &ChannelTransfer,
    ) -> Option<Consult> {
        let call_id = transfer
            .refer_to
            .requested_destination
            .protocol_id
            .as_deref()
            .unwrap_or_default();
        let account = self.calls.get(&key).and_then(|c| c.account.clone());
        let connected_party = |at: &NodeName, replaced: &str| {
            let other = self.index.call_of(at, replaced)?;
            let call = self.calls.get(&other)?;
            if call.account != account {
                tracing::warn!(call = %key, consult_call = %other, "attended transfer refused: the replaced dialog is another account's call");
                return None;
            }
            match call.leg_of(replaced) {
                Some(Leg::Party(party)) if other != key && call.is_idle_connected() => {
                    Some(Consult {
                        node: at.clone(),
                        call: other,
                        party,
                        replaced: replaced.to_owned(),
                    })
                }
                _ => None,
            }
        };
        if let Some(resolved) = &transfer.refer_to.destination_channel {
            if self.is_trunk_leg(node, resolved) {
                tracing::info!(call = %key, call_id, "attended transfer: the Replaces names a trunk leg, not a phone's dialog");
                return None;
            }
            tracing::info!(call = %key, call_id, by = "asterisk", "attended transfer: the replaced dialog");
            let consult = connected_party(node, &resolved.id);
            if consult.is_none() {
                tracing::info!(call = %key, call_id, "attended transfer: the replaced dialog is not a connected call of this app");
            }
            return consult;
        }
        let transferer = transfer.referred_by.source_channel.endpoint();
        let mut by_call_id = self.index.with_call_id(call_id).to_vec();
        by_call_id.sort_by_key(|(n, _)| n != node);
        let mut refused = false;
        for (at, replaced) in by_call_id {
            let owner = self.index.endpoint_of(&at, &replaced);
            if transferer.is_none() || owner != transferer.as_deref() {
                refused = true;
                continue;
            }
            if let Some(consult) = connected_party(&at, &replaced) {
                tracing::info!(call = %key, call_id, by = "call-id index", node = %at, "attended transfer: the replaced dialog");
                return Some(consult);
            }
        }
        if refused {
            tracing::warn!(
                call = %key,
                call_id,
                transferer = transferer.as_deref().unwrap_or("?"),
                "attended transfer refused: the Replaces names a dialog of another phone, and Asterisk did \
                 not match its tags"
            );
        } else {
            tracing::info!(call = %key, call_id, "attended transfer: the replaced dialog is not a connected call of this app");
        }
        None
    }

    /// Same node: the consult call is absorbed (its channels now belong to this call), and its other
    /// party moves into this call's bridge.
    fn merge_consult(
        &mut self,
        now: Millis,
        (key, party): (CallKey, usize),
        consult: Consult,
        origin: Source,
        out: &mut Vec<Output>,
    ) {
        // A transferer the consult call still gives a moment to hang up goes now: the call that would
        // have hung it up is about to be absorbed.
        self.with_call(now, consult.call, out, |call, fx| {
            call.release_transferer(fx)
        });
        // For apps the consult call ends here: its other party goes on in the transferee's call.
        let ended = vec![Happened::Call(EventKind::CallEnded)];
        self.publish(now, consult.call, ended, out);
        let Some(absorbed) = self.calls.remove(&consult.call) else {
            return;
        };
        absorbed.cancel_timers(&mut self.timers);
        for channel in absorbed.channels() {
            self.index.remove(&consult.node, &channel, consult.call);
        }
        out.push(Output::CallEnded { call: consult.call });
        let newcomer = absorbed.other_party(consult.party).to_owned();
        let identity = absorbed.identity_of(&newcomer);
        let old_bridge = absorbed.bridge().to_owned();
        self.with_call(now, key, out, |call, fx| {
            call.remember_identity(&newcomer, identity);
            call.start_attended(party, (consult.replaced, newcomer, old_bridge), origin, fx);
            Flow::Continue
        });
    }

    /// Another node: a link leg is dialed from this node through the trunk to the consult call's node,
    /// where it arrives with a token for an extension and takes R's place; here it takes the
    /// transferer's. False if no trunk leads there.
    fn link_consult(
        &mut self,
        now: Millis,
        node: &NodeName,
        (key, party): (CallKey, usize),
        consult: Consult,
        origin: Source,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(trunk) = self
            .config
            .trunks
            .iter()
            .find(|t| t.node == *node && t.peer == consult.node)
        else {
            tracing::info!(call = %key, consult_node = %consult.node, "attended transfer: the replaced dialog is on a node no trunk leads to");
            return false;
        };
        let dial_endpoint = trunk.endpoint.clone();
        let n = self.new_key().0;
        let token = format!("{}{n}", self.link_prefix);
        let dial = format!("PJSIP/{token}@{dial_endpoint}");
        let link = format!("{}-{n}-link", self.config.instance);
        self.links
            .insert((consult.node.clone(), token), consult.call);
        self.with_call(now, consult.call, out, |call, _| {
            call.start_linked(consult.party, key);
            Flow::Continue
        });
        self.with_call(now, key, out, |call, fx| {
            call.start_remote(party, (link, &dial), consult.call, origin, fx);
            Flow::Continue
        });
        true
    }
}
