//! Ed25519 keys: parsing (PEM SPKI, raw hex), PEM output, fingerprints, sign and verify.
//!
//! PEM is parsed leniently on purpose: clients send it without the final newline (the shell
//! client's `$(cat public.pem)`), with CRLF, or with JSON-escaped newlines already decoded.
//! Only the DER inside is checked strictly. Keys of other algorithms (RSA, ECDSA) are
//! recognised by their algorithm OID so the caller can say so clearly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 private key (RFC 8410, v1), followed by the 32 seed bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of the OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of the OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither PEM nor 64 hex characters.
    #[error("public key is neither PEM (SPKI) nor 64 hex characters")]
    Unrecognised,
    /// PEM armour present but the body is not valid base64 or the labels are wrong.
    #[error("public key PEM is malformed: {0}")]
    MalformedPem(&'static str),
    /// A well-formed key of an algorithm this provider does not accept.
    #[error("{0} keys are not supported; only Ed25519 is accepted")]
    UnsupportedAlgorithm(&'static str),
    /// The DER is not an Ed25519 SubjectPublicKeyInfo.
    #[error("public key is not an Ed25519 SubjectPublicKeyInfo")]
    NotEd25519,
    /// The 32 bytes are not a valid Ed25519 point.
    #[error("public key bytes are not a valid Ed25519 key")]
    InvalidPoint,
    /// A private key could not be read.
    #[error("private key is not an Ed25519 PKCS#8 key")]
    InvalidPrivateKey,
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature is not standard base64 of 64 bytes.
    #[error("signature is not base64 of 64 bytes")]
    Malformed,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Mismatch,
}

/// An agent's or a provider's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Parses a PEM SPKI key (lenient armour, strict DER) or 64 hex characters.
    ///
    /// Fails with [`KeyError::UnsupportedAlgorithm`] for RSA and ECDSA keys, and with another
    /// [`KeyError`] for anything that is not an Ed25519 key.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        if t.starts_with("-----BEGIN") {
            let der = pem_body(t, "PUBLIC KEY")?;
            return Self::from_spki_der(&der);
        }
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(t, &mut raw).map_err(|_| KeyError::Unrecognised)?;
            return Self::from_bytes(&raw);
        }
        Err(KeyError::Unrecognised)
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        if der.len() == 44 && der[..12] == ED25519_SPKI_PREFIX {
            let mut raw = [0u8; 32];
            raw.copy_from_slice(&der[12..]);
            return Self::from_bytes(&raw);
        }
        let contains = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        if contains(&OID_RSA) {
            Err(KeyError::UnsupportedAlgorithm("RSA"))
        } else if contains(&OID_EC) {
            Err(KeyError::UnsupportedAlgorithm("ECDSA"))
        } else {
            Err(KeyError::NotEd25519)
        }
    }

    /// Builds a key from its raw 32 bytes.
    pub fn from_bytes(raw: &[u8; 32]) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map(Self)
            .map_err(|_| KeyError::InvalidPoint)
    }

    /// The raw 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The DER SubjectPublicKeyInfo (44 bytes).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        der
    }

    /// PEM SPKI, `-----BEGIN PUBLIC KEY-----` … with a final newline.
    pub fn to_pem(&self) -> String {
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(self.to_spki_der())
        )
    }

    /// `SHA256:` + base64(SHA-256(raw 32-byte key)), the form of COMPAT.md and spec 09.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", B64.encode(Sha256::digest(self.0.as_bytes())))
    }

    /// Verifies a raw 64-byte signature over `msg` (RFC 8032, strict: rejects small-order keys
    /// and non-canonical signatures).
    pub fn verify_raw(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), SignatureError> {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Verifies a standard-base64 signature over `msg`.
    pub fn verify_b64(&self, msg: &[u8], sig_b64: &str) -> Result<(), SignatureError> {
        self.verify_raw(msg, &decode_signature(sig_b64)?)
    }

    /// The wrapped `ed25519-dalek` key (for benchmarks against the raw library).
    pub fn as_dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.0
    }

    /// Verifies without the strictness checks; only for comparisons in benchmarks.
    #[doc(hidden)]
    pub fn verify_lenient(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.0
            .verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }
}

/// Decodes a standard base64 (padded, or unpadded) 64-byte signature.
pub fn decode_signature(sig_b64: &str) -> Result<[u8; 64], SignatureError> {
    let mut buf = [0u8; 66];
    let s = sig_b64.trim();
    if s.len() > 88 {
        return Err(SignatureError::Malformed);
    }
    let n = B64
        .decode_slice(s, &mut buf)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode_slice(s, &mut buf))
        .map_err(|_| SignatureError::Malformed)?;
    if n != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&buf[..64]);
    Ok(sig)
}

/// An Ed25519 private key: a provider's own key, or an agent's key in clients and tests.
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, redacted)", self.public().fingerprint())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Reads an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey
    /// -algorithm Ed25519` writes it).
    pub fn from_pkcs8_pem(text: &str) -> Result<Self, KeyError> {
        let der = pem_body(text.trim(), "PRIVATE KEY").map_err(|_| KeyError::InvalidPrivateKey)?;
        if der.len() != 48 || der[..16] != ED25519_PKCS8_PREFIX {
            return Err(KeyError::InvalidPrivateKey);
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&der[16..]);
        Ok(Self::from_seed(&seed))
    }

    /// PKCS#8 PEM, readable by `openssl pkey`.
    pub fn to_pkcs8_pem(&self) -> String {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&self.0.to_bytes());
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der)
        )
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `msg`, returning the raw 64-byte signature.
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// Signs `msg`, returning standard padded base64 (88 characters).
    pub fn sign_b64(&self, msg: &[u8]) -> String {
        B64.encode(self.sign_raw(msg))
    }
}

