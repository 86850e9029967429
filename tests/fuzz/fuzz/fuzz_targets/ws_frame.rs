#![no_main]
//! `ws_frame`: see `amp_fuzz::ws_frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::ws_frame(data));
