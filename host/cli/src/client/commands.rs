//! What each CLI command does: the requests it makes and what it prints (tables for people,
//! the server's JSON with `--json`).

use super::deploy::{deploy, deployed_text, upload};
use super::output::{list, or_dash, routes, rows};
use super::{Api, ClientError, Credentials, credentials::Session, seg, typed};
use crate::cli::{
    ApiKeysCommand, ClientArgs, Command, ConfigCommand, KeysCommand, PluginsCommand, UsersCommand,
};
use plinth_host::api::{ApiKeyList, PluginList, SigningKeys, VersionList};
use plinth_host::audit::AuditPage;
use plinth_host::auth::manage::UserPage;
use plinth_host::auth::{NewApiKey, UserInfo};
use plinth_host::plugin_logs::{LogLine, LogPage};
use plinth_host::registry::{ConfigView, Deployed, PluginInfo};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::PathBuf;

/// Prints `json` with `--json`, else the human text.
fn print(args: &ClientArgs, json: &Value, human: impl FnOnce() -> String) {
    if args.json {
        println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
    } else {
        println!("{}", human());
    }
}

/// Prints the server's `answer` as it came with `--json`, else read as the server's type `T`
/// and shown for people.
fn show<T: DeserializeOwned>(
    args: &ClientArgs,
    answer: &Value,
    human: impl FnOnce(T) -> String,
) -> Result<(), ClientError> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
    } else {
        println!("{}", human(typed(answer)?));
    }
    Ok(())
}

/// Runs a client command (every command but `serve`).
pub(crate) async fn run(command: Command) -> Result<(), ClientError> {
    match command {
        Command::Serve(_) | Command::New { .. } | Command::Migrate { .. } => Err(
            ClientError::Local("`serve`, `new` and `migrate` are not client commands".into()),
        ),
        Command::Login {
            email,
            password_stdin,
            with_token,
            client,
        } => login(&client, email, password_stdin, with_token).await,
        Command::Logout { client } => logout(&client).await,
        Command::Deploy {
            path,
            manifest,
            client,
        } => {
            let path = path.unwrap_or_else(|| PathBuf::from("."));
            let mut api = Api::new(&client)?;
            let deployed = deploy(&mut api, &path, manifest.as_deref()).await?;
            show(&client, &deployed, |d: Deployed| deployed_text(&d))
        }
        Command::Plugins { command, client } => plugins(command, &client).await,
        Command::Dev { dir, listen } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            super::dev::dev(&dir, &listen).await
        }
        Command::Apply {
            dir,
            prune,
            dry_run,
            client,
        } => apply(&client, &dir, prune, dry_run).await,
        Command::Rollback { name, to, client } => {
            let mut api = Api::new(&client)?;
            let body = match to {
                Some(version) => json!({ "version": version }),
                None => Value::Null,
            };
            let done = api
                .call(
                    Method::POST,
                    &format!("/admin/plugins/{}/rollback", seg(&name)),
                    body,
                )
                .await?;
            show(&client, &done, |done: Deployed| {
                let version = done.info.version;
                if done.unchanged {
                    format!("{name}: version {version} is already active")
                } else {
                    format!("{name}: version {version} is active")
                }
            })
        }
        Command::Logs {
            name,
            follow,
            since,
            limit,
            client,
        } => logs(&client, &name, follow, since, limit).await,
        Command::Config { command, client } => config(command, &client).await,
        Command::Users { command, client } => users(command, &client).await,
        Command::ApiKeys { command, client } => api_keys(command, &client).await,
        Command::Keys { command, client } => {
            let mut api = Api::new(&client)?;
            let body = match command {
                KeysCommand::Rotate => {
                    api.call(Method::POST, "/admin/signing-keys/rotate", Value::Null)
                        .await?
                }
                KeysCommand::List => api.get("/admin/signing-keys").await?,
            };
            show(&client, &body, |keys: SigningKeys| {
                format!(
                    "signing key: {}\nverifying:   {}",
                    keys.current.as_deref().unwrap_or("?"),
                    list(&keys.verifying)
                )
            })
        }
        Command::Audit {
            action,
            target,
            limit,
            client,
        } => {
            let mut api = Api::new(&client)?;
            let mut query = format!("/admin/audit?limit={limit}");
            if let Some(action) = action {
                query.push_str(&format!("&action={}", seg(&action)));
            }
            if let Some(target) = target {
                query.push_str(&format!("&target={}", seg(&target)));
            }
            let page = api.get(&query).await?;
            show(&client, &page, |page: AuditPage| rows(&page.entries))
        }
    }
}

