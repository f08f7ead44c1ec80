//! Attended transfers across nodes (A3), fed event by event: the transferer's call 1 (CALLER ↔ TRANSFEREE)
//! on node1, the consult call (CONSULT ↔ CONSULTED) on node2, joined by a link leg through the trunk.

use serde_json::{json, Value};

use super::transfer::{
    add, attended_refer, entered_bridge, progress, terminal_reports, BRIDGE1, BRIDGE2, CONSULT,
    CONSULTED, TRANSFEREE,
};
use super::*;

pub(super) const NODE2: &str = "node2";
/// The link leg on node1, created by the app (the third key of the engine).
const LINK1: &str = "t-3-link";
/// The same call arriving on node2 over the trunk, its extension the token the app chose.
const LINK2: &str = "node2-1796150911.7";
const TOKEN: &str = "xfertn3";

pub(super) fn engine_with_trunks() -> Engine {
    let trunk = |node: &str, peer: &str| Trunk {
        node: node.into(),
        peer: peer.into(),
        endpoint: peer.into(),
    };
    Engine::new(EngineConfig {
        app: "ari-transfer".into(),
        trunks: vec![trunk(NODE, NODE2), trunk(NODE2, NODE)],
        ..engine().config
    })
}

/// The same input, from another node.
pub(super) fn on(node: &str, input: Input) -> Input {
    match input {
        Input::Event { event, .. } => Input::Event {
            node: node.into(),
            event,
        },
        other => other,
    }
}

/// The requests, with the node each one goes to.
fn requests_on(outputs: &[Output]) -> Vec<(String, AriRequest)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ari { node, request, .. } => Some((node.to_string(), request.clone())),
            Output::CallEnded { .. } | Output::Event(_) => None,
        })
        .collect()
}

fn at(node: &str, request: AriRequest) -> (String, AriRequest) {
    (node.to_owned(), request)
}

/// A channel of the trunk endpoint named `peer`, as Asterisk names it on the node it is on.
fn trunk_leg(id: &str, peer: &str, exten: &str) -> Value {
    let mut channel = channel(id);
    channel["name"] = json!(format!("PJSIP/{peer}-0000000a"));
    channel["dialplan"]["context"] = json!("from-nodes");
    channel["dialplan"]["exten"] = json!(exten);
    channel
}

fn calls_on_two_nodes() -> Engine {
    let mut engine = engine_with_trunks();
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    engine.handle(100, state_change(TRANSFEREE, "Up"));
    engine.handle(200, on(NODE2, stasis_start(CONSULT, &["carol"])));
    engine.handle(201, on(NODE2, stasis_start(CONSULTED, &["dialed"])));
    engine.handle(300, on(NODE2, state_change(CONSULTED, "Up")));
    assert_eq!(engine.phase_of(NODE2, CONSULT), Some(CallPhase::Connected));
    engine
}

/// The REFER on CALLER (node1) names the consult dialog on node2, which Asterisk could not resolve: the
/// link leg is dialed through node1's trunk to node2, arrives there, and is answered and bridged.
fn linked() -> Engine {
    let mut engine = calls_on_two_nodes();
    let out = engine.handle(1_000, attended_refer(CALLER, CONSULT, false));
    assert_eq!(
        requests_on(&out),
        vec![
            at(NODE, progress(CALLER, TransferProgress::Progress)),
            at(
                NODE,
                AriRequest::CreateChannel {
                    channel: LINK1.into(),
                    endpoint: format!("PJSIP/{TOKEN}@node2"),
                    app_args: DIALED_LEG_ARG.into(),
                    originator: Some(TRANSFEREE.into()),
                    variables: on_behalf_of(TRANSFEREE).0,
                }
            ),
        ]
    );
    let out = engine.handle(1_001, stasis_start(LINK1, &["dialed"]));
    assert_eq!(
        requests_on(&out),
        vec![at(
            NODE,
            AriRequest::Dial {
                channel: LINK1.into(),
                caller: on_behalf_of(TRANSFEREE).1,
                timeout_secs: 35
            }
        )]
    );
    let arrival =
        json!({"type": "StasisStart", "args": [], "channel": trunk_leg(LINK2, NODE, TOKEN)});
    let out = engine.handle(1_010, on(NODE2, event(arrival)));
    assert_eq!(
        requests_on(&out),
        vec![
            at(
                NODE2,
                AriRequest::Answer {
                    channel: LINK2.into()
                }
            ),
            at(NODE2, add(BRIDGE2, LINK2)),
        ]
    );
    assert_eq!(engine.phase_of(NODE2, LINK2), Some(CallPhase::Transferring));
    engine
}

