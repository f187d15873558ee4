//! Outbound webhook delivery shared by the OrderCloud and gateway simulators:
//! each message is serialized once by the caller, then POSTed from a
//! background task with retries and exponential backoff. Every attempt and
//! its response status is recorded for the snapshot. Fault modes simulate a
//! flaky sender: failed sends (retried), duplicate deliveries, delays (which
//! reorder deliveries) and wrong signatures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Retry policy for webhook deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per delivery, including the first (default 5).
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds; doubles per attempt (default 200).
    pub initial_backoff_ms: u64,
    /// Upper bound of the wait between attempts, in milliseconds (default 5000).
    pub max_backoff_ms: u64,
    /// Per-attempt HTTP timeout, in milliseconds (default 10000).
    pub timeout_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
            timeout_ms: 10_000,
        }
    }
}

/// Delivery fault modes; every rate is a probability in `0.0..=1.0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookFaults {
    /// Chance that an attempt "fails on our side" without sending; it is retried.
    pub fail_rate: f64,
    /// Chance that a message is delivered twice (same body, same event ID).
    pub duplicate_rate: f64,
    /// Chance that a message is held back before its first attempt (so later
    /// messages overtake it).
    pub delay_rate: f64,
    /// Largest hold-back for a delayed message, in milliseconds (default when 0: 1000).
    pub max_delay_ms: u64,
    /// Chance that the signature header carries a wrong value.
    pub wrong_hash_rate: f64,
    /// Seed for the fault dice (random when absent).
    pub seed: Option<u64>,
}

impl WebhookFaults {
    /// Checks that every rate is within `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("fail_rate", self.fail_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("delay_rate", self.delay_rate),
            ("wrong_hash_rate", self.wrong_hash_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "webhook faults: {name} {rate} is outside 0.0..=1.0 (write 0.1 or 10%)"
                ));
            }
        }
        Ok(())
    }
}

/// A message ready to send: the body bytes are final (signed as they are).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Which subscription produced it (webhook ID or endpoint URL).
    pub subscription: String,
    /// Event identifier (OrderCloud `LogID`, gateway `evt_...`).
    pub event_id: String,
    /// Target URL.
    pub url: String,
    /// Extra headers (signature, custom auth); `Content-Type` is added.
    pub headers: Vec<(String, String)>,
    /// Name of the signature header among `headers`, corrupted by `wrong_hash_rate`.
    pub signature_header: Option<String>,
    /// The exact body.
    pub body: bytes::Bytes,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub at: String,
    /// HTTP status of the receiver's reply, if any.
    pub status: Option<u16>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// Start of the receiver's reply body (at most 500 bytes).
    pub response_body: Option<String>,
}

/// The record of one delivery (a duplicate is a separate delivery).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Sequence number of the delivery.
    pub id: u64,
    /// Subscription that produced it.
    pub subscription: String,
    /// Event identifier.
    pub event_id: String,
    /// Target URL.
    pub url: String,
    /// The body as JSON (as sent).
    pub body: Value,
    /// Headers sent with the body (values other than the signature redacted).
    pub headers: BTreeMap<String, String>,
    /// True for the extra copy of a duplicated message.
    pub duplicate: bool,
    /// True when the signature was deliberately corrupted.
    pub wrong_hash: bool,
    /// Milliseconds the message was held back.
    pub delayed_ms: u64,
    /// `pending`, `delivered` or `failed`.
    pub state: &'static str,
    /// Every attempt so far.
    pub attempts: Vec<Attempt>,
}

/// The delivery engine: a log of deliveries plus the fault dice.
pub struct Deliverer {
    client: reqwest::Client,
    policy: DeliveryConfig,
    faults: Mutex<WebhookFaults>,
    rng: Mutex<StdRng>,
    log: Mutex<BTreeMap<u64, DeliveryRecord>>,
    next_id: AtomicU64,
    generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    }
}

