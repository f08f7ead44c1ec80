//! In-call feature codes (D1–D7) end to end: a real Asterisk 22 from the lab, the real binary, SIPp phones
//! that press RFC 4733 digits (`dtmf_uac.xml`). alice calls bob and presses `*2201` (201 is carol): bob is
//! held, alice consults carol. Each test asserts who is bridged with whom (over ARI), who hears music or a
//! tone (the format Asterisk writes to the channel: `gsm` for the lab's music on hold, `slin` for the
//! ringback tone, `ulaw` for the call itself), who is hung up (each phone's scenario expects its BYE or
//! sends its own), and that nothing of the app is left.

mod lab;

use lab::{scratch, serial, wait_for_bridge, wait_for_write_format, App, AppSettings, Node, Phone};

/// The codes of these tests: `*2` + extension transfers (the target rings at most 4 s; one recall of the
/// transferor, after 1 s), `*9` resumes; digits end 1 s after the last one.
const METAFLOWS: &str = include_str!("fixtures/metaflows.toml");

/// One test's lab node, scratch directory and app (with [`METAFLOWS`] and 201 routed to carol).
struct Setup {
    node: Node,
    dir: std::path::PathBuf,
    app: App,
}

async fn setup(test: &str) -> Setup {
    let node = lab::node(1);
    let dir = scratch(test);
    let mut settings = AppSettings::for_node(&node);
    settings
        .routes
        .insert(0, ("201".into(), "PJSIP/carol".into()));
    settings.extra = METAFLOWS.to_owned();
    let app = App::start(&dir, &settings).await;
    Setup { node, dir, app }
}

impl Setup {
    /// bob answers and waits for the BYE.
    async fn bob(&self) -> Phone {
        Phone::callee(&self.dir, &self.node, "bob", "uas_answer.xml", &[]).await
    }

    async fn carol(&self, scenario: &str) -> Phone {
        Phone::callee(&self.dir, &self.node, "carol", scenario, &[]).await
    }

    /// carol answers after `ring_ms`, and hangs up `hold_ms` later.
    async fn carol_answers(&self, ring_ms: u32, hold_ms: u32) -> Phone {
        Phone::answers_then_hangs_up(&self.dir, &self.node, "carol", ring_ms, hold_ms).await
    }

    /// alice calls bob and presses `digits`, then `digits[1]` 3 s later if given; she hangs up
    /// `hangup_after_ms` after her last digit (0: she waits for the network's BYE).
    fn alice(&self, digits: &[&str], hangup_after_ms: u32) -> Phone {
        let hangup = hangup_after_ms.to_string();
        let mut args = vec![
            "-set",
            "digits",
            digits[0],
            "-set",
            "hangup_after_ms",
            &hangup,
        ];
        if let Some(digits2) = digits.get(1) {
            args.extend([
                "-set",
                "digits2",
                digits2,
                "-set",
                "digits2_after_ms",
                "3000",
            ]);
        }
        Phone::caller(&self.dir, &self.node, "dtmf_uac.xml", "bob", &args)
    }

    /// bob waits on hold alone in the call's bridge, with music.
    async fn bob_is_held(&self) {
        wait_for_bridge(&self.node, &[BOB]).await;
        wait_for_write_format(&self.node, BOB, "gsm").await;
    }

    /// `parties` talk in one bridge, and bob hears no music.
    async fn talking(&self, parties: &[&str]) {
        lab::talking(&self.node, parties, BOB).await;
    }

    async fn ends(&self, phones: Vec<Phone>) {
        lab::ends(&self.node, phones).await;
    }
}

const BOB: &str = "PJSIP/bob-";
const ALICE: &str = "PJSIP/alice-";
const CAROL: &str = "PJSIP/carol-";

#[tokio::test]
async fn d1_d2_star_two_holds_the_transferee_rings_the_target_and_hanging_up_completes() {
    let _lab = serial().await;
    let lab = setup("d1_d2_transfer").await;
    let bob = lab.bob().await;
    let carol = lab.carol_answers(2000, 10000).await;
    let alice = lab.alice(&["*2201"], 6000);

    // D1: bob hears music alone; alice, alone in the consultation bridge, hears the ringback tone.
    lab.bob_is_held().await;
    wait_for_bridge(&lab.node, &[ALICE]).await;
    wait_for_write_format(&lab.node, ALICE, "slin").await;
    // carol answers: alice and carol talk, bob is still held.
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    wait_for_write_format(&lab.node, ALICE, "ulaw").await;
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    // D2: alice hangs up: bob and carol are bridged, the music stops.
    alice.expect_success().await;
    lab.talking(&[BOB, CAROL]).await;
    lab.ends(vec![carol, bob]).await;
}

#[tokio::test]
async fn d3_the_transferor_hangs_up_while_the_target_rings_and_the_target_gets_the_transferee() {
    let _lab = serial().await;
    let lab = setup("d3_partial").await;
    let bob = lab.bob().await;
    let carol = lab.carol_answers(3000, 3000).await;
    // alice hangs up 1.5 s after her digits, while carol still rings.
    let alice = lab.alice(&["*2201"], 1500);
    lab.bob_is_held().await;
    alice.expect_success().await;
    lab.talking(&[BOB, CAROL]).await;
    lab.ends(vec![carol, bob]).await;
}

