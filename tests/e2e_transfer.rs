//! Phone-initiated transfers (REFER) end to end: a real Asterisk 22 from the lab, the real binary, SIPp
//! phones. Each test asserts the NOTIFYs the transferring phone received, who ends up bridged with whom
//! (over ARI), who was hung up (each phone's scenario expects its BYE or sends its own), and that nothing of
//! the app is left.

mod lab;

use std::path::Path;
use std::time::Duration;

use lab::proxy::AriProxy;
use lab::{
    assert_nothing_left, bridges_by_channel_name, channel_id_named, consult_call, eventually,
    notified, replaces, scratch, serial, wait_for_bridge, App, AppSettings, Node, Phone,
};

async fn app(dir: &Path, node: &Node, ring_timeout_secs: f64) -> App {
    let mut settings = AppSettings::for_node(node);
    settings.ring_timeout_secs = ring_timeout_secs;
    App::start(dir, &settings).await
}

#[tokio::test]
async fn b1_blind_transfer_target_answers_and_talks_to_the_transferee() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b1_blind");
    let _app = app(&dir, &node, 30.0).await;

    // bob is the transferee: he stays until carol hangs up, then the app hangs him up.
    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let carol = Phone::answers_then_hangs_up(&dir, &node, "carol", 0, 2000).await;
    let alice = Phone::blind_transferer(&dir, &node, "carol", "200", &[]);

    wait_for_bridge(&node, &["PJSIP/bob-", "PJSIP/carol-"]).await;
    // carol is shown who is coming: bob (the leg the app dialed, which Asterisk gives no caller id of
    // its own; it used to come as "Anonymous").
    let from = lab::invite_from(&carol);
    assert!(from.contains("sip:bob@"), "carol's INVITE: {from}");
    assert_eq!(
        alice.finish().await,
        notified(200),
        "alice is told 200, then hung up"
    );
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

/// alice, talking with bob, transfers him blind to `target`, which fails (carol's phone runs
/// `carol_scenario`, if carol is dialed at all): alice is told `status` and is back with bob, then hangs up.
async fn blind_transfer_fails(
    test: &str,
    ring_timeout_secs: f64,
    target: &str,
    carol_scenario: Option<&str>,
    status: u16,
) {
    let node = lab::node(1);
    let dir = scratch(test);
    let _app = app(&dir, &node, ring_timeout_secs).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let carol = match carol_scenario {
        Some(scenario) => Some(Phone::callee(&dir, &node, "carol", scenario, &[]).await),
        None => None,
    };
    let expect = status.to_string();
    let talk = ["-set", "talk_after_ms", "2000"];
    let alice = Phone::blind_transferer(&dir, &node, target, &expect, &talk);

    alice.wait_logged("TRANSFER result").await;
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    assert_eq!(alice.finish().await, notified(status));
    if let Some(carol) = carol {
        carol.expect_success().await;
    }
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn b2_blind_transfer_to_a_busy_target_gives_603_and_the_transferer_back() {
    let _lab = serial().await;
    blind_transfer_fails("b2_blind_busy", 30.0, "carol", Some("uas_busy.xml"), 603).await;
}

#[tokio::test]
async fn b2_blind_transfer_to_a_declining_target_gives_603() {
    let _lab = serial().await;
    blind_transfer_fails(
        "b2_blind_declined",
        30.0,
        "carol",
        Some("uas_decline.xml"),
        603,
    )
    .await;
}

#[tokio::test]
async fn b3_blind_transfer_target_does_not_answer_gives_503_and_the_transferer_back() {
    let _lab = serial().await;
    // carol rings until the app cancels her (her scenario expects the CANCEL).
    blind_transfer_fails(
        "b3_blind_no_answer",
        2.0,
        "carol",
        Some("uas_ring_forever.xml"),
        503,
    )
    .await;
}

#[tokio::test]
async fn b3_blind_transfer_to_an_unreachable_target_gives_503() {
    let _lab = serial().await;
    // dave never registered: Asterisk cannot create a channel to him.
    blind_transfer_fails("b3_blind_unreachable", 30.0, "dave", None, 503).await;
}

#[tokio::test]
async fn b4_blind_transfer_without_a_route_gives_503_at_once() {
    let _lab = serial().await;
    // The test routes are letters only: digits have no route.
    blind_transfer_fails("b4_blind_no_route", 30.0, "12345", None, 503).await;
}

#[tokio::test]
async fn a6_blind_transfer_from_the_callees_phone() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("a6_blind_from_callee");
    let _app = app(&dir, &node, 30.0).await;

    // bob answers alice, then transfers her to carol; carol talks, then hangs up.
    let bob = Phone::callee(
        &dir,
        &node,
        "bob",
        "xfer_uas_blind.xml",
        &["-key", "target", "carol", "-set", "expect_status", "200"],
    )
    .await;
    let carol = Phone::answers_then_hangs_up(&dir, &node, "carol", 0, 2000).await;
    let alice = Phone::caller(&dir, &node, "uac_talk_until_bye.xml", "bob", &[]);

    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/carol-"]).await;
    assert_eq!(bob.finish().await, notified(200));
    carol.expect_success().await;
    alice.expect_success().await;
    assert_nothing_left(&node).await;
}

