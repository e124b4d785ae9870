//! TLS: the server's identity, pinned by the client on first use, a changed
//! identity refused, and plaintext only where allowed — all over real TLS
//! on loopback.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use tokio::io::AsyncReadExt;

/// `wiresh exec` from a client home of its own (so its known_hosts is its
/// own), with the server's token passed in the environment.
fn client(server: &Server, home: &Path, extra: &[&str], command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("exec")
        .args(["-H", &server.addr.to_string()])
        .args(extra)
        .args(["--", command]);
    isolated(&mut cmd, home).env("WIRESH_TOKEN", server.token.expose());
    cmd
}

/// The fingerprint the server printed when it started.
fn printed_fingerprint(server: &Server) -> String {
    server.fingerprint()
}

#[tokio::test]
async fn first_use_pins_the_fingerprint_the_server_printed() {
    let server = Server::start_exactly(&[]);
    let fingerprint = printed_fingerprint(&server);
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64,
        "{fingerprint}"
    );
    let home = tempfile::tempdir().unwrap();
    let out = cli_output(client(&server, home.path(), &[], "echo over tls"), None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"over tls\n");
    let known = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    assert_eq!(known.trim(), format!("{} {fingerprint}", server.addr));
    // The second connection checks against the pin and still works.
    let out = cli_output(client(&server, home.path(), &[], "true"), None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
}

/// The library's client pins on first use too, and tells its caller (which
/// tells the user: the library prints nothing) only the first time.
#[tokio::test]
async fn the_library_client_tells_its_caller_when_it_pinned() {
    let server = Server::start_exactly(&[]);
    let home = tempfile::tempdir().unwrap();
    let endpoint = wiresh::client::Endpoint {
        security: wiresh::client::Security::Tls(wiresh::client::Pinning {
            known_hosts: home.path().join("known_hosts"),
            fingerprint: None,
            client_key: None,
        }),
        ..server.endpoint()
    };
    let first = wiresh::client::Connection::connect(&endpoint)
        .await
        .unwrap();
    let fingerprint = printed_fingerprint(&server);
    assert_eq!(first.pinned_on_first_use(), Some(fingerprint.as_str()));
    first.close().await;
    let known = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    assert_eq!(known.trim(), format!("{} {fingerprint}", server.addr));
    let again = wiresh::client::Connection::connect(&endpoint)
        .await
        .unwrap();
    assert_eq!(again.pinned_on_first_use(), None, "pinned already");
}

#[tokio::test]
async fn a_changed_fingerprint_is_refused_with_a_warning() {
    let server = Server::start_exactly(&[]);
    let home = tempfile::tempdir().unwrap();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    std::fs::write(
        home.path().join("known_hosts"),
        format!("{} {wrong}\n", server.addr),
    )
    .unwrap();
    let out = cli_output(client(&server, home.path(), &[], "echo must not run"), None).await;
    assert_eq!(out.code, Some(255));
    assert!(out.stdout.is_empty());
    let err = out.stderr_str();
    assert!(err.contains("WARNING") && err.contains(&wrong), "{err}");
    assert!(err.contains(&printed_fingerprint(&server)), "{err}");
    assert!(
        err.contains("known_hosts"),
        "the warning must say how to fix it: {err}"
    );
}

#[tokio::test]
async fn fingerprint_option_pins_in_advance() {
    let server = Server::start_exactly(&[]);
    let right = printed_fingerprint(&server);
    let home = tempfile::tempdir().unwrap();
    let out = cli_output(
        client(
            &server,
            home.path(),
            &["--fingerprint", &right],
            "echo pinned",
        ),
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"pinned\n");
    let wrong = format!("sha256:{}", "00".repeat(32));
    let out = cli_output(
        client(&server, home.path(), &["--fingerprint", &wrong], "echo no"),
        None,
    )
    .await;
    assert_eq!(out.code, Some(255), "{}", out.stderr_str());
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn plaintext_needs_the_server_to_allow_it() {
    let server = Server::start_exactly(&[]);
    // A plaintext client gets a readable refusal, not garbage.
    let mut s = tcp(server.addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut s, b"WIRESH\x00\x01")
        .await
        .unwrap();
    let mut reply = Vec::new();
    bounded("the refusal", s.read_to_end(&mut reply))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("WIRESH-ERROR tls_required"), "{text}");
    let home = tempfile::tempdir().unwrap();
    let out = cli_output(client(&server, home.path(), &["--plaintext"], "true"), None).await;
    assert_eq!(out.code, Some(255), "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("tls_required"),
        "{}",
        out.stderr_str()
    );

    // Allowed on loopback when the server says so.
    let server = Server::start_exactly(&["--allow-plaintext"]);
    let out = cli_output(
        client(&server, home.path(), &["--plaintext"], "echo clear"),
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr_str());
    assert_eq!(out.stdout, b"clear\n");
}