async fn plugins(command: PluginsCommand, client: &ClientArgs) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    match command {
        PluginsCommand::List => {
            let listed = api.get("/admin/plugins").await?;
            show(client, &listed, |listed: PluginList| rows(&listed.plugins))?;
        }
        PluginsCommand::Show { name } => {
            let plugin = api.get(&format!("/admin/plugins/{}", seg(&name))).await?;
            show(client, &plugin, |plugin: PluginInfo| show_text(&plugin))?;
        }
        PluginsCommand::Delete { name, purge } => {
            api.call(
                Method::DELETE,
                &format!("/admin/plugins/{}?purge={purge}", seg(&name)),
                Value::Null,
            )
            .await?;
            let done = json!({ "deleted": name, "purged": purge });
            print(client, &done, || {
                if purge {
                    format!("deleted {name} with its data, config and logs")
                } else {
                    format!("deleted {name} (its data and config stay; --purge removes them)")
                }
            });
        }
        PluginsCommand::Versions { name } => {
            let listed = api
                .get(&format!("/admin/plugins/{}/versions", seg(&name)))
                .await?;
            show(client, &listed, |listed: VersionList| {
                rows(&listed.versions)
            })?;
        }
    }
    Ok(())
}

fn show_text(plugin: &PluginInfo) -> String {
    let limits = &plugin.limits;
    let failures = &plugin.failures;
    let mut lines = vec![
        format!("name:        {}", plugin.name),
        format!("version:     {}", plugin.version),
        format!(
            "component:   sha256 {} ({} bytes)",
            plugin.sha256, plugin.size
        ),
        format!(
            "deployed:    {} by {}",
            plugin.deployed_at,
            or_dash(plugin.deployed_by.as_deref())
        ),
        format!("outbound:    {}", list(&plugin.outbound)),
        format!("missing:     {}", list(&plugin.missing_config)),
        format!(
            "limits:      memory {}, timeout {}, {} at once, request body {}, response body {}",
            limits.memory,
            limits.timeout,
            limits.max_concurrency,
            limits.max_request_body,
            limits.max_response_body,
        ),
        format!(
            "failures:    {} traps, {} timeouts, {} over memory",
            failures.traps, failures.timeouts, failures.memory_limit,
        ),
        "routes:".to_string(),
    ];
    lines.extend(routes(&plugin.routes).into_iter().map(|r| format!("  {r}")));
    lines.push("imports:".to_string());
    for grant in &plugin.grants {
        lines.push(format!("  {}: {}", grant.interface, grant.access));
    }
    lines.join("\n")
}

/// One log line for people: time, level, source, message.
fn log_line(line: &LogLine) -> String {
    format!(
        "{} {:<5} {:<6} {}",
        plinth_host::units::rfc3339_at(line.at),
        line.level.as_str(),
        line.source.as_str(),
        line.message
    )
}

async fn logs(
    client: &ClientArgs,
    name: &str,
    follow: bool,
    since: Option<u64>,
    limit: usize,
) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    let mut path = format!("/admin/plugins/{}/logs?limit={limit}", seg(name));
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    if !follow {
        let page = api.get(&path).await?;
        return show(client, &page, |page: LogPage| {
            let lines: Vec<String> = page.lines.iter().map(|line| log_line(line)).collect();
            lines.join("\n")
        });
    }
    path.push_str("&follow=true");
    let mut response = api
        .send_raw(|api| {
            api.request(Method::GET, &path)
                .header("accept", "text/event-stream")
        })
        .await?;
    if !response.status().is_success() {
        return super::read_json(response).await.map(drop);
    }
    // Server-sent events: `id:` and `data:` lines, a blank line ends an event.
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| api.unreachable(e))? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim_start();
                if client.json {
                    println!("{data}");
                } else if let Ok(line) = serde_json::from_str::<LogLine>(data) {
                    println!("{}", log_line(&line));
                } else {
                    eprintln!("(skipped {data} lines the terminal could not keep up with)");
                }
            }
        }
    }
    Ok(())
}

async fn config(command: ConfigCommand, client: &ClientArgs) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    match command {
        ConfigCommand::Set {
            name,
            key,
            value,
            secret,
        } => {
            let view = api
                .call(
                    Method::PUT,
                    &format!("/admin/plugins/{}/config/{}", seg(&name), seg(&key)),
                    json!({ "value": value, "secret": secret }),
                )
                .await?;
            show(client, &view, |_: ConfigView| {
                let kind = if secret { "secret" } else { "config key" };
                format!("set {kind} {key} of {name}")
            })?;
        }
        ConfigCommand::Get { name, key } => {
            let view = api
                .get(&format!("/admin/plugins/{}/config", seg(&name)))
                .await?;
            let shown: ConfigView = typed(&view)?;
            match key {
                Some(key) => {
                    let found = shown.config.iter().find(|v| v.key == key).ok_or_else(|| {
                        ClientError::Refused {
                            status: 404,
                            code: "config_key_not_found".into(),
                            message: format!("{name} has no config key {key:?}"),
                        }
                    })?;
                    let json = serde_json::to_value(found).unwrap_or_default();
                    print(client, &json, || found.value.clone());
                }
                None => print(client, &view, || {
                    let mut text = rows(&shown.config);
                    if !shown.missing.is_empty() {
                        text.push_str(&format!("\nmissing: {}", list(&shown.missing)));
                    }
                    text
                }),
            }
        }
        ConfigCommand::Unset { name, key } => {
            api.call(
                Method::DELETE,
                &format!("/admin/plugins/{}/config/{}", seg(&name), seg(&key)),
                Value::Null,
            )
            .await?;
            let done = json!({ "plugin": name, "unset": key });
            print(client, &done, || format!("removed {key} from {name}"));
        }
    }
    Ok(())
}

