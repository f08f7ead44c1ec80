//! The HTTP API (P1, P2, D7) end to end: a real Asterisk 22 from the lab, the real binary, SIPp phones,
//! and HTTP requests to the app's own listener. alice calls bob; the API transfers alice's call (alice is
//! the transferor, bob the transferee) to carol. Each test asserts who is bridged with whom (over ARI), who
//! hears music or a tone (the format Asterisk writes to the channel: `gsm` for music on hold, `slin` for
//! the ringback tone, `ulaw` for the call), who is hung up (each phone's scenario expects its BYE or sends
//! its own), what the API answered, and that nothing is left.

mod lab;

use std::time::Duration;

use lab::{
    assert_nothing_left, bridges_by_channel_name, channel_id_named, eventually, notified, scratch,
    serial, wait_for_bridge, wait_for_write_format, App, AppSettings, Node, Phone, ALICE, BOB,
    CAROL,
};
use serde_json::{json, Value};

const ACME_TOKEN: &str = "acme-token-for-the-e2e-tests";
const GLOBEX_TOKEN: &str = "globex-token-for-the-e2e-tests";

/// Two accounts: acme owns the lab's phones alice, bob and carol; globex owns dave.
const ACCOUNTS: &str = r#"
[[accounts]]
id = "acme"
name = "Acme"
token_envs = ["ACME_TOKEN"]
endpoints = ["alice", "bob", "carol"]
[[accounts]]
id = "globex"
token_envs = ["GLOBEX_TOKEN"]
endpoints = ["dave"]
"#;

/// The codes of the feature-code tests, for D7's resume (`*9`).
const METAFLOWS: &str = include_str!("fixtures/metaflows.toml");

struct Setup {
    node: Node,
    dir: std::path::PathBuf,
    app: App,
    http: reqwest::Client,
}

async fn setup(test: &str) -> Setup {
    setup_nodes(test, &[]).await
}

