#![no_main]
//! `address`: see `amp_fuzz::address`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::address(data));