/// Extracts and decodes the base64 body of a PEM block with the given label.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or(KeyError::MalformedPem("wrong PEM label"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or(KeyError::MalformedPem("missing END line"))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    // Some senders double-escape newlines inside JSON strings ("\\n"): tolerate literal "\n".
    let body = body.replace("\\n", "").replace("\\r", "");
    if body.len() > 8192 {
        return Err(KeyError::MalformedPem("PEM body too long"));
    }
    B64.decode(body.as_bytes())
        .map_err(|_| KeyError::MalformedPem("PEM body is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl genpkey -algorithm Ed25519` and `openssl pkey -pubout`.
    const OPENSSL_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFiStS2tzfZ72xPoMR4cV373oBm0RP4ur9pQuAt4aTZl
-----END PRIVATE KEY-----
";
    const OPENSSL_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAmAItKaXN20Kj26LBlSVBfHIJVN0NtIhey/RkVhNgL6g=
-----END PUBLIC KEY-----";
    // `openssl genrsa 2048 | openssl rsa -pubout` and `openssl ecparam -name prime256v1 -genkey | openssl ec -pubout`.
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAka7G8ntQG+zFpLcygQSB
ER4c50N+idQR/Xs7R+W3gRGO2NxbXVnWMB2kTJc9XGWAFWpbT/U14FKLMWadPZtp
6LWp03Euh0BlUsrzmeQlhsYa9Q5BAiszdHLXh/EXxcOuPuF2IGphUqZs2u/rNurq
7hnDrD6kGSTiS7FqfkB1ZGQCWS8zjZpCIvofmXdWvmvldBvy6mPzAeLsgzqB7iWN
sYjm5wbu9G+U6H2U1k7rnDfx6IOU8zTKGjuQq8vPD1T3RknhISilMADJJoJMlK0l
tIHLHFi5+/h3l6X4WpgbqCZDinthUXZRj5dGhPm2ojBpUnOTirJCfCom6kIoHkRM
1QIDAQAB
-----END PUBLIC KEY-----";
    const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnlu4O9SG5fvo/EWxmoTpAe3ZvHEy
GYgP639U2WkHP0UxXxsvlc6P87a6/gppKVI5czLkJLG2hOf5uTjdo79wdA==
-----END PUBLIC KEY-----";

    #[test]
    fn openssl_keys_round_trip() {
        let sk = SecretKey::from_pkcs8_pem(OPENSSL_PRIV).expect("private key");
        let pk = PublicKey::parse(OPENSSL_PUB).expect("public key");
        assert_eq!(sk.public(), pk);
        assert_eq!(sk.to_pkcs8_pem(), OPENSSL_PRIV);
        assert_eq!(pk.to_pem().trim_end(), OPENSSL_PUB);
        let sig = sk.sign_b64(b"hello");
        assert_eq!(sig.len(), 88);
        pk.verify_b64(b"hello", &sig).expect("verifies");
        assert_eq!(pk.verify_b64(b"hellO", &sig), Err(SignatureError::Mismatch));
    }

    #[test]
    fn lenient_armour_strict_der() {
        let crlf = OPENSSL_PUB.replace('\n', "\r\n");
        let escaped = OPENSSL_PUB.replace('\n', "\\n");
        let pk = PublicKey::parse(OPENSSL_PUB).expect("pem");
        for form in [
            crlf.as_str(),
            escaped.as_str(),
            &format!("  {OPENSSL_PUB}\n\n"),
        ] {
            assert_eq!(PublicKey::parse(form).expect("lenient"), pk);
        }
        let hex_form = hex::encode(pk.to_bytes());
        assert_eq!(PublicKey::parse(&hex_form).expect("hex"), pk);
        assert_eq!(PublicKey::parse(&hex_form.to_uppercase()).expect("HEX"), pk);
        assert_eq!(PublicKey::parse("abc"), Err(KeyError::Unrecognised));
        assert!(matches!(
            PublicKey::parse("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----"),
            Err(KeyError::MalformedPem(_))
        ));
    }

    #[test]
    fn other_algorithms_named_in_the_error() {
        assert_eq!(
            PublicKey::parse(RSA_PUB),
            Err(KeyError::UnsupportedAlgorithm("RSA"))
        );
        assert_eq!(
            PublicKey::parse(EC_PUB),
            Err(KeyError::UnsupportedAlgorithm("ECDSA"))
        );
    }

    #[test]
    fn fingerprint_is_sha256_of_raw_key() {
        let pk = PublicKey::parse(OPENSSL_PUB).expect("pem");
        let expected = format!("SHA256:{}", B64.encode(Sha256::digest(pk.to_bytes())));
        assert_eq!(pk.fingerprint(), expected);
        assert!(pk.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn malformed_signatures() {
        let pk = SecretKey::generate().public();
        assert_eq!(
            pk.verify_b64(b"x", "not base64!"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            pk.verify_b64(b"x", &B64.encode([0u8; 63])),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            pk.verify_b64(b"x", &"A".repeat(200)),
            Err(SignatureError::Malformed)
        );
    }
}
