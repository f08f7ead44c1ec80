//! The session barrier before the first progress report on each REFER (Asterisk 22's REFER race).

use super::adopt::{app_channel, synced};
use super::transfer::{progress, refer};
use super::*;

fn engine_with_barrier() -> Engine {
    let mut engine = engine();
    engine.config.refer_barrier = true;
    engine
}

fn connected_with_barrier() -> Engine {
    let (mut engine, _) = connected();
    engine.config.refer_barrier = true;
    engine
}

fn barrier(channel: &str) -> AriRequest {
    AriRequest::AwaitSession {
        channel: channel.into(),
    }
}

/// The lane (call key) of each request, in order.
fn lanes(outputs: &[Output]) -> Vec<(CallKey, AriRequest)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ari { call, request, .. } => Some((*call, request.clone())),
            Output::CallEnded { .. } | Output::Event(_) => None,
        })
        .collect()
}

#[test]
fn the_first_report_on_a_refer_waits_for_asterisk_to_finish_handling_it() {
    let mut engine = connected_with_barrier();
    let out = lanes(&engine.handle(1_000, event(refer(CALLER, "carol"))));
    assert_eq!(out[0].1, barrier(CALLER));
    assert_eq!(out[1].1, progress(CALLER, TransferProgress::Progress));
    // In the same call's lane, so the report is posted only once the barrier answered.
    assert_eq!(out[0].0, out[1].0);
    let barriers = out.iter().filter(|(_, r)| *r == barrier(CALLER)).count();
    assert_eq!(barriers, 1);
}

#[test]
fn later_reports_on_the_same_refer_need_no_barrier() {
    let mut engine = connected_with_barrier();
    engine.handle(1_000, event(refer(CALLER, "carol")));
    engine.handle(1_001, stasis_start("t-2-t", &["dialed"]));
    let out = requests(&engine.handle(1_500, state_change("t-2-t", "Up")));
    assert!(out.contains(&progress(CALLER, TransferProgress::Answered)));
    assert!(!out
        .iter()
        .any(|r| matches!(r, AriRequest::AwaitSession { .. })));
}

#[test]
fn a_refer_declined_at_once_is_declined_after_the_barrier() {
    let mut engine = engine_with_barrier();
    engine.handle(0, stasis_start(CALLER, &[]));
    // Not connected yet: 100, then 603.
    let out = requests(&engine.handle(10, event(refer(CALLER, "carol"))));
    assert_eq!(
        out,
        vec![
            barrier(CALLER),
            progress(CALLER, TransferProgress::Progress),
            progress(CALLER, TransferProgress::Declined)
        ]
    );
}

#[test]
fn b7_the_report_after_a_second_refer_in_the_dialog_waits_for_it_too() {
    let mut engine = connected_with_barrier();
    engine.handle(1_000, event(refer(CALLER, "carol")));
    engine.handle(1_001, stasis_start("t-2-t", &["dialed"]));
    // The second REFER gets no report of its own (it shares the first one's) ...
    assert!(requests(&engine.handle(1_100, event(refer(CALLER, "dave")))).is_empty());
    // ... and the next report, which reaches both, waits until Asterisk is done with the second.
    let out = requests(&engine.handle(1_500, state_change("t-2-t", "Up")));
    let at = out
        .iter()
        .position(|r| *r == progress(CALLER, TransferProgress::Answered))
        .unwrap();
    assert!(at > 0);
    assert_eq!(out[at - 1], barrier(CALLER));
}

#[test]
fn a_refer_on_a_channel_an_earlier_run_left_is_declined_after_the_barrier() {
    let mut engine = engine_with_barrier();
    engine.handle(0, synced(vec![app_channel("old-1", "")], vec![]));
    let out = lanes(&engine.handle(10, event(refer("old-1", "carol"))));
    assert_eq!(
        out.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        vec![
            barrier("old-1"),
            progress("old-1", TransferProgress::Unavailable)
        ]
    );
    assert_eq!(out[0].0, out[1].0);
}

#[test]
fn a_failed_barrier_changes_nothing() {
    let mut engine = connected_with_barrier();
    engine.handle(1_000, event(refer(CALLER, "carol")));
    let call = engine.index.call_of(&NodeName::from(NODE), CALLER).unwrap();
    for status in [Some(404), Some(500), None] {
        let out = engine.handle(
            1_001,
            Input::RequestFailed {
                node: NODE.into(),
                call,
                request: barrier(CALLER),
                status,
                message: "test".into(),
            },
        );
        assert!(out.is_empty(), "{status:?}: {out:?}");
    }
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Transferring));
}

#[test]
fn without_the_barrier_the_report_goes_at_once() {
    let (mut engine, _) = connected();
    let out = requests(&engine.handle(1_000, event(refer(CALLER, "carol"))));
    assert_eq!(out[0], progress(CALLER, TransferProgress::Progress));
    assert!(!out
        .iter()
        .any(|r| matches!(r, AriRequest::AwaitSession { .. })));
}

#[test]
fn a_channel_that_leaves_is_forgotten() {
    let mut engine = engine_with_barrier();
    engine.handle(0, stasis_start(CALLER, &[]));
    // A REFER in the echo case (no call to report to, nothing posted) is forgotten with its channel.
    engine.handle(10, event(refer("gone-1", "carol")));
    assert_eq!(engine.unfenced.len(), 1);
    engine.handle(20, destroyed("gone-1", 16));
    assert!(engine.unfenced.is_empty());
}
