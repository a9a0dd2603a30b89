//! The core, without a service around it (`src/{params,config,gcra,limiter}.rs`
//! and the clock): parameters and their compact and serde forms, GCRA
//! properties, and `FreqLimit` over the in-memory backend.

#[path = "../support/mod.rs"]
mod support;

mod abandoned;
mod chat_bot_example;
mod clock;
mod config;
mod gcra;
mod limiter;
