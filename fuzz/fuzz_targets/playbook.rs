//! Fuzz target: playbook text through the same loader `kfix validate` uses. Any input
//! must give a playbook or diagnostics, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.yaml");
        if let Err(d) = kfix::playbook::parse(path, text) {
            // Rendering the diagnostics (source line, caret) must not panic either.
            let _ = d.to_string();
        }
    }
});
