//! The HTTP endpoints of the v2 protocol (plus Triton's repository and config extensions and
//! /metrics): routing, request decoding, inference and response encoding. Every failure
//! becomes an [`ApiError`] answered as `{"error": "..."}`; nothing here panics on input.

use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::protocol::{
    bool_parameter, checked_elements, datatype_name, parse_datatype, tensor_from_binary,
    tensor_from_json, tensor_to_binary, tensor_to_json, uint_parameter, InferRequest,
    InferResponse, ResponseOutput,
};
use crate::repository::{ModelState, Repository};
use crate::served::ServedModel;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value as Json};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::{Dim, IoInfo, Tensor};

/// The header giving the length of the JSON part of a binary-data body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The models.
    pub repository: Arc<Repository>,
    /// Request limits.
    pub limits: Limits,
    /// Set once shutdown starts: readiness turns false.
    pub shutting_down: AtomicBool,
}

type HttpResponse = Response<Full<Bytes>>;

/// Answers one request; never fails (errors become error responses).
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match route(&state, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(%method, %path, status = error.status.as_u16(), error = %error.message, "request failed");
            error_response(&error)
        }
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    Ok(response)
}

fn json_response(status: StatusCode, body: &Json) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> HttpResponse {
    json_response(error.status, &json!({ "error": error.message }))
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The parts of `/v2/models/{name}[/versions/{v}][/action]`.
struct ModelPath<'a> {
    name: &'a str,
    version: Option<&'a str>,
    action: Option<&'a str>,
}

fn parse_model_path<'a>(rest: &[&'a str]) -> Option<ModelPath<'a>> {
    match rest {
        [name] => Some(ModelPath {
            name,
            version: None,
            action: None,
        }),
        [name, action] => Some(ModelPath {
            name,
            version: None,
            action: Some(action),
        }),
        [name, "versions", v] => Some(ModelPath {
            name,
            version: Some(v),
            action: None,
        }),
        [name, "versions", v, action] => Some(ModelPath {
            name,
            version: Some(v),
            action: Some(action),
        }),
        _ => None,
    }
}

async fn route(
    state: &Arc<AppState>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    let wrong_method = || {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        )
    };
    match segments.as_slice() {
        ["v2"] if method == Method::GET => Ok(json_response(StatusCode::OK, &server_metadata())),
        ["v2", "health", "live"] if method == Method::GET => Ok(empty(StatusCode::OK)),
        ["v2", "health", "ready"] if method == Method::GET => {
            let ready = !state.shutting_down.load(Ordering::SeqCst);
            Ok(empty(if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }))
        }
        ["metrics"] if method == Method::GET => Ok(metrics_response(&state.repository)),
        ["v2", "repository", "index"] if method == Method::POST || method == Method::GET => {
            let index = serde_json::to_value(state.repository.index())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(json_response(StatusCode::OK, &index))
        }
        ["v2", "repository", "models", name, action @ ("load" | "unload")]
            if method == Method::POST =>
        {
            repository_action(state, name, action).await
        }
        ["v2", "models", rest @ ..] => {
            let model_path = parse_model_path(rest).ok_or_else(|| not_found(&path))?;
            match (model_path.action, &method) {
                (None, &Method::GET) => model_metadata(state, &model_path),
                (Some("ready"), &Method::GET) => {
                    state.repository.get(model_path.name, model_path.version)?;
                    Ok(empty(StatusCode::OK))
                }
                (Some("config"), &Method::GET) => {
                    let model = state.repository.get(model_path.name, model_path.version)?;
                    Ok(json_response(StatusCode::OK, &model_config(&model)))
                }
                (Some("infer"), &Method::POST) => infer(state, &model_path, request).await,
                (None | Some("ready" | "config" | "infer"), _) => Err(wrong_method()),
                _ => Err(not_found(&path)),
            }
        }
        _ => Err(not_found(&path)),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(format!("no endpoint {path}"))
}

fn server_metadata() -> Json {
    json!({
        "name": "strata",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository", "model_configuration"],
    })
}

