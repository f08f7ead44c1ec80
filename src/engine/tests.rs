//! Engine scenarios, fed event by event. The channel snapshots come from a real Asterisk 22 capture.

mod adopt;
mod api;
mod barrier;
mod cross_node;
mod events;
mod konami;
mod replaces;
mod transfer;

use serde_json::{json, Value};

use super::*;

const NODE: &str = "node1";
const CALLER: &str = "inst1-1795328468.0";

fn engine() -> Engine {
    Engine::new(engine_config())
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        app: "ari-transfer".into(),
        instance: "t".into(),
        routes: vec![Route::new("[a-z]+", "PJSIP/{exten}").unwrap()],
        ring_timeout: 30_000,
        recall_transferer: true,
        trunks: Vec::new(),
        metaflows: Default::default(),
        // The session barrier before a REFER's first report has its own tests (tests/barrier.rs); the
        // others read as the transfer flows they check.
        refer_barrier: false,
        accounts: Default::default(),
    }
}

/// The caller's channel snapshot, from the StasisStart capture.
fn caller_channel() -> Value {
    let capture: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/captures/StasisStart-inbound.json"
    ))
    .unwrap();
    capture["channel"].clone()
}

/// A channel snapshot with its own id and SIP Call-ID (`{id}@test`).
fn channel(id: &str) -> Value {
    let mut channel = caller_channel();
    channel["id"] = json!(id);
    channel["protocol_id"] = json!(format!("{id}@test"));
    channel
}

fn event(value: Value) -> Input {
    Input::Event {
        node: NODE.into(),
        event: serde_json::from_value(value).unwrap(),
    }
}

fn stasis_start(id: &str, args: &[&str]) -> Input {
    event(json!({"type": "StasisStart", "args": args, "channel": channel(id)}))
}

fn destroyed(id: &str, cause: i32) -> Input {
    event(
        json!({"type": "ChannelDestroyed", "cause": cause, "cause_txt": "", "channel": channel(id)}),
    )
}

fn hangup_request(id: &str) -> Input {
    event(json!({"type": "ChannelHangupRequest", "cause": 16, "channel": channel(id)}))
}

/// Asterisk failed `request` of call 1 with `status`.
fn failed(request: AriRequest, status: u16) -> Input {
    Input::RequestFailed {
        node: NODE.into(),
        call: CallKey(1),
        request,
        status: Some(status),
        message: "model".into(),
    }
}

fn requests(outputs: &[Output]) -> Vec<AriRequest> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ari { request, .. } => Some(request.clone()),
            Output::CallEnded { .. } | Output::Event(_) => None,
        })
        .collect()
}

fn ended(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::CallEnded { .. }))
}

/// The channel variables and the dial's caller of a channel the app creates on behalf of `party`: the callee
/// the app dialed (`t-1-b`, bob) is shown by its identity (CONNECTEDLINE), with no caller on the dial (which
/// would copy bob's caller field, the caller's); any other party is the dial's caller.
fn on_behalf_of(party: &str) -> (Vec<(String, String)>, Option<String>) {
    let mut variables = vec![(
        "PJSIP_TRANSFER_HANDLING()".to_owned(),
        "ari-only".to_owned(),
    )];
    if party == "t-1-b" {
        variables.push(("CONNECTEDLINE(num)".into(), "bob".into()));
        variables.push(("CONNECTEDLINE(name)".into(), "bob".into()));
        return (variables, None);
    }
    (variables, Some(party.to_owned()))
}

fn hangup(channel: &str, cause: HangupCause) -> AriRequest {
    AriRequest::Hangup {
        channel: channel.into(),
        cause,
    }
}

/// Starts a call from the captured caller (who dialed `bob`); returns the engine and the callee's id.
fn dialing() -> (Engine, String) {
    let mut engine = engine();
    let out = engine.handle(0, stasis_start(CALLER, &[]));
    let callee = requests(&out)
        .iter()
        .find_map(|r| match r {
            AriRequest::CreateChannel { channel, .. } => Some(channel.clone()),
            _ => None,
        })
        .expect("a callee is created");
    engine.handle(1, stasis_start(&callee, &["dialed"]));
    (engine, callee)
}

