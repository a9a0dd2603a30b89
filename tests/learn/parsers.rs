//! Every header form `Learner` reads, exactly; garbage and past dates never
//! push anything; nothing passes the clamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use tower_freqlimit::learn::{HoldSource, Learner};

const S: Duration = Duration::from_secs(1);

/// A wall-clock instant on a whole second, so HTTP dates are exact.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hold(status: u16, fields: &[(&str, &str)]) -> Option<(Duration, HoldSource)> {
    let status = StatusCode::from_u16(status).unwrap();
    Learner::new()
        .hold(status, &headers(fields), now())
        .map(|h| (h.duration(), h.source()))
}

#[test]
fn retry_after_in_seconds_on_429_and_503_only() {
    assert_eq!(
        hold(429, &[("retry-after", "30")]),
        Some((30 * S, HoldSource::RetryAfter))
    );
    assert_eq!(
        hold(503, &[("retry-after", " 7 ")]),
        Some((7 * S, HoldSource::RetryAfter))
    );
    assert_eq!(hold(200, &[("retry-after", "30")]), None);
    assert_eq!(hold(500, &[("retry-after", "30")]), None);
    assert_eq!(hold(429, &[("retry-after", "0")]), None);
    for garbage in ["-5", "1.5", "30s", "", "0x10", "1e3", "NaN", "thirty"] {
        assert_eq!(hold(429, &[("retry-after", garbage)]), None, "{garbage:?}");
    }
    // Absurd values are clamped, not wrapped.
    assert_eq!(
        hold(429, &[("retry-after", "99999999999999999999999999")]),
        Some((Learner::DEFAULT_MAX_HOLD, HoldSource::RetryAfter))
    );
}

#[test]
fn retry_after_as_an_http_date() {
    let at = |secs: u64| httpdate::fmt_http_date(now() + Duration::from_secs(secs));
    assert_eq!(
        hold(429, &[("retry-after", &at(90))]),
        Some((90 * S, HoldSource::RetryAfter))
    );
    // The obsolete RFC 850 and asctime forms parse too.
    assert_eq!(
        hold(503, &[("retry-after", "Thursday, 01-Jan-26 00:01:00 GMT")]),
        Some((60 * S, HoldSource::RetryAfter))
    );
    assert_eq!(
        hold(503, &[("retry-after", "Thu Jan  1 00:02:00 2026")]),
        Some((120 * S, HoldSource::RetryAfter))
    );
    // A date in the past or now pushes nothing.
    let past = httpdate::fmt_http_date(now() - Duration::from_secs(5));
    assert_eq!(hold(429, &[("retry-after", &past)]), None);
    assert_eq!(hold(429, &[("retry-after", &at(0))]), None);
}

