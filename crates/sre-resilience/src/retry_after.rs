//! Wait hints sent by upstreams: `Retry-After` (delta seconds or an HTTP date) and
//! reset instants as Unix epoch seconds (GitHub's `x-ratelimit-reset`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest wait an upstream may ask for; longer hints are capped (a broken or hostile
/// header must not park work for days).
pub const MAX_HINT: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value: delta seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`). A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_HINT));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT))
}

/// Parses a reset instant given as Unix epoch seconds.
pub fn parse_reset_epoch(value: &str, now: SystemTime) -> Option<Duration> {
    let secs = value.trim().parse::<u64>().ok()?;
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT))
}

/// Reads `Retry-After` from response headers.
pub fn from_headers(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_forms() {
        // 1445412480 = Wed, 21 Oct 2015 07:28:00 GMT
        let now = at(1_445_412_480 - 90);
        let cases: &[(&str, Option<u64>)] = &[
            ("120", Some(120)),
            (" 7 ", Some(7)),
            ("0", Some(0)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(90)),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            ("999999999", Some(MAX_HINT.as_secs())),
            ("-1", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now).map(|d| d.as_secs()), *want, "Retry-After: {value:?}");
        }
    }

    #[test]
    fn reset_epoch() {
        let now = at(1_700_000_000);
        assert_eq!(parse_reset_epoch("1700000042", now), Some(Duration::from_secs(42)));
        assert_eq!(parse_reset_epoch("1600000000", now), Some(Duration::ZERO));
        assert_eq!(parse_reset_epoch("x", now), None);
    }

    #[test]
    fn from_response_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("3"));
        assert_eq!(from_headers(&h, at(0)), Some(Duration::from_secs(3)));
        assert_eq!(from_headers(&http::HeaderMap::new(), at(0)), None);
    }
}
