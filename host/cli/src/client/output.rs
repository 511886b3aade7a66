//! How the CLI prints for people: plain tables without borders, and short field lists.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// A table with `header` and `rows`, aligned in columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    table
        .lines()
        .map(|line| line.trim_end().trim_start_matches(' ').to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as a table cell: strings bare, null as `-`, lists joined with commas.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The first 12 hex digits of a SHA-256, enough to tell versions apart.
pub fn short_sha(value: &Value) -> String {
    value.as_str().unwrap_or("-").chars().take(12).collect()
}

/// A plugin's routes, one per line: `GET, POST  /path  (auth)`.
pub fn routes(plugin: &Value) -> Vec<String> {
    plugin["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    format!(
                        "{}  {}  ({})",
                        cell(&r["methods"]),
                        cell(&r["path"]),
                        cell(&r["auth"])
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_cells_read_naturally() {
        let text = super::table(
            &["name", "version"],
            vec![
                vec!["hello".into(), "1".into()],
                vec!["a-longer-name".into(), "12".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME"));
        let column = lines[0].find("VERSION").unwrap();
        assert_eq!(lines[2].find("12"), Some(column));
        assert_eq!(super::cell(&json!(null)), "-");
        assert_eq!(super::cell(&json!(["a", "b"])), "a, b");
    }
}
