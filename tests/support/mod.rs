//! Helpers shared by the test binaries (`tests/*/main.rs`), each of which
//! declares `#[path = "../support/mod.rs"] mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod concurrent;
pub mod down;
pub mod http;
#[cfg(feature = "http")]
pub mod proxy_model;
pub mod redis_server;
