//! The intent/fact split, subjects and headers.

use crate::domain::v1::{
    AcknowledgeIncidentRequested, AlertIngested, AnnotateIncidentRequested, CloseIncidentRequested,
    CreateIncidentRequested, FleetStateRecorded, HealthCheckRecorded, IncidentAcknowledged, IncidentAnnotated,
    IncidentClosed, IncidentCreated, IncidentReopened, IncidentResolved, IncidentSeverityChanged, IngestAlertRequested,
    MessageMeta, RecordFleetStateRequested, RecordHealthCheckRequested, ReopenIncidentRequested,
    ResolveIncidentRequested,
};

/// Subjects of the domain bus.
pub mod subjects {
    /// Prefix of every intent subject: `sre.domain.intents.v1.<MessageName>`.
    pub const INTENTS_PREFIX: &str = "sre.domain.intents.v1";
    /// Prefix of every fact subject: `sre.domain.facts.v1.<MessageName>`.
    pub const FACTS_PREFIX: &str = "sre.domain.facts.v1";
    /// Every intent subject (the intents stream's filter).
    pub const INTENTS_ALL: &str = "sre.domain.intents.v1.>";
    /// Every fact subject (the facts stream's filter).
    pub const FACTS_ALL: &str = "sre.domain.facts.v1.>";
    /// Prefix of dead-letter subjects: `sre.deadletter.v1.<consumer>`.
    pub const DEAD_LETTER_PREFIX: &str = "sre.deadletter.v1";
    /// Every dead-letter subject (the dead-letter stream's filter).
    pub const DEAD_LETTER_ALL: &str = "sre.deadletter.v1.>";
}

/// JetStream stream names.
pub mod streams {
    /// Holds every intent.
    pub const INTENTS: &str = "SRE_DOMAIN_INTENTS";
    /// Holds every fact.
    pub const FACTS: &str = "SRE_DOMAIN_FACTS";
    /// Holds what consumers gave up on, with the reason.
    pub const DEAD_LETTER: &str = "SRE_DEAD_LETTER";
}

/// Names of the spans every adapter emits, one trace from a webhook to a vendor call:
/// what people search a collector for, and what the trace tests assert.
pub mod spans {
    /// A webhook received (a server span; an incoming `traceparent` is linked to it).
    pub const WEBHOOK: &str = "webhook";
    /// A fact handled by a sink (parented on the fact's `traceparent`).
    pub const FACT: &str = "fact";
    /// One call to a vendor's API (a client span: method, host, path, status).
    pub const VENDOR_CALL: &str = "vendor call";
}

/// Header names of bus messages. Header names are case-sensitive on NATS.
pub mod headers {
    /// JetStream's dedup id; equals `meta.idempotency_key`.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// Content type of the body.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// The body is a binary protobuf message.
    pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
    /// Fully qualified protobuf type of the body, e.g. `sre.domain.v1.IncidentCreated`.
    pub const MESSAGE_TYPE: &str = "Sre-Message-Type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// Correlation id copied from `meta.correlation_id` (so it can be read without decoding).
    pub const CORRELATION_ID: &str = "Sre-Correlation-Id";
    /// Dead letters: why the consumer gave up.
    pub const DEAD_LETTER_REASON: &str = "Sre-Dead-Letter-Reason";
    /// Dead letters: the consumer that gave up.
    pub const DEAD_LETTER_CONSUMER: &str = "Sre-Dead-Letter-Consumer";
    /// Dead letters: the original subject.
    pub const DEAD_LETTER_SUBJECT: &str = "Sre-Dead-Letter-Subject";
    /// Dead letters: the original stream sequence.
    pub const DEAD_LETTER_SEQUENCE: &str = "Sre-Dead-Letter-Sequence";
    /// Dead letters: how many times it was delivered.
    pub const DEAD_LETTER_DELIVERIES: &str = "Sre-Dead-Letter-Deliveries";
}

/// Which side of the domain boundary a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request from an adapter to the domain.
    Intent,
    /// A decision of the domain.
    Fact,
}

mod sealed {
    pub trait Sealed {}
}

/// A message of the domain bus. Sealed: only the messages of this crate are bus messages.
pub trait BusMessage: prost::Message + prost::Name + Default + Clone + Send + Sync + 'static + sealed::Sealed {
    /// Intent or fact.
    const KIND: Kind;
    /// The subject it is published on.
    const SUBJECT: &'static str;
    /// Fully qualified protobuf name (the `Sre-Message-Type` header).
    const TYPE: &'static str;

    /// The message's metadata, when set.
    fn meta(&self) -> Option<&MessageMeta>;
    /// The message's metadata, created empty when absent.
    fn meta_mut(&mut self) -> &mut MessageMeta;
    /// The idempotency key (empty when no metadata is set).
    fn idempotency_key(&self) -> &str {
        self.meta().map_or("", |m| m.idempotency_key.as_str())
    }
}

/// A request an adapter may publish. Sealed: facts can never be intents.
pub trait Intent: BusMessage {}

/// A decision of the domain. Adapters consume facts; they have no way to publish one.
pub trait Fact: BusMessage {}

/// A fact about one incident: consumers keep the facts of one incident in order.
pub trait IncidentFact: Fact {
    /// The incident the fact is about.
    fn incident_id(&self) -> &str;
}

