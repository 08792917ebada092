//! Who may do what: the caller itself, users and their roles, API tokens
//! (only hashes stored, the secret shown once), and enroll secrets (several
//! at once, each with default labels, an optional expiry, revocable).

use gatehouse_core::config::validate_label;
use gatehouse_core::model::Role::{Admin as AdminRole, Observer};
use gatehouse_core::model::{ApiToken, EnrollSecret, Role, User};
use gatehouse_proto::v1 as pb;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoInput;
use super::definitions::NameRef;
use crate::ApiError;
use crate::admin::{Admin, Caller, expiry, name_ok, random_secret};
use crate::registry::{Audit, Entry, Input, IntoPb, Operation, Spec, Verb, entry};

pub(super) fn entries() -> Vec<Entry> {
    vec![
        entry::<Whoami>(),
        entry::<ListUsers>(),
        entry::<CreateUser>(),
        entry::<UpdateUser>(),
        entry::<SetPassword>(),
        entry::<InviteUser>(),
        entry::<CreateToken>(),
        entry::<ListTokens>(),
        entry::<RevokeToken>(),
        entry::<ListEnrollSecrets>(),
        entry::<CreateEnrollSecret>(),
        entry::<RevokeEnrollSecret>(),
    ]
}

fn role(s: &str) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("role {s:?}: expected observer, operator or admin"))
    })
}

/// The caller.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
}

impl IntoPb for WhoAmI {
    type Pb = pb::Principal;
    fn into_pb(self) -> pb::Principal {
        pb::Principal {
            name: self.name,
            role: self.role.as_str().to_owned(),
        }
    }
}

pub struct Whoami;

