//! TuxSuite's callbacks: a job's state pushed to
//! `/api/fetchjob/<group>/<project>/<version>/<environment>/<backend>`.
//!
//! The header `x-tux-payload-signature` is the URL-safe base64 of an
//! ECDSA P-256/SHA-256 signature (DER, as Python's `cryptography` makes
//! it) that the project's `TUXSUITE_PUBLIC_KEY` setting (an OpenSSH
//! `ecdsa-sha2-nistp256` public key) must verify. Two generations of the
//! protocol are accepted:
//!
//! * SQUAD 1.98: the body is the JSON document `{"kind": …, "status": …}`
//!   and the signature covers the raw body;
//! * SQUAD ≤ 1.89: the body is a JSON *string* whose content is that
//!   document, and the signature covers the string's content.
//!
//! Either way the signed bytes determine the whole payload.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use serde_json::Value;

use super::{JobId, JobKind};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tux-payload-signature";

/// The project setting holding TuxSuite's public key.
pub const PUBLIC_KEY_SETTING: &str = "TUXSUITE_PUBLIC_KEY";

/// URL-safe base64, padded or not (Python's `urlsafe_b64decode` is given
/// both in practice).
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses an OpenSSH public key line (`ecdsa-sha2-nistp256 AAAA… [comment]`).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    const KIND: &str = "ecdsa-sha2-nistp256";
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(format!("{PUBLIC_KEY_SETTING} is not an OpenSSH public key"));
    };
    if kind != KIND {
        return Err(format!("{PUBLIC_KEY_SETTING} is a {kind:?} key; TuxSuite signs with {KIND:?}"));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("{PUBLIC_KEY_SETTING} is not an OpenSSH public key: {e}"))?;
    // RFC 5656: string "ecdsa-sha2-nistp256", string "nistp256", string Q.
    let mut rest = blob.as_slice();
    let mut field = || -> Result<&[u8], String> {
        let invalid = || format!("{PUBLIC_KEY_SETTING} is a truncated OpenSSH key");
        let len = rest.get(..4).ok_or_else(invalid)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let value = rest.get(4..4 + len).ok_or_else(invalid)?;
        rest = &rest[4 + len..];
        Ok(value)
    };
    let (name, curve, point) = (field()?, field()?, field()?);
    if name != KIND.as_bytes() || curve != b"nistp256" {
        return Err(format!("{PUBLIC_KEY_SETTING} does not hold a NIST P-256 key"));
    }
    VerifyingKey::from_sec1_bytes(point).map_err(|_| format!("{PUBLIC_KEY_SETTING} holds an invalid P-256 point"))
}

