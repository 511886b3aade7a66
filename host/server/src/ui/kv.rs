//! A plugin's key-value data in the browser: pages of entries by bucket and key prefix, one
//! entry as text, JSON or hex, edit and delete (with confirmation), export and import, all
//! through [`kv_admin`](crate::kv_admin) as the admin API. Values are shown escaped, never as
//! markup: a plugin storing `<script>` gets it shown as text.

use super::layout;
use super::session::{Posted, SignedIn, multipart_csrf, unconfirmed};
use crate::api::{ApiError, AppState, to_completion};
use crate::kv_admin::{self, Edit, Expect, Listing};
use crate::registry::manifest::PluginName;
use axum::body::Body;
use axum::extract::{ConnectInfo, Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value as Json;
use std::net::SocketAddr;

/// Entries per page.
const PAGE: usize = 50;
/// Characters of a value shown in a listing.
const PREVIEW_CHARS: usize = 120;
/// Bytes of a value a page shows or edits: the rest is in the export, and a larger value is
/// changed through the API.
const SHOWN_BYTES: usize = 64 * 1024;

fn plugin(name: &str) -> Result<PluginName, ApiError> {
    PluginName::parse(name).map_err(ApiError::InvalidBody)
}

/// A page URL with its query, each value escaped.
fn link(path: &str, query: &[(&str, &str)]) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        url.append_pair(name, value);
    }
    format!("{path}?{}", url.finish())
}

/// The listing's filters.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
    /// How many entries the last import wrote (shown once after it).
    imported: Option<usize>,
}