#[tokio::test]
async fn d3_the_target_fails_after_the_transferor_left_and_the_transferor_is_called_back() {
    let _lab = serial().await;
    let lab = setup("d3_recall").await;
    // alice's phone takes the call back, talks with bob, and hangs up.
    let recall = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "alice", 0, 3000).await;
    let bob = lab.bob().await;
    // carol never answers: she is cancelled after the target timeout (4 s).
    let carol = lab.carol("uas_ring_forever.xml").await;
    let alice = lab.alice(&["*2201"], 1500);
    lab.bob_is_held().await;
    alice.expect_success().await;
    carol.expect_success().await;
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![recall, bob]).await;
}

/// D4: carol's phone runs `carol_scenario` (if carol is dialed at all) and fails; alice, still there, is
/// back with bob, who hears no more music; she hangs up in the end.
async fn transfer_fails(test: &str, digits: &str, carol_scenario: Option<&str>) {
    let lab = setup(test).await;
    let bob = lab.bob().await;
    let carol = match carol_scenario {
        Some(scenario) => Some(lab.carol(scenario).await),
        None => None,
    };
    let alice = lab.alice(&[digits], 8000);
    alice.wait_logged("DTMF done 1").await;
    match carol {
        Some(carol) => carol.expect_success().await,
        None => {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            assert!(lab.app.log().contains("no route for the extension"));
        }
    }
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn d4_a_busy_target_reconnects_the_transferor_with_the_transferee() {
    let _lab = serial().await;
    transfer_fails("d4_busy", "*2201", Some("uas_busy.xml")).await;
}

#[tokio::test]
async fn d4_a_target_that_does_not_answer_in_time_reconnects() {
    let _lab = serial().await;
    transfer_fails("d4_no_answer", "*2201", Some("uas_ring_forever.xml")).await;
}

#[tokio::test]
async fn d4_a_misdialed_extension_changes_nothing() {
    let _lab = serial().await;
    transfer_fails("d4_misdial", "*2999", None).await;
}

/// alice consults carol, who answers at once and hangs up 12 s later if `carol_hangs_up` (else she waits
/// for the BYE); alice presses `code` 3 s after her first digits. Returns once alice and carol talk (bob
/// held), before the code.
async fn consulting(test: &str, code: &str, carol_hangs_up: bool, hangup_after_ms: u32) -> Phones {
    let lab = setup(test).await;
    let bob = lab.bob().await;
    let carol = match carol_hangs_up {
        true => lab.carol_answers(0, 12_000).await,
        false => lab.carol("uas_answer.xml").await,
    };
    let alice = lab.alice(&["*2201", code], hangup_after_ms);
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    Phones {
        lab,
        alice,
        bob,
        carol,
    }
}

struct Phones {
    lab: Setup,
    alice: Phone,
    bob: Phone,
    carol: Phone,
}

#[tokio::test]
async fn d5_takeback_hangs_up_the_target_and_reconnects_the_transferor() {
    let _lab = serial().await;
    let p = consulting("d5_takeback", "*1", false, 2000).await;
    // carol is hung up (her scenario expects the BYE); alice is back with bob.
    p.carol.expect_success().await;
    p.lab.talking(&[ALICE, BOB]).await;
    p.lab.ends(vec![p.alice, p.bob]).await;
}

#[tokio::test]
async fn d6_complete_hands_the_transferee_to_the_target_and_hangs_up_the_transferor() {
    let _lab = serial().await;
    // alice waits for the app's BYE.
    let p = consulting("d6_complete", "*2", true, 0).await;
    p.alice.expect_success().await;
    p.lab.talking(&[BOB, CAROL]).await;
    p.lab.ends(vec![p.carol, p.bob]).await;
}

#[tokio::test]
async fn d6_threeway_joins_all_three_and_the_others_stay_when_the_transferor_leaves() {
    let _lab = serial().await;
    let p = consulting("d6_threeway", "*3", true, 3000).await;
    p.lab.talking(&[ALICE, BOB, CAROL]).await;
    p.alice.expect_success().await;
    wait_for_bridge(&p.lab.node, &[BOB, CAROL]).await;
    p.lab.ends(vec![p.carol, p.bob]).await;
}

#[tokio::test]
async fn d6_swap_holds_the_target_while_the_transferor_talks_to_the_transferee() {
    let _lab = serial().await;
    let p = consulting("d6_swap", "*4", true, 3000).await;
    p.lab.talking(&[ALICE, BOB]).await;
    wait_for_bridge(&p.lab.node, &[CAROL]).await;
    wait_for_write_format(&p.lab.node, CAROL, "gsm").await;
    // alice hangs up while swapped: the transfer completes, carol's music stops.
    p.alice.expect_success().await;
    p.lab.talking(&[BOB, CAROL]).await;
    wait_for_write_format(&p.lab.node, CAROL, "ulaw").await;
    p.lab.ends(vec![p.carol, p.bob]).await;
}

#[tokio::test]
async fn d7_resume_cancels_the_transfer_and_reconnects_the_transferor() {
    let _lab = serial().await;
    let lab = setup("d7_resume").await;
    let bob = lab.bob().await;
    // carol rings until she is cancelled: alice presses *9 (resume) 3 s after *2201, within the 4 s.
    let carol = lab.carol("uas_ring_forever.xml").await;
    let alice = lab.alice(&["*2201", "*9"], 2000);
    lab.bob_is_held().await;
    alice.wait_logged("DTMF done 2").await;
    carol.expect_success().await;
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![alice, bob]).await;
}
