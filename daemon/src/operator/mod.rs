//! Operator actions shared by the status page and the command line (`control`): each
//! submodule owns one topic (accounts, the outbound queue, the diagnostic report, …) and
//! works on the store and, when the relay runs, on its live services.
//!
//! - `accounts`: list, delete, block and unblock accounts (issue 18 item 3);
//! - `queue`: the outbound queue by destination domain (issue 18 item 4);
//! - `report`: the diagnostic report (issue 18 item 5);
//! - `moving`: the switch of `relaybox move` (issue 17 item 4).

pub mod accounts;
pub mod moving;
pub mod queue;
pub mod report;
