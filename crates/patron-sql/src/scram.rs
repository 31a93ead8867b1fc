//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash) for the pgwire front end, so
//! a token never crosses the wire, not even once per connection.
//!
//! Patron's rule is "any user name, the password is a token". SCRAM normally
//! looks a salted password up by user name; here the salt and iteration count
//! are the same for every token (chosen at random when the server starts), the
//! stored and server keys of every token are derived once, and the client's
//! proof is checked against each token's stored key. The one that verifies
//! decides what the connection may read.
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof>
//! server-final  v=<server signature>
//! ```

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use crate::admission::Access;

/// PBKDF2 iterations (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

/// One token's derived keys.
struct TokenKeys {
    stored_key: [u8; 32],
    server_key: [u8; 32],
    access: Access,
}

/// The server side of SCRAM-SHA-256 over a fixed set of tokens.
pub(crate) struct ScramVerifier {
    salt: [u8; 16],
    tokens: Vec<TokenKeys>,
    random: ring::rand::SystemRandom,
}

/// A SCRAM exchange that went wrong (the client sees a failed login).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScramError {
    /// A message did not have the expected shape.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding was asked for; it is not offered.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The system random source failed.
    #[error("no random bytes for the SCRAM nonce")]
    Random,
    /// No token verifies the proof (or the nonce was changed).
    #[error("the password is not a token with the query role")]
    Rejected,
}

/// What the server keeps between its first and the client's final message.
pub(crate) struct ServerFirst {
    /// The message to send.
    pub(crate) message: String,
    /// `client-first-bare,server-first`, the first part of the AuthMessage.
    pub(crate) transcript: String,
    /// The combined nonce the client must echo.
    pub(crate) nonce: String,
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

impl ScramVerifier {
    /// Derives the keys of every `(token, access)`.
    pub(crate) fn new(tokens: &[(String, Access)]) -> Result<Self, ScramError> {
        let random = ring::rand::SystemRandom::new();
        let mut salt = [0u8; 16];
        random.fill(&mut salt).map_err(|_| ScramError::Random)?;
        let iterations = NonZeroU32::new(ITERATIONS).ok_or(ScramError::Random)?;
        let tokens = tokens
            .iter()
            .map(|(token, access)| {
                let mut salted = [0u8; 32];
                pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, token.as_bytes(), &mut salted);
                TokenKeys {
                    stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
                    server_key: hmac_sha256(&salted, b"Server Key"),
                    access: *access,
                }
            })
            .collect();
        Ok(Self { salt, tokens, random })
    }

    /// Answers the client's first message.
    pub(crate) fn server_first(&self, client_first: &str) -> Result<ServerFirst, ScramError> {
        let bare = match client_first.as_bytes().first() {
            Some(b'n' | b'y') => client_first.splitn(3, ',').nth(2).ok_or(ScramError::Malformed("no GS2 header"))?,
            Some(b'p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("unknown GS2 flag")),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|part| part.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut server_nonce = [0u8; 18];
        self.random.fill(&mut server_nonce).map_err(|_| ScramError::Random)?;
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let message = format!("r={nonce},s={},i={ITERATIONS}", BASE64.encode(self.salt));
        Ok(ServerFirst { transcript: format!("{bare},{message}"), message, nonce })
    }

    /// Checks the client's final message; on success returns the server's
    /// final message and what the verified token may read.
    pub(crate) fn verify(&self, first: &ServerFirst, client_final: &str) -> Result<(String, Access), ScramError> {
        let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let echoed = without_proof.split(',').find_map(|part| part.strip_prefix("r="));
        if echoed != Some(first.nonce.as_str()) {
            return Err(ScramError::Rejected);
        }
        let proof = BASE64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof is not 32 bytes"));
        }
        let auth_message = format!("{},{without_proof}", first.transcript);
        let verified = self.tokens.iter().find(|keys| {
            let signature = hmac_sha256(&keys.stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
            // Constant time: compare every byte whatever the first difference.
            sha256(&client_key).iter().zip(&keys.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        let keys = verified.ok_or(ScramError::Rejected)?;
        let server_signature = hmac_sha256(&keys.server_key, auth_message.as_bytes());
        Ok((format!("v={}", BASE64.encode(server_signature)), keys.access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client following RFC 5802, to check the server against.
    fn client_final(token: &str, first: &ServerFirst, client_first_bare: &str) -> String {
        let salt = BASE64.decode(first.message.split(',').find_map(|p| p.strip_prefix("s=")).unwrap()).unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(ITERATIONS).unwrap(),
            &salt,
            token.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth = format!("{client_first_bare},{},{without_proof}", first.message);
        let signature = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    #[test]
    fn a_token_logs_in_and_a_wrong_one_does_not() {
        let tokens = vec![
            ("query-token-0123456789".to_owned(), Access::Query),
            ("admin-token-0123456789".to_owned(), Access::Admin),
        ];
        let verifier = ScramVerifier::new(&tokens).unwrap();
        for (token, access) in &tokens {
            let first = verifier.server_first("n,,n=anyone,r=abc123").unwrap();
            let answer = verifier.verify(&first, &client_final(token, &first, "n=anyone,r=abc123")).unwrap();
            assert_eq!(answer.1, *access);
            assert!(answer.0.starts_with("v="));
        }
        let first = verifier.server_first("n,,n=anyone,r=abc123").unwrap();
        let wrong = client_final("not-a-token-at-all-000", &first, "n=anyone,r=abc123");
        assert!(matches!(verifier.verify(&first, &wrong), Err(ScramError::Rejected)));
        assert!(matches!(verifier.server_first("p=tls-server-end-point,,n=x,r=y"), Err(ScramError::ChannelBinding)));
        assert!(matches!(verifier.server_first("n,,n=x"), Err(ScramError::Malformed(_))));
    }
}
