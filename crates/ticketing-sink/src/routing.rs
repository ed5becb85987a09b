//! Which provider and project or repository an incident's ticket goes to: the first rule
//! whose every given field matches, else the default provider's project or repository.
//! Pure.

use serde::{Deserialize, Serialize};
use sre_contracts::domain::v1::IncidentCreated;

use crate::config::{Integration, Provider, Route};

/// Where a ticket lives. Kept with the ticket, so its updates go to the same place even
/// if the routes change meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The provider.
    pub provider: Provider,
    /// `default` or `routes[<n>]`, for logs.
    pub route: String,
    /// Jira project key or GitHub `owner/name`.
    pub project: String,
}

fn matches(route: &Route, incident: &IncidentCreated) -> bool {
    let m = &route.matches;
    m.service.as_ref().is_none_or(|s| *s == incident.service)
        && m.environment.as_ref().is_none_or(|e| *e == incident.environment)
        && m.team.as_ref().is_none_or(|t| *t == incident.team)
        && m.labels.iter().all(|(k, v)| incident.labels.get(k) == Some(v))
}

fn default_project(config: &Integration, provider: Provider) -> String {
    match provider {
        Provider::Jira => config.jira.as_ref().map(|j| j.project_key.clone()),
        Provider::Github => config.github.as_ref().map(|g| g.repo.clone()),
    }
    .unwrap_or_default()
}

/// The target of `incident` under `config`.
pub fn route(config: &Integration, incident: &IncidentCreated) -> Target {
    for (n, r) in config.routes.iter().enumerate() {
        if matches(r, incident) {
            let provider = r.provider.unwrap_or(config.default_provider);
            let project = match provider {
                Provider::Jira => r.project_key.clone(),
                Provider::Github => r.repo.clone(),
            }
            .unwrap_or_else(|| default_project(config, provider));
            return Target { provider, route: format!("routes[{n}]"), project };
        }
    }
    Target {
        provider: config.default_provider,
        route: "default".to_owned(),
        project: default_project(config, config.default_provider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_else_default() {
        let c: Integration = serde_norway::from_str(
            r#"
default_provider: jira
jira: {base_url: "https://x.atlassian.net", project_key: OPS, secret_ref: p/jira}
github: {repo: acme/incidents, secret_ref: p/gh}
routes:
  - match: {service: payments-api}
    project_key: PAY
  - match: {environment: staging}
    provider: github
"#,
        )
        .expect("config");
        let inc = |service: &str, env: &str| IncidentCreated {
            service: service.into(),
            environment: env.into(),
            ..Default::default()
        };
        assert_eq!(route(&c, &inc("payments-api", "staging")).project, "PAY");
        let t = route(&c, &inc("web", "staging"));
        assert_eq!((t.provider, t.project.as_str()), (Provider::Github, "acme/incidents"));
        let t = route(&c, &inc("web", "production"));
        assert_eq!((t.provider, t.project.as_str(), t.route.as_str()), (Provider::Jira, "OPS", "default"));
    }
}
