//! The lab script itself: one lab dir's `stop` never pulls the shared sid root from under an Asterisk
//! that another lab dir (another checkout, a CI run, a benchmark) still runs in it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/lab ARGS` with lab dir `lab`; its stdout.
fn lab(lab: &Path, args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(repo().join("scripts/lab"))
        .args(args)
        .env("ARI_TRANSFER_LAB", lab)
        .output()
        .expect("run scripts/lab");
    assert!(
        output.status.success(),
        "scripts/lab {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn mounted(path: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn sid_root() -> PathBuf {
    let cache = std::env::var_os("ARI_TRANSFER_CACHE").unwrap_or("/var/cache/ari-transfer".into());
    PathBuf::from(cache).join("sid-root")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ari-transfer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn stopping_every_node_of_one_lab_dir_leaves_another_dirs_asterisk_its_root() {
    let (first, second) = (fresh_dir("lab-a"), fresh_dir("lab-b"));
    lab(&first, &["start", "7"]);
    let root = sid_root();
    let first_in_root = root.join(first.strip_prefix("/").unwrap());
    assert!(mounted(&root.join("proc")) && mounted(&first_in_root));

    // The second lab dir has no node running: `stop` (all of its nodes) used to unmount everything.
    lab(&second, &["stop"]);
    let still = [root.join("proc"), root.join("dev"), first_in_root.clone()];
    let lost: Vec<_> = still.iter().filter(|m| !mounted(m)).collect();
    let status = lab(&first, &["status"]);
    lab(&first, &["stop", "7"]);
    assert!(lost.is_empty(), "unmounted under a running node: {lost:?}");
    assert!(status.contains("node7 running"), "{status}");
    // Once its own nodes are gone, the first lab dir's mount goes too.
    assert!(!mounted(&first_in_root));
    let _ = std::fs::remove_dir_all(&first);
    let _ = std::fs::remove_dir_all(&second);
}
