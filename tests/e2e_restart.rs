//! S3 end to end: the app is killed (SIGKILL, like a crash) while a call is up, and a new run takes over
//! what Asterisk kept in the Stasis application. Real Asterisk 22 (lab node 1), the real binary, SIPp
//! phones; each test ends checking that nothing is left.

mod lab;

use lab::{
    assert_nothing_left, notified, scratch, serial, wait_for_bridge, App, AppSettings, Phone,
};

#[tokio::test]
async fn s3_a_call_connected_before_a_restart_is_adopted_and_its_transfer_works() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("s3_adopted_call_transfers");
    let first = App::start(&dir.join("first"), &AppSettings::for_node(&node)).await;

    // alice talks with bob; 6 s after answering her phone transfers bob (blind) to carol.
    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let carol = Phone::answers_then_hangs_up(&dir, &node, "carol", 0, 2000).await;
    let later = ["-set", "xfer_after_ms", "6000"];
    let alice = Phone::blind_transferer(&dir, &node, "carol", "200", &later);
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;

    // The app dies; the call goes on in Asterisk. The next run adopts it before alice's REFER comes.
    drop(first);
    let second = App::take_over(&dir.join("second"), &AppSettings::for_node(&node)).await;
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    assert!(
        second
            .log()
            .contains("adopting a call an earlier run connected"),
        "{}",
        second.log()
    );
    assert!(
        alice.notifies().is_empty(),
        "the REFER came before the new run was up: the test's timing is off"
    );

    // The adopted call is transferred like any other: bob ends up with carol, alice is told 200.
    wait_for_bridge(&node, &["PJSIP/bob-", "PJSIP/carol-"]).await;
    assert_eq!(alice.finish().await, notified(200));
    carol.expect_success().await;
    // carol hangs up; the app hangs bob up (his scenario expects the BYE).
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn s3_a_party_left_alone_while_the_app_was_down_is_hung_up_by_the_next_run() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("s3_left_alone");
    let first = App::start(&dir.join("first"), &AppSettings::for_node(&node)).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let alice = Phone::caller(
        &dir,
        &node,
        "uac_talk.xml",
        "bob",
        &["-set", "hold_ms", "2500"],
    );
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;

    // The app dies; alice hangs up while no app is there: bob is left alone in the bridge.
    drop(first);
    alice.expect_success().await;
    wait_for_bridge(&node, &["PJSIP/bob-"]).await;

    // The next run finds him alone and hangs him up (his scenario expects the BYE).
    let second = App::take_over(&dir.join("second"), &AppSettings::for_node(&node)).await;
    bob.expect_success().await;
    assert!(second.log().contains("left alone in a bridge"));
    assert_nothing_left(&node).await;
}
