//! The two webhook signature schemes, for signing outbound requests and verifying inbound ones.
//!
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//!   `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the base64-decoded part of a
//!   `whsec_...` secret.
//! - Reflector: `X-Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256>` over `<t>.<body>`, keyed
//!   with the secret string's UTF-8 bytes exactly as given (`whsec_` included).
//!
//! Verification compares in constant time and checks the timestamp tolerance.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Senders' and receivers' clocks may differ by at most this much (5 minutes, both ways).
pub const TIMESTAMP_TOLERANCE_S: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is more than 5 minutes away from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
    #[error("the secret is not a valid whsec_ secret")]
    BadSecret,
}

/// HMAC-SHA256 of `parts` one after another, keyed with `key`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The key bytes of a Standard Webhooks secret (`whsec_<base64>`, or bare base64).
pub fn standard_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64
        .decode(encoded)
        .map_err(|_| SignatureError::BadSecret)
}

/// `v1,<base64>` for one secret.
pub fn standard_sign(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let key = standard_key(secret)?;
    let timestamp = timestamp.to_string();
    let mac = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    Ok(format!("v1,{}", BASE64.encode(mac)))
}

/// The hex HMAC Reflector puts after `v1=`.
pub fn reflector_mac(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    hex::encode(hmac(secret.as_bytes(), &[timestamp.as_bytes(), b".", body]))
}

/// `t=<unix>,v1=<hex>[,v1=<hex>...]`: one `v1` per secret (several during a rotation).
pub fn reflector_header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&reflector_mac(secret, timestamp, body));
    }
    header
}

/// A parsed Reflector `X-Webhook-Signature`: its timestamp and the MACs it offers. Parsing and
/// the freshness check need no body, so a receiver can refuse a bad header before reading one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectorSignature {
    timestamp: i64,
    candidates: Vec<Vec<u8>>,
}

impl ReflectorSignature {
    /// `t=<unix>,v1=<hex>[,v1=<hex>...]`; `Malformed` without a timestamp or a `v1`.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
                Some(("v1", value)) => {
                    candidates.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if candidates.is_empty() {
            return Err(SignatureError::Malformed);
        }
        Ok(ReflectorSignature {
            timestamp,
            candidates,
        })
    }

    /// `Stale` when the timestamp is more than [`TIMESTAMP_TOLERANCE_S`] from `now` (unix s).
    pub fn check_fresh(&self, now: i64) -> Result<(), SignatureError> {
        // `abs_diff`: the sender picks `t`, and `now - t` overflows for `t` near `i64::MIN`.
        if now.abs_diff(self.timestamp) > TIMESTAMP_TOLERANCE_S.unsigned_abs() {
            Err(SignatureError::Stale)
        } else {
            Ok(())
        }
    }

    /// `Mismatch` unless one offered MAC is the HMAC of `body` under one of `secrets`
    /// (compared in constant time).
    pub fn check_body(&self, body: &[u8], secrets: &[String]) -> Result<(), SignatureError> {
        let stamp = self.timestamp.to_string();
        let mut matched = subtle::Choice::from(0);
        for secret in secrets {
            let expected = hmac(secret.as_bytes(), &[stamp.as_bytes(), b".", body]);
            for candidate in &self.candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Verifies a Reflector `X-Webhook-Signature` against any of `secrets` at time `now` (unix s).
pub fn reflector_verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now: i64,
) -> Result<(), SignatureError> {
    let signature = ReflectorSignature::parse(header)?;
    signature.check_fresh(now)?;
    signature.check_body(body, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fixtures");
        std::fs::read(root.join(path)).unwrap()
    }

    #[test]
    fn every_standard_webhooks_vector_signs_as_published() {
        let vectors: serde_json::Value =
            serde_json::from_slice(&fixture("standard_webhooks_vectors.json")).unwrap();
        for vector in vectors["vectors"].as_array().unwrap() {
            let signature = standard_sign(
                vector["secret"].as_str().unwrap(),
                vector["id"].as_str().unwrap(),
                vector["timestamp"].as_i64().unwrap(),
                vector["payload"].as_str().unwrap().as_bytes(),
            )
            .unwrap();
            assert_eq!(signature, vector["webhook-signature"].as_str().unwrap());
        }
    }

    #[test]
    fn the_reflector_vector_signs_and_verifies() {
        let vector: serde_json::Value =
            serde_json::from_slice(&fixture("reflector/signature_vector.json")).unwrap();
        let body = fixture("reflector/transcript_completed.json");
        let secret = vector["secret"].as_str().unwrap();
        let timestamp = vector["timestamp"].as_i64().unwrap();
        let expected = vector["header"].as_str().unwrap();
        assert_eq!(reflector_header(&[secret], timestamp, &body), expected);
        let secrets = vec!["other".to_owned(), secret.to_owned()];
        assert_eq!(
            reflector_verify(expected, &body, &secrets, timestamp + 10),
            Ok(())
        );
    }

    #[test]
    fn reflector_verification_refuses_tampering_staleness_and_garbage() {
        let secrets = vec!["s3cret".to_owned()];
        let header = reflector_header(&["s3cret"], 1_000_000, b"{}");
        assert_eq!(
            reflector_verify(&header, b"{ }", &secrets, 1_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            reflector_verify(&header, b"{}", &secrets, 1_000_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            reflector_verify(&header, b"{}", &secrets, 999_699),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            reflector_verify("v1=zz", b"{}", &secrets, 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            reflector_verify("t=5", b"{}", &secrets, 5),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_stale_not_an_overflow() {
        let secrets = vec!["s3cret".to_owned()];
        for timestamp in [i64::MIN, i64::MAX] {
            let header = reflector_header(&["s3cret"], timestamp, b"{}");
            for now in [0, 1_700_000_000, -1, i64::MAX, i64::MIN] {
                let expected = if now == timestamp {
                    Ok(())
                } else {
                    Err(SignatureError::Stale)
                };
                assert_eq!(
                    reflector_verify(&header, b"{}", &secrets, now),
                    expected,
                    "t={timestamp} now={now}"
                );
            }
        }
    }
}
