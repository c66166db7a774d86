//! Where the tables live, and their migration.

use crate::error::{Error, Result};
use sqlx::PgPool;

/// The migrations' SQL, in order, `{schema}` to be replaced.
const MIGRATIONS: [&str; 2] = [
    include_str!("../migrations/0001_outbox_inbox.sql"),
    include_str!("../migrations/0002_event_store.sql"),
];

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

    /// The channel the outbox notifies its relays on. PostgreSQL takes channel names of
    /// at most 63 bytes (`pg_notify` refuses a longer one, `LISTEN` cuts it short): a
    /// schema name too long for `eventrabbit_outbox_<schema>` gets a shortened name that
    /// ends in a hash of the whole, the same in every process.
    pub(crate) fn channel(&self) -> String {
        let full = format!("eventrabbit_outbox_{}", self.0);
        if full.len() <= MAX_IDENTIFIER {
            return full;
        }
        let hash = fnv1a(self.0.as_bytes());
        // 19 + 26 + 1 + 16 = 62 bytes; the schema name is ASCII, so any cut is a boundary.
        format!("eventrabbit_outbox_{}_{hash:016x}", &self.0[..26])
    }
}

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN` - 1).
const MAX_IDENTIFIER: usize = 63;

/// FNV-1a, 64 bits: a hash that is the same in every build and process.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Creates the outbox, inbox and event store tables in `schema` if they do not exist (idempotent, safe
/// to run from several processes at once).
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let schema = Schema::new(schema)?;
    let mut tx = pool.begin().await?;
    // One migration at a time, whatever the process.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('eventrabbit_migrate', 0))")
        .execute(&mut *tx)
        .await?;
    for migration in MIGRATIONS {
        sqlx::raw_sql(&schema.sql(migration))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_name_fits_postgres_identifiers() {
        let longest = Schema::new(&"s".repeat(63)).unwrap().channel();
        assert!(longest.len() <= MAX_IDENTIFIER, "{longest}");
        let other = Schema::new(&format!("{}t", "s".repeat(62)))
            .unwrap()
            .channel();
        assert_ne!(longest, other, "two long names, two channels");
        assert_eq!(
            Schema::new("public").unwrap().channel(),
            "eventrabbit_outbox_public"
        );
        for len in 1..=63 {
            let channel = Schema::new(&"x".repeat(len)).unwrap().channel();
            assert!(channel.len() <= MAX_IDENTIFIER, "{len}: {channel}");
        }
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(Schema::new("public").is_ok());
        assert!(Schema::new("orders_2").is_ok());
        for bad in ["", "2x", "a-b", "a;drop table x", "x y", &"a".repeat(64)] {
            assert!(Schema::new(bad).is_err(), "{bad}");
        }
    }
}
