//! One classification of failures for every upstream.

use std::time::Duration;

/// What kind of failure an upstream call had. Vendors map their responses to this; the
/// retry executor alone decides what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The upstream or the network failed; try again later (connect errors, 408, 425, 5xx).
    Transient,
    /// The upstream asked us to slow down (429, or a vendor's rate-limit signal).
    Throttled,
    /// The request itself is wrong; trying again cannot help (other 4xx).
    Permanent,
    /// Credentials are missing, wrong or lack permission (401, 403 without rate limit).
    Auth,
}

impl ErrorClass {
    /// Whether another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Throttled)
    }

    /// Whether the failure says the upstream is unhealthy (counts toward opening the
    /// circuit). A 429 or a 400 is an answer from a working upstream.
    pub fn counts_against_upstream(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Auth => "auth",
        }
    }
}

/// An error that knows its class and any wait hint the upstream gave.
pub trait Retryable {
    /// The class of this failure.
    fn class(&self) -> ErrorClass;
    /// How long the upstream asked us to wait, when it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The default classification of an HTTP status: 408, 425, 5xx transient; 429 throttled;
/// 401 and 403 auth; other 4xx permanent. Anything else (1xx, 3xx) is unexpected here and
/// permanent.
pub fn classify_status(status: http::StatusCode) -> ErrorClass {
    match status.as_u16() {
        408 | 425 => ErrorClass::Transient,
        429 => ErrorClass::Throttled,
        401 | 403 => ErrorClass::Auth,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            (400, ErrorClass::Permanent),
            (401, ErrorClass::Auth),
            (403, ErrorClass::Auth),
            (404, ErrorClass::Permanent),
            (408, ErrorClass::Transient),
            (409, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
            (425, ErrorClass::Transient),
            (429, ErrorClass::Throttled),
            (500, ErrorClass::Transient),
            (502, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
            (301, ErrorClass::Permanent),
        ];
        for (code, want) in cases {
            let status = http::StatusCode::from_u16(code).expect("valid status");
            assert_eq!(classify_status(status), want, "{code}");
        }
        assert!(ErrorClass::Throttled.is_retryable());
        assert!(!ErrorClass::Auth.is_retryable());
        assert!(!ErrorClass::Throttled.counts_against_upstream());
    }
}
