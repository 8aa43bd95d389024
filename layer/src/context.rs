//! What the app tells the layer about a request: [`AuditContext`], shared
//! through the [`AuditHandle`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use trailhouse_schemas::event::{Action, Actor, Auth, Resource};

/// Who and what a request is about, filled by the app: by a middleware
/// outside the layer (insert it into the request's extensions) or through
/// the [`AuditHandle`] inside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditContext {
    pub org_id: Option<String>,
    pub environment_id: Option<String>,
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub actor: Actor,
    pub auth: Auth,
    /// Replaces the default `http.<method>` action.
    pub action: Option<Action>,
    /// Replaces the default resource (the matched route).
    pub resource: Option<Resource>,
    pub metadata: BTreeMap<String, String>,
    /// Set to leave this request out of the audit log.
    pub skip: bool,
}

/// The audit context of the current request, shared between the layer and
/// the handlers. The layer puts one into every recorded request's
/// extensions; with the `axum` feature it is also an extractor. Without the
/// layer it is a detached context that nothing reads.
#[derive(Debug, Clone, Default)]
pub struct AuditHandle(Arc<Mutex<AuditContext>>);

impl AuditHandle {
    pub(crate) fn new(context: AuditContext) -> AuditHandle {
        AuditHandle(Arc::new(Mutex::new(context)))
    }

    /// The handle in a request's extensions, or a detached one.
    pub fn from_extensions(extensions: &http::Extensions) -> AuditHandle {
        extensions.get::<AuditHandle>().cloned().unwrap_or_default()
    }

    /// Changes the context.
    pub fn update(&self, f: impl FnOnce(&mut AuditContext)) {
        if let Ok(mut c) = self.0.lock() {
            f(&mut c);
        }
    }

    pub(crate) fn snapshot(&self) -> AuditContext {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuditHandle {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(AuditHandle::from_extensions(&parts.extensions))
    }
}
