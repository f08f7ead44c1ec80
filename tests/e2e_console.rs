//! The web console (P5) in a real headless browser (Debian's chromium, driven through chromium-driver with
//! fantoccini; `scripts/lab install` installs both) against the real binary, a real Asterisk 22 and SIPp
//! phones. alice calls bob; the console, signed in with acme's token, shows the call (pushed over SSE),
//! and its buttons move it: a transfer to carol that completes (asserted over ARI: bob and carol bridged,
//! alice hung up; and in the console: the transfer completed), and a hold that gives bob music (asserted
//! from the format Asterisk writes to him) until unhold. The transfer test saves the screenshot the
//! README shows (docs/console.png).

mod lab;

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use lab::{
    channel_id_named, free_tcp_port, scratch, serial, wait_for_bridge, wait_for_write_format, App,
    AppSettings, Node, Phone, ALICE, BOB, CAROL,
};
use serde_json::json;
use tokio::process::{Child, Command};

const ACME_TOKEN: &str = "acme-token-for-the-console-tests";

const ACCOUNTS: &str = r#"
[[accounts]]
id = "acme"
name = "Acme"
token_envs = ["ACME_TOKEN"]
endpoints = ["alice", "bob", "carol"]
"#;

/// A headless chromium under chromium-driver, with a fresh profile; both end when it is dropped.
struct Browser {
    client: Client,
    _driver: Child,
}

impl Browser {
    async fn start(dir: &std::path::Path) -> Browser {
        let port = free_tcp_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver (scripts/lab install installs chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        lab::eventually(Duration::from_secs(20), "chromedriver", || async {
            let status = reqwest::get(format!("{url}/status")).await.ok()?;
            status.status().is_success().then_some(())
        })
        .await;
        let profile = dir.join("chromium-profile");
        let options = json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-gpu",
                format!("--user-data-dir={}", profile.display()),
                // A phone's screen width.
                "--window-size=420,900",
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a browser session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// The element `css`, waiting for it (at most 20 s).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} in the console: {e}"))
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("a click");
    }

    /// Waits until the text of `css` is `text`.
    async fn shows(&self, css: &str, text: &str) {
        let what = format!("{css} to show {text:?}");
        lab::eventually(Duration::from_secs(20), &what, || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            (element.text().await.ok()?.trim() == text).then_some(())
        })
        .await
    }

    /// Opens the console and signs in with `token`; returns once the live stream is open.
    async fn sign_in(&self, base: &str, token: &str) {
        self.client
            .goto(&format!("{base}/console"))
            .await
            .expect("the console loads");
        self.find("#token")
            .await
            .send_keys(token)
            .await
            .expect("typing");
        self.click("#sign-in").await;
        self.shows("#live", "live").await;
    }
}

struct Setup {
    node: Node,
    dir: std::path::PathBuf,
    _app: App,
    browser: Browser,
}

async fn setup(test: &str) -> Setup {
    let node = lab::node(1);
    let dir = scratch(test);
    let mut settings = AppSettings::for_node(&node);
    settings.extra = ACCOUNTS.to_owned();
    settings.env = vec![("ACME_TOKEN".into(), ACME_TOKEN.into())];
    let app = App::start(&dir, &settings).await;
    let browser = Browser::start(&dir).await;
    let base = format!("http://127.0.0.1:{}", app.http_port);
    browser.sign_in(&base, ACME_TOKEN).await;
    Setup {
        node,
        dir,
        _app: app,
        browser,
    }
}

impl Setup {
    /// bob answers and waits for the BYE; alice calls him and waits for hers (she hangs up after
    /// `hangup_after_ms` if not 0). Returns both once they talk, with the call's id (alice's channel).
    async fn call(&self, hangup_after_ms: u32) -> (Phone, Phone, String) {
        let bob = Phone::callee(&self.dir, &self.node, "bob", "uas_answer.xml", &[]).await;
        let alice = Phone::presses(&self.dir, &self.node, "", hangup_after_ms);
        wait_for_bridge(&self.node, &[ALICE, BOB]).await;
        let call = channel_id_named(&self.node, ALICE).await;
        (alice, bob, call)
    }
}

#[tokio::test]
async fn p5_the_console_shows_the_call_and_its_transfer_button_hands_the_transferee_to_the_target()
{
    let _lab = serial().await;
    let lab = setup("p5_console_transfer").await;
    let carol = Phone::answers_then_hangs_up(&lab.dir, &lab.node, "carol", 1500, 6000).await;
    let (alice, bob, call) = lab.call(0).await;
    let card = format!(".call[data-call=\"{call}\"]");
    // The call appears without a reload (pushed over SSE).
    lab.browser.find(&card).await;
    lab.browser
        .find(&format!("{card} input.target"))
        .await
        .send_keys("carol")
        .await
        .expect("typing");
    lab.browser.click(&format!("{card} button.transfer")).await;
    // alice (the caller's leg, the default transferor) consults carol; bob waits with music.
    wait_for_bridge(&lab.node, &[ALICE, CAROL]).await;
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    lab.browser
        .shows(&format!("{card} div.transfer .transfer-status"), "answered")
        .await;
    let screenshot = lab.browser.client.screenshot().await.expect("a screenshot");
    let docs = lab::repo().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("console.png"), screenshot).unwrap();
    let transfer = lab
        .browser
        .find(&format!("{card} div.transfer"))
        .await
        .attr("data-transfer")
        .await
        .unwrap()
        .expect("the transfer's id");

    lab.browser.click(&format!("{card} button.complete")).await;
    // bob and carol talk, the music stops, alice is hung up (her scenario waits for that BYE).
    lab::talking(&lab.node, &[BOB, CAROL], BOB).await;
    alice.expect_success().await;
    let recent = format!("#recent .recent-transfer[data-transfer=\"{transfer}\"] .transfer-status");
    lab.browser.shows(&recent, "completed").await;
    // carol hangs up: the call is over, and gone from the console.
    lab::ends(&lab.node, vec![carol, bob]).await;
    lab.browser.shows("#calls", "No calls").await;
}

#[tokio::test]
async fn p5_the_hold_button_gives_the_leg_music_and_unhold_brings_it_back() {
    let _lab = serial().await;
    let lab = setup("p5_console_hold").await;
    let (alice, bob, call) = lab.call(0).await;
    let bob_leg = channel_id_named(&lab.node, BOB).await;
    let card = format!(".call[data-call=\"{call}\"]");
    lab.browser.find(&card).await;
    lab.browser
        .click(&format!("{card} button.hold[data-leg=\"{bob_leg}\"]"))
        .await;
    wait_for_write_format(&lab.node, BOB, "gsm").await;
    wait_for_bridge(&lab.node, &[ALICE]).await;
    lab.browser
        .shows(
            &format!("{card} li.leg[data-leg=\"{bob_leg}\"] .hold-state"),
            "on hold (API)",
        )
        .await;
    lab.browser
        .click(&format!("{card} button.unhold[data-leg=\"{bob_leg}\"]"))
        .await;
    lab::talking(&lab.node, &[ALICE, BOB], BOB).await;
    // Hang up from the console: both phones get their BYE.
    lab.browser.click(&format!("{card} button.hangup")).await;
    lab::ends(&lab.node, vec![alice, bob]).await;
    lab.browser.shows("#calls", "No calls").await;
}
