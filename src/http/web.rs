//! Serve: the web config file of `--web-config-file` (alias `--web.config.file`), in the YAML
//! format Prometheus exporters read, turned into TLS and basic auth for the HTTP listener
//! (`http`). The file is read and checked once at start, so a bad one ends the start with one
//! line; the credentials of each request are checked here. Passwords and hashes are never logged.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_rustls::rustls::{self, pki_types, RootCertStore, ServerConfig};
use yaml_rust2::{Yaml, YamlLoader};

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};

/// Top-level keys of the file this service knows.
const TOP_KEYS: [&str; 2] = ["tls_server_config", "basic_auth_users"];
/// Keys of `tls_server_config` this service knows.
const TLS_KEYS: [&str; 9] = [
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
];
/// Successful verifications remembered (bcrypt costs tens of milliseconds per check on purpose,
/// and a scraper sends the same credentials every few seconds).
const VERIFIED_CACHE: usize = 64;

/// What the web config file asks for: TLS, basic auth, both or neither (an empty file).
#[derive(Clone, Default)]
pub struct WebConfig {
    /// The TLS server configuration, when the file has `tls_server_config`.
    pub tls: Option<Arc<ServerConfig>>,
    /// The users, when the file has `basic_auth_users`.
    pub auth: Option<Arc<BasicAuth>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.as_ref().map(|a| a.users.len()))
            .finish()
    }
}

impl WebConfig {
    /// What it turns on, for the start-up log line (never a name, password or hash).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.tls.is_some() {
            parts.push("TLS".to_string());
        }
        if let Some(auth) = &self.auth {
            let n = auth.users.len();
            parts.push(format!(
                "basic auth ({n} user{})",
                if n == 1 { "" } else { "s" }
            ));
        }
        if parts.is_empty() {
            return "plain HTTP without authentication".into();
        }
        parts.join(" and ")
    }

    /// Reads and checks the file at `path`. The error is one line naming the file and the key.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("web config file {}: cannot read it: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        WebConfig::parse(&text, dir).map_err(|e| format!("web config file {}: {e}", path.display()))
    }

    /// Parses the text of a web config file; relative file names are taken from `dir` (the
    /// file's own folder), as exporters do.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let root = match docs.as_slice() {
            [] => return Ok(WebConfig::default()),
            [Yaml::Null] => return Ok(WebConfig::default()),
            [Yaml::Hash(root)] => root,
            [_] => return Err("expected a mapping of keys at the top".into()),
            _ => return Err("holds more than one YAML document".into()),
        };
        let root = mapping(root, "", &TOP_KEYS, unsupported_top)?;
        let tls = match root.get("tls_server_config") {
            None | Some(Yaml::Null) => None,
            Some(Yaml::Hash(tls)) => Some(Arc::new(tls_config(tls, dir)?)),
            Some(_) => return Err("tls_server_config: expected a mapping".into()),
        };
        let auth = match root.get("basic_auth_users") {
            None | Some(Yaml::Null) => None,
            Some(Yaml::Hash(users)) if users.is_empty() => None,
            Some(Yaml::Hash(users)) => Some(Arc::new(BasicAuth::from_yaml(users)?)),
            Some(_) => {
                return Err("basic_auth_users: expected a mapping of user to bcrypt hash".into())
            }
        };
        Ok(WebConfig { tls, auth })
    }
}

/// Why a top-level key of the exporters' format is refused.
fn unsupported_top(key: &str) -> Option<&'static str> {
    match key {
        "http_server_config" => {
            Some("this listener speaks HTTP/1.1 only and sets no extra headers")
        }
        "rate_limit" => Some("use the listener's connection limit (256) instead"),
        _ => None,
    }
}

/// Why a `tls_server_config` key of the exporters' format is refused.
fn unsupported_tls(key: &str) -> Option<&'static str> {
    match key {
        "cipher_suites" | "curve_preferences" => {
            Some("rustls offers only its own safe suites and groups; remove the key")
        }
        "client_allowed_sans" => Some("not supported; restrict clients with client_ca_file"),
        _ => None,
    }
}

/// The string keys of a mapping, each checked against `known`; `path` names the mapping in
/// errors (`""` at the top).
fn mapping<'a>(
    hash: &'a yaml_rust2::yaml::Hash,
    path: &str,
    known: &[&str],
    unsupported: fn(&str) -> Option<&'static str>,
) -> Result<HashMap<&'a str, &'a Yaml>, String> {
    let mut keys = HashMap::new();
    for (key, value) in hash {
        let Yaml::String(key) = key else {
            return Err(format!("{path}a key is not a string: {key:?}"));
        };
        if let Some(why) = unsupported(key) {
            return Err(format!("{path}{key}: {why}"));
        }
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "{path}{key}: unknown key (known: {})",
                known.join(", ")
            ));
        }
        keys.insert(key.as_str(), value);
    }
    Ok(keys)
}

