//! cargo fuzz target `frame`: see `hush_fuzz::frame`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_fuzz::frame(data));
