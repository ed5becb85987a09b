//! Title and body templates over an incident: `{name}` placeholders, `{{` and `}}` for
//! literal braces. Unknown placeholders are refused when the configuration loads, not when
//! an incident arrives. Pure.

use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{IncidentCreated, Severity};

/// The placeholders a template may use.
pub const NAMES: &[&str] = &[
    "incident_id",
    "title",
    "description",
    "severity",
    "service",
    "environment",
    "team",
    "runbook_url",
    "url",
    "labels",
];

/// Checks a template: `Err` names the first unknown placeholder or an unclosed brace.
pub fn check(template: &str) -> Result<(), String> {
    render_with(template, |name| NAMES.contains(&name).then(String::new)).map(|_| ())
}

/// Renders `template` over `incident`.
pub fn render(template: &str, incident: &IncidentCreated) -> String {
    render_with(template, |name| Some(value(incident, name))).unwrap_or_else(|_| template.to_owned())
}

fn value(incident: &IncidentCreated, name: &str) -> String {
    match name {
        "incident_id" => incident.incident_id.clone(),
        "title" => incident.title.clone(),
        "description" => incident.description.clone(),
        "severity" => Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified).config_name().to_owned(),
        "service" => incident.service.clone(),
        "environment" => incident.environment.clone(),
        "team" => incident.team.clone(),
        "runbook_url" => incident.runbook_url.clone(),
        "url" => incident.url.clone(),
        "labels" => incident.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

fn render_with(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("`}` without `{` (write `}}` for a brace)".to_owned());
        }
        let Some(end) = tail.find('}') else { return Err("`{` is not closed".to_owned()) };
        let name = &tail[1..end];
        out.push_str(
            &lookup(name).ok_or_else(|| format!("unknown placeholder `{{{name}}}`; known: {}", NAMES.join(", ")))?,
        );
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_checks() {
        let incident = IncidentCreated {
            incident_id: "inc-7".into(),
            title: "disk full".into(),
            severity: Severity::High as i32,
            labels: [("cluster".to_owned(), "eu-1".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(
            render("[{severity}] {title} ({incident_id}) {{x}} {labels}", &incident),
            "[high] disk full (inc-7) {x} cluster=eu-1"
        );
        assert!(check("[{severity}] {title}").is_ok());
        assert!(check("{titel}").expect_err("unknown").contains("titel"));
        assert!(check("{title").is_err());
        assert!(check("a } b").is_err());
    }
}
