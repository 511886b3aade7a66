//! `/admin/plugins/{name}/kv`: operators browse a plugin's key-value data, export it as JSON
//! lines and import such an export back (backup and restore). The plugin need not be deployed:
//! data outlives a delete without `?purge=true`.

use super::admin::Operator;
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::registry::manifest::PluginName;
use crate::store::{KvEntry, Store};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and largest page of `GET .../kv`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Entries read from the store per chunk of an export.
const EXPORT_CHUNK: usize = 500;
/// Largest import body: a full default quota (256 MiB) grows by a third in base64, plus the
/// JSON around it.
const MAX_IMPORT_BYTES: usize = 512 << 20;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    let import = OpenApiRouter::new()
        .routes(routes!(import))
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES));
    OpenApiRouter::new()
        .routes(routes!(browse))
        .routes(routes!(export))
        .merge(import)
}

fn plugin_name(name: &str) -> Result<String, ApiError> {
    PluginName::parse(name)
        .map(|n| n.to_string())
        .map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// One entry in a listing and in an export line.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    bucket: String,
    key: String,
    /// The value as text when it is UTF-8 (listings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// The exact bytes, base64 (standard alphabet, padded).
    value_base64: String,
}

impl EntryJson {
    fn new(entry: KvEntry, with_text: bool) -> Self {
        let value_base64 = STANDARD.encode(&entry.value);
        let value = if with_text {
            String::from_utf8(entry.value).ok()
        } else {
            None
        };
        Self {
            bucket: entry.bucket,
            key: entry.key,
            value,
            value_base64,
        }
    }
}

/// A listing position: the last (bucket, key) shown, opaque to clients.
fn encode_cursor(bucket: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(bucket, key)).unwrap_or_default())
}

fn decode_cursor(cursor: &str) -> Result<(String, String), ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::InvalidCursor(cursor.to_string()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct BrowseQuery {
    bucket: Option<String>,
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Page {
    plugin: String,
    entries: Vec<EntryJson>,
    /// Pass as `cursor` for the next page; absent at the end.
    cursor: Option<String>,
    /// Bytes the plugin stores (bucket + key + value of every entry).
    usage_bytes: u64,
}

/// `GET .../kv?bucket=&prefix=&cursor=&limit=`: entries ordered by bucket, then key. `prefix`
/// filters keys (within `bucket` when given, in every bucket otherwise).
#[utoipa::path(get, path = "/admin/plugins/{name}/kv", tag = "kv", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), BrowseQuery),
    responses((status = 200, body = Page), (status = 400, body = ErrorBody)))]
async fn browse(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<BrowseQuery>,
) -> Result<Json<Page>, ApiError> {
    let plugin = plugin_name(&name)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let store = &*state.store;
    let page = {
        let mut entries = Vec::new();
        let mut more = false;
        match &query.bucket {
            Some(bucket) => {
                let after_key = after
                    .as_ref()
                    .filter(|(b, _)| b == bucket)
                    .map(|(_, k)| k.as_str());
                let keys = store
                    .kv_keys(&plugin, bucket, &query.prefix, after_key, limit + 1)
                    .await?;
                more = keys.len() > limit;
                for key in keys.into_iter().take(limit) {
                    if let Some(value) = store.kv_get(&plugin, bucket, &key).await? {
                        entries.push(KvEntry {
                            bucket: bucket.clone(),
                            key,
                            value,
                        });
                    }
                }
            }
            None => {
                let mut position = after.clone();
                'scan: loop {
                    let chunk = store
                        .kv_entries(
                            &plugin,
                            position.as_ref().map(|(b, k)| (b.as_str(), k.as_str())),
                            EXPORT_CHUNK,
                        )
                        .await?;
                    let Some(last) = chunk.last() else {
                        break;
                    };
                    let exhausted = chunk.len() < EXPORT_CHUNK;
                    position = Some((last.bucket.clone(), last.key.clone()));
                    for entry in chunk {
                        if !entry.key.starts_with(&query.prefix) {
                            continue;
                        }
                        if entries.len() == limit {
                            more = true;
                            break 'scan;
                        }
                        entries.push(entry);
                    }
                    if exhausted {
                        break;
                    }
                }
            }
        }
        let cursor = match entries.last() {
            Some(last) if more => Some(encode_cursor(&last.bucket, &last.key)),
            _ => None,
        };
        Page {
            usage_bytes: store.kv_usage(&plugin).await?,
            plugin,
            entries: entries
                .into_iter()
                .map(|e| EntryJson::new(e, true))
                .collect(),
            cursor,
        }
    };
    Ok(Json(page))
}

