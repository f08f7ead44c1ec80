//! Attended transfers across Asterisk nodes (A3, S1) end to end: two real Asterisk 22 instances of the lab
//! joined by SIP trunks (endpoint `nodeM` on node N reaches node M), one app connected to both, SIPp
//! phones. Each test asserts the NOTIFYs the transferring phone received, the bridges on both nodes over
//! their own ARI (the link leg shows as `PJSIP/node2-…` on node1 and `PJSIP/node1-…` on node2), who was
//! hung up, and that nothing of the app is left on either node.

mod lab;

use lab::{
    ari_get, ari_variable, assert_nothing_left, consult_call, eventually, notified, replaces,
    scratch, serial, wait_for_bridge, App, AppSettings, Node, Phone,
};

struct TwoNodes {
    node1: Node,
    node2: Node,
    dir: std::path::PathBuf,
}

fn two_nodes(test: &str) -> TwoNodes {
    TwoNodes {
        node1: lab::node(1),
        node2: lab::node(2),
        dir: scratch(test),
    }
}

impl TwoNodes {
    async fn app(&self) -> App {
        App::start(
            &self.dir,
            &AppSettings::for_nodes(&[&self.node1, &self.node2]),
        )
        .await
    }

    async fn nothing_left(&self) {
        assert_nothing_left(&self.node1).await;
        assert_nothing_left(&self.node2).await;
    }
}

/// A3: alice's call to `held.1` is on node `held.0`, her consult call to `consulted.1` on the other node,
/// and her REFER comes on the held call, naming the consult dialog. Afterwards `held.1` talks to
/// `consulted.1` through the link leg (checked on both nodes), hangs up 5 s after answering, and the link
/// leg's BYE ends the other side; alice is told 200 and both her legs are hung up.
async fn attended_across(
    lab: &TwoNodes,
    held: (&Node, &str),
    consulted: (&Node, &str),
    test: &str,
) {
    let _app = lab.app().await;
    let stays = Phone::answers_then_hangs_up(&lab.dir, held.0, held.1, 0, 5000).await;
    let far = Phone::callee(&lab.dir, consulted.0, consulted.1, "uas_answer.xml", &[]).await;
    let (consult, call_id, to_tag, from_tag) =
        consult_call(&lab.dir, consulted.0, test, "alice", consulted.1).await;
    let alice = Phone::caller(
        &lab.dir,
        held.0,
        "xfer_uac_attended.xml",
        held.1,
        &replaces(consulted.1, (&call_id, &to_tag, &from_tag), "200"),
    );

    // The media path: on each node its phone and the link leg (named after the other node).
    let (near, away) = (
        format!("PJSIP/{}-", held.1),
        format!("PJSIP/{}-", consulted.1),
    );
    let (to_far, to_near) = (
        format!("PJSIP/{}-", consulted.0.name),
        format!("PJSIP/{}-", held.0.name),
    );
    wait_for_bridge(held.0, &[&near, &to_far]).await;
    wait_for_bridge(consulted.0, &[&away, &to_near]).await;
    assert_eq!(
        alice.finish().await,
        notified(200),
        "alice is told 200, then hung up"
    );
    consult.expect_success().await;
    stays.expect_success().await;
    far.expect_success().await;
    lab.nothing_left().await;
}

#[tokio::test]
async fn a3_attended_transfer_across_nodes_refer_on_the_first_calls_node() {
    let _lab = serial().await;
    let lab = two_nodes("a3_refer_on_node1");
    // bob (node1) is the transferee; carol (node2) the consulted party.
    attended_across(&lab, (&lab.node1, "bob"), (&lab.node2, "carol"), "a3_node1").await;
}

#[tokio::test]
async fn a3_attended_transfer_across_nodes_refer_on_the_consult_calls_node() {
    let _lab = serial().await;
    let lab = two_nodes("a3_refer_on_node2");
    // The mirror: the REFER comes on node2 (alice's call with carol), naming her dialog with bob on node1.
    attended_across(&lab, (&lab.node2, "carol"), (&lab.node1, "bob"), "a3_node2").await;
}

#[tokio::test]
async fn a3_a_replaces_naming_a_trunk_leg_gives_503_and_changes_nothing() {
    let _lab = serial().await;
    let lab = two_nodes("a3_trunk_leg");
    let mut settings = AppSettings::for_nodes(&[&lab.node1, &lab.node2]);
    // `remotecarol` on node1 is carol on node2, over the trunk.
    settings.routes.insert(
        0,
        ("remote([a-z]+)".to_owned(), "PJSIP/{1}@node2".to_owned()),
    );
    let _app = App::start(&lab.dir, &settings).await;

    // alice (node1) talks with carol (node2) through the trunk: its two legs share one Call-ID.
    let carol = Phone::callee(&lab.dir, &lab.node2, "carol", "uas_answer.xml", &[]).await;
    let alice = Phone::caller(
        &lab.dir,
        &lab.node1,
        "uac_talk.xml",
        "remotecarol",
        &["-set", "hold_ms", "8000"],
    );
    wait_for_bridge(&lab.node1, &["PJSIP/alice-", "PJSIP/node2-"]).await;
    wait_for_bridge(&lab.node2, &["PJSIP/carol-", "PJSIP/node1-"]).await;
    let trunk_leg = eventually(
        std::time::Duration::from_secs(5),
        "node1's trunk leg",
        || async {
            let channels = ari_get(&lab.node1, "/channels").await;
            channels.as_array()?.iter().find_map(|c| {
                let name = c["name"].as_str()?;
                name.starts_with("PJSIP/node2-").then(|| {
                    (
                        c["id"].as_str().unwrap_or_default().to_owned(),
                        c["protocol_id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
            })
        },
    )
    .await;
    let (trunk_channel, trunk_call_id) = trunk_leg;
    let to_tag = ari_variable(&lab.node1, &trunk_channel, "CHANNEL(pjsip,local_tag)").await;
    let from_tag = ari_variable(&lab.node1, &trunk_channel, "CHANNEL(pjsip,remote_tag)").await;

    // dave, talking with bob on node1, REFERs naming that trunk dialog with node1's tags: Asterisk
    // resolves it to node1's trunk leg, which the app must not take for a phone's consult call.
    let bob = Phone::callee(&lab.dir, &lab.node1, "bob", "uas_answer.xml", &[]).await;
    let call_id = trunk_call_id.replace('@', "%40");
    let mut keys = replaces("carol", (&call_id, &to_tag, &from_tag), "503");
    keys.extend(["-set", "talk_after_ms", "1500"]);
    let dave = Phone::start(
        &lab.dir,
        &lab.node1,
        "xfer_uac_attended.xml",
        "bob",
        "dave",
        lab::free_udp_port(),
        &keys,
    );
    dave.wait_logged("TRANSFER result").await;
    // Nothing changed: dave is still with bob, alice still with carol through the trunk.
    wait_for_bridge(&lab.node1, &["PJSIP/bob-", "PJSIP/dave-"]).await;
    wait_for_bridge(&lab.node1, &["PJSIP/alice-", "PJSIP/node2-"]).await;
    wait_for_bridge(&lab.node2, &["PJSIP/carol-", "PJSIP/node1-"]).await;
    assert_eq!(dave.finish().await, notified(503));
    bob.expect_success().await;
    alice.expect_success().await;
    carol.expect_success().await;
    lab.nothing_left().await;
}
