//! There is no API in an adapter's reach that publishes a fact.

#[test]
fn adapters_cannot_publish_facts() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
