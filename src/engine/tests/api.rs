//! The HTTP API's commands (P1, P2, D7), decided by the engine: who may act on which call, transfers the
//! API starts, cancels and completes, hold, and the records of every transfer.

use super::transfer::{blind_refer, TRANSFEREE};
use super::*;
use crate::engine::api::{
    Command, ErrorKind, Reply, Scope, Source, TransferKind, TransferSpec, TransferStatus,
    TransferView,
};

/// The captured caller is `PJSIP/alice`: alice's calls are account `acme`'s.
fn engine_with_accounts() -> Engine {
    let mut engine = engine_config();
    engine.accounts = Accounts {
        ids: ["acme", "globex"].map(String::from).into(),
        endpoints: [("alice".to_owned(), "acme".to_owned())].into(),
        variable: "ARI_TRANSFER_ACCOUNT".into(),
    };
    Engine::new(engine)
}

fn acme() -> Scope {
    Scope::Account("acme".into())
}

/// Call 1 (CALLER with bob's leg `t-1-b`), connected, of account acme.
fn connected_call() -> Engine {
    let mut engine = engine_with_accounts();
    engine.handle(0, stasis_start(CALLER, &[]));
    engine.handle(1, stasis_start(TRANSFEREE, &["dialed"]));
    engine.handle(100, state_change(TRANSFEREE, "Up"));
    engine
}

fn ask(engine: &mut Engine, scope: &Scope, command: Command) -> (Reply, Vec<AriRequest>) {
    let (reply, out) = engine.command(200, scope, command);
    (reply, requests(&out))
}

fn transfer_spec(kind: TransferKind) -> TransferSpec {
    TransferSpec {
        call: CALLER.into(),
        target: "carol".into(),
        kind,
        ..TransferSpec::default()
    }
}

fn started(engine: &mut Engine, kind: TransferKind) -> (TransferView, Vec<AriRequest>) {
    match ask(engine, &acme(), Command::StartTransfer(transfer_spec(kind))) {
        (Reply::Transfer(view), requests) => (view, requests),
        (other, _) => panic!("no transfer started: {other:?}"),
    }
}

fn status_of(engine: &mut Engine, id: &str) -> (TransferStatus, Option<String>) {
    match ask(engine, &acme(), Command::GetTransfer { id: id.into() }) {
        (Reply::Transfer(view), _) => (view.status, view.reason),
        (other, _) => panic!("no such transfer: {other:?}"),
    }
}

fn error_kind(reply: &Reply) -> Option<(ErrorKind, &'static str)> {
    match reply {
        Reply::Error(error) => Some((error.kind, error.code)),
        _ => None,
    }
}

/// The target channel the attended API transfer created.
const TARGET: &str = "t-1-f1-t";

