//! Who may read what: permissions from roles (configurable) or granted
//! directly in the token, and the allow-list of the request headers any API
//! returns (the native list, show and export, and the organisation log's
//! details; the other dialects return no headers).

use std::collections::BTreeMap;

use trailhouse_schemas::EventRow;

use crate::auth::Claims;
use crate::error::ApiError;

/// The permission every audit-log API requires (the Atomic-style API uses a role).
pub const VIEW_AUDIT_LOG: &str = "viewAuditLog";

/// Headers never shown, whatever the allow-list says.
pub const NEVER_SHOWN: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Access configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// role → permissions it grants.
    pub role_permissions: BTreeMap<String, Vec<String>>,
    /// Lower-case header names an API may return.
    pub detail_headers: Vec<String>,
}

impl Default for Access {
    fn default() -> Self {
        Access::new(RolePermissions::default(), DetailHeaders::default())
    }
}

/// `role:permission` pairs, comma separated; a role may appear several times.
pub const DEFAULT_ROLE_PERMISSIONS: &str = "owner:viewAuditLog,admin:viewAuditLog";
/// Header names, comma separated.
pub const DEFAULT_DETAIL_HEADERS: &str =
    "accept,accept-language,content-type,content-length,origin,referer,user-agent,x-request-id,x-forwarded-for";

/// A configuration value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AccessConfigError(String);

/// Role → the permissions it grants, from `role:permission` pairs separated
/// by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePermissions(pub BTreeMap<String, Vec<String>>);

impl RolePermissions {
    /// Parses `role:permission` pairs; every pair needs both halves.
    pub fn parse(s: &str) -> Result<Self, AccessConfigError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (role, perm) = pair
                .split_once(':')
                .filter(|(r, p)| !r.trim().is_empty() && !p.trim().is_empty())
                .ok_or_else(|| {
                    AccessConfigError(format!(
                        "role permission {pair:?} is not of the form role:permission"
                    ))
                })?;
            map.entry(role.trim().to_string())
                .or_default()
                .push(perm.trim().to_string());
        }
        Ok(RolePermissions(map))
    }
}

/// The grants of [`DEFAULT_ROLE_PERMISSIONS`].
impl Default for RolePermissions {
    fn default() -> Self {
        RolePermissions::parse(DEFAULT_ROLE_PERMISSIONS).unwrap_or(RolePermissions(BTreeMap::new()))
    }
}

/// Lower-case header names, from a comma-separated list (every list parses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailHeaders(pub Vec<String>);

impl From<&str> for DetailHeaders {
    fn from(s: &str) -> Self {
        DetailHeaders(
            s.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }
}

/// The headers of [`DEFAULT_DETAIL_HEADERS`].
impl Default for DetailHeaders {
    fn default() -> Self {
        DetailHeaders::from(DEFAULT_DETAIL_HEADERS)
    }
}

impl Access {
    pub fn new(role_permissions: RolePermissions, detail_headers: DetailHeaders) -> Self {
        Access {
            role_permissions: role_permissions.0,
            detail_headers: detail_headers.0,
        }
    }

    /// Parses the two configuration strings.
    pub fn parse(role_permissions: &str, detail_headers: &str) -> Result<Self, AccessConfigError> {
        Ok(Access::new(
            RolePermissions::parse(role_permissions)?,
            DetailHeaders::from(detail_headers),
        ))
    }

    /// Whether the token grants `perm`, directly or through a role.
    pub fn has_permission(&self, c: &Claims, perm: &str) -> bool {
        c.permissions.iter().any(|p| p == perm)
            || c.roles.iter().any(|r| {
                self.role_permissions
                    .get(r)
                    .is_some_and(|ps| ps.iter().any(|p| p == perm))
            })
    }

    /// 403 unless the token grants `perm`.
    pub fn require(&self, c: &Claims, perm: &str) -> Result<(), ApiError> {
        if self.has_permission(c, perm) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token lacks the {perm} permission"
            )))
        }
    }

    /// 403 unless the token has `role`.
    pub fn require_role(&self, c: &Claims, role: &str) -> Result<(), ApiError> {
        if c.roles.iter().any(|r| r == role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token lacks the {role} role"
            )))
        }
    }

    /// Whether an API may return header `name`.
    pub fn shows_header(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        !NEVER_SHOWN.contains(&n.as_str()) && self.detail_headers.contains(&n)
    }

    /// Keeps only the request headers an API may return, under their
    /// lower-case names.
    pub fn strip_headers(&self, r: &mut EventRow) {
        r.request_headers = std::mem::take(&mut r.request_headers)
            .into_iter()
            .filter(|(k, _)| self.shows_header(k))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: &[&str], perms: &[&str]) -> Claims {
        Claims {
            sub: "u".into(),
            org_id: "o".into(),
            environment_id: None,
            workspace_id: None,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            permissions: perms.iter().map(|s| s.to_string()).collect(),
            exp: 0,
            iat: 0,
        }
    }

    #[test]
    fn roles_and_direct_permissions() {
        let a = Access::default();
        assert!(a.has_permission(&claims(&["owner"], &[]), VIEW_AUDIT_LOG));
        assert!(a.has_permission(&claims(&["admin"], &[]), VIEW_AUDIT_LOG));
        assert!(!a.has_permission(&claims(&["member"], &[]), VIEW_AUDIT_LOG));
        assert!(a.has_permission(&claims(&[], &[VIEW_AUDIT_LOG]), VIEW_AUDIT_LOG));
        let custom = Access::parse("auditor:viewAuditLog", "").unwrap_or_default();
        assert!(custom.has_permission(&claims(&["auditor"], &[]), VIEW_AUDIT_LOG));
        assert!(!custom.has_permission(&claims(&["admin"], &[]), VIEW_AUDIT_LOG));
        assert!(Access::parse("admin", "").is_err());
    }

    #[test]
    fn configuration_values_parse() {
        let r =
            RolePermissions::parse(" auditor : viewAuditLog ,auditor:export,,").unwrap_or_default();
        assert_eq!(
            r.0.get("auditor").cloned(),
            Some(vec!["viewAuditLog".to_string(), "export".to_string()])
        );
        for bad in ["admin", "admin:", ":viewAuditLog", "a:b,c"] {
            let e = RolePermissions::parse(bad).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("role:permission")), "{bad}");
        }
        assert_eq!(RolePermissions::parse("").ok().map(|r| r.0.len()), Some(0));
        assert_eq!(
            RolePermissions::default().0.keys().collect::<Vec<_>>(),
            vec!["admin", "owner"]
        );
        assert_eq!(
            DetailHeaders::from(" X-Request-Id ,,Accept").0,
            vec!["x-request-id", "accept"]
        );
        assert_eq!(DetailHeaders::default().0.len(), 9);
    }

    #[test]
    fn secrets_are_never_shown() {
        let a = Access::parse("", "Authorization,Cookie,X-Request-Id").unwrap_or_default();
        assert!(!a.shows_header("authorization"));
        assert!(!a.shows_header("Cookie"));
        assert!(a.shows_header("x-request-id"));
        assert!(!a.shows_header("content-type"));
        let e = &trailhouse_schemas::examples::all()[0];
        let mut r = EventRow::from_event(e, Default::default());
        r.request_headers = [
            ("Authorization", "Bearer x"),
            ("X-Request-Id", "r1"),
            ("X-Secret-Key", "s"),
            ("cookie", "c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        a.strip_headers(&mut r);
        assert_eq!(
            r.request_headers.into_iter().collect::<Vec<_>>(),
            vec![("x-request-id".to_string(), "r1".to_string())]
        );
    }
}
