//! The ARI event decoder on arbitrary bytes (and, from the seed corpus, mutated real captures): it never
//! panics, and whatever it accepts names a channel consistently.
#![no_main]

use ari_transfer::ari::models::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = Event::decode(text) {
        if let Some(channel) = event.channel() {
            let _ = channel.call_id();
            let _ = channel.endpoint();
        }
    }
});
