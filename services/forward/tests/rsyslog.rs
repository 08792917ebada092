//! The syslog destination against a real rsyslog (Debian's `rsyslog` and
//! `rsyslog-gnutls`, installed by the test script): RFC 5424 with octet
//! counting over TCP and over TLS (RFC 5425), each line received whole,
//! with the agent's host, the message id and the JSON line as sent; and a
//! collector that goes away and comes back gets the batch again.
//! Without rsyslogd this prints NOT RUN and passes as a no-op.

// Test helpers: a failed setup step is the test's failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gatehouse_forward::destination::Destination;
use gatehouse_forward::line::{Line, LogType};
use gatehouse_forward::syslog::{SyslogConfig, SyslogDestination};
use gatehouse_testkit::process::Process;
use serde_json::{Value, json};

/// rsyslogd in the foreground with its own configuration, spool and
/// output file; killed when dropped.
struct Rsyslog {
    _child: Process,
    out: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn rsyslogd() -> Option<PathBuf> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A CA and a certificate for `localhost` signed by it, as PEM files.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test syslog CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = p.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

impl Rsyslog {
    /// Starts rsyslogd listening on `port` (TLS with the files of
    /// `tls`), writing `HOST|APP|MSGID|SEVERITY|MSG` per message.
    fn start(bin: &Path, dir: &Path, port: u16, tls: Option<&(PathBuf, PathBuf, PathBuf)>) -> Self {
        let out = dir.join("received.log");
        let work = dir.join("spool");
        std::fs::create_dir_all(&work).unwrap();
        let (global, input) = match tls {
            None => (
                String::new(),
                format!(
                    r#"module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")"#
                ),
            ),
            Some((ca, cert, key)) => (
                format!(
                    r#"global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{}" DefaultNetstreamDriverCertFile="{}" DefaultNetstreamDriverKeyFile="{}")"#,
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
                format!(
                    r#"module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")"#
                ),
            ),
        };
        let conf = format!(
            r#"global(workDirectory="{work}")
{global}
module(load="builtin:omfile")
{input}
template(name="fields" type="string" string="%hostname%|%app-name%|%msgid%|%syslogseverity-text%|%msg%\n")
*.* action(type="omfile" file="{out}" template="fields")
"#,
            work = work.display(),
            out = out.display()
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .args(["-n", "-i"])
            .arg(dir.join("rsyslogd.pid"))
            .arg("-f")
            .arg(&conf_path)
            .spawn()
            .unwrap();
        Self {
            _child: Process(child),
            out,
            port,
        }
    }

    fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Waits until rsyslogd accepts connections.
async fn listening(port: u16) {
    gatehouse_testkit::until("rsyslogd listening", Duration::from_secs(20), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

fn line(n: usize, t: LogType) -> Line {
    let body = match t {
        LogType::Results => {
            json!({"name": "users", "hostIdentifier": "web-01", "unixTime": 1_717_496_431, "columns": {"uid": format!("{n}"), "note": "a | pipe and é"}, "action": "added"})
        }
        _ => {
            json!({"hostIdentifier": "web-01", "severity": 1, "message": format!("warning {n}"), "unixTime": 1_717_496_431})
        }
    };
    Line {
        log_type: t,
        host_id: "h".into(),
        name: Some("users".into()),
        unix_time: 1_717_496_431,
        line_id: format!("l{n}"),
        body: body.as_object().cloned().unwrap(),
    }
}

fn config(port: u16, tls: Option<&Path>) -> SyslogConfig {
    SyslogConfig {
        address: format!("localhost:{port}"),
        tls: tls.is_some(),
        ca: tls.map(Path::to_path_buf),
        server_name: None,
        app_name: "osquery".into(),
        facility: 16,
        timeout_secs: 5,
    }
}

/// Sends 50 result lines and a status line; checks each arrived whole.
async fn round_trip(d: &SyslogDestination, r: &Rsyslog) {
    let mut lines: Vec<Line> = (0..50).map(|n| line(n, LogType::Results)).collect();
    lines.push(line(99, LogType::Status));
    for chunk in lines.chunks(20) {
        d.deliver(chunk).await.unwrap();
    }
    gatehouse_testkit::until(
        "rsyslog wrote every message",
        Duration::from_secs(20),
        async || r.received().len() >= 51,
    )
    .await;
    let got = r.received();
    assert_eq!(got.len(), 51, "{got:?}");
    for (i, g) in got.iter().enumerate() {
        let mut f = g.splitn(5, '|');
        let (host, app, msgid, sev, msg) = (
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
            f.next().unwrap(),
        );
        assert_eq!((host, app), ("web-01", "osquery"), "{g}");
        let v: Value =
            serde_json::from_str(msg.trim_start()).unwrap_or_else(|e| panic!("{e}: {g}"));
        if i < 50 {
            assert_eq!((msgid, sev), ("result", "info"));
            assert_eq!(v, Value::Object(lines[i].body.clone()), "the line as sent");
        } else {
            assert_eq!((msgid, sev), ("status", "warning"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_reach_rsyslog_over_tcp_and_again_after_it_restarts() {
    let Some(bin) = rsyslogd() else {
        println!("NOT RUN: rsyslogd is not installed (the test script installs rsyslog)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let r = Rsyslog::start(&bin, dir.path(), port, None);
    listening(port).await;
    let d = SyslogDestination::new(config(r.port, None)).unwrap();
    round_trip(&d, &r).await;
    // The collector goes away: delivery fails (to be retried), and once
    // it is back the next attempt reconnects and gets through.
    drop(r);
    let mut failed = false;
    for _ in 0..5 {
        if d.deliver(&[line(500, LogType::Results)]).await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "a dead collector is an error to retry");
    let dir2 = tempfile::tempdir().unwrap();
    let r = Rsyslog::start(&bin, dir2.path(), port, None);
    listening(port).await;
    gatehouse_testkit::until(
        "delivered after the restart",
        Duration::from_secs(20),
        async || d.deliver(&[line(501, LogType::Results)]).await.is_ok(),
    )
    .await;
    gatehouse_testkit::until("received", Duration::from_secs(20), async || {
        r.received().iter().any(|l| l.contains("\"501\""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_reach_rsyslog_over_tls() {
    let Some(bin) = rsyslogd() else {
        println!("NOT RUN: rsyslogd is not installed (the test script installs rsyslog)");
        return;
    };
    if !Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
        && !Path::new("/usr/lib/rsyslog/lmnsd_gtls.so").exists()
    {
        println!("NOT RUN: rsyslog-gnutls is not installed (the test script installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = pki(dir.path());
    let port = free_port();
    let r = Rsyslog::start(&bin, dir.path(), port, Some(&files));
    listening(port).await;
    let d = SyslogDestination::new(config(port, Some(&files.0))).unwrap();
    round_trip(&d, &r).await;
    // A collector whose certificate is not trusted is refused.
    let mut c = config(port, None);
    c.tls = true;
    let untrusted = SyslogDestination::new(c).unwrap();
    let e = untrusted
        .deliver(&[line(1, LogType::Results)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
}
