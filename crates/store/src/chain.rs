//! The audit trail's hash chain: how a record's hash is computed and how a
//! sequence of records is verified. Both backends use these functions, so
//! a trail written by one verifies with the other.
//!
//! `hash = hex(sha256(prev_hash || canonical_json({seq, at, entry})))`,
//! where canonical JSON has object keys sorted and no insignificant
//! whitespace, and `at` is RFC 3339 UTC with exactly six fractional digits.
//! The first record's `prev_hash` is [`GENESIS_HASH`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{AuditRecord, NewAudit};

/// `prev_hash` of the first audit record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why an audit chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A record's `prev_hash` is not the previous record's `hash`
    /// (a record was removed or inserted).
    #[error("audit record {seq}: prev_hash does not match the previous record's hash")]
    Broken { seq: i64 },
    /// A record's `hash` does not match its content (it was edited).
    #[error("audit record {seq}: hash does not match its content")]
    Tampered { seq: i64 },
    /// Sequence numbers are not consecutive.
    #[error("audit record {seq}: expected sequence number {expected}")]
    Gap { seq: i64, expected: i64 },
}

/// The hash of an audit record with these fields (see the module docs).
pub fn audit_hash(prev_hash: &str, seq: i64, at: DateTime<Utc>, entry: &NewAudit) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_record(seq, at, entry).as_bytes());
    hex(&hasher.finalize())
}

/// [`audit_hash`] of an entry already in canonical form
/// ([`canonical_entry`]), so the costly part can be done off the
/// serialised write path. Same result, byte for byte.
pub(crate) fn audit_hash_canonical(
    prev_hash: &str,
    seq: i64,
    at: DateTime<Utc>,
    canonical_entry: &str,
) -> String {
    // `canonical_record` with its keys in sorted order: at, entry, seq.
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"{\"at\":");
    hasher.update(Value::String(format_at(at)).to_string().as_bytes());
    hasher.update(b",\"entry\":");
    hasher.update(canonical_entry.as_bytes());
    hasher.update(b",\"seq\":");
    hasher.update(seq.to_string().as_bytes());
    hasher.update(b"}");
    hex(&hasher.finalize())
}

/// Checks that `records` (consecutive, oldest first) form an intact chain
/// continuing from `prev_hash` (use [`GENESIS_HASH`] when `records` starts
/// at the first record, else the hash of the record before the first).
pub fn verify_audit_chain(prev_hash: &str, records: &[AuditRecord]) -> Result<(), ChainError> {
    let mut expected_prev = prev_hash.to_owned();
    let mut expected_seq: Option<i64> = None;
    for record in records {
        if let Some(expected) = expected_seq {
            if record.seq != expected {
                return Err(ChainError::Gap {
                    seq: record.seq,
                    expected,
                });
            }
        }
        if record.prev_hash != expected_prev {
            return Err(ChainError::Broken { seq: record.seq });
        }
        if audit_hash(&record.prev_hash, record.seq, record.at, &record.entry) != record.hash {
            return Err(ChainError::Tampered { seq: record.seq });
        }
        expected_prev.clone_from(&record.hash);
        expected_seq = Some(record.seq + 1);
    }
    Ok(())
}

/// Canonical JSON of the audit entry alone, as stored by the backends.
pub(crate) fn canonical_entry(entry: &NewAudit) -> String {
    // `canonical_json(&entry_value(entry))`, written straight from the
    // fields (keys in sorted order) without copying `detail` into a tree.
    let mut out = String::with_capacity(256);
    out.push_str("{\"action\":");
    push_json_str(&entry.action, &mut out);
    out.push_str(",\"detail\":");
    write_canonical(&entry.detail, &mut out);
    out.push_str(",\"event_id\":");
    push_optional(entry.event_id.map(|id| id.to_string()).as_deref(), &mut out);
    out.push_str(",\"flow_version\":");
    push_optional(entry.flow_version.as_deref(), &mut out);
    out.push_str(",\"run_id\":");
    push_optional(entry.run_id.map(|id| id.to_string()).as_deref(), &mut out);
    out.push('}');
    out
}

fn push_optional(text: Option<&str>, out: &mut String) {
    match text {
        Some(text) => push_json_str(text, out),
        None => out.push_str("null"),
    }
}

/// Appends `text` as a JSON string literal.
fn push_json_str(text: &str, out: &mut String) {
    // Serialising a `&str` cannot fail and yields UTF-8.
    let quoted = serde_json::to_string(text).unwrap_or_default();
    out.push_str(&quoted);
}

/// `at` as it enters the hash.
pub(crate) fn format_at(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn canonical_record(seq: i64, at: DateTime<Utc>, entry: &NewAudit) -> String {
    let record = serde_json::json!({
        "seq": seq,
        "at": format_at(at),
        "entry": entry_value(entry),
    });
    canonical_json(&record)
}

fn entry_value(entry: &NewAudit) -> Value {
    // Serializing a plain struct of strings, ids and a `Value` cannot fail.
    serde_json::to_value(entry).unwrap_or(Value::Null)
}

/// Serializes `value` with object keys sorted at every level, compact.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json_str(key, out);
                out.push(':');
                if let Some(item) = map.get(key) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> NewAudit {
        NewAudit {
            run_id: None,
            event_id: None,
            flow_version: Some("1#abc".to_owned()),
            action: action.to_owned(),
            detail: serde_json::json!({"b": 1, "a": [true, null, {"z": "x", "y": 2.5}]}),
        }
    }

    #[test]
    fn canonical_entry_is_the_canonical_json_of_the_entry() {
        let mut full = entry("customer.created");
        full.run_id = Some(uuid::Uuid::new_v4());
        full.event_id = Some(uuid::Uuid::new_v4());
        full.flow_version = None;
        for entry in [entry("a \"quoted\" \\ action\n"), full] {
            assert_eq!(
                canonical_entry(&entry),
                canonical_json(&entry_value(&entry))
            );
        }
    }

    #[test]
    fn hash_of_a_precomputed_canonical_entry_is_the_same() {
        let at = Utc::now();
        for (seq, action) in [(1, "invoice.created"), (987_654, "quote \" and ü")] {
            let entry = entry(action);
            assert_eq!(
                audit_hash_canonical(GENESIS_HASH, seq, at, &canonical_entry(&entry)),
                audit_hash(GENESIS_HASH, seq, at, &entry)
            );
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, {"f": 0, "e": "é"}], "c": null}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":null,"d":[1,{"e":"é","f":0}]},"b":1}"#
        );
    }

    #[test]
    fn chain_verifies_and_detects_edits() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let first_hash = audit_hash(GENESIS_HASH, 1, at, &entry("a"));
        let second_hash = audit_hash(&first_hash, 2, at, &entry("b"));
        let mut records = vec![
            AuditRecord {
                seq: 1,
                at,
                entry: entry("a"),
                prev_hash: GENESIS_HASH.to_owned(),
                hash: first_hash.clone(),
            },
            AuditRecord {
                seq: 2,
                at,
                entry: entry("b"),
                prev_hash: first_hash,
                hash: second_hash,
            },
        ];
        assert_eq!(verify_audit_chain(GENESIS_HASH, &records), Ok(()));
        assert_eq!(records[0].hash.len(), 64);

        records[1].entry.action = "edited".to_owned();
        assert_eq!(
            verify_audit_chain(GENESIS_HASH, &records),
            Err(ChainError::Tampered { seq: 2 })
        );
        records.remove(0);
        assert_eq!(
            verify_audit_chain(GENESIS_HASH, &records),
            Err(ChainError::Broken { seq: 2 })
        );
    }
}
