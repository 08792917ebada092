//! Transport: TLS 1.2 and 1.3 both work (agents negotiate either), and
//! with a client CA configured only agents holding a certificate it signed
//! get through (mutual TLS).

use std::time::Duration;

use gatehouse_tests::{TestServer, client_for};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn roots(ca: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        r.add(c?)?;
    }
    Ok(r)
}

fn client(cfg: rustls::ClientConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(10))
        .build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_agents_are_served() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots(&s.boot.ca_path)?)
            .with_no_client_auth();
        let mut a = s.agent(1);
        a.http = client(cfg)?;
        assert!(a.enroll().await?.agent_success(), "{version:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_agents_with_a_trusted_certificate() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    // An agent CA, and one agent certificate it signs.
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "agents CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_path = dir.path().join("agents-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let agent_key = KeyPair::generate()?;
    let mut agent = CertificateParams::new(vec!["agent-1".to_owned()])?;
    agent.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let agent_cert = agent.signed_by(&agent_key, &issuer)?;

    let s = TestServer::start_in(&dir.path().join("data"), |c| {
        c.tls.client_ca = Some(ca_path.clone())
    })
    .await?;

    // Without a client certificate the handshake fails: no request is served.
    let mut anonymous = s.agent(1);
    anonymous.http = client_for(&s.boot.ca_path)?;
    assert!(
        anonymous.enroll().await.is_err(),
        "an agent without a certificate was served"
    );

    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots(&s.boot.ca_path)?)
        .with_client_auth_cert(
            vec![CertificateDer::from(agent_cert.der().to_vec())],
            PrivateKeyDer::from_pem_slice(agent_key.serialize_pem().as_bytes())?,
        )?;
    let mut trusted = s.agent(1);
    trusted.http = client(cfg)?;
    let r = trusted.enroll().await?;
    assert!(r.agent_success(), "{r:?}");
    assert!(trusted.config().await?.agent_success());
    // The operator API does not require client certificates.
    assert_eq!(
        s.get("/api/v1/hosts").await?["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    Ok(())
}
