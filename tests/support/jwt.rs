//! Operator mode without `nsc`: an operator, its accounts and their users as real NATS JWTs
//! (v2 claims, `ed25519-nkey` signatures made with the `nkeys` crate), the `.creds` files clients
//! read, and the server configuration that trusts the operator with a memory resolver.
//!
//! The claim layout follows the nats-io/jwt v2 format the server decodes: `{header}.{claims}.{sig}`,
//! each part base64url without padding, the signature over the first two parts by the issuer's key
//! (operator for accounts, account for users), `nats.type` and `nats.version: 2` naming the kind.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{json, Value};
use sha2::{Digest, Sha512_256};

/// The JOSE header of every NATS v2 JWT.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// "No limit" in NATS JWT limits.
const NO_LIMIT: i64 = -1;

/// Signs `claims` (which carry `sub`, `name` and `nats`) as `issuer`: sets `iss`, `iat` and a
/// `jti` that hashes the rest (as nsc does, so two different claims never share an id).
fn encode(mut claims: Value, issuer: &KeyPair) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] = json!(now);
    let id = Sha512_256::digest(claims.to_string().as_bytes());
    claims["jti"] = json!(BASE32_NOPAD.encode(&id));
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(HEADER.as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("nkey signs");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// The claims of a JWT, after checking its header and that its `iss` signed it (what the server
/// checks before it trusts one).
pub fn decode(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
    let header: Value = serde_json::from_slice(
        &BASE64URL_NOPAD
            .decode(parts[0].as_bytes())
            .expect("base64url"),
    )
    .expect("header JSON");
    assert_eq!(header, serde_json::from_str::<Value>(HEADER).expect("JSON"));
    let claims: Value = serde_json::from_slice(
        &BASE64URL_NOPAD
            .decode(parts[1].as_bytes())
            .expect("base64url"),
    )
    .expect("claims JSON");
    let signature = BASE64URL_NOPAD
        .decode(parts[2].as_bytes())
        .expect("base64url");
    let issuer = KeyPair::from_public_key(claims["iss"].as_str().expect("iss")).expect("iss key");
    issuer
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("signed by its issuer");
    claims
}

/// What a user may do: the JWT form of a server config's `permissions` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// `publish.allow`.
    pub publish: Vec<String>,
    /// `subscribe.allow`.
    pub subscribe: Vec<String>,
    /// `allow_responses: true`: may reply once to any request it received (`resp`).
    pub responses: bool,
}

impl Permissions {
    /// The `pub`, `sub` and `resp` claims.
    fn claims(&self) -> Value {
        let mut claims = json!({
            "pub": { "allow": self.publish },
            "sub": { "allow": self.subscribe },
        });
        if self.responses {
            // 0 is the server's default expiry (as `allow_responses: true` gives).
            claims["resp"] = json!({ "max": 1, "ttl": 0 });
        }
        claims
    }
}

/// What an account JWT grants besides its users: JetStream, and streams shared between
/// accounts (the JWT form of `exports`/`imports`).
#[derive(Debug, Clone, Default)]
pub struct AccountSpec {
    /// Unlimited JetStream: a JWT enables it by giving storage limits.
    pub jetstream: bool,
    /// Subjects every account may import as streams.
    pub stream_exports: Vec<String>,
    /// Streams imported: (exporting account's public key, subject).
    pub stream_imports: Vec<(String, String)>,
}

/// An account: its keys and its JWT signed by the operator.
pub struct Account {
    /// Account name (`name` of the claims).
    pub name: String,
    key: KeyPair,
    /// The account JWT.
    pub jwt: String,
}

/// A user: its JWT, signed by its account, and its seed.
pub struct User {
    /// User name.
    pub name: String,
    /// The user JWT.
    pub jwt: String,
    /// The user's nkey seed (`SU…`), which signs the server's nonce at connect.
    pub seed: String,
}

/// An operator and the system account it names.
pub struct Operator {
    key: KeyPair,
    /// The operator JWT (self-signed).
    pub jwt: String,
    /// The system account.
    pub system: Account,
}

impl Operator {
    /// A new operator whose system account is `system`.
    pub fn new(name: &str, system: &str, spec: &AccountSpec) -> Operator {
        let key = KeyPair::new_operator();
        let system_key = KeyPair::new_account();
        let claims = json!({
            "sub": key.public_key(),
            "name": name,
            "nats": {
                "system_account": system_key.public_key(),
                "type": "operator",
                "version": 2,
            },
        });
        let jwt = encode(claims, &key);
        let system = account(&key, system_key, system, spec);
        Operator { key, jwt, system }
    }

    /// A new account signed by this operator.
    pub fn account(&self, name: &str, spec: &AccountSpec) -> Account {
        account(&self.key, KeyPair::new_account(), name, spec)
    }

    /// The server configuration that trusts this operator and knows `accounts` (and the system
    /// account) from a memory resolver: what replaces an `accounts {}` block.
    pub fn server_conf(&self, accounts: &[&Account]) -> String {
        let mut conf = format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n",
            self.jwt,
            self.system.public_key()
        );
        for account in std::iter::once(&self.system).chain(accounts.iter().copied()) {
            conf.push_str(&format!("  {}: {}\n", account.public_key(), account.jwt));
        }
        conf.push_str("}\n");
        conf
    }
}

fn account(operator: &KeyPair, key: KeyPair, name: &str, spec: &AccountSpec) -> Account {
    let mut limits = json!({
        "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
        "imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": true,
        "conn": NO_LIMIT, "leaf": NO_LIMIT,
    });
    if spec.jetstream {
        for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[limit] = json!(NO_LIMIT);
        }
    }
    let exports: Vec<Value> = spec
        .stream_exports
        .iter()
        .map(|subject| json!({ "name": subject, "subject": subject, "type": "stream" }))
        .collect();
    let imports: Vec<Value> = spec
        .stream_imports
        .iter()
        .map(|(account, subject)| {
            json!({ "name": subject, "subject": subject, "account": account, "type": "stream" })
        })
        .collect();
    let mut nats = json!({ "limits": limits, "type": "account", "version": 2 });
    if !exports.is_empty() {
        nats["exports"] = json!(exports);
    }
    if !imports.is_empty() {
        nats["imports"] = json!(imports);
    }
    let claims = json!({ "sub": key.public_key(), "name": name, "nats": nats });
    let jwt = encode(claims, operator);
    Account {
        name: name.to_string(),
        key,
        jwt,
    }
}

impl Account {
    /// The account's public key (`A…`): its id in the server.
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A new user of this account; `None` may do anything in it.
    pub fn user(&self, name: &str, permissions: Option<&Permissions>) -> User {
        let key = KeyPair::new_user();
        let mut nats = json!({
            "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
            "type": "user", "version": 2,
        });
        if let Some(permissions) = permissions {
            for (claim, value) in permissions.claims().as_object().expect("object") {
                nats[claim] = value.clone();
            }
        }
        let claims = json!({ "sub": key.public_key(), "name": name, "nats": nats });
        User {
            name: name.to_string(),
            jwt: encode(claims, &self.key),
            seed: key.seed().expect("user seed"),
        }
    }
}

impl User {
    /// The `.creds` file content, in the layout `nsc generate creds` writes.
    pub fn creds(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.jwt, self.seed
        )
    }

    /// Writes [`User::creds`] to `<dir>/<name>.creds` and returns its path.
    pub fn write_creds(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("creds dir");
        let path = dir.join(format!("{}.creds", self.name));
        std::fs::write(&path, self.creds()).expect("creds file");
        path
    }
}
