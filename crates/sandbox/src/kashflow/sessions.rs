//! KashFlow's two-step login: user name and password give a temporary token
//! and three memorable-word positions; the right characters give a session
//! token with a sliding idle expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::seq::index::sample;

use super::config::KashFlowConfig;
use super::error::{codes, KfError, KfResult};

/// How many memorable-word characters step 1 asks for.
pub const MEMORABLE_POSITIONS: usize = 3;

#[derive(Debug)]
struct Temporary {
    issued: Instant,
    positions: Vec<usize>,
}

/// Temporary tokens, live sessions and the failure counter.
#[derive(Debug, Default)]
pub struct Sessions {
    temporary: HashMap<String, Temporary>,
    live: HashMap<String, Instant>,
    failures: u32,
    locked: bool,
}

fn new_token() -> String {
    uuid::Uuid::new_v4().to_string().to_ascii_uppercase()
}

impl Sessions {
    fn fail(&mut self, config: &KashFlowConfig) {
        self.failures += 1;
        if config.lock_after_failures > 0 && self.failures >= config.lock_after_failures {
            self.locked = true;
        }
    }

    /// Step 1: returns the temporary token and the 1-based positions asked for.
    pub fn begin(
        &mut self,
        config: &KashFlowConfig,
        user_name: &str,
        password: &str,
        now: Instant,
    ) -> KfResult<(String, Vec<usize>)> {
        if self.locked {
            return Err(KfError::AccountLocked);
        }
        if !user_name.trim().eq_ignore_ascii_case(&config.username) || password != config.password {
            self.fail(config);
            if self.locked {
                return Err(KfError::AccountLocked);
            }
            return Err(KfError::bad(
                codes::INVALID_CREDENTIALS,
                "The user name or password is incorrect.",
            ));
        }
        let word_length = config.memorable_word.chars().count();
        let count = MEMORABLE_POSITIONS.min(word_length);
        let mut positions: Vec<usize> = sample(&mut rand::thread_rng(), word_length, count)
            .into_iter()
            .map(|index| index + 1)
            .collect();
        positions.sort_unstable();
        let token = new_token();
        self.temporary.insert(
            token.clone(),
            Temporary {
                issued: now,
                positions: positions.clone(),
            },
        );
        Ok((token, positions))
    }

    /// Step 2: checks the characters (case-insensitive) and opens a session.
    pub fn complete(
        &mut self,
        config: &KashFlowConfig,
        temporary_token: &str,
        answers: &[(i64, String)],
        now: Instant,
    ) -> KfResult<String> {
        if self.locked {
            return Err(KfError::AccountLocked);
        }
        let key = temporary_token.trim().to_ascii_uppercase();
        let ttl = Duration::from_secs(config.temp_token_ttl_secs);
        let Some(temporary) = self.temporary.get(&key) else {
            return Err(KfError::bad(
                codes::INVALID_TEMPORARY_TOKEN,
                "The temporary token is invalid or has expired.",
            ));
        };
        if now.saturating_duration_since(temporary.issued) >= ttl {
            self.temporary.remove(&key);
            return Err(KfError::bad(
                codes::INVALID_TEMPORARY_TOKEN,
                "The temporary token is invalid or has expired.",
            ));
        }
        let word: Vec<char> = config.memorable_word.chars().collect();
        let all_right = temporary.positions.iter().all(|position| {
            let expected = word.get(position - 1).map(|c| c.to_lowercase().to_string());
            answers.iter().any(|(asked, value)| {
                usize::try_from(*asked).ok() == Some(*position)
                    && expected.as_deref() == Some(value.trim().to_lowercase().as_str())
            })
        });
        if !all_right {
            self.fail(config);
            if self.locked {
                return Err(KfError::AccountLocked);
            }
            return Err(KfError::bad(
                codes::INVALID_MEMORABLE_WORD,
                "The memorable word characters are incorrect.",
            ));
        }
        self.temporary.remove(&key);
        self.failures = 0;
        let token = new_token();
        self.live.insert(token.clone(), now);
        Ok(token)
    }

    /// Checks a session token and slides its expiry.
    pub fn touch(&mut self, token: &str, ttl: Duration, now: Instant) -> KfResult<()> {
        let key = token.trim().to_ascii_uppercase();
        match self.live.get_mut(&key) {
            Some(last_used) if now.saturating_duration_since(*last_used) < ttl => {
                *last_used = now;
                Ok(())
            }
            Some(_) => {
                self.live.remove(&key);
                Err(KfError::InvalidSession)
            }
            None => Err(KfError::InvalidSession),
        }
    }

    /// Ends a session; false when it did not exist.
    pub fn logout(&mut self, token: &str) -> bool {
        self.live
            .remove(&token.trim().to_ascii_uppercase())
            .is_some()
    }

    /// Expires every session and temporary token; returns how many sessions ended.
    pub fn expire_all(&mut self) -> usize {
        self.temporary.clear();
        let count = self.live.len();
        self.live.clear();
        count
    }

    /// Counts for the state snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "ActiveSessions": self.live.len(),
            "PendingLogins": self.temporary.len(),
            "FailedLogins": self.failures,
            "Locked": self.locked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(sessions: &mut Sessions, config: &KashFlowConfig, now: Instant) -> String {
        let (temporary, positions) = sessions
            .begin(config, "SIM", &config.password, now)
            .expect("step 1");
        let word: Vec<char> = config.memorable_word.chars().collect();
        let answers: Vec<(i64, String)> = positions
            .iter()
            .map(|p| (*p as i64, word[p - 1].to_uppercase().to_string()))
            .collect();
        sessions
            .complete(config, &temporary, &answers, now)
            .expect("step 2")
    }

    #[test]
    fn expiry_slides_with_use() {
        let config = KashFlowConfig::default();
        let mut sessions = Sessions::default();
        let start = Instant::now();
        let token = login(&mut sessions, &config, start);
        let ttl = Duration::from_secs(60);
        // Used every 50 s for 5 minutes: never idle for 60 s.
        for step in 1..=6 {
            let at = start + Duration::from_secs(50 * step);
            sessions.touch(&token, ttl, at).expect("still alive");
        }
        let idle = start + Duration::from_secs(300 + 61);
        assert!(sessions.touch(&token, ttl, idle).is_err());
        // An expired token stays invalid.
        assert!(sessions.touch(&token, ttl, idle).is_err());
    }

    #[test]
    fn locks_after_failures() {
        let config = KashFlowConfig {
            lock_after_failures: 2,
            ..KashFlowConfig::default()
        };
        let mut sessions = Sessions::default();
        let now = Instant::now();
        assert!(matches!(
            sessions.begin(&config, "sim", "wrong", now),
            Err(KfError::BadRequest { .. })
        ));
        assert!(matches!(
            sessions.begin(&config, "sim", "wrong", now),
            Err(KfError::AccountLocked)
        ));
        assert!(matches!(
            sessions.begin(&config, "sim", &config.password, now),
            Err(KfError::AccountLocked)
        ));
    }

    #[test]
    fn positions_are_distinct_and_one_based() {
        let config = KashFlowConfig::default();
        let mut sessions = Sessions::default();
        for _ in 0..50 {
            let (_, positions) = sessions
                .begin(&config, "sim", &config.password, Instant::now())
                .expect("step 1");
            assert_eq!(positions.len(), 3);
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
            assert!(positions.iter().all(|p| (1..=9).contains(p)));
        }
    }
}
