//! Fuzz target `imap_command`: see `relaybox::fuzzing::imap_command` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox::fuzzing::imap_command(data));
