//! Phone-initiated transfers (B1–B7, A1–A6), fed event by event.

use serde_json::{json, Value};

use super::adopt::{app_channel, bridge_of, synced};
use super::*;

/// Call 1: CALLER (party 0) dialed bob, whose leg `t-1-b` (party 1) answered; bridge `t-1-bridge`.
pub(super) const TRANSFEREE: &str = "t-1-b";
pub(super) const BRIDGE1: &str = "t-1-bridge";
/// Call 2, the consult call: CONSULT (the transferer's second leg) dialed carol, `t-2-b` answered.
pub(super) const CONSULT: &str = "consult-leg";
pub(super) const CONSULTED: &str = "t-2-b";
pub(super) const BRIDGE2: &str = "t-2-bridge";

pub(super) fn refer(source: &str, destination: &str) -> Value {
    let mut value: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/captures/ChannelTransfer-blind.json"
    ))
    .unwrap();
    value["referred_by"]["source_channel"] = channel(source);
    value["refer_to"]["requested_destination"]["destination"] = json!(destination);
    value
}

/// Asterisk's ChannelTransfer event after it sent the final NOTIFY 200 of a REFER on `source`.
fn refer_reported(source: &str) -> Input {
    let mut value = refer(source, "carol");
    value["state"] = json!("channel_answered");
    event(value)
}

pub(super) fn blind_refer(source: &str, destination: &str) -> Input {
    event(refer(source, destination))
}

/// An attended REFER on `source` whose Replaces names `replaced`'s dialog; `resolved` says whether
/// Asterisk found that dialog itself (then it names the channel, else only the Call-ID and tags).
pub(super) fn attended_refer(source: &str, replaced: &str, resolved: bool) -> Input {
    let mut value = refer(source, "carol");
    let destination = &mut value["refer_to"]["requested_destination"];
    destination["protocol_id"] = json!(format!("{replaced}@test"));
    destination["additional_protocol_params"] = json!([
        {"parameter_name": "from", "parameter_value": "tag-a"},
        {"parameter_name": "to", "parameter_value": "tag-b"}
    ]);
    if resolved {
        value["refer_to"]["destination_channel"] = channel(replaced);
    }
    event(value)
}

pub(super) fn stasis_end(id: &str) -> Input {
    event(json!({"type": "StasisEnd", "channel": channel(id)}))
}

pub(super) fn entered_bridge(bridge: &str, id: &str) -> Input {
    event(
        json!({"type": "ChannelEnteredBridge", "bridge": {"id": bridge, "channels": []}, "channel": channel(id)}),
    )
}

pub(super) fn progress(channel: &str, state: TransferProgress) -> AriRequest {
    AriRequest::TransferProgress {
        channel: channel.into(),
        state,
    }
}

pub(super) fn add(bridge: &str, channel: &str) -> AriRequest {
    AriRequest::AddToBridge {
        bridge: bridge.into(),
        channels: vec![channel.into()],
        absorb_dtmf: false,
    }
}

fn stop_ringback() -> AriRequest {
    AriRequest::StopPlayback {
        playback: "t-2-ring".into(),
    }
}

const TARGET: &str = "t-2-t";