fn metrics_response(repository: &Repository) -> HttpResponse {
    let metrics: &Metrics = repository.metrics();
    for model in repository.served() {
        metrics.set_queue_depth(&model.labels, model.queued());
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn repository_action(
    state: &Arc<AppState>,
    name: &str,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    let repository = state.repository.clone();
    let (name, load) = (name.to_string(), action == "load");
    // Loading compiles a model: keep it off the async threads.
    tokio::task::spawn_blocking(move || {
        if load {
            repository.load(&name)
        } else {
            repository.unload(&name)
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("model {action} task failed: {e}")))??;
    Ok(empty(StatusCode::OK))
}

/// The v2 shape of a declared input or output (-1 for free dimensions).
fn declared_shape(io: &IoInfo) -> Vec<i64> {
    io.dims
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|d| match d {
            Dim::Known(n) => i64::try_from(*n).unwrap_or(-1),
            Dim::Symbol(_) => -1,
        })
        .collect()
}

fn io_metadata(io: &IoInfo) -> Json {
    json!({
        "name": io.name,
        "datatype": io.dtype.and_then(datatype_name).unwrap_or("UNKNOWN"),
        "shape": declared_shape(io),
    })
}

fn model_metadata(state: &AppState, path: &ModelPath<'_>) -> Result<HttpResponse, ApiError> {
    if path.version.is_none() {
        // An unavailable model still has metadata: its state and the reason.
        if let Some(entry) = state.repository.entry(path.name) {
            if let ModelState::Unavailable(reason) = entry.state {
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "name": path.name,
                        "versions": [],
                        "platform": "onnx",
                        "inputs": [],
                        "outputs": [],
                        "state": "UNAVAILABLE",
                        "reason": reason,
                    }),
                ));
            }
        }
    }
    let model = state.repository.get(path.name, path.version)?;
    let versions: Vec<String> = match path.version {
        Some(v) => vec![v.to_string()],
        None => state
            .repository
            .entry(path.name)
            .map(|e| e.versions.keys().map(u64::to_string).collect())
            .unwrap_or_default(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": model.name,
            "versions": versions,
            "platform": "onnx",
            "inputs": model.inputs.iter().map(io_metadata).collect::<Vec<_>>(),
            "outputs": model.outputs.iter().map(io_metadata).collect::<Vec<_>>(),
            "state": "READY",
        }),
    ))
}

fn model_config(model: &ServedModel) -> Json {
    let c = &model.config;
    json!({
        "name": model.name,
        "platform": "onnx",
        "max_batch_size": if model.batched { c.max_batch_size } else { 0 },
        "dynamic_batching": serde_json::to_value(&c.dynamic_batching).unwrap_or(Json::Null),
        "instances": c.instances,
        "threads": c.threads,
        "input": model.inputs.iter().map(io_metadata).collect::<Vec<_>>(),
        "output": model.outputs.iter().map(io_metadata).collect::<Vec<_>>(),
    })
}

/// Reads the body within the size limit.
async fn read_body(
    request: Request<Incoming>,
    limit: usize,
) -> Result<(hyper::HeaderMap, Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body exceeds the server's limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts.headers, bytes))
}

/// Splits a body into its JSON header and binary tail.
fn split_body(headers: &hyper::HeaderMap, body: &Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body.clone(), Bytes::new()));
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Inference-Header-Content-Length {value:?} is not a length within the {}-byte body",
                body.len()
            ))
        })?;
    Ok((body.slice(..length), body.slice(length..)))
}

/// Decodes the request's input tensors (JSON or binary), in request order.
fn decode_inputs(
    request: &InferRequest,
    mut binary: Bytes,
    limits: &Limits,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let name = &input.name;
        if inputs.iter().any(|(n, _): &(String, Tensor)| n == name) {
            return Err(ApiError::bad_request(format!(
                "input '{name}' is given twice"
            )));
        }
        let dtype = parse_datatype(&input.datatype).ok_or_else(|| {
            ApiError::bad_request(format!(
                "input '{name}': unknown datatype '{}'",
                input.datatype
            ))
        })?;
        let (dims, count) = checked_elements(name, &input.shape, limits.max_tensor_elements)?;
        let binary_size = uint_parameter(&input.parameters, "binary_data_size")?;
        let tensor = match (&input.data, binary_size) {
            (Some(data), None) => tensor_from_json(name, dtype, &dims, count, data)?,
            (None, Some(size)) => {
                let size = usize::try_from(size).ok().filter(|&s| s <= binary.len()).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "input '{name}': binary_data_size {size} exceeds the {} bytes left in the body",
                        binary.len()
                    ))
                })?;
                let bytes = binary.split_to(size);
                tensor_from_binary(name, dtype, &dims, count, &bytes)?
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "input '{name}' has both JSON data and binary_data_size"
                )))
            }
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "input '{name}' has neither data nor binary_data_size"
                )))
            }
        };
        inputs.push((name.clone(), tensor));
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            binary.len()
        )));
    }
    Ok(inputs)
}

