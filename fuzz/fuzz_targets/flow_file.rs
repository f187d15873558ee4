//! Flow files of any text: loaded or refused with errors that have a
//! message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if text.len() > 16384 {
        return;
    }
    if let Err(errors) = ledgerbridge_mapping::load_str(std::path::Path::new("fuzz.yaml"), text) {
        assert!(!errors.is_empty());
        for error in &errors {
            let _ = error.to_string();
        }
    }
});
