#![no_main]
//! `signing`: see `amp_fuzz::signing`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::signing(data));
