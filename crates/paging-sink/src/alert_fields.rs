//! Opsgenie and JSM alerts the way teams configure them, per route and by default:
//! responders (teams, users, escalations, schedules), extra tags, extra details, the
//! priority per severity and the entity, as the Alert API takes them. Tags, details and
//! the entity are templates over the incident, compiled when the configuration is
//! validated. Pure: configuration in, the request's fields out.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_sink::template::Template;

/// Responders per alert (Opsgenie's limit).
pub const RESPONDERS_MAX: usize = 50;
/// The entity's limit in characters.
pub const ENTITY_MAX: usize = 512;

/// Who a responder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponderKind {
    /// A team, by `name` or `id`.
    Team,
    /// A user, by `username` (their e-mail) or `id`.
    User,
    /// An escalation, by `name` or `id`.
    Escalation,
    /// A schedule, by `name` or `id`.
    Schedule,
}

/// One responder as configured (and as the Alert API takes it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responder {
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: ResponderKind,
    /// Team, escalation or schedule name.
    #[serde(default)]
    pub name: Option<String>,
    /// A user's username (e-mail).
    #[serde(default)]
    pub username: Option<String>,
    /// Its id.
    #[serde(default)]
    pub id: Option<String>,
}

/// What a route (or the provider's section) sets on its alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertConfig {
    /// Responders; a route's replace the defaults'.
    pub responders: Vec<Responder>,
    /// Tags added to the sink's (`severity:…` and the incident's labels); templates.
    pub tags: Vec<String>,
    /// Details added to the sink's; values are templates.
    pub details: BTreeMap<String, String>,
    /// Priority (`P1`…`P5`) per severity name, over critical P1 … info P5.
    pub priorities: BTreeMap<String, String>,
    /// The entity (default: the service); a template.
    pub entity: Option<String>,
}

/// [`AlertConfig`] compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    responders: Vec<Responder>,
    tags: Vec<Template>,
    details: Vec<(String, Template)>,
    priorities: BTreeMap<Severity, String>,
    entity: Option<Template>,
}

/// Compiles `config` at key path `at`; a responder without its name, a priority that is
/// not P1–P5 or not for a severity, or a template that does not compile is refused there.
pub fn compile(config: &AlertConfig, at: &str) -> Result<Compiled, (String, String)> {
    for (n, r) in config.responders.iter().enumerate() {
        let named = match r.kind {
            ResponderKind::User => r.username.is_some() || r.id.is_some(),
            _ => r.name.is_some() || r.id.is_some(),
        };
        if !named {
            let want = if r.kind == ResponderKind::User { "username or id" } else { "name or id" };
            return Err((format!("{at}.responders[{n}]"), format!("a {:?} responder needs its {want}", r.kind)));
        }
    }
    if config.responders.len() > RESPONDERS_MAX {
        return Err((format!("{at}.responders"), format!("Opsgenie takes at most {RESPONDERS_MAX} responders")));
    }
    let mut priorities = BTreeMap::new();
    for (sev, p) in &config.priorities {
        let key = format!("{at}.priorities.{sev}");
        let severity = Severity::from_config_name(sev)
            .map_err(|_| (key.clone(), "not a severity (critical, high, medium, low, info)".to_owned()))?;
        if !["P1", "P2", "P3", "P4", "P5"].contains(&p.as_str()) {
            return Err((key, format!("`{p}`: Opsgenie's priorities are P1 to P5")));
        }
        priorities.insert(severity, p.clone());
    }
    let tpl = |key: String, text: &str| Template::parse(text).map_err(|reason| (key, reason));
    Ok(Compiled {
        responders: config.responders.clone(),
        tags: config
            .tags
            .iter()
            .enumerate()
            .map(|(n, t)| tpl(format!("{at}.tags[{n}]"), t))
            .collect::<Result<_, _>>()?,
        details: config
            .details
            .iter()
            .map(|(k, v)| Ok((k.clone(), tpl(format!("{at}.details.{k}"), v)?)))
            .collect::<Result<_, (String, String)>>()?,
        priorities,
        entity: config.entity.as_deref().map(|e| tpl(format!("{at}.entity"), e)).transpose()?,
    })
}

/// A route's over the provider's: the route's responders and entity when it sets them,
/// tags and details of both (the route's details win), priorities merged.
pub fn over(defaults: &Compiled, route: &Compiled) -> Compiled {
    let mut details = defaults.details.clone();
    for (k, v) in &route.details {
        details.retain(|(d, _)| d != k);
        details.push((k.clone(), v.clone()));
    }
    let mut priorities = defaults.priorities.clone();
    priorities.extend(route.priorities.clone());
    Compiled {
        responders: if route.responders.is_empty() { defaults.responders.clone() } else { route.responders.clone() },
        tags: defaults.tags.iter().chain(&route.tags).cloned().collect(),
        details,
        priorities,
        entity: route.entity.clone().or_else(|| defaults.entity.clone()),
    }
}

