//! Feature-code transfers (D1–D7) and the digit collector in a call, fed event by event. CALLER (party 0)
//! is the transferor P, TRANSFEREE (party 1) the transferee O; `*2201` transfers to carol.

use std::sync::Arc;

use regex::Regex;
use serde_json::json;

use super::transfer::{stasis_end, BRIDGE1, TRANSFEREE};
use super::*;
use crate::engine::metaflow::{ListenOn, Metaflows, Module, Pattern, TransferFlow};

const BRIDGE2: &str = "t-1-f1-bridge";
const RINGBACK: &str = "t-1-f1-ring";
const TARGET: &str = "t-1-f1-t";

fn transfer_flow() -> TransferFlow {
    TransferFlow {
        moh: Some("jazz".into()),
        ..TransferFlow::default()
    }
}

fn metaflows(listen_on: ListenOn) -> Metaflows {
    Metaflows {
        binding_key: '*',
        digit_timeout: 1_000,
        listen_on,
        numbers: vec![("9".into(), Module::Resume)],
        patterns: vec![Pattern {
            regex: Regex::new(r"^(?:2(\d+))$").unwrap(),
            module: Module::Transfer(transfer_flow()),
        }],
    }
}

fn engine_with(listen_on: ListenOn) -> Engine {
    let mut config = engine().config;
    config
        .routes
        .insert(0, Route::new("201", "PJSIP/carol").unwrap());
    config.metaflows.default = Some(Arc::new(metaflows(listen_on)));
    Engine::new(config)
}

/// CALLER and TRANSFEREE connected, with feature codes; the bridge absorbs their digits.
fn connected_with_codes(listen_on: ListenOn) -> Engine {
    let mut engine = engine_with(listen_on);
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    let out = requests(&engine.handle(100, state_change(TRANSFEREE, "Up")));
    assert!(out.contains(&absorbed(BRIDGE1, &[CALLER])));
    assert!(out.contains(&absorbed(BRIDGE1, &[TRANSFEREE])));
    engine
}

fn dtmf(id: &str, digit: char) -> Input {
    event(
        json!({"type": "ChannelDtmfReceived", "digit": digit.to_string(), "duration_ms": 200, "channel": channel(id)}),
    )
}

/// `id` presses `digits`, 300 ms apart from `start`; returns the requests they caused and when the
/// inter-digit timeout of the last one is due.
fn press(engine: &mut Engine, id: &str, digits: &str, start: Millis) -> (Vec<AriRequest>, Millis) {
    let mut out = Vec::new();
    let mut at = start;
    for digit in digits.chars() {
        out.extend(requests(&engine.handle(at, dtmf(id, digit))));
        at += 300;
    }
    (out, at - 300 + 1_000)
}

fn hangup_normal(id: &str) -> AriRequest {
    hangup(id, HangupCause::NORMAL_CLEARING)
}

fn absorbed(bridge: &str, channels: &[&str]) -> AriRequest {
    AriRequest::AddToBridge {
        bridge: bridge.into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        absorb_dtmf: true,
    }
}

fn moh(id: &str, on: bool) -> AriRequest {
    match on {
        true => AriRequest::StartMoh {
            channel: id.into(),
            class: Some("jazz".into()),
        },
        false => AriRequest::StopMoh { channel: id.into() },
    }
}

fn destroy(bridge: &str) -> AriRequest {
    AriRequest::DestroyBridge {
        bridge: bridge.into(),
    }
}

/// What hands the transferee to `joined` (the target, or the recalled transferor): the music `held`
/// hears stops, `joined` moves into bridge1, bridge2 goes.
fn handed_over(joined: &str, held: &str) -> Vec<AriRequest> {
    vec![
        moh(held, false),
        absorbed(BRIDGE1, &[joined]),
        destroy(BRIDGE2),
    ]
}

