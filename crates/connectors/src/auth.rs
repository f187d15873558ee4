//! A credential cache with single-flight renewal, shared by the clients.
//!
//! One token per connection. When it is missing, expired, or the caller
//! saw it refused, exactly one caller fetches a new one while the others
//! wait on the same `tokio` mutex and then reuse the result; a failed
//! fetch is handed to the callers that waited for it rather than retried
//! by each of them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use ledgerbridge_core::{Failure, Secret};
use tokio::time::Instant;

/// A fetched credential and the instant it stops being used.
pub(crate) struct Fresh {
    pub token: Secret,
    pub renew_at: Instant,
}

/// A credential handed to a caller, with its generation (to report it
/// stale after a 401).
pub(crate) struct Credential {
    pub token: Secret,
    pub generation: u64,
}

#[derive(Default)]
struct State {
    current: Option<(Fresh, u64)>,
    /// Fetch attempts so far; a credential's generation is its attempt.
    attempts: u64,
    /// Attempts finished so far (mirrored in `TokenCache::completed`).
    completed: u64,
    last_error: Option<Failure>,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct TokenCache {
    /// Held across the fetch `.await` on purpose: that is the single flight.
    state: tokio::sync::Mutex<State>,
    /// Mirror of `State::completed`, readable without the lock: a caller
    /// that sees it move while it waited knows a fetch ran for it.
    completed: AtomicU64,
    fetches: AtomicU64,
}

impl TokenCache {
    /// How many fetches succeeded.
    pub(crate) fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Drops the current credential.
    pub(crate) async fn invalidate(&self) {
        self.state.lock().await.current = None;
    }

    /// The current credential, fetching a new one with `fetch` if there is
    /// none, it is due for renewal, or it is generation `stale`.
    pub(crate) async fn get<F, Fut>(
        &self,
        stale: Option<u64>,
        fetch: F,
    ) -> Result<Credential, Failure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fresh, Failure>>,
    {
        let completed_seen = self.completed.load(Ordering::SeqCst);
        let mut state = self.state.lock().await;
        if let Some((fresh, generation)) = &state.current {
            if Instant::now() < fresh.renew_at && stale != Some(*generation) {
                return Ok(Credential {
                    token: fresh.token.clone(),
                    generation: *generation,
                });
            }
        }
        if state.completed != completed_seen {
            // A fetch ran while we waited for the lock, and failed.
            if let Some(failure) = &state.last_error {
                return Err(failure.clone());
            }
        }
        state.attempts += 1;
        let generation = state.attempts;
        let result = fetch().await;
        state.completed += 1;
        self.completed.store(state.completed, Ordering::SeqCst);
        match result {
            Ok(fresh) => {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let token = fresh.token.clone();
                state.current = Some((fresh, generation));
                state.last_error = None;
                Ok(Credential { token, generation })
            }
            Err(failure) => {
                state.current = None;
                state.last_error = Some(failure.clone());
                Err(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ledgerbridge_core::ErrorClass;

    use super::*;

    fn fresh(token: &str, ttl: Duration) -> Fresh {
        Fresh {
            token: Secret::new(token),
            renew_at: Instant::now() + ttl,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_stale_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let first = cache
            .get(None, || async { Ok(fresh("t1", Duration::from_secs(60))) })
            .await
            .unwrap();
        assert_eq!(first.token.expose(), "t1");

        let mut tasks = Vec::new();
        for _ in 0..50 {
            let cache = Arc::clone(&cache);
            let stale = first.generation;
            tasks.push(tokio::spawn(async move {
                cache
                    .get(Some(stale), || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(fresh("t2", Duration::from_secs(60)))
                    })
                    .await
                    .unwrap()
                    .token
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().expose(), "t2");
        }
        assert_eq!(cache.fetch_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_triggers_a_fetch_and_failures_are_shared() {
        let cache = Arc::new(TokenCache::default());
        cache
            .get(None, || async { Ok(fresh("t1", Duration::from_secs(1))) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;

        let calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get(None, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Err(Failure::new(ErrorClass::Auth, "refused"))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().err().unwrap().class, ErrorClass::Auth);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A later caller tries again.
        let again = cache
            .get(None, || async { Ok(fresh("t3", Duration::from_secs(60))) })
            .await
            .unwrap();
        assert_eq!(again.token.expose(), "t3");
    }
}
