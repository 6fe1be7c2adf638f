//! Fuzz target `update_bundle`: see `relaybox::fuzzing::update_bundle` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::update_bundle
));
