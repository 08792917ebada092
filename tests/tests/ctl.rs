//! `gatehouse ctl` (the real binary) against the all-in-one server:
//! tables and --json, a user's token and its role's limits (exit code 2
//! with the API's message), a live query followed to the end with its
//! progress line, rows and non-responders, and exit code 1 when the API
//! cannot be reached.

use std::process::{Command, Output, Stdio};

use gatehouse_tests::{TestServer, gatehouse_bin};
use serde_json::{Value, json};

fn ctl(s: &TestServer, token: &str, args: &[&str]) -> anyhow::Result<Output> {
    s.ctl(token, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_manages_the_fleet_from_the_command_line() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let mut agent = s.agent(1);
    anyhow::ensure!(agent.enroll().await?.agent_success());

    let o = ctl(&s, &admin, &["whoami"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "NAME   ROLE\nadmin  admin");

    let o = ctl(
        &s,
        &admin,
        &[
            "queries",
            "put",
            "users",
            "SELECT * FROM users",
            "--description",
            "local users",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ctl(&s, &admin, &["queries", "list", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v[0]["name"], "users");
    let o = ctl(&s, &admin, &["hosts", "list"])?;
    assert!(stdout(&o).contains(&agent.host_id()), "{}", stdout(&o));
    let o = ctl(&s, &admin, &["hosts", "list", "--sort", "hostname"])?;
    assert!(stdout(&o).contains(&agent.host_id()), "{}", stderr(&o));
    let o = ctl(&s, &admin, &["hosts", "list", "--sort", "size"])?;
    assert!(!o.status.success());
    let o = ctl(
        &s,
        &admin,
        &["audit", "--actor", "admin", "--action", "query", "--json"],
    )?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert!(
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["action"] == "query.put")),
        "{v}"
    );

    // A user with a token, and what its role may not do.
    assert!(
        ctl(&s, &admin, &["users", "create", "olga", "operator"])?
            .status
            .success()
    );
    let o = ctl(
        &s,
        &admin,
        &["tokens", "create", "olga", "--description", "ci"],
    )?;
    let out = stdout(&o);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .unwrap_or_default()
        .to_owned();
    assert!(secret.starts_with("ght_"), "{out}");
    let o = ctl(&s, &secret, &["users", "list"])?;
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("403") && stderr(&o).contains("admin"),
        "{}",
        stderr(&o)
    );

    // A live query, followed while the host answers.
    let run = {
        let bin = gatehouse_bin()?;
        let (url, ca, token) = (s.api_url.clone(), s.boot.ca_path.clone(), secret.clone());
        std::thread::spawn(move || {
            Command::new(bin)
                .args([
                    "ctl",
                    "query",
                    "run",
                    "--targets",
                    "all",
                    "--wait",
                    "30",
                    "SELECT 1 AS one",
                ])
                .env_clear()
                .env("GATEHOUSE_URL", url)
                .env("GATEHOUSE_TOKEN", token)
                .env("GATEHOUSE_CA", ca)
                .output()
        })
    };
    let id = agent.next_live_query().await?;
    let w = agent
        .write(json!({"queries": {id.clone(): [{"one": "1"}]}, "statuses": {id.clone(): 0}}))
        .await?;
    anyhow::ensure!(w.agent_success());
    let o = run
        .join()
        .map_err(|_| anyhow::anyhow!("ctl thread panicked"))??;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("answered 1/1, failed 0, pending 0"),
        "{}",
        stderr(&o)
    );
    // The row was printed as it arrived, then the summary.
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{}  one=1\n", agent.host_id()))
            && out.ends_with("every targeted host answered (1 answers)\n"),
        "{out}"
    );

    // Enroll secrets, and the audit log of all of it.
    let o = ctl(
        &s,
        &admin,
        &[
            "enroll-secrets",
            "create",
            "laptops",
            "--labels",
            "laptops,emea",
        ],
    )?;
    assert!(
        stdout(&o).contains("value (shown once): "),
        "{}",
        stdout(&o)
    );
    let o = ctl(&s, &admin, &["audit", "--limit", "100", "--json"])?;
    let audit: Value = serde_json::from_slice(&o.stdout)?;
    let seen = |actor: &str, action: &str, outcome: &str| {
        audit
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["actor"] == actor && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(seen("olga", "campaign.create", "accepted"));
    assert!(seen("olga", "user.list", "denied"));
    assert!(seen("admin", "enroll_secret.create", "accepted"));

    // The API cannot be reached: exit 1 and the reason.
    let o = Command::new(gatehouse_bin()?)
        .args(["ctl", "--url", "https://127.0.0.1:9", "whoami"])
        .env_clear()
        .env("GATEHOUSE_TOKEN", &admin)
        .env("GATEHOUSE_CA", &s.boot.ca_path)
        .output()?;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    s.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_apply_is_idempotent_and_exports_round_trip() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(
        d.join("queries.yaml"),
        "kind: query\nname: users\nspec:\n  sql: SELECT * FROM users\n  description: local users\n---\nkind: query\nname: procs\nspec:\n  sql: SELECT pid, name FROM processes\n",
    )?;
    let schedule = |interval: u32| {
        format!(
            "kind: schedule\nname: users_hourly\nspec:\n  query: users\n  interval: {interval}\n  labels: [all]\n"
        )
    };
    std::fs::write(d.join("schedules.yml"), schedule(3600))?;
    std::fs::write(
        d.join("labels.yaml"),
        "kind: label_config\nname: servers\nspec:\n  options:\n    distributed_interval: 30\n  file_paths:\n    etc: [\"/etc/%%\"]\n---\nkind: label_query\nname: has-docker\nspec:\n  sql: SELECT 1 FROM processes WHERE name = 'dockerd'\n  interval: 600\n",
    )?;
    std::fs::write(
        d.join("rules.yaml"),
        "kind: rule\nname: tmp-binaries\nspec:\n  description: processes run from /tmp\n  when:\n    event: results\n    query: processes\n    condition:\n      any:\n        - {column: path, op: begins_with, value: /tmp/}\n        - {column: path, op: regex, value: '^/dev/shm/'}\n  actions:\n    - type: log\n",
    )?;
    std::fs::write(
        d.join("users.yaml"),
        "kind: user\nname: carol\nspec:\n  role: observer\n",
    )?;
    let dirs = d.to_string_lossy().into_owned();

    // A dry run shows everything to create and changes nothing.
    let o = ctl(&s, &admin, &["apply", "-f", &dirs, "--dry-run"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("+ query users") && out.contains("+ schedule users_hourly"),
        "{out}"
    );
    assert!(
        out.ends_with("7 to create, 0 to change, 0 unchanged (dry run: nothing changed)\n"),
        "{out}"
    );
    assert_eq!(s.get("/api/v1/queries").await?, json!([]));

    // Applied, then applied again: nothing to do, nothing recorded.
    let o = ctl(&s, &admin, &["apply", "-f", &dirs])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let audit_before = s
        .get("/api/v1/audit?limit=1000")
        .await?
        .as_array()
        .map_or(0, Vec::len);
    let o = ctl(&s, &admin, &["apply", "-f", &dirs])?;
    assert!(
        stdout(&o).ends_with("0 to create, 0 to change, 7 unchanged\n"),
        "{}",
        stdout(&o)
    );
    let audit_after = s
        .get("/api/v1/audit?limit=1000")
        .await?
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(audit_before, audit_after, "a no-op apply wrote");

    // A changed field is shown and applied alone.
    std::fs::write(d.join("schedules.yml"), schedule(60))?;
    let o = ctl(&s, &admin, &["apply", "-f", &dirs])?;
    let out = stdout(&o);
    assert!(
        out.contains("~ schedule users_hourly\n    interval: 3600 -> 60"),
        "{out}"
    );
    assert!(
        out.ends_with("0 to create, 1 to change, 6 unchanged\n"),
        "{out}"
    );
    assert_eq!(s.get("/api/v1/schedules").await?[0]["interval"], 60);

    // The user exists with its role; users export on their own.
    let users = s.get("/api/v1/users").await?;
    assert!(
        users
            .as_array()
            .into_iter()
            .flatten()
            .any(|u| u["name"] == "carol" && u["role"] == "observer"),
        "{users}"
    );
    let o = ctl(&s, &admin, &["get", "users", "-o", "yaml"])?;
    assert!(
        stdout(&o).contains("kind: user\nname: carol\nspec:\n  disabled: false\n  role: observer"),
        "{}",
        stdout(&o)
    );

    // The rule is live: listed by ctl, no alerts yet.
    let o = ctl(&s, &admin, &["rules", "list"])?;
    assert!(
        stdout(&o).contains("tmp-binaries") && stdout(&o).contains("results"),
        "{}",
        stdout(&o)
    );
    let o = ctl(&s, &admin, &["alerts", "--json"])?;
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout)?, json!([]));

    // Exported and re-applied: a no-op.
    let o = ctl(&s, &admin, &["get", "all", "-o", "yaml"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let export = tempfile::tempdir()?;
    std::fs::write(export.path().join("all.yaml"), &o.stdout)?;
    let o = ctl(
        &s,
        &admin,
        &["apply", "-f", &export.path().to_string_lossy()],
    )?;
    assert!(
        stdout(&o).ends_with("0 to create, 0 to change, 6 unchanged\n"),
        "{}",
        stdout(&o)
    );

    // A bad spec is refused with the file that holds it, before any change.
    std::fs::write(d.join("zz-bad.yaml"), "kind: pack\nname: p\nspec: {}\n")?;
    let o = ctl(&s, &admin, &["apply", "-f", &dirs])?;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("zz-bad.yaml") && stderr(&o).contains("unknown kind"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(d.join("zz-bad.yaml"))?;

    // A typo in a label config's field is refused, naming the file, the
    // definition and the field, and the options stay as they were.
    std::fs::write(
        d.join("zz-typo.yaml"),
        "kind: label_config\nname: servers\nspec:\n  optons:\n    distributed_interval: 60\n",
    )?;
    for args in [
        &["apply", "-f", &dirs, "--dry-run"][..],
        &["apply", "-f", &dirs],
    ] {
        let o = ctl(&s, &admin, args)?;
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        let e = stderr(&o);
        assert!(
            e.contains("zz-typo.yaml")
                && e.contains("label_config servers")
                && e.contains("optons"),
            "{e}"
        );
    }
    let configs = s.get("/api/v1/label_configs").await?;
    assert_eq!(
        configs[0]["options"]["distributed_interval"], 30,
        "{configs}"
    );
    s.stop().await?;
    Ok(())
}

/// Runs `ctl query run` in a thread (it follows the campaign while the
/// test's agents answer).
fn query_run(
    s: &TestServer,
    token: &str,
    targets: &str,
    wait: &str,
) -> anyhow::Result<std::thread::JoinHandle<std::io::Result<Output>>> {
    let bin = gatehouse_bin()?;
    let (url, ca, token) = (s.api_url.clone(), s.boot.ca_path.clone(), token.to_owned());
    let targets = targets.to_owned();
    let wait = wait.to_owned();
    Ok(std::thread::spawn(move || {
        Command::new(bin)
            .args([
                "ctl",
                "query",
                "run",
                "--targets",
                &targets,
                "--wait",
                &wait,
                "SELECT * FROM no_such_table",
            ])
            .env_clear()
            .env("GATEHOUSE_URL", url)
            .env("GATEHOUSE_TOKEN", token)
            .env("GATEHOUSE_CA", ca)
            .output()
    }))
}

/// `ctl query run` exits non-zero when hosts failed (3) or never answered
/// (4), saying which; it once said every host answered when each had
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_that_fails_or_goes_unanswered_exits_non_zero() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let mut ok_host = s.agent(1);
    let mut bad_host = s.agent(2);
    let mut silent_host = s.agent(3);
    for a in [&mut ok_host, &mut bad_host, &mut silent_host] {
        anyhow::ensure!(a.enroll().await?.agent_success());
    }
    let answer = |id: &str, status: i64| {
        json!({"queries": {id: []}, "statuses": {id: status},
               "messages": {id: "no such table: no_such_table"}})
    };

    // Every targeted host answered, one with an error: exit 3.
    let targets = format!("{},{}", ok_host.host_id(), bad_host.host_id());
    let run = query_run(&s, &admin, &targets, "30")?;
    let id = ok_host.next_live_query().await?;
    anyhow::ensure!(ok_host.write(answer(&id, 0)).await?.agent_success());
    let id = bad_host.next_live_query().await?;
    anyhow::ensure!(bad_host.write(answer(&id, 1)).await?.agent_success());
    let o = run.join().map_err(|_| anyhow::anyhow!("ctl panicked"))??;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "1 host(s) answered with an error: {}",
            bad_host.host_id()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("every targeted host answered"));

    // One host never answers within the wait: exit 4, naming it.
    let targets = format!("{},{}", ok_host.host_id(), silent_host.host_id());
    let run = query_run(&s, &admin, &targets, "3")?;
    let id = ok_host.next_live_query().await?;
    anyhow::ensure!(ok_host.write(answer(&id, 0)).await?.agent_success());
    let o = run.join().map_err(|_| anyhow::anyhow!("ctl panicked"))??;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "no answer from 1 host(s): {}",
            silent_host.host_id()
        )),
        "{}",
        stderr(&o)
    );
    s.stop().await?;
    Ok(())
}

