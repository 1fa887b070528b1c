//! cargo fuzz target `content`: see `hush_fuzz::content`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hush_fuzz::content(data));
