//! Severity ordering and its configuration names.

use crate::domain::v1::Severity;

/// The configuration name of a severity could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseSeverityError(pub String);

impl std::fmt::Display for ParseSeverityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown severity `{}`, expected one of critical, high, medium, low, info", self.0)
    }
}

impl std::error::Error for ParseSeverityError {}

/// Severity helpers beyond the generated enum.
pub trait SeverityExt: Sized {
    /// Rank where higher is more severe; unspecified ranks lowest.
    fn rank(self) -> u8;
    /// True when `self` is as severe as `threshold` or more.
    fn at_least(self, threshold: Self) -> bool {
        self.rank() >= threshold.rank()
    }
    /// The lower-case name used in configuration files (`critical`, `high`, ...).
    fn config_name(self) -> &'static str;
    /// Reads a configuration name (case-insensitive).
    fn from_config_name(name: &str) -> Result<Self, ParseSeverityError>;
}

impl SeverityExt for Severity {
    fn rank(self) -> u8 {
        match self {
            Severity::Critical => 5,
            Severity::High => 4,
            Severity::Medium => 3,
            Severity::Low => 2,
            Severity::Info => 1,
            Severity::Unspecified => 0,
        }
    }

    fn config_name(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
            Severity::Unspecified => "unspecified",
        }
    }

    fn from_config_name(name: &str) -> Result<Self, ParseSeverityError> {
        match name.to_ascii_lowercase().as_str() {
            "critical" => Ok(Severity::Critical),
            "high" => Ok(Severity::High),
            "medium" => Ok(Severity::Medium),
            "low" => Ok(Severity::Low),
            "info" => Ok(Severity::Info),
            _ => Err(ParseSeverityError(name.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_puts_critical_first_and_unspecified_last() {
        let ordered = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Info,
            Severity::Unspecified,
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(a.at_least(*b), i <= j, "{a:?} at_least {b:?}");
            }
        }
    }

    #[test]
    fn config_names_round_trip() {
        for s in [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Info] {
            assert_eq!(Severity::from_config_name(s.config_name()), Ok(s));
        }
        assert_eq!(Severity::from_config_name("HIGH"), Ok(Severity::High));
        let err = Severity::from_config_name("urgent").unwrap_err();
        assert!(err.to_string().contains("urgent"));
    }
}
