//! Per-stream masking of the delivered event: drop a field, or replace it
//! with a keyed hash (HMAC-SHA256 under the stream's salt, so equal values
//! stay equal within the stream and cannot be looked up without the salt).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::spec::{bad, SpecError};

/// What a mask does to its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskAction {
    /// The field is left out.
    Drop,
    /// The value (or each value of a map) becomes `hmac-sha256:<hex>`.
    Hash,
}

/// One masked field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// A field of the delivered event, e.g. `actor.email` or `request.body`.
    pub field: String,
    pub action: MaskAction,
}

/// The fields a mask may name, and whether they can be hashed (strings and
/// maps of strings) or only dropped.
pub const FIELDS: [(&str, bool); 22] = [
    ("actor.id", true),
    ("actor.email", true),
    ("actor.name", true),
    ("auth.client_id", true),
    ("auth.sub", true),
    ("auth.app_client_id", true),
    ("auth.account_id", true),
    ("resource.id", true),
    ("resource.name", true),
    ("workspace_name", true),
    ("request.url", true),
    ("request.path", true),
    ("request.ip", true),
    ("request.user_agent", true),
    ("request.body", true),
    ("request.headers", true),
    ("request.path_params", true),
    ("request.query", false),
    ("metadata", true),
    ("action.description", true),
    ("source", true),
    ("request", false),
];

/// The most masks one stream may have.
pub const MAX_MASKS: usize = FIELDS.len();

/// Every mask names a known field, once, with an action it allows.
pub fn validate(masks: &[Mask]) -> Result<(), SpecError> {
    if masks.len() > MAX_MASKS {
        return Err(bad("masks", format!("at most {MAX_MASKS}")));
    }
    for (i, m) in masks.iter().enumerate() {
        let Some((_, hashable)) = FIELDS.iter().find(|(f, _)| *f == m.field) else {
            let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
            return Err(bad(
                format!("masks[{i}].field"),
                format!("{:?} is not one of {}", m.field, known.join(", ")),
            ));
        };
        if m.action == MaskAction::Hash && !hashable {
            return Err(bad(
                format!("masks[{i}].action"),
                format!("{} can only be dropped", m.field),
            ));
        }
        if masks[..i].iter().any(|o| o.field == m.field) {
            return Err(bad(
                format!("masks[{i}].field"),
                format!("{} is masked twice", m.field),
            ));
        }
    }
    Ok(())
}

/// The keyed hash of one value.
pub fn keyed_hash(salt: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(value.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// Applies `masks` to an event's JSON in place.
pub fn apply(event: &mut Value, masks: &[Mask], salt: &str) {
    for m in masks {
        let (parent, leaf) = match m.field.rsplit_once('.') {
            Some((p, l)) => (event.get_mut(p), l),
            None => (Some(&mut *event), m.field.as_str()),
        };
        let Some(Value::Object(obj)) = parent else {
            continue;
        };
        match m.action {
            MaskAction::Drop => {
                obj.remove(leaf);
            }
            MaskAction::Hash => match obj.get_mut(leaf) {
                Some(Value::String(s)) => *s = keyed_hash(salt, s),
                Some(Value::Object(map)) => {
                    for v in map.values_mut() {
                        if let Value::String(s) = v {
                            *s = keyed_hash(salt, s);
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mask(field: &str, action: MaskAction) -> Mask {
        Mask {
            field: field.into(),
            action,
        }
    }

    #[test]
    fn masks_drop_and_hash_what_they_name() {
        let mut e = json!({
            "actor": {"id": "u1", "email": "a@example.com"},
            "request": {"body": "{\"card\":1}", "headers": {"x-a": "1"}, "path": "/x"},
            "source": "api",
        });
        let masks = [
            mask("actor.email", MaskAction::Hash),
            mask("request.body", MaskAction::Drop),
            mask("request.headers", MaskAction::Hash),
            mask("source", MaskAction::Drop),
            mask("resource.name", MaskAction::Hash),
        ];
        apply(&mut e, &masks, "salt");
        assert_eq!(
            e["actor"]["email"],
            json!(keyed_hash("salt", "a@example.com"))
        );
        assert_eq!(e["actor"]["id"], "u1");
        assert!(e["request"].get("body").is_none());
        assert_eq!(
            e["request"]["headers"]["x-a"],
            json!(keyed_hash("salt", "1"))
        );
        assert_eq!(e["request"]["path"], "/x");
        assert!(e.get("source").is_none());
        assert!(e.get("resource").is_none());
    }

    #[test]
    fn hashes_depend_on_the_salt_and_the_value() {
        let a = keyed_hash("s1", "a@example.com");
        assert_eq!(a, keyed_hash("s1", "a@example.com"));
        assert_ne!(a, keyed_hash("s2", "a@example.com"));
        assert_ne!(a, keyed_hash("s1", "b@example.com"));
        assert!(a.starts_with("hmac-sha256:") && a.len() == 12 + 64);
    }

    #[test]
    fn bad_masks_name_their_index() {
        let cases = [
            (
                vec![mask("actor.password", MaskAction::Drop)],
                "masks[0].field",
            ),
            (
                vec![mask("request.query", MaskAction::Hash)],
                "masks[0].action",
            ),
            (
                vec![
                    mask("actor.email", MaskAction::Drop),
                    mask("actor.email", MaskAction::Hash),
                ],
                "masks[1].field",
            ),
        ];
        for (masks, field) in cases {
            assert_eq!(validate(&masks).expect_err("bad").field, field);
        }
        validate(&[mask("request", MaskAction::Drop)]).expect("valid");
    }
}
