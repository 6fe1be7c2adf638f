//! Fuzz target `imap_command`: see `relaybox::fuzzing::imap_command` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::imap_command
));
