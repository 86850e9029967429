#![no_main]
//! `federation_headers`: see `amp_fuzz::federation_headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::federation_headers(data));