/// Client commands print no server log lines, no colour codes, and end
/// quietly when their reader goes away (`| head`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_are_quiet_and_survive_a_closed_pipe() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let o = ctl(&s, &s.boot.admin_token, &["whoami"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "ctl printed log lines");
    let o = Command::new(gatehouse_bin()?)
        .args(["ctl", "--help"])
        .env_clear()
        .output()?;
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
    assert!(
        !stdout(&o).contains('\u{1b}'),
        "colour codes off a terminal"
    );

    // A reader that stops after the first bytes: no panic, no backtrace.
    for args in [vec!["openapi"], vec!["ctl", "audit", "--limit", "500"]] {
        let mut child = Command::new(gatehouse_bin()?)
            .args(&args)
            .env_clear()
            .env("GATEHOUSE_URL", &s.api_url)
            .env("GATEHOUSE_TOKEN", &s.boot.admin_token)
            .env("GATEHOUSE_CA", &s.boot.ca_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Closing our end at once is `| head -c0`.
        drop(child.stdout.take());
        let o = child.wait_with_output()?;
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }
    s.stop().await?;
    Ok(())
}

/// `--data` is enough for a local server (URL, token and CA from its data
/// directory); an unreachable or untrusted server is named with the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_name_the_url_and_the_cause() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let run = |args: &[&str]| -> anyhow::Result<Output> {
        Ok(Command::new(gatehouse_bin()?)
            .arg("ctl")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()?)
    };
    let data = s.boot.data_dir.display().to_string();
    let o = run(&["--data", &data, "whoami"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "NAME   ROLE\nadmin  admin");

    let o = run(&["--url", "https://127.0.0.1:9", "--token", "t", "whoami"])?;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("https://127.0.0.1:9"), "{err}");
    assert!(err.contains("connection refused"), "{err}");

    // No --ca: the system's roots do not include this server's own CA.
    let o = run(&["--url", &s.api_url, "--token", "t", "whoami"])?;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&s.api_url), "{err}");
    assert!(err.contains("certificate not trusted"), "{err}");
    assert!(err.contains("--ca"), "{err}");
    s.stop().await?;
    Ok(())
}

