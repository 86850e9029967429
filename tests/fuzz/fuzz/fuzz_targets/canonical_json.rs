#![no_main]
//! `canonical_json`: see `amp_fuzz::canonical_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::canonical_json(data));
