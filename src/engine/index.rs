//! Which call each known channel belongs to, and the SIP dialogs of those channels (Call-ID, and the
//! endpoint of the phone at its far end).
//!
//! The Call-ID index is how an attended transfer finds the dialog its REFER replaces when Asterisk did not
//! resolve it (stale or swapped Replaces tags): `refer_to.requested_destination.protocol_id` is that
//! dialog's Call-ID, and every PJSIP channel snapshot carries its own as `protocol_id`.

use std::collections::HashMap;

use super::{CallKey, NodeName};

/// A channel, by the node it lives on and its id there.
pub type ChannelRef = (NodeName, String);

/// A PJSIP channel's dialog: its Call-ID, and the endpoint (`PJSIP/alice`) whose phone holds it.
#[derive(Debug)]
struct Dialog {
    call_id: String,
    endpoint: Option<String>,
}

#[derive(Debug, Default)]
pub struct ChannelIndex {
    calls: HashMap<ChannelRef, CallKey>,
    dialog_of: HashMap<ChannelRef, Dialog>,
    by_call_id: HashMap<String, Vec<ChannelRef>>,
}

impl ChannelIndex {
    pub fn call_of(&self, node: &NodeName, channel: &str) -> Option<CallKey> {
        self.calls.get(&(node.clone(), channel.to_owned())).copied()
    }

    pub fn insert(&mut self, node: &NodeName, channel: &str, call: CallKey) {
        self.calls.insert((node.clone(), channel.to_owned()), call);
    }

    /// Forgets a channel, if it still belongs to `call` (it may have moved to another call).
    pub fn remove(&mut self, node: &NodeName, channel: &str, call: CallKey) {
        let key = (node.clone(), channel.to_owned());
        if self.calls.get(&key) != Some(&call) {
            return;
        }
        self.calls.remove(&key);
        if let Some(dialog) = self.dialog_of.remove(&key) {
            if let Some(channels) = self.by_call_id.get_mut(&dialog.call_id) {
                channels.retain(|c| c != &key);
                if channels.is_empty() {
                    self.by_call_id.remove(&dialog.call_id);
                }
            }
        }
    }

    /// Whether a channel's Call-ID is recorded already.
    pub fn has_call_id(&self, node: &NodeName, channel: &str) -> bool {
        self.dialog_of
            .contains_key(&(node.clone(), channel.to_owned()))
    }

    /// Records a known channel's SIP Call-ID and endpoint (seen in any snapshot of it).
    pub fn note_call_id(
        &mut self,
        node: &NodeName,
        channel: &str,
        call_id: &str,
        endpoint: Option<String>,
    ) {
        let key = (node.clone(), channel.to_owned());
        if !self.calls.contains_key(&key) || self.dialog_of.contains_key(&key) {
            return;
        }
        let dialog = Dialog {
            call_id: call_id.to_owned(),
            endpoint,
        };
        self.dialog_of.insert(key.clone(), dialog);
        self.by_call_id
            .entry(call_id.to_owned())
            .or_default()
            .push(key);
    }

    /// The known channels whose dialog has this Call-ID.
    pub fn with_call_id(&self, call_id: &str) -> &[ChannelRef] {
        self.by_call_id.get(call_id).map_or(&[], Vec::as_slice)
    }

    /// An indexed channel's SIP Call-ID.
    pub fn call_id_of(&self, node: &NodeName, channel: &str) -> Option<&str> {
        self.dialog_of
            .get(&(node.clone(), channel.to_owned()))
            .map(|d| d.call_id.as_str())
    }

    /// The endpoint whose phone holds an indexed channel's dialog.
    pub fn endpoint_of(&self, node: &NodeName, channel: &str) -> Option<&str> {
        self.dialog_of
            .get(&(node.clone(), channel.to_owned()))?
            .endpoint
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_follow_their_channels() {
        let mut index = ChannelIndex::default();
        let node: NodeName = "n1".into();
        index.insert(&node, "c1", CallKey(1));
        index.note_call_id(&node, "c1", "abc@host", None);
        index.note_call_id(&node, "unknown", "abc@host", None);
        assert_eq!(
            index.with_call_id("abc@host"),
            &[(node.clone(), "c1".to_owned())]
        );
        // A channel that moved to another call is not removed on behalf of the old one.
        index.insert(&node, "c1", CallKey(2));
        index.remove(&node, "c1", CallKey(1));
        assert_eq!(index.call_of(&node, "c1"), Some(CallKey(2)));
        index.remove(&node, "c1", CallKey(2));
        assert!(index.with_call_id("abc@host").is_empty());
        assert_eq!(index.call_of(&node, "c1"), None);
    }
}
