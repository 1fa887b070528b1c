//! cargo fuzz target `request`: see `hush_fuzz::request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_fuzz::request(data));