/// A connected call 1 with a blind transfer of the transferee to carol, REFERed on `source`.
fn blind_pending(source: &str) -> Engine {
    let (mut engine, _) = connected();
    let out = engine.handle(1_000, blind_refer(source, "carol"));
    let transferee = if source == CALLER { TRANSFEREE } else { CALLER };
    let (variables, caller) = on_behalf_of(transferee);
    assert_eq!(
        requests(&out),
        vec![
            progress(source, TransferProgress::Progress),
            AriRequest::RemoveFromBridge {
                bridge: BRIDGE1.into(),
                channels: vec![source.into()]
            },
            AriRequest::PlayOnBridge {
                bridge: BRIDGE1.into(),
                playback: "t-2-ring".into(),
                media: "tone:ring".into()
            },
            AriRequest::CreateChannel {
                channel: TARGET.into(),
                endpoint: "PJSIP/carol".into(),
                app_args: "dialed".into(),
                originator: Some(transferee.into()),
                variables,
            },
        ]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
    let out = engine.handle(1_001, stasis_start(TARGET, &["dialed"]));
    assert_eq!(
        requests(&out),
        vec![AriRequest::Dial {
            channel: TARGET.into(),
            caller,
            timeout_secs: 35
        }]
    );
    engine
}

pub(super) fn terminal_reports(outputs: &[Output]) -> Vec<AriRequest> {
    requests(outputs)
        .into_iter()
        .filter(|r| matches!(r, AriRequest::TransferProgress { state, .. } if state.is_terminal()))
        .collect()
}

/// What a blind target's answer brings: the ringback stops, the target joins the transferee, the
/// transferer is told 200.
fn target_joins() -> Vec<AriRequest> {
    vec![
        stop_ringback(),
        add(BRIDGE1, TARGET),
        progress(CALLER, TransferProgress::Answered),
    ]
}

#[test]
fn b1_blind_target_answers_joins_the_transferee_and_the_transferer_is_hung_up() {
    let mut engine = blind_pending(CALLER);
    let out = engine.handle(1_500, state_change(TARGET, "Up"));
    assert_eq!(requests(&out), target_joins());
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    // The transferer's phone gets a moment to hang up by itself, then the app hangs it up.
    assert_eq!(engine.poll_timeout(), Some(2_500));
    let out = engine.handle_timeout(2_500);
    assert_eq!(
        requests(&out),
        vec![hangup(CALLER, HangupCause::NORMAL_CLEARING)]
    );
    assert_eq!(engine.poll_timeout(), None);
    // The transferer's own hangup events and Asterisk's follow-up ChannelTransfer change nothing.
    assert!(engine.handle(2_600, stasis_end(CALLER)).is_empty());
    let mut follow_up = refer(CALLER, "carol");
    follow_up["state"] = json!("channel_answered");
    assert!(engine.handle(2_601, event(follow_up)).is_empty());
    // The call goes on between transferee and target: the target hanging up ends it.
    let out = engine.handle(9_000, stasis_end(TARGET));
    assert_eq!(
        requests(&out),
        vec![
            hangup(TRANSFEREE, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            }
        ]
    );
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn b1_a_transferer_that_hangs_up_by_itself_after_the_200_is_not_hung_up_again() {
    let mut engine = blind_pending(CALLER);
    engine.handle(1_500, state_change(TARGET, "Up"));
    assert!(engine.handle(1_600, stasis_end(CALLER)).is_empty());
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
}

#[test]
fn b2_blind_target_busy_gives_603_and_the_transferer_back() {
    let mut engine = blind_pending(CALLER);
    let busy = json!({"type": "ChannelHangupRequest", "cause": 17, "channel": channel(TARGET)});
    let out = engine.handle(1_500, event(busy));
    assert_eq!(
        requests(&out),
        vec![
            stop_ringback(),
            add(BRIDGE1, CALLER),
            progress(CALLER, TransferProgress::Declined),
        ]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    // The target's later events belong to no call.
    assert!(engine.handle(1_501, destroyed(TARGET, 17)).is_empty());
}

#[test]
fn b2_blind_target_rejects_gives_603() {
    let mut engine = blind_pending(CALLER);
    let out = engine.handle(1_500, destroyed(TARGET, 21));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Declined)]
    );
}

#[test]
fn b3_blind_no_answer_gives_503_and_the_transferer_back() {
    let mut engine = blind_pending(CALLER);
    assert_eq!(engine.poll_timeout(), Some(31_000));
    let out = engine.handle_timeout(31_000);
    assert_eq!(
        requests(&out),
        vec![
            hangup(TARGET, HangupCause::NO_ANSWER),
            stop_ringback(),
            add(BRIDGE1, CALLER),
            progress(CALLER, TransferProgress::Unavailable),
        ]
    );
}

#[test]
fn b3_blind_unreachable_target_gives_503() {
    let mut engine = blind_pending(CALLER);
    let failed = Input::RequestFailed {
        node: NODE.into(),
        call: CallKey(1),
        request: AriRequest::CreateChannel {
            channel: TARGET.into(),
            endpoint: "PJSIP/carol".into(),
            app_args: "dialed".into(),
            originator: None,
            variables: vec![],
        },
        status: Some(500),
        message: "Allocation failed".into(),
    };
    let out = engine.handle(1_010, failed);
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Unavailable)]
    );
    assert!(requests(&out).contains(&add(BRIDGE1, CALLER)));
}

