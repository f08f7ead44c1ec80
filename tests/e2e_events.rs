//! Events for apps (P3) end to end: a real Asterisk 22 from the lab, the real binary, SIPp phones, an SSE
//! client of `GET /v1/events` and real HTTP webhook receivers started here (`lab/watch.rs`), which check
//! every Standard Webhooks signature themselves. For each kind of transfer and for hold, the stream and
//! the receiver must get the call's events in order (seq 1, 2, 3...), exactly those, signed; a receiver
//! that answers 500 gets retries and then the delivery; a stream that reconnects with `Last-Event-ID`
//! gets what it missed and nothing twice. Each test also checks the call itself and that nothing is left.

mod lab;
#[path = "lab/watch.rs"]
mod watch;

use lab::{
    channel_id_named, notified, scratch, serial, wait_for_bridge, wait_for_write_format, App,
    AppSettings, Node, Phone, ALICE, BOB, CAROL,
};
use serde_json::{json, Value};
use watch::{Delivery, Got, Receiver, Stream};

const ACME_TOKEN: &str = "acme-token-for-the-event-tests";
const GLOBEX_TOKEN: &str = "globex-token-for-the-event-tests";
const METAFLOWS: &str = include_str!("fixtures/metaflows.toml");

struct Setup {
    node: Node,
    dir: std::path::PathBuf,
    app: App,
    receiver: Receiver,
    /// A second receiver of the same account that answers 500 to its first two POSTs.
    flaky: Receiver,
}

/// The app on node 1 with accounts acme (alice, bob, carol; two webhook receivers) and globex (nobody
/// here), feature codes, and 201 routed to carol.
async fn setup(test: &str) -> Setup {
    let node = lab::node(1);
    let dir = scratch(test);
    let (secret, flaky_secret) = (watch::secret(), watch::secret());
    let receiver = Receiver::start(&secret, 0).await;
    let flaky = Receiver::start(&flaky_secret, 2).await;
    let accounts = format!(
        r#"
[[accounts]]
id = "acme"
token_envs = ["ACME_TOKEN"]
endpoints = ["alice", "bob", "carol"]
[[accounts.webhooks]]
url = "{}"
secret_env = "ACME_HOOK_SECRET"
[[accounts.webhooks]]
url = "{}"
secret_env = "ACME_FLAKY_SECRET"
retry_base = 0.3
retry_max = 1
attempts = 5
[[accounts]]
id = "globex"
token_envs = ["GLOBEX_TOKEN"]
endpoints = ["dave"]
"#,
        receiver.url, flaky.url
    );
    let mut settings = AppSettings::for_node(&node);
    settings
        .routes
        .insert(0, ("201".into(), "PJSIP/carol".into()));
    settings.extra = format!("{METAFLOWS}{accounts}");
    // O1: these runs log JSON; the blind REFER test reads it.
    settings.json_logs = true;
    settings.env = vec![
        ("ACME_TOKEN".into(), ACME_TOKEN.into()),
        ("GLOBEX_TOKEN".into(), GLOBEX_TOKEN.into()),
        ("ACME_HOOK_SECRET".into(), secret),
        ("ACME_FLAKY_SECRET".into(), flaky_secret),
    ];
    let app = App::start(&dir, &settings).await;
    Setup {
        node,
        dir,
        app,
        receiver,
        flaky,
    }
}

