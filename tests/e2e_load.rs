//! A burst of transfers end to end: the load benchmark's machinery (`tests/lab/load.rs`) on lab node 5
//! (so it never meets the node 1 and 2 tests of the other test binaries), with the app's debug build. SIPp
//! generates about 30 blind and 10 attended REFER transfers at 5 per second, about 20 in flight at once;
//! every call must pass, every REFER end in a final NOTIFY 200, Asterisk must be the same process
//! afterwards, and nothing may be left in it. The app may have only 4 ARI requests in flight at once
//! (`max_connections`), so the burst also shows that requests beyond the bound wait and succeed. Node 5
//! is stopped at the end.

mod lab;
#[path = "lab/load.rs"]
mod load;

use std::time::Duration;

use load::{Kind, LoadNode, Profile};

#[tokio::test]
async fn load_burst_of_blind_and_attended_refers_leaves_asterisk_standing() {
    let node = LoadNode::start().unwrap_or_else(|e| panic!("lab node {}: {e}", load::NODE));
    let asterisk = node.pid().expect("node 5's Asterisk runs");
    // 3:1 at 5/s for 8 s: 30 blind and 10 attended; each scenario lives 20 / 5 = 4 s
    let profile = Profile {
        calls: 20,
        rate: 5.0,
        duration: Duration::from_secs(8),
        mix: [3, 1, 0],
        refer_barrier: true,
        // A small bound: in the burst's busy moments requests queue behind it (and none may fail).
        max_connections: Some(4),
        max_crashes: 1,
        app_extra: String::new(),
        app_env: Vec::new(),
        http_port: None,
    };
    assert_eq!(
        (
            profile.count_of(Kind::Blind),
            profile.count_of(Kind::Attended)
        ),
        (30, 10)
    );
    let report = load::run(&node, &profile, &lab::scratch("load_burst"))
        .await
        .unwrap_or_else(|e| panic!("the load setup is broken: {e}"));
    eprintln!("{report}");

    assert!(report.stopped.is_none(), "stopped early:\n{report}");
    assert!(report.crashes.is_empty(), "Asterisk crashed:\n{report}");
    assert_eq!(
        node.pid(),
        Some(asterisk),
        "node 5's Asterisk is another process now:\n{report}"
    );
    assert_eq!(report.failed_calls(), 0, "failed calls:\n{report}");
    assert_eq!(report.failed_transfers(), 0, "failed transfers:\n{report}");
    assert_eq!(
        report.no_final_notify(),
        0,
        "REFERs without a final NOTIFY:\n{report}"
    );
    assert_eq!(
        (report.refers_sent(), report.refers_ok()),
        (40, 40),
        "every REFER sent and told 200:\n{report}"
    );
    for kind in &report.kinds {
        assert_eq!(
            kind.caller.ok, kind.planned,
            "{} calls all made and passed:\n{report}",
            kind.kind
        );
    }
    assert!(
        report.channels_left.is_empty() && report.bridges_left.is_empty(),
        "left in Asterisk:\n{report}"
    );
    drop(node);
}
