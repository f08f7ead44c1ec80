//! The ARI REST requests the engine can ask for, as plain data.
//!
//! The engine never performs I/O: it returns [`AriRequest`] values, and the runtime hands them to the
//! [`crate::ari::client::AriClient`]. [`AriRequest::to_http`] is the one place that knows each request's
//! method, path and parameters, so it is unit-tested without a server.

use serde_json::{json, Value};

/// The bridge type of every bridge the service creates. `dtmf_events` keeps Asterisk from bridging the
/// RTP natively, which is what lets ChannelDtmfReceived reach the app for in-call feature codes.
pub const BRIDGE_TYPE: &str = "mixing,dtmf_events";

/// A Q.850 hangup cause, as Asterisk uses it (`reason_code` of `DELETE /channels/{id}`). chan_pjsip turns
/// it into the SIP final response of an unanswered call (17 gives 486, 19 gives 480, 1 gives 404, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HangupCause(pub i32);

impl HangupCause {
    pub const UNALLOCATED: HangupCause = HangupCause(1);
    pub const NORMAL_CLEARING: HangupCause = HangupCause(16);
    pub const USER_BUSY: HangupCause = HangupCause(17);
    pub const NO_USER_RESPONSE: HangupCause = HangupCause(18);
    pub const NO_ANSWER: HangupCause = HangupCause(19);
    pub const SUBSCRIBER_ABSENT: HangupCause = HangupCause(20);
    pub const CALL_REJECTED: HangupCause = HangupCause(21);
    pub const CONGESTION: HangupCause = HangupCause(34);
    pub const FAILURE: HangupCause = HangupCause(38);
}

/// The `states` values of `POST /channels/{id}/transfer_progress`, and the NOTIFY sipfrag each produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferProgress {
    /// NOTIFY `100 Trying`, subscription stays active.
    Progress,
    /// NOTIFY `200 OK`, terminal.
    Answered,
    /// NOTIFY `503 Service Unavailable`, terminal.
    Unavailable,
    /// NOTIFY `603 Decline`, terminal.
    Declined,
}

impl TransferProgress {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferProgress::Progress => "channel_progress",
            TransferProgress::Answered => "channel_answered",
            TransferProgress::Unavailable => "channel_unavailable",
            TransferProgress::Declined => "channel_declined",
        }
    }

    /// The SIP status the transferring phone receives in the NOTIFY sipfrag.
    pub fn sip_status(self) -> u16 {
        match self {
            TransferProgress::Progress => 100,
            TransferProgress::Answered => 200,
            TransferProgress::Unavailable => 503,
            TransferProgress::Declined => 603,
        }
    }

    pub fn is_terminal(self) -> bool {
        self != TransferProgress::Progress
    }
}

/// One ARI REST request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AriRequest {
    /// `POST /bridges/{id}` with type [`BRIDGE_TYPE`].
    CreateBridge {
        bridge: String,
        name: String,
    },
    DestroyBridge {
        bridge: String,
    },
    /// Adds (or moves, from another Stasis bridge) channels into a bridge. With `absorb_dtmf` the digits
    /// they send reach the app (ChannelDtmfReceived) but not the others in the bridge.
    AddToBridge {
        bridge: String,
        channels: Vec<String>,
        absorb_dtmf: bool,
    },
    RemoveFromBridge {
        bridge: String,
        channels: Vec<String>,
    },
    /// Plays `media` (e.g. `tone:ring`) to everyone in a bridge, as playback `playback`.
    PlayOnBridge {
        bridge: String,
        playback: String,
        media: String,
    },
    StopPlayback {
        playback: String,
    },
    /// Plays `media` to one channel, as playback `playback`.
    PlayOnChannel {
        channel: String,
        playback: String,
        media: String,
    },
    /// Starts music on hold on a channel (`class`, else the default class).
    StartMoh {
        channel: String,
        class: Option<String>,
    },
    StopMoh {
        channel: String,
    },
    /// Sends DTMF digits to a channel (passing on digits the app absorbed but does not use).
    SendDtmf {
        channel: String,
        dtmf: String,
    },
    /// `POST /channels/create`: a channel in the Stasis app, not dialed yet, with the app arguments
    /// `app_args` and channel variables (functions such as `PJSIP_TRANSFER_HANDLING()` included).
    CreateChannel {
        channel: String,
        endpoint: String,
        app_args: String,
        originator: Option<String>,
        variables: Vec<(String, String)>,
    },
    Dial {
        channel: String,
        caller: Option<String>,
        timeout_secs: u32,
    },
    /// Indicates ringing to an unanswered channel (a SIP caller gets 180).
    Ring {
        channel: String,
    },
    Answer {
        channel: String,
    },
    Hangup {
        channel: String,
        cause: HangupCause,
    },
    SetVariable {
        channel: String,
        name: String,
        value: String,
    },
    /// Reports a REFER's progress to the transferring phone (a NOTIFY with a sipfrag).
    TransferProgress {
        channel: String,
        state: TransferProgress,
    },
    /// Answers only once Asterisk has finished handling the SIP requests queued on the channel's session
    /// (a REFER among them): reading `CHANNEL(pjsip,call-id)` runs on the session's serializer, behind the
    /// REFER's own task, and the caller waits for it. Made before the first progress report on a REFER,
    /// whose handling in Asterisk 22 is not safe to interrupt (see the README's "Asterisk's REFER race").
    AwaitSession {
        channel: String,
    },
}