/// `GET .../kv/export`: every entry as one JSON line `{"bucket","key","value_base64"}`,
/// streamed in key order without holding the whole export in memory.
#[utoipa::path(get, path = "/admin/plugins/{name}/kv/export", tag = "kv", security(("bearer" = [])), params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, content_type = "application/x-ndjson", description = "one `{bucket, key, value_base64}` per line")))]
async fn export(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let plugin = plugin_name(&name)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store: Arc<dyn Store> = state.store.clone();
    tokio::spawn(async move {
        let mut after: Option<(String, String)> = None;
        loop {
            let position = after.as_ref().map(|(b, k)| (b.as_str(), k.as_str()));
            let chunk = match store.kv_entries(&plugin, position, EXPORT_CHUNK).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    // The client sees the body end with an error; the operator sees why.
                    tracing::error!(plugin, error = %e, "kv export failed");
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let Some(last) = chunk.last() else {
                return;
            };
            let exhausted = chunk.len() < EXPORT_CHUNK;
            after = Some((last.bucket.clone(), last.key.clone()));
            let mut lines = Vec::new();
            for entry in chunk {
                if serde_json::to_writer(&mut lines, &EntryJson::new(entry, false)).is_err() {
                    return;
                }
                lines.push(b'\n');
            }
            if sender.send(Ok(Bytes::from(lines))).await.is_err() || exhausted {
                return; // client gone, or done
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct Imported {
    plugin: String,
    imported: usize,
    usage_bytes: u64,
}

/// `POST .../kv/import` with the JSON lines of an export: every entry is written in one atomic
/// step (same keys are replaced), or, on any bad line or over quota, none.
#[utoipa::path(post, path = "/admin/plugins/{name}/kv/import", tag = "kv", security(("bearer" = [])), params(("name" = String, Path, description = "The plugin")),
    request_body(content = String, content_type = "application/x-ndjson", description = "the lines of an export"),
    responses((status = 200, body = Imported), (status = 400, body = ErrorBody, description = "invalid_import"),
        (status = 507, body = ErrorBody, description = "quota_exceeded")))]
async fn import(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Imported>, ApiError> {
    let plugin = plugin_name(&name)?;
    let mut entries = Vec::new();
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |why: String| ApiError::InvalidImport {
            line: index + 1,
            message: why,
        };
        let entry: EntryJson = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let value = STANDARD
            .decode(&entry.value_base64)
            .map_err(|e| bad(format!("value_base64: {e}")))?;
        entries.push(KvEntry {
            bucket: entry.bucket,
            key: entry.key,
            value,
        });
    }
    let count = entries.len();
    let bytes: usize = entries
        .iter()
        .map(|e| e.bucket.len() + e.key.len() + e.value.len())
        .sum();
    // Written with the data: an import is never stored without its entry.
    let audit = actor.records(
        "kv.import",
        &name,
        serde_json::json!({ "entries": count, "bytes": bytes }),
    );
    let usage = state
        .store
        .kv_import(&plugin, entries, state.kv_limits, Some(audit.record()?))
        .await?;
    audit.committed();
    tracing::info!(plugin = name, entries = count, "kv data imported");
    Ok(Json(Imported {
        plugin: name,
        imported: count,
        usage_bytes: usage,
    }))
}