fn state_change(id: &str, state: &str) -> Input {
    let mut channel = channel(id);
    channel["state"] = json!(state);
    event(json!({"type": "ChannelStateChange", "channel": channel}))
}

fn connected() -> (Engine, String) {
    let (mut engine, callee) = dialing();
    engine.handle(100, state_change(&callee, "Up"));
    (engine, callee)
}

#[test]
fn r1_caller_is_rung_and_the_routed_destination_dialed_in_ari_only_mode() {
    let mut engine = engine();
    let out = engine.handle(0, stasis_start(CALLER, &[]));
    let callee = "t-1-b".to_string();
    assert_eq!(
        requests(&out),
        vec![
            AriRequest::SetVariable {
                channel: CALLER.into(),
                name: "PJSIP_TRANSFER_HANDLING()".into(),
                value: "ari-only".into()
            },
            AriRequest::Ring {
                channel: CALLER.into()
            },
            AriRequest::CreateChannel {
                channel: callee.clone(),
                endpoint: "PJSIP/bob".into(),
                app_args: "dialed".into(),
                originator: Some(CALLER.into()),
                variables: vec![("PJSIP_TRANSFER_HANDLING()".into(), "ari-only".into())],
            },
        ]
    );
    assert_eq!(engine.poll_timeout(), Some(30_000));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Dialing));
    // The created channel is dialed once it is in the app (dialing earlier fails with 409).
    let out = engine.handle(1, stasis_start(&callee, &["dialed"]));
    assert_eq!(
        requests(&out),
        vec![AriRequest::Dial {
            channel: callee,
            caller: Some(CALLER.into()),
            timeout_secs: 35
        }]
    );
}

#[test]
fn r1_the_callee_ringing_changes_nothing() {
    let (mut engine, callee) = dialing();
    assert!(engine
        .handle(2, state_change(&callee, "Ringing"))
        .is_empty());
    let ringing = json!({"type": "Dial", "dialstatus": "RINGING", "peer": channel(&callee)});
    assert!(engine.handle(3, event(ringing)).is_empty());
    assert_eq!(engine.phase_of(NODE, &callee), Some(CallPhase::Dialing));
}

#[test]
fn r1_a_dial_answer_counts_as_the_answer_once() {
    let (mut engine, callee) = dialing();
    let answer = json!({"type": "Dial", "dialstatus": "ANSWER", "peer": channel(&callee)});
    assert_eq!(requests(&engine.handle(100, event(answer))).len(), 4);
    assert!(engine.handle(101, state_change(&callee, "Up")).is_empty());
}

#[test]
fn r1_answer_bridges_both_legs_in_a_dtmf_events_bridge() {
    let (mut engine, callee) = dialing();
    let out = engine.handle(100, state_change(&callee, "Up"));
    assert_eq!(
        requests(&out),
        vec![
            AriRequest::Answer {
                channel: CALLER.into()
            },
            AriRequest::CreateBridge {
                bridge: "t-1-bridge".into(),
                name: "ari-transfer/call-1".into()
            },
            AriRequest::AddToBridge {
                bridge: "t-1-bridge".into(),
                channels: vec![CALLER.into()],
                absorb_dtmf: false,
            },
            AriRequest::AddToBridge {
                bridge: "t-1-bridge".into(),
                channels: vec![callee.clone()],
                absorb_dtmf: false,
            },
        ]
    );
    assert_eq!(engine.poll_timeout(), None, "the ring timeout is cancelled");
    assert_eq!(engine.phase_of(NODE, &callee), Some(CallPhase::Connected));
}

#[test]
fn r1_the_exten_can_come_from_the_stasis_arguments() {
    let mut engine = engine();
    let out = engine.handle(0, stasis_start(CALLER, &["carol"]));
    assert!(requests(&out).iter().any(
        |r| matches!(r, AriRequest::CreateChannel { endpoint, .. } if endpoint == "PJSIP/carol")
    ));
}

