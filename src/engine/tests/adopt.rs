//! S3: what an earlier run left in the app's Stasis application is taken over at the re-sync.

use super::transfer::{attended_refer, progress, stasis_end};
use super::*;
use crate::engine::adopt::STRAY_GRACE;

/// A channel of the app (`dialplan.app_data` = `ari-transfer[,args]`), as an earlier run left it.
pub(super) fn app_channel(id: &str, args: &str) -> Channel {
    let mut value = channel(id);
    let data = if args.is_empty() {
        "ari-transfer".to_owned()
    } else {
        format!("ari-transfer,{args}")
    };
    value["dialplan"]["app_data"] = json!(data);
    value["state"] = json!("Up");
    serde_json::from_value(value).unwrap()
}

pub(super) fn bridge_of(id: &str, name: &str, channels: &[&str]) -> Bridge {
    serde_json::from_value(json!({"id": id, "name": name, "channels": channels})).unwrap()
}

pub(super) fn synced(channels: Vec<Channel>, bridges: Vec<Bridge>) -> Input {
    Input::NodeSynced {
        node: NODE.into(),
        channels,
        bridges,
    }
}

/// A fresh engine that finds, at its first sync, bob (dialed by the earlier run) and alice talking in the
/// earlier run's bridge.
fn adopted() -> (Engine, Vec<Output>) {
    let mut engine = engine();
    let out = engine.handle(
        0,
        synced(
            vec![app_channel("old-1-b", "dialed"), app_channel("alice-1", "")],
            vec![bridge_of(
                "old-1-bridge",
                "ari-transfer/call-1",
                &["old-1-b", "alice-1"],
            )],
        ),
    );
    (engine, out)
}

/// alice hung up and the earlier run's bridge destroyed.
fn alice_released() -> Vec<AriRequest> {
    vec![
        hangup("alice-1", HangupCause::NORMAL_CLEARING),
        AriRequest::DestroyBridge {
            bridge: "old-1-bridge".into(),
        },
    ]
}

#[test]
fn two_channels_talking_in_a_bridge_of_an_earlier_run_become_a_connected_call() {
    let (engine, out) = adopted();
    assert_eq!(engine.call_count(), 1);
    assert_eq!(engine.phase_of(NODE, "alice-1"), Some(CallPhase::Connected));
    assert_eq!(engine.phase_of(NODE, "old-1-b"), Some(CallPhase::Connected));
    // Music a feature-code hold left stops, and a REFER the phones sent while no app was listening is
    // told 503; the caller (not dialed) comes first.
    assert_eq!(
        requests(&out),
        vec![
            AriRequest::StopMoh {
                channel: "alice-1".into()
            },
            progress("alice-1", TransferProgress::Unavailable),
            AriRequest::StopMoh {
                channel: "old-1-b".into()
            },
            progress("old-1-b", TransferProgress::Unavailable),
        ]
    );
}

#[test]
fn a_hangup_in_an_adopted_call_hangs_up_the_other_party_and_destroys_the_old_bridge() {
    let (mut engine, _) = adopted();
    let out = engine.handle(10, stasis_end("old-1-b"));
    assert_eq!(requests(&out), alice_released());
    assert!(ended(&out));
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn an_adopted_call_can_be_transferred_and_its_dialogs_are_found_by_call_id() {
    let (mut engine, _) = adopted();
    // Another call of this run: carol talking with dave; carol's phone REFERs with Replaces naming the
    // adopted call's alice dialog, by Call-ID only (Asterisk did not resolve it).
    engine.handle(20, stasis_start(CALLER, &[]));
    engine.handle(21, stasis_start("t-2-b", &["dialed"]));
    engine.handle(22, super::state_change("t-2-b", "Up"));
    let out = engine.handle(30, attended_refer(CALLER, "alice-1", false));
    let requests = requests(&out);
    assert_eq!(
        requests[0],
        progress(CALLER, TransferProgress::Progress),
        "{requests:?}"
    );
    assert!(
        requests.contains(&AriRequest::AddToBridge {
            bridge: "t-2-bridge".into(),
            channels: vec!["old-1-b".into()],
            absorb_dtmf: false,
        }),
        "bob, alice's peer in the adopted call, moves into the REFERing call's bridge: {requests:?}"
    );
}

#[test]
fn a_channel_left_alone_in_a_bridge_is_hung_up_and_the_bridge_destroyed() {
    let mut engine = engine();
    let out = engine.handle(
        0,
        synced(
            vec![app_channel("alice-1", "")],
            vec![bridge_of(
                "old-1-bridge",
                "ari-transfer/call-1",
                &["alice-1"],
            )],
        ),
    );
    assert_eq!(requests(&out), alice_released());
    assert_eq!(engine.call_count(), 0);
}

#[test]
fn empty_bridges_named_after_the_app_are_destroyed_and_other_bridges_left_alone() {
    let mut engine = engine();
    let out = engine.handle(
        0,
        synced(
            vec![],
            vec![
                bridge_of("old-1-bridge", "ari-transfer/call-1", &[]),
                bridge_of("conf-7", "another-app/room", &[]),
                bridge_of("old-2-bridge", "ari-transfer/call-2", &["someone-elses"]),
            ],
        ),
    );
    assert_eq!(
        requests(&out),
        vec![AriRequest::DestroyBridge {
            bridge: "old-1-bridge".into()
        }]
    );
}

#[test]
fn channels_of_other_applications_are_never_touched() {
    let mut engine = engine();
    let mut theirs = channel("theirs-1");
    theirs["dialplan"]["app_data"] = json!("another-app,inbound");
    let theirs: Channel = serde_json::from_value(theirs).unwrap();
    let out = engine.handle(
        0,
        synced(
            vec![theirs.clone()],
            vec![bridge_of("b", "another-app/room", &["theirs-1"])],
        ),
    );
    assert!(out.is_empty());
    let out = engine.handle(0, synced(vec![theirs], vec![]));
    assert!(out.is_empty());
    assert_eq!(engine.poll_timeout(), None);
}

#[test]
fn a_channel_in_no_bridge_is_hung_up_once_its_grace_passes_unclaimed() {
    let mut engine = engine();
    let out = engine.handle(0, synced(vec![app_channel("ringing-1", "")], vec![]));
    assert!(out.is_empty(), "its StasisStart may still be on its way");
    assert_eq!(engine.poll_timeout(), Some(STRAY_GRACE));
    assert!(engine.handle_timeout(STRAY_GRACE - 1).is_empty());
    let out = engine.handle_timeout(STRAY_GRACE);
    assert_eq!(
        requests(&out),
        vec![hangup("ringing-1", HangupCause::NORMAL_CLEARING)]
    );
}

#[test]
fn a_channel_in_no_bridge_whose_stasis_start_comes_after_the_sync_is_routed_not_hung_up() {
    let mut engine = engine();
    let mut new_caller = channel(CALLER);
    new_caller["dialplan"]["app_data"] = json!("ari-transfer");
    let new_caller: Channel = serde_json::from_value(new_caller).unwrap();
    engine.handle(0, synced(vec![new_caller], vec![]));
    engine.handle(5, stasis_start(CALLER, &[]));
    assert_eq!(engine.call_count(), 1);
    let out = engine.handle_timeout(STRAY_GRACE);
    assert!(requests(&out).is_empty(), "{out:?}");
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Dialing));
}

