//! How the sink finds its tickets again, written and read in one place: the incident's
//! marker (`sre-incident-<token>`: a Jira label, a hidden line in a GitHub issue body) and
//! the line that marks the sink's own GitHub comments. Pure.

use sre_sink::records::token;

/// What starts every marker.
const PREFIX: &str = "sre-incident-";
/// What wraps a marker in a GitHub issue body.
const LINE_OPEN: &str = "<!-- sre-incident: ";
const LINE_CLOSE: &str = " -->";

/// The line the sink adds to each of its GitHub comments, so two-way sync knows its own.
pub const COMMENT_MARKER: &str = "<!-- sre-integration -->";

/// The marker of an incident.
pub fn marker(incident_id: &str) -> String {
    format!("{PREFIX}{}", token(incident_id))
}

/// The incident token of a marker (`sre-incident-<token>`).
pub fn token_of(marker: &str) -> Option<&str> {
    marker.strip_prefix(PREFIX).filter(|t| !t.is_empty())
}

/// The hidden line carrying `marker` in a GitHub issue body.
pub fn line(marker: &str) -> String {
    format!("{LINE_OPEN}{marker}{LINE_CLOSE}")
}

/// The incident token of the marker line in a GitHub issue body.
pub fn token_in_body(body: &str) -> Option<&str> {
    let start = body.find(LINE_OPEN)? + LINE_OPEN.len();
    let rest = &body[start..];
    token_of(&rest[..rest.find(LINE_CLOSE)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_incident_wherever_it_is_written() {
        assert_eq!(marker("inc-42"), "sre-incident-inc-42");
        assert_eq!(token_of(&marker("inc-42")), Some("inc-42"));
        assert_eq!(token_of("sre-incident-"), None);
        assert_eq!(token_of("other-label"), None);
        let body = format!("text\n\n{}", line(&marker("inc-42")));
        assert_eq!(token_in_body(&body), Some("inc-42"));
        assert_eq!(token_in_body("no marker here"), None);
        assert_eq!(token_in_body("<!-- sre-incident: sre-incident- -->"), None);
        // An id that is no valid token is hashed, the same every time.
        assert_eq!(marker("inc 42"), marker("inc 42"));
        assert!(token_of(&marker("inc 42")).is_some_and(|t| t != "inc 42"));
    }
}