#[test]
fn r2_busy_releases_the_caller_with_the_callees_cause() {
    // What Asterisk 22 sends for a callee answering 486: no terminal Dial event, a hangup request with the cause.
    let (mut engine, callee) = dialing();
    let hangup_request =
        json!({"type": "ChannelHangupRequest", "cause": 17, "channel": channel(&callee)});
    let out = engine.handle(60, event(hangup_request));
    assert_eq!(requests(&out), vec![hangup(CALLER, HangupCause::USER_BUSY)]);
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn r2_a_dial_failure_status_supplies_the_cause_when_the_hangup_has_none() {
    let (mut engine, callee) = dialing();
    let dial = json!({"type": "Dial", "dialstatus": "CHANUNAVAIL", "peer": channel(&callee)});
    engine.handle(50, event(dial));
    let out = engine.handle(60, destroyed(&callee, 0));
    assert_eq!(
        requests(&out),
        vec![hangup(CALLER, HangupCause::SUBSCRIBER_ABSENT)]
    );
}

#[test]
fn r2_no_answer_within_the_ring_timeout() {
    let (mut engine, callee) = dialing();
    assert!(engine.handle_timeout(29_999).is_empty());
    let out = engine.handle_timeout(30_000);
    assert_eq!(
        requests(&out),
        vec![
            hangup(&callee, HangupCause::NO_ANSWER),
            hangup(CALLER, HangupCause::NO_ANSWER)
        ]
    );
    assert!(ended(&out));
    // The callee's hangup events that follow belong to no call any more.
    assert!(engine.handle(30_010, destroyed(&callee, 19)).is_empty());
}

#[test]
fn r2_unknown_extension_is_unallocated() {
    let mut engine = engine();
    let out = engine.handle(0, stasis_start(CALLER, &["12345"]));
    assert_eq!(
        requests(&out),
        vec![hangup(CALLER, HangupCause::UNALLOCATED)]
    );
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn r2_caller_cancels_while_ringing() {
    let (mut engine, callee) = dialing();
    let out = engine.handle(500, hangup_request(CALLER));
    assert_eq!(
        requests(&out),
        vec![hangup(&callee, HangupCause::NORMAL_CLEARING)]
    );
    assert!(ended(&out));
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn r2_a_dial_string_naming_no_endpoint_is_unallocated() {
    let (mut engine, callee) = dialing();
    let create = AriRequest::CreateChannel {
        channel: callee.clone(),
        endpoint: "PJSIP/bob".into(),
        app_args: "dialed".into(),
        originator: None,
        variables: vec![],
    };
    let out = engine.handle(
        5,
        Input::RequestFailed {
            node: NODE.into(),
            call: CallKey(1),
            request: create,
            status: Some(500),
            message: "Allocation failed".into(),
        },
    );
    assert_eq!(
        requests(&out),
        vec![
            hangup(&callee, HangupCause::UNALLOCATED),
            hangup(CALLER, HangupCause::UNALLOCATED)
        ]
    );
}

#[test]
fn a_failed_transfer_mode_variable_does_not_end_the_call() {
    let (mut engine, _) = dialing();
    let set = AriRequest::SetVariable {
        channel: CALLER.into(),
        name: TRANSFER_HANDLING_VAR.into(),
        value: "ari-only".into(),
    };
    let out = engine.handle(
        5,
        Input::RequestFailed {
            node: NODE.into(),
            call: CallKey(1),
            request: set,
            status: Some(500),
            message: "boom".into(),
        },
    );
    assert!(out.is_empty());
    assert_eq!(engine.call_count(), 1);
}

#[test]
fn a_failed_bridge_request_is_made_again_then_releases_both_legs_and_the_bridge() {
    let (mut engine, callee) = connected();
    let add = AriRequest::AddToBridge {
        bridge: "t-1-bridge".into(),
        channels: vec![CALLER.into()],
        absorb_dtmf: false,
    };
    let failed = || Input::RequestFailed {
        node: NODE.into(),
        call: CallKey(1),
        request: add.clone(),
        status: Some(422),
        message: "".into(),
    };
    assert_eq!(requests(&engine.handle(200, failed())), vec![add.clone()]);
    let out = engine.handle(210, failed());
    assert_eq!(
        requests(&out),
        vec![
            hangup(&callee, HangupCause::FAILURE),
            hangup(CALLER, HangupCause::FAILURE),
            AriRequest::DestroyBridge {
                bridge: "t-1-bridge".into()
            }
        ]
    );
}

#[test]
fn r3_caller_hangs_up_the_callee_follows_and_the_bridge_goes() {
    let (mut engine, callee) = connected();
    let out = engine.handle(
        5_000,
        event(json!({"type": "StasisEnd", "channel": channel(CALLER)})),
    );
    assert_eq!(
        requests(&out),
        vec![
            hangup(&callee, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: "t-1-bridge".into()
            }
        ]
    );
    assert!(ended(&out));
    // The rest of the hangup's events change nothing.
    assert!(engine.handle(5_001, destroyed(CALLER, 16)).is_empty());
    assert!(engine.handle(5_002, destroyed(&callee, 16)).is_empty());
}

#[test]
fn r3_callee_hangs_up_the_caller_follows() {
    let (mut engine, callee) = connected();
    let out = engine.handle(5_000, hangup_request(&callee));
    assert_eq!(
        requests(&out)[0],
        hangup(CALLER, HangupCause::NORMAL_CLEARING)
    );
    assert!(ended(&out));
}

#[test]
fn a_resync_without_the_callers_channel_ends_the_call() {
    let (mut engine, callee) = connected();
    let still_there: Vec<Channel> = vec![serde_json::from_value(channel(&callee)).unwrap()];
    let out = engine.handle(
        9_000,
        Input::NodeSynced {
            node: NODE.into(),
            channels: still_there,
            bridges: vec![],
        },
    );
    assert_eq!(
        requests(&out)[0],
        hangup(&callee, HangupCause::NORMAL_CLEARING)
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn a_resync_with_every_channel_present_changes_nothing() {
    let (mut engine, callee) = connected();
    let all: Vec<Channel> = [CALLER, callee.as_str()]
        .iter()
        .map(|id| serde_json::from_value(channel(id)).unwrap())
        .collect();
    let out = engine.handle(
        9_000,
        Input::NodeSynced {
            node: NODE.into(),
            channels: all,
            bridges: vec![bridge("t-1-bridge")],
        },
    );
    assert!(out.is_empty());
    assert_eq!(engine.call_count(), 1);
}

fn bridge(id: &str) -> Bridge {
    serde_json::from_value(json!({"id": id, "channels": []})).unwrap()
}

#[test]
fn a_resync_destroys_bridges_of_this_instance_that_no_call_owns() {
    let (mut engine, callee) = connected();
    let out = engine.handle(
        9_000,
        Input::NodeSynced {
            node: NODE.into(),
            channels: [CALLER, callee.as_str()]
                .iter()
                .map(|id| serde_json::from_value(channel(id)).unwrap())
                .collect(),
            bridges: vec![
                bridge("t-1-bridge"),
                bridge("t-7-bridge"),
                bridge("other-1-bridge"),
            ],
        },
    );
    assert_eq!(
        requests(&out),
        vec![AriRequest::DestroyBridge {
            bridge: "t-7-bridge".into()
        }]
    );
}

#[test]
fn the_same_channel_id_on_another_node_is_another_channel() {
    let (mut engine, _) = connected();
    let other_node = Input::Event {
        node: "node2".into(),
        event: serde_json::from_value(json!({"type": "StasisEnd", "channel": channel(CALLER)}))
            .unwrap(),
    };
    assert!(engine.handle(1_000, other_node).is_empty());
    assert_eq!(engine.call_count(), 1);
}

#[test]
fn a_leftover_dialed_leg_of_an_earlier_run_is_hung_up() {
    let mut engine = engine();
    let out = engine.handle(0, stasis_start("old-1-b", &["dialed"]));
    assert_eq!(
        requests(&out),
        vec![hangup("old-1-b", HangupCause::NORMAL_CLEARING)]
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn routes_fill_placeholders_and_match_the_whole_extension() {
    let route = Route::new(r"9(\d+)", "PJSIP/trunk/sip:{1}@gw").unwrap();
    assert_eq!(
        route.dial_string("90301234").as_deref(),
        Some("PJSIP/trunk/sip:0301234@gw")
    );
    assert_eq!(route.dial_string("x90301234"), None);
    assert_eq!(
        Route::new("(a)", "PJSIP/{2}").unwrap_err(),
        RouteError::Placeholder("2".into(), 1)
    );
    assert_eq!(
        Route::new("a", "PJSIP/{exten").unwrap_err(),
        RouteError::Braces
    );
}
