//! People sign in (for the web console) against the real server: a
//! password set by an admin or through a one-time invitation (`ctl users
//! invite`), the session cookie's flags, the CSRF token every change made
//! with a session needs, roles as with tokens, idle and absolute expiry
//! (the server's clock moved, not waited for), sign-out, and sign-in
//! throttling. Bearer tokens keep working beside sessions.

use std::time::Duration;

use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

/// A call with a session cookie (and a CSRF token when given).
async fn with_session(
    s: &TestServer,
    method: Method,
    path: &str,
    session: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = s
        .http
        .request(method, format!("{}{path}", s.api_url))
        .header("cookie", format!("gatehouse_session={session}"));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let code = r.status().as_u16();
    Ok((code, r.json().await.unwrap_or(Value::Null)))
}

/// Signs in: the session secret, the CSRF token, the Set-Cookie headers.
async fn sign_in(
    s: &TestServer,
    name: &str,
    password: &str,
) -> anyhow::Result<(u16, Option<(String, String)>, Vec<String>)> {
    let r = s
        .http
        .post(format!("{}/api/v1/session", s.api_url))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await?;
    let code = r.status().as_u16();
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let session = cookies
        .iter()
        .find_map(|c| c.strip_prefix("gatehouse_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let got = session.map(|s| {
        (
            s,
            body["csrf_token"].as_str().unwrap_or_default().to_owned(),
        )
    });
    Ok((code, got, cookies))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_passwords_and_sessions_hold_to_their_limits() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    s.create_user("alice", "operator").await?;
    s.create_user("bob", "observer").await?;
    // No password yet: the same answer as a wrong one.
    let (code, got, _) = sign_in(&s, "alice", "whatever-it-is").await?;
    assert_eq!((code, got.is_none()), (401, true));

    // An admin sets it; too short is refused, naming the field.
    let pw = "correct horse battery staple";
    let (code, v) = s
        .call(
            &admin,
            Method::PUT,
            "/api/v1/users/alice/password",
            Some(json!({"password": "short"})),
        )
        .await?;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("password"),
        "{v}"
    );
    let (code, v) = s
        .call(
            &admin,
            Method::PUT,
            "/api/v1/users/alice/password",
            Some(json!({"password": pw})),
        )
        .await?;
    assert_eq!(code, 200, "{v}");
    let (_, audit) = s
        .call(&admin, Method::GET, "/api/v1/audit?limit=50", None)
        .await?;
    assert!(
        !audit.to_string().contains(pw),
        "the password is never recorded"
    );

    // Wrong, then right: the session cookie is HttpOnly, Secure, SameSite=Strict.
    let (code, _, _) = sign_in(&s, "alice", "wrong horse battery staple").await?;
    assert_eq!(code, 401);
    let (code, got, cookies) = sign_in(&s, "alice", pw).await?;
    assert_eq!(code, 200);
    let (session, csrf) = got.expect("a session cookie");
    let flags = cookies
        .iter()
        .find(|c| c.starts_with("gatehouse_session="))
        .cloned()
        .unwrap_or_default();
    for f in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(f), "{f} in {flags}");
    }
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("gatehouse_csrf="))
        .cloned()
        .unwrap_or_default();
    assert!(
        csrf_cookie.contains(&csrf) && !csrf_cookie.contains("HttpOnly"),
        "{csrf_cookie}"
    );

    // Reads need the cookie only; changes need its CSRF token too.
    let (code, v) = with_session(&s, Method::GET, "/api/v1/whoami", &session, None, None).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["role"].as_str()),
        (Some("alice"), Some("operator"))
    );
    let q = json!({"sql": "SELECT 1;"});
    let (code, v) = with_session(
        &s,
        Method::PUT,
        "/api/v1/queries/one",
        &session,
        None,
        Some(q.clone()),
    )
    .await?;
    assert_eq!(code, 403, "no CSRF token: {v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("x-csrf-token"),
        "{v}"
    );
    let (code, _) = with_session(
        &s,
        Method::PUT,
        "/api/v1/queries/one",
        &session,
        Some("forged"),
        Some(q.clone()),
    )
    .await?;
    assert_eq!(code, 403, "a forged CSRF token");
    let (code, v) = with_session(
        &s,
        Method::PUT,
        "/api/v1/queries/one",
        &session,
        Some(&csrf),
        Some(q.clone()),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    // A session is a cookie, not a bearer token.
    let (code, _) = s
        .call(&session, Method::GET, "/api/v1/whoami", None)
        .await?;
    assert_eq!(code, 401);

    // Bob is invited (ctl prints the link); he sets his password once.
    let o = s.ctl(&admin, &["users", "invite", "bob"])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = String::from_utf8_lossy(&o.stdout).into_owned();
    let invitation = link
        .split("/#/invite/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an invitation link")
        .to_owned();
    assert!(link.starts_with(&s.api_url), "{link}");
    let accept = |password: &str| {
        s.http
            .post(format!("{}/api/v1/session/invite", s.api_url))
            .json(&json!({"invitation": invitation, "password": password}))
            .send()
    };
    let r = accept("too short").await?;
    assert_eq!(r.status().as_u16(), 400);
    let r = accept("bob's long passphrase").await?;
    assert_eq!(r.status().as_u16(), 200);
    let bob: Value = r.json().await?;
    assert_eq!(bob["role"], "observer");
    assert_eq!(
        accept("bob's other passphrase").await?.status().as_u16(),
        404,
        "used up"
    );
    let (code, Some((bob_session, bob_csrf)), _) =
        sign_in(&s, "bob", "bob's long passphrase").await?
    else {
        anyhow::bail!("bob signs in with his password");
    };
    assert_eq!(code, 200);
    // His role holds as with a token.
    let (code, v) = with_session(
        &s,
        Method::PUT,
        "/api/v1/queries/two",
        &bob_session,
        Some(&bob_csrf),
        Some(q.clone()),
    )
    .await?;
    assert_eq!(code, 403, "an observer: {v}");
    // An invitation is no bearer token.
    let (code, _) = s
        .call(&invitation, Method::GET, "/api/v1/whoami", None)
        .await?;
    assert_eq!(code, 401);

    // Idle: 29 minutes apart it goes on; 31 minutes unused, it has ended.
    s.clock.advance(Duration::from_secs(29 * 60));
    let (code, _) = with_session(&s, Method::GET, "/api/v1/hosts", &session, None, None).await?;
    assert_eq!(code, 200, "used within the idle limit");
    s.clock.advance(Duration::from_secs(29 * 60));
    let (code, _) = with_session(&s, Method::GET, "/api/v1/hosts", &session, None, None).await?;
    assert_eq!(code, 200, "the idle limit moved with use");
    s.clock.advance(Duration::from_secs(31 * 60));
    let (code, _) = with_session(&s, Method::GET, "/api/v1/hosts", &session, None, None).await?;
    assert_eq!(code, 401, "idle too long");
    // Absolute: used every 20 minutes, it still ends after 12 hours.
    let (_, Some((session, csrf)), _) = sign_in(&s, "alice", pw).await? else {
        anyhow::bail!("signed in again");
    };
    for _ in 0..35 {
        s.clock.advance(Duration::from_secs(20 * 60));
        let (code, _) =
            with_session(&s, Method::GET, "/api/v1/hosts", &session, None, None).await?;
        assert_eq!(code, 200);
    }
    s.clock.advance(Duration::from_secs(20 * 60));
    let (code, _) = with_session(&s, Method::GET, "/api/v1/hosts", &session, None, None).await?;
    assert_eq!(code, 401, "past 12 hours");
    let _ = csrf;

    // Signing out ends the session and clears the cookies.
    let (_, Some((session, csrf)), _) = sign_in(&s, "alice", pw).await? else {
        anyhow::bail!("signed in again");
    };
    let r = s
        .http
        .delete(format!("{}/api/v1/session", s.api_url))
        .header("cookie", format!("gatehouse_session={session}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        r.headers().get_all("set-cookie").iter().any(|c| c
            .to_str()
            .unwrap_or_default()
            .starts_with("gatehouse_session=;")),
        "the cookie is cleared"
    );
    let (code, _) = with_session(&s, Method::GET, "/api/v1/whoami", &session, None, None).await?;
    assert_eq!(code, 401, "signed out");

    // Five wrong passwords: the sixth attempt is refused, even a right one.
    for _ in 0..5 {
        let (code, _, _) = sign_in(&s, "alice", "not the password at all").await?;
        assert_eq!(code, 401);
    }
    let (code, _, _) = sign_in(&s, "alice", pw).await?;
    assert_eq!(code, 429, "throttled");
    // Scripts' tokens are untouched by all this.
    let (code, _) = s.call(&admin, Method::GET, "/api/v1/whoami", None).await?;
    assert_eq!(code, 200);
    // Every sign-in is in the audit log, with its outcome.
    let (_, audit) = s
        .call(&admin, Method::GET, "/api/v1/audit?limit=200", None)
        .await?;
    let outcomes: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "session.create")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains(&"accepted") && outcomes.contains(&"denied"),
        "{outcomes:?}"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_set_from_the_command_line() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    s.create_user("carol", "admin").await?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("pw");
    std::fs::write(&f, "carol's passphrase here\n")?;
    let o = s.ctl(
        &admin,
        &[
            "users",
            "set-password",
            "carol",
            "--password-file",
            &f.display().to_string(),
        ],
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, got, _) = sign_in(&s, "carol", "carol's passphrase here").await?;
    assert_eq!((code, got.is_some()), (200, true));
    std::fs::write(&f, "short\n")?;
    let o = s.ctl(
        &admin,
        &[
            "users",
            "set-password",
            "carol",
            "--password-file",
            &f.display().to_string(),
        ],
    )?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("password"));
    s.stop().await?;
    Ok(())
}
