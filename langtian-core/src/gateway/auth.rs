//! Who a client is: a JWT (HS256/384/512 with a shared secret, RS*/PS*/ES*/EdDSA with a public
//! key in PEM) whose claims name the subjects it may subscribe to and whether it is an admin.
//!
//! ```
//! use langtian_core::gateway::auth::{Claims, JwtConfig, Verifier, sign_hs256};
//! let cfg = JwtConfig::hs256(b"a-long-random-secret".to_vec());
//! let claims = Claims::new("ana", vec!["xy.md.>".into()], std::time::Duration::from_secs(600));
//! let token = sign_hs256(b"a-long-random-secret", &claims).unwrap();
//! let got = Verifier::new(&cfg).unwrap().verify(&token).unwrap();
//! assert_eq!(got.sub, "ana");
//! assert!(Verifier::new(&cfg).unwrap().verify("not-a-jwt").is_err());
//! ```

use std::time::Duration;

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::acl::check_subject;

/// How tokens are checked.
#[derive(Clone)]
pub struct JwtConfig {
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// The shared secret (HS*) or the public key in PEM (RS*, PS*, ES*, EdDSA).
    pub key: Vec<u8>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl JwtConfig {
    /// HS256 with `secret`, no issuer/audience check, 5 s leeway.
    pub fn hs256(secret: Vec<u8>) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            key: secret,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
        }
    }
}

/// The claims the gateway reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who (logged with every audit line).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Subject patterns the client may subscribe to (NATS wildcards); also KV snapshot keys.
    #[serde(default)]
    pub subs: Vec<String>,
    /// May use `/admin/*`.
    #[serde(default)]
    pub admin: bool,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// Claims for `sub` allowed `subs`, expiring `ttl` from now.
    pub fn new(sub: impl Into<String>, subs: Vec<String>, ttl: Duration) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            sub: sub.into(),
            exp: (now + ttl).as_secs(),
            subs,
            admin: false,
            iss: None,
            aud: None,
        }
    }

    /// Seconds until expiry (0 when past).
    pub fn remaining(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Duration::from_secs(self.exp.saturating_sub(now))
    }
}

/// Why a token was refused (the `reason` label of `ws_auth_failures`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the query (`?token=`), the `Authorization: Bearer` header or the `lt_token` cookie.
    #[error("no token: pass ?token=, an Authorization: Bearer header or the lt_token cookie")]
    Missing,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing claims, wrong issuer or audience, bad patterns.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but not an admin's.
    #[error("this needs an admin token")]
    NotAdmin,
}

impl AuthError {
    /// The `code` of the log line that records this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "auth_missing",
            AuthError::Expired => "auth_expired",
            AuthError::Invalid(_) => "auth_invalid",
            AuthError::NotAdmin => "not_admin",
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid",
            AuthError::NotAdmin => "not_admin",
        }
    }
}

/// Checks tokens against one [`JwtConfig`].
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier; fails when the key does not suit the algorithm.
    pub fn new(cfg: &JwtConfig) -> Result<Self, String> {
        use Algorithm::*;
        let key = match cfg.algorithm {
            HS256 | HS384 | HS512 => {
                if cfg.key.len() < 16 {
                    return Err("an HS* secret must be at least 16 bytes".into());
                }
                DecodingKey::from_secret(&cfg.key)
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                DecodingKey::from_rsa_pem(&cfg.key).map_err(|e| format!("RSA public key (PEM): {e}"))?
            }
            ES256 | ES384 => {
                DecodingKey::from_ec_pem(&cfg.key).map_err(|e| format!("EC public key (PEM): {e}"))?
            }
            EdDSA => {
                DecodingKey::from_ed_pem(&cfg.key).map_err(|e| format!("Ed25519 public key (PEM): {e}"))?
            }
        };
        let mut validation = Validation::new(cfg.algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = cfg.leeway.as_secs();
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        match &cfg.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// Verifies a token and its subject patterns.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            other => AuthError::Invalid(format!("{other:?}")),
        })?;
        for p in &data.claims.subs {
            check_subject(p).map_err(|e| AuthError::Invalid(format!("claim `subs`: {e}")))?;
        }
        Ok(data.claims)
    }
}

/// Signs `claims` with HS256 (used by `lt up` to hand the local UI a token, and by tests).
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn expired_wrong_key_and_bad_patterns_are_refused() {
        let v = Verifier::new(&JwtConfig::hs256(SECRET.to_vec())).unwrap();
        let mut c = Claims::new("u", vec!["xy.>".into()], Duration::from_secs(60));
        assert!(v.verify(&sign_hs256(SECRET, &c).unwrap()).is_ok());
        c.exp = 1_000;
        assert_eq!(
            v.verify(&sign_hs256(SECRET, &c).unwrap()),
            Err(AuthError::Expired)
        );
        let c = Claims::new("u", vec!["xy.>".into()], Duration::from_secs(60));
        assert!(matches!(
            v.verify(&sign_hs256(b"another-secret-of-20b", &c).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        let bad = Claims::new("u", vec!["xy..>".into()], Duration::from_secs(60));
        assert!(
            matches!(v.verify(&sign_hs256(SECRET, &bad).unwrap()), Err(AuthError::Invalid(m)) if m.contains("subs"))
        );
        assert!(Verifier::new(&JwtConfig::hs256(b"short".to_vec())).is_err());
        let mut rs = JwtConfig::hs256(SECRET.to_vec());
        rs.algorithm = Algorithm::RS256;
        assert!(Verifier::new(&rs).unwrap_err().contains("RSA"));
    }
}
