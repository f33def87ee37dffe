//! Signed control commands and their CAEP form: what a subscriber relies on
//! to refuse a command the engine did not send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use vigil::caep;
use vigil::sign::{self, Jwks, KeyError, KeyRing, VerifyError, COMMAND_TYPE, SET_TYPE};
use vigil::verdict::{CommandKind, ControlCommand};

/// The Ed25519 key of RFC 8037 appendix A.1, as PKCS#8, so signatures are pinned.
const RFC_8037_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
const RFC_8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

fn fixed_keys() -> KeyRing {
    KeyRing::from_pkcs8_pem(RFC_8037_KEY).unwrap()
}

fn command(kind: CommandKind) -> ControlCommand {
    ControlCommand {
        command_id: format!("c-{}", kind.as_str()),
        issued_at: "2026-11-28T09:03:05.500Z".into(),
        command: kind,
        tenant: "acme".into(),
        agent_id: "billing-bot".into(),
        workload_id: "spiffe://acme.example/agents/billing-bot".into(),
        task_id: Some("t-77".into()),
        credential_ids: if kind == CommandKind::RevokeCredentials { vec!["cred-9".into(), "cred-10".into()] } else { vec![] },
        reason: "exfiltration_chain: egress to a new destination after a pii read".into(),
        decision_id: "d-1042".into(),
        expires_at: (kind == CommandKind::StepUp).then(|| "2026-11-28T09:18:05.500Z".into()),
    }
}

const KINDS: [CommandKind; 5] = [
    CommandKind::RevokeCredentials,
    CommandKind::RevokeAgent,
    CommandKind::StepUp,
    CommandKind::Quarantine,
    CommandKind::Release,
];

fn parts(jws: &str) -> Vec<String> {
    jws.split('.').map(str::to_string).collect()
}

fn header(jws: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(jws)[0]).unwrap()).unwrap()
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

#[test]
fn every_command_kind_round_trips() {
    let keys = KeyRing::generate();
    let jwks = keys.jwks();
    for kind in KINDS {
        let cmd = command(kind);
        let jws = keys.sign(&cmd);
        assert_eq!(sign::verify(&jws, &jwks), Ok(cmd));
    }
}

#[test]
fn the_recorded_demo_commands_round_trip() {
    let recorded = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/control.jsonl")).unwrap();
    let keys = fixed_keys();
    let jwks = keys.jwks();
    let mut count = 0;
    for line in recorded.lines() {
        let cmd: ControlCommand = serde_json::from_str(line).unwrap();
        let jws = keys.sign(&cmd);
        // The signed payload is the command's JSON exactly as the engine writes it.
        assert_eq!(URL_SAFE_NO_PAD.decode(&parts(&jws)[1]).unwrap(), line.as_bytes());
        assert_eq!(sign::verify(&jws, &jwks), Ok(cmd));
        count += 1;
    }
    assert!(count > 0);
}

#[test]
fn the_header_names_algorithm_key_and_type() {
    let jws = fixed_keys().sign(&command(CommandKind::Quarantine));
    assert_eq!(header(&jws), json!({"alg": "EdDSA", "kid": RFC_8037_KID, "typ": COMMAND_TYPE}));
    assert_eq!(URL_SAFE_NO_PAD.decode(&parts(&jws)[2]).unwrap().len(), 64);
}

#[test]
fn the_same_key_and_command_give_the_same_bytes() {
    let cmd = command(CommandKind::RevokeCredentials);
    let (a, b) = (fixed_keys(), fixed_keys());
    assert_eq!(a.sign(&cmd), b.sign(&cmd));
    assert_eq!(a.sign(&cmd), a.sign(&cmd));
    let set_a = caep::sign(&a, &cmd, "https://vigil.acme.example", "https://broker.acme.example").unwrap();
    let set_b = caep::sign(&b, &cmd, "https://vigil.acme.example", "https://broker.acme.example").unwrap();
    assert_eq!(set_a, set_b);
    // Another key signs the same command differently.
    assert_ne!(KeyRing::generate().sign(&cmd), a.sign(&cmd));
}

#[test]
fn a_tampered_payload_is_refused() {
    let keys = fixed_keys();
    let jws = keys.sign(&command(CommandKind::StepUp));
    let mut forged = command(CommandKind::StepUp);
    forged.expires_at = Some("2099-01-01T00:00:00Z".into());
    let p = parts(&jws);
    let tampered = format!("{}.{}.{}", p[0], b64(&serde_json::to_string(&forged).unwrap()), p[2]);
    assert_eq!(sign::verify(&tampered, &keys.jwks()), Err(VerifyError::Signature(RFC_8037_KID.into())));
    // One flipped bit of the signature too.
    let mut signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(sign::verify(&flipped, &keys.jwks()), Err(VerifyError::Signature(RFC_8037_KID.into())));
}

