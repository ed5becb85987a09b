//! What a ticket carries beyond its title and body, as teams configure it per route and by
//! default: Jira's issue type, components, assignee, labels and typed custom fields;
//! GitHub's assignees, milestone and labels. Values are templates over the incident
//! (`{service}`, `{label.team}`…), compiled when the configuration is validated.
//!
//! Who owns a field after the ticket exists: every field here is `create_only` (set when
//! the ticket is created, never written again: a person's later edit stands) unless it is
//! named in `sync`, in which case it is written again, re-rendered, when the incident
//! changes (its severity). Priority keeps its severity map and always follows it.
//!
//! Pure: configuration in, the vendor's JSON out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sre_contracts::domain::v1::IncidentCreated;
use sre_sink::template::Template;

pub use crate::provider::TicketFields as Rendered;
use crate::provider::jira::{Deployment, adf};

/// The type of a Jira field, which decides the JSON its value is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A single-line or paragraph text field: a string (wiki text on Data Center).
    Text,
    /// A rich-text field: ADF on Cloud, wiki text on Data Center.
    Adf,
    /// A number field: the rendered value must read as a number.
    Number,
    /// A single select (or radio buttons): `{"value": …}`.
    Select,
    /// A multi select (or checkboxes): `[{"value": …}, …]`.
    MultiSelect,
    /// A user picker: `{"accountId": …}` on Cloud, `{"name": …}` on Data Center.
    User,
    /// A labels-type custom field: a list of strings without spaces.
    Labels,
}

/// A value in the configuration: one template or several (multi select, labels).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// One value.
    One(String),
    /// A number as written in YAML.
    Number(f64),
    /// Several values.
    Many(Vec<String>),
}

impl FieldValue {
    fn texts(&self) -> Vec<String> {
        match self {
            FieldValue::One(s) => vec![s.clone()],
            FieldValue::Number(n) => vec![n.to_string()],
            FieldValue::Many(v) => v.clone(),
        }
    }
}

/// One custom (or other system) field in `fields:`, keyed by its id (`customfield_10020`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomField {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: FieldKind,
    /// Its value (templates over the incident).
    pub value: FieldValue,
}

/// The fields of a ticket as a route (or the provider's defaults) configures them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsConfig {
    /// Jira issue type (a route's overrides the default).
    pub issue_type: Option<String>,
    /// Jira component names.
    pub components: Vec<String>,
    /// Jira assignee: an accountId on Cloud, a user name on Data Center.
    pub assignee: Option<String>,
    /// Labels (Jira labels, GitHub labels), added to the provider's.
    pub labels: Vec<String>,
    /// Jira fields by id.
    pub fields: BTreeMap<String, CustomField>,
    /// Fields written again when the incident changes (`assignee`, `components`, `labels`
    /// or a field id).
    pub sync: Vec<String>,
    /// GitHub assignees (logins).
    pub assignees: Vec<String>,
    /// GitHub milestone number.
    pub milestone: Option<u64>,
}

/// [`FieldsConfig`] with its templates compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    issue_type: Option<String>,
    components: Vec<Template>,
    assignee: Option<Template>,
    labels: Vec<Template>,
    fields: BTreeMap<String, (FieldKind, Vec<Template>)>,
    sync: BTreeSet<String>,
    assignees: Vec<Template>,
    milestone: Option<u64>,
}

/// The keys `sync` may name besides field ids.
const SYNCABLE: [&str; 3] = ["assignee", "components", "labels"];

/// Compiles `config` (at key path `at`): a template that does not compile, a static number
/// that is not one, ADF on Data Center, or a `sync` entry naming nothing is refused there.
pub fn compile(config: &FieldsConfig, at: &str, deployment: Deployment) -> Result<Compiled, (String, String)> {
    compile_over(config, at, deployment, &BTreeMap::new())
}