/// A string value, if present.
fn string<'a>(keys: &HashMap<&str, &'a Yaml>, key: &str) -> Result<Option<&'a str>, String> {
    match keys.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(s)) if s.is_empty() => Ok(None),
        Some(Yaml::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("tls_server_config.{key}: expected a string")),
    }
}

/// PEM text from an inline key or a file key (exactly one may be given).
fn pem(
    keys: &HashMap<&str, &Yaml>,
    inline: &str,
    file: &str,
    dir: &Path,
) -> Result<Option<(Vec<u8>, String)>, String> {
    match (string(keys, inline)?, string(keys, file)?) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: give {inline} or {file}, not both"
        )),
        (Some(text), None) => Ok(Some((text.as_bytes().to_vec(), inline.to_string()))),
        (None, Some(name)) => {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "tls_server_config.{file}: cannot read {}: {e}",
                    path.display()
                )
            })?;
            Ok(Some((bytes, format!("{file} {}", path.display()))))
        }
        (None, None) => Ok(None),
    }
}

/// A TLS version name as exporters spell it; `None` for the versions rustls never speaks.
fn version(
    name: &str,
    key: &str,
) -> Result<Option<&'static rustls::SupportedProtocolVersion>, String> {
    match name {
        "TLS10" | "TLS11" => Ok(None),
        "TLS12" => Ok(Some(&rustls::version::TLS12)),
        "TLS13" => Ok(Some(&rustls::version::TLS13)),
        other => Err(format!(
            "tls_server_config.{key}: unknown version {other:?} (TLS12 or TLS13)"
        )),
    }
}