/// `GET /_/plugins/{name}/kv`.
pub(super) async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
    signed_in: SignedIn,
) -> Response {
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let after = match query.cursor.as_deref().map(kv_admin::decode_cursor) {
        Some(None) => {
            return layout::refusal(&ApiError::InvalidCursor(
                query.cursor.clone().unwrap_or_default(),
            ));
        }
        Some(Some(after)) => Some(after),
        None => None,
    };
    let listing = Listing {
        bucket: Some(query.bucket.clone()).filter(|b| !b.is_empty()),
        prefix: query.prefix.clone(),
        after,
        limit: PAGE,
    };
    let page = match kv_admin::page(&*state.store, &plugin, &listing).await {
        Ok(page) => page,
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let base = format!("/_/plugins/{name}/kv");
    let next = page.entries.last().filter(|_| page.more).map(|last| {
        link(
            &base,
            &[
                ("bucket", &query.bucket),
                ("prefix", &query.prefix),
                ("cursor", &kv_admin::encode_cursor(&last.bucket, &last.key)),
            ],
        )
    });
    let csrf = &signed_in.session.csrf;
    let content = html! {
        p { a href={ "/_/plugins/" (name) } { "← " (name) } " · " (layout::bytes(page.usage)) " stored" }
        @if let Some(count) = query.imported {
            p.notice role="status" { "Imported " (count) " entries." }
        }
        form.inline role="search" method="get" action=(base) {
            label { "Bucket" input name="bucket" value=(query.bucket) placeholder="every bucket"; }
            label { "Key prefix" input name="prefix" value=(query.prefix); }
            button type="submit" { "Show" }
        }
        @if page.entries.is_empty() {
            p { "No entries match." }
        } @else {
            table.kv {
                thead { tr { th scope="col" { "Bucket" } th scope="col" { "Key" } th scope="col" { "Size" } th scope="col" { "Value" } } }
                tbody {
                    @for entry in &page.entries {
                        tr {
                            td { code { (entry.bucket) } }
                            th scope="row" {
                                a href=(link(&format!("{base}/entry"), &[("bucket", &entry.bucket), ("key", &entry.key)])) { code { (entry.key) } }
                            }
                            td { (layout::bytes(entry.value.len() as u64)) }
                            td.preview { code { (preview(&entry.value)) } }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next) rel="next" { "Next page →" } }
        }
        section aria-labelledby="new-entry" {
            h2 id="new-entry" { "Add an entry" }
            form.stacked method="post" action={ (base) "/entry" } {
                input type="hidden" name="_csrf" value=(csrf);
                input type="hidden" name="tag" value="";
                label { "Bucket" input name="bucket" required value=(query.bucket); }
                label { "Key" input name="key" required; }
                (format_choice("text"))
                label for="new-value" { "Value" }
                textarea id="new-value" name="value" rows="4" spellcheck="false" {}
                button type="submit" { "Add" }
            }
        }
        section aria-labelledby="transfer" {
            h2 id="transfer" { "Export and import" }
            p { a href={ (base) "/export" } download={ (name) "-kv.jsonl" } { "Download every entry" } " (JSON lines, the format " code { "plinth kv export" } " writes)" }
            form.inline method="post" action={ (base) "/import" } enctype="multipart/form-data" {
                input type="hidden" name="_csrf" value=(csrf);
                label { "Import an export" input type="file" name="file" accept=".jsonl,.ndjson,application/x-ndjson" required; }
                button type="submit" { "Import" }
            }
            p.hint { "An import writes every entry in one step (same keys are replaced), or none if a line is bad or the plugin's quota would be exceeded." }
        }
    };
    layout::page(&signed_in, "Plugins", &format!("{name}: data"), content).into_response()
}

/// The start of a value as a listing shows it: text when it is UTF-8, else hex.
fn preview(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => {
            let mut shown: String = text.chars().take(PREVIEW_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            shown
        }
        Err(_) => {
            let shown = &value[..value.len().min(PREVIEW_CHARS / 3)];
            let mut hex = hex::encode(shown);
            if shown.len() < value.len() {
                hex.push('…');
            }
            format!("0x{hex}")
        }
    }
}

/// Bytes as a hex dump: offset, sixteen bytes, and the printable ones.
fn hex_dump(bytes: &[u8]) -> String {
    let mut dump = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        dump.push_str(&format!(
            "{:08x}  {:<47}  {text}\n",
            row * 16,
            hex.join(" ")
        ));
    }
    dump
}

/// How a value is shown and edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Text,
    Json,
    Hex,
}

impl View {
    fn parse(name: &str) -> Option<View> {
        match name {
            "text" => Some(View::Text),
            "json" => Some(View::Json),
            "hex" => Some(View::Hex),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            View::Text => "text",
            View::Json => "json",
            View::Hex => "hex",
        }
    }
}

/// The choice of how the typed value is read.
fn format_choice(chosen: &str) -> Markup {
    html! {
        fieldset.inline {
            legend { "Value is" }
            @for (value, label) in [("text", "text (UTF-8)"), ("json", "JSON (checked)"), ("hex", "hex bytes")] {
                label.check { input type="radio" name="format" value=(value) checked[value == chosen]; (label) }
            }
        }
    }
}

/// Names one entry, and how to show it.
#[derive(Deserialize)]
pub(super) struct EntryQuery {
    bucket: String,
    key: String,
    view: Option<String>,
}

/// `GET /_/plugins/{name}/kv/entry?bucket=&key=&view=text|json|hex`.
pub(super) async fn entry(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EntryQuery>,
    signed_in: SignedIn,
) -> Response {
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let value = match kv_admin::value(&*state.store, &plugin, &query.bucket, &query.key).await {
        Ok(Some(value)) => value,
        Ok(None) => return layout::refusal(&ApiError::KvEntryNotFound),
        Err(e) => return layout::refusal(&ApiError::from(e)),
    };
    let view = query
        .view
        .as_deref()
        .and_then(View::parse)
        .unwrap_or_else(|| default_view(&value));
    let base = format!("/_/plugins/{name}/kv");
    let here = |view: View| {
        link(
            &format!("{base}/entry"),
            &[
                ("bucket", &query.bucket),
                ("key", &query.key),
                ("view", view.name()),
            ],
        )
    };
    let (shown, note) = shown(&value, view);
    let edit = edit_box(&value);
    let csrf = &signed_in.session.csrf;
    let content = html! {
        p { a href=(link(&base, &[("bucket", &query.bucket)])) { "← every entry of " code { (query.bucket) } } }
        dl.facts {
            div { dt { "Bucket" } dd { code { (query.bucket) } } }
            div { dt { "Size" } dd { (layout::bytes(value.len() as u64)) } }
            div { dt { "SHA-256" } dd { code { (&kv_admin::tag(&value)[..16]) } } }
        }
        nav.tabs aria-label="Show the value as" {
            @for v in [View::Text, View::Json, View::Hex] {
                @if v == view {
                    a href=(here(v)) aria-current="true" { (v.name()) }
                } @else {
                    a href=(here(v)) { (v.name()) }
                }
            }
        }
        @if let Some(note) = note { p.hint { (note) } }
        pre.value { (shown) }
        section aria-labelledby="edit" {
            h2 id="edit" { "Edit" }
            @if let Some((edit_format, edit_value)) = &edit {
            form.stacked method="post" action={ (base) "/entry" } {
                input type="hidden" name="_csrf" value=(csrf);
                input type="hidden" name="bucket" value=(query.bucket);
                input type="hidden" name="key" value=(query.key);
                // Saved only while the value is still this one.
                input type="hidden" name="tag" value=(kv_admin::tag(&value));
                (format_choice(edit_format))
                // Labelled apart from the box: a label around it would take its text into its name.
                label for="edit-value" { "Value" }
                // The parser drops one line break after the tag: this one, not the value's.
                textarea id="edit-value" name="value" rows="12" spellcheck="false" { "\n" (edit_value) }
                p.hint { "The box holds the stored bytes as they are. If the plugin changes the value first, nothing is saved and you are told." }
                button type="submit" { "Save" }
            }
            } @else {
                p { "This value is larger than 64 KiB: change it with " code { "PUT /admin/plugins/" (name) "/kv/entry" } ", or export, edit and import." }
            }
        }
        section aria-labelledby="delete" {
            h2 id="delete" { "Delete" }
            form.inline method="post" action={ (base) "/delete" } {
                input type="hidden" name="_csrf" value=(csrf);
                input type="hidden" name="bucket" value=(query.bucket);
                input type="hidden" name="key" value=(query.key);
                label.check { input type="checkbox" name="confirm" value="yes" required; "Yes, delete this entry" }
                button.danger type="submit" { "Delete" }
            }
        }
    };
    layout::page(
        &signed_in,
        "Plugins",
        &format!("{name}: {}", query.key),
        content,
    )
    .into_response()
}

/// How a value is first shown: as JSON when it is JSON, as text when it is UTF-8, else as hex.
fn default_view(value: &[u8]) -> View {
    match std::str::from_utf8(value) {
        Ok(text) if value.len() <= SHOWN_BYTES && serde_json::from_str::<Json>(text).is_ok() => {
            View::Json
        }
        Ok(_) => View::Text,
        Err(_) => View::Hex,
    }
}

/// At most [`SHOWN_BYTES`] of `text`, cut at a character boundary.
fn text_start(text: &str) -> &str {
    let mut end = text.len().min(SHOWN_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The value as `view` shows it (at most [`SHOWN_BYTES`] of it), with a note when it is not all
/// of it or not in the view asked for.
fn shown(value: &[u8], view: View) -> (String, Option<&'static str>) {
    const PARTIAL: &str = "Only the first 64 KiB are shown; the export has every byte.";
    let partial = value.len() > SHOWN_BYTES;
    let hex = || hex_dump(&value[..value.len().min(SHOWN_BYTES)]);
    let text = std::str::from_utf8(value).ok();
    match view {
        View::Hex => (hex(), partial.then_some(PARTIAL)),
        View::Json => {
            let json = text
                .filter(|_| !partial)
                .and_then(|t| serde_json::from_str::<Json>(t).ok());
            match (json, text) {
                (Some(json), _) => (
                    serde_json::to_string_pretty(&json).unwrap_or_default(),
                    None,
                ),
                (None, Some(text)) => (
                    text_start(text).to_string(),
                    Some("Not JSON (or over 64 KiB): shown as text."),
                ),
                (None, None) => (hex(), Some("Not UTF-8 text: shown as hex.")),
            }
        }
        View::Text => match text {
            Some(text) => (text_start(text).to_string(), partial.then_some(PARTIAL)),
            None => (hex(), Some("Not UTF-8 text: shown as hex.")),
        },
    }
}

/// What the edit box starts with and how it is read back: the stored bytes as they are (as
/// text, or as hex when they are not UTF-8 or hold a carriage return, which a text box would
/// not keep), never reformatted; `None` for a value too large to edit in a page.
fn edit_box(value: &[u8]) -> Option<(&'static str, String)> {
    if value.len() > SHOWN_BYTES {
        return None;
    }
    match std::str::from_utf8(value) {
        Ok(text) if !text.contains('\r') => {
            let format = if serde_json::from_str::<Json>(text).is_ok() {
                "json"
            } else {
                "text"
            };
            Some((format, text.to_string()))
        }
        _ => Some(("hex", hex::encode(value))),
    }
}

/// The edit and add forms' fields.
#[derive(Deserialize)]
pub(super) struct SaveForm {
    bucket: String,
    key: String,
    #[serde(default)]
    value: String,
    format: String,
    /// The tag of the value the form was made from; empty for a new entry.
    #[serde(default)]
    tag: String,
}

/// A typed value as bytes, read as `format` says. Browsers send a text box's line breaks as
/// CRLF; they are saved as LF.
fn typed_value(format: &str, typed: &str) -> Result<Vec<u8>, String> {
    let text = typed.replace("\r\n", "\n");
    match View::parse(format) {
        Some(View::Text) => Ok(text.into_bytes()),
        Some(View::Json) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => Ok(text.into_bytes()),
            Err(e) => Err(format!("the value is not valid JSON: {e}")),
        },
        Some(View::Hex) => {
            let digits: String = text.split_whitespace().collect();
            let digits = digits.strip_prefix("0x").unwrap_or(&digits);
            hex::decode(digits).map_err(|e| format!("the value is not hex bytes: {e}"))
        }
        None => Err(format!("unknown format {format:?}: use text, json or hex")),
    }
}

/// `POST /_/plugins/{name}/kv/entry`: saves an edit, or adds an entry.
pub(super) async fn save(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<SaveForm>,
) -> Response {
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let value = match typed_value(&form.format, &form.value) {
        Ok(value) => value,
        Err(message) => {
            return layout::error_page(StatusCode::BAD_REQUEST, "invalid_value", &message);
        }
    };
    let expect = if form.tag.is_empty() {
        Expect::Absent
    } else {
        Expect::Tagged(form.tag)
    };
    let (store, limits) = (state.store.clone(), state.kv_limits);
    let (bucket, key) = (form.bucket.clone(), form.key.clone());
    let saved = to_completion(async move {
        match kv_admin::set(
            &*store, limits, &plugin, &bucket, &key, value, expect, &actor,
        )
        .await?
        {
            Edit::Written { .. } => Ok(()),
            Edit::Changed => Err(ApiError::KvValueChanged),
        }
    })
    .await;
    match saved {
        Ok(()) => Redirect::to(&link(
            &format!("/_/plugins/{name}/kv/entry"),
            &[("bucket", &form.bucket), ("key", &form.key)],
        ))
        .into_response(),
        Err(e) => layout::refusal(&e),
    }
}

/// The delete form's fields.
#[derive(Deserialize)]
pub(super) struct DeleteForm {
    bucket: String,
    key: String,
    /// `yes` once the box is ticked.
    #[serde(default)]
    confirm: String,
}

/// `POST /_/plugins/{name}/kv/delete`: removes one entry, once confirmed.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Posted { form, actor, .. }: Posted<DeleteForm>,
) -> Response {
    if form.confirm != "yes" {
        return unconfirmed();
    }
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let (store, limits) = (state.store.clone(), state.kv_limits);
    let bucket = form.bucket.clone();
    let removed = to_completion(async move {
        match kv_admin::delete(&*store, limits, &plugin, &bucket, &form.key, &actor).await? {
            true => Ok(()),
            false => Err(ApiError::KvEntryNotFound),
        }
    })
    .await;
    match removed {
        Ok(()) => Redirect::to(&link(
            &format!("/_/plugins/{name}/kv"),
            &[("bucket", &form.bucket)],
        ))
        .into_response(),
        Err(e) => layout::refusal(&e),
    }
}

/// `GET /_/plugins/{name}/kv/export`: every entry as JSON lines, downloaded as a file.
pub(super) async fn export(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: SignedIn,
) -> Response {
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let stream = kv_admin::export(state.store.clone(), &plugin);
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                // A plugin name is [a-z0-9-]: safe inside the quotes.
                format!("attachment; filename=\"{plugin}-kv.jsonl\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `POST /_/plugins/{name}/kv/import`: the uploaded export, written in one step or not at all.
pub(super) async fn import(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    signed_in: SignedIn,
    mut multipart: Multipart,
) -> Response {
    if let Err(refused) = multipart_csrf(&signed_in, &mut multipart).await {
        return refused;
    }
    let plugin = match plugin(&name) {
        Ok(plugin) => plugin,
        Err(e) => return layout::refusal(&e),
    };
    let mut body = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => match field.bytes().await {
                Ok(bytes) => body = Some(bytes),
                Err(e) => return layout::error_page(e.status(), "invalid_upload", &e.body_text()),
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return layout::error_page(e.status(), "invalid_upload", &e.body_text()),
        }
    }
    let Some(body) = body else {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            "invalid_upload",
            "Choose a file to import.",
        );
    };
    let entries = match kv_admin::parse_export(&body) {
        Ok(entries) => entries,
        Err(bad) => return layout::refusal(&ApiError::from(bad)),
    };
    let count = entries.len();
    let actor = signed_in.session.principal.actor(Some(addr));
    let (store, limits) = (state.store.clone(), state.kv_limits);
    let imported = to_completion(async move {
        Ok(kv_admin::import(&*store, limits, &plugin, entries, &actor).await?)
    })
    .await;
    match imported {
        Ok(_) => Redirect::to(&format!("/_/plugins/{name}/kv?imported={count}")).into_response(),
        Err(e) => layout::refusal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_are_read_in_their_format() {
        assert_eq!(typed_value("text", "a\r\nb").unwrap(), b"a\nb");
        assert_eq!(typed_value("json", "{\"n\": 1}").unwrap(), b"{\"n\": 1}");
        assert!(typed_value("json", "{n: 1}").unwrap_err().contains("JSON"));
        assert_eq!(typed_value("hex", "0x00 ff\n10").unwrap(), [0, 255, 16]);
        assert!(typed_value("hex", "zz").is_err());
        assert!(typed_value("html", "x").is_err());
    }

    #[test]
    fn a_hex_dump_shows_offsets_bytes_and_printable_text() {
        let dump = hex_dump(b"<script>\x00\x01 alert(1)");
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(
            lines[0],
            "00000000  3c 73 63 72 69 70 74 3e 00 01 20 61 6c 65 72 74  <script>.. alert"
        );
        assert!(lines[1].starts_with("00000010  28 31 29"), "{}", lines[1]);
    }

    #[test]
    fn the_edit_box_holds_the_stored_bytes_unchanged() {
        // Keys keep their order and numbers their digits: nothing is parsed and written back.
        let json = br#"{"z": 1, "a": 12345678901234567890123}"#;
        assert_eq!(
            edit_box(json),
            Some(("json", String::from_utf8(json.to_vec()).unwrap()))
        );
        assert_eq!(
            edit_box(b"\nfirst line"),
            Some(("text", "\nfirst line".into()))
        );
        assert_eq!(edit_box(b"a\r\nb"), Some(("hex", "610d0a62".into())));
        assert_eq!(edit_box(&[0xff]), Some(("hex", "ff".into())));
        assert_eq!(edit_box(&vec![b'x'; SHOWN_BYTES + 1]), None);
    }

    #[test]
    fn a_page_shows_at_most_64_kib_of_a_value() {
        let big = "é".repeat(SHOWN_BYTES);
        let (text, note) = shown(big.as_bytes(), View::Text);
        assert!(text.len() <= SHOWN_BYTES && text.len() > SHOWN_BYTES - 2);
        assert!(note.is_some());
        let (dump, _) = shown(big.as_bytes(), View::Hex);
        assert_eq!(dump.lines().count(), SHOWN_BYTES / 16);
        let (as_json, note) = shown(b"[1,2]", View::Json);
        assert_eq!((as_json.as_str(), note), ("[\n  1,\n  2\n]", None));
        assert_eq!(default_view(b"[1,2]"), View::Json);
        assert_eq!(default_view(b"plain"), View::Text);
        assert_eq!(default_view(&[0xff]), View::Hex);
    }

    #[test]
    fn a_preview_is_short_and_binary_shows_as_hex() {
        assert_eq!(preview(b"hello"), "hello");
        assert_eq!(
            preview("é".repeat(200).as_bytes()).chars().count(),
            PREVIEW_CHARS + 1
        );
        assert_eq!(preview(&[0xff, 0x00]), "0xff00");
    }
}
