//! Typed, lenient models of the ARI objects and events the service uses.
//!
//! Asterisk's own schema (`rest-api/api-docs/events.json`) and what it really serializes differ (see the
//! ChannelTransfer notes below), so these models follow the wire: every field we do not strictly need is
//! optional or defaulted, unknown fields are ignored, and an unknown event type decodes to
//! [`Event::Other`] instead of failing.

use serde::Deserialize;

/// A channel snapshot, as carried by events and returned by `GET /channels`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Channel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    /// The SIP Call-ID for PJSIP channels; empty for Local channels (normalised by [`Channel::call_id`]).
    #[serde(default)]
    pub protocol_id: Option<String>,
    #[serde(default)]
    pub caller: CallerId,
    #[serde(default)]
    pub connected: CallerId,
    #[serde(default)]
    pub dialplan: Option<DialplanLocation>,
    #[serde(default)]
    pub language: Option<String>,
    /// The channel variables ari.conf's `channelvars` asks Asterisk to include.
    #[serde(default)]
    pub channelvars: Option<std::collections::HashMap<String, String>>,
}

impl Channel {
    /// The SIP Call-ID of this channel's dialog, if it has one.
    pub fn call_id(&self) -> Option<&str> {
        self.protocol_id.as_deref().filter(|id| !id.is_empty())
    }

    /// The channel technology, the part of the name before `/` (`PJSIP`, `Local`, ...).
    pub fn technology(&self) -> &str {
        self.name.split('/').next().unwrap_or_default()
    }

    /// The dial string of the endpoint this channel belongs to: `PJSIP/alice-0000000f` gives
    /// `PJSIP/alice`. `None` for channels that are not PJSIP.
    pub fn endpoint(&self) -> Option<String> {
        let rest = self.name.strip_prefix("PJSIP/")?;
        let endpoint = match rest.rsplit_once('-') {
            Some((endpoint, serial)) if serial.chars().all(|c| c.is_ascii_hexdigit()) => endpoint,
            _ => rest,
        };
        (!endpoint.is_empty()).then(|| format!("PJSIP/{endpoint}"))
    }

