//! The command line: config validation and start-up errors, each one clear line, never a panic.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ari-transfer"))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("ari-transfer-cli-tests")
        .join(name)
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

const NODE: &str = "[[nodes]]\nname = \"node1\"\nurl = \"URL\"\nusername = \"ari-transfer\"\n";

#[test]
fn the_shipped_configs_are_valid() {
    for file in ["config/ari-transfer.toml", "config/docker.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let output = bin()
            .arg("check-config")
            .arg(&path)
            .env_remove("ARI_PASSWORD")
            .env_remove("ARI_TRANSFER_DEMO_TOKEN")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {:?}",
            stderr_lines(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout
                .contains(": ok (1 node(s), 6 route(s), 1 account(s), feature codes: 1 number(s), 1 pattern(s)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("ARI_PASSWORD"),
            "a missing secret is noted: {stdout}"
        );
        assert!(
            stdout.contains(
                "accounts[0].token_envs[0]: the environment variable ARI_TRANSFER_DEMO_TOKEN"
            ),
            "a missing token is noted by its key: {stdout}"
        );
    }
}

#[test]
fn a_bad_key_is_named_on_one_line() {
    let path = write(
        &scratch("bad_key"),
        "c.toml",
        &format!("{NODE}[timeouts]\nrnig = 3\n"),
    );
    for args in [vec!["check-config"], vec!["run", "--config"]] {
        let output = bin().args(&args).arg(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!(
                "error: {}:6: unknown field `rnig`",
                path.display()
            )),
            "{lines:?}"
        );
    }
}

#[test]
fn a_bad_value_is_named_by_its_key() {
    let text = format!("{NODE}[[routes]]\nmatch = \"(\"\ndial = \"PJSIP/x\"\n")
        .replace("URL", "http://h:1");
    let path = write(&scratch("bad_value"), "c.toml", &text);
    let output = bin().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("routes[0].match: invalid regular expression"),
        "{lines:?}"
    );
}

#[test]
fn a_missing_config_file_is_one_line() {
    let output = bin()
        .args(["run", "--config", "/nonexistent/ari-transfer.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_lines(&output),
        vec!["error: /nonexistent/ari-transfer.toml: cannot read: No such file or directory (os error 2)"]
    );
}

#[test]
fn a_missing_password_variable_is_one_line() {
    let path = write(
        &scratch("no_password"),
        "c.toml",
        &NODE.replace("URL", "http://127.0.0.1:1"),
    );
    let output = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("ARI_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&output),
        vec!["error: node node1: the environment variable ARI_PASSWORD (its ARI password) is not set"]
    );
}

#[test]
fn an_unreachable_node_is_reported_and_retried_without_a_panic() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed_port}");
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\n{}",
        NODE.replace("URL", &url)
    );
    let dir = scratch("unreachable");
    let path = write(&dir, "c.toml", &text);
    let log = dir.join("stderr.log");
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&path)
        .env("ARI_PASSWORD", "x")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Give it time for the first connection attempts, then check it is alive and says why it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = format!("cannot reach ARI at {url} (events websocket): Connection refused");
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&expected) && text.contains("retrying in") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no clear error line; stderr:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the service must keep retrying"
    );
    assert_eq!(
        http_status(http_port, "/readyz"),
        503,
        "not ready while the node is unreachable"
    );
    assert_eq!(http_status(http_port, "/healthz"), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
}

/// The status code of a plain HTTP/1.0 GET on loopback.
fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
