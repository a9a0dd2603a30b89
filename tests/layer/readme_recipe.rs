//! The README's axum recipe is `examples/axum_per_ip.rs`, byte for byte, and it
//! works: served as the example binary on its loopback port, a real HTTP client
//! gets `200`s for the burst, then `429`s with `Retry-After` and the `RateLimit`
//! headers. Built with the features the README's install block names (`axum`).
//!
//! The example is the binary `cargo test` builds beside this test (examples are
//! compiled with the tests). It serves on 127.0.0.1:3000 as the README says, on
//! the real clock: the test waits for the port to accept (polling, under a
//! deadline) and asserts no timing beyond what a 2/s limit leaves no doubt
//! about.
#![cfg(feature = "axum")]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{client, get};

const ADDR: &str = "127.0.0.1:3000";

#[test]
fn readme_recipe_is_the_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../examples/axum_per_ip.rs");
    let start = readme
        .find("<!-- example: axum_per_ip -->\n```rust,ignore\n")
        .expect("README marks the axum recipe with `<!-- example: axum_per_ip -->`");
    let block = &readme[start..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let end = block
        .find("```\n<!-- /example -->")
        .expect("the recipe ends with a fence and `<!-- /example -->`");
    assert_eq!(
        &block[..end],
        example,
        "the README's axum recipe and examples/axum_per_ip.rs differ"
    );
}

/// The example binary, beside this test's own (`target/<profile>/examples`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir
        .join("examples")
        .join(format!("axum_per_ip{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --features axum` (or --all-features), which builds the examples",
        path.display()
    );
    // `cargo test --test layer` alone does not rebuild examples: a
    // binary older than its source would test old code.
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/axum_per_ip.rs");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        modified(&path) >= modified(source.as_ref()),
        "{} is older than its source: rebuild it (`cargo test --features axum` builds the examples)",
        path.display()
    );
    path
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn readme_recipe_answers_200_then_429_with_headers() {
    let addr: SocketAddr = ADDR.parse().unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "something already listens on {ADDR}, where the README's example serves"
    );
    let mut server = Server(
        Command::new(example_binary())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example"),
    );
    // A real server starts on real time: poll until it accepts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("the example exited with {status} before serving");
        }
        assert!(Instant::now() < deadline, "the example never served {ADDR}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = client();
    let mut replies = Vec::new();
    for _ in 0..7 {
        replies.push(get(&client, addr, "/", []).await);
    }
    // 2 per second with a burst of 5: the burst passes, the next two are
    // refused (the next slot is half a second after the first request).
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(replies[0].body, "hello");
    let refused = &replies[5];
    assert_eq!(
        refused.header("retry-after"),
        Some("1"),
        "0.5 s at most, rounded up"
    );
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""default";q=5;w=3"#)
    );
    let state = refused.header("ratelimit").unwrap();
    assert!(
        state.starts_with(r#""default";r=0;t="#),
        "RateLimit: {state}"
    );
}
