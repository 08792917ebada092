//! The console at 100,000 hosts: the API calls its overview and hosts
//! pages make, timed against the all-in-one over an embedded store holding
//! 100,000 hosts, and (with Debian's chromium and `npm ci` in
//! tests/browser) the time from opening each page to its content shown in
//! a real headless Chromium.
//!
//! Run: `cargo bench -p gatehouse-tests --bench console` (`HOSTS=100000`
//! to change the fleet). Prints Markdown; results in
//! `docs/benchmarks/console.md`.
//!
//! A benchmark whose set-up fails has nothing to measure: it unwraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use futures_util::StreamExt;
use gatehouse_core::HostId;
use gatehouse_core::model::Host;
use gatehouse_core::ports::{Fence, HostStore};
use gatehouse_tests::TestServer;
use reqwest::Method;
use serde_json::json;

const PLATFORMS: [&str; 3] = ["linux", "darwin", "windows"];

fn host(n: usize, now: i64) -> Host {
    let platform = PLATFORMS[n % 3];
    Host {
        id: HostId::from_identity(&format!("hw:bench-{n:06}")),
        identity: format!("hw:bench-{n:06}"),
        host_identifier: format!("host-{n:06}.corp.example.com"),
        hostname: format!("host-{n:06}.corp.example.com"),
        platform: platform.into(),
        platform_type: platform.into(),
        os_name: "Example OS".into(),
        os_version: format!("{}.{}", 10 + n % 4, n % 10),
        osquery_version: ["5.12.1", "5.13.1", "5.14.1"][n % 3].into(),
        details: Default::default(),
        labels: if n.is_multiple_of(10) {
            vec!["pci".into()]
        } else {
            Vec::new()
        },
        enrolled_at: now - (n as i64 % 30) * 86_400_000,
        last_enrolled_at: now - (n as i64 % 30) * 86_400_000,
        enroll_count: 1,
        key_epoch: 1,
        key_revoked: false,
        // Most seen within the last minutes, some silent for days.
        last_seen: now
            - if n.is_multiple_of(20) {
                3 * 86_400_000
            } else {
                (n as i64 % 120) * 1000
            },
        last_ip: format!("10.{}.{}.{}", n / 65536 % 256, n / 256 % 256, n % 256),
        config_hash: String::new(),
        config_generation: 0,
        dynamic_labels: Vec::new(),
        label_checks: Default::default(),
    }
}

/// Median and worst of `runs` timings of `f`, ms.
async fn timed<F, Fut>(runs: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f().await;
        t.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[t.len() - 1])
}