#[test]
fn a_tampered_header_is_refused() {
    let keys = fixed_keys();
    let p = parts(&keys.sign(&command(CommandKind::Release)));
    let header = b64(&json!({"alg": "EdDSA", "kid": RFC_8037_KID, "typ": COMMAND_TYPE, "x": 1}).to_string());
    let tampered = format!("{header}.{}.{}", p[1], p[2]);
    assert!(matches!(sign::verify(&tampered, &keys.jwks()), Err(VerifyError::Signature(_))));
}

#[test]
fn a_command_signed_by_another_key_is_refused() {
    let ours = fixed_keys();
    let theirs = KeyRing::generate();
    let jws = theirs.sign(&command(CommandKind::RevokeAgent));
    // Their kid is not in our set.
    assert_eq!(sign::verify(&jws, &ours.jwks()), Err(VerifyError::UnknownKid(theirs.kid().into())));
    // Their token relabelled with our kid: the signature does not verify.
    let p = parts(&jws);
    let relabelled = format!("{}.{}.{}", b64(&json!({"alg": "EdDSA", "kid": RFC_8037_KID, "typ": COMMAND_TYPE}).to_string()), p[1], p[2]);
    assert_eq!(sign::verify(&relabelled, &ours.jwks()), Err(VerifyError::Signature(RFC_8037_KID.into())));
}

#[test]
fn an_unknown_or_missing_kid_is_refused() {
    let keys = fixed_keys();
    let p = parts(&keys.sign(&command(CommandKind::Quarantine)));
    let other = b64(&json!({"alg": "EdDSA", "kid": "retired-2024", "typ": COMMAND_TYPE}).to_string());
    let err = sign::verify(&format!("{other}.{}.{}", p[1], p[2]), &keys.jwks()).unwrap_err();
    assert_eq!(err, VerifyError::UnknownKid("retired-2024".into()));
    assert_eq!(err.to_string(), "key `retired-2024` is not in the key set");
    let none = b64(&json!({"alg": "EdDSA", "typ": COMMAND_TYPE}).to_string());
    assert_eq!(sign::verify(&format!("{none}.{}.{}", p[1], p[2]), &keys.jwks()), Err(VerifyError::MissingKid));
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let keys = fixed_keys();
    let payload = b64(&serde_json::to_string(&command(CommandKind::Release)).unwrap());
    for alg in ["none", "None", "HS256", "ES256", "Ed25519"] {
        let header = b64(&json!({"alg": alg, "kid": RFC_8037_KID, "typ": COMMAND_TYPE}).to_string());
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}.AAAA")] {
            let err = sign::verify(&token, &keys.jwks()).unwrap_err();
            assert_eq!(err, VerifyError::Algorithm(alg.into()));
            assert_eq!(err.to_string(), format!("algorithm `{alg}` is refused; only `EdDSA` is accepted"));
        }
    }
}

#[test]
fn a_critical_extension_is_refused() {
    let keys = fixed_keys();
    let p = parts(&keys.sign(&command(CommandKind::Release)));
    let header = b64(&json!({"alg": "EdDSA", "kid": RFC_8037_KID, "b64": false, "crit": ["b64"]}).to_string());
    assert_eq!(
        sign::verify(&format!("{header}.{}.{}", p[1], p[2]), &keys.jwks()),
        Err(VerifyError::Critical(vec!["b64".into()]))
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let jwks = fixed_keys().jwks();
    assert_eq!(sign::verify("", &jwks), Err(VerifyError::Shape(1)));
    assert_eq!(sign::verify("a.b", &jwks), Err(VerifyError::Shape(2)));
    assert_eq!(sign::verify("a.b.c.d.e", &jwks), Err(VerifyError::Shape(5)));
    assert_eq!(sign::verify("***.b.c", &jwks), Err(VerifyError::Encoding("header")));
    assert!(matches!(sign::verify(&format!("{}.b.c", b64("[1]")), &jwks), Err(VerifyError::Header(_))));
    // Padded base64 is not base64url as JWS uses it.
    let p = parts(&fixed_keys().sign(&command(CommandKind::Release)));
    assert_eq!(sign::verify(&format!("{}.{}.{}==", p[0], p[1], p[2]), &jwks), Err(VerifyError::Encoding("signature")));
}

#[test]
fn a_token_of_another_type_is_not_a_command() {
    let keys = fixed_keys();
    let cmd = command(CommandKind::RevokeAgent);
    let set = caep::sign(&keys, &cmd, "https://vigil.acme.example", "https://broker.acme.example").unwrap();
    assert_eq!(
        sign::verify(&set, &keys.jwks()),
        Err(VerifyError::Type { expected: COMMAND_TYPE, found: SET_TYPE.into() })
    );
    assert_eq!(
        sign::verify_set(&keys.sign(&cmd), &keys.jwks()),
        Err(VerifyError::Type { expected: SET_TYPE, found: COMMAND_TYPE.into() })
    );
}

#[test]
fn jwks_round_trips_and_publishes_okp_keys() {
    let keys = fixed_keys();
    let jwks = keys.jwks();
    let text = jwks.to_json();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "kid": RFC_8037_KID, "use": "sig", "alg": "EdDSA",
        }]})
    );
    let parsed = Jwks::from_json(&text).unwrap();
    assert_eq!(parsed, jwks);
    let cmd = command(CommandKind::Quarantine);
    assert_eq!(sign::verify(&keys.sign(&cmd), &parsed), Ok(cmd));
}