/// The HTTP shape of a request: method, path below `/ari`, query parameters and an optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl AriRequest {
    /// What kind of request it is (`create_channel`, `hangup`...), for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AriRequest::CreateBridge { .. } => "create_bridge",
            AriRequest::DestroyBridge { .. } => "destroy_bridge",
            AriRequest::AddToBridge { .. } => "add_to_bridge",
            AriRequest::RemoveFromBridge { .. } => "remove_from_bridge",
            AriRequest::PlayOnBridge { .. } => "play_on_bridge",
            AriRequest::StopPlayback { .. } => "stop_playback",
            AriRequest::PlayOnChannel { .. } => "play_on_channel",
            AriRequest::StartMoh { .. } => "start_moh",
            AriRequest::StopMoh { .. } => "stop_moh",
            AriRequest::SendDtmf { .. } => "send_dtmf",
            AriRequest::CreateChannel { .. } => "create_channel",
            AriRequest::Dial { .. } => "dial",
            AriRequest::Ring { .. } => "ring",
            AriRequest::Answer { .. } => "answer",
            AriRequest::Hangup { .. } => "hangup",
            AriRequest::SetVariable { .. } => "set_variable",
            AriRequest::TransferProgress { .. } => "transfer_progress",
            AriRequest::AwaitSession { .. } => "await_session",
        }
    }

    /// The channel or bridge this request acts on, for logs.
    pub fn target(&self) -> &str {
        match self {
            AriRequest::CreateBridge { bridge, .. }
            | AriRequest::DestroyBridge { bridge }
            | AriRequest::AddToBridge { bridge, .. }
            | AriRequest::RemoveFromBridge { bridge, .. }
            | AriRequest::PlayOnBridge { bridge, .. } => bridge,
            AriRequest::StopPlayback { playback } => playback,
            _ => self.channel().unwrap_or_default(),
        }
    }

    /// The channel this request acts on, for requests about one channel.
    pub fn channel(&self) -> Option<&str> {
        match self {
            AriRequest::CreateChannel { channel, .. }
            | AriRequest::Dial { channel, .. }
            | AriRequest::Ring { channel }
            | AriRequest::Answer { channel }
            | AriRequest::Hangup { channel, .. }
            | AriRequest::SetVariable { channel, .. }
            | AriRequest::TransferProgress { channel, .. }
            | AriRequest::AwaitSession { channel }
            | AriRequest::PlayOnChannel { channel, .. }
            | AriRequest::StartMoh { channel, .. }
            | AriRequest::StopMoh { channel }
            | AriRequest::SendDtmf { channel, .. } => Some(channel),
            _ => None,
        }
    }

    /// Whether a 404 answer means the request's goal is already met (the thing it removes is gone).
    pub fn done_if_missing(&self) -> bool {
        matches!(
            self,
            AriRequest::DestroyBridge { .. }
                | AriRequest::Hangup { .. }
                | AriRequest::StopPlayback { .. }
                | AriRequest::StopMoh { .. }
        )
    }

    /// Requests whose failure would leave something behind (a channel, a bridge, a phone waiting for the
    /// outcome of its transfer, a caller never answered): worth one more try when Asterisk fails them for
    /// another reason than 404. Answering an answered channel is harmless. (A failed bridge creation or
    /// move is made again too, if the call still wants it: the engine decides.)
    pub fn worth_a_retry(&self) -> bool {
        match self {
            AriRequest::Hangup { .. }
            | AriRequest::DestroyBridge { .. }
            | AriRequest::Answer { .. } => true,
            AriRequest::TransferProgress { state, .. } => state.is_terminal(),
            _ => false,
        }
    }

    /// Whether making this request twice has the effect of making it once (a second hangup finds the
    /// channel gone), so that one whose connection closed before an answer can be made again. Not so:
    /// creating a channel or bridge (the id is taken), dialing, playing, sending digits, a progress report
    /// (a second NOTIFY), and a move into a bridge (a second one may fail, and a failed move rolls a
    /// transfer back).
    pub fn safe_to_repeat(&self) -> bool {
        matches!(
            self,
            AriRequest::DestroyBridge { .. }
                | AriRequest::RemoveFromBridge { .. }
                | AriRequest::StopPlayback { .. }
                | AriRequest::StartMoh { .. }
                | AriRequest::StopMoh { .. }
                | AriRequest::Ring { .. }
                | AriRequest::Answer { .. }
                | AriRequest::Hangup { .. }
                | AriRequest::SetVariable { .. }
                | AriRequest::AwaitSession { .. }
        )
    }

    /// The method, path and parameters of this request. `app` is the Stasis application name.
    pub fn to_http(&self, app: &str) -> HttpCall {
        let call = |method, path: String, query: Vec<(&'static str, String)>| HttpCall {
            method,
            path,
            query,
            body: None,
        };
        match self {
            AriRequest::CreateBridge { bridge, name } => call(
                Method::Post,
                format!("/bridges/{bridge}"),
                vec![("type", BRIDGE_TYPE.to_owned()), ("name", name.clone())],
            ),
            AriRequest::DestroyBridge { bridge } => {
                call(Method::Delete, format!("/bridges/{bridge}"), vec![])
            }
            AriRequest::AddToBridge {
                bridge,
                channels,
                absorb_dtmf,
            } => {
                let mut query = vec![("channel", channels.join(","))];
                if *absorb_dtmf {
                    query.push(("absorbDTMF", "true".to_owned()));
                }
                call(Method::Post, format!("/bridges/{bridge}/addChannel"), query)
            }
            AriRequest::RemoveFromBridge { bridge, channels } => call(
                Method::Post,
                format!("/bridges/{bridge}/removeChannel"),
                vec![("channel", channels.join(","))],
            ),
            AriRequest::PlayOnBridge {
                bridge,
                playback,
                media,
            } => call(
                Method::Post,
                format!("/bridges/{bridge}/play/{playback}"),
                vec![("media", media.clone())],
            ),
            AriRequest::StopPlayback { playback } => {
                call(Method::Delete, format!("/playbacks/{playback}"), vec![])
            }
            AriRequest::PlayOnChannel {
                channel,
                playback,
                media,
            } => call(
                Method::Post,
                format!("/channels/{channel}/play/{playback}"),
                vec![("media", media.clone())],
            ),
            AriRequest::StartMoh { channel, class } => call(
                Method::Post,
                format!("/channels/{channel}/moh"),
                class.iter().map(|c| ("mohClass", c.clone())).collect(),
            ),
            AriRequest::StopMoh { channel } => {
                call(Method::Delete, format!("/channels/{channel}/moh"), vec![])
            }
            AriRequest::SendDtmf { channel, dtmf } => call(
                Method::Post,
                format!("/channels/{channel}/dtmf"),
                vec![("dtmf", dtmf.clone())],
            ),
            AriRequest::CreateChannel {
                channel,
                endpoint,
                app_args,
                originator,
                variables,
            } => {
                let mut query = vec![
                    ("endpoint", endpoint.clone()),
                    ("app", app.to_owned()),
                    ("appArgs", app_args.clone()),
                    ("channelId", channel.clone()),
                ];
                if let Some(originator) = originator {
                    query.push(("originator", originator.clone()));
                }
                let vars: serde_json::Map<String, Value> = variables
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                HttpCall {
                    method: Method::Post,
                    path: "/channels/create".to_owned(),
                    query,
                    body: Some(json!({ "variables": vars })),
                }
            }
            AriRequest::Dial {
                channel,
                caller,
                timeout_secs,
            } => {
                let mut query = vec![("timeout", timeout_secs.to_string())];
                if let Some(caller) = caller {
                    query.push(("caller", caller.clone()));
                }
                call(Method::Post, format!("/channels/{channel}/dial"), query)
            }
            AriRequest::Ring { channel } => {
                call(Method::Post, format!("/channels/{channel}/ring"), vec![])
            }
            AriRequest::Answer { channel } => {
                call(Method::Post, format!("/channels/{channel}/answer"), vec![])
            }
            AriRequest::Hangup { channel, cause } => call(
                Method::Delete,
                format!("/channels/{channel}"),
                vec![("reason_code", cause.0.to_string())],
            ),
            AriRequest::SetVariable {
                channel,
                name,
                value,
            } => call(
                Method::Post,
                format!("/channels/{channel}/variable"),
                vec![("variable", name.clone()), ("value", value.clone())],
            ),
            AriRequest::TransferProgress { channel, state } => call(
                Method::Post,
                format!("/channels/{channel}/transfer_progress"),
                vec![("states", state.as_str().to_owned())],
            ),
            AriRequest::AwaitSession { channel } => call(
                Method::Get,
                format!("/channels/{channel}/variable"),
                vec![("variable", "CHANNEL(pjsip,call-id)".to_owned())],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_created_with_dtmf_events() {
        let http = AriRequest::CreateBridge {
            bridge: "b1".into(),
            name: "call-1".into(),
        }
        .to_http("app");
        assert_eq!(http.method, Method::Post);
        assert_eq!(http.path, "/bridges/b1");
        assert!(http.query.contains(&("type", "mixing,dtmf_events".into())));
    }

    #[test]
    fn created_channels_carry_app_and_variables_in_the_body() {
        let http = AriRequest::CreateChannel {
            channel: "c2".into(),
            endpoint: "PJSIP/bob".into(),
            app_args: "dialed".into(),
            originator: Some("c1".into()),
            variables: vec![("PJSIP_TRANSFER_HANDLING()".into(), "ari-only".into())],
        }
        .to_http("ari-transfer");
        assert_eq!(http.path, "/channels/create");
        assert!(http.query.contains(&("app", "ari-transfer".into())));
        assert!(http.query.contains(&("originator", "c1".into())));
        assert_eq!(
            http.body,
            Some(json!({"variables": {"PJSIP_TRANSFER_HANDLING()": "ari-only"}}))
        );
    }

    #[test]
    fn transfer_progress_posts_states_to_the_source_channel() {
        let http = AriRequest::TransferProgress {
            channel: "src".into(),
            state: TransferProgress::Unavailable,
        }
        .to_http("app");
        assert_eq!(http.path, "/channels/src/transfer_progress");
        assert_eq!(http.query, vec![("states", "channel_unavailable".into())]);
        assert_eq!(TransferProgress::Unavailable.sip_status(), 503);
        assert!(!TransferProgress::Progress.is_terminal());
    }

    #[test]
    fn the_session_barrier_reads_a_pjsip_channel_function() {
        let http = AriRequest::AwaitSession {
            channel: "src".into(),
        }
        .to_http("app");
        assert_eq!(http.method, Method::Get);
        assert_eq!(http.path, "/channels/src/variable");
        assert_eq!(
            http.query,
            vec![("variable", "CHANNEL(pjsip,call-id)".into())]
        );
    }

    #[test]
    fn feature_code_requests_absorb_dtmf_hold_and_pass_digits_on() {
        let add = AriRequest::AddToBridge {
            bridge: "b".into(),
            channels: vec!["c1".into(), "c2".into()],
            absorb_dtmf: true,
        }
        .to_http("app");
        assert_eq!(
            add.query,
            vec![("channel", "c1,c2".into()), ("absorbDTMF", "true".into())]
        );
        let moh = AriRequest::StartMoh {
            channel: "c".into(),
            class: Some("jazz".into()),
        }
        .to_http("app");
        assert_eq!(moh.path, "/channels/c/moh");
        assert_eq!(moh.query, vec![("mohClass", "jazz".into())]);
        let dtmf = AriRequest::SendDtmf {
            channel: "c".into(),
            dtmf: "5".into(),
        }
        .to_http("app");
        assert_eq!(dtmf.path, "/channels/c/dtmf");
        assert!(AriRequest::StopMoh {
            channel: "c".into()
        }
        .done_if_missing());
    }

    #[test]
    fn hangup_sends_the_cause_as_reason_code() {
        let http = AriRequest::Hangup {
            channel: "c".into(),
            cause: HangupCause::USER_BUSY,
        }
        .to_http("app");
        assert_eq!(http.method, Method::Delete);
        assert_eq!(http.query, vec![("reason_code", "17".into())]);
    }
}
