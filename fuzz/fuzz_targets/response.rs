//! cargo fuzz target `response`: see `hush_fuzz::response`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_fuzz::response(data));