/// Checks that `body` was signed by `public_key` (the project's setting).
/// The errors are SQUAD's messages where it has one.
pub fn verify(signature: Option<&str>, public_key: Option<&str>, body: &[u8]) -> Result<(), String> {
    let signature = signature.ok_or("tuxsuite request is missing signature headers")?;
    let public_key = public_key.ok_or("missing tuxsuite public key for this project")?;
    let key = parse_public_key(public_key)?;
    // urlsafe_b64decode also takes the standard alphabet's `+` and `/`.
    let normalized: String = signature
        .trim()
        .chars()
        .map(|c| {
            if c == '+' {
                '-'
            } else if c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let bytes = BASE64URL.decode(normalized).map_err(|e| format!("the signature is not base64url: {e}"))?;
    let signature = match DerSignature::from_bytes(&bytes) {
        Ok(der) => Signature::from_der(der.as_bytes()).ok(),
        Err(_) => Signature::from_slice(&bytes).ok(),
    }
    .ok_or("the signature is not an ECDSA P-256 signature")?;
    if key.verify(body, &signature).is_ok() {
        return Ok(());
    }
    if let Ok(Value::String(content)) = serde_json::from_slice::<Value>(body) {
        if key.verify(content.as_bytes(), &signature).is_ok() {
            return Ok(());
        }
    }
    Err("Failed to verify signature against payload".into())
}

/// What a verified callback says.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The job it is about.
    pub job_id: JobId,
    /// The environment it names (`status.target_arch`, else
    /// `status.device`), if any.
    pub environment: Option<String>,
    /// The job's state (`status`) as JSON text, stored for the fetch.
    pub input: String,
}

/// Reads a callback's body: a JSON document, or a JSON string holding one,
/// with `kind` and `status`.
pub fn parse_payload(body: &[u8]) -> Result<Payload, String> {
    let invalid_json = |e: serde_json::Error| format!("payload failed to parse as json: {e}");
    let mut payload: Value = serde_json::from_slice(body).map_err(invalid_json)?;
    if let Value::String(content) = &payload {
        payload = serde_json::from_str(content).map_err(invalid_json)?;
    }
    let (Some(kind), Some(status)) = (payload.get("kind"), payload.get("status")) else {
        return Err("`kind` and `status` are required in the payload".into());
    };
    let kind = kind.as_str().and_then(JobKind::parse).ok_or_else(|| format!("unknown kind {kind}"))?;
    let Value::Object(fields) = status else {
        return Err("`status` must be an object".into());
    };
    let text = |key: &str| match fields.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let project = text("project").ok_or("`status.project` is required")?;
    let uid = text("uid").ok_or("`status.uid` is required")?;
    let job_id = JobId::parse(&format!("{}:{}#{uid}", kind.as_str(), project.replace('/', "@")))?;
    let environment = ["target_arch", "device"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string));
    Ok(Payload { job_id, environment, input: status.to_string() })
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    use super::*;

    /// SQUAD's test key pair (`ssh-keygen -t ecdsa -b 256 -m PEM`).
    const SQUAD_PRIVATE_PEM_BODY: &str = "MHcCAQEEIDSs6JYNlBeOFfifuEt08LhaSpYWj1GgylYo3zZHPamJoAoGCCqGSM49\
        AwEHoUQDQgAE77r6UW93IGYjGfPU9OWPqucHpXZrRU5PcH+pZrOElj0h+nkA6hMW\
        VPGqPoiohMdneJVO/rXWuwQLxUNgKAeHJQ==";
    const SQUAD_PUBLIC_KEY: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBO+6+lFvdyBmIxnz1PTlj6rnB6V2a0VOT3B/qWazhJY9Ifp5AOoTFlTxqj6IqITHZ3iVTv611rsEC8VDYCgHhyU=";

    fn squad_signing_key() -> SigningKey {
        let der = base64::engine::general_purpose::STANDARD.decode(SQUAD_PRIVATE_PEM_BODY.replace(' ', "")).unwrap();
        // SEC1 ECPrivateKey: SEQUENCE { INTEGER 1, OCTET STRING (32) … }.
        SigningKey::from_slice(&der[7..39]).unwrap()
    }

    fn sign(key: &SigningKey, content: &[u8]) -> String {
        let signature: Signature = key.sign(content);
        BASE64URL.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn squads_public_key_is_the_pair_of_its_private_key() {
        let key = parse_public_key(SQUAD_PUBLIC_KEY).unwrap();
        assert_eq!(&key, squad_signing_key().verifying_key());
        assert!(parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
            .unwrap_err()
            .contains("ssh-ed25519"));
        assert!(parse_public_key("ecdsa-sha2-nistp256 AAAA").is_err());
        assert!(parse_public_key("nonsense").is_err());
    }

    #[test]
    fn signatures_as_squad_checks_them() {
        let key = squad_signing_key();
        let body = br#"{"signed": "content"}"#;
        let good = sign(&key, body);
        assert_eq!(verify(Some(&good), Some(SQUAD_PUBLIC_KEY), body), Ok(()));
        assert_eq!(verify(Some(good.trim_end_matches('=')), Some(SQUAD_PUBLIC_KEY), body), Ok(()), "padding optional");
        assert_eq!(
            verify(None, Some(SQUAD_PUBLIC_KEY), body).unwrap_err(),
            "tuxsuite request is missing signature headers"
        );
        assert_eq!(verify(Some(&good), None, body).unwrap_err(), "missing tuxsuite public key for this project");
        assert_eq!(
            verify(Some(&good), Some(SQUAD_PUBLIC_KEY), br#"{"signed": "contents"}"#).unwrap_err(),
            "Failed to verify signature against payload"
        );
        let squads_bad =
            "does-not-work_6bUINPk62PaJb73C3bfKVvntgpr2Ii2TzQAiEA2D5-jKuh4xa4TkVhIA0UzvKERKKflpFjBH3hlsWivzI=";
        assert!(verify(Some(squads_bad), Some(SQUAD_PUBLIC_KEY), body).is_err());
        // SQUAD ≤ 1.89: a JSON string body, signed over its content.
        let old_body = br#""{\"signed\": \"content\"}""#;
        assert_eq!(verify(Some(&good), Some(SQUAD_PUBLIC_KEY), old_body), Ok(()));
        // A raw (r ‖ s) signature is taken too.
        let raw: Signature = key.sign(body);
        assert_eq!(verify(Some(&BASE64URL.encode(raw.to_bytes())), Some(SQUAD_PUBLIC_KEY), body), Ok(()));
    }

    #[test]
    fn payloads_name_their_job_and_environment() {
        let payload = br#"{"kind": "test", "status": {"project": "tuxgroup/tuxproject", "uid": "123", "device": "qemu-armv7", "state": "finished"}}"#;
        let parsed = parse_payload(payload).unwrap();
        assert_eq!(parsed.job_id.to_string(), "TEST:tuxgroup@tuxproject#123");
        assert_eq!(parsed.environment.as_deref(), Some("qemu-armv7"));
        assert_eq!(
            serde_json::from_str::<Value>(&parsed.input).unwrap(),
            serde_json::json!({"project": "tuxgroup/tuxproject", "uid": "123", "device": "qemu-armv7", "state": "finished"})
        );
        let wrapped = serde_json::to_vec(&String::from_utf8(payload.to_vec()).unwrap()).unwrap();
        assert_eq!(parse_payload(&wrapped).unwrap(), parsed);
        let build =
            br#"{"kind": "build", "status": {"project": "a/b", "uid": "9", "target_arch": "arm64", "device": "x"}}"#;
        let build = parse_payload(build).unwrap();
        assert_eq!((build.job_id.to_string().as_str(), build.environment.as_deref()), ("BUILD:a@b#9", Some("arm64")));
        let none =
            parse_payload(br#"{"kind": "oebuild", "status": {"project": "a/b", "uid": "9", "target_arch": ""}}"#);
        assert_eq!(none.unwrap().environment, None);
        for (bad, message) in [
            (&b"{}"[..], "`kind` and `status` are required"),
            (b"{\"kind\": \"test\"", "payload failed to parse as json"),
            (b"\"{nope\"", "payload failed to parse as json"),
            (br#"{"kind": "plan", "status": {}}"#, "unknown kind"),
            (br#"{"kind": "test", "status": []}"#, "must be an object"),
            (br#"{"kind": "test", "status": {"uid": "1"}}"#, "status.project"),
            (br#"{"kind": "test", "status": {"project": "a/b"}}"#, "status.uid"),
            (br#"{"kind": "test", "status": {"project": "A/b", "uid": "1"}}"#, "does not match"),
        ] {
            let error = parse_payload(bad).unwrap_err();
            assert!(error.contains(message), "{}: {error}", String::from_utf8_lossy(bad));
        }
    }
}
