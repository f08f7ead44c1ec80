//! The Replaces rule (replaces.rs): the Call-ID index stands in for Asterisk only for the transferer's own
//! dialogs; knowing another call's Call-ID does not let a phone take it over.

use super::cross_node::{engine_with_trunks, on, NODE2};
use super::transfer::{add, attended_refer, progress, BRIDGE1, CONSULTED};
use super::*;

/// The consult leg of an unrelated call: dave's phone called carol.
const STRANGER: &str = "dave-leg";

fn stranger_calls_carol(engine: &mut Engine, node: &str) {
    let mut dave = channel(STRANGER);
    dave["name"] = json!("PJSIP/dave-0000000a");
    let start = json!({"type": "StasisStart", "args": ["carol"], "channel": dave});
    engine.handle(200, on(node, event(start)));
    engine.handle(300, on(node, state_change(CONSULTED, "Up")));
    assert_eq!(engine.phase_of(node, STRANGER), Some(CallPhase::Connected));
}

/// alice's call to bob (connected) and dave's unrelated call to carol (connected), on one node.
fn alice_and_a_stranger() -> Engine {
    let (mut engine, _) = connected();
    stranger_calls_carol(&mut engine, NODE);
    engine
}

fn refused(out: &[Output]) {
    assert_eq!(
        requests(out),
        vec![
            progress(CALLER, TransferProgress::Progress),
            progress(CALLER, TransferProgress::Unavailable)
        ]
    );
}

#[test]
fn a_replaces_naming_another_phones_dialog_by_its_call_id_gives_503_and_changes_nothing() {
    let mut engine = alice_and_a_stranger();
    // Asterisk did not match the tags (they are made up, or another call's): only the Call-ID is known.
    let out = engine.handle(1_000, attended_refer(CALLER, STRANGER, false));
    refused(&out);
    assert_eq!(engine.call_count(), 2);
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
    assert_eq!(engine.phase_of(NODE, STRANGER), Some(CallPhase::Connected));
}

#[test]
fn a_dialog_asterisk_matched_by_call_id_and_both_tags_is_replaced_as_in_core_mode() {
    let mut engine = alice_and_a_stranger();
    let out = engine.handle(1_000, attended_refer(CALLER, STRANGER, true));
    assert!(requests(&out).contains(&add(BRIDGE1, CONSULTED)));
}

#[test]
fn a2_the_transferers_own_dialog_is_still_found_by_call_id() {
    let (mut engine, _) = connected();
    // alice's own consult call (her phone's endpoint), tags swapped so that Asterisk did not match them.
    engine.handle(200, stasis_start("consult-leg", &["carol"]));
    engine.handle(300, state_change(CONSULTED, "Up"));
    let out = engine.handle(1_000, attended_refer(CALLER, "consult-leg", false));
    assert!(requests(&out).contains(&add(BRIDGE1, CONSULTED)));
}

#[test]
fn a3_another_phones_dialog_on_another_node_gives_503_and_changes_nothing() {
    let mut engine = engine_with_trunks();
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start("t-1-b", &["dialed"]));
    engine.handle(100, state_change("t-1-b", "Up"));
    stranger_calls_carol(&mut engine, NODE2);
    let out = engine.handle(1_000, attended_refer(CALLER, STRANGER, false));
    refused(&out);
    assert_eq!(engine.call_count(), 2);
    assert_eq!(engine.phase_of(NODE2, STRANGER), Some(CallPhase::Connected));
}

#[test]
fn a_dialog_of_another_accounts_call_is_never_replaced_even_when_asterisk_matched_it() {
    let mut config = engine_config();
    config.accounts = Accounts {
        ids: ["acme", "globex"].map(String::from).into(),
        endpoints: [("alice", "acme"), ("dave", "globex")]
            .map(|(e, a)| (e.to_owned(), a.to_owned()))
            .into(),
        variable: "ARI_TRANSFER_ACCOUNT".into(),
    };
    let mut engine = Engine::new(config);
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start("t-1-b", &["dialed"]));
    engine.handle(100, state_change("t-1-b", "Up"));
    stranger_calls_carol(&mut engine, NODE);
    let out = engine.handle(1_000, attended_refer(CALLER, STRANGER, true));
    refused(&out);
    assert_eq!(engine.call_count(), 2);
    assert_eq!(engine.phase_of(NODE, STRANGER), Some(CallPhase::Connected));
}