impl Operation for Whoami {
    const SPEC: Spec = Spec {
        id: "whoami",
        verb: Verb::Get,
        path: "/api/v1/whoami",
        grpc: "Whoami",
        summary: "The caller's name and role",
        role: Observer,
        action: "whoami",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = WhoAmI;

    async fn run(_: &Admin, c: &Caller, _: NoInput) -> Result<WhoAmI, ApiError> {
        Ok(WhoAmI {
            name: c.name.clone(),
            role: c.role,
        })
    }
}

// ---- users ----

impl IntoPb for User {
    type Pb = pb::User;
    fn into_pb(self) -> pb::User {
        pb::User {
            name: self.name,
            role: self.role.as_str().to_owned(),
            created_at: self.created_at,
            created_by: self.created_by,
            disabled: self.disabled,
            updated_at: self.updated_at,
        }
    }
}

impl IntoPb for Vec<User> {
    type Pb = pb::Users;
    fn into_pb(self) -> pb::Users {
        pb::Users {
            users: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

pub struct ListUsers;

impl Operation for ListUsers {
    const SPEC: Spec = Spec {
        id: "listUsers",
        verb: Verb::Get,
        path: "/api/v1/users",
        grpc: "ListUsers",
        summary: "Users",
        role: AdminRole,
        action: "user.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<User>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<User>, ApiError> {
        let mut u = a.store.list_users().await?;
        u.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(u)
    }
}

/// A new user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub role: Role,
}

impl Input for UserRequest {
    type Pb = pb::CreateUserRequest;
    fn from_pb(r: pb::CreateUserRequest) -> Result<Self, ApiError> {
        Ok(UserRequest {
            name: r.name,
            role: role(&r.role)?,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "role": self.role.as_str() })
    }
}

pub struct CreateUser;

impl Operation for CreateUser {
    const SPEC: Spec = Spec {
        id: "createUser",
        verb: Verb::Post,
        path: "/api/v1/users",
        grpc: "CreateUser",
        summary: "Create a user with a role",
        role: AdminRole,
        action: "user.create",
        audit: Audit::Calls,
        created: true,
    };
    type Req = UserRequest;
    type Resp = User;

    async fn run(a: &Admin, c: &Caller, u: UserRequest) -> Result<User, ApiError> {
        name_ok("user name", &u.name)?;
        if u.name == "admin" {
            return Err(ApiError::BadRequest(
                "\"admin\" is the bootstrap token's name; choose another".into(),
            ));
        }
        if a.store.get_user(&u.name).await?.is_some() {
            return Err(ApiError::Conflict(format!("user {} exists", u.name)));
        }
        let now = a.now();
        let user = User {
            name: u.name,
            role: u.role,
            created_at: now,
            created_by: c.name.clone(),
            disabled: false,
            updated_at: now,
        };
        a.store.put_user(&user).await?;
        Ok(user)
    }
}

/// A change to a user: its role, or whether it is disabled.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub name: String,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

impl Input for UserUpdate {
    type Pb = pb::UpdateUserRequest;
    fn from_pb(r: pb::UpdateUserRequest) -> Result<Self, ApiError> {
        Ok(UserUpdate {
            name: r.name,
            role: r.role.as_deref().map(role).transpose()?,
            disabled: r.disabled,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "role": self.role.map(Role::as_str), "disabled": self.disabled })
    }
}

pub struct UpdateUser;

impl Operation for UpdateUser {
    const SPEC: Spec = Spec {
        id: "updateUser",
        verb: Verb::Patch,
        path: "/api/v1/users/{name}",
        grpc: "UpdateUser",
        summary: "Change a user's role, or disable it",
        role: AdminRole,
        action: "user.update",
        audit: Audit::Calls,
        created: false,
    };
    type Req = UserUpdate;
    type Resp = User;

    async fn run(a: &Admin, _: &Caller, u: UserUpdate) -> Result<User, ApiError> {
        let mut user = a
            .store
            .get_user(&u.name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("user {}", u.name)))?;
        if let Some(r) = u.role {
            user.role = r;
        }
        if let Some(d) = u.disabled {
            user.disabled = d;
        }
        user.updated_at = a.now();
        a.store.put_user(&user).await?;
        Ok(user)
    }
}

// ---- passwords and invitations (people's sign-in) ----

/// A person's new password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    pub name: String,
    /// 12 to 1024 characters.
    pub password: String,
}

impl Input for PasswordRequest {
    type Pb = pb::SetPasswordRequest;
    fn from_pb(r: pb::SetPasswordRequest) -> Result<Self, ApiError> {
        Ok(PasswordRequest {
            name: r.name,
            password: r.password,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    // The password itself is never recorded.
}

pub struct SetPassword;

impl Operation for SetPassword {
    const SPEC: Spec = Spec {
        id: "setPassword",
        verb: Verb::Put,
        path: "/api/v1/users/{name}/password",
        grpc: "SetPassword",
        summary: "Set a person's console password (argon2id; sessions already open stay)",
        role: AdminRole,
        action: "user.set_password",
        audit: Audit::Calls,
        created: false,
    };
    type Req = PasswordRequest;
    type Resp = User;

    async fn run(a: &Admin, c: &Caller, r: PasswordRequest) -> Result<User, ApiError> {
        crate::session::check_password(&r.password)?;
        let user = a
            .store
            .get_user(&r.name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("user {}", r.name)))?;
        let phc = crate::session::hash_password(r.password).await?;
        a.store
            .put_credential(&gatehouse_core::model::Credential {
                user: user.name.clone(),
                password_phc: phc,
                set_at: a.now(),
                set_by: c.name.clone(),
            })
            .await?;
        Ok(user)
    }
}

/// A one-time invitation to set a password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Invitation {
    pub name: String,
    /// The secret, in this answer only.
    pub invitation: String,
    /// Where the console takes it (on the API's address).
    pub path: String,
    pub expires_at: i64,
}

impl IntoPb for Invitation {
    type Pb = pb::Invitation;
    fn into_pb(self) -> pb::Invitation {
        pb::Invitation {
            name: self.name,
            invitation: self.invitation,
            path: self.path,
            expires_at: self.expires_at,
        }
    }
}

pub struct InviteUser;

impl Operation for InviteUser {
    const SPEC: Spec = Spec {
        id: "inviteUser",
        verb: Verb::Post,
        path: "/api/v1/users/{name}/invite",
        grpc: "InviteUser",
        summary: "A one-time link for a person to set their console password (valid 72 h)",
        role: AdminRole,
        action: "user.invite",
        audit: Audit::Calls,
        created: true,
    };
    type Req = NameRef;
    type Resp = Invitation;

