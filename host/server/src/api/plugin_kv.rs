//! `/admin/plugins/{name}/kv`: operators browse a plugin's key-value data, read, write and
//! delete one entry, export it as JSON lines and import such an export back (backup and
//! restore), through [`kv_admin`](crate::kv_admin) as the dashboard does. The plugin need not
//! be deployed: data outlives a delete without `?purge=true`.

use super::admin::Operator;
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::kv_admin::{self, Edit, Expect, ExportLine, Listing};
use crate::registry::manifest::PluginName;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and largest page of `GET .../kv`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let import = OpenApiRouter::new()
        .routes(routes!(import))
        .layer(DefaultBodyLimit::max(kv_admin::MAX_IMPORT_BYTES));
    // A value over the plugin's limit is refused by the store with `value_too_large`; this
    // only stops a body far past it before it is read.
    let value_limit = usize::try_from(state.kv_limits.max_value)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let entry = OpenApiRouter::new()
        .routes(routes!(read_entry, write_entry, delete_entry))
        .layer(DefaultBodyLimit::max(value_limit));
    OpenApiRouter::new()
        .routes(routes!(browse))
        .routes(routes!(export))
        .merge(import)
        .merge(entry)
}

fn plugin_name(name: &str) -> Result<PluginName, ApiError> {
    PluginName::parse(name).map_err(ApiError::InvalidBody)
}

fn decode_cursor(cursor: &str) -> Result<(String, String), ApiError> {
    kv_admin::decode_cursor(cursor).ok_or_else(|| ApiError::InvalidCursor(cursor.to_string()))
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
    entries: Vec<ExportLine>,
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
    let listing = Listing {
        bucket: query.bucket,
        prefix: query.prefix,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
    };
    let page = kv_admin::page(&*state.store, &plugin, &listing).await?;
    let cursor = match page.entries.last() {
        Some(last) if page.more => Some(kv_admin::encode_cursor(&last.bucket, &last.key)),
        _ => None,
    };
    Ok(Json(Page {
        plugin: plugin.to_string(),
        entries: page
            .entries
            .into_iter()
            .map(|e| ExportLine::new(e, true))
            .collect(),
        cursor,
        usage_bytes: page.usage,
    }))
}

/// Names one entry.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct EntryQuery {
    bucket: String,
    key: String,
}

/// `ETag` / `If-Match` form of a value's tag.
fn etag(value: &[u8]) -> String {
    format!("\"{}\"", kv_admin::tag(value))
}

/// `GET .../kv/entry?bucket=&key=`: the value's exact bytes, with its tag as the `ETag`.
#[utoipa::path(get, path = "/admin/plugins/{name}/kv/entry", tag = "kv", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), EntryQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
        headers(("etag" = String, description = "the value's tag, for `If-Match`"))),
        (status = 404, body = ErrorBody, description = "kv_entry_not_found")))]
async fn read_entry(
    _: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EntryQuery>,
) -> Result<Response, ApiError> {
    let plugin = plugin_name(&name)?;
    let value = kv_admin::value(&*state.store, &plugin, &query.bucket, &query.key)
        .await?
        .ok_or(ApiError::KvEntryNotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::ETAG, etag(&value)),
        ],
        value,
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct Written {
    plugin: String,
    bucket: String,
    key: String,
    /// The new value's tag (its `ETag`).
    tag: String,
    usage_bytes: u64,
}

/// What a write expects, from `If-Match: "tag"` or `If-None-Match: *`.
fn expectation(headers: &HeaderMap) -> Result<Expect, ApiError> {
    let text = |name: header::HeaderName| {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| ApiError::InvalidBody(format!("{name} is not text")))
            })
            .transpose()
    };
    match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::InvalidBody(
            "send If-Match or If-None-Match, not both".into(),
        )),
        (None, None) => Ok(Expect::Any),
        (Some("*"), None) => Ok(Expect::Present),
        (Some(tag), None) => Ok(Expect::Tagged(tag.trim_matches('"').to_string())),
        (None, Some("*")) => Ok(Expect::Absent),
        (None, Some(_)) => Err(ApiError::InvalidBody(
            "If-None-Match takes only `*` (create, never replace)".into(),
        )),
    }
}

/// `PUT .../kv/entry?bucket=&key=` with the value's bytes as the body. With `If-Match: "tag"`
/// it applies only while the value is the one tagged, with `If-Match: *` only while there is
/// one, with `If-None-Match: *` only while there is none (else 412 `kv_value_changed`, nothing
/// written). Audited as `kv.set`.
#[utoipa::path(put, path = "/admin/plugins/{name}/kv/entry", tag = "kv", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), EntryQuery,
        ("if-match" = Option<String>, Header, description = "the tag (`ETag`) the value must still have, or `*`: only if the key holds a value"),
        ("if-none-match" = Option<String>, Header, description = "`*`: only if the key holds nothing")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the value's bytes"),
    responses((status = 200, body = Written),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 412, body = ErrorBody, description = "kv_value_changed"),
        (status = 413, body = ErrorBody, description = "value_too_large"),
        (status = 507, body = ErrorBody, description = "quota_exceeded")))]
async fn write_entry(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EntryQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Written>, ApiError> {
    let plugin = plugin_name(&name)?;
    let expect = expectation(&headers)?;
    let tag = kv_admin::tag(&body);
    let edit = kv_admin::set(
        &*state.store,
        state.kv_limits,
        &plugin,
        &query.bucket,
        &query.key,
        body.to_vec(),
        expect,
        &actor,
    )
    .await?;
    match edit {
        Edit::Written { usage } => Ok(Json(Written {
            plugin: plugin.to_string(),
            bucket: query.bucket,
            key: query.key,
            tag,
            usage_bytes: usage,
        })),
        Edit::Changed => Err(ApiError::KvValueChanged),
    }
}

/// `DELETE .../kv/entry?bucket=&key=`: removes the entry. Audited as `kv.delete`.
#[utoipa::path(delete, path = "/admin/plugins/{name}/kv/entry", tag = "kv", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin"), EntryQuery),
    responses((status = 204, description = "removed"),
        (status = 404, body = ErrorBody, description = "kv_entry_not_found")))]
async fn delete_entry(
    Operator(actor): Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EntryQuery>,
) -> Result<StatusCode, ApiError> {
    let plugin = plugin_name(&name)?;
    let removed = kv_admin::delete(
        &*state.store,
        state.kv_limits,
        &plugin,
        &query.bucket,
        &query.key,
        &actor,
    )
    .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::KvEntryNotFound)
    }
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
    let stream = kv_admin::export(state.store.clone(), &plugin);
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
    let entries = kv_admin::parse_export(&body)?;
    let count = entries.len();
    let usage = kv_admin::import(&*state.store, state.kv_limits, &plugin, entries, &actor).await?;
    Ok(Json(Imported {
        plugin: name,
        imported: count,
        usage_bytes: usage,
    }))
}
