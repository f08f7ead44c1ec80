//! The fault matrix, end to end: a blind transfer while its target rings, an attended move, a feature-code
//! consultation and a cross-node link, each with a request answered 500, a request delayed, and the events
//! websocket cut (and, for a gap, refused until healed, so that what happens meanwhile is known only from
//! the re-sync). The app reaches lab node 1's ARI through the proxy of `lab/proxy.rs`, which answers a
//! request with 500 itself, delays it, or cuts the events websocket. Whatever the fault, the REFERing phone gets exactly one final NOTIFY
//! (its scenario fails on a second one or on none), nobody is left in silence (who is bridged with whom is
//! checked over ARI), nothing is left in Asterisk, and the service serves the next transfer.

mod lab;

use std::time::Duration;

use lab::proxy::AriProxy;
use lab::{
    assert_nothing_left, consult_call, notified, replaces, scratch, serial, wait_for_bridge, App,
    AppSettings, Node, Phone, ALICE, BOB, CAROL,
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
    setup_on(test, &[&lab::node(1)]).await
}

/// The app on `nodes`, the first one's ARI reached through the proxy.
async fn setup_on(test: &str, nodes: &[&Node]) -> Setup {
    let node = nodes[0].clone();
    let dir = scratch(test);
    let proxy = AriProxy::start(&node).await;
    let mut settings = AppSettings::for_nodes(nodes);
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

/// alice's consult call with carol, on the node it was made on, and the Replaces naming its dialog.
struct Consulted {
    consult: Phone,
    carol: Phone,
    replaces: (String, String, String),
}

impl Setup {
    /// carol (on `node`) answers alice's consult call.
    async fn consulted(&self, node: &Node, test: &str) -> Consulted {
        let carol = Phone::callee(&self.dir, node, "carol", "uas_answer.xml", &[]).await;
        let (consult, call_id, to_tag, from_tag) =
            consult_call(&self.dir, node, test, "alice", "carol").await;
        Consulted {
            consult,
            carol,
            replaces: (call_id, to_tag, from_tag),
        }
    }

    /// alice calls bob (who is already waiting) on the proxied node and, 1 s after the answer, transfers
    /// him to carol with an attended REFER naming the consult dialog, expecting the final NOTIFY `status`;
    /// after a failure she talks with bob 1.5 s more, then hangs up.
    fn attended_refer(&self, consulted: &Consulted, status: &str) -> Phone {
        let (call_id, to_tag, from_tag) = &consulted.replaces;
        let mut keys = replaces("carol", (call_id, to_tag, from_tag), status);
        keys.extend(["-set", "talk_after_ms", "1500"]);
        Phone::caller(&self.dir, &self.node, "xfer_uac_attended.xml", "bob", &keys)
    }

    /// A failed attended transfer: alice is told 503 and talks with bob again; her consult call is over
    /// (carol and the consult leg hung up); every scenario passes and nothing is left on the proxied node.
    async fn given_back(&self, alice: Phone, consulted: Consulted, bob: Phone) {
        alice.wait_logged("TRANSFER result").await;
        wait_for_bridge(&self.node, &[ALICE, BOB]).await;
        assert_eq!(alice.finish().await, notified(503));
        consulted.consult.expect_success().await;
        consulted.carol.expect_success().await;
        bob.expect_success().await;
        assert_nothing_left(&self.node).await;
    }

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

/// A feature-code consultation that completes although carol's dial meets `fault` (armed once alice
/// and bob talk, before alice presses `*2201`): alice consults carol (who rings `carol_rings_ms`), hangs
/// up, and bob and carol talk; nothing is left, and the proxy's faults sprang `sprung` times.
async fn feature_consultation_survives(
    test: &str,
    (carol_rings_ms, sprung): (u32, usize),
    fault: impl AsyncFnOnce(&Setup),
) {
    let lab = setup(test).await;
    let carol =
        Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", carol_rings_ms, 8000).await;
    let bob = Phone::callee(&lab.dir, &lab.node, "bob", "uas_answer.xml", &[]).await;
    // alice presses *2201 3 s after the answer, and hangs up 7 s later.
    let alice = Phone::presses(&lab.dir, &lab.node, "*2201", 7000);
    wait_for_bridge(&lab.node, &[ALICE, BOB]).await;
    fault(&lab).await;
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    alice.expect_success().await;
    lab::talking(&lab.node, &[BOB, CAROL], BOB).await;
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    assert_eq!(
        lab.proxy.sprung(),
        sprung,
        "requests the faults answered or delayed"
    );
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_websocket_drop_during_feature_consultation_still_completes_it() {
    let _lab = serial().await;
    // carol rings 2 s (the codes' target_timeout is 4 s): the app is back before she answers.
    feature_consultation_survives("f_ws_drop_feature_consultation", (2000, 0), async |lab| {
        lab::ringing(&lab.node, CAROL).await;
        assert_eq!(lab.proxy.drop_events(), 1, "one events websocket to cut");
    })
    .await;
}

#[tokio::test]
async fn f_websocket_gap_during_blind_ringing_a_target_answering_unseen_is_joined_at_the_resync() {
    let _lab = serial().await;
    let lab = setup("f_ws_gap_blind_ringing").await;
    // carol rings 1.5 s and answers while the app hears nothing from the node.
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 1500, 6000).await;
    let (alice, bob) = lab.blind("200").await;
    lab::ringing(&lab.node, CAROL).await;
    assert_eq!(lab.proxy.cut_events(), 1, "one events websocket to cut");
    lab::in_state(&lab.node, CAROL, "Up").await;
    // Only the re-sync can tell the app that carol answered.
    lab.proxy.heal();
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    assert_eq!(alice.finish().await, notified(200));
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_delay_during_feature_consultation_still_completes_it() {
    let _lab = serial().await;
    feature_consultation_survives("f_delay_feature_consultation", (500, 1), async |lab| {
        // carol's dial reaches Asterisk 1.5 s late (the codes' target_timeout is 4 s).
        let dial = ["POST /ari/channels/", "/dial"];
        lab.proxy.delay(&dial, Duration::from_millis(1500), 1);
    })
    .await;
}

#[tokio::test]
async fn f_500_during_attended_move_tells_the_phone_503_and_gives_the_transferer_back() {
    let _lab = serial().await;
    let lab = setup("f_500_attended_move").await;
    let consulted = lab.consulted(&lab.node, "f_500_attended_move").await;
    let carol_channel = lab::channel_id_named(&lab.node, CAROL).await;
    // The app makes a failed move once more (a lone 500 is absorbed that way): both attempts fail.
    lab.proxy.fail(&["/addChannel?", &carol_channel], 500, 2);
    let bob = Phone::callee(&lab.dir, &lab.node, "bob", "uas_answer.xml", &[]).await;
    let alice = lab.attended_refer(&consulted, "503");
    lab.given_back(alice, consulted, bob).await;
    assert_eq!(
        lab.proxy.sprung(),
        2,
        "the fault answered carol's move and its retry"
    );
    lab.serves_the_next_transfer().await;
}

/// An attended transfer that completes although its move meets `fault` (armed with carol's channel id):
/// bob and carol talk, alice is told 200, everyone's scenario passes, nothing is left.
async fn attended_move_survives(test: &str, fault: impl AsyncFnOnce(&Setup, &str)) {
    let lab = setup(test).await;
    let consulted = lab.consulted(&lab.node, test).await;
    let carol_channel = lab::channel_id_named(&lab.node, CAROL).await;
    let bob = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "bob", 0, 6000).await;
    let alice = lab.attended_refer(&consulted, "200");
    fault(&lab, &carol_channel).await;
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    assert_eq!(alice.finish().await, notified(200));
    consulted.consult.expect_success().await;
    consulted.carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_delay_during_attended_move_still_completes_the_transfer() {
    let _lab = serial().await;
    attended_move_survives("f_delay_attended_move", async |lab, carol| {
        lab.proxy
            .delay(&["/addChannel?", carol], Duration::from_millis(1500), 1);
    })
    .await;
}

#[tokio::test]
async fn f_websocket_gap_during_attended_move_confirms_the_move_at_the_resync() {
    let _lab = serial().await;
    attended_move_survives("f_ws_gap_attended_move", async |lab, carol| {
        let mut move_request = lab.proxy.hold(&["/addChannel?", carol]);
        move_request.arrived().await;
        // The move reaches Asterisk while the app hears nothing: only the re-sync shows carol moved.
        assert_eq!(lab.proxy.cut_events(), 1, "one events websocket to cut");
        move_request.release();
        // carol joins bob (alice's leg is still there: the app removes it once it knows of the move).
        lab::eventually(Duration::from_secs(10), "carol to join bob", || async {
            let bridges = lab::bridges_by_channel_name(&lab.node).await;
            let joined = |b: &Vec<String>| {
                [BOB, CAROL]
                    .iter()
                    .all(|p| b.iter().any(|c| c.starts_with(p)))
            };
            bridges.iter().any(joined).then_some(())
        })
        .await;
        lab.proxy.heal();
    })
    .await;
}

/// The cross-node cells: the app on nodes 1 and 2, node 1's ARI through the proxy. alice's call with bob
/// is on node 1, her consult call with carol on node 2; the REFER comes on node 1, so the link leg is
/// dialed from node 1 to node 2.
async fn cross_node(test: &str) -> (Setup, Node, Consulted) {
    let node2 = lab::node(2);
    let lab = setup_on(test, &[&lab::node(1), &node2]).await;
    let consulted = lab.consulted(&node2, test).await;
    (lab, node2, consulted)
}

const LINK_DIAL: [&str; 2] = ["POST /ari/channels/", "-link/dial"];

#[tokio::test]
async fn f_500_during_cross_node_link_tells_the_phone_503_and_gives_the_transferer_back() {
    let _lab = serial().await;
    let (lab, node2, consulted) = cross_node("f_500_cross_node_link").await;
    lab.proxy.fail(&LINK_DIAL, 500, 1);
    let bob = Phone::callee(&lab.dir, &lab.node, "bob", "uas_answer.xml", &[]).await;
    let alice = lab.attended_refer(&consulted, "503");
    lab.given_back(alice, consulted, bob).await;
    assert_nothing_left(&node2).await;
    assert_eq!(lab.proxy.sprung(), 1, "the fault answered the link's dial");
    lab.serves_the_next_transfer().await;
}

/// A cross-node transfer that completes although its link meets `fault`: bob (node 1) talks with carol
/// (node 2) through the link leg, alice is told 200, nothing is left on either node.
async fn cross_node_link_survives(test: &str, fault: impl AsyncFnOnce(&Setup, &Node)) {
    let (lab, node2, consulted) = cross_node(test).await;
    let bob = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "bob", 0, 6000).await;
    let alice = lab.attended_refer(&consulted, "200");
    fault(&lab, &node2).await;
    wait_for_bridge(&lab.node, &[BOB, "PJSIP/node2-"]).await;
    wait_for_bridge(&node2, &[CAROL, "PJSIP/node1-"]).await;
    assert_eq!(alice.finish().await, notified(200));
    consulted.consult.expect_success().await;
    consulted.carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&lab.node).await;
    assert_nothing_left(&node2).await;
    lab.serves_the_next_transfer().await;
}

#[tokio::test]
async fn f_delay_during_cross_node_link_still_completes_the_transfer() {
    let _lab = serial().await;
    cross_node_link_survives("f_delay_cross_node_link", async |lab, _| {
        lab.proxy.delay(&LINK_DIAL, Duration::from_millis(1500), 1);
    })
    .await;
}

#[tokio::test]
async fn f_websocket_gap_during_cross_node_link_joins_the_link_answered_unseen_at_the_resync() {
    let _lab = serial().await;
    cross_node_link_survives("f_ws_gap_cross_node_link", async |lab, _| {
        let mut dial = lab.proxy.hold(&LINK_DIAL);
        dial.arrived().await;
        // The link is dialed, and answered on node 2, while the app hears nothing from node 1.
        assert_eq!(lab.proxy.cut_events(), 1, "one events websocket to cut");
        dial.release();
        lab::in_state(&lab.node, "PJSIP/node2-", "Up").await;
        lab.proxy.heal();
    })
    .await;
}
