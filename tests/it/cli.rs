//! The `herald` binary: configuration from the environment, `token`, `check-config`.

use std::process::Command;

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("HERALD_CONFIG").env_remove("RUST_LOG");
    command
}

/// Runs `check-config` with `env`; returns whether it passed, and stderr.
fn check_config(env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let output = herald()
        .envs(env.iter().copied())
        .arg("check-config")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unrelated_herald_variables_and_numeric_secrets_are_fine() {
    // Kubernetes injects these for a Service named `herald`.
    let output = herald()
        .env("HERALD_SERVICE_HOST", "10.0.0.1")
        .env("HERALD_PORT", "tcp://10.0.0.1:8080")
        .env("HERALD_SERVER__API_KEY", "0123456")
        .env("HERALD_AUTH__SECRET", "true")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn invalid_settings_fail_naming_the_key() {
    let output = herald()
        .env("HERALD_LIMITS__MAX_SUBSCRIPTIONS", "many")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("limits.max_subscriptions"), "{stderr}");

    let output = herald()
        .args(["check-config", "--listen", "0.0.0.0:8080"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.secret"));
}

#[test]
fn token_prints_a_verifiable_jwt() {
    let output = herald()
        .args(["token", "--user", "42", "--ttl", "60"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    let verifier = herald::auth::TokenVerifier::new(&herald::auth::AuthConfig::default()).unwrap();
    assert_eq!(verifier.verify(token.trim()).unwrap().user.as_str(), "42");
}

#[tokio::test]
async fn a_numeric_looking_api_key_is_used_verbatim() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_remove("HERALD_CONFIG")
        .env("HERALD_SERVER__API_KEY", "007")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/publish");
    let body = serde_json::json!({"channel": "c", "event": "e", "data": 1});
    let mut status = 0;
    for _ in 0..100 {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth("007")
            .json(&body)
            .send()
            .await;
        if let Ok(response) = response {
            status = response.status().as_u16();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the key \"007\" must not become 7");
    child.kill().await.unwrap();
}

#[test]
fn token_refuses_a_lifetime_of_zero_or_beyond_a_year() {
    for ttl in ["0", "31536001", "18446744073709551615"] {
        let output = herald()
            .args(["token", "--user", "42", "--ttl", ttl])
            .output()
            .unwrap();
        assert!(!output.status.success(), "--ttl {ttl} was accepted");
        assert!(output.stdout.is_empty(), "--ttl {ttl} printed a token");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--ttl") && stderr.contains("1..=31536000"),
            "{stderr}"
        );
    }
    let output = herald()
        .args(["token", "--user", "42", "--ttl", "31536000"])
        .output()
        .unwrap();
    assert!(output.status.success());
}

#[test]
fn a_misspelt_log_level_fails_naming_its_real_source() {
    let (ok, stderr) = check_config(&[("HERALD_LOG__LEVEL", "inof")], &[]);
    assert!(!ok, "log.level = inof passed");
    assert!(
        stderr.contains("log.level") && stderr.contains("inof"),
        "{stderr}"
    );

    let (ok, stderr) = check_config(&[("HERALD_LOG__LEVEL", "herald=inof,info")], &[]);
    assert!(!ok, "herald=inof passed: {stderr}");

    let (ok, stderr) = check_config(&[("RUST_LOG", "inof")], &[]);
    assert!(!ok, "RUST_LOG=inof passed");
    assert!(
        stderr.contains("RUST_LOG") && stderr.contains("inof"),
        "{stderr}"
    );
    assert!(!stderr.contains("log.level"), "{stderr}");

    // The same mistake fails start-up the same way, before binding anything.
    let output = herald()
        .env("RUST_LOG", "herald=dbug")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RUST_LOG") && stderr.contains("dbug"),
        "{stderr}"
    );

    for good in ["info", "herald=debug,warn", "WARN,herald::native=trace"] {
        let (ok, stderr) = check_config(&[("RUST_LOG", good), ("HERALD_LOG__LEVEL", good)], &[]);
        assert!(ok, "{good}: {stderr}");
    }
}

#[test]
fn off_loopback_short_keys_are_refused_with_how_to_make_one() {
    let long = "k".repeat(32);
    let public = ["--listen", "0.0.0.0:8080"];
    let (ok, stderr) = check_config(
        &[
            ("HERALD_SERVER__API_KEY", "short-api-key"),
            ("HERALD_AUTH__SECRET", &long),
        ],
        &public,
    );
    assert!(!ok, "a 13-byte API key passed");
    assert!(
        stderr.contains("server.api_key (13 bytes)") && stderr.contains("openssl rand -base64 48"),
        "{stderr}"
    );
    assert!(!stderr.contains("auth.secret"), "{stderr}");

    let (ok, stderr) = check_config(
        &[
            ("HERALD_SERVER__API_KEY", &long),
            ("HERALD_AUTH__SECRET", &"s".repeat(31)),
        ],
        &public,
    );
    assert!(!ok, "a 31-byte secret passed");
    assert!(stderr.contains("auth.secret (31 bytes)"), "{stderr}");

    // HS keys of the key table count too.
    let dir = std::env::temp_dir().join(format!("herald-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        "[[auth.keys]]\nkid = \"old\"\nalgorithm = \"HS512\"\nsecret = \"tiny\"\n",
    )
    .unwrap();
    let env = [
        ("HERALD_SERVER__API_KEY", long.as_str()),
        ("HERALD_AUTH__SECRET", long.as_str()),
    ];
    let with_file = [
        "--listen",
        "0.0.0.0:8080",
        "--config",
        file.to_str().unwrap(),
    ];
    let (ok, stderr) = check_config(&env, &with_file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "a 4-byte auth.keys secret passed");
    assert!(stderr.contains("auth.keys[0].secret (4 bytes)"), "{stderr}");

    // 32 bytes are enough; on loopback short keys stay allowed for development.
    let (ok, stderr) = check_config(&env, &public);
    assert!(ok, "{stderr}");
    let (ok, stderr) = check_config(
        &[
            ("HERALD_SERVER__API_KEY", "dev"),
            ("HERALD_AUTH__SECRET", "dev"),
        ],
        &["--listen", "127.0.0.1:8080"],
    );
    assert!(ok, "{stderr}");
}
