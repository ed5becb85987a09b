//! The incident facts a sink acts on, decoded once: a sink names the kinds it consumes
//! (its durable consumer is filtered to exactly their subjects) and gets each as a typed
//! [`IncidentFact`]; a fact that does not decode is dead-lettered with the reason.

use sre_bus::{ConsumerConfig, Disposition, ReceivedFact};
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{
    IncidentAcknowledged, IncidentAnnotated, IncidentClosed, IncidentCreated, IncidentReopened, IncidentResolved,
    IncidentSeverityChanged,
};

/// A kind of incident fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactKind {
    /// `IncidentCreated`.
    Created,
    /// `IncidentAcknowledged`.
    Acknowledged,
    /// `IncidentResolved`.
    Resolved,
    /// `IncidentClosed`.
    Closed,
    /// `IncidentReopened`.
    Reopened,
    /// `IncidentSeverityChanged`.
    SeverityChanged,
    /// `IncidentAnnotated`.
    Annotated,
}

impl FactKind {
    /// Every kind.
    pub const ALL: [FactKind; 7] = [
        FactKind::Created,
        FactKind::Acknowledged,
        FactKind::Resolved,
        FactKind::Closed,
        FactKind::Reopened,
        FactKind::SeverityChanged,
        FactKind::Annotated,
    ];

    /// Its subject on the facts stream.
    pub fn subject(self) -> &'static str {
        match self {
            FactKind::Created => IncidentCreated::SUBJECT,
            FactKind::Acknowledged => IncidentAcknowledged::SUBJECT,
            FactKind::Resolved => IncidentResolved::SUBJECT,
            FactKind::Closed => IncidentClosed::SUBJECT,
            FactKind::Reopened => IncidentReopened::SUBJECT,
            FactKind::SeverityChanged => IncidentSeverityChanged::SUBJECT,
            FactKind::Annotated => IncidentAnnotated::SUBJECT,
        }
    }
}

/// An incident fact, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentFact {
    /// An incident was opened.
    Created(IncidentCreated),
    /// Someone acknowledged it.
    Acknowledged(IncidentAcknowledged),
    /// It was resolved.
    Resolved(IncidentResolved),
    /// It was closed.
    Closed(IncidentClosed),
    /// It is open again.
    Reopened(IncidentReopened),
    /// Its severity changed.
    SeverityChanged(IncidentSeverityChanged),
    /// A note was added.
    Annotated(IncidentAnnotated),
}

impl IncidentFact {
    /// The fact as delivered, decoded: `Ok(None)` for a subject that is no incident fact
    /// (acked and left alone), `Err` with the dead letter for a body that does not decode.
    pub fn decode(fact: &ReceivedFact) -> Result<Option<Self>, Disposition> {
        fn body<F: sre_contracts::Fact>(fact: &ReceivedFact) -> Result<F, Disposition> {
            fact.decode::<F>().map_err(|e| Disposition::DeadLetter { reason: format!("undecodable fact: {e}") })
        }
        let kind = FactKind::ALL.into_iter().find(|k| k.subject() == fact.subject);
        Ok(Some(match kind {
            None => return Ok(None),
            Some(FactKind::Created) => IncidentFact::Created(body(fact)?),
            Some(FactKind::Acknowledged) => IncidentFact::Acknowledged(body(fact)?),
            Some(FactKind::Resolved) => IncidentFact::Resolved(body(fact)?),
            Some(FactKind::Closed) => IncidentFact::Closed(body(fact)?),
            Some(FactKind::Reopened) => IncidentFact::Reopened(body(fact)?),
            Some(FactKind::SeverityChanged) => IncidentFact::SeverityChanged(body(fact)?),
            Some(FactKind::Annotated) => IncidentFact::Annotated(body(fact)?),
        }))
    }

    /// Its kind.
    pub fn kind(&self) -> FactKind {
        match self {
            IncidentFact::Created(_) => FactKind::Created,
            IncidentFact::Acknowledged(_) => FactKind::Acknowledged,
            IncidentFact::Resolved(_) => FactKind::Resolved,
            IncidentFact::Closed(_) => FactKind::Closed,
            IncidentFact::Reopened(_) => FactKind::Reopened,
            IncidentFact::SeverityChanged(_) => FactKind::SeverityChanged,
            IncidentFact::Annotated(_) => FactKind::Annotated,
        }
    }

