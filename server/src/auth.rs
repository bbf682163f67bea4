//! Access control: HS256 JWTs and the admin token.
//!
//! With no `--auth-secret` the server is in open mode: anyone reads and
//! writes every document. With a secret, every request needs a token:
//! `?token=` or `Authorization: Bearer`. The admin token, when configured,
//! is accepted wherever a token is and also grants admin calls.

use crate::error::AppError;
use crate::names::DocName;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp`.
pub const EXPIRY_LEEWAY_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Document names, or prefixes ending in `*`.
    pub docs: Vec<String>,
    pub scope: Scope,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    fn covers(&self, doc: &DocName) -> bool {
        self.docs
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => doc.as_str().starts_with(prefix),
                None => pattern == doc.as_str(),
            })
    }

    fn covers_prefix(&self, prefix: &str) -> bool {
        self.docs
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(p) => prefix.starts_with(p) || p.starts_with(prefix),
                None => pattern.starts_with(prefix),
            })
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No secret configured: everyone may read and write.
    Open,
    /// The admin token.
    Admin,
    Token(Claims),
}

impl Access {
    pub fn subject(&self) -> &str {
        match self {
            Access::Open => "anonymous",
            Access::Admin => "admin",
            Access::Token(c) => &c.sub,
        }
    }

    /// Who it is, when a token says so (a token's `sub`, or the admin);
    /// nobody in particular in open mode. What versions record.
    pub fn known_subject(&self) -> Option<std::sync::Arc<str>> {
        match self {
            Access::Open => None,
            Access::Admin | Access::Token(_) => Some(self.subject().into()),
        }
    }

    /// 403 unless this access may open `doc` at all.
    pub fn require_read(&self, doc: &DocName) -> Result<(), AppError> {
        match self {
            Access::Open | Access::Admin => Ok(()),
            Access::Token(c) if c.covers(doc) => Ok(()),
            Access::Token(_) => Err(AppError::Forbidden(format!(
                "token does not grant access to {doc}"
            ))),
        }
    }

    pub fn can_write(&self, doc: &DocName) -> bool {
        match self {
            Access::Open | Access::Admin => true,
            Access::Token(c) => c.scope == Scope::Write && c.covers(doc),
        }
    }

    pub fn require_write(&self, doc: &DocName) -> Result<(), AppError> {
        self.require_read(doc)?;
        if self.can_write(doc) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("token is read-only for {doc}")))
        }
    }

    /// Whether a listing may show `name`.
    pub fn may_list(&self, name: &str) -> bool {
        match self {
            Access::Open | Access::Admin => true,
            Access::Token(c) => DocName::parse(name).is_ok_and(|n| c.covers(&n)),
        }
    }

    /// Whether any document under `prefix` may be visible (cheap pre-check).
    pub fn may_list_prefix(&self, prefix: &str) -> bool {
        match self {
            Access::Open | Access::Admin => true,
            Access::Token(c) => c.covers_prefix(prefix),
        }
    }
}

/// The configured secrets; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<(EncodingKey, DecodingKey)>,
    admin_token: Option<String>,
}

impl Authenticator {
    pub fn new(secret: Option<&str>, admin_token: Option<&str>) -> Self {
        Authenticator {
            secret: secret.map(|s| {
                (
                    EncodingKey::from_secret(s.as_bytes()),
                    DecodingKey::from_secret(s.as_bytes()),
                )
            }),
            admin_token: admin_token.map(str::to_owned),
        }
    }

    pub fn is_open(&self) -> bool {
        self.secret.is_none()
    }

    /// Resolves a presented token (if any) to an access level. 401 for a
    /// missing, malformed, badly signed or expired token when a secret is set.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Access, AppError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if let (Some(token), Some(admin)) = (token, &self.admin_token) {
            if constant_time_eq(token.as_bytes(), admin.as_bytes()) {
                return Ok(Access::Admin);
            }
        }
        let Some((_, key)) = &self.secret else {
            return Ok(Access::Open);
        };
        let token = token.ok_or_else(|| AppError::Unauthorized("missing token".into()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = EXPIRY_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| Access::Token(data.claims))
            .map_err(|e| AppError::Unauthorized(format!("invalid token: {e}")))
    }

    /// Admin calls: the admin token, or anyone in open mode without an admin token.
    pub fn require_admin(&self, access: &Access) -> Result<(), AppError> {
        match access {
            Access::Admin => Ok(()),
            Access::Open if self.admin_token.is_none() => Ok(()),
            _ if self.admin_token.is_none() => Err(AppError::Forbidden(
                "admin calls need --admin-token to be configured".into(),
            )),
            _ => Err(AppError::Forbidden("admin token required".into())),
        }
    }

    /// Signs a token; fails when no secret is configured.
    pub fn mint(&self, claims: &Claims) -> Result<String, AppError> {
        let Some((key, _)) = &self.secret else {
            return Err(AppError::BadRequest(
                "minting tokens needs --auth-secret".into(),
            ));
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .map_err(|e| AppError::Internal(format!("cannot sign token: {e}")))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of a request: `Authorization: Bearer …` wins over `?token=`.
pub fn token_from(headers: &axum::http::HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_owned);
    bearer.or_else(|| query.and_then(form_urlencoded_token))
}

fn form_urlencoded_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str) -> DocName {
        DocName::parse(name).expect("valid")
    }

    fn claims(docs: &[&str], scope: Scope, exp: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            docs: docs.iter().map(|d| d.to_string()).collect(),
            scope,
            exp,
        }
    }

    #[test]
    fn tokens_round_trip_and_grant_what_they_say() {
        let auth = Authenticator::new(Some("s3cret"), Some("admin"));
        let token = auth
            .mint(&claims(&["team/*", "solo"], Scope::Read, now_secs() + 60))
            .expect("mint");
        let access = auth.authenticate(Some(&token)).expect("valid");
        assert!(access.require_read(&doc("team/a")).is_ok());
        assert!(access.require_read(&doc("solo")).is_ok());
        assert!(access.require_read(&doc("solo2")).is_err());
        assert!(access.require_read(&doc("other")).is_err());
        assert!(!access.can_write(&doc("team/a")));
        assert!(auth.require_admin(&access).is_err());
        assert_eq!(
            auth.authenticate(Some("admin")).expect("admin"),
            Access::Admin
        );
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let auth = Authenticator::new(Some("s3cret"), None);
        let other = Authenticator::new(Some("other"), None);
        let forged = other
            .mint(&claims(&["*"], Scope::Write, now_secs() + 60))
            .expect("mint");
        let expired = auth
            .mint(&claims(
                &["*"],
                Scope::Write,
                now_secs() - 2 * EXPIRY_LEEWAY_SECS,
            ))
            .expect("mint");
        let within_leeway = auth
            .mint(&claims(&["*"], Scope::Write, now_secs() - 10))
            .expect("mint");
        for bad in [
            None,
            Some(""),
            Some("garbage"),
            Some(forged.as_str()),
            Some(expired.as_str()),
        ] {
            assert!(
                matches!(auth.authenticate(bad), Err(AppError::Unauthorized(_))),
                "{bad:?}"
            );
        }
        assert!(auth.authenticate(Some(&within_leeway)).is_ok());
    }

    #[test]
    fn open_mode_allows_everything_but_minting() {
        let auth = Authenticator::new(None, None);
        let access = auth.authenticate(None).expect("open");
        assert_eq!(access, Access::Open);
        assert!(access.can_write(&doc("x")));
        assert!(auth.require_admin(&access).is_ok());
        assert!(auth.mint(&claims(&["*"], Scope::Read, 1)).is_err());
        // With an admin token configured, DELETE needs it even in open mode.
        let guarded = Authenticator::new(None, Some("admin"));
        assert!(guarded.require_admin(&Access::Open).is_err());
    }

    #[test]
    fn token_comes_from_bearer_or_query() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(
            token_from(&headers, Some("a=1&token=abc%2Ed")),
            Some("abc.d".into())
        );
        headers.insert(
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(token_from(&headers, Some("token=abc")), Some("xyz".into()));
        assert_eq!(token_from(&axum::http::HeaderMap::new(), None), None);
    }
}