/// Capped lists say when there is more, and `--after` takes the page after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_lists_page_with_after() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    for i in 0..2 {
        let mut agent = s.agent(i);
        anyhow::ensure!(agent.enroll().await?.agent_success());
    }
    for name in ["a", "b", "c"] {
        let o = ctl(&s, &admin, &["queries", "put", name, "SELECT 1"])?;
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for sql in ["SELECT 1", "SELECT 2"] {
        let (code, c) = s
            .api(
                reqwest::Method::POST,
                "/api/v1/campaigns",
                Some(json!({"sql": sql, "all": true})),
            )
            .await?;
        assert_eq!(code, 201, "{c}");
    }
    let cursor = |o: &Output| {
        stderr(o)
            .lines()
            .find_map(|l| l.strip_prefix("more: --after "))
            .map(str::to_owned)
    };
    for list in [
        vec!["hosts", "list"],
        vec!["audit"],
        vec!["campaigns", "list"],
    ] {
        let mut seen = Vec::new();
        let mut args: Vec<String> = list.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--limit".into(), "1".into(), "--json".into()]);
        let mut after: Option<String> = None;
        // Two pages of one, each different from the last.
        for page in 0..2 {
            let mut a = args.clone();
            if let Some(c) = &after {
                a.extend(["--after".into(), c.clone()]);
            }
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let o = ctl(&s, &admin, &refs)?;
            assert!(o.status.success(), "{list:?}: {}", stderr(&o));
            let v: Value = serde_json::from_slice(&o.stdout)?;
            let item = if v["items"].is_array() {
                v["items"][0].clone()
            } else {
                v[0].clone()
            };
            assert!(!seen.contains(&item), "{list:?}: page repeated {item}");
            seen.push(item);
            after = cursor(&o);
            if page == 0 {
                assert!(after.is_some(), "{list:?}: no cursor: {}", stderr(&o));
            }
        }
    }
    let o = ctl(&s, &admin, &["audit", "--after", "yesterday"])?;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--after"), "{}", stderr(&o));
    s.stop().await?;
    Ok(())
}

