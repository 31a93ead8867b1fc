//! Optional TLS (issue 12): with `[tls]` in `patron.toml`, real clients reach
//! every listener over TLS, verifying the server's certificate: curl over
//! HTTPS, psql with `sslmode=verify-full`, and the ADBC Flight SQL driver over
//! `grpc+tls`. The certificate is a fresh self-signed one for 127.0.0.1, made
//! by the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use patron_tests::{Server, python, workspace_root};

const INGEST: &str = "tls-test-ingest-token";
const QUERY: &str = "tls-test-query-token-1";

/// A self-signed certificate and key for the IP address 127.0.0.1.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}

fn curl(cert: &Path, args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "20", "--cacert"]).arg(cert).args(args).output().expect("curl runs")
}

#[test]
fn every_listener_speaks_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let config = dir.path().join("patron.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n[[auth.tokens]]\ntoken = \"{QUERY}\"\nroles = [\"query\"]\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // HTTPS: events in, a customer out, the certificate verified by curl.
    let event = r#"{"type":"purchase","event_id":"t1","customer_id":"tls-1","timestamp":"2026-11-01T10:00:00Z","currency":"EUR","items":[{"product_id":"p1","quantity":2,"price":"12.50"}]}"#;
    let posted = curl(
        &cert,
        &[
            "-H",
            &format!("authorization: Bearer {INGEST}"),
            "--data-binary",
            event,
            &format!("{}/v1/events", server.url),
        ],
    );
    let answer = String::from_utf8_lossy(&posted.stdout);
    assert!(
        posted.status.success() && answer.contains("\"accepted\":1"),
        "{answer} {}",
        String::from_utf8_lossy(&posted.stderr)
    );
    let customer =
        curl(&cert, &["-H", &format!("authorization: Bearer {QUERY}"), &format!("{}/v1/customers/tls-1", server.url)]);
    assert!(String::from_utf8_lossy(&customer.stdout).contains("\"orders\":1"), "{customer:?}");
    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", &server.url.replacen("https://", "http://", 1)])
        .arg("/health")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"), "plain HTTP was served on the TLS port");

    // pgwire: psql verifies the certificate and the host name (sslmode=verify-full).
    let pg = server.pg;
    let psql = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=analyst dbname=patron sslmode=verify-full sslrootcert={}",
            pg.port(),
            cert.display()
        ))
        .args(["-X", "-w", "--csv", "-t", "-c", "SELECT count(*) FROM customers"])
        .env("PGPASSWORD", QUERY)
        .output()
        .expect("psql runs");
    assert!(psql.status.success(), "{}", String::from_utf8_lossy(&psql.stderr));
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "1");

    // Flight SQL over TLS with the ADBC driver, trusting only our certificate.
    let adbc = |root: Option<&Path>| {
        use std::io::Write;
        let mut command = Command::new(python());
        command
            .arg(workspace_root().join("tests/clients/adbc_rows.py"))
            .args([server.flight.ip().to_string(), server.flight.port().to_string(), QUERY.to_owned()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(root) = root {
            command.env("PATRON_FLIGHT_TLS_ROOT", root);
        }
        let mut child = command.spawn().expect("python runs");
        child.stdin.take().unwrap().write_all(b"SELECT count(*) AS n FROM customers\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let over_tls = adbc(Some(&cert));
    assert!(over_tls.status.success(), "{}", String::from_utf8_lossy(&over_tls.stderr));
    assert!(String::from_utf8_lossy(&over_tls.stdout).contains("\"rows\": [[1]]"), "{over_tls:?}");
    let in_clear = adbc(None);
    assert!(!in_clear.status.success(), "a plaintext gRPC client was served on the TLS port");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = certificate(other.path());
    let config = dir.path().join("patron.toml");
    std::fs::write(&config, format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), other_key.display()))
        .unwrap();
    let data = dir.path().join("data");
    let mut args = vec!["serve", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(&patron_tests::EPHEMERAL_LISTENERS);
    let output = patron_tests::patron(&args);
    let text = patron_tests::transcript(&output);
    assert!(!output.status.success() && text.contains("[tls]") && text.contains("KeyMismatch"), "{text}");
    assert!(!data.exists(), "the refused server opened its data directory");
}
