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
        .env("HERALD_SERVER__API_KEY", "123456")
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
