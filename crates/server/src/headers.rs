//! The hardening headers every answer carries, shared by the router and by the connection
//! layer (which answers some malformed requests before the router sees them).

/// The API's `Content-Security-Policy`: it answers JSON only, so everything is forbidden.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The hardening headers every response carries besides its `Content-Security-Policy` (also
/// written by the connection layer when it answers without the router).
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
];

/// `Strict-Transport-Security`, sent only on answers over TLS (RFC 6797 §7.2: a host must not
/// send it over plain HTTP). Behind a TLS-terminating proxy, the proxy sets it.
pub const HSTS: (&str, &str) = (
    "strict-transport-security",
    "max-age=63072000; includeSubDomains",
);
