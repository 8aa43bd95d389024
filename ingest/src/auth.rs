//! Ingest API keys: per-org keys and service keys, stored as SHA-256 hashes.
//!
//! Keys are random 256-bit tokens, so a plain SHA-256 is a sufficient hash at
//! rest; the presented key's hash is compared in constant time with every
//! configured hash. Rotation: configure the old and the new key for the same
//! org at once, move clients, then remove the old one.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// May write events of this org only.
    Org(String),
    /// A platform's own gateway: may write events of any org.
    Service(String),
}

impl Principal {
    /// Whether this principal may write an event of `org`.
    pub fn may_write(&self, org: &str) -> bool {
        match self {
            Principal::Org(o) => o == org,
            Principal::Service(_) => true,
        }
    }
}

/// A configured key hash.
#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    entries: Vec<Entry>,
}

/// Malformed key configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error("key entry {0:?} is not `<name>:<sha256 hex>`")]
    Entry(String),
}

/// SHA-256 of a key, hex encoded: what the configuration stores.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key (`thk_` + 64 hex characters).
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("thk_{}", hex::encode(bytes))
}

/// A parsed key list, `<name>:<sha256 hex>,...` (names may repeat: rotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyList(Vec<(String, [u8; 32])>);

impl KeyList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for KeyList {
    type Err = KeyConfigError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let bad = || KeyConfigError::Entry(item.to_string());
                let (name, hash) = item.rsplit_once(':').ok_or_else(bad)?;
                let bytes = hex::decode(hash).map_err(|_| bad())?;
                let hash: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
                if name.is_empty() {
                    return Err(bad());
                }
                Ok((name.to_string(), hash))
            })
            .collect::<Result<_, _>>()
            .map(KeyList)
    }
}

impl KeyStore {
    /// Org keys (each may write its org only) and service keys (any org).
    pub fn new(org_keys: &KeyList, service_keys: &KeyList) -> Self {
        let entries = |list: &KeyList, make: fn(String) -> Principal| {
            list.0
                .iter()
                .map(move |(name, hash)| Entry {
                    hash: *hash,
                    principal: make(name.clone()),
                })
                .collect::<Vec<_>>()
        };
        let mut all = entries(org_keys, Principal::Org);
        all.extend(entries(service_keys, Principal::Service));
        KeyStore { entries: all }
    }

    /// Parses `org:hash,org:hash` (org keys) and `name:hash,...` (service keys).
    pub fn parse(org_keys: &str, service_keys: &str) -> Result<Self, KeyConfigError> {
        Ok(KeyStore::new(&org_keys.parse()?, &service_keys.parse()?))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented key, if any. Compares against every entry.
    pub fn verify(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&digest)) && found.is_none() {
                found = Some(e.principal.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_by_hash_and_rotate() {
        let (old, new, svc) = (generate_key(), generate_key(), generate_key());
        let store = KeyStore::parse(
            &format!("acme:{},acme:{}", hash_key(&old), hash_key(&new)),
            &format!("gateway:{}", hash_key(&svc)),
        )
        .expect("parse");
        assert_eq!(store.verify(&old), Some(Principal::Org("acme".into())));
        assert_eq!(store.verify(&new), Some(Principal::Org("acme".into())));
        assert_eq!(
            store.verify(&svc),
            Some(Principal::Service("gateway".into()))
        );
        assert_eq!(store.verify("thk_nope"), None);
        assert!(Principal::Org("acme".into()).may_write("acme"));
        assert!(!Principal::Org("acme".into()).may_write("globex"));
        assert!(Principal::Service("g".into()).may_write("anything"));
    }

    #[test]
    fn key_lists_parse() {
        let h = hash_key("k");
        let cases = [
            (String::new(), Some(0)),
            (" , ".into(), Some(0)),
            (format!("acme:{h}"), Some(1)),
            (format!("acme:{h}, acme:{h} ,gw:{h}"), Some(3)),
            (format!("a:b:{h}"), Some(1)),
            ("acme".into(), None),
            ("acme:zz".into(), None),
            (format!("acme:{}", &h[..62]), None),
            (format!(":{h}"), None),
            ("00".repeat(32), None),
        ];
        for (spec, count) in cases {
            let parsed = spec.parse::<KeyList>();
            assert_eq!(parsed.as_ref().ok().map(|l| l.0.len()), count, "{spec:?}");
        }
        assert_eq!(
            "acme".parse::<KeyList>().map_err(|e| e.to_string()),
            Err("key entry \"acme\" is not `<name>:<sha256 hex>`".into())
        );
        assert!(KeyStore::parse("", "").expect("empty").is_empty());
    }
}
