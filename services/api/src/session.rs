//! People's sign-in, for the web console (ADR 0027): passwords (argon2id,
//! set by an admin or by the user through a one-time invitation), sessions
//! in `HttpOnly; Secure; SameSite=Strict` cookies that end when idle and
//! at an absolute limit, a CSRF token every state change made with a
//! session must carry (double submit: a cookie the console reads, sent
//! back in `x-csrf-token`, derived from the session so it cannot be
//! forged), and sign-in throttling by user and by client address. Bearer
//! tokens (scripts, `ctl`) are untouched: they carry no ambient authority,
//! so they need no CSRF token.
//!
//! Routes (outside the operation registry: signing in is what makes a
//! caller): `POST /api/v1/session` (sign in), `DELETE /api/v1/session`
//! (sign out), `POST /api/v1/session/invite` (set a password with an
//! invitation, and sign in).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gatehouse_core::model::{ApiToken, Credential, Role, TokenKind};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::ApiError;
use crate::admin::{Admin, Caller};

pub const SESSION_COOKIE: &str = "gatehouse_session";
pub const CSRF_COOKIE: &str = "gatehouse_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Passwords: at least this long (NIST SP 800-63B), at most 1 KiB.
pub const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;

/// How sessions, sign-in attempts and invitations are bounded.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub max_age: Duration,
    /// Failed sign-ins per user (and per client address) within
    /// `lockout` before further attempts are refused for the rest of it.
    pub max_failures: usize,
    pub lockout: Duration,
    /// An invitation is valid this long.
    pub invite_ttl: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(12 * 3600),
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            invite_ttl: Duration::from_secs(72 * 3600),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a new password's length.
pub fn check_password(p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if n < MIN_PASSWORD || p.len() > MAX_PASSWORD {
        return Err(ApiError::BadRequest(format!(
            "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of `password`, off the async threads.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Unavailable(format!("hashing the password: {e}")))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("hashing the password: {e}")))?
}

/// Whether `password` matches `phc`, off the async threads.
async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&phc).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash nobody's password matches, verified against when the user is
/// unknown or has no password, so the answer takes as long either way.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        argon2::Argon2::default()
            .hash_password(
                crate::admin::random_secret().as_bytes(),
                &SaltString::generate(&mut OsRng),
            )
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The CSRF token of a session: derived from its secret (which the
/// browser keeps `HttpOnly`), so a page of another site can neither read
/// nor forge it.
pub fn csrf_of(session_secret: &str) -> String {
    gatehouse_core::ids::sha256_hex(format!("gatehouse-csrf:{session_secret}").as_bytes())
}

/// Failed sign-ins, by user and by client address, within the lockout.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<tokio::time::Instant>>>,
}

impl Throttle {
    /// `Err(retry after)` while any of `keys` had its limit of failures
    /// within `window`: `max` for a user, four times that for a client
    /// address (people share addresses behind NAT and proxies).
    fn check(&self, keys: &[String], max: usize, window: Duration) -> Result<(), Duration> {
        let now = tokio::time::Instant::now();
        let Ok(mut f) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = Duration::ZERO;
        for k in keys {
            if let Some(times) = f.get_mut(k) {
                times.retain(|t| now.duration_since(*t) < window);
                let limit = if k.starts_with("addr:") { max * 4 } else { max };
                if times.len() >= limit
                    && let Some(oldest) = times.first()
                {
                    wait = wait.max(window.saturating_sub(now.duration_since(*oldest)));
                }
            }
        }
        // Forget keys with nothing left (a bounded map).
        f.retain(|_, t| !t.is_empty());
        if wait > Duration::ZERO {
            Err(wait)
        } else {
            Ok(())
        }
    }

    fn fail(&self, keys: &[String]) {
        if let Ok(mut f) = self.failures.lock() {
            for k in keys {
                f.entry(k.clone())
                    .or_default()
                    .push(tokio::time::Instant::now());
            }
        }
    }

    fn clear(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

/// A new session (or invitation) token: its record and its secret.
fn new_token(
    user: &str,
    kind: TokenKind,
    now: i64,
    expires_at: i64,
    idle: Option<i64>,
) -> (ApiToken, String) {
    let prefix = match kind {
        TokenKind::Session => "ghs",
        TokenKind::Invite => "ghi",
        TokenKind::Api => "ght",
    };
    let secret = format!("{prefix}_{}", crate::admin::random_secret());
    let token = ApiToken {
        id: uuid::Uuid::new_v4().to_string(),
        user: user.to_owned(),
        secret_sha256: gatehouse_core::ids::sha256_hex(secret.as_bytes()),
        description: match kind {
            TokenKind::Session => "console session".into(),
            TokenKind::Invite => "invitation".into(),
            TokenKind::Api => String::new(),
        },
        created_at: now,
        created_by: user.to_owned(),
        expires_at: Some(expires_at),
        revoked: false,
        kind,
        idle_expires_at: idle,
    };
    (token, secret)
}

/// What a signed-in browser holds.
pub struct Session {
    pub caller: Caller,
    pub secret: String,
    pub token: ApiToken,
}

impl Admin {
    fn sessions(&self) -> &SessionConfig {
        &self.cfg.sessions
    }

    async fn start_session(&self, user: &str, role: Role) -> Result<Session, ApiError> {
        let now = self.now();
        let s = self.sessions();
        let (token, secret) = new_token(
            user,
            TokenKind::Session,
            now,
            now + ms(s.max_age),
            Some(now + ms(s.idle)),
        );
        self.store.put_token(&token).await?;
        Ok(Session {
            caller: Caller {
                name: user.to_owned(),
                role,
            },
            secret,
            token,
        })
    }

    /// Signs `name` in with `password`, from `peer`.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Session, ApiError> {
        let s = self.sessions().clone();
        let keys: Vec<String> = std::iter::once(format!("user:{name}"))
            .chain(peer.map(|p| format!("addr:{p}")))
            .collect();
        let anonymous = Caller {
            name: name.to_owned(),
            role: Role::Observer,
        };
        let from = json!({"from": peer.map(|p| p.to_string())});
        if let Err(wait) = self.throttle.check(&keys, s.max_failures, s.lockout) {
            self.audit(
                &anonymous,
                "session.create",
                name,
                "denied",
                json!({"from": peer.map(|p| p.to_string()), "throttled": true}),
            )
            .await?;
            return Err(ApiError::TooMany(format!(
                "too many failed sign-ins; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let user = self.store.get_user(name).await?.filter(|u| !u.disabled);
        let phc = match &user {
            Some(u) => self
                .store
                .credential(&u.name)
                .await?
                .map(|c| c.password_phc),
            None => None,
        };
        let matches = verify_password(
            password.to_owned(),
            phc.clone().unwrap_or_else(|| decoy().to_owned()),
        )
        .await;
        let (Some(user), true, true) = (user, phc.is_some(), matches) else {
            self.throttle.fail(&keys);
            self.audit(&anonymous, "session.create", name, "denied", from)
                .await?;
            // The same answer whether the user exists or not.
            return Err(ApiError::Unauthorized);
        };
        self.throttle.clear(&keys[0]);
        let session = self.start_session(&user.name, user.role).await?;
        self.audit(
            &session.caller,
            "session.create",
            &user.name,
            "accepted",
            from,
        )
        .await?;
        Ok(session)
    }

    /// The caller of a session cookie; state changes (`safe` false) must
    /// carry the session's CSRF token. The session's idle end moves
    /// forward, written at most once a minute.
    pub async fn session_caller(
        &self,
        secret: &str,
        csrf: Option<&str>,
        safe: bool,
    ) -> Result<Caller, ApiError> {
        let sha = gatehouse_core::ids::sha256_hex(secret.as_bytes());
        let now = self.now();
        let Some(mut token) = self.store.token_by_hash(&sha).await? else {
            return Err(ApiError::Unauthorized);
        };
        if token.kind != TokenKind::Session || !token.is_usable(now) {
            return Err(ApiError::Unauthorized);
        }
        if !safe {
            let expected = csrf_of(secret);
            let ok = csrf.is_some_and(|c| gatehouse_core::nodekey::secret_matches(c, &expected));
            if !ok {
                return Err(ApiError::Forbidden(format!(
                    "a change made with a session needs its CSRF token in the {CSRF_HEADER} header (the {CSRF_COOKIE} cookie's value)"
                )));
            }
        }
        let user = match self.store.get_user(&token.user).await? {
            Some(u) if !u.disabled => u,
            _ => return Err(ApiError::Unauthorized),
        };
        let idle = ms(self.sessions().idle);
        let next = (now + idle).min(token.expires_at.unwrap_or(i64::MAX));
        if token.idle_expires_at.is_some_and(|e| next - e >= 60_000) {
            token.idle_expires_at = Some(next);
            if let Err(e) = self.store.put_token(&token).await {
                tracing::warn!(error = %e, "extending a session failed; it ends when idle as before");
            }
        }
        Ok(Caller {
            name: user.name,
            role: user.role,
        })
    }

    /// Ends the session of `secret` (revokes it).
    pub async fn sign_out(&self, secret: &str) -> Result<(), ApiError> {
        let sha = gatehouse_core::ids::sha256_hex(secret.as_bytes());
        if let Some(mut t) = self.store.token_by_hash(&sha).await?
            && t.kind == TokenKind::Session
            && !t.revoked
        {
            t.revoked = true;
            self.store.put_token(&t).await?;
            let c = Caller {
                name: t.user.clone(),
                role: Role::Observer,
            };
            self.audit(&c, "session.delete", &t.user, "accepted", json!({}))
                .await?;
        }
        Ok(())
    }

    /// An invitation for `user` to set a password: its secret and end.
    pub(crate) async fn invite(&self, by: &Caller, user: &str) -> Result<(String, i64), ApiError> {
        let now = self.now();
        let expires_at = now + ms(self.sessions().invite_ttl);
        let (mut token, secret) = new_token(user, TokenKind::Invite, now, expires_at, None);
        token.created_by = by.name.clone();
        self.store.put_token(&token).await?;
        Ok((secret, expires_at))
    }

    /// Sets the password of an invitation's user, revokes the invitation
    /// and signs the user in.
    pub async fn accept_invite(&self, secret: &str, password: &str) -> Result<Session, ApiError> {
        check_password(password)?;
        let sha = gatehouse_core::ids::sha256_hex(secret.as_bytes());
        let now = self.now();
        let invalid = || ApiError::NotFound("invitation (unknown, used or expired)".into());
        let Some(mut token) = self.store.token_by_hash(&sha).await? else {
            return Err(invalid());
        };
        if token.kind != TokenKind::Invite || !token.is_usable(now) {
            return Err(invalid());
        }
        let user = match self.store.get_user(&token.user).await? {
            Some(u) if !u.disabled => u,
            _ => return Err(invalid()),
        };
        // Used up first: an invitation sets a password once.
        token.revoked = true;
        self.store.put_token(&token).await?;
        let phc = hash_password(password.to_owned()).await?;
        self.store
            .put_credential(&Credential {
                user: user.name.clone(),
                password_phc: phc,
                set_at: now,
                set_by: user.name.clone(),
            })
            .await?;
        let session = self.start_session(&user.name, user.role).await?;
        self.audit(
            &session.caller,
            "user.accept_invite",
            &user.name,
            "accepted",
            json!({}),
        )
        .await?;
        Ok(session)
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(r: &mut Response, name: &str, value: &str, http_only: bool, max_age: i64) {
    let v = format!(
        "{name}={value}; Path=/; Secure; SameSite=Strict; Max-Age={max_age}{}",
        if http_only { "; HttpOnly" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The answer to a sign-in: who, the CSRF token, when it ends; the
/// session and CSRF cookies.
fn signed_in(s: &Session, now: i64) -> Response {
    let csrf = csrf_of(&s.secret);
    let ends = s.token.expires_at.unwrap_or(now);
    let mut r = axum::Json(json!({
        "name": s.caller.name,
        "role": s.caller.role.as_str(),
        "csrf_token": csrf,
        "expires_at": ends,
        "idle_expires_at": s.token.idle_expires_at,
    }))
    .into_response();
    let age = ((ends - now) / 1000).max(0);
    set_cookie(&mut r, SESSION_COOKIE, &s.secret, true, age);
    set_cookie(&mut r, CSRF_COOKIE, &csrf, false, age);
    r
}

fn decode<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invitation {
    invitation: String,
    password: String,
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<gatehouse_runtime::serve::RemoteAddr>()
        .map(|a| a.0.ip())
}

/// `POST /api/v1/session`.
pub(crate) async fn sign_in_route(State(admin): State<Arc<Admin>>, req: Request) -> Response {
    let from = peer(&req);
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiError::BadRequest(format!("invalid body: {e}")).into_response(),
    };
    let r: SignIn = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match admin.sign_in(&r.name, &r.password, from).await {
        Ok(s) => signed_in(&s, admin.now()),
        Err(ApiError::Unauthorized) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "wrong user name or password"})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/session/invite`.
pub(crate) async fn invite_route(State(admin): State<Arc<Admin>>, body: Bytes) -> Response {
    let r: Invitation = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match admin.accept_invite(&r.invitation, &r.password).await {
        Ok(s) => signed_in(&s, admin.now()),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/session`: with the session cookie and its CSRF token.
pub(crate) async fn sign_out_route(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
) -> Response {
    let Some(secret) = cookie(&headers, SESSION_COOKIE) else {
        return ApiError::Unauthorized.into_response();
    };
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = admin.session_caller(secret, csrf, false).await {
        return e.into_response();
    }
    if let Err(e) = admin.sign_out(secret).await {
        return e.into_response();
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut r, SESSION_COOKIE, "", true, 0);
    set_cookie(&mut r, CSRF_COOKIE, "", false, 0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_throttle_counts_failures_within_its_window() {
        let t = Throttle::default();
        let keys = vec!["user:a".to_owned(), "addr:10.0.0.1".to_owned()];
        let w = Duration::from_secs(900);
        for _ in 0..5 {
            assert!(t.check(&keys, 5, w).is_ok());
            t.fail(&keys);
        }
        let wait = t.check(&keys, 5, w).unwrap_err();
        assert_eq!(wait, w);
        // Another user from the same address may go on, up to four times
        // the limit from that address.
        let other = ["user:b".to_owned(), "addr:10.0.0.1".to_owned()];
        for _ in 0..15 {
            assert!(t.check(&other, 5, w).is_ok());
            t.fail(&[other[1].clone()]);
        }
        assert!(t.check(&other, 5, w).is_err(), "the address is throttled");
        tokio::time::advance(w).await;
        assert!(t.check(&keys, 5, w).is_ok(), "the window passed");
        assert!(t.failures.lock().unwrap().is_empty(), "forgotten");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; gatehouse_session=ghs_x; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("ghs_x"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        assert!(check_password("short").is_err());
        let phc = hash_password("correct horse battery".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), phc.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), phc).await);
    }
}
