//! `FreqLimitParams` from text: the compact form, its `Display`, and serde
//! (TOML and JSON), validated like the constructors.

use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::{FreqLimitParams, ParamsError, ParseParamsError};

const SEC: Duration = Duration::from_secs(1);

fn parse(text: &str) -> Result<FreqLimitParams, ParseParamsError> {
    text.parse()
}

#[test]
fn compact_forms() {
    let cases: &[(&str, FreqLimitParams)] = &[
        ("10/s", FreqLimitParams::per_second(10)),
        ("10/sec", FreqLimitParams::per_second(10)),
        ("10/second", FreqLimitParams::per_second(10)),
        ("10/1s", FreqLimitParams::per_second(10)),
        (
            "20/min burst 3",
            FreqLimitParams::per_minute(20).with_burst(3),
        ),
        (
            "20/minute burst=3",
            FreqLimitParams::per_minute(20).with_burst(3),
        ),
        (
            "20/m, burst 3",
            FreqLimitParams::per_minute(20).with_burst(3),
        ),
        (
            "  20 / Min  BURST  3 ",
            FreqLimitParams::per_minute(20).with_burst(3),
        ),
        ("100/h", FreqLimitParams::per_hour(100)),
        ("100/hours", FreqLimitParams::per_hour(100)),
        (
            "1/day",
            FreqLimitParams::new(1, Duration::from_secs(86_400), 1),
        ),
        ("5/10s", FreqLimitParams::new(5, 10 * SEC, 1)),
        (
            "1/500ms",
            FreqLimitParams::new(1, Duration::from_millis(500), 1),
        ),
        ("1/ms", FreqLimitParams::new(1, Duration::from_millis(1), 1)),
        ("3/1m 30s burst 2", FreqLimitParams::new(3, 90 * SEC, 2)),
        ("3/1h30m", FreqLimitParams::new(3, 5400 * SEC, 1)),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).as_ref(), Ok(want), "{text:?}");
    }
}

#[test]
fn compact_form_errors_name_the_problem() {
    use ParseParamsError::{Invalid, Number, Period, Syntax};
    let cases: &[(&str, ParseParamsError)] = &[
        ("", Syntax),
        ("20", Syntax),
        ("20 per minute", Syntax),
        ("/s", Syntax),
        ("20/", Syntax),
        ("20/ burst 3", Syntax),
        ("20/s burst", Syntax),
        ("x/s", Number("limit")),
        ("-1/s", Number("limit")),
        ("4294967296/s", Number("limit")),
        ("20/s burst x", Number("burst")),
        ("20/s burst -1", Number("burst")),
        ("0/s", Invalid(ParamsError::LimitZero)),
        ("1/0s", Invalid(ParamsError::PeriodZero)),
        ("1/s burst 0", Invalid(ParamsError::BurstZero)),
        ("2000000000/s", Invalid(ParamsError::IntervalTooShort)),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).as_ref(), Err(want), "{text:?}");
    }
    // A period that is neither a unit nor a duration: the parser says why.
    let err = parse("1/fortnight").unwrap_err();
    assert!(matches!(err, Period(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("period must be a unit"),
        "{err}"
    );
    // Validation errors read exactly like the constructors'.
    assert_eq!(
        parse("0/s").unwrap_err().to_string(),
        ParamsError::LimitZero.to_string()
    );
}

#[test]
fn display_is_the_compact_form() {
    assert_eq!(FreqLimitParams::per_second(10).to_string(), "10/1s");
    assert_eq!(
        FreqLimitParams::per_minute(20).with_burst(3).to_string(),
        "20/1m burst 3"
    );
    assert_eq!(
        FreqLimitParams::new(3, Duration::from_millis(1500), 1).to_string(),
        "3/1s 500ms"
    );
}

proptest! {
    /// Any valid params print as text that parses back to them exactly.
    #[test]
    fn display_round_trips(
        limit in 1_u32..=1_000_000,
        period_ns in 1_000_000_u64..=10_u64.pow(15),
        burst in 1_u32..=1_000,
    ) {
        let period = Duration::from_nanos(period_ns);
        if let Ok(params) = FreqLimitParams::try_new(limit, period, burst) {
            let text = params.to_string();
            prop_assert_eq!(parse(&text), Ok(params), "{}", text);
        }
    }

    /// Arbitrary text never panics the parser; what parses is valid params.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,40}") {
        if let Ok(params) = parse(&text) {
            prop_assert!(params.limit() >= 1 && params.burst() >= 1);
            prop_assert!(params.interval_nanos() >= 1);
        }
    }
}

#[cfg(feature = "serde")]
mod serde_config {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Config {
        limits: BTreeMap<String, FreqLimitParams>,
    }

    #[test]
    fn toml_tables_and_strings() {
        let config: Config = toml::from_str(
            r#"
            [limits]
            per_chat = { limit = 1, period = "1s" }
            per_group = { limit = 20, period = "1m", burst = 3 }
            seconds = { limit = 4, period = 2 }
            fraction = { limit = 4, period = 0.5 }
            api = "100/s burst 20"
            "#,
        )
        .unwrap();
        let limits = &config.limits;
        assert_eq!(limits["per_chat"], FreqLimitParams::per_second(1));
        assert_eq!(
            limits["per_group"],
            FreqLimitParams::per_minute(20).with_burst(3)
        );
        assert_eq!(limits["seconds"], FreqLimitParams::new(4, 2 * SEC, 1));
        assert_eq!(
            limits["fraction"],
            FreqLimitParams::new(4, Duration::from_millis(500), 1)
        );
        assert_eq!(
            limits["api"],
            FreqLimitParams::per_second(100).with_burst(20)
        );
    }

    #[test]
    fn json_round_trip() {
        let params = FreqLimitParams::per_minute(20).with_burst(3);
        let json = serde_json::to_string(&params).unwrap();
        assert_eq!(json, r#"{"limit":20,"period":"1m","burst":3}"#);
        let back: FreqLimitParams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, params);
    }

    /// Bad values are refused with the constructors' messages; typos and
    /// missing fields are named.
    #[test]
    fn bad_config_is_refused_clearly() {
        let err = |json: &str| {
            serde_json::from_str::<FreqLimitParams>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"limit":0,"period":"1s"}"#).contains("limit must be greater than 0"));
        assert!(err(r#"{"limit":1,"period":"0s"}"#).contains("period must be greater than 0"));
        assert!(err(r#"{"limit":1,"period":-1}"#).contains("period must be greater than 0"));
        assert!(
            err(r#"{"limit":1,"period":"1s","burst":0}"#).contains("burst must be greater than 0")
        );
        assert!(err(r#"{"limit":1,"period":"soon"}"#).contains("period must be a unit"));
        assert!(err(r#"{"limit":1,"period":"1s","brust":2}"#).contains("unknown field `brust`"));
        assert!(err(r#"{"period":"1s"}"#).contains("missing field `limit`"));
        assert!(err(r#"{"limit":1}"#).contains("missing field `period`"));
        assert!(err(r#"{"limit":1,"limit":2,"period":"1s"}"#).contains("duplicate field `limit`"));
        assert!(err(r#""0/s""#).contains("limit must be greater than 0"));
        assert!(err("[1, 2]").contains("a rate limit"));
    }
}
