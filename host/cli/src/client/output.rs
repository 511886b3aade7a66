//! How the CLI prints for people: plain tables without borders, one row per item of the
//! server's typed answers, and short field lists.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use plinth_host::audit::AuditEntry;
use plinth_host::auth::{ApiKeyInfo, UserInfo};
use plinth_host::registry::plugin_config::ShownValue;
use plinth_host::registry::{PluginInfo, RouteInfo, VersionInfo};

/// A table with `header` and `rows`, aligned in columns.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
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

/// An item the server lists, as one row of a table.
pub(super) trait Row {
    /// The column names.
    const HEADER: &'static [&'static str];
    /// This item's cells, one per column.
    fn cells(&self) -> Vec<String>;
}

/// `items` as a table, one row each.
pub(super) fn rows<R: Row>(items: &[R]) -> String {
    table(R::HEADER, items.iter().map(Row::cells).collect())
}

/// An optional value as a cell: `-` when absent.
pub(super) fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// A list as a cell: joined with commas, `-` when empty.
pub(super) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// `yes` or nothing, for a flag column.
fn flag(set: bool, text: &str) -> String {
    if set { text.into() } else { String::new() }
}

/// The first 12 hex digits of a SHA-256, enough to tell versions apart.
pub(super) fn short_sha(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

/// A plugin's routes, one per line: `GET, POST  /path  (auth)`.
pub(super) fn routes(routes: &[RouteInfo]) -> Vec<String> {
    routes
        .iter()
        .map(|r| format!("{}  {}  ({})", list(&r.methods), r.path, r.auth))
        .collect()
}

impl Row for PluginInfo {
    const HEADER: &'static [&'static str] =
        &["name", "version", "routes", "deployed", "missing config"];
    fn cells(&self) -> Vec<String> {
        let paths: Vec<&str> = self.routes.iter().map(|r| r.path.as_str()).collect();
        vec![
            self.name.clone(),
            self.version.to_string(),
            paths.join(" "),
            self.deployed_at.clone(),
            list(&self.missing_config),
        ]
    }
}

impl Row for VersionInfo {
    const HEADER: &'static [&'static str] =
        &["version", "active", "sha256", "bytes", "deployed", "by"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.version.to_string(),
            flag(self.active, "*"),
            short_sha(&self.sha256),
            self.size.to_string(),
            self.deployed_at.clone(),
            or_dash(self.deployed_by.as_deref()),
        ]
    }
}

impl Row for ShownValue {
    const HEADER: &'static [&'static str] = &["key", "value", "secret", "updated"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.key.clone(),
            self.value.clone(),
            flag(self.secret, "yes"),
            self.updated_at.clone(),
        ]
    }
}

impl Row for UserInfo {
    const HEADER: &'static [&'static str] = &["id", "email", "roles", "disabled"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.email.clone(),
            list(&self.roles),
            flag(self.disabled, "yes"),
        ]
    }
}

impl Row for ApiKeyInfo {
    const HEADER: &'static [&'static str] = &["id", "name", "role", "expires", "last used"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.role.clone(),
            or_dash(self.expires_at.as_deref()),
            or_dash(self.last_used_at.as_deref()),
        ]
    }
}

impl Row for AuditEntry {
    const HEADER: &'static [&'static str] = &["at", "actor", "from", "action", "target", "details"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.at.clone(),
            self.actor.clone(),
            or_dash(self.address.as_deref()),
            self.action.clone(),
            self.target.clone(),
            self.details.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_cells_read_naturally() {
        let text = table(
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
        assert_eq!(or_dash(None), "-");
        assert_eq!(list(&["a".into(), "b".into()]), "a, b");
        assert_eq!(list(&[]), "-");
    }

    #[test]
    fn a_row_has_a_cell_per_column() {
        let user = UserInfo {
            id: "u1".into(),
            email: "a@example.com".into(),
            roles: vec!["operator".into()],
            disabled: true,
            created_at: "2026-12-01T00:00:00.000Z".into(),
        };
        let text = rows(&[user]);
        assert!(text.lines().nth(1).unwrap().contains("operator"));
        assert_eq!(
            UserInfo::HEADER.len(),
            rows::<UserInfo>(&[]).split_whitespace().count()
        );
    }
}
