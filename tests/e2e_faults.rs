//! The fault matrix, end to end (so far: a blind transfer while its target rings, and a feature-code
//! consultation). The app reaches lab
//! node 1's ARI through the proxy of `lab/proxy.rs`, which answers a request with 500 itself, delays it,
//! or cuts the events websocket. Whatever the fault, the REFERing phone gets exactly one final NOTIFY
//! (its scenario fails on a second one or on none), nobody is left in silence (who is bridged with whom is
//! checked over ARI), nothing is left in Asterisk, and the service serves the next transfer.

mod lab;

use std::time::Duration;

use lab::proxy::AriProxy;
use lab::{
    assert_nothing_left, notified, scratch, serial, wait_for_bridge, App, AppSettings, Node, Phone,
    ALICE, BOB, CAROL,
};

struct Setup {
    node: Node,
    dir: std::path::PathBuf,
    proxy: AriProxy,
    app: App,
}

/// The feature codes of the feature-code tests (`*2` + extension), with 201 routed to carol.
const METAFLOWS: &str = include_str!("fixtures/metaflows.toml");

async fn setup(test: &str) -> Setup {
    let node = lab::node(1);
    let dir = scratch(test);
    let proxy = AriProxy::start(&node).await;
    let mut settings = AppSettings::for_node(&node);
    settings.nodes[0].1 = proxy.url.clone();
    settings
        .routes
        .insert(0, ("201".into(), "PJSIP/carol".into()));
    settings.extra = METAFLOWS.to_owned();
    let app = App::start(&dir, &settings).await;
    Setup {
        node,
        dir,
        proxy,
        app,
    }
}

impl Setup {
    /// bob answers alice, who REFERs him to carol 2 s later and expects the final NOTIFY `status`;
    /// returns once alice and bob talk, before the REFER.
    async fn blind(&self, status: &str) -> (Phone, Phone) {
        let bob = Phone::callee(&self.dir, &self.node, "bob", "uas_answer.xml", &[]).await;
        let args = [
            "-set",
            "xfer_after_ms",
            "2000",
            "-set",
            "talk_after_ms",
            "1500",
        ];
        let alice = Phone::blind_transferer(&self.dir, &self.node, "carol", status, &args);
        wait_for_bridge(&self.node, &[ALICE, BOB]).await;
        (alice, bob)
    }

    /// The service still works: a blind transfer after the fault succeeds (NOTIFY 200, bob and carol
    /// bridged), and nothing is left.
    async fn serves_the_next_transfer(&self) {
        let carol = Phone::answers_then_hangs_up(&self.dir, &self.node, "carol", 500, 1500).await;
        let (alice, bob) = self.blind("200").await;
        wait_for_bridge(&self.node, &[BOB, CAROL]).await;
        assert_eq!(alice.finish().await, notified(200));
        carol.expect_success().await;
        bob.expect_success().await;
        assert_nothing_left(&self.node).await;
    }
}

#[tokio::test]
async fn f_500_during_blind_ringing_tells_the_phone_503_and_gives_the_transferer_back() {
    let _lab = serial().await;
    let lab = setup("f_500_blind_ringing").await;
    // carol has a contact (so that her channel can be created), but her dial never reaches her.
    Phone::register(&lab.dir, &lab.node, "carol", lab::free_udp_port()).await;
    let (alice, bob) = lab.blind("503").await;
    // carol's dial (the next one: bob's was answered) fails; it is not made again.
    lab.proxy.fail(&["POST /ari/channels/", "/dial"], 500, 1);
    alice.wait_logged("TRANSFER result").await;
    // alice talks with bob again, then hangs up.
    wait_for_bridge(&lab.node, &[ALICE, BOB]).await;
    assert_eq!(alice.finish().await, notified(503));
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    assert_eq!(lab.proxy.sprung(), 1, "the fault answered carol's dial");
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_delay_during_blind_ringing_still_completes_the_transfer() {
    let _lab = serial().await;
    let lab = setup("f_delay_blind_ringing").await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 500, 1500).await;
    let (alice, bob) = lab.blind("200").await;
    // carol's dial reaches Asterisk 1.5 s late; bob hears the ringback meanwhile.
    lab.proxy.delay(
        &["POST /ari/channels/", "/dial"],
        Duration::from_millis(1500),
        1,
    );
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    assert_eq!(alice.finish().await, notified(200));
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    assert_eq!(lab.proxy.sprung(), 1, "the fault delayed carol's dial");
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_websocket_drop_during_blind_ringing_resyncs_and_completes_the_transfer() {
    let _lab = serial().await;
    let lab = setup("f_ws_drop_blind_ringing").await;
    // carol rings 4 s: the app is connected again (and re-synced) before she answers.
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 4000, 1500).await;
    let (alice, bob) = lab.blind("200").await;
    lab::ringing(&lab.node, CAROL).await;
    assert_eq!(lab.proxy.drop_events(), 1, "one events websocket to cut");
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    assert_eq!(alice.finish().await, notified(200));
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    // The app saw the drop and connected again.
    let base = format!("http://127.0.0.1:{}", lab.app.http_port);
    lab::assert_metrics(
        &base,
        &[
            r#"ari_transfer_websocket_connects_total{node="node1"} 2"#,
            r#"ari_transfer_websocket_disconnects_total{node="node1"} 1"#,
        ],
    )
    .await;
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_500_during_feature_consultation_gives_the_transferor_the_transferee_back() {
    let _lab = serial().await;
    let lab = setup("f_500_feature_consultation").await;
    Phone::register(&lab.dir, &lab.node, "carol", lab::free_udp_port()).await;
    let bob = Phone::callee(&lab.dir, &lab.node, "bob", "uas_answer.xml", &[]).await;
    // alice presses *2201 3 s after the answer, and hangs up 6 s later.
    let alice = Phone::presses(&lab.dir, &lab.node, "*2201", 6000);
    wait_for_bridge(&lab.node, &[ALICE, BOB]).await;
    lab.proxy.fail(&["POST /ari/channels/", "/dial"], 500, 1);
    lab::eventually(Duration::from_secs(10), "carol's dial to fail", || async {
        (lab.proxy.sprung() == 1).then_some(())
    })
    .await;
    // bob's music stops and he talks with alice again, until she hangs up.
    lab::talking(&lab.node, &[ALICE, BOB], BOB).await;
    alice.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_websocket_drop_during_feature_consultation_still_completes_it() {
    let _lab = serial().await;
    let lab = setup("f_ws_drop_feature_consultation").await;
    // carol rings 2 s (the codes' target_timeout is 4 s): the app is back before she answers.
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 2000, 8000).await;
    let bob = Phone::callee(&lab.dir, &lab.node, "bob", "uas_answer.xml", &[]).await;
    let alice = Phone::presses(&lab.dir, &lab.node, "*2201", 7000);
    lab::ringing(&lab.node, CAROL).await;
    assert_eq!(lab.proxy.drop_events(), 1, "one events websocket to cut");
    // carol answers once the app is back: alice consults her, then hangs up, which completes it.
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    alice.expect_success().await;
    lab::talking(&lab.node, &[BOB, CAROL], BOB).await;
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    lab.serves_the_next_transfer().await;
}
