//! Fuzz target `smtp_data`: see `relaybox::fuzzing::smtp_data` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(data, relaybox::fuzzing::smtp_data));
