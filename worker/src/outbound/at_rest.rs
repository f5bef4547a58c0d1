//! Endpoint secrets and custom header values at rest: sealed in Postgres with the
//! `SECRETS_KEY` keys, opened only where a delivery is signed and sent.
//!
//! A sealed value is `enc:v1:` + base64 of a random 24-byte nonce and the XChaCha20-Poly1305
//! ciphertext with its tag. The first key seals; every key is tried to open, so a key is
//! rotated by putting the new one first and keeping the old one listed until
//! [`seal_stored`] (run at every start) has sealed everything again with the new one. A value
//! without the prefix is plaintext (written before a key was set, or with none): it is used as
//! it is, and sealed by the next start that has a key. Header names stay readable; only their
//! values are sealed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde_json::Value;
use shared::config::ConfigError;
use sqlx::PgPool;
use uuid::Uuid;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "enc:v1:";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// A value that cannot be opened: sealed with a key no longer listed, or damaged.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("a stored secret is encrypted but SECRETS_KEY is not set")]
    NoKey,
    #[error("a stored secret opens with none of the SECRETS_KEY keys")]
    NoMatchingKey,
}

/// The `SECRETS_KEY` keys: the first seals, all open. Empty when the variable is unset, and
/// then values are stored in plaintext. Its `Debug` shows how many keys there are, never them.
#[derive(Clone, Default)]
pub struct SecretsKeys {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretsKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SecretsKeys({} keys)", self.ciphers.len())
    }
}

impl SecretsKeys {
    /// Keys from their base64 forms (each 32 bytes), first the one that seals.
    pub fn parse(encoded: &[String]) -> Result<Self, ConfigError> {
        let ciphers = encoded
            .iter()
            .enumerate()
            .map(|(position, key)| match BASE64.decode(key) {
                Ok(bytes) if bytes.len() == KEY_BYTES => {
                    Ok(XChaCha20Poly1305::new(Key::from_slice(&bytes)))
                }
                _ => Err(ConfigError {
                    name: "SECRETS_KEY",
                    problem: format!("key {} is not base64 of 32 bytes", position + 1),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(SecretsKeys { ciphers })
    }

    /// Whether values are sealed (a key is set).
    pub fn is_set(&self) -> bool {
        !self.ciphers.is_empty()
    }

    /// `value` sealed with the first key; as it is when no key is set.
    pub fn seal(&self, value: &str) -> String {
        let Some(cipher) = self.ciphers.first() else {
            return value.to_owned();
        };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), value.as_bytes())
            .expect("XChaCha20-Poly1305 seals any length we store");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", BASE64.encode(bytes))
    }

    /// The plaintext of a stored value: opened with whichever key sealed it, or the value
    /// itself when it was stored in plaintext.
    pub fn open(&self, stored: &str) -> Result<String, OpenError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        if !self.is_set() {
            return Err(OpenError::NoKey);
        }
        open_with(&self.ciphers, encoded).ok_or(OpenError::NoMatchingKey)
    }

    /// Whether `stored` is as [`seal`](Self::seal) would store it now: sealed with the first
    /// key (or plaintext when no key is set).
    fn is_current(&self, stored: &str) -> bool {
        match (self.ciphers.first(), stored.strip_prefix(SEALED_PREFIX)) {
            (None, _) => true,
            (Some(first), Some(encoded)) => {
                open_with(std::slice::from_ref(first), encoded).is_some()
            }
            (Some(_), None) => false,
        }
    }

    /// A JSON object of header values with every value sealed.
    pub fn seal_headers(&self, headers: &Value) -> Value {
        map_values(headers, |value| Ok::<_, OpenError>(self.seal(value)))
            .expect("sealing never fails")
    }

    /// A JSON object of stored header values with every value opened.
    pub fn open_headers(&self, headers: &Value) -> Result<Value, OpenError> {
        map_values(headers, |value| self.open(value))
    }
}

/// The plaintext of `encoded` (nonce and ciphertext, base64) under whichever of `ciphers`
/// sealed it.
fn open_with(ciphers: &[XChaCha20Poly1305], encoded: &str) -> Option<String> {
    let bytes = BASE64.decode(encoded).ok()?;
    if bytes.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
    let plain = ciphers
        .iter()
        .find_map(|cipher| cipher.decrypt(XNonce::from_slice(nonce), sealed).ok())?;
    String::from_utf8(plain).ok()
}

/// `headers` with every string value replaced by `change(value)`; anything else as it is.
fn map_values<E>(headers: &Value, change: impl Fn(&str) -> Result<String, E>) -> Result<Value, E> {
    let mut changed = headers.clone();
    if let Some(object) = changed.as_object_mut() {
        for value in object.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(change(text)?);
            }
        }
    }
    Ok(changed)
}

/// One endpoint's stored secrets and headers.
#[derive(sqlx::FromRow)]
struct StoredSecrets {
    id: Uuid,
    secret: String,
    previous_secret: Option<String>,
    headers: Value,
}

