//! The embedded store's enroll secrets, users, API tokens and passwords.

use gatehouse_core::ports::IdentityStore;

use super::*;

#[async_trait]
impl IdentityStore for EmbeddedStore {
    async fn put_enroll_secret(&self, s: &EnrollSecret) -> StoreResult<()> {
        let s = s.clone();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            if let Some(old) = i.get_json::<EnrollSecret>(&i.secrets, s.id.as_bytes())?
                && old.secret_sha256 != s.secret_sha256
            {
                return Err(StoreError::Conflict(format!(
                    "enroll secret {} exists with another value",
                    s.id
                )));
            }
            i.commit(vec![
                (&i.secrets, s.id.as_bytes().to_vec(), enc(&s)?),
                (
                    &i.secret_hash,
                    s.secret_sha256.as_bytes().to_vec(),
                    s.id.as_bytes().to_vec(),
                ),
            ])
        })
        .await
    }

    async fn enroll_secret_by_hash(&self, sha256: &str) -> StoreResult<Option<EnrollSecret>> {
        let k = sha256.as_bytes().to_vec();
        self.run(move |i| {
            let Some(id) = i.secret_hash.get(&k).map_err(unavailable)? else {
                return Ok(None);
            };
            i.get_json(&i.secrets, &id)
        })
        .await
    }

    async fn list_enroll_secrets(&self) -> StoreResult<Vec<EnrollSecret>> {
        self.run(|i| i.scan_json(&i.secrets, b"")).await
    }

    async fn put_user(&self, u: &User) -> StoreResult<()> {
        let (k, v) = (format!("u/{}", u.name).into_bytes(), enc(u)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn get_user(&self, name: &str) -> StoreResult<Option<User>> {
        let k = format!("u/{name}").into_bytes();
        self.run(move |i| i.get_json(&i.defs, &k)).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|i| i.scan_json(&i.defs, b"u/")).await
    }

    async fn put_token(&self, t: &ApiToken) -> StoreResult<()> {
        let t = t.clone();
        self.run(move |i| {
            let _g = i.rmw.lock().map_err(|_| unavailable("lock poisoned"))?;
            let k = format!("t/{}", t.id).into_bytes();
            if let Some(old) = i.get_json::<ApiToken>(&i.defs, &k)?
                && old.secret_sha256 != t.secret_sha256
            {
                return Err(StoreError::Conflict(format!(
                    "token {} exists with another secret",
                    t.id
                )));
            }
            i.commit(vec![
                (&i.defs, k, enc(&t)?),
                (
                    &i.secret_hash,
                    format!("tok:{}", t.secret_sha256).into_bytes(),
                    t.id.as_bytes().to_vec(),
                ),
            ])
        })
        .await
    }

    async fn token_by_hash(&self, sha256: &str) -> StoreResult<Option<ApiToken>> {
        let k = format!("tok:{sha256}").into_bytes();
        self.run(move |i| {
            let Some(id) = i.secret_hash.get(&k).map_err(unavailable)? else {
                return Ok(None);
            };
            let mut key = b"t/".to_vec();
            key.extend_from_slice(&id);
            i.get_json(&i.defs, &key)
        })
        .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.run(|i| i.scan_json(&i.defs, b"t/")).await
    }

    async fn put_credential(&self, c: &Credential) -> StoreResult<()> {
        let (k, v) = (format!("pw/{}", c.user).into_bytes(), enc(c)?);
        self.run(move |i| i.commit(vec![(&i.defs, k, v)])).await
    }

    async fn credential(&self, user: &str) -> StoreResult<Option<Credential>> {
        let k = format!("pw/{user}").into_bytes();
        self.run(move |i| i.get_json(&i.defs, &k)).await
    }
}