impl Setup {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.app.http_port)
    }

    async fn stream(&self, last_id: Option<&str>) -> Stream {
        Stream::open(&self.base(), ACME_TOKEN, "", last_id).await
    }

    async fn acme(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base()))
            .header("X-Auth-Token", ACME_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn bob(&self) -> Phone {
        Phone::callee(&self.dir, &self.node, "bob", "uas_answer.xml", &[]).await
    }

    /// alice calls bob, presses `digits` 3 s after the answer and hangs up `hangup_after_ms` after them.
    fn alice(&self, digits: &str, hangup_after_ms: u32) -> Phone {
        Phone::presses(&self.dir, &self.node, digits, hangup_after_ms)
    }

    /// O1: every log line is one JSON object; every line about a call names it and its node; the
    /// lines of transfer `transfer_id` are its "transfer created" and "transfer over"; no token or
    /// secret is ever written.
    fn assert_json_logs(&self, transfer_id: &str) {
        let log = std::fs::read_to_string(&self.app.stderr_path).unwrap();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let about_calls: Vec<&Value> = lines
            .iter()
            .filter(|l| {
                let target = l["target"].as_str().unwrap_or_default();
                target.starts_with("ari_transfer::engine")
                    || target.starts_with("ari_transfer::runtime::lanes")
            })
            .collect();
        assert!(about_calls.len() > 10, "{log}");
        for line in &about_calls {
            assert!(line["call"].is_string(), "no call key: {line}");
            assert!(
                line["node"].is_string() || line["span"]["node"].is_string(),
                "no node: {line}"
            );
        }
        let of_transfer: Vec<&&Value> = about_calls
            .iter()
            .filter(|l| l["transfer"] == transfer_id)
            .collect();
        let messages: Vec<&str> = of_transfer
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(messages, ["transfer created", "transfer over"], "{log}");
        for secret in [ACME_TOKEN, GLOBEX_TOKEN, lab::ARI_PASSWORD] {
            assert!(!log.contains(secret), "a secret in the log");
        }
    }

    /// Waits for the stream and both receivers to have the call's whole life (up to `call.ended`), and
    /// checks each has exactly `kinds`, in order, numbered 1, 2, 3..., every webhook signed.
    async fn all_got(&self, stream: &Stream, call: &str, kinds: &[&str]) -> Vec<Got> {
        let ended = |envelopes: Vec<&Value>| {
            envelopes
                .iter()
                .any(|e| e["type"] == "call.ended" && e["data"]["call_id"] == call)
        };
        let got = stream
            .until("the stream's call.ended", |got| {
                ended(got.iter().map(|g| &g.envelope).collect())
            })
            .await;
        let got: Vec<Got> = got
            .into_iter()
            .filter(|g| g.data()["call_id"] == call)
            .collect();
        for g in &got {
            assert_eq!(g.kind, g.envelope["type"], "the SSE event name is the type");
            assert_eq!(g.id, g.envelope["id"], "the SSE id is the event's id");
            assert_eq!(g.envelope["account_id"], "acme");
        }
        assert_in_order("the stream", got.iter().map(|g| &g.envelope), kinds);
        for receiver in [&self.receiver, &self.flaky] {
            let accepted = receiver
                .until("the webhook's call.ended", |d| {
                    ended(d.iter().map(|d| &d.envelope).collect())
                })
                .await;
            let accepted: Vec<Delivery> = accepted
                .into_iter()
                .filter(|d| d.envelope["data"]["call_id"] == call)
                .collect();
            for delivery in &accepted {
                assert!(delivery.signed, "a bad signature: {delivery:?}");
                assert_eq!(delivery.webhook_id, delivery.envelope["id"]);
            }
            assert_in_order("a webhook", accepted.iter().map(|d| &d.envelope), kinds);
            // The same events as the stream's, the same ids.
            let ids: Vec<&Value> = accepted.iter().map(|d| &d.envelope["id"]).collect();
            let streamed: Vec<&Value> = got.iter().map(|g| &g.envelope["id"]).collect();
            assert_eq!(ids, streamed);
        }
        got
    }
}

/// `envelopes` are exactly `kinds`, in order, with `seq` 1, 2, 3...
fn assert_in_order<'a>(who: &str, envelopes: impl Iterator<Item = &'a Value>, kinds: &[&str]) {
    let envelopes: Vec<&Value> = envelopes.collect();
    let types: Vec<&str> = envelopes
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, kinds, "{who} got: {envelopes:#?}");
    let seqs: Vec<u64> = envelopes
        .iter()
        .map(|e| e["data"]["seq"].as_u64().unwrap_or(0))
        .collect();
    let expected: Vec<u64> = (1..=kinds.len() as u64).collect();
    assert_eq!(seqs, expected, "{who}: seq");
}

/// A call's events when its transferor consulted the target, then completed (API or `*2`).
const CONSULTED_THEN_COMPLETED: [&str; 7] = [
    "call.created",
    "call.answered",
    "transfer.created",
    "transfer.ringing",
    "transfer.answered",
    "transfer.completed",
    "call.ended",
];

fn of_type<'a>(got: &'a [Got], kind: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|g| g.kind == kind)
        .map(|g| g.data())
        .collect()
}