/// A password from standard input (one line) or a hidden prompt on a terminal.
fn read_password(from_stdin: bool, prompt: &str) -> Result<String, ClientError> {
    use std::io::IsTerminal;
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Local(format!("reading the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt)
            .map_err(|e| ClientError::Local(format!("reading the password: {e}")))?
    };
    if password.is_empty() {
        return Err(ClientError::Local("no password given".into()));
    }
    Ok(password)
}

async fn users(command: UsersCommand, client: &ClientArgs) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    let user = |id: &str, action: &str| format!("/admin/users/{}{action}", seg(id));
    let answer = match command {
        UsersCommand::List => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let path = match &after {
                    Some(a) => format!("/admin/users?limit=500&after={}", seg(a)),
                    None => "/admin/users?limit=500".to_string(),
                };
                let page: UserPage = typed(&api.get(&path).await?)?;
                all.extend(page.users);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let listed = json!({ "users": all });
            print(client, &listed, || rows(&all));
            return Ok(());
        }
        UsersCommand::Create { email, roles } => {
            let password = read_password(false, "password for the new account: ")?;
            api.call(
                Method::POST,
                "/admin/users",
                json!({ "email": email, "password": password, "roles": roles }),
            )
            .await?
        }
        UsersCommand::Disable { id } => {
            api.call(Method::POST, &user(&id, "/disable"), Value::Null)
                .await?
        }
        UsersCommand::Enable { id } => {
            api.call(Method::POST, &user(&id, "/enable"), Value::Null)
                .await?
        }
        UsersCommand::Roles { id, roles } => {
            api.call(Method::PUT, &user(&id, "/roles"), json!({ "roles": roles }))
                .await?
        }
        UsersCommand::Delete { id } => {
            api.call(Method::DELETE, &user(&id, ""), Value::Null)
                .await?;
            let done = json!({ "deleted": id });
            print(client, &done, || format!("deleted user {id}"));
            return Ok(());
        }
    };
    show(client, &answer, |user: UserInfo| rows(&[user]))
}

async fn api_keys(command: ApiKeysCommand, client: &ClientArgs) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    match command {
        ApiKeysCommand::List => {
            let listed = api.get("/admin/api-keys").await?;
            show(client, &listed, |listed: ApiKeyList| rows(&listed.api_keys))?;
        }
        ApiKeysCommand::Create {
            name,
            role,
            expires_in,
        } => {
            let created = api
                .call(
                    Method::POST,
                    "/admin/api-keys",
                    json!({ "name": name, "role": role, "expires_in": expires_in }),
                )
                .await?;
            show(client, &created, |created: NewApiKey| {
                format!(
                    "{}\n(id {}, role {}; the key is shown only now)",
                    created.key, created.info.id, created.info.role
                )
            })?;
        }
        ApiKeysCommand::Revoke { id } => {
            api.call(
                Method::DELETE,
                &format!("/admin/api-keys/{}", seg(&id)),
                Value::Null,
            )
            .await?;
            let done = json!({ "revoked": id });
            print(client, &done, || format!("revoked API key {id}"));
        }
    }
    Ok(())
}

