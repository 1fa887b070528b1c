//! cargo fuzz target `session`: see `hush_fuzz::session`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_fuzz::session(data));