/// The app on node 1 and `more` nodes (trunks between all of them).
async fn setup_nodes(test: &str, more: &[&Node]) -> Setup {
    let node = lab::node(1);
    let dir = scratch(test);
    let mut nodes = vec![&node];
    nodes.extend(more);
    let mut settings = AppSettings::for_nodes(&nodes);
    settings.extra = format!("{METAFLOWS}{ACCOUNTS}");
    settings.env = vec![
        ("ACME_TOKEN".into(), ACME_TOKEN.into()),
        ("GLOBEX_TOKEN".into(), GLOBEX_TOKEN.into()),
    ];
    let app = App::start(&dir, &settings).await;
    Setup {
        node,
        dir,
        app,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    /// An API request with `token` (none if empty); the status and the JSON body (`null` if none).
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.app.http_port);
        let mut request = self.http.request(method, url);
        if !token.is_empty() {
            request = request.header("X-Auth-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn acme(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request(method, path, ACME_TOKEN, body).await
    }

    /// bob answers and waits for the BYE.
    async fn bob(&self) -> Phone {
        Phone::callee(&self.dir, &self.node, "bob", "uas_answer.xml", &[]).await
    }

    /// alice calls bob; she presses `digits` 3 s after the answer and hangs up `hangup_after_ms` after
    /// them (0: she waits for the network's BYE). Returns once alice and bob talk, with alice's channel id.
    async fn alice(&self, digits: &str, hangup_after_ms: u32) -> (Phone, String) {
        let alice = Phone::presses(&self.dir, &self.node, digits, hangup_after_ms);
        wait_for_bridge(&self.node, &[ALICE, BOB]).await;
        let id = channel_id_named(&self.node, ALICE).await;
        (alice, id)
    }

    /// POST /v1/transfers of alice's leg to carol; the transfer as the API answered it (201).
    async fn transfer(&self, alice: &str, extra: Value) -> Value {
        let mut body = json!({"call": alice, "target": "carol"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, transfer) = self
            .acme(reqwest::Method::POST, "/v1/transfers", Some(body))
            .await;
        assert_eq!(status, 201, "{transfer}");
        assert_eq!(transfer["status"], "ringing", "{transfer}");
        transfer
    }

    /// Waits until the transfer's status is `status`; returns the transfer.
    async fn transfer_is(&self, id: &str, status: &str) -> Value {
        let path = format!("/v1/transfers/{id}");
        eventually(
            Duration::from_secs(10),
            &format!("transfer {status}"),
            || async {
                let (_, transfer) = self.acme(reqwest::Method::GET, &path, None).await;
                (transfer["status"] == status).then_some(transfer)
            },
        )
        .await
    }

    /// bob waits on hold alone, with music, and alice (alone in the consultation) hears ringback.
    async fn bob_held_alice_hears_ringback(&self) {
        wait_for_bridge(&self.node, &[BOB]).await;
        wait_for_write_format(&self.node, BOB, "gsm").await;
        wait_for_write_format(&self.node, ALICE, "slin").await;
    }

    /// `parties` talk in one bridge, and bob hears no music.
    async fn talking(&self, parties: &[&str]) {
        lab::talking(&self.node, parties, BOB).await;
    }

    async fn ends(&self, phones: Vec<Phone>) {
        lab::ends(&self.node, phones).await;
    }
}

#[tokio::test]
async fn p1_kazoo_attended_transfer_then_the_transferor_hangs_up_bridges_transferee_and_target() {
    let _lab = serial().await;
    let lab = setup("p1_kazoo_attended").await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 2000, 12_000).await;
    let (alice, alice_id) = lab.alice("", 7000).await;
    let path = format!("/v2/accounts/acme/channels/{alice_id}");
    let body = json!({"data": {"action": "transfer", "target": "carol", "takeback_dtmf": "*1"}});
    let (status, answer) = lab.acme(reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["data"]["message"], "transfer initiated");
    let id = answer["data"]["transfer_id"].as_str().unwrap().to_owned();
    // D1: bob hears music alone; alice hears ringback; then alice and carol talk.
    lab.bob_held_alice_hears_ringback().await;
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    let transfer = lab.transfer_is(&id, "answered").await;
    assert_eq!(transfer["source"], "api");
    // alice hangs up: bob and carol are bridged, the music stops.
    alice.expect_success().await;
    lab.talking(&[BOB, CAROL]).await;
    lab.transfer_is(&id, "completed").await;
    lab.ends(vec![carol, bob]).await;
}

#[tokio::test]
async fn p1_the_transferor_hanging_up_while_the_target_rings_is_the_partial_transfer() {
    let _lab = serial().await;
    let lab = setup("p1_partial").await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 6000, 3000).await;
    let (alice, alice_id) = lab.alice("", 1000).await;
    let path = format!("/v2/accounts/acme/channels/{alice_id}");
    let body = json!({"data": {"action": "transfer", "target": "carol"}});
    let (status, answer) = lab.acme(reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    lab.bob_held_alice_hears_ringback().await;
    // alice leaves at once; when carol answers she gets bob.
    alice.expect_success().await;
    lab.talking(&[BOB, CAROL]).await;
    lab.ends(vec![carol, bob]).await;
}

#[tokio::test]
async fn p1_the_takeback_code_cancels_an_api_transfer() {
    let _lab = serial().await;
    let lab = setup("p1_takeback").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_ring_forever.xml", &[]).await;
    // alice presses #5 as her takeback code 3 s after the answer, and hangs up 3 s later.
    let (alice, alice_id) = lab.alice("#5", 3000).await;
    let path = format!("/v2/accounts/acme/channels/{alice_id}");
    let body = json!({"data": {"action": "transfer", "target": "carol", "takeback_dtmf": "#5"}});
    let (status, answer) = lab.acme(reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["data"]["transfer_id"].as_str().unwrap().to_owned();
    lab.bob_held_alice_hears_ringback().await;
    carol.expect_success().await;
    lab.talking(&[ALICE, BOB]).await;
    lab.transfer_is(&id, "cancelled").await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_attended_then_complete_hands_the_transferee_to_the_target() {
    let _lab = serial().await;
    let lab = setup("p2_complete").await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 0, 8000).await;
    let (alice, alice_id) = lab.alice("", 0).await;
    let body = json!({"moh": "default", "variables": {"TICKET": "4711"}});
    let transfer = lab.transfer(&alice_id, body).await;
    let id = transfer["id"].as_str().unwrap();
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    // The target's channel carries the transfer's variables.
    let carol_id = channel_id_named(&lab.node, CAROL).await;
    assert_eq!(
        lab::ari_variable(&lab.node, &carol_id, "TICKET").await,
        "4711"
    );
    lab.transfer_is(id, "answered").await;
    let path = format!("/v1/transfers/{id}/complete");
    let (status, done) = lab.acme(reqwest::Method::PUT, &path, None).await;
    assert_eq!(
        (status, &done["status"]),
        (200, &json!("completed")),
        "{done}"
    );
    // alice is hung up by the app (her scenario waits for the BYE); bob and carol talk.
    alice.expect_success().await;
    lab.talking(&[BOB, CAROL]).await;
    let (status, again) = lab.acme(reqwest::Method::PUT, &path, None).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("transfer_over"))
    );
    lab.ends(vec![carol, bob]).await;
}

