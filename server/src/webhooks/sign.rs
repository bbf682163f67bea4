//! Signatures as the Standard Webhooks specification defines them
//! (<https://www.standardwebhooks.com>), so receivers can verify with its
//! libraries: headers `webhook-id` (the idempotency key),
//! `webhook-timestamp` (seconds since the epoch, of this attempt: a
//! receiver rejects old ones, which defeats replays) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

use super::WebhookConfigError;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const STANDARD_PREFIX: &str = "whsec_";

/// The signing key of `--webhook-secret`: a Standard Webhooks secret
/// (`whsec_` and base64) is decoded, anything else is used as its bytes.
pub fn key(secret: &str) -> Result<Vec<u8>, WebhookConfigError> {
    match secret.strip_prefix(STANDARD_PREFIX) {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| WebhookConfigError::BadSecret(e.to_string())),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header's value.
pub fn signature(key: &[u8], id: &str, timestamp_secs: i64, body: &str) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64 secret");
        let signature = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_without_the_prefix_is_used_as_its_bytes() {
        assert_eq!(key("plain secret").expect("any text"), b"plain secret");
        assert!(matches!(
            key("whsec_not base64!"),
            Err(WebhookConfigError::BadSecret(_))
        ));
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let key = b"k";
        let base = signature(key, "evt_1", 100, "{}");
        assert_ne!(base, signature(key, "evt_2", 100, "{}"));
        assert_ne!(base, signature(key, "evt_1", 101, "{}"));
        assert_ne!(base, signature(key, "evt_1", 100, "{ }"));
        assert_ne!(base, signature(b"other", "evt_1", 100, "{}"));
    }
}