/// Seals, with the first key, every endpoint value stored in plaintext or sealed with a later
/// key; returns how many endpoints changed. Each row is written only if it still holds what
/// was read, so a rotation or PATCH meanwhile is never undone (that row is sealed by its own
/// write). Does nothing without a key.
pub async fn seal_stored(pool: &PgPool, keys: &SecretsKeys) -> Result<u64, sqlx::Error> {
    if !keys.is_set() {
        return Ok(0);
    }
    let rows: Vec<StoredSecrets> =
        sqlx::query_as("SELECT id, secret, previous_secret, headers FROM endpoints")
            .fetch_all(pool)
            .await?;
    let mut sealed = 0;
    for row in rows {
        let Some(resealed) = resealed(keys, &row) else {
            continue;
        };
        sealed += sqlx::query(
            "UPDATE endpoints SET secret = $5, previous_secret = $6, headers = $7
             WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $3
                 AND headers = $4",
        )
        .bind(row.id)
        .bind(&row.secret)
        .bind(&row.previous_secret)
        .bind(&row.headers)
        .bind(&resealed.secret)
        .bind(&resealed.previous_secret)
        .bind(&resealed.headers)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(sealed)
}

/// The row sealed with the first key, or `None` when it already is (or cannot be opened:
/// a key was dropped too early; it is left as it is and its deliveries fail, saying why).
fn resealed(keys: &SecretsKeys, row: &StoredSecrets) -> Option<StoredSecrets> {
    let headers_current = row.headers.as_object().is_none_or(|object| {
        object
            .values()
            .flat_map(Value::as_str)
            .all(|v| keys.is_current(v))
    });
    let secrets_current = keys.is_current(&row.secret)
        && row
            .previous_secret
            .as_deref()
            .is_none_or(|v| keys.is_current(v));
    if headers_current && secrets_current {
        return None;
    }
    let reseal = |value: &str| keys.open(value).map(|plain| keys.seal(&plain));
    Some(StoredSecrets {
        id: row.id,
        secret: reseal(&row.secret).ok()?,
        previous_secret: match &row.previous_secret {
            Some(previous) => Some(reseal(previous).ok()?),
            None => None,
        },
        headers: map_values(&row.headers, reseal).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> String {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).unwrap();
        BASE64.encode(bytes)
    }

    #[test]
    fn a_sealed_value_has_the_prefix_hides_the_plaintext_and_opens() {
        let keys = SecretsKeys::parse(&[key()]).unwrap();
        let sealed = keys.seal("whsec_abc");
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(sealed, keys.seal("whsec_abc"), "a fresh nonce each time");
        assert_eq!(keys.open(&sealed).unwrap(), "whsec_abc");
    }

    #[test]
    fn plaintext_passes_through_and_without_a_key_nothing_is_sealed() {
        let keys = SecretsKeys::parse(&[key()]).unwrap();
        assert_eq!(keys.open("whsec_plain").unwrap(), "whsec_plain");
        let none = SecretsKeys::default();
        assert_eq!(none.seal("whsec_plain"), "whsec_plain");
        assert!(matches!(none.open(&keys.seal("x")), Err(OpenError::NoKey)));
    }

    #[test]
    fn an_old_key_later_in_the_list_still_opens_and_only_the_first_seals() {
        let (old, new) = (key(), key());
        let sealed_with_old = SecretsKeys::parse(std::slice::from_ref(&old))
            .unwrap()
            .seal("v");
        let rotated = SecretsKeys::parse(&[new.clone(), old]).unwrap();
        assert_eq!(rotated.open(&sealed_with_old).unwrap(), "v");
        assert!(!rotated.is_current(&sealed_with_old));
        let sealed_now = rotated.seal("v");
        assert!(rotated.is_current(&sealed_now));
        let new_only = SecretsKeys::parse(&[new]).unwrap();
        assert_eq!(new_only.open(&sealed_now).unwrap(), "v");
        assert!(matches!(
            new_only.open(&sealed_with_old),
            Err(OpenError::NoMatchingKey)
        ));
    }

    #[test]
    fn header_values_are_sealed_and_names_kept() {
        let keys = SecretsKeys::parse(&[key()]).unwrap();
        let sealed = keys.seal_headers(&json!({"X-Api-Key": "k1"}));
        let value = sealed["X-Api-Key"].as_str().unwrap();
        assert!(value.starts_with(SEALED_PREFIX));
        assert_eq!(
            keys.open_headers(&sealed).unwrap(),
            json!({"X-Api-Key": "k1"})
        );
    }

    #[test]
    fn a_bad_key_names_the_variable() {
        for bad in ["not base64!", "c2hvcnQ="] {
            let error = SecretsKeys::parse(&[bad.to_owned()]).unwrap_err();
            assert!(error.to_string().contains("SECRETS_KEY"), "{error}");
        }
    }
}
