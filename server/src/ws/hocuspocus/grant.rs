//! What an Auth frame grants: Quire's access rules applied to one document
//! of a Hocuspocus socket, and when that grant runs out. Pure functions.
//!
//! - The document is the address's part before the first `\0`, under
//!   Quire's name rules; an invalid name is denied, never a socket close.
//! - The token is the Auth frame's; `""` falls back to the upgrade's
//!   `?token=` (providers keep a query string the app wrote into the URL).
//! - Open mode (no `--auth-secret`) grants `read-write` whatever the token.
//!   A JWT grants `read-write` with scope `write`, `readonly` with `read`,
//!   and is denied (with the reason) if missing, forged, expired or for
//!   other documents. The admin token grants `read-write`.

use crate::auth::{Access, Authenticator, EXPIRY_LEEWAY_SECS};
use crate::names::DocName;
use crdt_core::hocuspocus::Scope;
use std::time::Duration;

/// The reason a provider hears for a name Quire does not accept.
pub(super) const INVALID_NAME: &str = "invalid document name";

/// How long before its token's `exp` a session is asked for a fresh token
/// (the provider's `token` function runs again).
pub(super) const REFRESH_AHEAD: Duration = Duration::from_secs(5);

/// An accepted Auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) name: DocName,
    pub(super) scope: Scope,
    /// The JWT's `exp` (Unix seconds); none for open mode and the admin token.
    pub(super) exp: Option<u64>,
    /// `Access::known_subject`.
    pub(super) who: Option<std::sync::Arc<str>>,
}

/// Decides an Auth for the document `document` (the address's name part).
pub(super) fn grant(
    auth: &Authenticator,
    document: &str,
    token: &str,
    url_token: Option<&str>,
) -> Result<Grant, String> {
    let name = DocName::parse(document).map_err(|_| INVALID_NAME.to_owned())?;
    let token = if token.is_empty() {
        url_token
    } else {
        Some(token)
    };
    let access = auth.authenticate(token).map_err(|e| e.to_string())?;
    access.require_read(&name).map_err(|e| e.to_string())?;
    let scope = if access.can_write(&name) {
        Scope::ReadWrite
    } else {
        Scope::ReadOnly
    };
    let exp = match &access {
        Access::Token(claims) => Some(claims.exp),
        Access::Open | Access::Admin => None,
    };
    Ok(Grant {
        name,
        scope,
        exp,
        who: access.known_subject(),
    })
}

/// When a session whose token expires at `exp` is asked for a new token,
/// and when it ends ("token expired") unless one came: as long after
/// `now_unix_secs` as the token has left, with the same leeway that
/// verifying it allows.
pub(super) fn deadlines(exp: u64, now_unix_secs: u64) -> (Duration, Duration) {
    let ends = Duration::from_secs((exp + EXPIRY_LEEWAY_SECS).saturating_sub(now_unix_secs));
    let ask = Duration::from_secs(exp.saturating_sub(now_unix_secs)).saturating_sub(REFRESH_AHEAD);
    (ask, ends)
}

/// A session's token before a refresh: its `exp`, and whether the provider
/// was asked for a new one already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Asked {
    pub(super) exp: u64,
    pub(super) asked: bool,
}

