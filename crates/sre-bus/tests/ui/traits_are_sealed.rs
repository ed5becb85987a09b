// Code outside sre-contracts cannot make its own type a bus message (and so never an
// intent): the trait is sealed.
use sre_contracts::domain::v1::MessageMeta;

#[derive(Clone, PartialEq, prost::Message)]
struct MyFact {
    #[prost(message, optional, tag = "1")]
    meta: Option<MessageMeta>,
}

impl prost::Name for MyFact {
    const NAME: &'static str = "MyFact";
    const PACKAGE: &'static str = "x";
}

impl sre_contracts::BusMessage for MyFact {
    const KIND: sre_contracts::Kind = sre_contracts::Kind::Intent;
    const SUBJECT: &'static str = "sre.domain.facts.v1.MyFact";
    const TYPE: &'static str = "x.MyFact";
    fn meta(&self) -> Option<&MessageMeta> {
        self.meta.as_ref()
    }
    fn meta_mut(&mut self) -> &mut MessageMeta {
        self.meta.get_or_insert_with(MessageMeta::default)
    }
}

fn main() {}
