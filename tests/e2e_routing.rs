//! Call routing (R1–R3) end to end: a real Asterisk 22 from the lab, the real binary, SIPp phones.
//! Every test ends by checking that no channel or bridge is left in Asterisk.

mod lab;

use std::time::Duration;

use lab::{assert_nothing_left, scratch, serial, wait_for_bridge, App, AppSettings, Phone};

#[tokio::test]
async fn r1_caller_hears_ringing_and_both_legs_share_one_bridge() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("r1_bridge");
    let _app = App::start(&dir, &AppSettings::for_node(&node)).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    // uac_talk requires a 180 before the 200: the caller hears ringing.
    let alice = Phone::caller(
        &dir,
        &node,
        "uac_talk.xml",
        "bob",
        &["-set", "hold_ms", "2000"],
    );

    let bridge = wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    assert_eq!(bridge.len(), 2);
    alice.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

/// alice calls bob, whose phone runs `bob_scenario`; alice's runs `alice_scenario`. Each scenario asserts
/// what its phone receives (the final response, a CANCEL); nothing may be left afterwards.
async fn alice_calls_bob(
    test: &str,
    ring_timeout_secs: f64,
    bob_scenario: &str,
    alice_scenario: &str,
) {
    let node = lab::node(1);
    let dir = scratch(test);
    let mut settings = AppSettings::for_node(&node);
    settings.ring_timeout_secs = ring_timeout_secs;
    let _app = App::start(&dir, &settings).await;

    let bob = Phone::callee(&dir, &node, "bob", bob_scenario, &[]).await;
    let alice = Phone::caller(&dir, &node, alice_scenario, "bob", &[]);
    alice.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn r2_busy_callee_gives_the_caller_486() {
    let _lab = serial().await;
    alice_calls_bob("r2_busy", 30.0, "uas_busy.xml", "uac_expect_486.xml").await;
}

#[tokio::test]
async fn r2_declined_callee_gives_the_caller_the_rejection() {
    let _lab = serial().await;
    // A 603 from the callee is cause 21 (call rejected), which Asterisk answers to the caller as 403.
    alice_calls_bob("r2_declined", 30.0, "uas_decline.xml", "uac_expect_403.xml").await;
}

#[tokio::test]
async fn r2_no_answer_within_the_ring_timeout_gives_480_and_cancels_the_callee() {
    let _lab = serial().await;
    // The callee rings until it is cancelled (its scenario expects the CANCEL).
    alice_calls_bob(
        "r2_no_answer",
        2.0,
        "uas_ring_forever.xml",
        "uac_expect_480.xml",
    )
    .await;
}

#[tokio::test]
async fn r2_caller_cancels_while_ringing_and_the_callee_is_cancelled() {
    let _lab = serial().await;
    alice_calls_bob("r2_cancel", 30.0, "uas_ring_forever.xml", "uac_cancel.xml").await;
}

#[tokio::test]
async fn r2_unknown_extension_gives_404() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("r2_unknown_extension");
    let _app = App::start(&dir, &AppSettings::for_node(&node)).await;

    // No route matches digits (the test routes are letters only).
    Phone::caller(&dir, &node, "uac_expect_404.xml", "12345", &[])
        .expect_success()
        .await;
    // A route matches, but it names no endpoint.
    Phone::caller(&dir, &node, "uac_expect_404.xml", "nosuchphone", &[])
        .expect_success()
        .await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn r3_callee_hangs_up_and_the_caller_is_hung_up() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("r3_callee_hangs_up");
    let _app = App::start(&dir, &AppSettings::for_node(&node)).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer_then_bye.xml", &[]).await;
    let alice = Phone::caller(&dir, &node, "uac_talk_until_bye.xml", "bob", &[]);
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    bob.expect_success().await;
    alice.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn r3_app_reconnects_after_asterisk_restarts_and_the_next_call_works() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("r3_asterisk_restart");
    let app = App::start(&dir, &AppSettings::for_node(&node)).await;

    lab::kill_node(1);
    app.wait_ready(false).await;
    lab::start_node(1);
    app.wait_ready(true).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let alice = Phone::caller(
        &dir,
        &node,
        "uac_talk.xml",
        "bob",
        &["-set", "hold_ms", "1000"],
    );
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    alice.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
    assert!(app.log().contains("events websocket connected"));
}

#[tokio::test]
async fn wrong_ari_credentials_give_one_clear_error_line() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("wrong_credentials");
    let mut app = App::spawn(&dir, &AppSettings::for_node(&node), "not-the-password");
    let code = app.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1));
    let log = app.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors,
        vec![format!(
            "error: node node1: ARI at {} rejected the credentials of user 'ari-transfer' (401 Unauthorized)",
            node.ari_url()
        )],
        "log:\n{log}"
    );
    assert!(!log.contains("panicked"));
}

#[tokio::test]
async fn a_second_instance_on_the_same_stasis_application_is_warned_about() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("second_instance");
    let settings = AppSettings::for_node(&node);
    let _first = App::start(&dir.join("first"), &settings).await;
    let second = App::spawn(&dir.join("second"), &settings, lab::ARI_PASSWORD);
    second.wait_ready(true).await;
    assert!(
        second
            .log()
            .contains("another client already subscribes to this Stasis application"),
        "{}",
        second.log()
    );
}
