#![no_main]
//! `config`: see `amp_fuzz::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| amp_fuzz::config(data));
