// Adapter code holds an IntentPublisher; handing it a fact does not compile.
async fn adapter(publisher: sre_bus::IntentPublisher) {
    let fact = sre_contracts::domain::v1::IncidentCreated::default();
    let _ = publisher.publish(&fact).await;
}

fn main() {
    drop(adapter);
}
