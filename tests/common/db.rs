//! A server's database, opened by the test behind the server's back: to age rows (tests cannot
//! wait days), plant state another node would have written, or read what only the database
//! holds. SQLite in the data dir, or the PostgreSQL database of an `s3-postgres` run.

use super::{Backend, Berth};

/// A connection to the database of `b`.
pub async fn connect(b: &Berth) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let url = match b.backend() {
        Backend::FsSqlite => format!("sqlite://{}", b.data_path().join("berth.db").display()),
        Backend::S3Postgres { database, .. } => database.clone(),
    };
    <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap()
}

/// Runs one SQL statement on the database of `b`.
pub async fn execute(b: &Berth, statement: &str) {
    let mut conn = connect(b).await;
    sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(statement.to_string())).await.unwrap();
}
