//! The type system keeps facts out of intent-only APIs: a fact is no intent
//! (`sre-contracts`' sealed traits), and there is no API in an adapter's reach that
//! publishes one. One trybuild run for both, since each run builds the dependencies again.

#[test]
fn facts_cannot_be_intents_nor_be_published_by_adapters() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