/// The rustls server configuration `tls_server_config` describes.
fn tls_config(tls: &yaml_rust2::yaml::Hash, dir: &Path) -> Result<ServerConfig, String> {
    let keys = mapping(tls, "tls_server_config.", &TLS_KEYS, unsupported_tls)?;
    let (cert_pem, cert_from) = pem(&keys, "cert", "cert_file", dir)?
        .ok_or("tls_server_config: cert_file (or cert) is required")?;
    let (key_pem, key_from) = pem(&keys, "key", "key_file", dir)?
        .ok_or("tls_server_config: key_file (or key) is required")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config: {cert_from}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config: {cert_from}: holds no PEM certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config: {key_from}: no PEM private key: {e}"))?;

    // Versions: rustls speaks TLS 1.2 and 1.3, so a minimum below 1.2 is met by 1.2.
    let min = match string(&keys, "min_version")? {
        Some(name) => version(name, "min_version")?,
        None => None,
    };
    let max = match string(&keys, "max_version")? {
        Some(name) => Some(version(name, "max_version")?.ok_or(
            "tls_server_config.max_version: below TLS12, which is the least this listener speaks",
        )?),
        None => None,
    };
    let mut versions = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    if min == Some(&rustls::version::TLS13) {
        versions.retain(|v| v.version == rustls::ProtocolVersion::TLSv1_3);
    }
    if max == Some(&rustls::version::TLS12) {
        versions.retain(|v| v.version == rustls::ProtocolVersion::TLSv1_2);
    }
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth_type = string(&keys, "client_auth_type")?.unwrap_or("NoClientCert");
    let ca = string(&keys, "client_ca_file")?;
    let required = match auth_type {
        "NoClientCert" => None,
        "VerifyClientCertIfGiven" => Some(false),
        "RequireAndVerifyClientCert" => Some(true),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type: {auth_type} accepts certificates nobody \
                 verified; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with \
                 client_ca_file"
            ))
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: unknown value {other:?} (NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    };
    let builder = match (required, ca) {
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => {
            return Err(
                "tls_server_config: client_ca_file is set but client_auth_type is \
                        NoClientCert (set it to RequireAndVerifyClientCert)"
                    .into(),
            )
        }
        (Some(_), None) => {
            return Err(format!(
                "tls_server_config: client_auth_type {auth_type} needs client_ca_file"
            ))
        }
        (Some(required), Some(ca)) => {
            let path = dir.join(ca);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "tls_server_config.client_ca_file: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                let cert = cert.map_err(|e| {
                    format!(
                        "tls_server_config.client_ca_file {}: not PEM: {e}",
                        path.display()
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", path.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls_server_config.client_ca_file {}: holds no PEM certificate",
                    path.display()
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: {cert_from} and {key_from}: {e}"))?;
    config.ignore_client_order = match keys.get("prefer_server_cipher_suites") {
        None | Some(Yaml::Null) => false,
        Some(Yaml::Boolean(b)) => *b,
        Some(_) => {
            return Err(
                "tls_server_config.prefer_server_cipher_suites: expected true or false".into(),
            )
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The users of `basic_auth_users` and their bcrypt hashes.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// A hash an unknown user's password is checked against, so that an unknown user takes as
    /// long to refuse as a wrong password.
    decoy: String,
    /// Digests of credentials that verified (never the credentials themselves).
    verified: Mutex<HashSet<[u8; 32]>>,
    /// bcrypt runs one at a time off the async workers: a flood of wrong passwords costs one core
    /// at most and never the engine's.
    verifying: Semaphore,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn from_yaml(users: &yaml_rust2::yaml::Hash) -> Result<BasicAuth, String> {
        let mut map = HashMap::new();
        for (user, hash) in users {
            let user = match user {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                _ => return Err("basic_auth_users: a user name is not a string".into()),
            };
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users: user {user:?}: a name with ':' cannot be sent in basic auth"
                ));
            }
            let Yaml::String(hash) = hash else {
                return Err(format!(
                    "basic_auth_users: user {user:?}: expected a bcrypt hash string"
                ));
            };
            BasicAuth::check_hash(hash)
                .map_err(|why| format!("basic_auth_users: user {user:?}: {why}"))?;
            map.insert(user, hash.clone());
        }
        BasicAuth::new(map)
    }

    /// Whether `hash` is a bcrypt hash (without saying anything of it).
    fn check_hash(hash: &str) -> Result<(), &'static str> {
        let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
            "not a bcrypt hash (expected $2y$, $2b$ or $2a$, cost and 53 characters)"
        })?;
        if !(4..=31).contains(&parts.get_cost()) {
            return Err("bcrypt cost outside 4..31");
        }
        Ok(())
    }

    /// Users and their bcrypt hashes (each already checked).
    fn new(users: HashMap<String, String>) -> Result<BasicAuth, String> {
        let decoy = users
            .values()
            .next()
            .cloned()
            .ok_or("basic_auth_users: no user")?;
        Ok(BasicAuth {
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
            verifying: Semaphore::new(1),
        })
    }

    /// Whether the value of an `Authorization` header (if any) names a user with its password.
    pub async fn allows(&self, authorization: Option<&str>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let digest: [u8; 32] = {
            let mut d = Sha256::new();
            for part in [user.as_bytes(), password.as_bytes(), hash.as_bytes()] {
                d.update((part.len() as u64).to_be_bytes());
                d.update(part);
            }
            d.finalize().into()
        };
        if known && self.verified_before(&digest) {
            return true;
        }
        let Ok(_turn) = self.verifying.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map(|r| r.unwrap_or(false))
            .unwrap_or(false);
        if ok && known {
            if let Ok(mut verified) = self.verified.lock() {
                if verified.len() >= VERIFIED_CACHE {
                    verified.clear();
                }
                verified.insert(digest);
            }
        }
        ok && known
    }

    fn verified_before(&self, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .map(|v| v.contains(digest))
            .unwrap_or(false)
    }
}

