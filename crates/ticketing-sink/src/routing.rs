//! Which provider and project or repository an incident's ticket goes to: the first rule
//! whose every given field matches, else the default provider's project or repository.
//! Pure.

use serde::{Deserialize, Serialize};
use sre_contracts::domain::v1::IncidentCreated;
use sre_sink::routing::{Matched, first_match};

use crate::config::{Integration, Route};
use crate::provider::Provider;

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

fn default_project(config: &Integration, provider: Provider) -> String {
    match provider {
        Provider::Jira => config.jira.as_ref().map(|j| j.project_key.clone()),
        Provider::Github => config.github.as_ref().map(|g| g.repo.clone()),
    }
    .unwrap_or_default()
}

/// The target of `incident` under `config`.
pub fn route(config: &Integration, incident: &IncidentCreated) -> Target {
    let matched = first_match(&config.routes, |r: &Route| &r.matches, incident);
    let (provider, project) = match matched {
        Matched::Route(_, r) => {
            let provider = r.provider.unwrap_or(config.default_provider);
            let project = match provider {
                Provider::Jira => r.project_key.clone(),
                Provider::Github => r.repo.clone(),
            };
            (provider, project)
        }
        Matched::Default => (config.default_provider, None),
    };
    Target { provider, route: matched.name(), project: project.unwrap_or_else(|| default_project(config, provider)) }
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
