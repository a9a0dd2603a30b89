#![doc = include_str!("index.md")]

#[doc = include_str!("algorithm.md")]
pub mod algorithm {}

#[doc = include_str!("limiter.md")]
pub mod limiter {}

#[doc = include_str!("layer.md")]
pub mod layer {}

// Its examples use the `key` module, which needs the `http` feature.
#[cfg(feature = "http")]
#[doc = include_str!("keys.md")]
pub mod keys {}

#[doc = include_str!("redis.md")]
pub mod redis {}

#[doc = include_str!("comparison.md")]
pub mod comparison {}

#[doc = include_str!("examples.md")]
pub mod examples {}
