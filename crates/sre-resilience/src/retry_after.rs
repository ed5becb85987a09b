//! Wait hints sent by upstreams: `Retry-After` (delta seconds or an HTTP date),
//! reset instants as Unix epoch seconds (GitHub's `x-ratelimit-reset`) or ISO 8601 (Jira
//! Cloud's `X-RateLimit-Reset`), and the near-limit signals that ask a client to slow down
//! before it is refused ([`slowdown`]).

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

/// How long every sender of a credential pauses when the vendor says it is *near* its
/// limit (Jira Cloud's `X-RateLimit-NearLimit: true`, less than a fifth of the budget
/// left) without saying until when: long enough for a burst budget to refill a little.
pub const NEAR_LIMIT_PAUSE: Duration = Duration::from_secs(2);

/// Parses a reset instant given as ISO 8601 (`2026-12-07T09:30Z`, Jira Cloud).
pub fn parse_reset_iso(value: &str, now: SystemTime) -> Option<Duration> {
    let at: jiff::Timestamp = value.trim().parse().ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT))
}

/// Whether a header says yes (`true`, any case).
fn says_true(headers: &http::HeaderMap, name: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// How long every sender of the credential should pause after this answer, whatever its
/// status: `Retry-After` on a 429, 503 or 403 (GitHub's secondary limit); the reset time once `X-RateLimit-Remaining` is
/// 0 (GitHub's epoch seconds, Jira's ISO 8601); [`NEAR_LIMIT_PAUSE`] when the vendor says
/// the limit is near (`X-RateLimit-NearLimit`, `X-Beta-RateLimit-NearLimit`). `None`:
/// go on at the configured rate; also for Jira's per-issue write limit
/// (`RateLimit-Reason: jira-per-issue-on-write`), which holds one ticket back, not the
/// account. Capped at [`MAX_HINT`].
pub fn slowdown(status: http::StatusCode, headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    // GitHub's secondary limit is a 403 with `retry-after`.
    let refused =
        [http::StatusCode::TOO_MANY_REQUESTS, http::StatusCode::SERVICE_UNAVAILABLE, http::StatusCode::FORBIDDEN]
            .contains(&status);
    // Jira's per-issue write limit is about one ticket, not the account: the sink spaces
    // writes to a ticket itself, and every other ticket goes on.
    let reason = headers.get("ratelimit-reason").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if reason.contains("per-issue") {
        return None;
    }
    if refused && let Some(wait) = from_headers(headers, now) {
        return Some(wait);
    }
    let remaining = headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::trim);
    if remaining == Some("0") {
        let reset = headers.get("x-ratelimit-reset").and_then(|v| v.to_str().ok());
        if let Some(wait) = reset.and_then(|r| parse_reset_epoch(r, now).or_else(|| parse_reset_iso(r, now))) {
            return Some(wait);
        }
    }
    if says_true(headers, "x-ratelimit-nearlimit") || says_true(headers, "x-beta-ratelimit-nearlimit") {
        return Some(NEAR_LIMIT_PAUSE);
    }
    None
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

    #[test]
    fn slowdown_reads_every_vendors_signal() {
        let now = at(1_700_000_000);
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, http::HeaderValue::from_static(v));
            }
            m
        };
        let s = |n: u16| http::StatusCode::from_u16(n).expect("status");
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(u16, Headers, Option<u64>)] = &[
            // PagerDuty, Jira, Opsgenie: 429 with Retry-After.
            (429, &[("retry-after", "20")], Some(20)),
            (503, &[("retry-after", "5")], Some(5)),
            (403, &[("retry-after", "60")], Some(60)),
            // A Retry-After on a success is no refusal.
            (200, &[("retry-after", "20")], None),
            (429, &[], None),
            // Jira's per-issue write limit holds one ticket back, not the account.
            (429, &[("retry-after", "5"), ("ratelimit-reason", "jira-per-issue-on-write")], None),
            (429, &[("retry-after", "5"), ("ratelimit-reason", "jira-burst-based")], Some(5)),
            // GitHub: the budget spent, until the reset (epoch seconds), on any status.
            (403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000042")], Some(42)),
            (201, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1700000010")], Some(10)),
            (201, &[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", "1700000010")], None),
            // Jira Cloud: the reset as ISO 8601 (1700000100 = 2023-11-14T22:15:00Z).
            (429, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "2023-11-14T22:15Z")], Some(100)),
            // Near the limit: a short pause for everyone.
            (200, &[("x-ratelimit-nearlimit", "true")], Some(NEAR_LIMIT_PAUSE.as_secs())),
            (200, &[("x-beta-ratelimit-nearlimit", "TRUE")], Some(NEAR_LIMIT_PAUSE.as_secs())),
            (200, &[("x-beta-ratelimit-nearlimit", "false")], None),
            (200, &[], None),
        ];
        for (status, headers, want) in cases {
            assert_eq!(slowdown(s(*status), &h(headers), now).map(|d| d.as_secs()), *want, "{status} {headers:?}");
        }
    }
}