    async fn run(a: &Admin, c: &Caller, r: NameRef) -> Result<Invitation, ApiError> {
        let user = a
            .store
            .get_user(&r.name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("user {}", r.name)))?;
        if user.disabled {
            return Err(ApiError::Conflict(format!(
                "user {} is disabled",
                user.name
            )));
        }
        let (secret, expires_at) = a.invite(c, &user.name).await?;
        Ok(Invitation {
            name: user.name,
            path: format!("/#/invite/{secret}"),
            invitation: secret,
            expires_at,
        })
    }
}

// ---- API tokens ----

impl IntoPb for ApiToken {
    type Pb = pb::Token;
    fn into_pb(self) -> pb::Token {
        pb::Token {
            id: self.id,
            user: self.user,
            description: self.description,
            created_at: self.created_at,
            created_by: self.created_by,
            expires_at: self.expires_at,
            revoked: self.revoked,
        }
    }
}

impl IntoPb for Vec<ApiToken> {
    type Pb = pb::Tokens;
    fn into_pb(self) -> pb::Tokens {
        pb::Tokens {
            tokens: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

/// A new API token for a user.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The user the token acts as.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seconds the token is valid; absent: until revoked.
    pub expires_in: Option<u64>,
}

impl Input for TokenRequest {
    type Pb = pb::CreateTokenRequest;
    fn from_pb(r: pb::CreateTokenRequest) -> Result<Self, ApiError> {
        Ok(TokenRequest {
            name: r.user,
            description: r.description,
            expires_in: r.expires_in,
        })
    }
    fn target(&self) -> String {
        self.name.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({ "description": self.description, "expires_in": self.expires_in })
    }
}

/// A new token: the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: ApiToken,
    pub secret: String,
}

impl IntoPb for NewToken {
    type Pb = pb::NewToken;
    fn into_pb(self) -> pb::NewToken {
        pb::NewToken {
            token: Some(self.token.into_pb()),
            secret: self.secret,
        }
    }
}

pub struct CreateToken;

impl Operation for CreateToken {
    const SPEC: Spec = Spec {
        id: "createToken",
        verb: Verb::Post,
        path: "/api/v1/users/{name}/tokens",
        grpc: "CreateToken",
        summary: "A new API token for a user (its secret is in this answer only)",
        role: AdminRole,
        action: "token.create",
        audit: Audit::Calls,
        created: true,
    };
    type Req = TokenRequest;
    type Resp = NewToken;

    async fn run(a: &Admin, c: &Caller, t: TokenRequest) -> Result<NewToken, ApiError> {
        let u = a
            .store
            .get_user(&t.name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("user {}", t.name)))?;
        if t.description.len() > 200 {
            return Err(ApiError::BadRequest(
                "description is longer than 200 characters".into(),
            ));
        }
        let secret = format!("ght_{}", random_secret());
        let now = a.now();
        let expires_at = expiry(now, t.expires_in)?;
        let token = ApiToken {
            id: uuid::Uuid::new_v4().to_string(),
            user: u.name,
            secret_sha256: gatehouse_core::ids::sha256_hex(secret.as_bytes()),
            description: t.description,
            created_at: now,
            created_by: c.name.clone(),
            expires_at,
            revoked: false,
            kind: gatehouse_core::model::TokenKind::Api,
            idle_expires_at: None,
        };
        a.store.put_token(&token).await?;
        Ok(NewToken { token, secret })
    }
}

pub struct ListTokens;

impl Operation for ListTokens {
    const SPEC: Spec = Spec {
        id: "listTokens",
        verb: Verb::Get,
        path: "/api/v1/tokens",
        grpc: "ListTokens",
        summary: "API tokens (hashes only)",
        role: AdminRole,
        action: "token.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<ApiToken>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<ApiToken>, ApiError> {
        let mut t = a.store.list_tokens().await?;
        t.sort_by(|a, b| (a.user.as_str(), a.created_at).cmp(&(b.user.as_str(), b.created_at)));
        Ok(t)
    }
}

/// A token or an enroll secret, by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdRef {
    pub id: String,
}

