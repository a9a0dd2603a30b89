//! A flood of unique client keys against the in-memory backend, with and
//! without `max_keys`: what bounds memory, and what each `WhenFull` policy
//! does with the flood.
//!
//! 1 000 000 requests, each from a new IPv6 /64 (keyed as `ClientIp` keys
//! them: an `IpAddr` grouped per /64), all within one second, at one request
//! per minute per client: no key drains during the flood, the worst case for
//! a bound.
//!
//! ```sh
//! cargo build --release --example key_flood
//! /usr/bin/time -v target/release/examples/key_flood            # unbounded
//! /usr/bin/time -v target/release/examples/key_flood 10000      # max_keys 10 000, refuse new keys
//! /usr/bin/time -v target/release/examples/key_flood 10000 evict
//! ```
//!
//! Arguments: `[MAX_KEYS] [refuse|evict] [REQUESTS] [groups|nogroups]`.
//! Prints what was admitted and refused and the keys held; `/usr/bin/time -v`
//! gives the peak RSS ("Maximum resident set size").
//!
//! The /64s are those of 2001:db8::/32 in order, so the flood comes from
//! `REQUESTS / 65 536` /48s (16 for a million). With `max_keys`, keys are
//! grouped per /48 by default and each /48 holds at most its share of the
//! table (`max_keys / 32`) plus one overflow bucket; `nogroups` turns groups
//! off (the behaviour before them: the flood fills the table).

use std::error::Error;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::key::ClientIp;
use tower_freqlimit::{FreqLimitError, FreqLimitParams, Reserve};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let max_keys: Option<usize> = args.next().map(|n| n.parse()).transpose()?;
    let when_full = match args.next().as_deref() {
        None | Some("refuse") => WhenFull::RefuseNewKeys,
        Some("evict") => WhenFull::EvictClosestToDraining,
        Some(other) => return Err(format!("unknown policy {other:?}: refuse or evict").into()),
    };
    let requests: u64 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let grouped = match args.next().as_deref() {
        None | Some("groups") => true,
        Some("nogroups") => false,
        Some(other) => return Err(format!("unknown grouping {other:?}: groups or nogroups").into()),
    };

    let mut builder = InMemoryBackend::<IpAddr>::builder().without_sweeper();
    if let Some(max_keys) = max_keys {
        builder = builder.max_keys(max_keys).when_full(when_full);
        if !grouped {
            builder = builder.without_groups();
        }
    }
    let backend = builder.build();
    let params = FreqLimitParams::per_minute(1);
    let keys = ClientIp::peer(); // IPv6 per /64

    let start = Timestamp::now();
    let clock = Instant::now();
    let (mut admitted, mut refused, mut rejected, mut max_len) = (0u64, 0u64, 0u64, 0usize);
    for n in 0..requests {
        // A new /64 for every request, and a random-looking host part.
        let addr = Ipv6Addr::from_bits((0x2001_0db8_u128 << 96) | (u128::from(n) << 64) | 0x1234);
        let key = keys.mask(IpAddr::V6(addr));
        // Spread over one second.
        let now = start + Duration::from_nanos(n * 1_000_000_000 / requests);
        match backend.reserve_now(Some(&key), now, &params, Reserve::new().no_wait()) {
            Ok(_) => admitted += 1,
            Err(FreqLimitError::Backend(_)) => refused += 1,
            // Decided on its /48's overflow bucket, which owes time: a 429.
            Err(FreqLimitError::Rejected(_)) => rejected += 1,
            Err(other) => return Err(other.into()),
        }
        if n % 4096 == 0 {
            max_len = max_len.max(backend.len() + backend.overflow_buckets());
        }
    }
    max_len = max_len.max(backend.len() + backend.overflow_buckets());
    let bound = match max_keys {
        Some(n) => format!(
            "max_keys {n}, {when_full:?}, {}",
            match backend.group_share() {
                Some(share) => format!("groups of {share} keys"),
                None => "no groups".to_owned(),
            }
        ),
        None => "unbounded".to_owned(),
    };
    println!(
        "{bound}: {requests} unique keys in {:.2} s: {admitted} admitted, {rejected} rejected \
         (overflow buckets), {refused} refused (table full); \
         {} keys and {} overflow buckets held at the end, at most {max_len} entries seen",
        clock.elapsed().as_secs_f64(),
        backend.len(),
        backend.overflow_buckets(),
    );
    if let Some(max_keys) = max_keys
        && max_len > max_keys
    {
        return Err(format!("the bound was exceeded: {max_len} > {max_keys}").into());
    }
    Ok(())
}
