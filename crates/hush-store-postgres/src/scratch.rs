//! Fresh, throw-away schemas for tests that need a real PostgreSQL: each test gets
//! its own `search_path`, so tests run in parallel on one database and never see
//! each other's rows. The database comes from `HUSH_TEST_DATABASE_URL`; without it,
//! [`Scratch::new`] returns `None` and the test says it was skipped.
//! [`Scratch::in_database`] makes one in any database (the load generator's cluster).
// Test support: a database that cannot be reached fails the test that asked.
#![allow(clippy::panic)]

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// The variable naming the test database (`.ci/run` sets it).
pub const ENV: &str = "HUSH_TEST_DATABASE_URL";

/// A schema of its own on the test database, dropped with this value.
pub struct Scratch {
    base: String,
    schema: String,
}

impl Scratch {
    /// A new empty schema, or `None` (after saying so on stderr) when
    /// `HUSH_TEST_DATABASE_URL` is not set.
    pub async fn new(test: &str) -> Option<Scratch> {
        let Ok(base) = std::env::var(ENV) else {
            eprintln!(
                "SKIPPED {test}: set {ENV} (e.g. postgres://postgres@127.0.0.1:5432/test) to run it against PostgreSQL"
            );
            return None;
        };
        match Scratch::in_database(&base, "t").await {
            Ok(s) => Some(s),
            Err(e) => panic!("{ENV}={base:?}: {e}"),
        }
    }

    /// A new empty schema `hush_LABEL...` in the database at `base` (a load test's
    /// cluster, say), dropped with this value.
    pub async fn in_database(base: &str, label: &str) -> Result<Scratch, sqlx::Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(16)
            .collect();
        let schema = format!(
            "hush_{label}{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000
        );
        let mut conn = PgConnection::connect(base).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await?;
        Ok(Scratch {
            base: base.to_owned(),
            schema,
        })
    }

    /// The database URL with this schema as its `search_path`, for `hushd
    /// --database-url` and [`crate::PgStore::connect`].
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options[search_path]={}", self.base, self.schema)
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort, on a thread of its own (drop may run inside a runtime).
        let base = self.base.clone();
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&base).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
