// An envelope (what publish_all takes) can only be made from an intent.
fn main() {
    let fact = sre_contracts::domain::v1::IncidentResolved::default();
    let _ = sre_bus::Envelope::intent(&fact);
}