impl Deliverer {
    /// A deliverer with the given retry policy and initial faults.
    pub fn new(policy: &DeliveryConfig, faults: &WebhookFaults) -> Arc<Deliverer> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(policy.timeout_ms.max(1)))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Deliverer {
            client,
            policy: policy.clone(),
            faults: Mutex::new(faults.clone()),
            rng: Mutex::new(rng_for(faults.seed)),
            log: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
        })
    }

    /// Replaces the fault modes (re-seeding the dice when a seed is given).
    pub fn set_faults(&self, faults: WebhookFaults) {
        if faults.seed.is_some() {
            *lock(&self.rng) = rng_for(faults.seed);
        }
        *lock(&self.faults) = faults;
    }

    /// The current fault modes.
    pub fn faults(&self) -> WebhookFaults {
        lock(&self.faults).clone()
    }

    /// Forgets every delivery; in-flight deliveries stop before their next attempt.
    pub fn reset(&self, faults: &WebhookFaults) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.log).clear();
        self.set_faults(faults.clone());
    }

    /// Every delivery so far, oldest first.
    pub fn records(&self) -> Vec<DeliveryRecord> {
        lock(&self.log).values().cloned().collect()
    }

    fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        lock(&self.rng).gen::<f64>() < rate
    }

    fn delay_ms(&self, max: u64) -> u64 {
        let max = if max == 0 { 1000 } else { max };
        lock(&self.rng).gen_range(1..=max)
    }

    /// Queues `message` for delivery in the background (must be called
    /// inside a Tokio runtime). Returns at once.
    pub fn enqueue(self: &Arc<Self>, message: Outbound) {
        let faults = self.faults();
        let copies = if self.roll(faults.duplicate_rate) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let mut message = message.clone();
            let wrong_hash = self.roll(faults.wrong_hash_rate);
            if wrong_hash {
                corrupt_signature(&mut message);
            }
            let delayed_ms = if self.roll(faults.delay_rate) {
                self.delay_ms(faults.max_delay_ms)
            } else {
                0
            };
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let record = DeliveryRecord {
                id,
                subscription: message.subscription.clone(),
                event_id: message.event_id.clone(),
                url: message.url.clone(),
                body: serde_json::from_slice(&message.body).unwrap_or(Value::Null),
                headers: recorded_headers(&message),
                duplicate: copy > 0,
                wrong_hash,
                delayed_ms,
                state: "pending",
                attempts: Vec::new(),
            };
            lock(&self.log).insert(id, record);
            let this = Arc::clone(self);
            let generation = self.generation.load(Ordering::SeqCst);
            tokio::spawn(async move {
                this.deliver(id, generation, message, delayed_ms).await;
            });
        }
    }

    async fn deliver(&self, id: u64, generation: u64, message: Outbound, delayed_ms: u64) {
        if delayed_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delayed_ms)).await;
        }
        let max_attempts = self.policy.max_attempts.max(1);
        let mut backoff = self.policy.initial_backoff_ms;
        for attempt in 1..=max_attempts {
            if self.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            let at = chrono::Utc::now().to_rfc3339();
            let outcome = if self.roll(self.faults().fail_rate) {
                Err("simulated send failure (fault injection)".to_owned())
            } else {
                self.send_once(&message).await
            };
            let success = matches!(&outcome, Ok((status, _)) if (200..300).contains(status));
            let (status, error, response_body) = match outcome {
                Ok((status, body)) => {
                    let error = (!(200..300).contains(&status))
                        .then(|| format!("receiver answered HTTP {status}"));
                    (Some(status), error, Some(body))
                }
                Err(err) => (None, Some(err), None),
            };
            let finished = success || attempt == max_attempts;
            {
                let mut log = lock(&self.log);
                let Some(record) = log.get_mut(&id) else {
                    return;
                };
                record.attempts.push(Attempt {
                    attempt,
                    at,
                    status,
                    error,
                    response_body,
                });
                if finished {
                    record.state = if success { "delivered" } else { "failed" };
                }
            }
            if finished {
                if !success {
                    tracing::warn!(url = %message.url, event = %message.event_id, "webhook delivery gave up");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = backoff.saturating_mul(2).min(self.policy.max_backoff_ms);
        }
    }

    async fn send_once(&self, message: &Outbound) -> Result<(u16, String), String> {
        let mut request = self
            .client
            .post(&message.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.body.clone());
        for (name, value) in &message.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.map_err(|err| err.to_string())?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let mut end = body.len().min(500);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        Ok((status, body[..end].to_owned()))
    }
}

/// The headers as recorded: the signature is kept (it is derived from the
/// body), other values such as a custom auth header are redacted.
fn recorded_headers(message: &Outbound) -> BTreeMap<String, String> {
    message
        .headers
        .iter()
        .map(|(name, value)| {
            let is_signature = message
                .signature_header
                .as_ref()
                .is_some_and(|s| s.eq_ignore_ascii_case(name));
            let value = if is_signature {
                value.clone()
            } else {
                "<redacted>".to_owned()
            };
            (name.clone(), value)
        })
        .collect()
}

/// Replaces the signature header value with a valid-looking wrong one.
fn corrupt_signature(message: &mut Outbound) {
    let Some(name) = message.signature_header.clone() else {
        return;
    };
    for (header, value) in &mut message.headers {
        if header.eq_ignore_ascii_case(&name) {
            *value = if value.contains("v1=") {
                // Stripe style: keep the timestamp, break the digest.
                let t = value.split(',').next().unwrap_or("t=0").to_owned();
                format!("{t},v1={}", "0".repeat(64))
            } else {
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
            };
        }
    }
}
