//! Serve: the last stage. A NATS micro service (`nats-insights`) answering `$SRV.PING/INFO/STATS`
//! and the `$INSIGHTS.API.*` endpoints from the engine's latest status, never from the network
//! directly. This file is the I/O edge; `api` parses requests and builds responses.

pub use nats_insights_core::api::{self, catalog, preflight};
pub use nats_insights_core::status::{self, recent};
pub use nats_insights_core::status::{
    finding_views, status_response, unix_ms, EngineStatus, FindingState, FindingView, Instance,
    StatusResponse, STATUS_TYPE,
};
pub use nats_insights_core::wire::{API_GROUP, MAX_REQUEST_BYTES, SERVICE_ID_HEADER, SERVICE_NAME};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::checks::Thresholds;
use async_nats::service::{self, ServiceExt};
use async_nats::Client;
use futures::stream::{self as fstream, StreamExt};
use tokio::sync::watch;

use api::{ApiError, Context, Endpoint};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Registering the micro service or an endpoint failed.
    #[error("cannot start the {SERVICE_NAME} micro service: {0}")]
    Start(async_nats::Error),
}

/// Refused requests by endpoint and error code, shared with the `$SRV.STATS` handler.
type Rejections = Arc<Mutex<BTreeMap<Endpoint, BTreeMap<u16, u64>>>>;

fn rejections_of(rejections: &Rejections, endpoint: Endpoint) -> BTreeMap<u16, u64> {
    let guard = match rejections.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.get(&endpoint).cloned().unwrap_or_default()
}

fn count_rejection(rejections: &Rejections, endpoint: Endpoint, code: u16) {
    let mut guard = match rejections.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    *guard.entry(endpoint).or_default().entry(code).or_default() += 1;
}

/// Passes a valid GROUP.FORGET request on to every instance (this one included): the micro
/// service's queue group delivered it to this instance only.
async fn forget_everywhere(
    client: &Client,
    payload: &[u8],
    status: &EngineStatus,
) -> Result<(), ApiError> {
    let (group, _) = api::forget_group(payload, status, SystemTime::now())?;
    let body = serde_json::to_vec(&api::ForgetRequest {
        domain: Some(group.label().to_string()),
    })
    .map_err(|e| ApiError::Internal(format!("cannot encode: {e}")))?;
    client
        .publish(api::FORGET_SUBJECT, body.into())
        .await
        .map_err(|e| ApiError::Internal(format!("cannot tell the instances: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot tell the instances: {e}")))?;
    tracing::info!(group = %group, "forgetting a retired meta group, as asked");
    Ok(())
}

/// Starts the micro service and answers requests until the status channel closes.
pub async fn serve(
    client: Client,
    instance: Instance,
    status: watch::Receiver<Arc<EngineStatus>>,
    thresholds: Thresholds,
) -> Result<(), ServiceError> {
    let rejections: Rejections = Arc::default();
    let stats_status = status.clone();
    let stats_rejections = rejections.clone();
    let stats_instance = instance.clone();
    let service = client
        .service_builder()
        .description("Watches the JetStream meta group and reports findings")
        .metadata(
            [
                ("instance".to_string(), instance.id.clone()),
                // Lets peers prefer the longest-running instance as the one that publishes
                // while the state store cannot arbitrate.
                ("started".to_string(), unix_ms(instance.started).to_string()),
            ]
            .into_iter()
            .collect(),
        )
        .stats_handler(move |name, _| {
            let current = stats_status.borrow().clone();
            let rejected = Endpoint::from_name(&name)
                .map(|e| rejections_of(&stats_rejections, e))
                .unwrap_or_default();
            serde_json::to_value(api::stats_data(&current, &stats_instance, &rejected))
                .unwrap_or_default()
        })
        .start(SERVICE_NAME, crate::VERSION)
        .await
        .map_err(ServiceError::Start)?;
    let service_id = service.info().await.id;
    let group = service.group(API_GROUP);
    let mut streams = Vec::new();
    for endpoint in Endpoint::ALL {
        let requests = group
            .endpoint_builder()
            .name(endpoint.name())
            .metadata(
                [(
                    "response_type".to_string(),
                    endpoint.response_type().to_string(),
                )]
                .into_iter()
                .collect(),
            )
            .add(endpoint.token())
            .await
            .map_err(ServiceError::Start)?;
        streams.push(requests.map(move |request| (endpoint, request)).boxed());
    }
    // Every endpoint's requests, until the engine (the sender of `status`) stops.
    let mut requests =
        std::pin::pin!(fstream::select_all(streams)
            .take_until(crate::shutdown::sender_dropped(status.clone())));
    while let Some((endpoint, request)) = requests.next().await {
        let current = status.borrow().clone();
        let ctx = Context {
            status: &current,
            instance: &instance,
            thresholds: &thresholds,
            now: SystemTime::now(),
        };
        let max_payload = client.server_info().max_payload;
        let reply = api::handle(endpoint, &request.message.payload, ctx).and_then(|body| {
            if max_payload > 0 && body.len() > max_payload {
                Err(ApiError::Internal(format!(
                    "the response is {} bytes, over the server's max_payload of {max_payload}: ask for fewer with \"limit\"",
                    body.len()
                )))
            } else {
                Ok(body)
            }
        });
        let reply = match (endpoint, reply) {
            (Endpoint::GroupForget, Ok(body)) => {
                forget_everywhere(&client, &request.message.payload, &current)
                    .await
                    .map(|()| body)
            }
            (_, reply) => reply,
        };
        let reply = reply.map(bytes::Bytes::from).map_err(|error| {
            tracing::debug!(endpoint = endpoint.name(), code = error.code(), %error, "request refused");
            count_rejection(&rejections, endpoint, error.code());
            service::error::Error { status: error.description(), code: usize::from(error.code()) }
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SERVICE_ID_HEADER, service_id.as_str());
        if let Err(error) = request.respond_with_headers(reply, headers).await {
            tracing::debug!(endpoint = endpoint.name(), %error, "cannot answer a request");
        }
    }
    if let Err(error) = service.stop().await {
        tracing::debug!(%error, "stopping the micro service");
    }
    Ok(())
}
