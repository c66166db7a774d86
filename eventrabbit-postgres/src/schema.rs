//! Where the tables live, and their migration.

use crate::error::{Error, Result};
use sqlx::PgPool;

/// The migration's SQL (`migrations/0001_outbox_inbox.sql`), `{schema}` to be replaced.
const MIGRATION: &str = include_str!("../migrations/0001_outbox_inbox.sql");

/// A schema name, checked to be a plain SQL identifier (it is written into SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema(String);

impl Schema {
    pub(crate) fn new(name: &str) -> Result<Self> {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 63;
        if valid {
            Ok(Self(name.to_ascii_lowercase()))
        } else {
            Err(Error::InvalidSchema(name.to_owned()))
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    /// `sql` with `{schema}` replaced.
    pub(crate) fn sql(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.0)
    }

    /// The channel the outbox notifies its relays on.
    pub(crate) fn channel(&self) -> String {
        format!("eventrabbit_outbox_{}", self.0)
    }
}

/// Creates the outbox and inbox tables in `schema` if they do not exist (idempotent, safe
/// to run from several processes at once).
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let schema = Schema::new(schema)?;
    let mut tx = pool.begin().await?;
    // One migration at a time, whatever the process.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('eventrabbit_migrate', 0))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(&schema.sql(MIGRATION))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(Schema::new("public").is_ok());
        assert!(Schema::new("orders_2").is_ok());
        for bad in ["", "2x", "a-b", "a;drop table x", "x y", &"a".repeat(64)] {
            assert!(Schema::new(bad).is_err(), "{bad}");
        }
    }
}