async fn login(
    client: &ClientArgs,
    email: Option<String>,
    password_stdin: bool,
    with_token: Option<String>,
) -> Result<(), ClientError> {
    let server = client.server.trim_end_matches('/').to_string();
    let session = match with_token {
        Some(token) => {
            // Check the token before storing it.
            let mut api = Api::new(&ClientArgs {
                token: Some(token.clone()),
                ..client.clone()
            })?;
            api.get("/auth/me").await?;
            Session {
                access_token: token,
                refresh_token: None,
                email: None,
            }
        }
        None => {
            let email = match email {
                Some(email) => email,
                None => {
                    eprint!("email: ");
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map_err(|e| ClientError::Local(format!("reading the email: {e}")))?;
                    line.trim().to_string()
                }
            };
            let password = read_password(password_stdin, "password: ")?;
            let mut api = Api::new(&ClientArgs {
                token: Some(String::new()),
                ..client.clone()
            })?;
            let body = api
                .send(|api| {
                    api.http
                        .post(format!("{}/auth/login", api.server))
                        .timeout(super::TIMEOUT)
                        .json(&json!({ "email": email, "password": password }))
                })
                .await?;
            Session::from_login(typed(&body)?)
        }
    };
    let mut credentials = Credentials::load()?;
    let who = session.email.clone().unwrap_or_else(|| "a token".into());
    credentials.set(&server, session);
    credentials.save()?;
    let done = json!({ "server": server, "signed_in_as": who });
    print(client, &done, || {
        format!(
            "signed in to {server} as {who} (stored in {})",
            Credentials::path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    });
    Ok(())
}

async fn logout(client: &ClientArgs) -> Result<(), ClientError> {
    let server = client.server.trim_end_matches('/').to_string();
    let mut credentials = Credentials::load()?;
    let Some(session) = credentials.remove(&server) else {
        return Err(ClientError::NoToken(server));
    };
    if let Some(refresh_token) = &session.refresh_token {
        // Ending the session server-side is best effort: the local copy goes either way.
        let _ = reqwest::Client::new()
            .post(format!("{server}/auth/logout"))
            .json(&json!({ "refresh_token": refresh_token }))
            .timeout(super::TIMEOUT)
            .send()
            .await;
    }
    credentials.save()?;
    let done = json!({ "server": server, "signed_out": true });
    print(client, &done, || format!("signed out of {server}"));
    Ok(())
}

/// What the server runs now, for planning.
async fn current_state(
    api: &mut Api,
    names: &[String],
) -> Result<std::collections::BTreeMap<String, plinth_host::apply::Current>, ClientError> {
    let listed: PluginList = typed(&api.get("/admin/plugins").await?)?;
    let mut current = std::collections::BTreeMap::new();
    for plugin in listed.plugins {
        // Only plugins in the folder need their manifest compared.
        let manifest = if names.contains(&plugin.name) {
            let path = format!("/admin/plugins/{}/versions", seg(&plugin.name));
            let versions: VersionList = typed(&api.get(&path).await?)?;
            versions
                .versions
                .into_iter()
                .find(|v| v.active)
                .map(|v| v.manifest)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let state = plinth_host::apply::Current {
            version: plugin.version,
            sha256: plugin.sha256,
            manifest,
        };
        current.insert(plugin.name, state);
    }
    Ok(current)
}

async fn apply(
    client: &ClientArgs,
    dir: &std::path::Path,
    prune: bool,
    dry_run: bool,
) -> Result<(), ClientError> {
    let mut api = Api::new(client)?;
    let owned = dir.to_path_buf();
    let desired = tokio::task::spawn_blocking(move || crate::folder::desired(&owned))
        .await
        .map_err(|e| ClientError::Local(e.to_string()))?
        .map_err(|e| ClientError::Local(e.to_string()))?;
    let names: Vec<String> = desired.iter().map(|d| d.name.clone()).collect();
    let current = current_state(&mut api, &names).await?;
    let steps = plinth_host::apply::plan(&desired, &current, prune);
    if !client.json {
        println!("plan for {} ({}):", api.server(), dir.display());
        for step in &steps {
            println!("  {}", step.line());
        }
    }
    let changes = steps.iter().filter(|s| s.changes()).count();
    if dry_run || changes == 0 {
        let done = json!({ "plan": steps, "applied": false });
        print(client, &done, || {
            if changes == 0 {
                "nothing to do: the server matches the folder".into()
            } else {
                format!("dry run: {changes} change(s) not applied")
            }
        });
        return Ok(());
    }
    for step in &steps {
        match step {
            plinth_host::apply::Step::Add { plugin }
            | plinth_host::apply::Step::Replace { plugin, .. } => {
                let Some(wanted) = desired.iter().find(|d| &d.name == plugin) else {
                    continue;
                };
                let deployed =
                    upload(&mut api, plugin, &wanted.manifest, &wanted.component).await?;
                if !client.json {
                    println!("{}", deployed_text(&typed(&deployed)?));
                }
            }
            plinth_host::apply::Step::Remove { plugin } => {
                api.call(
                    Method::DELETE,
                    &format!("/admin/plugins/{}", seg(plugin)),
                    Value::Null,
                )
                .await?;
                if !client.json {
                    println!("deleted {plugin}");
                }
            }
            plinth_host::apply::Step::Unchanged { .. } => {}
        }
    }
    let done = json!({ "plan": steps, "applied": true });
    print(client, &done, || format!("applied {changes} change(s)"));
    Ok(())
}