#[tokio::test]
async fn p3_an_api_attended_transfer_reaches_the_stream_and_the_webhooks_and_a_reconnect_misses_nothing(
) {
    let _lab = serial().await;
    let lab = setup("p3_api_attended").await;
    let stream = lab.stream(None).await;
    // A second client that goes away after the call is answered and comes back with its last id.
    let leaving = lab.stream(None).await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 2000, 12_000).await;
    let alice = lab.alice("", 7000);
    wait_for_bridge(&lab.node, &[ALICE, BOB]).await;
    let call = channel_id_named(&lab.node, ALICE).await;
    let before = leaving
        .until("call.answered", |got| {
            got.iter().any(|g| g.kind == "call.answered")
        })
        .await;
    let last_id = before.last().unwrap().id.clone();
    leaving.close();

    let body = json!({"call": call, "target": "carol"});
    let (status, transfer) = lab
        .acme(reqwest::Method::POST, "/v1/transfers", Some(body))
        .await;
    assert_eq!(status, 201, "{transfer}");
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    alice.expect_success().await;
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    let got = lab.all_got(&stream, &call, &CONSULTED_THEN_COMPLETED).await;
    let completed = of_type(&got, "transfer.completed")[0];
    assert_eq!(completed["transfer"]["id"], transfer["id"]);
    assert_eq!(
        (
            &completed["transfer"]["source"],
            &completed["transfer"]["kind"]
        ),
        (&json!("api"), &json!("attended"))
    );

    // Back with its last id: what it missed, from the transfer on, and nothing it had.
    let back = lab.stream(Some(&last_id)).await;
    let replayed = back
        .until("the replay up to call.ended", |got| {
            got.iter().any(|g| g.kind == "call.ended")
        })
        .await;
    let ids = |got: &[Got]| got.iter().map(|g| g.id.clone()).collect::<Vec<_>>();
    let had = ids(&before);
    let missed: Vec<String> = ids(&stream.got())
        .into_iter()
        .skip_while(|id| had.contains(id))
        .collect();
    assert_eq!(
        ids(&replayed),
        missed,
        "the replay is exactly what it missed"
    );
    assert!(!missed.is_empty());
    lab::ends(&lab.node, vec![carol, bob]).await;
    // The lines of the API's commands, and of its timers, name the call and its node too.
    lab.assert_json_logs(transfer["id"].as_str().unwrap());
}

#[tokio::test]
async fn p3_a_blind_refer_reports_its_transfer_and_the_notifies_the_phone_got() {
    let _lab = serial().await;
    let lab = setup("p3_blind_refer").await;
    let stream = lab.stream(None).await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 1000, 2000).await;
    let alice = Phone::blind_transferer(&lab.dir, &lab.node, "carol", "200", &[]);
    let call = channel_id_named(&lab.node, ALICE).await;
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    assert_eq!(alice.finish().await, notified(200));
    let kinds = [
        "call.created",
        "call.answered",
        "transfer.created",
        "transfer.ringing",
        "transfer.notify",
        "transfer.completed",
        "transfer.notify",
        "call.ended",
    ];
    let got = lab.all_got(&stream, &call, &kinds).await;
    // What the phone was told, as the events say it.
    let told: Vec<(&Value, &Value)> = of_type(&got, "transfer.notify")
        .iter()
        .map(|d| (&d["status"], &d["final"]))
        .collect();
    assert_eq!(
        told,
        [(&json!(100), &json!(false)), (&json!(200), &json!(true))]
    );
    let created = of_type(&got, "transfer.created")[0];
    assert_eq!(
        (
            &created["transfer"]["source"],
            &created["transfer"]["target"]
        ),
        (&json!("refer"), &json!("carol"))
    );
    lab::ends(&lab.node, vec![carol, bob]).await;

    // O1: the same transfer in /metrics, counted from the engine's events and the IO shell.
    lab::assert_metrics(
        &lab.base(),
        &[
            r#"ari_transfer_transfers_total{source="refer",flow="blind",outcome="completed"} 1"#,
            "ari_transfer_refer_final_notify_seconds_count 1",
            r#"ari_transfer_ari_request_seconds_count{node="node1",request="transfer_progress"} 2"#,
            r#"ari_transfer_ari_request_seconds_count{node="node1",request="await_session"} 1"#,
            r#"ari_transfer_events_total{type="transfer.notify"} 2"#,
            r#"ari_transfer_websocket_connects_total{node="node1"} 1"#,
            "ari_transfer_calls_in_progress 0",
            // The flaky receiver's two 500s.
            r#"ari_transfer_webhook_attempts_total{account="acme",outcome="failed"} 2"#,
        ],
    )
    .await;

    lab.assert_json_logs(created["transfer"]["id"].as_str().unwrap());
}

