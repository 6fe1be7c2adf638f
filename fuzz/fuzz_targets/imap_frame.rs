//! Fuzz target `imap_frame`: see `relaybox::fuzzing::imap_frame` for the input layout and properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relaybox_fuzz::check(
    data,
    relaybox::fuzzing::imap_frame
));