/// Schedules are created and replaced from the command line; a bad one is
/// refused with the API's message and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_put_from_the_command_line() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let o = ctl(
        &s,
        &admin,
        &["queries", "put", "users", "SELECT * FROM users"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let put = |interval: &str| {
        ctl(
            &s,
            &admin,
            &[
                "schedules",
                "put",
                "users_daily",
                "--query",
                "users",
                "--interval",
                interval,
                "--snapshot",
                "--pack",
                "inventory",
                "--labels",
                "all,platform:linux",
            ],
        )
    };
    let o = put("86400")?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("inventory"), "{}", stdout(&o));
    let o = put("0")?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("interval"), "{}", stderr(&o));
    let o = ctl(&s, &admin, &["schedules", "list", "--json"])?;
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v[0]["interval"], 86400, "{v}");
    assert_eq!(v[0]["pack"], "inventory");
    assert_eq!(v[0]["snapshot"], true);
    assert_eq!(v[0]["labels"], json!(["all", "platform:linux"]));
    s.stop().await?;
    Ok(())
}

/// Label configs, label queries and result lines from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_definitions_and_results_from_the_command_line() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let admin = s.boot.admin_token.clone();
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("labels.yaml"),
        "kind: label_config\nname: servers\nspec:\n  options:\n    distributed_interval: 30\n---\nkind: label_query\nname: has-docker\nspec:\n  sql: SELECT 1 FROM processes WHERE name = 'dockerd'\n  interval: 600\n",
    )?;
    let file = dir.path().join("labels.yaml").display().to_string();
    // A value osquery cannot use for the flag is refused before anything changes.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "kind: label_config\nname: laptops\nspec:\n  options:\n    logger_tls_period: ten\n",
    )?;
    let o = ctl(&s, &admin, &["apply", "-f", &bad.display().to_string()])?;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("logger_tls_period") && stderr(&o).contains("whole number"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(&bad)?;
    let o = ctl(&s, &admin, &["apply", "-f", &file])?;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ctl(&s, &admin, &["label-configs", "list"])?;
    assert!(stdout(&o).contains("servers"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("distributed_interval"),
        "{}",
        stdout(&o)
    );
    let o = ctl(&s, &admin, &["label-queries", "list"])?;
    assert!(
        stdout(&o).contains("has-docker") && stdout(&o).contains("600"),
        "{}",
        stdout(&o)
    );
    for (kind, label) in [
        ("label-configs", "servers"),
        ("label-queries", "has-docker"),
    ] {
        let o = ctl(&s, &admin, &[kind, "delete", label])?;
        assert!(o.status.success(), "{}", stderr(&o));
        let o = ctl(&s, &admin, &[kind, "list", "--json"])?;
        assert_eq!(
            serde_json::from_slice::<Value>(&o.stdout)?,
            json!([]),
            "{kind}"
        );
    }

    let mut a = s.agent(1);
    anyhow::ensure!(a.enroll().await?.agent_success());
    let now = gatehouse_core::time::now_ms() / 1000;
    let lines: Vec<Value> = (0..3)
        .map(|n| {
            json!({"name": "users", "hostIdentifier": "h", "calendarTime": "", "unixTime": now - 60 * (3 - n),
                   "epoch": 0, "counter": n, "numerics": false, "columns": {"n": n.to_string()}, "action": "added"})
        })
        .collect();
    anyhow::ensure!(a.log("result", json!(lines)).await?.agent_success());
    let host = a.host_id();
    let o = ctl(
        &s,
        &admin,
        &[
            "results",
            "--host",
            &host,
            "--newest",
            "--limit",
            "2",
            "--since-minutes",
            "10",
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains(r#"{"n":"2"}"#), "newest first: {out}");
    assert!(stderr(&o).contains("more: --after"), "{}", stderr(&o));
    s.stop().await?;
    Ok(())
}
