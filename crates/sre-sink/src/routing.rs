//! Route matching: which of a sink's routing rules an incident falls under. The rules'
//! targets (a Jira project, a PagerDuty routing key) are the sink's; the match is shared,
//! so `routes[].match` means the same in every sink. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use sre_contracts::domain::v1::IncidentCreated;

/// `routes[].match`: every field given must equal the incident's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteMatch {
    /// Incident service.
    pub service: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Owning team.
    pub team: Option<String>,
    /// Labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
}

impl RouteMatch {
    /// Whether `incident` matches every field given.
    pub fn matches(&self, incident: &IncidentCreated) -> bool {
        self.service.as_ref().is_none_or(|s| *s == incident.service)
            && self.environment.as_ref().is_none_or(|e| *e == incident.environment)
            && self.team.as_ref().is_none_or(|t| *t == incident.team)
            && self.labels.iter().all(|(k, v)| incident.labels.get(k) == Some(v))
    }
}

/// Where a route came from: `routes[<n>]`, or `default` when none matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched<'a, R> {
    /// The first rule that matched, and its index.
    Route(usize, &'a R),
    /// None matched.
    Default,
}

impl<R> Matched<'_, R> {
    /// `routes[<n>]` or `default`, as logs and records name it.
    pub fn name(&self) -> String {
        match self {
            Matched::Route(n, _) => format!("routes[{n}]"),
            Matched::Default => "default".to_owned(),
        }
    }
}

/// The index of the rule a name given by [`Matched::name`] stands for (`routes[3]` → 3);
/// `None` for `default` or anything else.
pub fn route_index(name: &str) -> Option<usize> {
    name.strip_prefix("routes[")?.strip_suffix(']')?.parse().ok()
}

/// The first of `routes` whose match (read by `matcher`) `incident` meets.
pub fn first_match<'a, R>(
    routes: &'a [R],
    matcher: impl Fn(&R) -> &RouteMatch,
    incident: &IncidentCreated,
) -> Matched<'a, R> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| matcher(r).matches(incident))
        .map_or(Matched::Default, |(n, r)| Matched::Route(n, r))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_given_field_must_match_and_the_first_rule_wins() {
        let rules: Vec<RouteMatch> = serde_norway::from_str(
            r#"
- {service: payments-api}
- {team: data, environment: production}
- {labels: {cluster: edge-1}}
- {}
"#,
        )
        .expect("rules");
        let at = |i: &IncidentCreated| first_match(&rules, |r| r, i).name();
        assert_eq!(at(&incident("payments-api", "data", "production", &[])), "routes[0]");
        assert_eq!(at(&incident("etl", "data", "production", &[])), "routes[1]");
        assert_eq!(at(&incident("etl", "data", "staging", &[("cluster", "edge-1")])), "routes[2]");
        assert_eq!(at(&incident("etl", "data", "staging", &[("cluster", "core-1")])), "routes[3]", "an empty match");
        for (name, index) in [("routes[0]", Some(0)), ("routes[12]", Some(12)), ("default", None), ("routes[x]", None)]
        {
            assert_eq!(route_index(name), index, "{name}");
        }
        let named: Matched<'_, ()> = Matched::Route(7, &());
        assert_eq!(route_index(&named.name()), Some(7), "the names it reads are the ones it gives");
        assert_eq!(first_match(&rules[..3], |r| r, &incident("etl", "", "", &[])).name(), "default");
        let typo: Result<RouteMatch, _> = serde_norway::from_str("{servce: x}");
        assert!(typo.is_err(), "a misspelt key is refused");
    }
}
