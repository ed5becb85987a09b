// A fact can never be used where an intent is required.
fn publish<M: sre_contracts::Intent>(_message: &M) {}

fn main() {
    publish(&sre_contracts::domain::v1::IncidentCreated::default());
}
