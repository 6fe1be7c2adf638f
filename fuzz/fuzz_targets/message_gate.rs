//! Fuzz target `message_gate`: see `relaybox::fuzzing::message_gate` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::message_gate
));
