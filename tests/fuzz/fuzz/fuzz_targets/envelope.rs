#![no_main]
//! `envelope`: see `amp_fuzz::envelope`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::envelope(data));
