//! The configuration loader on arbitrary text: an error names a key or a line and is one line; it never
//! panics.
#![no_main]

use ari_transfer::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(text, "fuzz.toml") {
        let line = error.to_string();
        assert!(line.starts_with("fuzz.toml"), "{line}");
        assert!(!line.contains('\n'), "more than one line: {line}");
    }
});
