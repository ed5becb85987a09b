//! Which provider and route page an incident: the first rule whose every given field
//! matches, else the default provider with its default routing key or team. Pure.

use serde::{Deserialize, Serialize};
use sre_contracts::domain::v1::IncidentCreated;
use sre_sink::routing::{Matched, first_match};

use crate::config::{Integration, Route};
use crate::provider::Provider;

/// Where an incident pages. Kept with the page, so its acknowledge and resolve go to the
/// same place even if the routes change meanwhile. Holds secret *references*, never keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The provider.
    pub provider: Provider,
    /// `default` or `routes[<n>]`, for logs and metrics.
    pub route: String,
    /// PagerDuty: the secret reference of the routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_ref: Option<String>,
    /// Opsgenie and JSM: the responding team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// The target of `incident` under `config`.
pub fn route(config: &Integration, incident: &IncidentCreated) -> Target {
    let default_target = |provider: Provider, route: String| Target {
        provider,
        route,
        routing_key_ref: match provider {
            Provider::Pagerduty => config.pagerduty.as_ref().map(|p| p.routing_key_ref.as_str().to_owned()),
            Provider::Opsgenie | Provider::Jsm => None,
        },
        team: match provider {
            Provider::Pagerduty => None,
            Provider::Opsgenie => config.opsgenie.as_ref().and_then(|o| o.default_team.clone()),
            Provider::Jsm => config.jsm.as_ref().and_then(|j| j.default_team.clone()),
        },
    };
    let matched = first_match(&config.routes, |r: &Route| &r.matches, incident);
    let Matched::Route(_, r) = matched else { return default_target(config.default_provider, matched.name()) };
    let mut target = default_target(r.provider.unwrap_or(config.default_provider), matched.name());
    if let Some(key) = &r.routing_key_ref {
        target.routing_key_ref = Some(key.as_str().to_owned());
    }
    if let Some(team) = &r.team {
        target.team = Some(team.clone());
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Integration {
        let yaml = r#"
default_provider: pagerduty
pagerduty: {routing_key_ref: platform/pd-default}
opsgenie: {api_key_ref: platform/opsgenie, default_team: sre}
jsm: {api_key_ref: platform/jsm, default_team: sre-jsm}
routes:
  - match: {service: payments-api}
    routing_key_ref: platform/pd-payments
  - match: {team: data, environment: production}
    provider: opsgenie
    team: data-oncall
  - match: {labels: {cluster: edge-1}}
    provider: opsgenie
  - match: {service: search}
    provider: jsm
  - match: {service: checkout}
    provider: jsm
    team: checkout-oncall
"#;
        serde_norway::from_str(yaml).expect("config")
    }

    fn incident(service: &str, team: &str, env: &str, labels: &[(&str, &str)]) -> IncidentCreated {
        IncidentCreated {
            service: service.into(),
            team: team.into(),
            environment: env.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn first_match_wins_else_default() {
        let c = config();
        let t = route(&c, &incident("payments-api", "data", "production", &[]));
        assert_eq!(
            (t.provider, t.route.as_str(), t.routing_key_ref.as_deref()),
            (Provider::Pagerduty, "routes[0]", Some("platform/pd-payments"))
        );
        let t = route(&c, &incident("etl", "data", "production", &[]));
        assert_eq!((t.provider, t.team.as_deref()), (Provider::Opsgenie, Some("data-oncall")));
        let t = route(&c, &incident("etl", "data", "staging", &[("cluster", "edge-1")]));
        assert_eq!((t.provider, t.route.as_str(), t.team.as_deref()), (Provider::Opsgenie, "routes[2]", Some("sre")));
        let t = route(&c, &incident("search", "web", "staging", &[]));
        assert_eq!(
            (t.provider, t.route.as_str(), t.team.as_deref(), t.routing_key_ref.as_deref()),
            (Provider::Jsm, "routes[3]", Some("sre-jsm"), None),
            "JSM's default team, never a routing key"
        );
        let t = route(&c, &incident("checkout", "web", "staging", &[]));
        assert_eq!((t.provider, t.team.as_deref()), (Provider::Jsm, Some("checkout-oncall")));
        let t = route(&c, &incident("etl", "data", "staging", &[("cluster", "core-1")]));
        assert_eq!(
            (t.provider, t.route.as_str(), t.routing_key_ref.as_deref()),
            (Provider::Pagerduty, "default", Some("platform/pd-default"))
        );
    }
}