/// A1 (tags as the phone sends them: Asterisk resolves the dialog) and A2 (tags swapped: it does not, and
/// the app resolves the Call-ID itself) share one run.
async fn attended_transfer(name: &str, swap_tags: bool) {
    let node = lab::node(1);
    let dir = scratch(name);
    let _app = app(&dir, &node, 30.0).await;

    // carol is the consulted party; bob the transferee, who hangs up once he has talked with carol.
    let carol = Phone::callee(&dir, &node, "carol", "uas_answer.xml", &[]).await;
    let bob = Phone::answers_then_hangs_up(&dir, &node, "bob", 0, 5000).await;
    let (consult, call_id, to_tag, from_tag) =
        consult_call(&dir, &node, name, "alice", "carol").await;
    let (to_tag, from_tag) = if swap_tags {
        (from_tag, to_tag)
    } else {
        (to_tag, from_tag)
    };
    let alice = Phone::caller(
        &dir,
        &node,
        "xfer_uac_attended.xml",
        "bob",
        &replaces("carol", (&call_id, &to_tag, &from_tag), "200"),
    );

    wait_for_bridge(&node, &["PJSIP/bob-", "PJSIP/carol-"]).await;
    assert_eq!(
        alice.finish().await,
        notified(200),
        "alice is told 200, then hung up"
    );
    consult.expect_success().await;
    bob.expect_success().await;
    carol.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn a1_attended_transfer_resolved_by_asterisk() {
    let _lab = serial().await;
    attended_transfer("a1_attended", false).await;
}

#[tokio::test]
async fn a2_attended_transfer_with_swapped_tags_is_resolved_by_call_id() {
    let _lab = serial().await;
    attended_transfer("a2_attended_swapped", true).await;
}

#[tokio::test]
async fn a4_attended_transfer_to_an_unknown_dialog_gives_503_and_changes_nothing() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("a4_attended_unknown");
    let _app = app(&dir, &node, 30.0).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let unknown = ("nosuchcall%40127.0.0.1", "nosuchtag", "nosuchtag2");
    let mut keys = replaces("carol", unknown, "503");
    keys.extend(["-set", "talk_after_ms", "1500"]);
    let alice = Phone::caller(&dir, &node, "xfer_uac_attended.xml", "bob", &keys);

    alice.wait_logged("TRANSFER result").await;
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    assert_eq!(alice.finish().await, notified(503));
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

/// The Replaces rule (engine/replaces.rs): alice, talking with bob, sends an attended REFER whose Replaces
/// names dave's unrelated call with eve by its Call-ID, with tags Asterisk does not match (`tags` makes
/// them from that call's own). The app's Call-ID index must not stand in for Asterisk for another phone's
/// dialog: alice is told 503, and both calls go on untouched.
async fn replaces_names_a_strangers_call(name: &str, tags: fn(String, String) -> (String, String)) {
    let node = lab::node(1);
    let dir = scratch(name);
    let _app = app(&dir, &node, 30.0).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    // eve ends the stranger's call herself, well after alice's REFER.
    let eve = Phone::answers_then_hangs_up(&dir, &node, "eve", 0, 8000).await;
    let (dave, call_id, to_tag, from_tag) = consult_call(&dir, &node, name, "dave", "eve").await;
    let (to_tag, from_tag) = tags(to_tag, from_tag);
    let mut keys = replaces("carol", (&call_id, &to_tag, &from_tag), "503");
    keys.extend(["-set", "talk_after_ms", "1500"]);
    let alice = Phone::caller(&dir, &node, "xfer_uac_attended.xml", "bob", &keys);

    alice.wait_logged("TRANSFER result").await;
    let mut bridges = bridges_by_channel_name(&node).await;
    bridges.sort();
    let pairs: Vec<Vec<&str>> = bridges
        .iter()
        .map(|b| {
            b.iter()
                .map(|n| n.split('-').next().unwrap_or_default())
                .collect()
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            vec!["PJSIP/alice", "PJSIP/bob"],
            vec!["PJSIP/dave", "PJSIP/eve"]
        ],
        "both calls untouched: {bridges:?}"
    );
    assert_eq!(alice.finish().await, notified(503));
    bob.expect_success().await;
    eve.expect_success().await;
    dave.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn a4_a_replaces_naming_a_strangers_call_with_made_up_tags_gives_503_and_changes_nothing() {
    let _lab = serial().await;
    replaces_names_a_strangers_call("a4_stranger_made_up_tags", |_, _| {
        ("no-such-tag".to_owned(), "nor-this-one".to_owned())
    })
    .await;
}

#[tokio::test]
async fn a4_a_replaces_naming_a_strangers_call_with_its_tags_swapped_gives_503_and_changes_nothing()
{
    let _lab = serial().await;
    // Its own tags, in the order Asterisk does not match: the index took them before the rule.
    replaces_names_a_strangers_call("a4_stranger_swapped_tags", |to, from| (from, to)).await;
}

/// How long the party that hangs up in an A5 test talks before it does: well after the REFER (sent 500 ms
/// after alice's call is answered), and well within the app's 10 s timeout of the move held meanwhile.
const A5_HANGUP_MS: u32 = 4500;

/// A5: alice, talking with bob, has consulted carol and transfers bob to her (attended REFER). The app's
/// move (carol's addChannel into bob's bridge) is held in a proxy in front of ARI until `hangs_up` (bob or
/// carol) has hung up by itself and the app has decided to tell alice 503; only then does the move reach
/// Asterisk, too late. Returns once alice has the result.
async fn attended_move_interrupted(name: &str, hangs_up: &str) -> MoveInterrupted {
    let node = lab::node(1);
    let dir = scratch(name);
    let proxy = AriProxy::start(&node).await;
    let mut settings = AppSettings::for_node(&node);
    settings.nodes[0].1 = proxy.url.clone();
    let app = App::start(&dir, &settings).await;

    let carol = a5_party(&dir, &node, "carol", hangs_up).await;
    let bob = a5_party(&dir, &node, "bob", hangs_up).await;
    let (consult, call_id, to_tag, from_tag) =
        consult_call(&dir, &node, name, "alice", "carol").await;
    let carol_channel = channel_id_named(&node, "PJSIP/carol-").await;
    let mut move_request = proxy.hold(&["/addChannel?", &carol_channel]);
    let mut keys = replaces("carol", (&call_id, &to_tag, &from_tag), "503");
    keys.extend([
        "-set",
        "xfer_after_ms",
        "500",
        "-set",
        "talk_after_ms",
        "1500",
    ]);
    let alice = Phone::caller(&dir, &node, "xfer_uac_attended.xml", "bob", &keys);

    move_request.arrived().await;
    // The app's log up to its decision to tell alice 503.
    let until_503 = || {
        let log = app.log();
        let end = log.find("transfer ended")?;
        let line_end = end + log[end..].find('\n')?;
        log[end..line_end]
            .contains("status=503")
            .then(|| log[..line_end].to_owned())
    };
    let what = format!("the app to end the transfer with 503 after {hangs_up} hung up");
    let log = eventually(Duration::from_secs(15), &what, || async { until_503() }).await;
    assert!(
        !log.contains("ARI request failed"),
        "the app decides on the hangup, while its move is still held:\n{log}"
    );
    move_request.release();
    alice.wait_logged("TRANSFER result").await;
    MoveInterrupted {
        node,
        _app: app,
        _proxy: proxy,
        phones: [alice, consult, bob, carol],
    }
}

/// An A5 test after the move: the app and its proxy still running, and the phones (alice, alice's consult
/// leg, bob, carol).
struct MoveInterrupted {
    node: Node,
    _app: App,
    _proxy: AriProxy,
    phones: [Phone; 4],
}

impl MoveInterrupted {
    /// alice was told 503, every phone's scenario passed (each expects its BYE or sends its own), and
    /// nothing is left.
    async fn finish(self) {
        let [alice, consult, bob, carol] = self.phones;
        assert_eq!(alice.finish().await, notified(503));
        consult.expect_success().await;
        carol.expect_success().await;
        bob.expect_success().await;
        assert_nothing_left(&self.node).await;
    }
}

/// A party of an A5 test: it answers, and hangs up by itself if it is the one that `hangs_up`.
async fn a5_party(dir: &Path, node: &Node, user: &str, hangs_up: &str) -> Phone {
    if user == hangs_up {
        Phone::answers_then_hangs_up(dir, node, user, 0, A5_HANGUP_MS).await
    } else {
        Phone::callee(dir, node, user, "uas_answer.xml", &[]).await
    }
}

#[tokio::test]
async fn a5_target_hangs_up_during_the_attended_move_gives_503_and_the_transferer_back() {
    let _lab = serial().await;
    let lab = attended_move_interrupted("a5_target_hangs_up", "carol").await;

    // alice is back with bob (her consult leg is hung up), and hangs up herself after talking.
    let bob_again = ["PJSIP/alice-", "PJSIP/bob-"];
    eventually(
        Duration::from_secs(5),
        "alice and bob to be the only bridge",
        || async {
            let bridges = bridges_by_channel_name(&lab.node).await;
            let only = matches!(&bridges[..], [names] if names.len() == 2
                && names.iter().zip(bob_again).all(|(n, p)| n.starts_with(p)));
            only.then_some(())
        },
    )
    .await;
    lab.finish().await;
}

#[tokio::test]
async fn a5_transferee_hangs_up_during_the_attended_move_gives_503_and_ends_everything() {
    let _lab = serial().await;
    let lab = attended_move_interrupted("a5_transferee_hangs_up", "bob").await;
    // Nobody is left to transfer: alice (both legs) and carol are hung up by the app.
    lab.finish().await;
}

#[tokio::test]
async fn b5_transferee_hangs_up_while_the_target_rings() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b5_transferee_hangs_up");
    let _app = app(&dir, &node, 30.0).await;

    // bob hangs up 3 s after answering, while carol (who never answers) rings for his transfer.
    let bob = Phone::answers_then_hangs_up(&dir, &node, "bob", 0, 3000).await;
    let carol = Phone::callee(&dir, &node, "carol", "uas_ring_forever.xml", &[]).await;
    let talk = ["-set", "talk_after_ms", "10000"];
    let alice = Phone::blind_transferer(&dir, &node, "carol", "503", &talk);

    // alice is told 503 and hung up (her scenario takes the BYE that comes before her own); carol is
    // cancelled (her scenario expects the CANCEL).
    assert_eq!(alice.finish().await, notified(503));
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn a6_attended_transfer_from_the_callees_phone() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("a6_attended_from_callee");
    let _app = app(&dir, &node, 30.0).await;

    // bob's phone consults carol first; then alice calls bob, and bob's phone transfers her to carol.
    let carol = Phone::answers_then_hangs_up(&dir, &node, "carol", 0, 8000).await;
    let (consult, call_id, to_tag, from_tag) =
        consult_call(&dir, &node, "a6_attended_from_callee", "bob", "carol").await;
    let bob = Phone::callee(
        &dir,
        &node,
        "bob",
        "xfer_uas_attended.xml",
        &replaces("carol", (&call_id, &to_tag, &from_tag), "200"),
    )
    .await;

    let alice = Phone::caller(&dir, &node, "uac_talk_until_bye.xml", "bob", &[]);

    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/carol-"]).await;
    assert_eq!(
        bob.finish().await,
        notified(200),
        "bob is told 200, then hung up"
    );
    consult.expect_success().await;
    carol.expect_success().await;
    alice.expect_success().await;
    assert_nothing_left(&node).await;
}

/// B6: alice REFERs bob to carol and hangs up at once (on the 202), while carol rings. `carol` is carol's
/// phone; `recall` alice's phone for the call back, if she is to be reachable. Returns alice's NOTIFYs.
async fn transferer_leaves(
    dir: &Path,
    node: &Node,
    settings: &AppSettings,
    carol: (&str, &[&str]),
) -> (App, Phone, Phone, Vec<String>) {
    let app = App::start(dir, settings).await;
    let bob = Phone::callee(dir, node, "bob", "uas_answer.xml", &[]).await;
    let carol = Phone::callee(dir, node, "carol", carol.0, carol.1).await;
    let alice = Phone::caller(
        dir,
        node,
        "xfer_uac_blind_leave.xml",
        "bob",
        &["-key", "target", "carol"],
    );
    // Asterisk itself ends the REFER with 503 when alice's channel goes with the transfer pending.
    let notifies = alice.finish().await;
    (app, bob, carol, notifies)
}

#[tokio::test]
async fn b6_transferer_hangs_up_while_the_target_rings_and_the_transfer_goes_on() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b6_transferer_leaves");
    let settings = AppSettings::for_node(&node);
    // carol rings 1.5 s, long after alice has gone, then talks with bob and hangs up.
    let carol = (
        "uas_answer_then_bye.xml",
        &["-set", "ring_ms", "1500", "-set", "hold_ms", "2000"][..],
    );
    let (_app, bob, carol, notifies) = transferer_leaves(&dir, &node, &settings, carol).await;
    assert_eq!(
        notifies,
        notified(503),
        "alice's phone left before the outcome"
    );

    wait_for_bridge(&node, &["PJSIP/bob-", "PJSIP/carol-"]).await;
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn b6_target_fails_after_the_transferer_left_and_the_transferer_is_called_back() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b6_recall");
    let mut settings = AppSettings::for_node(&node);
    settings.ring_timeout_secs = 2.0;
    // alice's phone answers the call back, talks with bob, and hangs up.
    let recall = Phone::answers_then_hangs_up(&dir, &node, "alice", 0, 2000).await;
    // carol never answers: the app cancels her after the ring timeout.
    let carol = ("uas_ring_forever.xml", &[][..]);
    let (_app, bob, carol, notifies) = transferer_leaves(&dir, &node, &settings, carol).await;
    assert_eq!(notifies, notified(503));

    carol.expect_success().await;
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;
    recall.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn b6_target_fails_after_the_transferer_left_without_recall_releases_the_transferee() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b6_no_recall");
    let mut settings = AppSettings::for_node(&node);
    settings.ring_timeout_secs = 2.0;
    settings.recall_transferer = false;
    let carol = ("uas_ring_forever.xml", &[][..]);
    let (app, bob, carol, notifies) = transferer_leaves(&dir, &node, &settings, carol).await;
    assert_eq!(notifies, notified(503));

    // carol is cancelled, and bob, with nobody to return to, is hung up (his scenario expects the BYE).
    carol.expect_success().await;
    bob.expect_success().await;
    assert!(
        !app.log().contains("calling the transferer back"),
        "no recall was made"
    );
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn b7_a_second_refer_while_the_first_is_pending_lets_the_first_go_on() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b7_second_refer");
    let _app = app(&dir, &node, 30.0).await;

    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    // carol rings for a second (REFER #2 arrives meanwhile), then talks with bob and hangs up.
    let carol = Phone::answers_then_hangs_up(&dir, &node, "carol", 1000, 2000).await;
    // REFER #2 asks for dave. Asterisk 22 applies each progress post to both REFERs, so the app leaves
    // REFER #2 alone and both end with the first one's 200 (the scenario checks each one's final status).
    let alice = Phone::caller(
        &dir,
        &node,
        "xfer_uac_blind_twice.xml",
        "bob",
        &[
            "-key",
            "target",
            "carol",
            "-key",
            "target2",
            "dave",
            "-set",
            "expect_status",
            "200",
            "-set",
            "expect_status2",
            "200",
        ],
    );

    wait_for_bridge(&node, &["PJSIP/bob-", "PJSIP/carol-"]).await;
    let notifies = alice.finish().await;
    let finals: Vec<&String> = notifies
        .iter()
        .filter(|n| n.contains("terminated"))
        .collect();
    assert_eq!(finals.len(), 2, "one final NOTIFY per REFER: {notifies:?}");
    assert!(
        finals.iter().all(|n| n.starts_with("200 terminated")),
        "{notifies:?}"
    );
    carol.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}