macro_rules! bus_messages {
    ($kind:ident, $marker:ident, $prefix:literal: $($name:ident),+ $(,)?) => {$(
        impl sealed::Sealed for $name {}
        impl BusMessage for $name {
            const KIND: Kind = Kind::$kind;
            const SUBJECT: &'static str = concat!($prefix, ".", stringify!($name));
            const TYPE: &'static str = concat!("sre.domain.v1.", stringify!($name));
            fn meta(&self) -> Option<&MessageMeta> {
                self.meta.as_ref()
            }
            fn meta_mut(&mut self) -> &mut MessageMeta {
                self.meta.get_or_insert_with(MessageMeta::default)
            }
        }
        impl $marker for $name {}
    )+};
}

bus_messages!(Intent, Intent, "sre.domain.intents.v1":
    RecordFleetStateRequested,
    RecordHealthCheckRequested,
    IngestAlertRequested,
    CreateIncidentRequested,
    AcknowledgeIncidentRequested,
    ResolveIncidentRequested,
    CloseIncidentRequested,
    ReopenIncidentRequested,
    AnnotateIncidentRequested,
);

/// An intent carrying what a person did in a vendor's tool (two-way sync): which incident,
/// and where it came from.
pub trait ExternalIntent: Intent {
    /// The incident it is about.
    fn incident_id(&self) -> &str;
    /// The vendor, object, person and event.
    fn origin(&self) -> Option<&crate::domain::v1::ExternalOrigin>;
}

macro_rules! external_intents {
    ($($name:ident),+) => {$(
        impl ExternalIntent for $name {
            fn incident_id(&self) -> &str {
                &self.incident_id
            }
            fn origin(&self) -> Option<&crate::domain::v1::ExternalOrigin> {
                self.origin.as_ref()
            }
        }
    )+};
}

external_intents!(
    AcknowledgeIncidentRequested,
    ResolveIncidentRequested,
    CloseIncidentRequested,
    ReopenIncidentRequested,
    AnnotateIncidentRequested
);

bus_messages!(Fact, Fact, "sre.domain.facts.v1":
    IncidentCreated,
    IncidentAcknowledged,
    IncidentResolved,
    IncidentClosed,
    IncidentReopened,
    IncidentSeverityChanged,
    IncidentAnnotated,
    AlertIngested,
    FleetStateRecorded,
    HealthCheckRecorded,
);

macro_rules! incident_facts {
    ($($name:ident),+) => {
        $(
            impl IncidentFact for $name {
                fn incident_id(&self) -> &str {
                    &self.incident_id
                }
            }
        )+
        /// The subjects of every fact about one incident (consumers keep their order per
        /// incident, and sinks filter on them).
        pub const INCIDENT_FACT_SUBJECTS: &[&str] = &[$(<$name as BusMessage>::SUBJECT),+];
    };
}

incident_facts!(
    IncidentCreated,
    IncidentAcknowledged,
    IncidentResolved,
    IncidentClosed,
    IncidentReopened,
    IncidentSeverityChanged,
    IncidentAnnotated
);

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn subjects_follow_the_contract() {
        assert_eq!(IngestAlertRequested::SUBJECT, "sre.domain.intents.v1.IngestAlertRequested");
        assert_eq!(IncidentCreated::SUBJECT, "sre.domain.facts.v1.IncidentCreated");
        assert!(IncidentClosed::SUBJECT.starts_with(subjects::FACTS_PREFIX));
        assert!(CreateIncidentRequested::SUBJECT.starts_with(subjects::INTENTS_PREFIX));
    }

    #[test]
    fn type_header_is_the_protobuf_full_name() {
        assert_eq!(IncidentCreated::TYPE, IncidentCreated::full_name());
        assert_eq!(RecordFleetStateRequested::TYPE, RecordFleetStateRequested::full_name());
        assert_eq!(HealthCheckRecorded::TYPE, HealthCheckRecorded::full_name());
    }

    #[test]
    fn meta_is_field_one_of_every_message() {
        use prost::Message;
        // Encode a MessageMeta as field 1 by hand and decode it as each message type.
        let meta = MessageMeta { idempotency_key: "k-1".into(), ..Default::default() };
        let mut buf = Vec::new();
        prost::encoding::message::encode(1, &meta, &mut buf);
        fn key_of<M: BusMessage>(bytes: &[u8]) -> String {
            M::decode(bytes).expect("decodes").idempotency_key().to_owned()
        }
        for key in [
            key_of::<RecordFleetStateRequested>(&buf),
            key_of::<RecordHealthCheckRequested>(&buf),
            key_of::<IngestAlertRequested>(&buf),
            key_of::<CreateIncidentRequested>(&buf),
            key_of::<AcknowledgeIncidentRequested>(&buf),
            key_of::<ResolveIncidentRequested>(&buf),
            key_of::<CloseIncidentRequested>(&buf),
            key_of::<ReopenIncidentRequested>(&buf),
            key_of::<AnnotateIncidentRequested>(&buf),
            key_of::<IncidentCreated>(&buf),
            key_of::<IncidentAcknowledged>(&buf),
            key_of::<IncidentResolved>(&buf),
            key_of::<IncidentClosed>(&buf),
            key_of::<AlertIngested>(&buf),
            key_of::<FleetStateRecorded>(&buf),
            key_of::<HealthCheckRecorded>(&buf),
        ] {
            assert_eq!(key, "k-1");
        }
        assert_eq!(meta.encoded_len() + 2, buf.len());
    }
}
