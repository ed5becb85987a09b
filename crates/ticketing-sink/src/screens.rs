//! Checked before the first incident: every target the configuration names (the default
//! project or repository and each route's) against the vendor. Jira: its create metadata,
//! so a field that is not on the create screen or a required field without a value is
//! reported. GitHub: the token's push access, without which GitHub silently drops labels,
//! assignees and the milestone. Reported at start (readiness) and by `--check-config
//! --online`, naming the route and the field, instead of a 400 and a dead letter (or a
//! ticket missing its labels) at the first incident.

use crate::config::Valid;
use crate::provider::{Provider, Tracker, VendorError};

/// One target: where its route sends tickets and what it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `ticketing_integration.jira` or `ticketing_integration.routes[n]`.
    pub key: String,
    /// Project key.
    pub project: String,
    /// Issue type, when the route names its own.
    pub issue_type: Option<String>,
    /// Field ids it sets besides the sink's own.
    pub fields: Vec<String>,
}

/// Every target of `provider` in `valid`, the default first. Pure.
pub fn targets(valid: &Valid, provider: Provider) -> Vec<Target> {
    let i = &valid.config.ticketing_integration;
    if provider == Provider::Github {
        let Some(g) = &i.github else { return Vec::new() };
        let mut targets = vec![Target {
            key: "ticketing_integration.github".to_owned(),
            project: g.repo.clone(),
            ..Target::default()
        }];
        for (n, r) in i.routes.iter().enumerate() {
            if r.provider.unwrap_or(i.default_provider) == Provider::Github
                && let Some(repo) = &r.repo
                && !targets.iter().any(|t| &t.project == repo)
            {
                targets.push(Target {
                    key: format!("ticketing_integration.routes[{n}]"),
                    project: repo.clone(),
                    ..Target::default()
                });
            }
        }
        return targets;
    }
    let Some(jira) = &i.jira else { return Vec::new() };
    let mut targets = Vec::new();
    if let Some(d) = valid.defaults.get(&Provider::Jira) {
        targets.push(Target {
            key: "ticketing_integration.jira".to_owned(),
            project: jira.project_key.clone(),
            issue_type: None,
            fields: d.jira_field_ids(),
        });
    }
    for (n, (route, compiled)) in i.routes.iter().zip(&valid.routes).enumerate() {
        if route.provider.unwrap_or(i.default_provider) != Provider::Jira {
            continue;
        }
        targets.push(Target {
            key: format!("ticketing_integration.routes[{n}]"),
            project: route.project_key.clone().unwrap_or_else(|| jira.project_key.clone()),
            issue_type: compiled.issue_type().map(str::to_owned),
            fields: compiled.jira_field_ids(),
        });
    }
    targets
}

/// The problems of every target of `provider` (whose client is `tracker`), each naming its
/// route: `<key>: <problem>`.
pub async fn problems(valid: &Valid, provider: Provider, tracker: &dyn Tracker) -> Result<Vec<String>, VendorError> {
    let mut out = Vec::new();
    for t in targets(valid, provider) {
        for p in tracker.check_fields(&t.project, t.issue_type.as_deref(), &t.fields).await? {
            out.push(format!("{}: {p}", t.key));
        }
    }
    Ok(out)
}