#[tokio::test]
async fn b3_asterisk_restarting_while_the_target_rings_ends_the_transfer_at_once() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("b3_asterisk_restarts_while_ringing");
    // The ring timeout must outlast Asterisk's restart (2 to 4 s here), or it ends the transfer first.
    let ring = Duration::from_secs(8);
    let app = app(&dir, &node, ring.as_secs_f64()).await;

    let _bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let _carol = Phone::callee(&dir, &node, "carol", "uas_ring_forever.xml", &[]).await;
    let talk = ["-set", "talk_after_ms", "10000"];
    let _alice = Phone::blind_transferer(&dir, &node, "carol", "503", &talk);
    channel_id_named(&node, "PJSIP/carol-").await;

    // Every leg of the transfer (alice, bob and the ringing carol) goes with Asterisk.
    let ringing_since = std::time::Instant::now();
    lab::kill_node(1);
    app.wait_ready(false).await;
    lab::start_node(1);
    app.wait_ready(true).await;
    // alice's phone is back (registered anew): a transfer that had only heard of alice's leg going would
    // let carol "ring" on to the timeout, then call alice back for a bob who is gone.
    let alice_again = Phone::callee(&dir, &node, "alice", "uas_answer.xml", &[]).await;
    let past_the_timeout = ringing_since + ring + Duration::from_secs(2);
    tokio::time::sleep_until(past_the_timeout.into()).await;
    let log = app.log();
    assert!(
        !alice_again.trace_text().contains("INVITE sip:"),
        "alice was called back for a call that is gone:\n{}",
        alice_again.trace_text()
    );
    // alice's leg alone would let the transfer go on; bob's too ends it (carol's is then moot).
    assert!(
        log.matches("leg vanished while the websocket was down")
            .count()
            >= 2,
        "not only the transferer's leg is reported gone:\n{log}"
    );
    assert_nothing_left(&node).await;
}