#[tokio::test]
async fn p3_a_star_two_transfer_is_reported_as_a_dtmf_transfer() {
    let _lab = serial().await;
    let lab = setup("p3_star_two").await;
    let stream = lab.stream(None).await;
    let bob = lab.bob().await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 2000, 4000).await;
    let alice = lab.alice("*2201", 6000);
    let call = channel_id_named(&lab.node, ALICE).await;
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    alice.expect_success().await;
    wait_for_bridge(&lab.node, &[BOB, CAROL]).await;
    let got = lab.all_got(&stream, &call, &CONSULTED_THEN_COMPLETED).await;
    let created = of_type(&got, "transfer.created")[0];
    assert_eq!(
        (
            &created["transfer"]["source"],
            &created["transfer"]["target"]
        ),
        (&json!("dtmf"), &json!("201"))
    );
    lab::ends(&lab.node, vec![carol, bob]).await;
}

#[tokio::test]
async fn p3_hold_and_unhold_are_reported_and_a_receiver_answering_500_gets_retries_then_the_delivery(
) {
    let _lab = serial().await;
    let lab = setup("p3_hold").await;
    let stream = lab.stream(None).await;
    // Another account's stream sees none of it.
    let globex = Stream::open(&lab.base(), GLOBEX_TOKEN, "", None).await;
    let bob = lab.bob().await;
    let alice = lab.alice("", 9000);
    wait_for_bridge(&lab.node, &[ALICE, BOB]).await;
    let call = channel_id_named(&lab.node, ALICE).await;
    let bob_leg = channel_id_named(&lab.node, BOB).await;
    let hold = format!("/v1/calls/{bob_leg}/hold");
    let (status, _) = lab.acme(reqwest::Method::PUT, &hold, None).await;
    assert_eq!(status, 204);
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    stream
        .until("hold.ok", |got| got.iter().any(|g| g.kind == "hold.ok"))
        .await;
    let (status, _) = lab.acme(reqwest::Method::DELETE, &hold, None).await;
    assert_eq!(status, 204);
    lab::talking(&lab.node, &[ALICE, BOB], BOB).await;
    let kinds = [
        "call.created",
        "call.answered",
        "hold.start",
        "hold.ok",
        "unhold.start",
        "unhold.ok",
        "call.ended",
    ];
    let got = lab.all_got(&stream, &call, &kinds).await;
    for data in of_type(&got, "hold.ok")
        .into_iter()
        .chain(of_type(&got, "unhold.ok"))
    {
        assert_eq!(
            (&data["channel"], &data["by"]),
            (&json!(bob_leg), &json!("api"))
        );
    }
    assert!(globex.got().is_empty(), "globex saw {:?}", globex.got());

    // The flaky receiver answered 500 twice to the first event, then took it and all the rest.
    let posts = lab.flaky.deliveries();
    let first = &posts[0].webhook_id;
    let answers: Vec<u16> = posts.iter().take(3).map(|d| d.answered).collect();
    assert_eq!(answers, [500, 500, 200]);
    assert!(posts.iter().take(3).all(|d| &d.webhook_id == first));
    // Its recent attempts show the failures; it is active again.
    let (status, hooks) = lab.acme(reqwest::Method::GET, "/v1/webhooks", None).await;
    assert_eq!(status, 200);
    let flaky = hooks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["url"] == lab.flaky.url.as_str())
        .unwrap();
    assert_eq!(flaky["state"], "active", "{flaky}");
    assert_eq!(flaky["failed_attempts"], 2, "{flaky}");
    let statuses: Vec<&Value> = flaky["recent"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(500), &json!(200)]);
    let (_, globex_hooks) = {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/webhooks", lab.base()))
            .header("X-Auth-Token", GLOBEX_TOKEN)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(
        globex_hooks["items"],
        json!([]),
        "globex sees no receiver of acme"
    );
    lab::ends(&lab.node, vec![alice, bob]).await;
}