#[test]
fn p2_another_accounts_token_finds_nothing_and_changes_nothing() {
    let mut engine = connected_call();
    let (view, _) = started(&mut engine, TransferKind::Attended);
    let globex = Scope::Account("globex".into());
    let commands = [
        Command::GetCall {
            call: CALLER.into(),
        },
        Command::GetCall {
            call: format!("{CALLER}@test"),
        },
        Command::Hangup {
            call: CALLER.into(),
        },
        Command::Hold {
            call: TRANSFEREE.into(),
            moh: None,
        },
        Command::Unhold {
            call: TRANSFEREE.into(),
        },
        Command::StartTransfer(transfer_spec(TransferKind::Blind)),
        Command::GetTransfer {
            id: view.id.clone(),
        },
        Command::CancelTransfer {
            id: view.id.clone(),
        },
        Command::CompleteTransfer {
            id: view.id.clone(),
        },
    ];
    for command in commands {
        let (reply, requests) = ask(&mut engine, &globex, command.clone());
        assert_eq!(
            error_kind(&reply).map(|e| e.0),
            Some(ErrorKind::NotFound),
            "{command:?}"
        );
        assert!(requests.is_empty(), "{command:?}: {requests:?}");
    }
    assert_eq!(
        ask(&mut engine, &globex, Command::ListCalls).0,
        Reply::Calls(vec![])
    );
    assert_eq!(
        ask(&mut engine, &globex, Command::ListTransfers).0,
        Reply::Transfers(vec![])
    );
    assert_eq!(status_of(&mut engine, &view.id).0, TransferStatus::Ringing);
    // The admin token sees it.
    match ask(&mut engine, &Scope::Admin, Command::ListCalls).0 {
        Reply::Calls(calls) => assert_eq!(calls[0].account.as_deref(), Some("acme")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_is_found_by_the_sip_call_id_of_a_leg_and_shows_its_legs() {
    let mut engine = connected_call();
    match ask(
        &mut engine,
        &acme(),
        Command::GetCall {
            call: format!("{CALLER}@test"),
        },
    )
    .0
    {
        Reply::Call(call) => {
            assert_eq!(call.id, CALLER);
            assert_eq!(call.state, "connected");
            assert_eq!(call.destination, "bob");
            assert_eq!(call.duration_ms, 200);
            let legs: Vec<(&str, &str)> = call
                .legs
                .iter()
                .map(|l| (l.channel.as_str(), l.role))
                .collect();
            assert_eq!(legs, [(CALLER, "caller"), (TRANSFEREE, "callee")]);
            assert_eq!(
                call.legs[0].sip_call_id.as_deref(),
                Some(&*format!("{CALLER}@test"))
            );
            // Who they are: alice's caller id, and bob as the app dialed him (PJSIP/bob).
            let shown: Vec<(Option<&str>, Option<&str>)> = call
                .legs
                .iter()
                .map(|l| (l.name.as_deref(), l.number.as_deref()))
                .collect();
            assert_eq!(shown, [(Some("Alice"), Some("alice")), (None, Some("bob"))]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn p1_an_attended_api_transfer_is_the_feature_code_consultation_and_completes() {
    let mut engine = connected_call();
    let (view, requests) = started(&mut engine, TransferKind::Attended);
    assert_eq!(
        (view.status, view.source, view.kind),
        (TransferStatus::Ringing, Source::Api, TransferKind::Attended)
    );
    assert_eq!(
        (view.transferor.as_str(), view.transferee.as_str()),
        (CALLER, TRANSFEREE)
    );
    // The transferee is held with music, the transferor moved to the consultation bridge with ringback.
    assert!(requests.contains(&AriRequest::StartMoh {
        channel: TRANSFEREE.into(),
        class: None
    }));
    assert!(requests
        .iter()
        .any(|r| matches!(r, AriRequest::PlayOnChannel { channel, .. } if channel == CALLER)));
    assert!(requests.iter().any(|r| matches!(r, AriRequest::CreateChannel { channel, endpoint, .. } if channel == TARGET && endpoint == "PJSIP/carol")));
    // A second transfer on the same call is refused.
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::StartTransfer(transfer_spec(TransferKind::Attended)),
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Conflict, "transfer_in_progress"))
    );
    assert!(requests.is_empty());

    engine.handle(300, stasis_start(TARGET, &["dialed"]));
    engine.handle(400, state_change(TARGET, "Up"));
    assert_eq!(status_of(&mut engine, &view.id).0, TransferStatus::Answered);
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::CompleteTransfer {
            id: view.id.clone(),
        },
    );
    assert!(
        matches!(reply, Reply::Transfer(ref v) if v.status == TransferStatus::Completed),
        "{reply:?}"
    );
    assert!(requests.contains(&hangup(CALLER, HangupCause::NORMAL_CLEARING)));
    assert!(requests.contains(&AriRequest::StopMoh {
        channel: TRANSFEREE.into()
    }));
    // Completing again is a conflict: it is over.
    let (reply, _) = ask(
        &mut engine,
        &acme(),
        Command::CompleteTransfer { id: view.id },
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Conflict, "transfer_over"))
    );
}

#[test]
fn p1_completing_while_the_target_rings_is_the_partial_transfer() {
    let mut engine = connected_call();
    let (view, _) = started(&mut engine, TransferKind::Attended);
    engine.handle(300, stasis_start(TARGET, &["dialed"]));
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::CompleteTransfer {
            id: view.id.clone(),
        },
    );
    assert!(
        matches!(reply, Reply::Transfer(ref v) if v.status == TransferStatus::Ringing),
        "{reply:?}"
    );
    assert!(requests.contains(&hangup(CALLER, HangupCause::NORMAL_CLEARING)));
    // The target answers: it gets the transferee.
    let out = requests_of(engine.handle(400, state_change(TARGET, "Up")));
    assert!(out.iter().any(|r| matches!(r, AriRequest::AddToBridge { bridge, channels, .. } if bridge == "t-1-bridge" && channels == &[TARGET.to_owned()])));
    assert_eq!(
        status_of(&mut engine, &view.id).0,
        TransferStatus::Completed
    );
}