/// [`compile`] for a route over `inherited` fields (its provider's): `sync` may name them.
pub fn compile_over(
    config: &FieldsConfig,
    at: &str,
    deployment: Deployment,
    inherited: &BTreeMap<String, CustomField>,
) -> Result<Compiled, (String, String)> {
    let tpl = |key: String, text: &str| Template::parse(text).map_err(|reason| (key, reason));
    let many = |key: &str, texts: &[String]| -> Result<Vec<Template>, (String, String)> {
        texts.iter().enumerate().map(|(i, t)| tpl(format!("{at}.{key}[{i}]"), t)).collect()
    };
    let mut fields = BTreeMap::new();
    for (id, f) in &config.fields {
        let key = format!("{at}.fields.{id}");
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((key, "a field id, e.g. customfield_10020".to_owned()));
        }
        if ["project", "issuetype", "summary", "description", "priority"].contains(&id.as_str()) {
            return Err((key, format!("`{id}` is set by the sink itself")));
        }
        let texts = f.value.texts();
        if !matches!(f.kind, FieldKind::MultiSelect | FieldKind::Labels) && texts.len() != 1 {
            return Err((format!("{key}.value"), format!("a {:?} field takes one value", f.kind)));
        }
        if f.kind == FieldKind::Number
            && let [t] = texts.as_slice()
            && let Some(t) = Template::parse(t).ok().and_then(|t| t.literal())
            && t.trim().parse::<f64>().is_err()
        {
            return Err((format!("{key}.value"), format!("`{t}` is not a number")));
        }
        if f.kind == FieldKind::Adf && deployment == Deployment::DataCenter {
            return Err((format!("{key}.type"), "adf is Jira Cloud's; on Data Center use text".to_owned()));
        }
        let templates = texts
            .iter()
            .enumerate()
            .map(|(i, t)| tpl(format!("{key}.value[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        fields.insert(id.clone(), (f.kind, templates));
    }
    for (i, s) in config.sync.iter().enumerate() {
        let field = config.fields.get(s).or_else(|| inherited.get(s));
        if !SYNCABLE.contains(&s.as_str()) && field.is_none() {
            return Err((
                format!("{at}.sync[{i}]"),
                format!("`{s}`: name assignee, components, labels or a field of `fields`"),
            ));
        }
        // What a synced field is rendered from again is kept with the ticket, without the
        // (long) description.
        if field.is_some_and(|f| f.value.texts().iter().any(|t| t.contains("{description}"))) {
            return Err((
                format!("{at}.sync[{i}]"),
                format!("`{s}` names {{description}}: a field kept in sync cannot (set it at creation only)"),
            ));
        }
    }
    Ok(Compiled {
        issue_type: config.issue_type.clone(),
        components: many("components", &config.components)?,
        assignee: config.assignee.as_deref().map(|a| tpl(format!("{at}.assignee"), a)).transpose()?,
        labels: many("labels", &config.labels)?,
        fields,
        sync: config.sync.iter().cloned().collect(),
        assignees: many("assignees", &config.assignees)?,
        milestone: config.milestone,
    })
}

/// A route's fields over the defaults: the route's issue type, assignee, components and
/// milestone when it sets them, the defaults' otherwise; labels and assignees of both;
/// `fields` merged (the route's win); `sync` of both.
pub fn over(defaults: &Compiled, route: &Compiled) -> Compiled {
    let pick = |r: &Vec<Template>, d: &Vec<Template>| if r.is_empty() { d.clone() } else { r.clone() };
    let mut fields = defaults.fields.clone();
    fields.extend(route.fields.clone());
    Compiled {
        issue_type: route.issue_type.clone().or_else(|| defaults.issue_type.clone()),
        components: pick(&route.components, &defaults.components),
        assignee: route.assignee.clone().or_else(|| defaults.assignee.clone()),
        labels: defaults.labels.iter().chain(&route.labels).cloned().collect(),
        fields,
        sync: defaults.sync.union(&route.sync).cloned().collect(),
        assignees: defaults.assignees.iter().chain(&route.assignees).cloned().collect(),
        milestone: route.milestone.or(defaults.milestone),
    }
}

/// A label as Jira and GitHub take it: whitespace made `-`, empty dropped.
fn label(text: &str) -> Option<String> {
    let l: String = text.split_whitespace().collect::<Vec<_>>().join("-");
    (!l.is_empty()).then(|| sre_runtime::outbound::clip(&l, 255))
}

impl Compiled {
    /// The fields for `incident` on `deployment`: every one at creation.
    pub fn render(&self, incident: &IncidentCreated, deployment: Deployment) -> Rendered {
        self.render_only(incident, deployment, |_| true)
    }

    /// Only the fields named in `sync`, for an update when the incident changed.
    pub fn render_synced(&self, incident: &IncidentCreated, deployment: Deployment) -> Rendered {
        let mut r = self.render_only(incident, deployment, |name| self.sync.contains(name));
        r.issue_type = None;
        r.assignees.clear();
        r.milestone = None;
        r
    }

    /// Whether any field is kept in sync.
    pub fn syncs(&self) -> bool {
        !self.sync.is_empty()
    }

    fn render_only(&self, incident: &IncidentCreated, deployment: Deployment, want: impl Fn(&str) -> bool) -> Rendered {
        let user = |name: String| match deployment {
            Deployment::Cloud => json!({"accountId": name}),
            Deployment::DataCenter => json!({"name": name}),
        };
        let mut jira = serde_json::Map::new();
        if want("components") {
            let names: Vec<Value> = self
                .components
                .iter()
                .map(|t| t.render(incident))
                .filter(|c| !c.trim().is_empty())
                .map(|c| json!({"name": sre_runtime::outbound::clip(c.trim(), 255)}))
                .collect();
            if !names.is_empty() {
                jira.insert("components".into(), Value::Array(names));
            }
        }
        if want("assignee")
            && let Some(a) = self.assignee.as_ref().map(|t| t.render(incident)).filter(|a| !a.trim().is_empty())
        {
            jira.insert("assignee".into(), user(sre_runtime::outbound::clip(a.trim(), 255)));
        }
        for (id, (kind, templates)) in &self.fields {
            if !want(id) {
                continue;
            }
            // Every value cut to what a field (and the record keeping it) holds.
            let values: Vec<String> = templates
                .iter()
                .map(|t| sre_sink::limits::fit(&t.render(incident), sre_sink::limits::FIELD_MAX).into_owned())
                .collect();
            let one = values.first().cloned().unwrap_or_default();
            let value = match kind {
                FieldKind::Text => (!one.trim().is_empty()).then(|| json!(one)),
                FieldKind::Adf => (!one.trim().is_empty()).then(|| adf(&one)),
                FieldKind::Number => one.trim().parse::<f64>().ok().map(|n| json!(n)),
                FieldKind::Select => (!one.trim().is_empty()).then(|| json!({"value": one.trim()})),
                FieldKind::MultiSelect => {
                    let v: Vec<Value> =
                        values.iter().filter(|v| !v.trim().is_empty()).map(|v| json!({"value": v.trim()})).collect();
                    (!v.is_empty()).then_some(Value::Array(v))
                }
                FieldKind::User => (!one.trim().is_empty()).then(|| user(one.trim().to_owned())),
                FieldKind::Labels => {
                    let l: Vec<String> = values.iter().filter_map(|v| label(v)).collect();
                    (!l.is_empty()).then(|| json!(l))
                }
            };
            // A value that renders to nothing (an absent label) leaves the field unset.
            if let Some(value) = value {
                jira.insert(id.clone(), value);
            }
        }
        let labels = if want("labels") {
            let mut l: Vec<String> = Vec::new();
            for x in self.labels.iter().filter_map(|t| label(&t.render(incident))) {
                if !l.contains(&x) {
                    l.push(x);
                }
            }
            l
        } else {
            Vec::new()
        };
        Rendered {
            issue_type: self.issue_type.clone(),
            labels,
            jira,
            assignees: self
                .assignees
                .iter()
                .map(|t| t.render(incident).trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            milestone: self.milestone,
        }
    }

    /// The Jira field ids this configuration sets (for the create-screen check).
    pub fn jira_field_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.fields.keys().cloned().collect();
        if !self.components.is_empty() {
            ids.push("components".into());
        }
        if self.assignee.is_some() {
            ids.push("assignee".into());
        }
        ids
    }

    /// The issue type this configuration names, if any.
    pub fn issue_type(&self) -> Option<&str> {
        self.issue_type.as_deref()
    }
}

/// What the templates of a ticket's fields may name, kept with the ticket so that `sync`
/// fields can be rendered again when the incident changes (its description is left out:
/// it can be long, and nothing keeps a field in sync with it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Context {
    /// The incident's id, title, service, environment, team, runbook and link.
    pub incident_id: String,
    /// Title.
    pub title: String,
    /// Service.
    pub service: String,
    /// Environment.
    pub environment: String,
    /// Team.
    pub team: String,
    /// Runbook URL.
    pub runbook_url: String,
    /// Link.
    pub url: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Context {
    /// The context of `incident`, each value cut short (64 labels at most), so the record
    /// keeping it stays far within a bus message.
    pub fn of(incident: &IncidentCreated) -> Self {
        let cut = |s: &str| sre_sink::limits::fit(s, sre_sink::limits::SHORT_MAX).into_owned();
        Self {
            incident_id: incident.incident_id.clone(),
            title: cut(&incident.title),
            service: cut(&incident.service),
            environment: cut(&incident.environment),
            team: cut(&incident.team),
            runbook_url: cut(&incident.runbook_url),
            url: cut(&incident.url),
            labels: incident.labels.iter().take(64).map(|(k, v)| (cut(k), cut(v))).collect(),
        }
    }

    /// The incident as the templates see it, with severity `severity`.
    pub fn incident(&self, severity: i32) -> IncidentCreated {
        IncidentCreated {
            incident_id: self.incident_id.clone(),
            title: self.title.clone(),
            service: self.service.clone(),
            environment: self.environment.clone(),
            team: self.team.clone(),
            runbook_url: self.runbook_url.clone(),
            url: self.url.clone(),
            labels: self.labels.clone().into_iter().collect(),
            severity,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sre_contracts::domain::v1::Severity;

    fn incident() -> IncidentCreated {
        IncidentCreated {
            incident_id: "inc-1".into(),
            title: "checkout down".into(),
            service: "checkout-api".into(),
            severity: Severity::Critical as i32,
            labels: [("team".to_owned(), "payments core".to_owned())].into(),
            ..Default::default()
        }
    }

    fn config() -> FieldsConfig {
        let fields: BTreeMap<String, CustomField> = serde_norway::from_str(
            r#"
customfield_10020: {type: select, value: "{severity}"}
customfield_10021: {type: multi_select, value: ["{service}", "{label.none}", "web"]}
customfield_10022: {type: number, value: 3}
customfield_10023: {type: user, value: "{label.owner}"}
customfield_10024: {type: text, value: "{label.team}"}
customfield_10025: {type: labels, value: ["team {label.team}", ""]}
"#,
        )
        .expect("fields");
        FieldsConfig {
            issue_type: Some("Incident".into()),
            components: vec!["{service}".into(), "{label.none}".into()],
            assignee: Some("5b10ac8d82e05b22cc7d4ef5".into()),
            labels: vec!["team-{label.team}".into()],
            fields,
            sync: vec!["customfield_10020".into()],
            ..FieldsConfig::default()
        }
    }

    #[test]
    fn each_type_is_sent_as_jira_takes_it_and_empty_values_are_left_out() {
        let c = compile(&config(), "jira", Deployment::Cloud).expect("compiles");
        let r = c.render(&incident(), Deployment::Cloud);
        assert_eq!(r.issue_type.as_deref(), Some("Incident"));
        assert_eq!(r.labels, ["team-payments-core"]);
        let want = json!({
            "components": [{"name": "checkout-api"}],
            "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5"},
            "customfield_10020": {"value": "critical"},
            "customfield_10021": [{"value": "checkout-api"}, {"value": "web"}],
            "customfield_10022": 3.0,
            "customfield_10024": "payments core",
            "customfield_10025": ["team-payments-core"],
        });
        assert_eq!(Value::Object(r.jira), want);
        // Data Center names users by name.
        let c = compile(&config(), "jira", Deployment::DataCenter).expect("compiles");
        assert_eq!(
            c.render(&incident(), Deployment::DataCenter).jira["assignee"],
            json!({"name": "5b10ac8d82e05b22cc7d4ef5"})
        );
    }

    #[test]
    fn only_synced_fields_are_written_again() {
        let c = compile(&config(), "jira", Deployment::Cloud).expect("compiles");
        let mut changed = incident();
        changed.severity = Severity::High as i32;
        let r = c.render_synced(&changed, Deployment::Cloud);
        assert_eq!(Value::Object(r.jira.clone()), json!({"customfield_10020": {"value": "high"}}));
        assert!(r.labels.is_empty() && r.issue_type.is_none());
        // From the context kept with the ticket, the same.
        let again = Context::of(&incident()).incident(Severity::High as i32);
        assert_eq!(c.render_synced(&again, Deployment::Cloud), r);
    }

    #[test]
    fn a_route_overrides_the_defaults_and_adds_to_their_lists() {
        let defaults = compile(&config(), "jira", Deployment::Cloud).expect("defaults");
        let route: BTreeMap<String, CustomField> =
            serde_norway::from_str("customfield_10020: {type: select, value: Sev1}").expect("fields");
        let route = FieldsConfig {
            issue_type: Some("Bug".into()),
            components: vec!["Payments".into()],
            labels: vec!["pay".into()],
            fields: route,
            ..FieldsConfig::default()
        };
        let merged = over(&defaults, &compile(&route, "routes[0]", Deployment::Cloud).expect("route"));
        let r = merged.render(&incident(), Deployment::Cloud);
        assert_eq!(r.issue_type.as_deref(), Some("Bug"));
        assert_eq!(r.jira["components"], json!([{"name": "Payments"}]));
        assert_eq!(r.jira["customfield_10020"], json!({"value": "Sev1"}));
        assert_eq!(r.jira["assignee"], json!({"accountId": "5b10ac8d82e05b22cc7d4ef5"}));
        assert_eq!(r.labels, ["team-payments-core", "pay"]);
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        let bad = |edit: &dyn Fn(&mut FieldsConfig), deployment| {
            let mut c = config();
            edit(&mut c);
            compile(&c, "ticketing_integration.jira", deployment).expect_err("refused")
        };
        type Edit<'a> = &'a dyn Fn(&mut FieldsConfig);
        let cases: [(Edit<'_>, Deployment, &str); 6] = [
            (&|c| c.assignee = Some("{assigne}".into()), Deployment::Cloud, "ticketing_integration.jira.assignee"),
            (&|c| c.sync.push("reporter".into()), Deployment::Cloud, "ticketing_integration.jira.sync[1]"),
            (
                &|c| {
                    c.fields.insert(
                        "customfield_1".into(),
                        CustomField { kind: FieldKind::Number, value: FieldValue::One("many".into()) },
                    );
                },
                Deployment::Cloud,
                "ticketing_integration.jira.fields.customfield_1.value",
            ),
            (
                &|c| {
                    c.fields.insert(
                        "customfield_2".into(),
                        CustomField { kind: FieldKind::Adf, value: FieldValue::One("x".into()) },
                    );
                },
                Deployment::DataCenter,
                "ticketing_integration.jira.fields.customfield_2.type",
            ),
            (
                &|c| {
                    c.fields.insert(
                        "summary".into(),
                        CustomField { kind: FieldKind::Text, value: FieldValue::One("x".into()) },
                    );
                },
                Deployment::Cloud,
                "ticketing_integration.jira.fields.summary",
            ),
            (
                &|c| {
                    c.fields.insert(
                        "customfield_3".into(),
                        CustomField { kind: FieldKind::Select, value: FieldValue::Many(vec!["a".into(), "b".into()]) },
                    );
                },
                Deployment::Cloud,
                "ticketing_integration.jira.fields.customfield_3.value",
            ),
        ];
        for (edit, deployment, key) in cases {
            assert_eq!(bad(edit, deployment).0, key);
        }
    }
}
