//! The backends (`src/backends`): one behavioural suite run against each, the
//! in-memory backend's `max_keys` bound, and (feature `redis`) the Redis
//! backend on real `redis-server`s, standalone and in a cluster.

#[path = "../support/mod.rs"]
mod support;

mod compound;
mod memory;
mod prefix_flood;
mod redis;
mod refund;
mod suite;
