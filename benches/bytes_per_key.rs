//! Live heap bytes per key: our `InMemoryBackend<u64>` beside governor 0.10's
//! keyed (DashMap) limiter, after 1 000 000 distinct `u64` keys each.
//!
//! A counting global allocator tracks live bytes; each limiter is built, filled
//! and measured on its own, and dropped before the next, so the two figures do
//! not mix. Both maps are hash tables that double their capacity, so the figure
//! per key depends on where the key count falls between two resizes; the peak
//! (old and new table alive during a resize) is printed as well.
//!
//! Run with `cargo bench --bench bytes_per_key`. Without `--bench` (as
//! `cargo test --benches` runs it) or with `--test` it uses 10 000 keys, as a
//! quick smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimitParams, Reserve};

/// `System`, counting live and peak bytes.
///
/// Counting every allocation needs a `#[global_allocator]`, and implementing
/// `GlobalAlloc` is `unsafe` by definition. This is the only `unsafe` in the
/// project and it lives here, in a benchmark binary, not in the library (which is
/// `#![forbid(unsafe_code)]`): each method only forwards to `System` with the
/// caller's own arguments and updates two atomics.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with exactly the arguments it was
// given, so `System`'s guarantees are ours; the counting touches only atomics
// and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received; the caller upholds the contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Never refuses or delays anything in this program: one nanosecond apart, a
/// burst of 10^9.
const PARAMS: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);
const LOTS: NonZeroU32 = NonZeroU32::new(1_000_000_000).unwrap();

struct Measured {
    live: usize,
    peak: usize,
    len: usize,
}

/// Runs `fill`, which must return the filled structure, and measures live bytes
/// (relative to before) while it is still alive, and the peak during filling.
fn measure<T>(fill: impl FnOnce() -> T, len: impl Fn(&T) -> usize) -> Measured {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let filled = fill();
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let len = len(&filled);
    drop(filled);
    Measured { live, peak, len }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let keys: u64 = if full { 1_000_000 } else { 10_000 };

    let ours = measure(
        || {
            let backend = InMemoryBackend::<u64>::builder().without_sweeper().build();
            for key in 0..keys {
                backend
                    .reserve_now(Some(&key), Timestamp::now(), &PARAMS, Reserve::new())
                    .expect("never refused");
            }
            backend
        },
        InMemoryBackend::len,
    );

    let governor = measure(
        || {
            let limiter =
                DefaultKeyedRateLimiter::<u64>::dashmap(Quota::per_second(LOTS).allow_burst(LOTS));
            for key in 0..keys {
                limiter.check_key(&key).expect("never refused");
            }
            limiter
        },
        |limiter| limiter.len(),
    );

    assert_eq!(ours.len as u64, keys);
    assert_eq!(governor.len as u64, keys);

    let per_key = |bytes: usize| bytes as f64 / keys as f64;
    println!("live heap bytes after inserting {keys} distinct u64 keys");
    if !full {
        println!(
            "(quick mode, without --bench or with --test: run `cargo bench --bench bytes_per_key`)"
        );
    }
    println!(
        "{:<40} | {:>12} | {:>9} | {:>12} | {:>9}",
        "limiter", "live bytes", "B/key", "peak bytes", "peak B/key"
    );
    println!(
        "{:-<40}-|-{:->12}-|-{:->9}-|-{:->12}-|-{:->9}",
        "", "", "", "", ""
    );
    for (name, m) in [
        ("ours InMemoryBackend<u64>", &ours),
        ("governor keyed dashmap (check_key)", &governor),
    ] {
        println!(
            "{:<40} | {:>12} | {:>9.2} | {:>12} | {:>9.2}",
            name,
            m.live,
            per_key(m.live),
            m.peak,
            per_key(m.peak)
        );
    }
    println!(
        "{:<40} | {:>12} | {:>9.2} |",
        "theoretical minimum (key 8 B + TAT 8 B)",
        16 * keys,
        16.0
    );
    println!(
        "ratio ours / governor, live bytes per key: {:.3}",
        ours.live as f64 / governor.live as f64
    );
    println!(
        "ours / theoretical minimum: {:.2}x",
        per_key(ours.live) / 16.0
    );
}
