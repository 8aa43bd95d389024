//! The one claim-scoping rule of every API: a token reads its org's events
//! and, when it carries an `environment_id` or a `workspace_id` claim, only
//! the events of that environment and of that workspace. Every dialect
//! (native list, show and export; Atomic-style; organisation log list and
//! details; Torq-style; Zendesk-style list, show, offset mode and its count)
//! starts its [`Filter`] from [`scope`] and adds the request's conditions to
//! it, so a request filter only ever narrows the scope: one that asks for
//! another environment or workspace selects nothing (an empty page, or 404
//! for a single event), never more.

use crate::auth::Claims;
use crate::query::{Cond, Field, Filter};

/// The filter a token may read: its org, and its environment and workspace
/// when it carries them (an empty claim is no claim).
pub fn scope(claims: &Claims) -> Filter {
    let mut f = Filter::new(&claims.org_id);
    for (field, value) in [
        (Field::Environment, &claims.environment_id),
        (Field::Workspace, &claims.workspace_id),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            f.push(Cond::AnyOf(field, vec![v.clone()]));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(env: Option<&str>, ws: Option<&str>) -> Claims {
        Claims {
            sub: "u".into(),
            org_id: "o".into(),
            environment_id: env.map(String::from),
            workspace_id: ws.map(String::from),
            roles: vec![],
            permissions: vec![],
            exp: 0,
            iat: 0,
        }
    }

    #[test]
    fn claims_become_conditions() {
        let env = || Cond::AnyOf(Field::Environment, vec!["e".into()]);
        let ws = || Cond::AnyOf(Field::Workspace, vec!["w".into()]);
        // (environment claim, workspace claim, conditions)
        let cases = [
            (None, None, vec![]),
            (Some("e"), None, vec![env()]),
            (None, Some("w"), vec![ws()]),
            (Some("e"), Some("w"), vec![env(), ws()]),
            (Some(""), Some(""), vec![]),
        ];
        for (e, w, conds) in cases {
            let f = scope(&claims(e, w));
            assert_eq!(f.org_id, "o");
            assert_eq!(f.conds, conds, "{e:?} {w:?}");
        }
    }
}
