//! Generated input for every route (P4): schemathesis (from PyPI; `scripts/lab install` installs it) reads
//! the OpenAPI document the running service serves, and sends each route valid and invalid requests,
//! with a token and without one, while a real call is up on a real Asterisk. No answer may be a 5xx, and
//! every documented answer must match its schema (the error bodies included). The call survives it and
//! nothing is left afterwards.

mod lab;

use std::process::Command;

use lab::{assert_nothing_left, scratch, serial, wait_for_bridge, App, AppSettings, Phone};

const TOKEN: &str = "schema-token-for-the-e2e-tests";

const ACCOUNTS: &str = r#"
[[accounts]]
id = "acme"
token_envs = ["ACME_TOKEN"]
endpoints = ["alice", "bob", "carol"]
"#;

/// Runs schemathesis against the app; its output, and whether it passed.
fn schemathesis(
    app: &App,
    dir: &std::path::Path,
    token: Option<&str>,
    seed: &str,
) -> (bool, String) {
    let base = format!("http://127.0.0.1:{}", app.http_port);
    let mut command = Command::new("python3");
    command
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--url", &base])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
        ])
        .args(["--max-examples", "25", "--seed", seed, "--workers", "2"])
        .args(["--request-timeout", "10"])
        // An endless stream (server-sent events), tested by tests/e2e_events.rs.
        .args(["--exclude-path", "/v1/events"])
        .args(["--generation-codec", "utf-8"])
        .arg("--report-dir")
        .arg(dir.join(format!("schemathesis-{seed}")))
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .current_dir(dir);
    if let Some(token) = token {
        command.args(["-H", &format!("X-Auth-Token: {token}")]);
    }
    let output = command
        .output()
        .expect("run schemathesis (scripts/lab install installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn p4_generated_input_on_every_route_never_gets_a_5xx_and_errors_match_their_schema() {
    let _lab = serial().await;
    let node = lab::node(1);
    let dir = scratch("p4_schemathesis");
    let mut settings = AppSettings::for_node(&node);
    settings.extra = ACCOUNTS.to_owned();
    settings.env = vec![("ACME_TOKEN".into(), TOKEN.into())];
    let app = App::start(&dir, &settings).await;

    // A call is up, so that the service has something to lose: it must stay up through all of it.
    let bob = Phone::callee(&dir, &node, "bob", "uas_answer.xml", &[]).await;
    let alice = Phone::caller(&dir, &node, "uac_talk_until_bye.xml", "bob", &[]);
    wait_for_bridge(&node, &["PJSIP/alice-", "PJSIP/bob-"]).await;

    for (token, seed) in [(Some(TOKEN), "1"), (None, "2")] {
        let (passed, output) = schemathesis(&app, &dir, token, seed);
        assert!(
            passed,
            "schemathesis found problems (token: {}):\n{output}",
            token.is_some()
        );
        assert!(
            !app.log().contains("panicked"),
            "the app panicked:\n{}",
            app.log()
        );
    }
    // Generated requests reach the live call too (schemathesis follows GET /v1/calls to its ids, and may
    // hold it or hang it up): whatever they did, the call is hung up now if it is still there, and every
    // phone must have had a proper end.
    let channels = lab::ari_get(&node, "/channels").await;
    let alice_id = channels
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("PJSIP/alice-"))
        })
        .and_then(|c| c["id"].as_str().map(str::to_owned));
    if let Some(alice_id) = alice_id {
        let hangup = reqwest::Client::new()
            .delete(format!(
                "http://127.0.0.1:{}/v1/calls/{alice_id}",
                app.http_port
            ))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(hangup.status().as_u16(), 204);
    }
    alice.expect_success().await;
    bob.expect_success().await;
    assert_nothing_left(&node).await;
}