#[test]
fn a3_attended_across_nodes_joins_both_sides_through_a_link_leg() {
    let mut engine = linked();
    let out = engine.handle(1_020, state_change(LINK1, "Up"));
    assert_eq!(requests_on(&out), vec![at(NODE, add(BRIDGE1, LINK1))]);
    // A second answer indication (the Dial event) adds nothing.
    let dial_answer = json!({"type": "Dial", "dialstatus": "ANSWER", "peer": channel(LINK1)});
    assert_eq!(requests(&engine.handle(1_021, event(dial_answer))), vec![]);

    let out = engine.handle(1_030, entered_bridge(BRIDGE1, LINK1));
    assert_eq!(
        requests_on(&out),
        vec![
            at(NODE, progress(CALLER, TransferProgress::Answered)),
            at(NODE2, hangup(CONSULT, HangupCause::NORMAL_CLEARING)),
        ]
    );
    assert_eq!(
        requests_on(&engine.handle_timeout(2_030)),
        vec![at(NODE, hangup(CALLER, HangupCause::NORMAL_CLEARING))]
    );
    assert_eq!(engine.phase_of(NODE, LINK1), Some(CallPhase::Connected));
    assert_eq!(engine.phase_of(NODE2, LINK2), Some(CallPhase::Connected));

    // Later the transferee hangs up: the link leg goes; its BYE ends the call on node2 too.
    let out = engine.handle(5_000, hangup_request(TRANSFEREE));
    assert_eq!(
        requests_on(&out),
        vec![
            at(NODE, hangup(LINK1, HangupCause::NORMAL_CLEARING)),
            at(
                NODE,
                AriRequest::DestroyBridge {
                    bridge: BRIDGE1.into()
                }
            ),
        ]
    );
    let out = engine.handle(5_010, on(NODE2, hangup_request(LINK2)));
    assert_eq!(
        requests_on(&out),
        vec![
            at(NODE2, hangup(CONSULTED, HangupCause::NORMAL_CLEARING)),
            at(
                NODE2,
                AriRequest::DestroyBridge {
                    bridge: BRIDGE2.into()
                }
            ),
        ]
    );
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn a3_the_consulted_party_hangs_up_during_the_link_gives_503_and_the_transferer_back() {
    let mut engine = linked();
    let out = engine.handle(1_020, on(NODE2, hangup_request(CONSULTED)));
    let mut got = requests_on(&out);
    got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut want = vec![
        at(NODE2, hangup(LINK2, HangupCause::NORMAL_CLEARING)),
        at(NODE2, hangup(CONSULT, HangupCause::NORMAL_CLEARING)),
        at(NODE2, hangup(CONSULTED, HangupCause::NORMAL_CLEARING)),
        at(
            NODE2,
            AriRequest::DestroyBridge {
                bridge: BRIDGE2.into(),
            },
        ),
        at(NODE, progress(CALLER, TransferProgress::Unavailable)),
        at(NODE, hangup(LINK1, HangupCause::NORMAL_CLEARING)),
    ];
    want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(got, want);
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    assert_eq!(engine.phase_of(NODE2, CONSULT), None);
    // The link leg's own hangup, arriving later, changes nothing more.
    assert_eq!(
        requests(&engine.handle(1_030, hangup_request(LINK1))),
        vec![]
    );
    assert_eq!(engine.call_count(), 1);
}

#[test]
fn a3_the_link_leg_fails_gives_503_and_ends_the_consult_call() {
    let mut engine = calls_on_two_nodes();
    engine.handle(1_000, attended_refer(CALLER, CONSULT, false));
    engine.handle(1_001, stasis_start(LINK1, &["dialed"]));
    // node2 is unreachable: the link leg fails before it arrives anywhere.
    let out = engine.handle(1_100, destroyed(LINK1, 34));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Unavailable)]
    );
    assert!(requests_on(&out).contains(&at(NODE2, hangup(CONSULTED, HangupCause::NORMAL_CLEARING))));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    assert_eq!(engine.call_count(), 1);
    // A link leg that arrives for the ended transfer is hung up.
    let arrival =
        json!({"type": "StasisStart", "args": [], "channel": trunk_leg(LINK2, NODE, TOKEN)});
    let out = engine.handle(1_200, on(NODE2, event(arrival)));
    assert_eq!(
        requests_on(&out),
        vec![at(NODE2, hangup(LINK2, HangupCause::NORMAL_CLEARING))]
    );
}