/// Which outputs to return and whether each goes binary.
fn requested_outputs(
    request: &InferRequest,
    model: &ServedModel,
) -> Result<Vec<(String, bool)>, ApiError> {
    let all_binary = bool_parameter(&request.parameters, "binary_data_output", false)?;
    if request.outputs.is_empty() {
        return Ok(model
            .outputs
            .iter()
            .map(|o| (o.name.clone(), all_binary))
            .collect());
    }
    request
        .outputs
        .iter()
        .map(|o| {
            if !model.outputs.iter().any(|m| m.name == o.name) {
                return Err(ApiError::bad_request(format!(
                    "model '{}' has no output '{}' (outputs: {})",
                    model.name,
                    o.name,
                    model
                        .outputs
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if o.parameters.contains_key("classification") {
                return Err(ApiError::bad_request(format!(
                    "output '{}': the classification extension is not supported",
                    o.name
                )));
            }
            Ok((
                o.name.clone(),
                bool_parameter(&o.parameters, "binary_data", all_binary)?,
            ))
        })
        .collect()
}

async fn infer(
    state: &Arc<AppState>,
    path: &ModelPath<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let model = state.repository.get(path.name, path.version)?;
    let result = infer_on(state, &model, request).await;
    state
        .repository
        .metrics()
        .request(&model.labels, result.is_ok(), started.elapsed());
    result
}

async fn infer_on(
    state: &Arc<AppState>,
    model: &Arc<ServedModel>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (headers, body) = read_body(request, state.limits.max_body_bytes).await?;
    let (header, binary) = split_body(&headers, &body)?;
    let parsed: InferRequest = serde_json::from_slice(&header)
        .map_err(|e| ApiError::bad_request(format!("malformed inference request JSON: {e}")))?;
    let inputs = decode_inputs(&parsed, binary, &state.limits)?;
    let wanted = requested_outputs(&parsed, model)?;
    let bound = model.bind(inputs)?;
    let priority = uint_parameter(&parsed.parameters, "priority")?
        .filter(|&p| p > 0)
        .map(|p| u32::try_from(p).unwrap_or(u32::MAX));
    let timeout = uint_parameter(&parsed.parameters, "timeout")?
        .filter(|&t| t > 0)
        .map(Duration::from_micros);
    let receiver = model.submit(bound, priority, timeout)?;
    let limit = state.limits.request_timeout();
    let output = tokio::time::timeout(limit, receiver)
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "the request did not finish within {} ms",
                limit.as_millis()
            ))
        })?
        .map_err(|_| ApiError::internal("the model's worker stopped before answering"))??;
    tracing::debug!(model = %model.name, id = parsed.id.as_deref().unwrap_or(""), "inference done");
    encode_response(model, parsed.id, &wanted, output.outputs)
}

fn encode_response(
    model: &ServedModel,
    id: Option<String>,
    wanted: &[(String, bool)],
    mut outputs: Vec<(String, Tensor)>,
) -> Result<HttpResponse, ApiError> {
    let mut binary = Vec::new();
    let mut encoded = Vec::with_capacity(wanted.len());
    for (name, as_binary) in wanted {
        let position = outputs.iter().position(|(n, _)| n == name).ok_or_else(|| {
            ApiError::internal(format!("the model did not produce output '{name}'"))
        })?;
        let (_, tensor) = outputs.swap_remove(position);
        let datatype = datatype_name(tensor.dtype()).ok_or_else(|| {
            ApiError::internal(format!(
                "output '{name}' has dtype {}, which v2 cannot carry",
                tensor.dtype()
            ))
        })?;
        let mut parameters = Map::new();
        let data = if *as_binary {
            let bytes = tensor_to_binary(&tensor)?;
            parameters.insert("binary_data_size".into(), Json::from(bytes.len()));
            binary.extend_from_slice(&bytes);
            None
        } else {
            Some(tensor_to_json(&tensor)?)
        };
        encoded.push(ResponseOutput {
            name: name.clone(),
            datatype,
            shape: tensor.shape().to_vec(),
            parameters,
            data,
        });
    }
    let response = InferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id,
        outputs: encoded,
    };
    let header = serde_json::to_vec(&response).map_err(|e| ApiError::internal(e.to_string()))?;
    let any_binary = wanted.iter().any(|(_, b)| *b);
    let header_length = header.len();
    let mut body = header;
    body.extend_from_slice(&binary);
    let mut http = Response::new(Full::new(Bytes::from(body)));
    let headers = http.headers_mut();
    if any_binary {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(HEADER_LENGTH, HeaderValue::from(header_length));
    } else {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(http)
}