#[test]
fn b4_blind_without_a_route_gives_503_at_once_and_changes_nothing() {
    let (mut engine, _) = connected();
    let out = engine.handle(1_000, blind_refer(CALLER, "12345"));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Progress),
            progress(CALLER, TransferProgress::Unavailable)
        ]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn b5_transferee_hangs_up_while_the_target_rings() {
    let mut engine = blind_pending(CALLER);
    let out = engine.handle(1_500, stasis_end(TRANSFEREE));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Unavailable),
            hangup(TARGET, HangupCause::NORMAL_CLEARING),
            hangup(CALLER, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            }
        ]
    );
    assert!(ended(&out));
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn b6_transferer_hangs_up_while_the_target_rings_and_the_transfer_goes_on() {
    let mut engine = blind_pending(CALLER);
    assert!(requests(&engine.handle(1_200, stasis_end(CALLER))).is_empty());
    let out = engine.handle(1_500, state_change(TARGET, "Up"));
    assert_eq!(requests(&out), vec![stop_ringback(), add(BRIDGE1, TARGET)]);
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
}

const RECALL: &str = "t-2-t-recall";

/// A blind transfer whose target failed (busy) after the transferer hung up.
/// B6: the transferer's endpoint is called back for the transferee.
fn recall_created() -> AriRequest {
    AriRequest::CreateChannel {
        channel: RECALL.into(),
        endpoint: "PJSIP/alice".into(),
        app_args: "dialed".into(),
        originator: Some(TRANSFEREE.into()),
        variables: on_behalf_of(TRANSFEREE).0,
    }
}

fn recalling() -> Engine {
    let mut engine = blind_pending(CALLER);
    engine.handle(1_200, stasis_end(CALLER));
    let out = engine.handle(1_500, destroyed(TARGET, 17));
    assert_eq!(
        requests(&out),
        vec![recall_created()],
        "the transferer's endpoint is called back; the transferee keeps hearing ringback"
    );
    let out = engine.handle(1_510, stasis_start(RECALL, &["dialed"]));
    assert_eq!(
        requests(&out),
        vec![AriRequest::Dial {
            channel: RECALL.into(),
            caller: on_behalf_of(TRANSFEREE).1,
            timeout_secs: 35
        }]
    );
    engine
}

#[test]
fn b6_target_fails_after_the_transferer_left_and_the_recalled_transferer_gets_the_transferee() {
    let mut engine = recalling();
    let out = engine.handle(2_000, state_change(RECALL, "Up"));
    assert_eq!(requests(&out), vec![stop_ringback(), add(BRIDGE1, RECALL)]);
    assert_eq!(engine.phase_of(NODE, RECALL), Some(CallPhase::Connected));
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn b6_the_recall_fails_too_and_the_transferee_is_released() {
    let mut engine = recalling();
    let out = engine.handle(2_000, destroyed(RECALL, 19));
    assert_eq!(
        requests(&out),
        vec![
            stop_ringback(),
            hangup(TRANSFEREE, HangupCause::NO_ANSWER),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            }
        ]
    );
    assert!(ended(&out));
}

#[test]
fn b6_without_recalls_the_transferee_is_released_when_the_target_fails() {
    let mut engine = Engine::new(EngineConfig {
        app: "ari-transfer".into(),
        recall_transferer: false,
        ..engine().config
    });
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    engine.handle(100, state_change(TRANSFEREE, "Up"));
    engine.handle(1_000, blind_refer(CALLER, "carol"));
    engine.handle(1_001, stasis_start(TARGET, &["dialed"]));
    engine.handle(1_200, stasis_end(CALLER));
    let out = engine.handle(1_500, destroyed(TARGET, 17));
    assert_eq!(
        requests(&out),
        vec![
            stop_ringback(),
            hangup(TRANSFEREE, HangupCause::USER_BUSY),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            }
        ]
    );
    assert!(ended(&out));
}

#[test]
fn b7_a_second_refer_while_one_is_pending_shares_the_first_ones_outcome() {
    let mut engine = blind_pending(CALLER);
    // On the transferer's own channel: nothing is posted (a post would reach the first REFER too).
    let out = engine.handle(1_100, blind_refer(CALLER, "dave"));
    assert_eq!(requests(&out), vec![]);
    // On the other party's channel, which has no REFER pending: declined, alone.
    let out = engine.handle(1_200, blind_refer(TRANSFEREE, "dave"));
    assert_eq!(
        requests(&out),
        vec![
            progress(TRANSFEREE, TransferProgress::Progress),
            progress(TRANSFEREE, TransferProgress::Declined)
        ]
    );
    // The first goes on, and its 200 is the only final report.
    let out = engine.handle(1_500, state_change(TARGET, "Up"));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Answered)]
    );
}

