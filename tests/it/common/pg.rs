//! Fresh PostgreSQL databases for the `_postgres` cases.

/// A fresh database on the server `PANGOLIN_TEST_PG_URL` names; fails loudly without it.
pub struct PgDatabase {
    /// The new database's URL (the server URL's query string kept).
    pub url: String,
    pub admin: sqlx::PgPool,
    pub name: String,
    /// The server URL it was created on.
    server: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let server = std::env::var("PANGOLIN_TEST_PG_URL").expect(
            "PANGOLIN_TEST_PG_URL must name a PostgreSQL server for the _postgres tests \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres; tests/run sets it)",
        );
        let name = format!("pangolin_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        PgDatabase {
            url: database_url(&server, &name),
            admin,
            name,
            server,
        }
    }

    /// Drops the database now (best effort: its name is random). Dropping the value does
    /// the same, also when a test panics.
    pub async fn drop(self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }
}

impl Drop for PgDatabase {
    /// A task spawned here would die with the test's runtime, so the database is dropped
    /// from a thread of its own, waited for.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `server` with its database path replaced by `name`; a query string is kept.
pub fn database_url(server: &str, name: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base.rfind('/') {
        Some(i) if i >= authority_start => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}
