//! The `herald` binary: configuration from the environment, `token`, `check-config`.

use std::process::Command;

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("HERALD_CONFIG");
    command
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
