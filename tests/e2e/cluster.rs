//! Several hosts on one PostgreSQL (`--store postgres://...`): what one host stores, every
//! host serves. Runs whenever a test server is configured (`cargo xtask test` always does).

use crate::harness::{Guest, Options, Server};
use plinth_host::store::test_database::TestDatabase;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn hosts_on_one_database_serve_the_same_plugins_and_data() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let url = database.url();
    let options = || Options::with_args(&["--store", &url]);
    let a = Server::start_fresh(options());
    a.deploy_guest(Guest::KvPlain).await;
    let put = a
        .request(
            Method::PUT,
            "/kv-plain/shared/greeting",
            None,
            Some(b"from a".to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());

    // A second host with its own (empty) data directory loads the plugin from the database
    // and reads what the first one wrote.
    let b = Server::start_fresh(options());
    let read = b.get("/kv-plain/shared/greeting").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert_eq!(read.text(), "from a");
    let put = b
        .request(
            Method::PUT,
            "/kv-plain/shared/greeting",
            None,
            Some(b"from b".to_vec()),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    assert_eq!(a.get("/kv-plain/shared/greeting").await.text(), "from b");
    let versions = b
        .admin(Method::GET, "/admin/plugins/kv-plain/versions")
        .await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.text());
    assert!(
        versions.text().contains("\"version\":1"),
        "{}",
        versions.text()
    );
    drop((a, b));
    database.remove().await;
}