#[test]
fn a_three_way_bridge_of_an_earlier_run_is_adopted_and_one_leaving_leaves_two_connected() {
    let mut engine = engine();
    engine.handle(
        0,
        synced(
            vec![
                app_channel("b", "dialed"),
                app_channel("a", ""),
                app_channel("c", "dialed"),
            ],
            vec![bridge_of(
                "old-1-bridge",
                "ari-transfer/call-1",
                &["b", "a", "c"],
            )],
        ),
    );
    assert_eq!(engine.call_count(), 1);
    assert_eq!(engine.phase_of(NODE, "c"), Some(CallPhase::Threeway));
    assert_eq!(
        engine.poll_timeout(),
        None,
        "bridged channels are no strays"
    );
    let out = engine.handle(10, stasis_end("a"));
    assert!(requests(&out).is_empty(), "{out:?}");
    assert_eq!(engine.phase_of(NODE, "b"), Some(CallPhase::Connected));
    let out = engine.handle(20, stasis_end("c"));
    assert_eq!(
        requests(&out),
        vec![
            hangup("b", HangupCause::NORMAL_CLEARING),
            AriRequest::DestroyBridge {
                bridge: "old-1-bridge".into()
            },
        ]
    );
}

#[test]
fn a_resync_of_this_runs_own_calls_adopts_nothing() {
    let (mut engine, callee) = connected();
    let mut caller = channel(CALLER);
    caller["dialplan"]["app_data"] = json!("ari-transfer");
    let mut dialed = channel(&callee);
    dialed["dialplan"]["app_data"] = json!("ari-transfer,dialed");
    let out = engine.handle(
        9_000,
        synced(
            vec![
                serde_json::from_value(caller).unwrap(),
                serde_json::from_value(dialed).unwrap(),
            ],
            vec![bridge_of(
                "t-1-bridge",
                "ari-transfer/call-1",
                &[CALLER, &callee],
            )],
        ),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(engine.call_count(), 1);
}

#[test]
fn a_refer_on_a_channel_an_earlier_run_left_in_no_bridge_is_declined_at_once() {
    let mut engine = engine();
    engine.handle(0, synced(vec![app_channel("left-1", "")], vec![]));
    let out = engine.handle(10, event(super::transfer::refer("left-1", "carol")));
    assert_eq!(
        requests(&out),
        vec![progress("left-1", TransferProgress::Unavailable)]
    );
    // The echo of a REFER on a channel no run knows (its transferer is gone) starts nothing.
    let out = engine.handle(20, event(super::transfer::refer("gone-1", "carol")));
    assert!(out.is_empty());
}

#[test]
fn an_empty_bridge_of_this_run_is_destroyed_once() {
    let (mut engine, callee) = connected();
    let present = [CALLER, callee.as_str()].map(|id| serde_json::from_value(channel(id)).unwrap());
    let out = engine.handle(
        9_000,
        synced(
            present.to_vec(),
            vec![bridge_of("t-7-bridge", "ari-transfer/call-7", &[])],
        ),
    );
    assert_eq!(
        requests(&out),
        vec![AriRequest::DestroyBridge {
            bridge: "t-7-bridge".into()
        }]
    );
}
