//! Templates over an incident (a ticket's title and body, a page's client URL, class and
//! images): `{name}` placeholders, `{label.NAME}` for one of the incident's labels (empty
//! when it has none), `{{` and `}}` for literal braces. A template is compiled when the
//! configuration is validated, so an unknown placeholder (`{titel}`) is refused by
//! `--check-config` and at start, never when an incident arrives. Pure.

use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{IncidentCreated, Severity};

/// A value a template may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `{incident_id}`.
    IncidentId,
    /// `{title}`.
    Title,
    /// `{description}`.
    Description,
    /// `{severity}` (`critical`…).
    Severity,
    /// `{service}`.
    Service,
    /// `{environment}`.
    Environment,
    /// `{team}`.
    Team,
    /// `{runbook_url}`.
    RunbookUrl,
    /// `{url}`.
    Url,
    /// `{labels}` (`k=v, …`).
    Labels,
    /// `{label.NAME}`: the label `NAME`'s value.
    Label(String),
}

impl Field {
    /// Every field with its placeholder name.
    pub const ALL: [(&'static str, Field); 10] = [
        ("incident_id", Field::IncidentId),
        ("title", Field::Title),
        ("description", Field::Description),
        ("severity", Field::Severity),
        ("service", Field::Service),
        ("environment", Field::Environment),
        ("team", Field::Team),
        ("runbook_url", Field::RunbookUrl),
        ("url", Field::Url),
        ("labels", Field::Labels),
    ];

    fn named(name: &str) -> Option<Field> {
        if let Some(label) = name.strip_prefix("label.").filter(|l| !l.is_empty()) {
            return Some(Field::Label(label.to_owned()));
        }
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| f.clone())
    }

    fn value<'a>(&self, incident: &'a IncidentCreated) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            Field::IncidentId => Borrowed(&incident.incident_id),
            Field::Title => Borrowed(&incident.title),
            Field::Description => Borrowed(&incident.description),
            Field::Severity => {
                Borrowed(Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified).config_name())
            }
            Field::Service => Borrowed(&incident.service),
            Field::Environment => Borrowed(&incident.environment),
            Field::Team => Borrowed(&incident.team),
            Field::RunbookUrl => Borrowed(&incident.runbook_url),
            Field::Url => Borrowed(&incident.url),
            Field::Labels => {
                Owned(incident.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
            }
            Field::Label(name) => incident.labels.get(name).map_or(Borrowed(""), |v| Borrowed(v.as_str())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles `text`: `Err` names the first unknown placeholder or an unpaired brace.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err("`}` without `{` (write `}}` for a brace)".to_owned());
            }
            let Some(end) = tail.find('}') else { return Err("`{` is not closed".to_owned()) };
            let name = &tail[1..end];
            let field = Field::named(name).ok_or_else(|| {
                let known: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown placeholder `{{{name}}}`; known: {}, label.<name>", known.join(", "))
            })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Field(field));
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// Its text when it names no field (`a{{b` is the literal `a{b`), else `None`.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(_) => return None,
            }
        }
        Some(out)
    }

    /// The literal text it starts with (before any placeholder).
    pub fn prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// The template over `incident`.
    pub fn render(&self, incident: &IncidentCreated) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&f.value(incident)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_refuses_what_it_cannot_render() {
        let incident = IncidentCreated {
            incident_id: "inc-7".into(),
            title: "disk full".into(),
            severity: Severity::High as i32,
            labels: [("cluster".to_owned(), "eu-1".to_owned())].into(),
            ..Default::default()
        };
        let t = Template::parse("[{severity}] {title} ({incident_id}) {{x}} {labels}").expect("compiles");
        assert_eq!(t.render(&incident), "[high] disk full (inc-7) {x} cluster=eu-1");
        assert_eq!(Template::parse("plain").expect("text").render(&incident), "plain");
        assert_eq!(Template::parse("").expect("empty").render(&incident), "");
        assert!(Template::parse("{titel}").expect_err("unknown").contains("`{titel}`"));
        assert!(Template::parse("{title").is_err());
        assert!(Template::parse("a } b").is_err());
        let t =
            Template::parse("https://grafana.example/d/x?var-cluster={label.cluster}&n={label.none}").expect("labels");
        assert_eq!(t.render(&incident), "https://grafana.example/d/x?var-cluster=eu-1&n=");
        assert_eq!(t.prefix(), "https://grafana.example/d/x?var-cluster=");
        assert!(Template::parse("{label.}").is_err());
        // Plain text (braces escaped) is told from a template by what it names, not by a brace.
        assert_eq!(Template::parse("sre-incident").expect("text").literal().as_deref(), Some("sre-incident"));
        assert_eq!(Template::parse("a{{b}}").expect("text").literal().as_deref(), Some("a{b}"));
        assert_eq!(Template::parse("team-{label.team}").expect("label").literal(), None);
    }
}