#[tokio::test]
async fn the_client_refuses_plaintext_to_a_non_loopback_host() {
    // Refused before any connection is attempted (the name is never resolved).
    let out = cli_output(
        {
            let mut cmd = tokio::process::Command::new(BIN);
            cmd.args([
                "exec",
                "--plaintext",
                "-H",
                "wiresh.example.invalid:7878",
                "--",
                "true",
            ])
            .env("WIRESH_TOKEN", "x")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            cmd
        },
        None,
    )
    .await;
    assert_eq!(
        out.code,
        Some(wiresh::exit::USAGE),
        "a usage error: nothing connected"
    );
    assert!(
        out.stderr_str().contains("only for a server on loopback"),
        "{}",
        out.stderr_str()
    );
}

#[tokio::test]
async fn the_tls_key_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start_exactly(&[]);
    let mode = std::fs::metadata(server.home().join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Output that backs up (the local reader starts late) still arrives whole
/// over TLS, its end included: the writer must flush what TLS buffers
/// before it waits for more frames.
#[tokio::test]
async fn backed_up_output_arrives_whole_over_tls() {
    let server = Server::start_exactly(&[]);
    let home = tempfile::tempdir().unwrap();
    let script = format!(
        "'{bin}' exec -n -H {addr} -- 'head -c 30000000 /dev/zero; echo; echo end' | (sleep 0.5; wc -c)",
        bin = BIN,
        addr = server.addr
    );
    let mut cmd = bash_script(&script, home.path());
    cmd.env("WIRESH_TOKEN", server.token.expose());
    let out = cli_output(cmd, None).await;
    assert_eq!(out.stdout_str().trim(), "30000005", "{}", out.stderr_str());
}

/// A TLS client over the connection limit reads why it was turned away.
#[tokio::test]
async fn connection_limit_is_explained_over_tls() {
    let server = Server::start_exactly(&["--max-connections", "1", "--allow-plaintext"]);
    // An authenticated connection holds the only place. (One that says
    // nothing does not: it counts among the connections authenticating,
    // see `admission.rs`.)
    let _holder = server.raw().await;
    let home = tempfile::tempdir().unwrap();
    let out = cli_output(client(&server, home.path(), &[], "true"), None).await;
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr_str().contains("too_many_connections"),
        "{}",
        out.stderr_str()
    );
}

/// A TLS service that is not wiresh (here, one that answers as HTTP
/// servers do) is told for what it is, and its certificate is not pinned:
/// a pin is only written once the peer has proved it speaks wiresh.
#[tokio::test]
async fn a_tls_service_that_is_not_wiresh_is_named_and_not_pinned() {
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(socket).await else {
                continue;
            };
            let mut request = [0u8; 8];
            let _ = tls.read_exact(&mut request).await;
            let _ = tls
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = tls.shutdown().await;
        }
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["exec", "-H", &addr.to_string(), "--", "true"]);
    isolated(&mut cmd, home.path()).env("WIRESH_TOKEN", "x".repeat(64));
    let out = cli_output(cmd, None).await;
    web.abort();
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(255), "{stderr}");
    assert!(
        stderr.contains("this is not a wiresh server (it looks like HTTP"),
        "{stderr}"
    );
    let known = std::fs::read_to_string(home.path().join("known_hosts")).unwrap_or_default();
    assert!(!known.contains(&addr.to_string()), "pinned: {known}");
}
