//! Webhook signature checks, in constant time.
//!
//! - OrderCloud: `X-oc-hash` = Base64(HMAC-SHA256(utf8(HashKey), raw body)).
//! - Stripe-style gateway: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`
//!   where each `v1` = hex(HMAC-SHA256(secret, "<t>.<raw body>")), and `t`
//!   must be within the tolerance of now (replay protection).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The text goes to the log, never to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp {age_secs} s away from now, over the {tolerance_secs} s tolerance")]
    Stale { age_secs: i64, tolerance_secs: u64 },
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `X-oc-hash` value OrderCloud sends for `body`.
pub fn ordercloud_hash(hash_key: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac(hash_key.as_bytes(), &[body]))
}

/// Verifies an OrderCloud `X-oc-hash` header.
pub fn verify_ordercloud(
    hash_key: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing("X-oc-hash"))?.trim();
    let given = base64::engine::general_purpose::STANDARD
        .decode(header)
        .map_err(|_| SignatureError::Malformed("X-oc-hash"))?;
    let expected = hmac(hash_key.as_bytes(), &[body]);
    if bool::from(given.as_slice().ct_eq(&expected)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` value for `body` signed at `timestamp`.
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = hmac(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(mac))
}

/// Verifies a `Stripe-Signature` header against `now` (unix seconds).
pub fn verify_stripe(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    const NAME: &str = "Stripe-Signature";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed(NAME));
        };
        match key {
            "t" => {
                timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed(NAME))?);
            }
            "v1" => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed(NAME))?)
            }
            _ => {} // other schemes (v0) are ignored, as Stripe's libraries do
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed(NAME))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed(NAME));
    }
    let t = timestamp.to_string();
    let expected = hmac(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    if !signatures
        .iter()
        .any(|given| bool::from(given.as_slice().ct_eq(&expected)))
    {
        return Err(SignatureError::Mismatch);
    }
    let age = now.saturating_sub(timestamp);
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the OrderCloud reference (checked with openssl).
    #[test]
    fn ordercloud_reference_vector() {
        let body = br#"{"Route":"v1/orders/{direction}/{orderID}/submit","RouteParams":{"direction":"Outgoing","orderID":"SO-1001"},"Verb":"POST"}"#;
        assert_eq!(body.len(), 123);
        let hash = ordercloud_hash("sim-hash-key-123", body);
        assert_eq!(hash, "ZG9XFQs1bvtppWMcyCe1kP3Lb+xUU03bq1xjaJXfW70=");
        assert_eq!(
            verify_ordercloud("sim-hash-key-123", Some(&hash), body),
            Ok(())
        );
        assert_eq!(
            verify_ordercloud("other-key", Some(&hash), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_ordercloud("sim-hash-key-123", None, body),
            Err(SignatureError::Missing("X-oc-hash"))
        );
        assert_eq!(
            verify_ordercloud("sim-hash-key-123", Some("not base64!"), body),
            Err(SignatureError::Malformed("X-oc-hash"))
        );
    }

    #[test]
    fn stripe_signatures_verify_and_expire() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let header = stripe_signature("whsec_sim", 1_700_000_000, body);
        assert_eq!(
            verify_stripe("whsec_sim", Some(&header), body, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_stripe("whsec_sim", Some(&header), body, 1_700_000_400, 300),
            Err(SignatureError::Stale {
                age_secs: 400,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verify_stripe("whsec_other", Some(&header), body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe("whsec_sim", Some("v1=00"), body, 1_700_000_000, 300),
            Err(SignatureError::Malformed("Stripe-Signature"))
        );
        // A tampered body fails even with a fresh timestamp.
        assert_eq!(
            verify_stripe("whsec_sim", Some(&header), b"{}", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