/// What the compiled fields add to an alert for one incident.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// Responders as the Alert API takes them (empty: the team the route names, if any).
    pub responders: Vec<Value>,
    /// Tags to add.
    pub tags: Vec<String>,
    /// Details to add.
    pub details: Vec<(String, String)>,
    /// The priority, when the map names one for the severity.
    pub priority: Option<String>,
    /// The entity, when configured (non-empty once rendered).
    pub entity: Option<String>,
}

impl Compiled {
    /// The fields for `incident`.
    pub fn render(&self, incident: &IncidentCreated) -> Rendered {
        let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
        let responders = self
            .responders
            .iter()
            .map(|r| {
                let kind = match r.kind {
                    ResponderKind::Team => "team",
                    ResponderKind::User => "user",
                    ResponderKind::Escalation => "escalation",
                    ResponderKind::Schedule => "schedule",
                };
                let mut v = json!({"type": kind});
                for (key, value) in [("id", &r.id), ("name", &r.name), ("username", &r.username)] {
                    if let Some(value) = value {
                        v[key] = json!(value);
                    }
                }
                v
            })
            .collect();
        Rendered {
            responders,
            tags: self.tags.iter().map(|t| t.render(incident)).filter(|t| !t.trim().is_empty()).collect(),
            details: self
                .details
                .iter()
                .map(|(k, t)| (k.clone(), t.render(incident)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            priority: self.priorities.get(&severity).cloned(),
            entity: self.entity.as_ref().map(|t| t.render(incident)).filter(|e| !e.trim().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertConfig {
        AlertConfig {
            responders: vec![Responder {
                kind: ResponderKind::Team,
                name: Some("sre".into()),
                username: None,
                id: None,
            }],
            tags: vec!["service:{service}".into()],
            details: [("dashboard".to_owned(), "https://grafana/d/x?c={label.cluster}".to_owned())].into(),
            priorities: [("high".to_owned(), "P1".to_owned())].into(),
            entity: Some("{label.cluster}/{service}".into()),
        }
    }

    fn incident(severity: Severity) -> IncidentCreated {
        IncidentCreated {
            service: "checkout-api".into(),
            severity: severity as i32,
            labels: [("cluster".to_owned(), "eu-1".to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_route_replaces_responders_and_entity_and_adds_tags_and_details() {
        let defaults = compile(&config(), "paging_integration.opsgenie").expect("defaults");
        let route = AlertConfig {
            responders: vec![
                Responder { kind: ResponderKind::User, name: None, username: Some("ada@example.com".into()), id: None },
                Responder {
                    kind: ResponderKind::Schedule,
                    name: Some("payments-primary".into()),
                    username: None,
                    id: None,
                },
            ],
            tags: vec!["payments".into()],
            details: [("dashboard".to_owned(), "https://grafana/d/pay".to_owned())].into(),
            priorities: [("medium".to_owned(), "P2".to_owned())].into(),
            entity: None,
        };
        let merged = over(&defaults, &compile(&route, "paging_integration.routes[0]").expect("route"));
        let r = merged.render(&incident(Severity::Medium));
        assert_eq!(
            r.responders,
            [
                json!({"type": "user", "username": "ada@example.com"}),
                json!({"type": "schedule", "name": "payments-primary"})
            ]
        );
        assert_eq!(r.tags, ["service:checkout-api", "payments"]);
        assert_eq!(r.details, [("dashboard".to_owned(), "https://grafana/d/pay".to_owned())]);
        assert_eq!(r.priority.as_deref(), Some("P2"));
        assert_eq!(r.entity.as_deref(), Some("eu-1/checkout-api"));
        assert_eq!(merged.render(&incident(Severity::High)).priority.as_deref(), Some("P1"));
        assert_eq!(merged.render(&incident(Severity::Low)).priority, None, "the default map then");
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        type Edit<'a> = &'a dyn Fn(&mut AlertConfig);
        let cases: [(Edit<'_>, &str); 4] = [
            (&|c| c.responders[0].name = None, "x.responders[0]"),
            (&|c| drop(c.priorities.insert("high".into(), "urgent".into())), "x.priorities.high"),
            (&|c| drop(c.priorities.insert("sev1".into(), "P1".into())), "x.priorities.sev1"),
            (&|c| c.entity = Some("{servce}".into()), "x.entity"),
        ];
        for (edit, key) in cases {
            let mut c = config();
            edit(&mut c);
            assert_eq!(compile(&c, "x").expect_err("refused").0, key);
        }
    }
}
