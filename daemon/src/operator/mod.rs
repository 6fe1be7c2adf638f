//! Operator actions shared by the status page and the command line (`control`): each
//! submodule owns one topic (accounts, the outbound queue, the diagnostic report, …) and
//! works on the store and, when the relay runs, on its live services.

pub mod queue;