#[test]
fn a6_blind_refer_from_the_callees_phone_transfers_the_caller() {
    let mut engine = blind_pending(TRANSFEREE);
    let out = engine.handle(1_500, state_change(TARGET, "Up"));
    assert_eq!(
        requests(&out),
        vec![
            stop_ringback(),
            add(BRIDGE1, TARGET),
            progress(TRANSFEREE, TransferProgress::Answered),
        ]
    );
    assert_eq!(
        requests(&engine.handle_timeout(2_500)),
        vec![hangup(TRANSFEREE, HangupCause::NORMAL_CLEARING)]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn a_refer_on_a_call_still_ringing_is_declined() {
    let (mut engine, _) = dialing();
    let out = engine.handle(10, blind_refer(CALLER, "carol"));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Declined)]
    );
}

/// Call 1 (CALLER ↔ TRANSFEREE) and the consult call 2 (CONSULT ↔ CONSULTED), both connected.
pub(super) fn two_calls() -> Engine {
    let (mut engine, _) = connected();
    engine.handle(200, stasis_start(CONSULT, &["carol"]));
    engine.handle(300, state_change(CONSULTED, "Up"));
    assert_eq!(engine.phase_of(NODE, CONSULT), Some(CallPhase::Connected));
    engine
}

fn attended_pending(source: &str, replaced: &str, resolved: bool) -> Engine {
    let mut engine = two_calls();
    let out = engine.handle(1_000, attended_refer(source, replaced, resolved));
    let (newcomer, bridge) = if source == CALLER || source == TRANSFEREE {
        (CONSULTED, BRIDGE1)
    } else {
        (TRANSFEREE, BRIDGE2)
    };
    assert_eq!(
        requests(&out),
        vec![
            progress(source, TransferProgress::Progress),
            add(bridge, newcomer)
        ]
    );
    assert!(ended(&out), "the consult call is absorbed");
    assert_eq!(engine.call_count(), 1);
    engine
}

#[test]
fn a1_attended_resolved_by_asterisk_moves_the_consulted_party_to_the_transferee() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    let out = engine.handle(1_010, entered_bridge(BRIDGE1, CONSULTED));
    assert_eq!(
        requests(&out),
        vec![
            AriRequest::DestroyBridge {
                bridge: BRIDGE2.into()
            },
            progress(CALLER, TransferProgress::Answered),
        ]
    );
    // The consult leg goes once Asterisk has reported the REFER ended (it uses R's channel until then).
    assert_eq!(
        requests(&engine.handle(1_012, refer_reported(CALLER))),
        vec![hangup(CONSULT, HangupCause::NORMAL_CLEARING)]
    );
    // The leg that sent the REFER is hung up a moment later, unless its phone hangs up first.
    assert_eq!(
        requests(&engine.handle_timeout(2_010)),
        vec![hangup(CALLER, HangupCause::NORMAL_CLEARING)]
    );
    assert_eq!(engine.phase_of(NODE, CONSULTED), Some(CallPhase::Connected));
    assert_eq!(
        engine.phase_of(NODE, TRANSFEREE),
        Some(CallPhase::Connected)
    );
    // The transferer's two legs hang up; that changes nothing for the transferee and the target.
    assert!(engine.handle(1_020, stasis_end(CALLER)).is_empty());
    assert!(engine.handle(1_021, stasis_end(CONSULT)).is_empty());
    // Later, the transferee hangs up: the target follows and bridge1 goes.
    let out = engine.handle(5_000, stasis_end(TRANSFEREE));
    assert_eq!(
        requests(&out),
        vec![
            hangup(CONSULTED, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            }
        ]
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn a2_attended_not_resolved_by_asterisk_is_resolved_by_call_id() {
    let mut engine = attended_pending(CALLER, CONSULT, false);
    let out = engine.handle(1_010, entered_bridge(BRIDGE1, CONSULTED));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Answered)]
    );
}

#[test]
fn a4_attended_with_an_unknown_call_id_gives_503_and_changes_nothing() {
    let mut engine = two_calls();
    let out = engine.handle(1_000, attended_refer(CALLER, "nowhere", false));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Progress),
            progress(CALLER, TransferProgress::Unavailable)
        ]
    );
    assert_eq!(engine.call_count(), 2);
}