#[test]
fn ietf_ratelimit_field() {
    let r = |v: &str| hold(200, &[("ratelimit", v)]);
    assert_eq!(
        r(r#""default";r=0;t=30"#),
        Some((30 * S, HoldSource::RateLimit))
    );
    assert_eq!(r(r#""default";r=4;t=30"#), None);
    // One item per policy: the longest among the exhausted ones.
    assert_eq!(
        r(r#""burst";r=0;t=2, "daily";r=0;t=3600, "minute";r=9;t=50"#),
        Some((3600 * S, HoldSource::RateLimit))
    );
    for garbage in [
        r#""default";r=0"#,
        r#""default";r=0;t=-3"#,
        r#""default";r=0;t=1.5"#,
        "r=0;t=",
        "(((",
    ] {
        assert_eq!(r(garbage), None, "{garbage:?}");
    }
    // Any status: a 200 that says the quota is gone is believed.
    assert_eq!(
        hold(429, &[("ratelimit", r#""q";r=0;t=5"#)]),
        Some((5 * S, HoldSource::RateLimit))
    );
    // The earlier drafts' pair of fields.
    assert_eq!(
        hold(
            200,
            &[("ratelimit-remaining", "0"), ("ratelimit-reset", "12")]
        ),
        Some((12 * S, HoldSource::RateLimit))
    );
    assert_eq!(
        hold(
            200,
            &[("ratelimit-remaining", "3"), ("ratelimit-reset", "12")]
        ),
        None
    );
}

#[test]
fn x_ratelimit_fields() {
    let x = |remaining: &str, reset: &str| {
        hold(
            200,
            &[
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset", reset),
            ],
        )
    };
    assert_eq!(x("0", "30"), Some((30 * S, HoldSource::XRateLimit)));
    assert_eq!(
        x("0", "2.5"),
        Some((2500 * Duration::from_millis(1), HoldSource::XRateLimit))
    );
    assert_eq!(x("1", "30"), None);
    // A Unix time (GitHub's form), from the wall clock.
    assert_eq!(x("0", "1767225690"), Some((90 * S, HoldSource::XRateLimit)));
    assert_eq!(x("0", "1767225000"), None); // already past
    for garbage in [
        "-1", "+5", "inf", "NaN", "1e3", "1e9", "", ".", "1..2", "0x1f", " 5 5",
    ] {
        assert_eq!(x("0", garbage), None, "{garbage:?}");
    }
    // At most 32 bytes of number.
    let long = format!("{:0>32}", 7);
    assert_eq!(x("0", &long), Some((7 * S, HoldSource::XRateLimit)));
    assert_eq!(x("0", &format!("0{long}")), None);
    // Discord's relative form.
    assert_eq!(
        hold(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "1.25")
            ]
        ),
        Some((Duration::from_millis(1250), HoldSource::XRateLimit))
    );
}

#[test]
fn the_longest_hold_wins_and_the_clamp_holds() {
    assert_eq!(
        hold(
            429,
            &[("retry-after", "10"), ("ratelimit", r#""d";r=0;t=20"#)]
        ),
        Some((20 * S, HoldSource::RateLimit))
    );
    assert_eq!(
        hold(
            429,
            &[("retry-after", "40"), ("ratelimit", r#""d";r=0;t=20"#)]
        ),
        Some((40 * S, HoldSource::RetryAfter))
    );
    let learner = Learner::new()
        .max_hold(Duration::from_secs(60))
        .custom(|_, headers| {
            let ms: u64 = headers.get("x-wait-ms")?.to_str().ok()?.parse().ok()?;
            Some(Duration::from_millis(ms))
        });
    let h = learner
        .hold(StatusCode::OK, &headers(&[("x-wait-ms", "1500")]), now())
        .unwrap();
    assert_eq!(
        (h.duration(), h.source()),
        (Duration::from_millis(1500), HoldSource::Custom)
    );
    let h = learner
        .hold(StatusCode::OK, &headers(&[("x-wait-ms", "900000")]), now())
        .unwrap();
    assert_eq!(h.duration(), Duration::from_secs(60));
}

fn any_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "[0-9 .,;=\"a-z()-]{0,40}".prop_map(String::into_bytes),
    ]
}

proptest! {
    /// Arbitrary bytes in every field read: no panic, never past the clamp.
    #[test]
    fn arbitrary_fields_never_panic_or_pass_the_clamp(
        status in prop::sample::select(vec![200u16, 429, 503]),
        values in prop::collection::vec(any_value(), 7),
        max_secs in 1u64..100_000,
    ) {
        let names = [
            "retry-after", "ratelimit", "ratelimit-remaining", "ratelimit-reset",
            "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-reset-after",
        ];
        let mut map = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        let max = Duration::from_secs(max_secs);
        let learner = Learner::new().max_hold(max);
        if let Some(h) = learner.hold(StatusCode::from_u16(status).unwrap(), &map, now()) {
            prop_assert!(h.duration() <= max);
            prop_assert!(!h.duration().is_zero());
        }
    }

    /// An HTTP date at or before now asks for nothing, in every field that
    /// takes a time.
    #[test]
    fn past_dates_push_nothing(ago in 0u64..10_000_000) {
        let then = now() - Duration::from_secs(ago);
        let date = httpdate::fmt_http_date(then);
        let unix = then.duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        prop_assert_eq!(hold(429, &[("retry-after", &date)]), None);
        prop_assert_eq!(hold(200, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &unix)]), None);
    }
}

/// The documented clamp is one day, and a learner shows its settings.
#[test]
fn the_default_clamp_is_one_day_and_debug_shows_the_settings() {
    assert_eq!(Learner::DEFAULT_MAX_HOLD, Duration::from_secs(86_400));
    let learner = Learner::new()
        .max_hold(Duration::from_secs(5))
        .custom(|_, _| None);
    assert_eq!(
        format!("{learner:?}"),
        "Learner { max_hold: 5s, custom: true }"
    );
}
