//! Operator actions shared by the status page and the command line (`control`): each
//! topic is one module of functions over the store and the live relay, called by the
//! pages' backend (`crate::appliance`) and by the `relaybox` commands alike.
//!
//! - `report`: the diagnostic report (issue 18 item 5).

pub mod report;
