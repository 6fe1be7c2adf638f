//! Harness for black-box tests (being written).