#[test]
fn a_key_set_with_a_repeated_kid_is_refused() {
    let key = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"});
    let text = json!({"keys": [key, key]}).to_string();
    assert!(matches!(Jwks::from_json(&text), Err(KeyError::DuplicateKid(kid)) if kid == "k1"));
    assert!(matches!(Jwks::from_json("{\"keys\": 3}"), Err(KeyError::Jwks(_))));
}

#[test]
fn unusable_keys_in_the_set_are_refused() {
    let keys = fixed_keys();
    let jws = keys.sign(&command(CommandKind::Release));
    let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    let cases = [
        json!({"kty": "EC", "crv": "P-256", "x": x, "kid": RFC_8037_KID}),
        json!({"kty": "OKP", "crv": "X25519", "x": x, "kid": RFC_8037_KID}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": RFC_8037_KID, "use": "enc"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": RFC_8037_KID, "alg": "HS256"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": RFC_8037_KID}),
        // The identity point: a small-order key any signature could be forged for.
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode({ let mut b = [0u8; 32]; b[0] = 1; b }), "kid": RFC_8037_KID}),
    ];
    for case in cases {
        let jwks = Jwks::from_json(&json!({"keys": [case]}).to_string()).unwrap();
        assert!(matches!(sign::verify(&jws, &jwks), Err(VerifyError::UnusableKey { .. })), "{case}");
    }
}

#[test]
fn a_rotated_key_ring_still_verifies_commands_signed_before() {
    let old = fixed_keys();
    let before = old.sign(&command(CommandKind::RevokeAgent));
    let mut new = KeyRing::generate();
    new.keep_previous(&old.jwks());
    let jwks = Jwks::from_json(&new.jwks().to_json()).unwrap();
    assert_eq!(jwks.keys.len(), 2);
    assert_eq!(jwks.keys[0].kid.as_deref(), Some(new.kid()));
    assert!(sign::verify(&before, &jwks).is_ok());
    assert!(sign::verify(&new.sign(&command(CommandKind::RevokeAgent)), &jwks).is_ok());
    // Keeping the same set twice adds nothing.
    new.keep_previous(&jwks);
    assert_eq!(new.jwks().keys.len(), 2);
}

#[test]
fn the_signing_key_survives_pkcs8_pem() {
    let keys = KeyRing::generate();
    let pem = keys.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let reloaded = KeyRing::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(reloaded.kid(), keys.kid());
    let cmd = command(CommandKind::StepUp);
    assert_eq!(reloaded.sign(&cmd), keys.sign(&cmd));
    // Written as PKCS#8 v2 (RFC 5958, with the public key), read in either form.
    let written = fixed_keys().to_pkcs8_pem().unwrap();
    assert_eq!(KeyRing::from_pkcs8_pem(&written).unwrap().kid(), RFC_8037_KID);
    assert!(matches!(KeyRing::from_pkcs8_pem("not a key"), Err(KeyError::Pkcs8(_))));
    // The secret never shows in debug output.
    assert_eq!(format!("{:?}", fixed_keys()), format!("KeyRing {{ kid: \"{RFC_8037_KID}\", previous: [] }}"));
}

fn set(kind: CommandKind) -> Value {
    caep::to_set(&command(kind), "https://vigil.acme.example", "https://broker.acme.example").unwrap()
}

