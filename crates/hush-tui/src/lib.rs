//! hush's interactive terminal client. [`app`] holds state and input handling,
//! [`ui`] draws it, [`run`] connects both to the terminal and to `hush-client`'s
//! event stream (the same stream `hush recv` prints). Logs go to a file, never to the
//! terminal being drawn on.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod config;
pub mod run;
pub mod ui;
pub mod wrap;

pub use run::run;
