//! The ScyllaDB adapter's enroll secrets, users and API tokens.

use gatehouse_core::ports::IdentityStore;

use super::*;

#[async_trait]
impl IdentityStore for ScyllaStore {
    async fn put_enroll_secret(&self, s: &EnrollSecret) -> StoreResult<()> {
        let i = &self.inner;
        let existing: Vec<EnrollSecret> = self.list_enroll_secrets().await?;
        if existing
            .iter()
            .any(|e| e.id == s.id && e.secret_sha256 != s.secret_sha256)
        {
            return Err(StoreError::Conflict(format!(
                "enroll secret {} exists with another value",
                s.id
            )));
        }
        let doc = enc(s)?;
        // The lookup row first: a listed secret always works.
        i.exec(Q::PutSecretByHash, (s.secret_sha256.as_str(), &doc))
            .await?;
        i.exec(Q::PutSecret, ("all", s.id.as_str(), &doc)).await?;
        Ok(())
    }

    async fn enroll_secret_by_hash(&self, sha256: &str) -> StoreResult<Option<EnrollSecret>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::SecretByHash, (sha256,))
            .await?
        {
            Some((doc,)) => dec("enroll_secret_by_hash", &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_enroll_secrets(&self) -> StoreResult<Vec<EnrollSecret>> {
        self.inner.docs(Q::ListSecrets, ("all",), usize::MAX).await
    }

    async fn put_user(&self, u: &User) -> StoreResult<()> {
        let doc = enc(u)?;
        // The point-read row first: a listed user can always be read.
        self.inner.exec(Q::PutUser, (u.name.as_str(), &doc)).await?;
        self.inner
            .exec(Q::PutUserListed, ("all", u.name.as_str(), &doc))
            .await
            .map(|_| ())
    }

    async fn get_user(&self, name: &str) -> StoreResult<Option<User>> {
        match self.inner.one::<(Vec<u8>,)>(Q::GetUser, (name,)).await? {
            Some((doc,)) => dec("get_user", &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.docs(Q::ListUsers, ("all",), usize::MAX).await
    }

    async fn put_token(&self, t: &ApiToken) -> StoreResult<()> {
        let existing = self.list_tokens().await?;
        if existing
            .iter()
            .any(|e| e.id == t.id && e.secret_sha256 != t.secret_sha256)
        {
            return Err(StoreError::Conflict(format!(
                "token {} exists with another secret",
                t.id
            )));
        }
        let doc = enc(t)?;
        // The lookup row first: a revocation reaches authentication before
        // the listing.
        self.inner
            .exec(Q::PutTokenByHash, (t.secret_sha256.as_str(), &doc))
            .await?;
        self.inner
            .exec(Q::PutToken, ("all", t.id.as_str(), &doc))
            .await
            .map(|_| ())
    }

    async fn token_by_hash(&self, sha256: &str) -> StoreResult<Option<ApiToken>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::TokenByHash, (sha256,))
            .await?
        {
            Some((doc,)) => dec("token_by_hash", &doc).map(Some),
            None => Ok(None),
        }
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.inner.docs(Q::ListTokens, ("all",), usize::MAX).await
    }

    async fn put_credential(&self, c: &Credential) -> StoreResult<()> {
        let doc = enc(c)?;
        self.inner
            .exec(Q::PutCredential, (c.user.as_str(), &doc))
            .await
            .map(|_| ())
    }

    async fn credential(&self, user: &str) -> StoreResult<Option<Credential>> {
        match self
            .inner
            .one::<(Vec<u8>,)>(Q::GetCredential, (user,))
            .await?
        {
            Some((doc,)) => dec("credential", &doc).map(Some),
            None => Ok(None),
        }
    }
}