#[test]
fn a3_the_transferee_hangs_up_during_the_link_ends_both_sides() {
    let mut engine = linked();
    let out = engine.handle(1_020, hangup_request(TRANSFEREE));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Unavailable)]
    );
    let got = requests_on(&out);
    for request in [
        at(NODE, hangup(CALLER, HangupCause::NORMAL_CLEARING)),
        at(NODE, hangup(LINK1, HangupCause::NORMAL_CLEARING)),
        at(NODE2, hangup(CONSULT, HangupCause::NORMAL_CLEARING)),
        at(NODE2, hangup(CONSULTED, HangupCause::NORMAL_CLEARING)),
        at(NODE2, hangup(LINK2, HangupCause::NORMAL_CLEARING)),
    ] {
        assert!(got.contains(&request), "{request:?} in {got:?}");
    }
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn a3_without_a_trunk_to_the_consult_calls_node_gives_503() {
    let mut engine = Engine::new(EngineConfig {
        app: "ari-transfer".into(),
        trunks: vec![],
        ..engine_with_trunks().config
    });
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    engine.handle(100, state_change(TRANSFEREE, "Up"));
    engine.handle(200, on(NODE2, stasis_start(CONSULT, &["carol"])));
    engine.handle(300, on(NODE2, state_change(CONSULTED, "Up")));
    let out = engine.handle(1_000, attended_refer(CALLER, CONSULT, false));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Progress),
            progress(CALLER, TransferProgress::Unavailable)
        ]
    );
    assert_eq!(engine.phase_of(NODE2, CONSULT), Some(CallPhase::Connected));
}

/// A call from node1 routed over the trunk to carol on node2: its two trunk legs share one Call-ID.
fn call_through_the_trunk(engine: &mut Engine) {
    let inbound =
        json!({"type": "StasisStart", "args": [], "channel": trunk_leg("node2-in", NODE, "carol")});
    engine.handle(400, on(NODE2, event(inbound)));
    engine.handle(401, on(NODE2, stasis_start("t-2-b", &["dialed"])));
    engine.handle(500, on(NODE2, state_change("t-2-b", "Up")));
    assert_eq!(
        engine.phase_of(NODE2, "node2-in"),
        Some(CallPhase::Connected)
    );
}

#[test]
fn a3_a_refer_naming_a_trunk_legs_call_id_gives_503() {
    let mut engine = engine_with_trunks();
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    engine.handle(100, state_change(TRANSFEREE, "Up"));
    call_through_the_trunk(&mut engine);
    // By Call-ID (node2's trunk leg has it), and as Asterisk resolved it (to a trunk leg of its own).
    for resolved in [false, true] {
        let mut refer = attended_refer(CALLER, "node2-in", resolved);
        if let Input::Event {
            event: Event::ChannelTransfer(transfer),
            ..
        } = &mut refer
        {
            if let Some(channel) = &mut transfer.refer_to.destination_channel {
                channel.name = "PJSIP/node2-0000000b".into();
            }
        }
        let out = engine.handle(1_000, refer);
        assert_eq!(
            terminal_reports(&out),
            vec![progress(CALLER, TransferProgress::Unavailable)]
        );
    }
    assert_eq!(
        engine.phase_of(NODE2, "node2-in"),
        Some(CallPhase::Connected)
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}