fn main() {
    let hosts: usize = std::env::var("HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let now = gatehouse_core::time::now_ms();
        {
            let store = gatehouse_store::EmbeddedStore::open(&data.join("store")).unwrap();
            let t = Instant::now();
            futures_util::stream::iter(0..hosts)
                .for_each_concurrent(64, |n| {
                    let store = &store;
                    async move { store.put_host(&host(n, now), Fence::NONE).await.unwrap() }
                })
                .await;
            println!("stored {hosts} hosts in {:.1} s", t.elapsed().as_secs_f64());
        }
        let s = TestServer::start_in(&data, |_| {}).await.unwrap();
        let admin = s.boot.admin_token.clone();
        let call = |path: String| {
            let (s, admin) = (&s, admin.clone());
            async move {
                let (code, v) = s.call(&admin, Method::GET, &path, None).await.unwrap();
                assert_eq!(code, 200, "{path}: {v}");
                v
            }
        };
        let mut rows = Vec::new();
        let t = Instant::now();
        let v = call("/api/v1/fleet/summary".into()).await;
        assert_eq!(v["hosts"].as_u64(), Some(hosts as u64));
        let cold = t.elapsed().as_secs_f64() * 1000.0;
        rows.push(("fleet summary, made (one pass over every host; in the background once a fleet passes 10,000 hosts)".to_owned(), cold, cold));
        let m = timed(20, || async { call("/api/v1/fleet/summary".into()).await; }).await;
        rows.push(("fleet summary, the kept snapshot (what the overview asks)".into(), m.0, m.1));
        let m = timed(20, || async { call("/api/v1/alerts?limit=8".into()).await; }).await;
        rows.push(("recent alerts (the overview's other call)".into(), m.0, m.1));
        let m = timed(20, || async { call("/api/v1/hosts?limit=50".into()).await; }).await;
        rows.push(("hosts, first page of 50".into(), m.0, m.1));
        let page = call("/api/v1/hosts?limit=50".into()).await;
        let after = page["next"].as_str().unwrap_or_default().to_owned();
        let m = timed(20, || {
            let p = format!("/api/v1/hosts?limit=50&after={after}");
            let c = call(p);
            async { c.await; }
        }).await;
        rows.push(("hosts, next page".into(), m.0, m.1));
        let m = timed(10, || async { call("/api/v1/hosts?limit=50&platform=darwin".into()).await; }).await;
        rows.push(("hosts, platform filter".into(), m.0, m.1));
        let m = timed(10, || async { call("/api/v1/hosts?limit=50&label=pci".into()).await; }).await;
        rows.push(("hosts, label filter".into(), m.0, m.1));
        let m = timed(10, || async { call("/api/v1/hosts?limit=50&search=host-099".into()).await; }).await;
        rows.push(("hosts, search (text in any host)".into(), m.0, m.1));
        let t = Instant::now();
        call("/api/v1/hosts?limit=50&sort=hostname".into()).await;
        let made = t.elapsed().as_secs_f64() * 1000.0;
        rows.push(("hosts by hostname, order made (one pass over every host, at most every 60 s)".into(), made, made));
        let m = timed(10, || async { call("/api/v1/hosts?limit=50&sort=hostname".into()).await; }).await;
        rows.push(("hosts by hostname, order kept".into(), m.0, m.1));
        let m = timed(10, || async { call("/api/v1/hosts?limit=50&sort=last_seen".into()).await; }).await;
        rows.push(("hosts by last check-in, order kept".into(), m.0, m.1));
        let m = timed(10, || async { call("/api/v1/campaigns/targets?platforms=darwin".into()).await; }).await;
        rows.push(("live query target count, one platform (33,000 hosts)".into(), m.0, m.1));
        let one = HostId::from_identity("hw:bench-000007");
        let m = timed(10, || {
            let c = call(format!("/api/v1/hosts/{one}/campaigns"));
            async { c.await; }
        }).await;
        rows.push(("a host's live queries (no campaigns yet)".into(), m.0, m.1));

        println!();
        println!("| {hosts} hosts: API call | median ms | worst ms |");
        println!("|---|---|---|");
        for (what, med, worst) in &rows {
            println!("| {what} | {med:.1} | {worst:.1} |");
        }

        // The pages in a real browser.
        let browser = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
        if std::path::Path::new("/usr/bin/chromium").exists()
            && browser.join("node_modules/playwright-core").exists()
        {
            s.create_user("bench", "observer").await.unwrap();
            let (code, _) = s
                .call(&admin, Method::PUT, "/api/v1/users/bench/password", Some(json!({"password": "benchmark passphrase"})))
                .await
                .unwrap();
            assert_eq!(code, 200);
            let out = std::process::Command::new("node")
                .arg(browser.join("timing.mjs"))
                .current_dir(&browser)
                .env("GATEHOUSE_URL", &s.api_url)
                .env("GATEHOUSE_USER", "bench")
                .env("GATEHOUSE_PASSWORD", "benchmark passphrase")
                .output()
                .unwrap();
            println!();
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success());
        } else {
            println!("\nbrowser: NOT RUN (needs /usr/bin/chromium and `npm ci` in tests/browser)");
        }
        s.stop().await.unwrap();
    });
}
