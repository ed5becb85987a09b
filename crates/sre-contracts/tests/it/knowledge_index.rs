//! The generated KnowledgeIndexQueryService client and server talk to each other over a
//! real loopback connection (the contract adapters use for pattern lookup).

use sre_contracts::knowledge::v1::knowledge_index_query_service_client::KnowledgeIndexQueryServiceClient;
use sre_contracts::knowledge::v1::knowledge_index_query_service_server::{
    KnowledgeIndexQueryService, KnowledgeIndexQueryServiceServer,
};
use sre_contracts::knowledge::v1::{
    GetSimilarIncidentsRequest, GetSimilarIncidentsResponse, IncidentMatch, PatternMatch, RunbookMatch,
    SearchPatternsRequest, SearchPatternsResponse, SearchRunbooksBySemanticRequest, SearchRunbooksBySemanticResponse,
};
use tonic::{Request, Response, Status};

/// A tiny projection: answers from fixed data, refuses empty queries.
struct Projection;

#[tonic::async_trait]
impl KnowledgeIndexQueryService for Projection {
    async fn search_patterns(
        &self,
        req: Request<SearchPatternsRequest>,
    ) -> Result<Response<SearchPatternsResponse>, Status> {
        let req = req.into_inner();
        if req.symptoms.is_empty() && req.tags.is_empty() {
            return Err(Status::invalid_argument("symptoms or tags required"));
        }
        let matches = req
            .tags
            .iter()
            .map(|t| PatternMatch {
                backlog_item_id: format!("BL-{t}"),
                title: t.clone(),
                score: 0.9,
                tags: vec![t.clone()],
            })
            .collect();
        Ok(Response::new(SearchPatternsResponse { matches }))
    }

    async fn get_similar_incidents(
        &self,
        req: Request<GetSimilarIncidentsRequest>,
    ) -> Result<Response<GetSimilarIncidentsResponse>, Status> {
        let description = req.into_inner().incident_description;
        Ok(Response::new(GetSimilarIncidentsResponse {
            matches: vec![IncidentMatch {
                incident_id: "INC-7".into(),
                title: description,
                score: 0.75,
                backlog_item_id: "BL-1".into(),
            }],
        }))
    }

    async fn search_runbooks_by_semantic(
        &self,
        req: Request<SearchRunbooksBySemanticRequest>,
    ) -> Result<Response<SearchRunbooksBySemanticResponse>, Status> {
        let query = req.into_inner().query;
        Ok(Response::new(SearchRunbooksBySemanticResponse {
            matches: vec![RunbookMatch {
                runbook_id: "RB-1".into(),
                title: query,
                score: 0.8,
                url: "https://runbooks.example.com/1".into(),
            }],
        }))
    }
}

#[tokio::test]
async fn client_and_server_round_trip() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KnowledgeIndexQueryServiceServer::new(Projection))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = KnowledgeIndexQueryServiceClient::connect(format!("http://{addr}")).await.expect("connect");

    let patterns = client
        .search_patterns(SearchPatternsRequest {
            symptoms: vec!["p99 latency".into()],
            tags: vec!["checkout".into()],
            limit: 5,
        })
        .await
        .expect("patterns")
        .into_inner();
    assert_eq!(patterns.matches[0].backlog_item_id, "BL-checkout");

    let similar = client
        .get_similar_incidents(GetSimilarIncidentsRequest { incident_description: "disk full".into(), limit: 3 })
        .await
        .expect("similar")
        .into_inner();
    assert_eq!((similar.matches[0].incident_id.as_str(), similar.matches[0].title.as_str()), ("INC-7", "disk full"));

    let runbooks = client
        .search_runbooks_by_semantic(SearchRunbooksBySemanticRequest { query: "restart checkout".into(), limit: 1 })
        .await
        .expect("runbooks")
        .into_inner();
    assert_eq!(runbooks.matches[0].runbook_id, "RB-1");

    let err = client.search_patterns(SearchPatternsRequest::default()).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    server.abort();
}
