//! The type system keeps facts out of intent-only APIs.

#[test]
fn facts_cannot_be_intents() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