#[test]
fn a4_attended_naming_a_dialog_of_the_same_call_gives_503() {
    let mut engine = two_calls();
    let out = engine.handle(1_000, attended_refer(CALLER, TRANSFEREE, false));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Unavailable)]
    );
}

#[test]
fn a5_consulted_party_hangs_up_during_the_move() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    let out = engine.handle(1_005, stasis_end(CONSULTED));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Unavailable),
            hangup(CONSULT, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE2.into()
            }
        ]
    );
    // The transferer keeps its first call.
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    assert_eq!(
        engine.phase_of(NODE, TRANSFEREE),
        Some(CallPhase::Connected)
    );
}

#[test]
fn a5_consulted_party_hangs_up_during_the_move_after_the_transferer_left_releases_the_transferee() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    // The transferer's phone hangs up (Asterisk tells it 503), then C goes before the move completed:
    // the transferee has nobody left, and is not left alone in bridge1.
    assert_eq!(requests(&engine.handle(1_003, stasis_end(CALLER))), vec![]);
    let out = engine.handle(1_005, stasis_end(CONSULTED));
    assert_eq!(
        requests(&out),
        vec![
            hangup(CONSULT, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE2.into()
            },
            hangup(TRANSFEREE, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            },
        ]
    );
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn a5_transferee_hangs_up_during_the_move() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    let out = engine.handle(1_005, stasis_end(TRANSFEREE));
    assert_eq!(
        requests(&out),
        vec![
            progress(CALLER, TransferProgress::Unavailable),
            hangup(CONSULT, HangupCause::NORMAL_CLEARING),
            hangup(CONSULTED, HangupCause::NORMAL_CLEARING),
            hangup(CALLER, HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: BRIDGE2.into()
            },
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            },
        ]
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn a6_attended_refer_on_the_consult_leg_moves_the_first_calls_party() {
    // The phone may send the REFER on its consult leg, naming the first call's dialog.
    let mut engine = attended_pending(CONSULT, CALLER, true);
    let out = engine.handle(1_010, entered_bridge(BRIDGE2, TRANSFEREE));
    assert_eq!(
        requests(&out),
        vec![
            AriRequest::DestroyBridge {
                bridge: BRIDGE1.into()
            },
            progress(CONSULT, TransferProgress::Answered),
        ]
    );
    // Without Asterisk's report, both of the transferer's legs go when its moment is over.
    assert_eq!(
        requests(&engine.handle_timeout(2_010)),
        vec![
            hangup(CONSULT, HangupCause::NORMAL_CLEARING),
            hangup(CALLER, HangupCause::NORMAL_CLEARING)
        ]
    );
    assert_eq!(
        engine.phase_of(NODE, TRANSFEREE),
        Some(CallPhase::Connected)
    );
}

#[test]
fn a_transferer_still_departing_from_a_call_that_is_absorbed_is_hung_up_at_once() {
    let mut engine = two_calls();
    // Call 1 blind-transfers TRANSFEREE to dave: CALLER is told 200 and given a moment to hang up.
    engine.handle(1_000, blind_refer(CALLER, "dave"));
    engine.handle(1_001, stasis_start("t-3-t", &["dialed"]));
    engine.handle(1_100, state_change("t-3-t", "Up"));
    // Before that moment is over, CONSULT's phone REFERs, replacing dave's dialog: call 1 is absorbed.
    let out = engine.handle(1_200, attended_refer(CONSULT, "t-3-t", false));
    assert!(requests(&out).contains(&hangup(CALLER, HangupCause::NORMAL_CLEARING)));
    assert_eq!(requests(&engine.handle_timeout(3_000)), vec![]);
}

/// A re-sync after the websocket was down finds only `present` of the call's channels.
fn resynced_with(engine: &mut Engine, at: Millis, present: &[&str]) -> Vec<Output> {
    let channels = present.iter().map(|id| app_channel(id, "")).collect();
    engine.handle(at, synced(channels, vec![]))
}

#[test]
fn b3_a_target_that_vanished_while_the_app_was_away_gives_503_at_once() {
    let mut engine = blind_pending(CALLER);
    let out = resynced_with(&mut engine, 5_000, &[CALLER, TRANSFEREE]);
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Unavailable)]
    );
    assert!(requests(&out).contains(&add(BRIDGE1, CALLER)));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn b5_every_leg_vanished_with_asterisk_ends_the_transfer_without_ringing_on_or_recalling() {
    let mut engine = blind_pending(CALLER);
    let out = resynced_with(&mut engine, 5_000, &[]);
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
    // No ring timeout left to fire, and nobody called back for a call that is gone.
    assert_eq!(engine.poll_timeout(), None);
    assert!(!requests(&out)
        .iter()
        .any(|r| matches!(r, AriRequest::CreateChannel { .. })));
}

