//! Choosing and opening a backend from a URL.
//!
//! - `sqlite://path/to/file.db` (relative) or `sqlite:///abs/file.db`: the
//!   file and its directory are created if missing.
//! - `sqlite::memory:`: a private in-memory database, for tests only.
//! - `postgres://user[:password]@host[:port]/db[?params]` (or
//!   `postgresql://`): an optional `pool_size=N` parameter sizes the
//!   connection pool (default 10); other parameters go to the driver.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::postgres::{PgOptions, PgStore};
use crate::sqlite::SqliteStore;
use crate::{Result, Store, StoreError};

/// Where the store lives, parsed from a URL. `Debug` and `Display` hide
/// any password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite database file.
    Sqlite { path: PathBuf },
    /// A private in-memory SQLite database (tests only: nothing is durable).
    SqliteMemory,
    /// A PostgreSQL database.
    Postgres {
        /// The connection URL, without our own `pool_size` parameter.
        url: String,
        /// Connections in the pool.
        pool_size: u32,
    },
}

/// Default size of the PostgreSQL connection pool.
const DEFAULT_PG_POOL: u32 = 10;

impl StoreUrl {
    /// Parses a store URL (see the module docs for the forms).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text == "sqlite::memory:" {
            return Ok(StoreUrl::SqliteMemory);
        }
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad_url(
                    "sqlite:// needs a file path, e.g. sqlite://data/ledgerbridge.db",
                ));
            }
            if path.contains('?') || path.contains('#') {
                return Err(bad_url(
                    "sqlite URLs take no parameters: use sqlite://path/to/file.db",
                ));
            }
            return Ok(StoreUrl::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return parse_postgres(text);
        }
        Err(bad_url(
            "expected sqlite://path/to/file.db, sqlite::memory: or postgres://user@host/db",
        ))
    }

    /// Connects and runs the migrations.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        match self {
            StoreUrl::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path).await?)),
            StoreUrl::SqliteMemory => Ok(Arc::new(SqliteStore::open_in_memory().await?)),
            StoreUrl::Postgres { url, pool_size } => {
                let options = PgOptions {
                    pool_size: *pool_size,
                    ..PgOptions::default()
                };
                Ok(Arc::new(PgStore::connect_with(url, options).await?))
            }
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        StoreUrl::parse(text)
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite { path } => write!(f, "sqlite://{}", path.display()),
            StoreUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            StoreUrl::Postgres { url, .. } => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Postgres { pool_size, .. } => f
                .debug_struct("Postgres")
                .field("url", &self.to_string())
                .field("pool_size", pool_size)
                .finish(),
            _ => write!(f, "{self}"),
        }
    }
}

/// Parses `url` and opens the store it names, migrated and ready.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    StoreUrl::parse(url)?.open().await
}

fn bad_url(message: &str) -> StoreError {
    StoreError::Fatal(format!("invalid store URL: {message}"))
}

fn parse_postgres(text: &str) -> Result<StoreUrl> {
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let Some((_, rest)) = base.split_once("://") else {
        return Err(bad_url("postgres URL has no host"));
    };
    if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
        return Err(bad_url(
            "postgres URL has no host, e.g. postgres://postgres@127.0.0.1/db",
        ));
    }
    let mut pool_size = DEFAULT_PG_POOL;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("pool_size", value)) => {
                pool_size = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad_url("pool_size must be a number from 1 to 1000"))?;
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(StoreUrl::Postgres { url, pool_size })
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls() {
        assert_eq!(
            StoreUrl::parse("sqlite://data/lb.db").ok(),
            Some(StoreUrl::Sqlite {
                path: PathBuf::from("data/lb.db")
            })
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/lb.db").ok(),
            Some(StoreUrl::Sqlite {
                path: PathBuf::from("/var/lib/lb.db")
            })
        );
        assert_eq!(
            StoreUrl::parse("sqlite::memory:").ok(),
            Some(StoreUrl::SqliteMemory)
        );
        assert!(StoreUrl::parse("sqlite://").is_err());
        assert!(StoreUrl::parse("sqlite://a.db?mode=ro").is_err());
    }

    #[test]
    fn parses_postgres_urls_and_pool_size() {
        assert_eq!(
            StoreUrl::parse("postgres://postgres@127.0.0.1:5432/lb").ok(),
            Some(StoreUrl::Postgres {
                url: "postgres://postgres@127.0.0.1:5432/lb".to_owned(),
                pool_size: 10
            })
        );
        assert_eq!(
            StoreUrl::parse("postgresql://u@h/db?sslmode=disable&pool_size=32").ok(),
            Some(StoreUrl::Postgres {
                url: "postgresql://u@h/db?sslmode=disable".to_owned(),
                pool_size: 32
            })
        );
        assert!(StoreUrl::parse("postgres://u@h/db?pool_size=0").is_err());
        assert!(StoreUrl::parse("postgres://").is_err());
    }

    #[test]
    fn rejects_other_schemes_clearly() {
        let error = StoreUrl::parse("mysql://localhost/db")
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("expected sqlite://")));
        assert!(StoreUrl::parse("data/lb.db").is_err());
    }

    #[test]
    fn hides_passwords() {
        let url = StoreUrl::parse("postgres://lb:hunter2@db.internal:5432/lb?pool_size=4")
            .unwrap_or(StoreUrl::SqliteMemory);
        assert_eq!(url.to_string(), "postgres://lb:***@db.internal:5432/lb");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(redact_password("postgres://lb@db/x"), "postgres://lb@db/x");
    }
}