    /// The incident it is about.
    pub fn incident_id(&self) -> &str {
        match self {
            IncidentFact::Created(f) => &f.incident_id,
            IncidentFact::Acknowledged(f) => &f.incident_id,
            IncidentFact::Resolved(f) => &f.incident_id,
            IncidentFact::Closed(f) => &f.incident_id,
            IncidentFact::Reopened(f) => &f.incident_id,
            IncidentFact::SeverityChanged(f) => &f.incident_id,
            IncidentFact::Annotated(f) => &f.incident_id,
        }
    }

    /// The life of the incident it belongs to: how many times the incident had been
    /// reopened (a reopen is the first fact of its new life); `None` for facts of no
    /// particular life (created, severity, notes).
    pub fn reopen_count(&self) -> Option<u32> {
        match self {
            IncidentFact::Acknowledged(f) => Some(f.reopen_count),
            IncidentFact::Resolved(f) => Some(f.reopen_count),
            IncidentFact::Closed(f) => Some(f.reopen_count),
            IncidentFact::Reopened(f) => Some(f.reopen_count),
            IncidentFact::Created(_) | IncidentFact::SeverityChanged(_) | IncidentFact::Annotated(_) => None,
        }
    }
}

/// A sink's durable consumer: the configured one, named `name` unless the configuration
/// names it, filtered to exactly the subjects of `kinds` (`deploy/nats/jetstream/consumers/`
/// holds each as JSON, checked by a test).
pub fn consumer_config(configured: &ConsumerConfig, name: &str, kinds: &[FactKind]) -> ConsumerConfig {
    let mut consumer = configured.clone();
    if consumer.durable_name.trim().is_empty() {
        name.clone_into(&mut consumer.durable_name);
    }
    consumer.filter_subjects = kinds.iter().map(|k| k.subject().to_owned()).collect();
    consumer
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn received(subject: &str, payload: Vec<u8>) -> ReceivedFact {
        ReceivedFact {
            subject: subject.to_owned(),
            payload: payload.into(),
            headers: Default::default(),
            delivered: 1,
            stream_sequence: 1,
        }
    }

    #[test]
    fn each_kind_decodes_to_its_fact_and_garbage_is_a_dead_letter() {
        let created = IncidentCreated { incident_id: "inc-1".into(), title: "disk".into(), ..Default::default() };
        let fact = IncidentFact::decode(&received(IncidentCreated::SUBJECT, created.encode_to_vec())).expect("decodes");
        assert_eq!(fact, Some(IncidentFact::Created(created)));
        let closed = IncidentClosed { incident_id: "inc-2".into(), ..Default::default() };
        let fact = IncidentFact::decode(&received(IncidentClosed::SUBJECT, closed.encode_to_vec()))
            .expect("decodes")
            .expect("an incident fact");
        assert_eq!((fact.kind(), fact.incident_id()), (FactKind::Closed, "inc-2"));
        assert_eq!(IncidentFact::decode(&received("sre.domain.facts.v1.AlertIngested", vec![1])), Ok(None));
        let Err(Disposition::DeadLetter { reason }) =
            IncidentFact::decode(&received(IncidentResolved::SUBJECT, vec![0xff, 0xff]))
        else {
            panic!("garbage must be a dead letter");
        };
        assert!(reason.starts_with("undecodable fact: "), "{reason}");
    }

    #[test]
    fn the_kinds_are_the_contracts_incident_facts() {
        let subjects: Vec<&str> = FactKind::ALL.iter().map(|k| k.subject()).collect();
        assert_eq!(subjects, sre_contracts::INCIDENT_FACT_SUBJECTS);
    }

    #[test]
    fn the_consumer_is_filtered_to_the_kinds_and_keeps_a_configured_name() {
        let c = consumer_config(&ConsumerConfig::default(), "paging-sink", &[FactKind::Created, FactKind::Resolved]);
        assert_eq!(c.filter_subjects, vec![IncidentCreated::SUBJECT, IncidentResolved::SUBJECT]);
        let named = ConsumerConfig { durable_name: "ops-paging".into(), ..ConsumerConfig::default() };
        assert_eq!(consumer_config(&named, "paging-sink", &FactKind::ALL).durable_name, "ops-paging");
        let blank = ConsumerConfig { durable_name: "  ".into(), ..ConsumerConfig::default() };
        assert_eq!(consumer_config(&blank, "paging-sink", &FactKind::ALL).durable_name, "paging-sink");
    }
}