#[test]
fn b6_the_transferer_and_the_target_vanished_calls_the_transferer_back_for_the_transferee() {
    let mut engine = blind_pending(CALLER);
    let out = resynced_with(&mut engine, 5_000, &[TRANSFEREE]);
    // Both are reported, not only the transferer (whose absence alone lets the target ring on): the
    // target's failure after the transferer left is B6's, and the transferee is still there.
    assert_eq!(requests(&out), vec![recall_created()]);
}

#[test]
fn b1_a_target_that_answered_while_the_app_was_away_joins_the_transferee_at_the_resync() {
    let mut engine = blind_pending(CALLER);
    // carol answered during the gap: her ChannelStateChange never came; the re-sync shows her Up.
    let out = resynced_with(&mut engine, 5_000, &[CALLER, TRANSFEREE, TARGET]);
    assert_eq!(requests(&out), target_joins());
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    // Her state change, queued behind the re-sync, changes nothing.
    assert!(requests(&engine.handle(5_001, state_change(TARGET, "Up"))).is_empty());
}

#[test]
fn b1_a_target_still_ringing_at_the_resync_rings_on() {
    let mut engine = blind_pending(CALLER);
    let mut ringing = app_channel(TARGET, "dialed");
    ringing.state = "Ringing".into();
    let channels = vec![
        app_channel(CALLER, ""),
        app_channel(TRANSFEREE, ""),
        ringing,
    ];
    let out = engine.handle(5_000, synced(channels, vec![]));
    assert!(requests(&out).is_empty(), "{out:?}");
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
}

#[test]
fn a1_a_move_confirmed_while_the_app_was_away_completes_at_the_resync() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    // The consulted party entered bridge1 during the gap: the re-sync shows it there.
    let present = [CALLER, CONSULT, TRANSFEREE, CONSULTED];
    let channels = present.iter().map(|id| app_channel(id, "")).collect();
    let bridges = vec![bridge_of(BRIDGE1, "", &[TRANSFEREE, CONSULTED])];
    let out = engine.handle(5_000, synced(channels, bridges));
    assert_eq!(
        terminal_reports(&out),
        vec![progress(CALLER, TransferProgress::Answered)]
    );
    assert!(requests(&out).contains(&AriRequest::DestroyBridge {
        bridge: BRIDGE2.into()
    }));
    assert_eq!(engine.phase_of(NODE, CONSULTED), Some(CallPhase::Connected));
}

#[test]
fn r1_a_callee_that_answered_while_the_app_was_away_is_bridged_at_the_resync() {
    let (mut engine, callee) = dialing();
    let out = resynced_with(&mut engine, 5_000, &[CALLER, &callee]);
    assert!(requests(&out).contains(&AriRequest::Answer {
        channel: CALLER.into()
    }));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn a_target_still_being_created_at_a_resync_is_not_taken_for_gone() {
    let (mut engine, _) = connected();
    engine.handle(1_000, blind_refer(CALLER, "carol"));
    // The target's StasisStart has not come yet: its create request may still be queued.
    let out = resynced_with(&mut engine, 1_001, &[CALLER, TRANSFEREE]);
    assert!(terminal_reports(&out).is_empty());
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
}

#[test]
fn a1_the_transferer_hanging_up_its_legs_itself_leaves_nothing_to_release() {
    let mut engine = attended_pending(CALLER, CONSULT, true);
    engine.handle(1_010, entered_bridge(BRIDGE1, CONSULTED));
    // The phone hangs up both dialogs after the 200, before Asterisk's report comes.
    assert!(requests(&engine.handle(1_011, stasis_end(CONSULT))).is_empty());
    assert!(requests(&engine.handle(1_012, stasis_end(CALLER))).is_empty());
    assert!(requests(&engine.handle(1_013, refer_reported(CALLER))).is_empty());
    assert_eq!(engine.poll_timeout(), None);
    assert_eq!(engine.phase_of(NODE, CONSULTED), Some(CallPhase::Connected));
}
