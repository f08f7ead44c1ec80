//! Every captured ARI event (tests/fixtures/captures, verbatim from Asterisk 22.10.1) decodes, and the
//! fields the service relies on hold what Asterisk really sends.

use std::path::Path;

use ari_transfer::ari::models::{ChannelTransfer, Event};

fn capture(name: &str) -> Event {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    Event::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn transfer(name: &str) -> ChannelTransfer {
    match capture(name) {
        Event::ChannelTransfer(t) => t,
        other => panic!("{name} decoded as {other:?}"),
    }
}

#[test]
fn every_capture_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let event = capture(&name);
            let kind = name.split(['-', '.']).next().unwrap();
            let expect_other = kind.starts_with("Bridge");
            assert_eq!(
                matches!(event, Event::Other),
                expect_other,
                "{name}: {event:?}"
            );
            count += 1;
        }
    }
    assert_eq!(count, 21);
}

#[test]
fn blind_refer_has_the_source_channel_and_no_state() {
    let t = transfer("ChannelTransfer-blind.json");
    assert_eq!(t.state, None);
    assert_eq!(t.refer_to.requested_destination.destination, "carol");
    assert_eq!(t.refer_to.requested_destination.protocol_id, None);
    assert!(t.refer_to.destination_channel.is_none());
    assert!(t
        .referred_by
        .source_channel
        .name
        .starts_with("PJSIP/alice-"));
    assert!(t.referred_by.connected_channel.is_some());
    assert!(t.referred_by.bridge.is_some());
}

#[test]
fn blind_destination_is_only_the_user_part() {
    let t = transfer("ChannelTransfer-blind-uri-params.json");
    assert_eq!(t.refer_to.requested_destination.destination, "+4930123456");
}

#[test]
fn follow_up_events_carry_the_posted_state() {
    assert_eq!(
        transfer("ChannelTransfer-blind-state-channel_progress.json")
            .state
            .as_deref(),
        Some("channel_progress")
    );
    // Asterisk reports channel_unavailable as channel_declined.
    assert_eq!(
        transfer("ChannelTransfer-after-channel_unavailable.json")
            .state
            .as_deref(),
        Some("channel_declined")
    );
}

#[test]
fn attended_refer_resolved_locally_names_the_consult_leg_and_the_replaces_dialog() {
    let t = transfer("ChannelTransfer-attended.json");
    let dest = &t.refer_to.requested_destination;
    assert_eq!(dest.protocol_id.as_deref(), Some("1-29084@127.0.0.1"));
    assert_eq!(
        dest.destination, "carol",
        "destination is present on attended transfers too"
    );
    assert_eq!(dest.param("from"), Some("29084SIPpTag001"));
    assert_eq!(
        dest.param("to"),
        Some("fdf13432-dca3-4905-8a72-fd2d362b4c73")
    );
    let consult = t.refer_to.destination_channel.as_ref().unwrap();
    assert_eq!(consult.call_id(), Some("1-29084@127.0.0.1"));
    assert!(t.refer_to.connected_channel.is_some());
    assert_eq!(t.refer_to.bridge.as_ref().unwrap().channels.len(), 2);
}

#[test]
fn attended_refer_unresolved_has_only_call_id_and_tags() {
    for name in [
        "ChannelTransfer-attended-swapped-tags.json",
        "ChannelTransfer-cross-instance.json",
    ] {
        let t = transfer(name);
        assert!(t.refer_to.destination_channel.is_none(), "{name}");
        assert!(
            t.refer_to.requested_destination.protocol_id.is_some(),
            "{name}"
        );
        assert!(
            t.refer_to.requested_destination.param("to").is_some(),
            "{name}"
        );
    }
}

#[test]
fn echo_after_transferer_hangup_has_no_peer() {
    let t = transfer("ChannelTransfer-on-hangup-noanswer.json");
    assert!(t.referred_by.connected_channel.is_none());
    assert!(t.referred_by.bridge.is_none());
    assert_eq!(t.state, None);
}

#[test]
fn stasis_start_gives_the_dialed_extension_and_the_call_id() {
    match capture("StasisStart-inbound.json") {
        Event::StasisStart(s) => {
            assert_eq!(s.args, vec!["inbound", "bob"]);
            assert_eq!(s.channel.dialed_exten(), Some("bob"));
            assert_eq!(s.channel.call_id(), Some("1-28629@127.0.0.1"));
            assert_eq!(s.channel.technology(), "PJSIP");
            // PJSIP/alice-00000000: the endpoint to call this phone back.
            assert_eq!(s.channel.endpoint().as_deref(), Some("PJSIP/alice"));
            // The Stasis application and its arguments, which tell a later run whose channel it is.
            assert_eq!(
                s.channel.stasis_app(),
                Some(("transfer-app", "inbound,bob"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dtmf_digits_decode() {
    match capture("ChannelDtmfReceived-pound.json") {
        Event::ChannelDtmfReceived(d) => {
            assert_eq!(d.digit, "#");
            assert_eq!(d.duration_ms, 280);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_types_and_fields_are_tolerated_and_bad_input_is_an_error() {
    let unknown = r#"{"type":"SomethingNew","whatever":1}"#;
    assert!(matches!(Event::decode(unknown), Ok(Event::Other)));
    let extra = r#"{"type":"StasisEnd","new_field":true,"channel":{"id":"c1","extra":{}}}"#;
    assert!(matches!(Event::decode(extra), Ok(Event::StasisEnd(_))));
    assert!(Event::decode("not json").is_err());
    assert!(Event::decode(r#"{"no":"type"}"#).is_err());
    let missing = Event::decode(r#"{"type":"StasisEnd"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("StasisEnd event has an unexpected shape"),
        "{missing}"
    );
}

#[test]
fn a_cross_node_refer_carries_only_the_call_id_and_tags() {
    let t = transfer("ChannelTransfer-cross-node.json");
    let destination = &t.refer_to.requested_destination;
    assert!(destination.protocol_id.is_some());
    assert_eq!(destination.additional_protocol_params.len(), 2);
    assert!(t.refer_to.destination_channel.is_none());
}

#[test]
fn trunk_legs_are_named_after_the_peer_node() {
    // The leg the app created towards node5, and the same call arriving on node5 from node4.
    for (name, endpoint) in [
        ("StasisStart-trunk-leg-created.json", "PJSIP/node5"),
        ("StasisStart-from-node.json", "PJSIP/node4"),
    ] {
        let Event::StasisStart(start) = capture(name) else {
            panic!("{name} is not a StasisStart");
        };
        assert_eq!(
            start.channel.endpoint().as_deref(),
            Some(endpoint),
            "{name}"
        );
    }
    let Event::StasisStart(created) = capture("StasisStart-trunk-leg-created.json") else {
        unreachable!()
    };
    assert_eq!(
        created.channel.stasis_app(),
        Some(("ari-transfer", "dialed"))
    );
    // A Replaces naming a trunk dialog with this node's tags: Asterisk resolves it to the trunk leg.
    let t = transfer("ChannelTransfer-replaces-trunk-leg.json");
    let resolved = t.refer_to.destination_channel.expect("resolved");
    assert_eq!(resolved.endpoint().as_deref(), Some("PJSIP/node5"));
}