/// DELETE /v1/transfers/{id} once carol `answers` or while she rings: carol is hung up, alice is back
/// with bob.
async fn cancelled(test: &str, answers: bool) {
    let lab = setup(test).await;
    let bob = lab.bob().await;
    let scenario = if answers {
        "uas_answer.xml"
    } else {
        "uas_ring_forever.xml"
    };
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", scenario, &[]).await;
    let (alice, alice_id) = lab.alice("", 6000).await;
    // Sent twice with one Idempotency-Key: one transfer, and the same answer both times.
    let post = || async {
        let url = format!("http://127.0.0.1:{}/v1/transfers", lab.app.http_port);
        let response = lab
            .http
            .post(url)
            .header("X-Auth-Token", ACME_TOKEN)
            .header("Idempotency-Key", "cancel-test-1")
            .json(&json!({"call": alice_id, "target": "carol"}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    let (first, transfer) = post().await;
    let (second, again) = post().await;
    assert_eq!((first, second), (201, 201), "{transfer} {again}");
    assert_eq!(transfer, again);
    let (_, list) = lab.acme(reqwest::Method::GET, "/v1/transfers", None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let id = transfer["id"].as_str().unwrap();
    if answers {
        wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    } else {
        lab.bob_held_alice_hears_ringback().await;
        lab::ringing(&lab.node, CAROL).await;
    }
    let (status, done) = lab
        .acme(
            reqwest::Method::DELETE,
            &format!("/v1/transfers/{id}"),
            None,
        )
        .await;
    assert_eq!(
        (status, &done["status"]),
        (200, &json!("cancelled")),
        "{done}"
    );
    carol.expect_success().await;
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_cancel_while_the_target_rings_reconnects_the_transferor() {
    let _lab = serial().await;
    cancelled("p2_cancel_ringing", false).await;
}

#[tokio::test]
async fn p2_cancel_while_talking_to_the_target_reconnects_the_transferor() {
    let _lab = serial().await;
    cancelled("p2_cancel_talking", true).await;
}

#[tokio::test]
async fn p2_a_blind_transfer_hangs_up_the_transferor_and_the_target_gets_the_transferee() {
    let _lab = serial().await;
    let lab = setup("p2_blind").await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 2000, 3000).await;
    let (alice, alice_id) = lab.alice("", 0).await;
    let transfer = lab.transfer(&alice_id, json!({"flow": "blind"})).await;
    assert_eq!(transfer["kind"], "blind");
    // alice is hung up at once (her scenario waits for the BYE); bob waits alone in the call's bridge
    // (hearing the ringback tone played into it) while carol rings, then talks to her.
    alice.expect_success().await;
    wait_for_bridge(&lab.node, &[BOB]).await;
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    let from = lab::invite_from(&carol);
    assert!(from.contains("sip:bob@"), "carol is shown bob: {from}");
    lab.transfer_is(transfer["id"].as_str().unwrap(), "completed")
        .await;
    lab.ends(vec![carol, bob]).await;
}

#[tokio::test]
async fn p2_a_busy_target_fails_the_transfer_and_the_transferor_is_back() {
    let _lab = serial().await;
    let lab = setup("p2_busy").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_busy.xml", &[]).await;
    let (alice, alice_id) = lab.alice("", 6000).await;
    let transfer = lab.transfer(&alice_id, json!({})).await;
    carol.expect_success().await;
    let failed = lab
        .transfer_is(transfer["id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(failed["reason"], "busy");
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_a_target_that_does_not_answer_fails_the_transfer_with_no_answer() {
    let _lab = serial().await;
    let lab = setup("p2_no_answer").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_ring_forever.xml", &[]).await;
    let (alice, alice_id) = lab.alice("", 8000).await;
    let transfer = lab.transfer(&alice_id, json!({"timeout": 2})).await;
    carol.expect_success().await;
    let failed = lab
        .transfer_is(transfer["id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(failed["reason"], "no_answer");
    lab.talking(&[ALICE, BOB]).await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_hold_plays_music_to_the_held_leg_alone_and_unhold_restores_the_call() {
    let _lab = serial().await;
    let lab = setup("p2_hold").await;
    let bob = lab.bob().await;
    let (alice, _) = lab.alice("", 8000).await;
    let bob_id = channel_id_named(&lab.node, BOB).await;
    let hold = format!("/v1/calls/{bob_id}/hold");
    let (status, body) = lab.acme(reqwest::Method::PUT, &hold, None).await;
    assert_eq!(status, 204, "{body}");
    // bob is out of the call's bridge (alice hears nothing of him) and hears music; alice hears no music.
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    wait_for_bridge(&lab.node, &[ALICE]).await;
    assert_eq!(
        lab::write_format(&lab.node, &lab::channel_named(&lab.node, ALICE).await),
        "ulaw"
    );
    let (_, call) = lab
        .acme(reqwest::Method::GET, &format!("/v1/calls/{bob_id}"), None)
        .await;
    assert_eq!(call["legs"][1]["held"], true, "{call}");
    let (status, body) = lab.acme(reqwest::Method::PUT, &hold, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("already_held"))
    );
    // A held call takes no transfer.
    let alice_id = channel_id_named(&lab.node, ALICE).await;
    let body = json!({"call": alice_id, "target": "carol"});
    let (status, refused) = lab
        .acme(reqwest::Method::POST, "/v1/transfers", Some(body))
        .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (409, &json!("on_hold"))
    );

    let (status, _) = lab.acme(reqwest::Method::DELETE, &hold, None).await;
    assert_eq!(status, 204);
    lab.talking(&[ALICE, BOB]).await;
    let (status, body) = lab.acme(reqwest::Method::DELETE, &hold, None).await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("not_held")));
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_a_phone_started_blind_transfer_is_listed_and_cancelling_it_tells_the_phone_603() {
    let _lab = serial().await;
    let lab = setup("p2_cancel_refer").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_ring_forever.xml", &[]).await;
    let alice = Phone::blind_transferer(
        &lab.dir,
        &lab.node,
        "carol",
        "603",
        &["-set", "talk_after_ms", "2000"],
    );
    let transfer = eventually(Duration::from_secs(10), "the REFER's transfer", || async {
        let (_, list) = lab.acme(reqwest::Method::GET, "/v1/transfers", None).await;
        list["items"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(
        (&transfer["source"], &transfer["kind"]),
        (&json!("refer"), &json!("blind"))
    );
    wait_for_bridge(&lab.node, &[BOB]).await;
    lab::ringing(&lab.node, CAROL).await;
    let path = format!("/v1/transfers/{}", transfer["id"].as_str().unwrap());
    let (status, done) = lab.acme(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(
        (status, &done["status"]),
        (200, &json!("cancelled")),
        "{done}"
    );
    carol.expect_success().await;
    assert_eq!(alice.finish().await, notified(603));
    lab.ends(vec![bob]).await;
}

#[tokio::test]
async fn d7_the_resume_code_cancels_an_api_transfer() {
    let _lab = serial().await;
    let lab = setup("d7_resume_api").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_ring_forever.xml", &[]).await;
    let (alice, alice_id) = lab.alice("*9", 3000).await;
    let transfer = lab.transfer(&alice_id, json!({})).await;
    lab.bob_held_alice_hears_ringback().await;
    carol.expect_success().await;
    lab.talking(&[ALICE, BOB]).await;
    lab.transfer_is(transfer["id"].as_str().unwrap(), "cancelled")
        .await;
    lab.ends(vec![alice, bob]).await;
}

#[tokio::test]
async fn p2_every_route_with_another_accounts_token_is_404_and_changes_nothing() {
    let _lab = serial().await;
    let lab = setup("p2_cross_account").await;
    let bob = lab.bob().await;
    let carol = Phone::callee(&lab.dir, &lab.node, "carol", "uas_ring_forever.xml", &[]).await;
    let (alice, alice_id) = lab.alice("", 6000).await;
    let transfer = lab.transfer(&alice_id, json!({})).await;
    let id = transfer["id"].as_str().unwrap();
    lab.bob_held_alice_hears_ringback().await;
    let before = bridges_by_channel_name(&lab.node).await;
    use reqwest::Method;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/calls/{alice_id}"), None),
        (Method::DELETE, format!("/v1/calls/{alice_id}"), None),
        (Method::PUT, format!("/v1/calls/{alice_id}/hold"), None),
        (Method::DELETE, format!("/v1/calls/{alice_id}/hold"), None),
        (
            Method::POST,
            "/v1/transfers".into(),
            Some(json!({"call": alice_id, "target": "carol"})),
        ),
        (Method::GET, format!("/v1/transfers/{id}"), None),
        (Method::DELETE, format!("/v1/transfers/{id}"), None),
        (Method::PUT, format!("/v1/transfers/{id}/complete"), None),
        (
            Method::GET,
            format!("/v2/accounts/acme/channels/{alice_id}"),
            None,
        ),
        (Method::GET, "/v2/accounts/acme/channels".into(), None),
        (
            Method::POST,
            format!("/v2/accounts/acme/channels/{alice_id}"),
            Some(json!({"data": {"action": "hangup"}})),
        ),
        (
            Method::POST,
            format!("/v2/accounts/globex/channels/{alice_id}"),
            Some(json!({"data": {"action": "transfer", "target": "carol"}})),
        ),
    ];
    for (method, path, body) in routes {
        let (status, answer) = lab.request(method.clone(), &path, GLOBEX_TOKEN, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        if path.starts_with("/v2") {
            assert_eq!(answer["message"], "bad_identifier", "{path}");
        } else {
            assert_eq!(
                answer["error"]["code"]
                    .as_str()
                    .map(|c| c.ends_with("not_found")),
                Some(true),
                "{path}: {answer}"
            );
        }
    }
    let (status, calls) = lab
        .request(Method::GET, "/v1/calls", GLOBEX_TOKEN, None)
        .await;
    assert_eq!((status, &calls["items"]), (200, &json!([])));
    let (status, transfers) = lab
        .request(Method::GET, "/v1/transfers", GLOBEX_TOKEN, None)
        .await;
    assert_eq!((status, &transfers["items"]), (200, &json!([])));
    // Without a token, or with a wrong one: 401.
    for token in ["", "not-a-token"] {
        let (status, answer) = lab.request(Method::GET, "/v1/calls", token, None).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (401, &json!("unauthorized"))
        );
        let path = format!("/v2/accounts/acme/channels/{alice_id}");
        let (status, answer) = lab.request(Method::GET, &path, token, None).await;
        assert_eq!(
            (status, &answer["message"]),
            (401, &json!("invalid_credentials"))
        );
    }
    // Nothing moved: bob still held, alice still consulting.
    assert_eq!(bridges_by_channel_name(&lab.node).await, before);
    let (_, still) = lab
        .acme(Method::GET, &format!("/v1/transfers/{id}"), None)
        .await;
    assert_eq!(still["status"], "ringing");
    let (status, _) = lab
        .acme(Method::DELETE, &format!("/v1/transfers/{id}"), None)
        .await;
    assert_eq!(status, 200);
    carol.expect_success().await;
    lab.ends(vec![alice, bob]).await;
}

/// The id of the channel that shares a bridge on `node` with the channel named `peer...`.
async fn leg_bridged_with(node: &Node, peer: &str) -> String {
    eventually(
        Duration::from_secs(10),
        &format!("the leg bridged with {peer}"),
        || async {
            let channels = lab::ari_get(node, "/channels").await;
            let name_of = |id: &Value| {
                channels
                    .as_array()?
                    .iter()
                    .find(|c| c["id"] == *id)
                    .and_then(|c| c["name"].as_str().map(str::to_owned))
            };
            let bridges = lab::ari_get(node, "/bridges").await;
            bridges.as_array()?.iter().find_map(|b| {
                let members = b["channels"].as_array()?;
                let has_peer = members
                    .iter()
                    .any(|m| name_of(m).is_some_and(|n| n.starts_with(peer)));
                let other = members
                    .iter()
                    .find(|m| name_of(m).is_some_and(|n| !n.starts_with(peer)))?;
                (has_peer && members.len() == 2).then(|| other.as_str().map(str::to_owned))?
            })
        },
    )
    .await
}

/// P2 `target_call`: alice talks with bob on `bob_node` and with carol on `carol_node` (her consultation);
/// the API joins bob with carol and hangs up both of alice's legs. carol hangs up 6 s after answering,
/// which ends bob's side too. `bridged` are the bridges expected on each node afterwards.
async fn join_two_calls(lab: &Setup, carol_node: &Node, bridged: &[(&Node, [&str; 2])]) {
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, carol_node, "carol", 0, 6000).await;
    let alice1 = Phone::caller(&lab.dir, &lab.node, "uac_talk_until_bye.xml", "bob", &[]);
    let first = leg_bridged_with(&lab.node, BOB).await;
    let alice2 = Phone::caller(&lab.dir, carol_node, "uac_talk_until_bye.xml", "carol", &[]);
    let second = leg_bridged_with(carol_node, CAROL).await;
    let body = json!({"call": first, "target_call": second});
    let (status, transfer) = lab
        .acme(reqwest::Method::POST, "/v1/transfers", Some(body))
        .await;
    assert_eq!(status, 201, "{transfer}");
    // Both of alice's legs are hung up (each phone waits for its BYE); bob and carol talk.
    alice1.expect_success().await;
    alice2.expect_success().await;
    for (node, parties) in bridged {
        wait_for_bridge(node, parties).await;
    }
    lab.transfer_is(transfer["id"].as_str().unwrap(), "completed")
        .await;
    carol.expect_success().await;
    bob.expect_success().await;
}

#[tokio::test]
async fn p2_target_call_joins_two_existing_calls_on_one_node() {
    let _lab = serial().await;
    let lab = setup("p2_join_calls").await;
    join_two_calls(&lab, &lab.node, &[(&lab.node, [BOB, CAROL])]).await;
    assert_nothing_left(&lab.node).await;
}

#[tokio::test]
async fn p2_target_call_joins_two_existing_calls_across_nodes() {
    let _lab = serial().await;
    let node2 = lab::node(2);
    let lab = setup_nodes("p2_join_across", &[&node2]).await;
    let link_on_1 = format!("PJSIP/{}-", node2.name);
    let link_on_2 = format!("PJSIP/{}-", lab.node.name);
    join_two_calls(
        &lab,
        &node2,
        &[
            (&lab.node, [BOB, &link_on_1]),
            (&node2, [CAROL, &link_on_2]),
        ],
    )
    .await;
    assert_nothing_left(&lab.node).await;
    assert_nothing_left(&node2).await;
}
