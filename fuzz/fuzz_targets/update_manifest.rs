//! Fuzz target `update_manifest`: see `relaybox::fuzzing::update_manifest` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::update_manifest
));