impl Input for IdRef {
    type Pb = pb::TokenRef;
    fn from_pb(r: pb::TokenRef) -> Result<Self, ApiError> {
        Ok(IdRef { id: r.id })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

pub struct RevokeToken;

impl Operation for RevokeToken {
    const SPEC: Spec = Spec {
        id: "revokeToken",
        verb: Verb::Post,
        path: "/api/v1/tokens/{id}/revoke",
        grpc: "RevokeToken",
        summary: "Revoke a token at once",
        role: AdminRole,
        action: "token.revoke",
        audit: Audit::Calls,
        created: false,
    };
    type Req = IdRef;
    type Resp = ApiToken;

    async fn run(a: &Admin, _: &Caller, r: IdRef) -> Result<ApiToken, ApiError> {
        let mut t = a
            .store
            .list_tokens()
            .await?
            .into_iter()
            .find(|t| t.id == r.id)
            .ok_or_else(|| ApiError::NotFound(format!("token {}", r.id)))?;
        t.revoked = true;
        a.store.put_token(&t).await?;
        Ok(t)
    }
}

// ---- enroll secrets ----

impl IntoPb for EnrollSecret {
    type Pb = pb::EnrollSecret;
    fn into_pb(self) -> pb::EnrollSecret {
        pb::EnrollSecret {
            id: self.id,
            labels: self.labels,
            created_at: self.created_at,
            created_by: self.created_by,
            expires_at: self.expires_at,
            revoked: self.revoked,
        }
    }
}

impl IntoPb for Vec<EnrollSecret> {
    type Pb = pb::EnrollSecrets;
    fn into_pb(self) -> pb::EnrollSecrets {
        pb::EnrollSecrets {
            secrets: self.into_iter().map(IntoPb::into_pb).collect(),
        }
    }
}

pub struct ListEnrollSecrets;

impl Operation for ListEnrollSecrets {
    const SPEC: Spec = Spec {
        id: "listEnrollSecrets",
        verb: Verb::Get,
        path: "/api/v1/enroll_secrets",
        grpc: "ListEnrollSecrets",
        summary: "Enroll secrets (hashes only)",
        role: AdminRole,
        action: "enroll_secret.list",
        audit: Audit::Refusals,
        created: false,
    };
    type Req = NoInput;
    type Resp = Vec<EnrollSecret>;

    async fn run(a: &Admin, _: &Caller, _: NoInput) -> Result<Vec<EnrollSecret>, ApiError> {
        let mut s = a.store.list_enroll_secrets().await?;
        s.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(s)
    }
}

/// A new enroll secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollSecretRequest {
    pub id: String,
    /// Labels every host enrolling with it gets.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Seconds it is accepted; absent: until revoked.
    pub expires_in: Option<u64>,
    /// The value agents will present; absent: a random one is made.
    pub secret: Option<String>,
}

impl Input for EnrollSecretRequest {
    type Pb = pb::CreateEnrollSecretRequest;
    fn from_pb(r: pb::CreateEnrollSecretRequest) -> Result<Self, ApiError> {
        Ok(EnrollSecretRequest {
            id: r.id,
            labels: r.labels,
            expires_in: r.expires_in,
            secret: r.secret,
        })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "labels": self.labels, "expires_in": self.expires_in,
            "chosen_value": self.secret.is_some(),
        })
    }
}