#[test]
fn caep_revoke_credentials_is_a_credential_change() {
    assert_eq!(
        set(CommandKind::RevokeCredentials),
        json!({
            "iss": "https://vigil.acme.example",
            "aud": "https://broker.acme.example",
            "jti": "c-revoke_credentials",
            "iat": 1_795_856_585,
            "txn": "d-1042",
            "sub_id": {
                "format": "complex",
                "user": {"format": "uri", "uri": "spiffe://acme.example/agents/billing-bot"},
                "session": {"format": "opaque", "id": "t-77"},
                "tenant": {"format": "opaque", "id": "acme"},
            },
            "events": {
                "https://schemas.openid.net/secevent/caep/event-type/credential-change": {
                    "credential_type": "jit-credential",
                    "change_type": "revoke",
                    "credential_ids": ["cred-9", "cred-10"],
                    "event_timestamp": 1_795_856_585,
                    "initiating_entity": "policy",
                    "reason_admin": {"en": "exfiltration_chain: egress to a new destination after a pii read"},
                }
            },
            "vigil": {"command": "revoke_credentials", "tenant": "acme", "agent_id": "billing-bot"},
        })
    );
}

#[test]
fn caep_revoke_agent_and_quarantine_are_session_revoked() {
    for kind in [CommandKind::RevokeAgent, CommandKind::Quarantine] {
        let claims = set(kind);
        let event = &claims["events"][caep::SESSION_REVOKED];
        assert_eq!(
            event,
            &json!({
                "event_timestamp": 1_795_856_585,
                "initiating_entity": "policy",
                "reason_admin": {"en": "exfiltration_chain: egress to a new destination after a pii read"},
            })
        );
        assert_eq!(claims["events"].as_object().map(|e| e.len()), Some(1));
        assert_eq!(claims["vigil"]["command"], kind.as_str());
        assert_eq!(claims["jti"], format!("c-{}", kind.as_str()));
    }
}

#[test]
fn caep_step_up_is_an_assurance_level_increase() {
    let claims = set(CommandKind::StepUp);
    assert_eq!(
        claims["events"][caep::ASSURANCE_LEVEL_CHANGE],
        json!({
            "namespace": "vigil-agent-approval",
            "current_level": "human-approval",
            "previous_level": "autonomous",
            "change_direction": "increase",
            "event_timestamp": 1_795_856_585,
            "initiating_entity": "policy",
            "reason_admin": {"en": "exfiltration_chain: egress to a new destination after a pii read"},
        })
    );
    assert_eq!(claims["vigil"]["expires_at"], "2026-11-28T09:18:05.500Z");
}

#[test]
fn caep_release_is_a_risc_account_enabled() {
    let claims = set(CommandKind::Release);
    assert_eq!(claims["events"].as_object().map(|e| e.keys().cloned().collect::<Vec<_>>()), Some(vec![caep::ACCOUNT_ENABLED.to_string()]));
    assert_eq!(claims["events"][caep::ACCOUNT_ENABLED]["initiating_entity"], "policy");
}

#[test]
fn caep_subject_without_a_task_is_the_spiffe_uri() {
    let mut cmd = command(CommandKind::Quarantine);
    cmd.task_id = None;
    let claims = caep::to_set(&cmd, "iss", "aud").unwrap();
    assert_eq!(claims["sub_id"], json!({"format": "uri", "uri": "spiffe://acme.example/agents/billing-bot"}));
}

#[test]
fn caep_time_is_the_command_time_not_the_clock() {
    let mut cmd = command(CommandKind::Release);
    cmd.issued_at = "1970-01-01T00:00:01.999Z".into();
    let claims = caep::to_set(&cmd, "iss", "aud").unwrap();
    assert_eq!(claims["iat"], 1);
    assert_eq!(claims["events"][caep::ACCOUNT_ENABLED]["event_timestamp"], 1);
    cmd.issued_at = "yesterday".into();
    let err = caep::to_set(&cmd, "iss", "aud").unwrap_err();
    assert_eq!(err.to_string(), "command `c-release` has `issued_at` `yesterday`, not an RFC 3339 time");
}

#[test]
fn a_signed_set_verifies_with_its_claims() {
    let keys = fixed_keys();
    for kind in KINDS {
        let cmd = command(kind);
        let jws = caep::sign(&keys, &cmd, "https://vigil.acme.example", "https://broker.acme.example").unwrap();
        assert_eq!(header(&jws), json!({"alg": "EdDSA", "kid": RFC_8037_KID, "typ": "secevent+jwt"}));
        assert_eq!(sign::verify_set(&jws, &keys.jwks()), Ok(set(kind)));
    }
}