fn requests_of(out: Vec<Output>) -> Vec<AriRequest> {
    requests(&out)
}

#[test]
fn p2_cancel_hangs_up_the_target_and_reconnects_the_transferor() {
    let mut engine = connected_call();
    let (view, _) = started(&mut engine, TransferKind::Attended);
    engine.handle(300, stasis_start(TARGET, &["dialed"]));
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::CancelTransfer {
            id: view.id.clone(),
        },
    );
    assert!(
        matches!(reply, Reply::Transfer(ref v) if v.status == TransferStatus::Cancelled),
        "{reply:?}"
    );
    assert!(requests.contains(&hangup(TARGET, HangupCause::NORMAL_CLEARING)));
    assert!(requests.contains(&AriRequest::StopMoh {
        channel: TRANSFEREE.into()
    }));
    assert!(requests.iter().any(|r| matches!(r, AriRequest::AddToBridge { bridge, channels, .. } if bridge == "t-1-bridge" && channels == &[CALLER.to_owned()])));
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn p1_the_takeback_code_cancels_an_api_transfer_on_a_call_without_feature_codes() {
    let mut engine = connected_call();
    let (view, _) = started(&mut engine, TransferKind::Attended);
    for digit in ['*', '1'] {
        let dtmf = json!({"type": "ChannelDtmfReceived", "digit": digit.to_string(), "duration_ms": 100, "channel": channel(CALLER)});
        engine.handle(300, event(dtmf));
    }
    assert_eq!(
        status_of(&mut engine, &view.id).0,
        TransferStatus::Cancelled
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn p2_a_busy_target_fails_the_transfer_with_its_reason() {
    let mut engine = connected_call();
    let (view, _) = started(&mut engine, TransferKind::Attended);
    engine.handle(300, stasis_start(TARGET, &["dialed"]));
    engine.handle(400, destroyed(TARGET, 17));
    assert_eq!(
        status_of(&mut engine, &view.id),
        (TransferStatus::Failed, Some("busy".into()))
    );
    assert_eq!(engine.phase_of(NODE, CALLER), Some(CallPhase::Connected));
}

#[test]
fn p2_a_blind_api_transfer_hangs_up_the_transferor_at_once_and_completes_on_answer() {
    let mut engine = connected_call();
    let (view, requests) = started(&mut engine, TransferKind::Blind);
    assert_eq!(view.kind, TransferKind::Blind);
    assert!(requests.contains(&hangup(CALLER, HangupCause::NORMAL_CLEARING)));
    assert!(!requests
        .iter()
        .any(|r| matches!(r, AriRequest::TransferProgress { .. })));
    // Nobody to return to: it cannot be cancelled.
    let (reply, _) = ask(
        &mut engine,
        &acme(),
        Command::CancelTransfer {
            id: view.id.clone(),
        },
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Conflict, "cannot_cancel"))
    );
    let target = requests
        .iter()
        .find_map(|r| match r {
            AriRequest::CreateChannel { channel, .. } => Some(channel.clone()),
            _ => None,
        })
        .unwrap();
    engine.handle(300, stasis_start(&target, &["dialed"]));
    engine.handle(400, state_change(&target, "Up"));
    assert_eq!(
        status_of(&mut engine, &view.id).0,
        TransferStatus::Completed
    );
}

#[test]
fn p2_hold_and_unhold_and_their_conflicts() {
    let mut engine = connected_call();
    let hold = || Command::Hold {
        call: TRANSFEREE.into(),
        moh: Some("jazz".into()),
    };
    let (reply, requests) = ask(&mut engine, &acme(), hold());
    assert_eq!(reply, Reply::Done);
    assert_eq!(
        requests,
        vec![
            AriRequest::RemoveFromBridge {
                bridge: "t-1-bridge".into(),
                channels: vec![TRANSFEREE.into()]
            },
            AriRequest::StartMoh {
                channel: TRANSFEREE.into(),
                class: Some("jazz".into())
            },
        ]
    );
    let (reply, requests) = ask(&mut engine, &acme(), hold());
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Conflict, "already_held"))
    );
    assert!(requests.is_empty());
    // A held call takes no transfer, by API or by REFER.
    let (reply, _) = ask(
        &mut engine,
        &acme(),
        Command::StartTransfer(transfer_spec(TransferKind::Attended)),
    );
    assert_eq!(error_kind(&reply), Some((ErrorKind::Conflict, "on_hold")));
    let out = requests_of(engine.handle(250, blind_refer(CALLER, "carol")));
    assert!(out.contains(&AriRequest::TransferProgress {
        channel: CALLER.into(),
        state: TransferProgress::Declined
    }));

    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::Unhold {
            call: TRANSFEREE.into(),
        },
    );
    assert_eq!(reply, Reply::Done);
    assert!(requests.contains(&AriRequest::StopMoh {
        channel: TRANSFEREE.into()
    }));
    assert!(requests.iter().any(|r| matches!(r, AriRequest::AddToBridge { bridge, channels, .. } if bridge == "t-1-bridge" && channels == &[TRANSFEREE.to_owned()])));
    let (reply, _) = ask(
        &mut engine,
        &acme(),
        Command::Unhold {
            call: TRANSFEREE.into(),
        },
    );
    assert_eq!(error_kind(&reply), Some((ErrorKind::Conflict, "not_held")));
}