/// Whether a session whose token now expires at `exp` is to be asked for a
/// new one (at `deadlines`' time): always for its first token, and after a
/// refresh only if the new token expires later than the one it replaces or
/// the provider was not asked yet. A provider that answers the request with
/// the token it already has would otherwise be asked again at once, and
/// again, until the rate limit closed the whole socket.
pub(super) fn ask_again(before: Option<Asked>, exp: u64) -> bool {
    match before {
        None => true,
        Some(Asked { exp: old, asked }) => !asked || exp > old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, Scope as TokenScope};

    const SECRET: &str = "secret";

    fn now() -> u64 {
        chrono::Utc::now().timestamp().max(0) as u64
    }

    fn token(docs: &[&str], scope: TokenScope, exp: u64) -> String {
        Authenticator::new(Some(SECRET), None)
            .mint(&Claims {
                sub: "alice".into(),
                docs: docs.iter().map(|d| d.to_string()).collect(),
                scope,
                exp,
            })
            .expect("minted")
    }

    /// (case, authenticator, document, Auth token, `?token=`, scope or None: denied)
    type GrantCase<'a> = (
        &'a str,
        &'a Authenticator,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Scope>,
    );

    #[test]
    fn a_provider_is_asked_for_a_new_token_once_per_token() {
        let cases = [
            // (before the refresh, the new exp, ask for a new token?)
            (None, 100, true),
            (
                Some(Asked {
                    exp: 100,
                    asked: false,
                }),
                100,
                true,
            ),
            (
                Some(Asked {
                    exp: 100,
                    asked: true,
                }),
                100,
                false,
            ),
            (
                Some(Asked {
                    exp: 100,
                    asked: true,
                }),
                90,
                false,
            ),
            (
                Some(Asked {
                    exp: 100,
                    asked: true,
                }),
                160,
                true,
            ),
        ];
        for (before, exp, want) in cases {
            assert_eq!(ask_again(before, exp), want, "{before:?} then exp {exp}");
        }
    }

    #[test]
    fn what_an_auth_frame_grants() {
        let later = now() + 3600;
        let write = token(&["notes/*"], TokenScope::Write, later);
        let read = token(&["notes/a"], TokenScope::Read, later);
        let expired = token(
            &["notes/a"],
            TokenScope::Write,
            now() - 2 * EXPIRY_LEEWAY_SECS,
        );
        let forged = token(&["notes/a"], TokenScope::Write, later).replace('.', ".x");
        let secured = Authenticator::new(Some(SECRET), Some("admin"));
        let open = Authenticator::new(None, None);
        // (case, authenticator, document, Auth token, ?token=, scope or None: denied)
        let cases: Vec<GrantCase> = vec![
            (
                "open mode, no token",
                &open,
                "notes/a",
                "",
                None,
                Some(Scope::ReadWrite),
            ),
            (
                "open mode, any token",
                &open,
                "notes/a",
                "junk",
                None,
                Some(Scope::ReadWrite),
            ),
            (
                "write token",
                &secured,
                "notes/a",
                &write,
                None,
                Some(Scope::ReadWrite),
            ),
            (
                "read token",
                &secured,
                "notes/a",
                &read,
                None,
                Some(Scope::ReadOnly),
            ),
            (
                "admin token",
                &secured,
                "notes/a",
                "admin",
                None,
                Some(Scope::ReadWrite),
            ),
            (
                "token for other documents",
                &secured,
                "other",
                &write,
                None,
                None,
            ),
            (
                "read token for another document",
                &secured,
                "notes/b",
                &read,
                None,
                None,
            ),
            ("expired token", &secured, "notes/a", &expired, None, None),
            ("forged token", &secured, "notes/a", &forged, None, None),
            ("no token", &secured, "notes/a", "", None, None),
            (
                "no token, ?token= instead",
                &secured,
                "notes/a",
                "",
                Some(&write),
                Some(Scope::ReadWrite),
            ),
            (
                "the Auth token wins over ?token=",
                &secured,
                "notes/a",
                &read,
                Some(&write),
                Some(Scope::ReadOnly),
            ),
            ("invalid name", &open, "a b", "", None, None),
            ("empty name", &open, "", "", None, None),
            // Names in frames are taken as they are: never percent-decoded.
            ("percent-encoded name", &open, "%41bc", "", None, None),
        ];
        for (case, auth, document, token, url_token, expected) in cases {
            let got = grant(auth, document, token, url_token);
            assert_eq!(
                got.as_ref().ok().map(|g| g.scope),
                expected,
                "{case}: {got:?}"
            );
            if let Err(reason) = got {
                assert!(!reason.is_empty(), "{case}: a denial says why");
            }
        }
        assert_eq!(
            grant(&open, "a b", "", None),
            Err(INVALID_NAME.to_owned()),
            "an invalid name is denied with the reference's reason"
        );
        let granted = grant(&secured, "notes/a", &write, None).expect("granted");
        assert_eq!(
            granted.exp,
            Some(later),
            "a JWT session ends with its token"
        );
        assert_eq!(grant(&open, "notes/a", "", None).map(|g| g.exp), Ok(None));
    }

    #[test]
    fn a_session_is_asked_for_a_new_token_before_it_expires() {
        let s = Duration::from_secs;
        let leeway = EXPIRY_LEEWAY_SECS;
        // (exp relative to now, ask after, end after)
        let cases: &[(i64, Duration, Duration)] = &[
            (3600, s(3595), s(3600 + leeway)),
            (3, s(0), s(3 + leeway)),
            (0, s(0), s(leeway)),
            (-(leeway as i64) + 3, s(0), s(3)),
            (-(leeway as i64) - 10, s(0), s(0)),
        ];
        let now = 1_000_000u64;
        for (relative, ask, end) in cases {
            let exp = now.checked_add_signed(*relative).expect("in range");
            assert_eq!(deadlines(exp, now), (*ask, *end), "exp {relative:+} s");
        }
    }
}