/// D1: CALLER presses `*2201`; once the digits stop, the transfer starts. Returns the engine with carol's
/// channel dialed and ringing.
fn ringing() -> Engine {
    let mut engine = connected_with_codes(ListenOn::Both);
    let (out, due) = press(&mut engine, CALLER, "*2201", 1_000);
    assert_eq!(out, vec![], "feature digits are not passed on");
    assert_eq!(engine.poll_timeout(), Some(due));
    assert_eq!(
        requests(&engine.handle_timeout(due)),
        vec![
            AriRequest::CreateBridge {
                bridge: BRIDGE2.into(),
                name: "ari-transfer/call-1-consult".into()
            },
            absorbed(BRIDGE2, &[CALLER]),
            moh(TRANSFEREE, true),
            AriRequest::PlayOnChannel {
                channel: CALLER.into(),
                playback: RINGBACK.into(),
                media: "tone:ring".into()
            },
            AriRequest::CreateChannel {
                channel: TARGET.into(),
                endpoint: "PJSIP/carol".into(),
                app_args: DIALED_LEG_ARG.into(),
                originator: Some(CALLER.into()),
                variables: vec![(TRANSFER_HANDLING_VAR.into(), "ari-only".into())],
            },
        ]
    );
    assert_eq!(
        requests(&engine.handle(due + 10, stasis_start(TARGET, &["dialed"]))),
        vec![AriRequest::Dial {
            channel: TARGET.into(),
            caller: Some(CALLER.into()),
            timeout_secs: 35
        }]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
    engine
}

/// D2's first half: carol answers and talks with CALLER in bridge2.
fn talking() -> Engine {
    let mut engine = ringing();
    assert_eq!(
        requests(&engine.handle(5_000, state_change(TARGET, "Up"))),
        vec![
            AriRequest::StopPlayback {
                playback: RINGBACK.into()
            },
            absorbed(BRIDGE2, &[TARGET]),
        ]
    );
    engine
}

#[test]
fn d1_star_two_and_an_extension_holds_the_transferee_and_dials_the_target() {
    ringing();
}

#[test]
fn d2_the_transferor_hangs_up_after_talking_and_transferee_and_target_are_bridged() {
    let mut engine = talking();
    assert_eq!(
        requests(&engine.handle(6_000, stasis_end(CALLER))),
        handed_over(TARGET, TRANSFEREE)
    );
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    // The transferred call ends like any other.
    assert_eq!(
        requests(&engine.handle(9_000, hangup_request(TARGET))),
        vec![hangup_normal(TRANSFEREE), destroy(BRIDGE1)]
    );
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn d3_the_transferor_hangs_up_while_the_target_rings_and_the_target_gets_the_transferee() {
    let mut engine = ringing();
    assert_eq!(requests(&engine.handle(4_000, stasis_end(CALLER))), vec![]);
    assert_eq!(
        requests(&engine.handle(5_000, state_change(TARGET, "Up"))),
        handed_over(TARGET, TRANSFEREE)
    );
    assert_eq!(
        engine.phase_of(NODE, TRANSFEREE),
        Some(CallPhase::Connected)
    );
}

#[test]
fn d3_the_target_fails_after_the_transferor_left_calls_the_transferor_back_then_releases() {
    let mut engine = ringing();
    engine.handle(4_000, stasis_end(CALLER));
    // carol is busy: the transferor's phone is called back at once, for the transferee.
    let out = requests(&engine.handle(4_500, destroyed(TARGET, 17)));
    assert_eq!(
        out,
        vec![AriRequest::CreateChannel {
            channel: "t-1-f1-r1".into(),
            endpoint: "PJSIP/alice".into(),
            app_args: DIALED_LEG_ARG.into(),
            originator: Some(TRANSFEREE.into()),
            // The transferor's phone is shown who it is called back for: bob.
            variables: on_behalf_of(TRANSFEREE).0,
        }]
    );
    // It rings out (the ring timeout is 30 s); after the pause, the last try.
    engine.handle(4_510, stasis_start("t-1-f1-r1", &["dialed"]));
    let out = requests(&engine.handle_timeout(34_500));
    assert_eq!(out, vec![hangup("t-1-f1-r1", HangupCause::NO_ANSWER)]);
    assert_eq!(engine.poll_timeout(), Some(44_500));
    let out = requests(&engine.handle_timeout(44_500));
    assert!(
        matches!(&out[..], [AriRequest::CreateChannel { channel, .. }] if channel == "t-1-f1-r2")
    );
    // That one fails too: no retry is left, and the transferee is released rather than left on hold.
    let out = requests(&engine.handle(45_000, destroyed("t-1-f1-r2", 21)));
    assert_eq!(
        out,
        vec![
            destroy(BRIDGE2),
            hangup(TRANSFEREE, HangupCause::CALL_REJECTED),
            destroy(BRIDGE1)
        ]
    );
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn d3_the_recalled_transferor_gets_the_transferee() {
    let mut engine = ringing();
    engine.handle(4_000, stasis_end(CALLER));
    engine.handle(4_500, destroyed(TARGET, 17));
    engine.handle(4_510, stasis_start("t-1-f1-r1", &["dialed"]));
    let out = requests(&engine.handle(6_000, state_change("t-1-f1-r1", "Up")));
    assert_eq!(out, handed_over("t-1-f1-r1", TRANSFEREE));
    assert_eq!(
        engine.phase_of(NODE, "t-1-f1-r1"),
        Some(CallPhase::Connected)
    );
}

/// What reconnects CALLER with TRANSFEREE from the Ringing stage.
fn reconnected_from_ringing() -> Vec<AriRequest> {
    vec![
        AriRequest::StopPlayback {
            playback: RINGBACK.into(),
        },
        moh(TRANSFEREE, false),
        absorbed(BRIDGE1, &[CALLER]),
        destroy(BRIDGE2),
    ]
}

#[test]
fn d4_a_busy_target_reconnects_the_transferor_with_the_transferee() {
    let mut engine = ringing();
    let out = requests(&engine.handle(4_500, destroyed(TARGET, 17)));
    assert_eq!(out, reconnected_from_ringing());
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn d4_no_answer_within_the_target_timeout_reconnects() {
    let mut engine = ringing();
    let due = engine.poll_timeout().unwrap();
    let mut out = requests(&engine.handle_timeout(due));
    assert_eq!(out.remove(0), hangup(TARGET, HangupCause::NO_ANSWER));
    assert_eq!(out, reconnected_from_ringing());
}

#[test]
fn d4_a_misdial_changes_nothing() {
    let mut engine = connected_with_codes(ListenOn::Both);
    let (_, due) = press(&mut engine, CALLER, "*2999", 1_000);
    assert_eq!(requests(&engine.handle_timeout(due)), vec![]);
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    // Digits that are no feature code at all are dropped too.
    let (_, due) = press(&mut engine, CALLER, "*77", 5_000);
    assert_eq!(requests(&engine.handle_timeout(due)), vec![]);
}

#[test]
fn d4_a_target_that_cannot_be_created_reconnects() {
    let mut engine = ringing();
    let create = AriRequest::CreateChannel {
        channel: TARGET.into(),
        endpoint: "PJSIP/carol".into(),
        app_args: DIALED_LEG_ARG.into(),
        originator: Some(CALLER.into()),
        variables: vec![(TRANSFER_HANDLING_VAR.into(), "ari-only".into())],
    };
    let out = engine.handle(4_100, failed(create, 500));
    let mut out = requests(&out);
    assert_eq!(out.remove(0), hangup(TARGET, HangupCause::UNALLOCATED));
    assert_eq!(out, reconnected_from_ringing());
}

#[test]
fn d5_takeback_while_ringing_hangs_up_the_target_and_reconnects() {
    let mut engine = ringing();
    let (out, _) = press(&mut engine, CALLER, "*1", 4_000);
    let mut expected = reconnected_from_ringing();
    expected.insert(1, hangup_normal(TARGET));
    assert_eq!(out, expected);
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    // carol's hangup, arriving later, changes nothing.
    assert_eq!(
        requests(&engine.handle(4_700, destroyed(TARGET, 16))),
        vec![]
    );
}

#[test]
fn d5_takeback_while_talking() {
    let mut engine = talking();
    let (out, _) = press(&mut engine, CALLER, "*1", 6_000);
    assert_eq!(
        out,
        vec![
            hangup_normal(TARGET),
            moh(TRANSFEREE, false),
            absorbed(BRIDGE1, &[CALLER]),
            destroy(BRIDGE2)
        ]
    );
}

#[test]
fn d6_complete_hands_the_transferee_to_the_target_and_hangs_up_the_transferor() {
    let mut engine = talking();
    let (out, _) = press(&mut engine, CALLER, "*2", 6_000);
    let mut expected = handed_over(TARGET, TRANSFEREE);
    expected.push(hangup_normal(CALLER));
    assert_eq!(out, expected);
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    assert_eq!(requests(&engine.handle(6_500, stasis_end(CALLER))), vec![]);
}

#[test]
fn d6_threeway_puts_all_three_together_and_one_leaving_leaves_two() {
    let mut engine = talking();
    let (out, _) = press(&mut engine, CALLER, "*3", 6_000);
    assert_eq!(
        out,
        vec![
            moh(TRANSFEREE, false),
            absorbed(BRIDGE1, &[CALLER, TARGET]),
            destroy(BRIDGE2),
        ]
    );
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Threeway));
    assert_eq!(requests(&engine.handle(7_000, stasis_end(CALLER))), vec![]);
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    assert_eq!(
        requests(&engine.handle(8_000, stasis_end(TARGET))),
        vec![hangup_normal(TRANSFEREE), destroy(BRIDGE1)]
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn d6_swap_alternates_who_is_held_and_hanging_up_then_completes() {
    let mut engine = talking();
    let (out, _) = press(&mut engine, CALLER, "*4", 6_000);
    assert_eq!(
        out,
        vec![
            moh(TARGET, true),
            absorbed(BRIDGE1, &[CALLER]),
            moh(TRANSFEREE, false)
        ]
    );
    let (out, _) = press(&mut engine, CALLER, "*4", 7_000);
    assert_eq!(
        out,
        vec![
            moh(TRANSFEREE, true),
            absorbed(BRIDGE2, &[CALLER]),
            moh(TARGET, false)
        ]
    );
    press(&mut engine, CALLER, "*4", 8_000);
    // Swapped (CALLER with TRANSFEREE, TARGET held): hanging up completes the transfer.
    assert_eq!(
        requests(&engine.handle(9_000, stasis_end(CALLER))),
        handed_over(TARGET, TARGET)
    );
    assert_eq!(
        engine.phase_of(NODE, TRANSFEREE),
        Some(CallPhase::Connected)
    );
}

#[test]
fn d7_resume_cancels_the_transfer_like_takeback() {
    let mut engine = ringing();
    let (out, _) = press(&mut engine, CALLER, "*9", 4_000);
    assert!(out.contains(&hangup_normal(TARGET)));
    assert!(out.contains(&absorbed(BRIDGE1, &[CALLER])));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    // With no transfer in progress, resume does nothing.
    let (_, due) = press(&mut engine, CALLER, "*9", 6_000);
    assert_eq!(requests(&engine.handle_timeout(due)), vec![]);
}

#[test]
fn the_transferee_hanging_up_while_talking_leaves_transferor_and_target_together() {
    let mut engine = talking();
    assert_eq!(
        requests(&engine.handle(6_000, stasis_end(TRANSFEREE))),
        vec![destroy(BRIDGE1)]
    );
    assert_eq!(engine.phase_of(NODE, TARGET), Some(CallPhase::Connected));
    assert_eq!(
        requests(&engine.handle(7_000, stasis_end(CALLER))),
        vec![hangup_normal(TARGET), destroy(BRIDGE2)]
    );
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn the_transferee_hanging_up_while_the_target_rings_ends_the_call() {
    let mut engine = ringing();
    assert_eq!(
        requests(&engine.handle(4_000, stasis_end(TRANSFEREE))),
        vec![
            hangup_normal(TARGET),
            hangup_normal(CALLER),
            destroy(BRIDGE2),
            destroy(BRIDGE1)
        ]
    );
    assert_eq!(engine.call_count(), 0);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn digits_outside_a_feature_code_reach_the_other_party() {
    let mut engine = connected_with_codes(ListenOn::Both);
    let (out, _) = press(&mut engine, CALLER, "5#", 1_000);
    assert_eq!(
        out,
        vec![
            AriRequest::SendDtmf {
                channel: TRANSFEREE.into(),
                dtmf: "5".into()
            },
            AriRequest::SendDtmf {
                channel: TRANSFEREE.into(),
                dtmf: "#".into()
            },
        ]
    );
}

#[test]
fn digits_from_a_leg_that_does_not_listen_are_passed_on_not_collected() {
    let mut engine = connected_with_codes(ListenOn::A);
    let (out, _) = press(&mut engine, TRANSFEREE, "*2201", 1_000);
    assert_eq!(out.len(), 5);
    assert!(out
        .iter()
        .all(|r| matches!(r, AriRequest::SendDtmf { channel, .. } if channel == CALLER)));
    assert_eq!(engine.poll_timeout(), None);
    // The transferee's feature codes do nothing while CALLER's transfer runs, either.
    let mut engine = ringing();
    let (out, _) = press(&mut engine, TRANSFEREE, "*1", 4_000);
    assert_eq!(out, vec![]);
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
}

#[test]
fn a_call_without_feature_codes_does_not_absorb_digits() {
    let (mut engine, _) = connected();
    let out = engine.handle(1_000, dtmf(CALLER, '*'));
    assert_eq!(requests(&out), vec![]);
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn a_failed_move_is_made_again_only_while_the_call_still_wants_it() {
    let mut engine = ringing();
    // CALLER's move into bridge1, from before the transfer: CALLER is meant to be in bridge2 now.
    let stale = absorbed(BRIDGE1, &[CALLER]);
    assert_eq!(requests(&engine.handle(4_000, failed(stale, 500))), vec![]);
    // Its move into bridge2 is what the transfer wants: made once more.
    let wanted = absorbed(BRIDGE2, &[CALLER]);
    assert_eq!(
        requests(&engine.handle(4_001, failed(wanted.clone(), 500))),
        vec![wanted]
    );
}

#[test]
fn a_failed_request_after_the_transferor_left_does_not_take_back() {
    let mut engine = ringing();
    engine.handle(4_000, stasis_end(CALLER));
    let move_in = || failed(absorbed(BRIDGE2, &[CALLER]), 422);
    engine.handle(4_100, move_in());
    assert_eq!(requests(&engine.handle(4_200, move_in())), vec![]);
    // The target still gets the transferee when it answers (D3).
    assert_eq!(
        requests(&engine.handle(5_000, state_change(TARGET, "Up"))),
        handed_over(TARGET, TRANSFEREE)
    );
}

#[test]
fn a_refer_during_a_feature_code_transfer_is_declined() {
    let mut engine = ringing();
    let refer = event(json!({
        "type": "ChannelTransfer",
        "refer_to": {"requested_destination": {"destination": "dave"}},
        "referred_by": {"source_channel": channel(TRANSFEREE)}
    }));
    assert_eq!(
        requests(&engine.handle(4_000, refer)),
        vec![
            AriRequest::TransferProgress {
                channel: TRANSFEREE.into(),
                state: TransferProgress::Progress
            },
            AriRequest::TransferProgress {
                channel: TRANSFEREE.into(),
                state: TransferProgress::Declined
            },
        ]
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
}

#[test]
fn a_resync_during_a_consultation_keeps_the_consultation_bridge() {
    let mut engine = talking();
    let channels: Vec<Channel> = [CALLER, "t-1-b", TARGET]
        .iter()
        .map(|id| serde_json::from_value(channel(id)).unwrap())
        .collect();
    let bridges = [BRIDGE1, BRIDGE2]
        .iter()
        .map(|id| serde_json::from_value(json!({"id": id, "channels": []})).unwrap())
        .collect();
    let out = engine.handle(
        60_000,
        Input::NodeSynced {
            node: NODE.into(),
            channels,
            bridges,
        },
    );
    assert!(requests(&out).is_empty(), "{out:?}");
}