    /// A channel variable carried in the snapshot (one of ari.conf's `channelvars`), if set and not empty.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.channelvars
            .as_ref()?
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The Stasis application the channel is in and its arguments (`dialplan.app_data`, e.g.
    /// `ari-transfer,dialed` gives `("ari-transfer", "dialed")`), if it is in one.
    pub fn stasis_app(&self) -> Option<(&str, &str)> {
        let dialplan = self.dialplan.as_ref()?;
        if !dialplan.app_name.eq_ignore_ascii_case("Stasis") {
            return None;
        }
        let data = dialplan.app_data.as_str();
        Some(data.split_once(',').unwrap_or((data, "")))
    }

    /// The extension the channel was dialing when it entered the application.
    pub fn dialed_exten(&self) -> Option<&str> {
        self.dialplan
            .as_ref()
            .map(|d| d.exten.as_str())
            .filter(|e| !e.is_empty())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallerId {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub number: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DialplanLocation {
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub exten: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub app_name: String,
    #[serde(default)]
    pub app_data: String,
}

/// A bridge snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Bridge {
    pub id: String,
    #[serde(default)]
    pub technology: String,
    #[serde(default)]
    pub bridge_type: String,
    #[serde(default)]
    pub bridge_class: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// An ARI event, decoded by its `type`. Types the service does not use become [`Event::Other`].
// An event is moved a handful of times on its way into the engine; boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    StasisStart(StasisStart),
    StasisEnd(ChannelEvent),
    ChannelStateChange(ChannelEvent),
    ChannelHangupRequest(ChannelHangupRequest),
    ChannelDestroyed(ChannelDestroyed),
    ChannelDtmfReceived(ChannelDtmfReceived),
    ChannelEnteredBridge(ChannelBridgeEvent),
    ChannelLeftBridge(ChannelBridgeEvent),
    BridgeDestroyed(BridgeEvent),
    Dial(Dial),
    ChannelTransfer(ChannelTransfer),
    /// The phone put the call on hold (a re-INVITE with `sendonly` or `inactive`), or took it off.
    ChannelHold(ChannelEvent),
    ChannelUnhold(ChannelEvent),
    #[serde(other)]
    Other,
}

impl Event {
    /// Decodes one websocket text message. An unknown `type` is not an error (it gives [`Event::Other`]);
    /// malformed JSON, a missing `type`, or a known type missing a field we require is.
    pub fn decode(text: &str) -> Result<Event, DecodeError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(DecodeError::Json)?;
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or(DecodeError::NoType)?
            .to_owned();
        Event::deserialize(value).map_err(|source| DecodeError::Shape { kind, source })
    }

    /// The channel this event is about, for events that are about one channel.
    pub fn channel(&self) -> Option<&Channel> {
        match self {
            Event::StasisStart(e) => Some(&e.channel),
            Event::StasisEnd(e)
            | Event::ChannelStateChange(e)
            | Event::ChannelHold(e)
            | Event::ChannelUnhold(e) => Some(&e.channel),
            Event::ChannelHangupRequest(e) => Some(&e.channel),
            Event::ChannelDestroyed(e) => Some(&e.channel),
            Event::ChannelDtmfReceived(e) => Some(&e.channel),
            Event::ChannelEnteredBridge(e) | Event::ChannelLeftBridge(e) => e.channel.as_ref(),
            Event::Dial(e) => Some(&e.peer),
            Event::ChannelTransfer(e) => Some(&e.referred_by.source_channel),
            Event::BridgeDestroyed(_) | Event::Other => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    #[error("no \"type\" field")]
    NoType,
    #[error("{kind} event has an unexpected shape: {source}")]
    Shape {
        kind: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StasisStart {
    #[serde(default)]
    pub args: Vec<String>,
    pub channel: Channel,
    #[serde(default)]
    pub replace_channel: Option<Channel>,
}

/// Events that carry nothing but a channel (StasisEnd, ChannelStateChange).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelEvent {
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelHangupRequest {
    pub channel: Channel,
    #[serde(default)]
    pub cause: Option<i32>,
    #[serde(default)]
    pub soft: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelDestroyed {
    pub channel: Channel,
    #[serde(default)]
    pub cause: i32,
    #[serde(default)]
    pub cause_txt: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelDtmfReceived {
    pub channel: Channel,
    pub digit: String,
    #[serde(default)]
    pub duration_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelBridgeEvent {
    pub bridge: Bridge,
    #[serde(default)]
    pub channel: Option<Channel>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BridgeEvent {
    pub bridge: Bridge,
}

/// Progress of a dial. `peer` is the dialed channel; `dialstatus` is empty when the dial starts, then
/// `RINGING`, `PROGRESS`, `ANSWER`, or a failure (`BUSY`, `NOANSWER`, `CONGESTION`, `CHANUNAVAIL`, `CANCEL`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dial {
    pub peer: Channel,
    #[serde(default)]
    pub caller: Option<Channel>,
    #[serde(default)]
    pub dialstatus: String,
    #[serde(default)]
    pub dialstring: Option<String>,
}

/// A REFER received on a channel in `ari-only` transfer mode.
///
/// Asterisk serializes **no top-level `channel`**: the channel the REFER arrived on is
/// `referred_by.source_channel`, and it is the one `transfer_progress` must be posted to. `state` is absent on
/// the event for the REFER itself and present on the follow-ups Asterisk emits after each progress post.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChannelTransfer {
    #[serde(default)]
    pub state: Option<String>,
    pub refer_to: ReferTo,
    pub referred_by: ReferredBy,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReferTo {
    pub requested_destination: RequestedDestination,
    /// The transferer's consult leg (the dialog to be replaced), when Asterisk found it locally.
    #[serde(default)]
    pub destination_channel: Option<Channel>,
    /// The consult target, peer of `destination_channel`.
    #[serde(default)]
    pub connected_channel: Option<Channel>,
    /// The consult bridge.
    #[serde(default)]
    pub bridge: Option<Bridge>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestedDestination {
    /// The user part of Refer-To. Always present, for attended transfers too.
    #[serde(default)]
    pub destination: String,
    /// The Call-ID from `Replaces` (attended transfers only).
    #[serde(default)]
    pub protocol_id: Option<String>,
    #[serde(default)]
    pub additional_protocol_params: Vec<ProtocolParam>,
}

impl RequestedDestination {
    /// The value of an additional protocol parameter (`from` and `to` are the Replaces tags).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.additional_protocol_params
            .iter()
            .find(|p| p.parameter_name == name)
            .map(|p| p.parameter_value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProtocolParam {
    pub parameter_name: String,
    pub parameter_value: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReferredBy {
    /// The channel the REFER arrived on (the transferer's leg).
    pub source_channel: Channel,
    #[serde(default)]
    pub connected_channel: Option<Channel>,
    #[serde(default)]
    pub bridge: Option<Bridge>,
}
