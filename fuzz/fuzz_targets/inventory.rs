//! Fuzz target: inventory text as INI and as YAML (the loader picks by extension), then
//! host selection with a pattern taken from the input's first line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limit = text.lines().next().filter(|l| !l.starts_with('@'));
    for name in ["fuzz.ini", "fuzz.yaml"] {
        match kfix::inventory::Inventory::parse(std::path::Path::new(name), text) {
            Ok(inv) => {
                let _ = inv.select(limit);
            }
            Err(diags) => {
                for d in diags {
                    let _ = d.to_string();
                }
            }
        }
    }
});