#[test]
fn p2_a_refer_transfer_is_listed_and_cancelling_it_tells_the_phone_603() {
    let mut engine = connected_call();
    engine.handle(200, blind_refer(CALLER, "carol"));
    let view = match ask(&mut engine, &acme(), Command::ListTransfers).0 {
        Reply::Transfers(views) => views[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (view.source, view.kind, view.target.as_str()),
        (Source::Refer, TransferKind::Blind, "carol")
    );
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::CancelTransfer {
            id: view.id.clone(),
        },
    );
    assert!(
        matches!(reply, Reply::Transfer(ref v) if v.status == TransferStatus::Cancelled),
        "{reply:?}"
    );
    assert!(requests.contains(&AriRequest::TransferProgress {
        channel: CALLER.into(),
        state: TransferProgress::Declined
    }));
    assert!(requests.iter().any(|r| matches!(r, AriRequest::AddToBridge { channels, .. } if channels == &[CALLER.to_owned()])));
}

#[test]
fn no_route_for_the_target_is_unprocessable_and_changes_nothing() {
    let mut engine = connected_call();
    let spec = TransferSpec {
        target: "42".into(),
        ..transfer_spec(TransferKind::Attended)
    };
    let (reply, requests) = ask(&mut engine, &acme(), Command::StartTransfer(spec));
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Unprocessable, "no_route"))
    );
    assert!(requests.is_empty());
}

#[test]
fn commands_for_a_call_whose_node_is_down_are_unavailable() {
    let mut engine = connected_call();
    engine.handle(150, Input::NodeLost { node: NODE.into() });
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::Hangup {
            call: CALLER.into(),
        },
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Unavailable, "node_unavailable"))
    );
    assert!(requests.is_empty());
    // Reads still answer.
    assert!(matches!(
        ask(
            &mut engine,
            &acme(),
            Command::GetCall {
                call: CALLER.into()
            }
        )
        .0,
        Reply::Call(_)
    ));
}

#[test]
fn the_dialplan_variable_names_the_account() {
    let mut engine = engine_with_accounts();
    let mut caller = channel("other-caller");
    caller["channelvars"] = json!({"ARI_TRANSFER_ACCOUNT": "globex"});
    engine.handle(
        0,
        event(json!({"type": "StasisStart", "args": [], "channel": caller})),
    );
    let globex = Scope::Account("globex".into());
    assert!(matches!(
        ask(
            &mut engine,
            &globex,
            Command::GetCall {
                call: "other-caller".into()
            }
        )
        .0,
        Reply::Call(_)
    ));
    assert!(error_kind(
        &ask(
            &mut engine,
            &acme(),
            Command::GetCall {
                call: "other-caller".into()
            }
        )
        .0
    )
    .is_some());
}

