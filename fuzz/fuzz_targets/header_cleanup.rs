//! Fuzz target `header_cleanup`: see `relaybox::fuzzing::header_cleanup` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::header_cleanup
));