/// User and password of an `Authorization: Basic …` header value.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn header(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    /// A bcrypt hash in the `$2y$` spelling htpasswd writes (cost 4 keeps the test quick).
    fn hash(password: &str) -> String {
        bcrypt::hash_with_result(password, 4)
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY)
    }

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/nonexistent"))
    }

    #[test]
    fn an_empty_file_turns_nothing_on() {
        for text in ["", "# nothing\n", "---\n", "basic_auth_users: {}\n"] {
            let config = parse(text).expect(text);
            assert!(config.tls.is_none() && config.auth.is_none(), "{text:?}");
        }
    }

    #[tokio::test]
    async fn basic_auth_takes_the_right_password_only() {
        let text = format!(
            "basic_auth_users:\n  prometheus: {}\n  other: '{}'\n",
            hash("s3cret:with colon"),
            hash("x")
        );
        let config = parse(&text).expect("parses");
        let auth = config.auth.clone().expect("auth");
        assert!(config.tls.is_none());
        let good = header("prometheus", "s3cret:with colon");
        assert!(auth.allows(Some(&good)).await);
        assert!(auth.allows(Some(&good)).await, "again, from the cache");
        assert!(auth.allows(Some(&good.replacen("Basic", "basic", 1))).await);
        for bad in [
            header("prometheus", "s3cret"),
            header("prometheus", "x"),
            header("other", "s3cret:with colon"),
            header("nobody", "s3cret:with colon"),
            header("", ""),
            "Bearer abc".to_string(),
            "Basic !!!not base64".to_string(),
            "Basic".to_string(),
        ] {
            assert!(!auth.allows(Some(&bad)).await, "{bad}");
        }
        assert!(!auth.allows(None).await);
        assert!(auth.allows(Some(&header("other", "x"))).await);
        assert!(!format!("{config:?}").contains("$2y$"));
    }

    #[test]
    fn a_bad_file_is_refused_with_the_key_and_never_the_hash() {
        let cases = [
            ("tls_server_config: [\n", "not YAML"),
            ("- a\n- b\n", "mapping of keys at the top"),
            ("basic_auth_user:\n  a: b\n", "basic_auth_user: unknown key"),
            ("rate_limit:\n  burst: 1\n", "rate_limit:"),
            ("http_server_config:\n  http2: false\n", "HTTP/1.1 only"),
            (
                "basic_auth_users: [a]\n",
                "basic_auth_users: expected a mapping",
            ),
            (
                "basic_auth_users:\n  u: plain-password\n",
                "user \"u\": not a bcrypt hash",
            ),
            (
                "basic_auth_users:\n  u: 12\n",
                "expected a bcrypt hash string",
            ),
            (
                "tls_server_config:\n  key_file: k.pem\n",
                "cert_file (or cert) is required",
            ),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
                "cannot read /nonexistent/c.pem",
            ),
            (
                "tls_server_config:\n  cert: x\n  cert_file: c.pem\n",
                "not both",
            ),
            (
                "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites: rustls",
            ),
            (
                "tls_server_config:\n  cert_fil: c.pem\n",
                "cert_fil: unknown key",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
        let secret = "$2y$10$this-is-no-real-hash-but-could-be-one-so-keep-it-quiet";
        let error = parse(&format!("basic_auth_users:\n  u: '{secret}'\n")).expect_err("bad");
        assert!(!error.contains("this-is-no-real"), "{error}");
        let error = WebConfig::load(Path::new("/nonexistent/web.yml")).expect_err("missing");
        assert!(
            error.starts_with("web config file /nonexistent/web.yml: cannot read"),
            "{error}"
        );
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn tls_server_config_with_files_next_to_it_and_client_certificates() {
        let dir = std::env::temp_dir().join(format!("insights-web-{}", nuid::next()));
        std::fs::create_dir_all(&dir).expect("dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ],
        );
        let base = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        let config = WebConfig::parse(base, &dir).expect("TLS");
        let tls = config.tls.expect("tls on");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(config.auth.is_none());

        let path = dir.join("web.yml");
        let mutual = format!(
            "{base}  client_ca_file: cert.pem\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\n"
        );
        std::fs::write(&path, &mutual).expect("write");
        assert!(WebConfig::load(&path).expect("mutual TLS").tls.is_some());

        let inline = format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}",
            indent(&std::fs::read_to_string(dir.join("cert.pem")).expect("cert")),
            indent(&std::fs::read_to_string(dir.join("key.pem")).expect("key")),
        );
        assert!(WebConfig::parse(&inline, &dir)
            .expect("inline")
            .tls
            .is_some());

        for (extra, expected) in [
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "  client_ca_file: cert.pem\n",
                "client_auth_type is NoClientCert",
            ),
            (
                "  client_auth_type: RequireAnyClientCert\n",
                "nobody verified",
            ),
            ("  client_auth_type: Sometimes\n", "unknown value"),
            ("  min_version: TLS14\n", "unknown version"),
            ("  max_version: TLS11\n", "below TLS12"),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "min_version is above max_version",
            ),
            (
                "  prefer_server_cipher_suites: maybe\n",
                "expected true or false",
            ),
        ] {
            let error = WebConfig::parse(&format!("{base}{extra}"), &dir).expect_err(extra);
            assert!(error.contains(expected), "{extra:?}: {error}");
        }
        // A key that is not the certificate's.
        openssl(
            &dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "other.pem",
            ],
        );
        let error = WebConfig::parse(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: other.pem\n",
            &dir,
        )
        .expect_err("mismatch");
        assert!(error.contains("key_file"), "{error}");
        let error = WebConfig::parse(
            "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n",
            &dir,
        )
        .expect_err("no certificate");
        assert!(error.contains("holds no PEM certificate"), "{error}");

        // The shipped example, with a certificate under the names it gives.
        std::fs::copy(dir.join("cert.pem"), dir.join("tls.crt")).expect("copy");
        std::fs::copy(dir.join("key.pem"), dir.join("tls.key")).expect("copy");
        let example = include_str!("../../deploy/web-config.yml");
        let shipped = WebConfig::parse(example, &dir).expect("deploy/web-config.yml parses");
        assert!(shipped.tls.is_some() && shipped.auth.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("    {l}\n")).collect()
    }
}
