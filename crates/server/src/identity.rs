//! Who is calling and from where: the identity facts that authentication establishes and the
//! audit trail, the extractors and the routes read. Below all of them, so none of those
//! modules needs another's internals to name a caller.

use espwatch_core::Timestamp;
use espwatch_core::access::{Permission, Role, WellScope};

/// Until when the credential a request presented is accepted (exclusive): an access token's
/// `exp`, or the end of the previous JWT secret's grace period when that signed it and ends
/// first, or an API key's expiry; `None` for a key that never expires. Left on the request by
/// `auth::guard` beside the [`Principal`], for connections that outlive the request (the
/// live stream closes when it passes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CredentialEnd(pub Option<Timestamp>);

/// Who is calling.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// User name, or API key name.
    pub name: String,
    pub role: Role,
    pub scope: WellScope,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PrincipalKind {
    User { session_id: String },
    ApiKey { id: String },
}

impl Principal {
    /// The audit actor: `user:<name>` or `key:<id>`.
    pub fn actor(&self) -> String {
        match &self.kind {
            PrincipalKind::User { .. } => format!("user:{}", self.name),
            PrincipalKind::ApiKey { id } => format!("key:{id}"),
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.role.allows(permission)
    }

    pub fn may_see_well(&self, well_id: &str) -> bool {
        self.scope.allows(well_id)
    }
}

/// The client's address as the audit and rate limits see it.
#[derive(Clone, Debug)]
pub struct SourceAddr(pub String);