#[test]
fn p2_target_call_joins_the_transferee_with_the_other_call_and_hangs_up_the_transferors_legs() {
    use super::transfer::{add, entered_bridge, two_calls, BRIDGE1, CONSULT, CONSULTED};
    // Without accounts, every call is the account-less one the admin token sees.
    let mut engine = two_calls();
    let spec = TransferSpec {
        target_call: Some(CONSULT.into()),
        ..transfer_spec(TransferKind::Attended)
    };
    let (reply, requests) = ask(&mut engine, &Scope::Admin, Command::StartTransfer(spec));
    let Reply::Transfer(view) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(
        (view.source, view.target.as_str()),
        (Source::Api, CONSULTED)
    );
    // carol moves into the first call's bridge; no phone is told anything (no REFER).
    assert_eq!(requests, vec![add(BRIDGE1, CONSULTED)]);
    let out = requests_of(engine.handle(400, entered_bridge(BRIDGE1, CONSULTED)));
    assert!(
        out.contains(&hangup(CALLER, HangupCause::NORMAL_CLEARING)),
        "{out:?}"
    );
    assert!(
        out.contains(&hangup(CONSULT, HangupCause::NORMAL_CLEARING)),
        "{out:?}"
    );
    assert!(!out
        .iter()
        .any(|r| matches!(r, AriRequest::TransferProgress { .. })));
    assert_eq!(
        status_of_admin(&mut engine, &view.id),
        TransferStatus::Completed
    );
    assert_eq!(engine.call_count(), 1);
    // A REFER on the joined call afterwards is reported to its phone again.
    let out = requests_of(engine.handle(500, super::transfer::blind_refer(TRANSFEREE, "carol")));
    assert!(out
        .iter()
        .any(|r| matches!(r, AriRequest::TransferProgress { .. })));
}

#[test]
fn target_call_naming_the_same_call_or_another_accounts_call_is_refused() {
    let mut engine = connected_call();
    let spec = |target_call: &str| TransferSpec {
        target_call: Some(target_call.into()),
        ..transfer_spec(TransferKind::Attended)
    };
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::StartTransfer(spec(TRANSFEREE)),
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Unprocessable, "same_call"))
    );
    assert!(requests.is_empty());
    let mut caller = channel("globex-caller");
    caller["channelvars"] = json!({"ARI_TRANSFER_ACCOUNT": "globex"});
    engine.handle(
        300,
        event(json!({"type": "StasisStart", "args": [], "channel": caller})),
    );
    engine.handle(301, stasis_start("t-2-b", &["dialed"]));
    engine.handle(302, state_change("t-2-b", "Up"));
    assert_eq!(
        engine.phase_of(NODE, "globex-caller"),
        Some(CallPhase::Connected)
    );
    let (reply, requests) = ask(
        &mut engine,
        &acme(),
        Command::StartTransfer(spec("globex-caller")),
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::NotFound, "call_not_found"))
    );
    assert!(requests.is_empty());
    // Even the admin token cannot join calls of two accounts.
    let (reply, _) = ask(
        &mut engine,
        &Scope::Admin,
        Command::StartTransfer(spec("globex-caller")),
    );
    assert_eq!(
        error_kind(&reply),
        Some((ErrorKind::Conflict, "cannot_join"))
    );
}

fn status_of_admin(engine: &mut Engine, id: &str) -> TransferStatus {
    match ask(
        engine,
        &Scope::Admin,
        Command::GetTransfer { id: id.into() },
    )
    .0
    {
        Reply::Transfer(view) => view.status,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_phones_own_hold_shows_in_the_calls_state() {
    let mut engine = connected_call();
    let held = |engine: &mut Engine| match ask(
        engine,
        &acme(),
        Command::GetCall {
            call: CALLER.into(),
        },
    )
    .0
    {
        Reply::Call(call) => call.legs.iter().map(|l| l.phone_hold).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(held(&mut engine), [false, false]);
    engine.handle(
        300,
        event(json!({"type": "ChannelHold", "channel": channel(TRANSFEREE)})),
    );
    assert_eq!(held(&mut engine), [false, true]);
    engine.handle(
        400,
        event(json!({"type": "ChannelUnhold", "channel": channel(TRANSFEREE)})),
    );
    assert_eq!(held(&mut engine), [false, false]);
}

#[test]
fn an_api_transfers_variables_are_set_on_the_targets_channel() {
    for kind in [TransferKind::Attended, TransferKind::Blind] {
        let mut engine = connected_call();
        let spec = TransferSpec {
            variables: vec![("TICKET".into(), "4711".into())],
            ..transfer_spec(kind)
        };
        let (_, requests) = ask(&mut engine, &acme(), Command::StartTransfer(spec));
        let variables = requests.iter().find_map(|r| match r {
            AriRequest::CreateChannel { variables, .. } => Some(variables.clone()),
            _ => None,
        });
        assert_eq!(
            variables,
            Some(
                // Attended: dialed for the transferor (the caller); blind: for the transferee (bob).
                [
                    on_behalf_of(if kind == TransferKind::Blind {
                        TRANSFEREE
                    } else {
                        CALLER
                    })
                    .0,
                    vec![("TICKET".into(), "4711".into())]
                ]
                .concat()
            ),
            "{kind:?}"
        );
    }
}
