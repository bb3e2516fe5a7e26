//! SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, server side.
//!
//! The broker never holds passwords, only verifiers. An unknown user gets the same exchange
//! (a salt derived from the name and a per-process secret) and the same final error as a wrong
//! password, so the reply does not reveal which user names exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use tidegate_config::ScramVerifier;

/// The mechanism name advertised in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow the protocol (08P01).
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    /// Wrong password or unknown user (28P01).
    #[error("password authentication failed")]
    BadProof,
}

/// One server-side exchange.
pub struct ScramServer {
    verifier: ScramVerifier,
    known_user: bool,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    tidegate_config::hmac_sha256(key, msg)
}

impl ScramServer {
    /// Starts an exchange. `verifier` is `None` for an unknown user; `mock_secret` then seeds a
    /// stable fake salt so repeated probes look like a real user.
    pub fn new(verifier: Option<&ScramVerifier>, user: &str, mock_secret: &[u8]) -> Self {
        let (verifier, known_user) = match verifier {
            Some(v) => (v.clone(), true),
            None => {
                let salt = hmac(mock_secret, user.as_bytes());
                (
                    ScramVerifier {
                        iterations: 4096,
                        salt: salt[..16].to_vec(),
                        stored_key: rand::random(),
                        server_key: rand::random(),
                    },
                    false,
                )
            }
        };
        ScramServer {
            verifier,
            known_user,
            client_first_bare: String::new(),
            server_first: String::new(),
            gs2_header: String::new(),
            nonce: String::new(),
        }
    }

    /// Takes client-first-message, returns server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        // gs2-header: channel-binding flag, optional authzid, then the bare message.
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Protocol("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Protocol("channel binding was not offered"))
            }
            _ => return Err(ScramError::Protocol("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Protocol("no authzid field"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Protocol(
                "authorization identity is not supported",
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Protocol("no nonce"))?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Protocol("invalid nonce"));
        }
        let server_nonce: [u8; 18] = rand::random();
        self.nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        self.gs2_header = format!("{flag},{authzid},");
        self.client_first_bare = bare.to_owned();
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        Ok(self.server_first.clone())
    }

    /// Takes client-final-message, returns server-final-message if the proof holds.
    pub fn client_final(&self, data: &[u8]) -> Result<String, ScramError> {
        self.client_final_keys(data).map(|(m, _)| m)
    }

    /// [`ScramServer::client_final`], also returning the ClientKey the proof revealed (for
    /// logging in to PostgreSQL as the client: `auth_query` pass-through).
    pub fn client_final_keys(&self, data: &[u8]) -> Result<(String, [u8; 32]), ScramError> {
        let msg = std::str::from_utf8(data).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Protocol("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let binding = binding.ok_or(ScramError::Protocol("no channel binding attribute"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Protocol("channel binding mismatch"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Protocol("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Protocol("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Protocol("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Constant-time comparison: the time taken must not reveal how many bytes matched.
        let diff = stored
            .iter()
            .zip(self.verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || !self.known_user {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_sig)), client_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side written from the RFC, to drive the server in unit tests.
    fn client_proof(
        password: &str,
        server_first: &str,
        client_first_bare: &str,
        final_wo: &str,
    ) -> String {
        let mut salt = None;
        let mut iters = 0;
        for a in server_first.split(',') {
            if let Some(s) = a.strip_prefix("s=") {
                salt = Some(B64.decode(s).expect("salt"));
            } else if let Some(i) = a.strip_prefix("i=") {
                iters = i.parse().expect("iterations");
            }
        }
        let v = ScramVerifier::derive(password, &salt.expect("salt"), iters);
        let mut salted = [0u8; 32];
        pbkdf2_fallback(password, &v.salt, iters, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let auth = format!("{client_first_bare},{server_first},{final_wo}");
        let sig = hmac(&v.stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        B64.encode(proof)
    }

    fn pbkdf2_fallback(password: &str, salt: &[u8], iters: u32, out: &mut [u8; 32]) {
        // U1 = HMAC(P, salt || INT(1)), Ui = HMAC(P, Ui-1), result = XOR of all Ui.
        let mut s = salt.to_vec();
        s.extend_from_slice(&1u32.to_be_bytes());
        let mut u = hmac(password.as_bytes(), &s);
        *out = u;
        for _ in 1..iters {
            u = hmac(password.as_bytes(), &u);
            for (o, x) in out.iter_mut().zip(u.iter()) {
                *o ^= x;
            }
        }
    }

    fn exchange(verifier: Option<&ScramVerifier>, password: &str) -> Result<String, ScramError> {
        let mut s = ScramServer::new(verifier, "app", b"secret");
        let sf = s.client_first(b"n,,n=,r=abcdefgh")?;
        let final_wo = format!(
            "c=biws,r={}",
            sf.split(',').next().expect("r").trim_start_matches("r=")
        );
        let proof = client_proof(password, &sf, "n=,r=abcdefgh", &final_wo);
        s.client_final(format!("{final_wo},p={proof}").as_bytes())
    }

    #[test]
    fn right_password_passes_and_wrong_or_unknown_fail_alike() {
        let v = ScramVerifier::derive("app", b"saltsaltsaltsalt", 4096);
        assert!(exchange(Some(&v), "app").expect("ok").starts_with("v="));
        assert_eq!(exchange(Some(&v), "nope"), Err(ScramError::BadProof));
        assert_eq!(exchange(None, "app"), Err(ScramError::BadProof));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let v = ScramVerifier::derive("app", b"saltsaltsaltsalt", 4096);
        let mut s = ScramServer::new(Some(&v), "app", b"k");
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=,r=a",
            b"p=tls-server-end-point,,n=,r=a",
            b"n,,n=",
            b"\xff",
        ] {
            assert!(
                matches!(s.client_first(bad), Err(ScramError::Protocol(_))),
                "{bad:?}"
            );
        }
        s.client_first(b"n,,n=,r=abc").expect("ok");
        for bad in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=zzz,p=AAAA",
            b"c=xx,r=abc,p=AAAA",
        ] {
            assert!(
                matches!(s.client_final(bad), Err(ScramError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