/// A new enroll secret: its value is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NewEnrollSecret {
    #[serde(flatten)]
    pub enroll_secret: EnrollSecret,
    pub secret: String,
}

impl IntoPb for NewEnrollSecret {
    type Pb = pb::NewEnrollSecret;
    fn into_pb(self) -> pb::NewEnrollSecret {
        pb::NewEnrollSecret {
            enroll_secret: Some(self.enroll_secret.into_pb()),
            secret: self.secret,
        }
    }
}

pub struct CreateEnrollSecret;

impl Operation for CreateEnrollSecret {
    const SPEC: Spec = Spec {
        id: "createEnrollSecret",
        verb: Verb::Post,
        path: "/api/v1/enroll_secrets",
        grpc: "CreateEnrollSecret",
        summary: "A new enroll secret (its value is in this answer only)",
        role: AdminRole,
        action: "enroll_secret.create",
        audit: Audit::Calls,
        created: true,
    };
    type Req = EnrollSecretRequest;
    type Resp = NewEnrollSecret;

    async fn run(
        a: &Admin,
        c: &Caller,
        r: EnrollSecretRequest,
    ) -> Result<NewEnrollSecret, ApiError> {
        name_ok("enroll secret id", &r.id)?;
        for l in &r.labels {
            validate_label(l)?;
        }
        let value = match r.secret {
            Some(v) if v.len() < 16 || v.len() > 256 || v.trim() != v => {
                return Err(ApiError::BadRequest(
                    "secret: 16 to 256 characters, no surrounding spaces".into(),
                ));
            }
            Some(v) => v,
            None => random_secret(),
        };
        let sha = gatehouse_core::ids::sha256_hex(value.as_bytes());
        let existing = a.store.list_enroll_secrets().await?;
        if existing.iter().any(|s| s.id == r.id) {
            return Err(ApiError::Conflict(format!("enroll secret {} exists", r.id)));
        }
        if existing.iter().any(|s| s.secret_sha256 == sha) {
            return Err(ApiError::Conflict(
                "another enroll secret has this value".into(),
            ));
        }
        let now = a.now();
        let expires_at = expiry(now, r.expires_in)?;
        let mut labels = r.labels;
        labels.sort();
        labels.dedup();
        let secret = EnrollSecret {
            id: r.id,
            secret_sha256: sha,
            labels,
            created_at: now,
            expires_at,
            revoked: false,
            created_by: c.name.clone(),
        };
        a.store.put_enroll_secret(&secret).await?;
        Ok(NewEnrollSecret {
            enroll_secret: secret,
            secret: value,
        })
    }
}

/// An enroll secret by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub id: String,
}

impl Input for SecretRef {
    type Pb = pb::NameRef;
    fn from_pb(r: pb::NameRef) -> Result<Self, ApiError> {
        Ok(SecretRef { id: r.name })
    }
    fn target(&self) -> String {
        self.id.clone()
    }
}

pub struct RevokeEnrollSecret;

impl Operation for RevokeEnrollSecret {
    const SPEC: Spec = Spec {
        id: "revokeEnrollSecret",
        verb: Verb::Post,
        path: "/api/v1/enroll_secrets/{id}/revoke",
        grpc: "RevokeEnrollSecret",
        summary: "Refuse new enrollments with a secret",
        role: AdminRole,
        action: "enroll_secret.revoke",
        audit: Audit::Calls,
        created: false,
    };
    type Req = SecretRef;
    type Resp = EnrollSecret;

    async fn run(a: &Admin, _: &Caller, r: SecretRef) -> Result<EnrollSecret, ApiError> {
        let mut s = a
            .store
            .list_enroll_secrets()
            .await?
            .into_iter()
            .find(|s| s.id == r.id)
            .ok_or_else(|| ApiError::NotFound(format!("enroll secret {}", r.id)))?;
        s.revoked = true;
        a.store.put_enroll_secret(&s).await?;
        Ok(s)
    }
}
