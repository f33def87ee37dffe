//! `vigil keys` and `vigil verify` as a subscriber's script meets them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn vigil(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const COMMANDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../engine/tests/golden/control.jsonl");

/// A fresh key in `dir`; returns (key path, jwks path).
fn keys(dir: &Path) -> (String, String) {
    let out = dir.join("keys");
    let run = vigil(&["keys", "generate", "--out", out.to_str().unwrap()], None);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    (out.join("signing-key.pem").display().to_string(), out.join("jwks.json").display().to_string())
}

fn signed(key: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "sign", "--key", key, COMMANDS];
    args.extend_from_slice(extra);
    let run = vigil(&args, None);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    text(&run.stdout)
}

#[test]
fn generate_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keys(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let published: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
    assert_eq!(published["keys"][0]["kty"], "OKP");
    assert_eq!(published["keys"][0]["crv"], "Ed25519");
    let again = vigil(&["keys", "generate", "--out", dir.path().join("keys").to_str().unwrap()], None);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("is never overwritten"), "{}", text(&again.stderr));
}

#[test]
fn all_verified_exits_0_with_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keys(dir.path());
    let tokens = signed(&key, &[]);
    let file = dir.path().join("control.jws");
    std::fs::write(&file, &tokens).unwrap();
    let run = vigil(&["verify", file.to_str().unwrap(), "--jwks", &jwks], None);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    let commands = std::fs::read_to_string(COMMANDS).unwrap();
    assert_eq!(stdout.lines().count(), commands.lines().count());
    for (got, want) in stdout.lines().zip(commands.lines()) {
        assert!(got.ends_with(&format!(": ok {want}")), "{got}");
    }
    // From stdin too, and CAEP SETs alike.
    let sets = signed(&key, &["--caep", "--issuer", "https://vigil.acme.example", "--audience", "https://broker.acme.example"]);
    let run = vigil(&["verify", "-", "--jwks", &jwks], Some(&sets));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("session-revoked"));
}

#[test]
fn any_failure_exits_1_and_says_which_line() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keys(dir.path());
    let tokens = signed(&key, &[]);
    let good = tokens.lines().next().unwrap();
    let (head, _) = good.rsplit_once('.').unwrap();
    let input = format!("{good}\n{head}.AAAA\n\neyJhbGciOiJub25lIn0.e30.\n");
    let run = vigil(&["verify", "--jwks", &jwks], Some(&input));
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("line 1: ok "), "{stdout}");
    assert!(lines[1].starts_with("line 2: error: the signature does not verify"), "{stdout}");
    assert_eq!(lines[2], "line 4: error: algorithm `none` is refused; only `EdDSA` is accepted");
    assert!(text(&run.stderr).contains("2 of 3 failed verification"));
    // Signed by another engine's key.
    let other = tempfile::tempdir().unwrap();
    let (other_key, _) = keys(other.path());
    let run = vigil(&["verify", "--jwks", &jwks], Some(&signed(&other_key, &[])));
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run.stdout).contains("is not in the key set"));
}

#[test]
fn bad_usage_or_unreadable_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (_, jwks) = keys(dir.path());
    let missing = dir.path().join("missing.jws");
    for args in [
        vec!["verify", missing.to_str().unwrap(), "--jwks", &jwks],
        vec!["verify", "-", "--jwks", missing.to_str().unwrap()],
        vec!["verify", "-"],
    ] {
        let run = vigil(&args, Some("x.y.z\n"));
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", text(&run.stderr));
    }
    let not_jwks = dir.path().join("not.json");
    std::fs::write(&not_jwks, "{\"keys\": 1}").unwrap();
    assert_eq!(vigil(&["verify", "--jwks", not_jwks.to_str().unwrap()], Some("x.y.z\n")).status.code(), Some(2));
    let empty = vigil(&["verify", "--jwks", &jwks], Some("\n\n"));
    assert_eq!(empty.status.code(), Some(2));
    assert!(text(&empty.stderr).contains("no JWS in the input"));
}
