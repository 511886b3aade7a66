//! Scratch databases for tests of the PostgreSQL store, on the server `PLINTH_TEST_DATABASE_URL`
//! names (`cargo xtask test` starts a throwaway one and also sets `PLINTH_TEST_REQUIRE_POSTGRES`,
//! which turns a missing URL into a failure instead of a skip). Used by the store's
//! conformance suite and the end-to-end tests; not part of serving.

use std::str::FromStr;

/// A database of its own for one test, dropped by [`TestDatabase::remove`].
pub struct TestDatabase {
    admin: String,
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database; `None` when no test server is configured and none is required.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses the database, or when a server is required
    /// and none is named: a test that should run on PostgreSQL never passes without it.
    pub async fn create() -> Option<Self> {
        let Ok(admin) = std::env::var("PLINTH_TEST_DATABASE_URL") else {
            assert!(
                std::env::var_os("PLINTH_TEST_REQUIRE_POSTGRES").is_none(),
                "PLINTH_TEST_REQUIRE_POSTGRES is set but PLINTH_TEST_DATABASE_URL is not"
            );
            eprintln!("PostgreSQL part skipped: PLINTH_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!("plinth_test_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        Some(Self { admin, name })
    }

    /// The database's URL, as `--store` takes it.
    pub fn url(&self) -> String {
        let base = self.admin.split('?').next().unwrap_or_default();
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        format!("{server}/{}", self.name)
    }

    /// Connection options for the database.
    pub fn options(&self) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::from_str(&self.admin)
            .expect("the test database URL")
            .database(&self.name)
    }

    /// Cuts every connection to the database and refuses new ones (`false`), or lets them in
    /// again (`true`): the database lost and back, for this test only.
    pub async fn set_reachable(&self, reachable: bool) {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {reachable}",
            self.name
        ))
        .execute(&mut conn)
        .await
        .expect("change whether the database takes connections");
        if !reachable {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .expect("cut the database's connections");
        }
    }

    /// Drops the database (every connection to it is closed first).
    pub async fn remove(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
