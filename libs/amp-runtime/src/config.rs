//! Layered configuration: the type's own serde defaults < a TOML file < `PREFIX__SECTION__KEY`
//! environment variables < `section.key=value` overrides from command-line flags.
//!
//! Values from the environment and overrides are strings; they are converted to numbers or
//! booleans only where the target type asks for one (so `"007"` stays `"007"` in a string
//! field). Errors name the key and the layer it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given explicitly does not exist.
    #[error("config file {} not found", .0.display())]
    MissingFile(PathBuf),
    /// The file is not valid TOML (or cannot be read).
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A value does not fit the configuration type (or a key is unknown).
    #[error("invalid configuration{}: {message}", describe(.key, .origin))]
    Invalid {
        /// The dotted key at fault, when known.
        key: Option<String>,
        /// Where the key's value came from (`environment variable AMP__SERVER__PORT`,
        /// `command-line override server.port`, `file amp.toml`, `defaults`).
        origin: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A `*_file` secret could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn describe(key: &Option<String>, origin: &Option<String>) -> String {
    match (key, origin) {
        (Some(k), Some(o)) => format!(" at `{k}` (from {o})"),
        (Some(k), None) => format!(" at `{k}`"),
        (None, Some(o)) => format!(" (from {o})"),
        (None, None) => String::new(),
    }
}

/// Loads a `T` from its defaults, then `file` (TOML; an error if given but missing), then
/// environment variables `{env_prefix}__SECTION__KEY` (case-insensitive, `__` between
/// levels), then `overrides` (`("server.listen", "0.0.0.0:8080")`).
///
/// `T` should carry `#[serde(default)]` (for defaults) and `#[serde(deny_unknown_fields)]`
/// (so a misspelt key fails loudly, including a stray `AMP__…` variable).
///
/// # Errors
/// [`ConfigError::MissingFile`] or [`ConfigError::File`] for an unusable file,
/// [`ConfigError::Invalid`] when a value does not fit `T`.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    overrides: &[(String, String)],
) -> Result<T, ConfigError> {
    // `vars_os`: a non-UTF-8 variable elsewhere in the environment must not panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_with_env(file, env_prefix, env, overrides)
}

/// [`load`] with the environment given explicitly (tests; embedding).
///
/// # Errors
/// As [`load`].
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[(String, String)],
) -> Result<T, ConfigError> {
    let pattern = format!("{}__", env_prefix.to_ascii_lowercase());
    // Only our variables, so the map is small and an error can name the variable.
    let env: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with(&pattern))
        .collect();

    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.to_owned()));
        }
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env.clone().into_iter().collect())),
    );
    for (key, value) in overrides {
        builder = builder
            .set_override(key.as_str(), value.as_str())
            .map_err(|e| ConfigError::Invalid {
                key: Some(key.clone()),
                origin: Some(format!("command-line override {key}")),
                message: e.to_string(),
            })?;
    }
    let built = builder.build().map_err(|e| match e {
        config::ConfigError::FileParse { cause, .. } => ConfigError::File {
            path: file.map(Path::to_owned).unwrap_or_default(),
            message: cause.to_string(),
        },
        other => invalid(other, file, env_prefix, &env, overrides),
    })?;
    built
        .try_deserialize()
        .map_err(|e| invalid(e, file, env_prefix, &env, overrides))
}

/// Turns the config crate's error into ours, naming the layer the faulty key came from.
fn invalid(
    error: config::ConfigError,
    file: Option<&Path>,
    env_prefix: &str,
    env: &HashMap<String, String>,
    overrides: &[(String, String)],
) -> ConfigError {
    let (key, message) = match &error {
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => (
            key.clone(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At { key, error, .. } => (key.clone(), error.to_string()),
        config::ConfigError::NotFound(key) => (Some(key.clone()), "missing value".to_owned()),
        other => (None, other.to_string()),
    };
    let origin = key.as_deref().map(|key| {
        let key = key.to_ascii_lowercase();
        if overrides.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key)) {
            return format!("command-line override {key}");
        }
        let var = format!("{env_prefix}__{}", key.replace('.', "__")).to_ascii_uppercase();
        if env.keys().any(|k| k.eq_ignore_ascii_case(&var)) {
            return format!("environment variable {var}");
        }
        match file {
            Some(path) => format!("file {} or defaults", path.display()),
            None => "defaults".to_owned(),
        }
    });
    ConfigError::Invalid {
        key,
        origin,
        message,
    }
}

/// A secret string (API key, token): `Debug` and `Display` print `[redacted]`, so it can sit
/// in a config struct that gets logged. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (the `*_file` convention for container secrets), trimming
    /// one trailing newline.
    ///
    /// # Errors
    /// [`ConfigError::SecretFile`] when the file cannot be read.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
            path: path.to_owned(),
            source,
        })?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Ok(Self(text.to_owned()))
    }

    /// The secret from `value`, or else read from `file`: resolves a `key` / `key_file`
    /// pair of config fields.
    ///
    /// # Errors
    /// [`ConfigError::SecretFile`] when `value` is absent and `file` cannot be read.
    pub fn resolve(
        value: Option<Secret>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, ConfigError> {
        match (value, file) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(path)) => Self::from_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        name: String,
        server: Server,
        store: Store,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        listen: String,
        workers: u32,
        tls: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Store {
        path: String,
        api_key: Option<Secret>,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Self {
                name: "amp".into(),
                server: Server::default(),
                store: Store::default(),
            }
        }
    }

    impl Default for Server {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:8080".into(),
                workers: 4,
                tls: false,
            }
        }
    }

    impl Default for Store {
        fn default() -> Self {
            Self {
                path: "data".into(),
                api_key: None,
            }
        }
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn ov(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        vars(pairs)
    }

    #[test]
    fn defaults_alone() {
        let cfg: Cfg = load_with_env(None, "AMPT1", vars(&[]), &[]).expect("load");
        assert_eq!(cfg, Cfg::default());
    }

    #[test]
    fn each_layer_overrides_the_previous() {
        let file = toml_file(
            "name = \"from-file\"\n[server]\nlisten = \"0.0.0.0:1\"\nworkers = 8\n[store]\npath = \"/var/amp\"\n",
        );
        let env = vars(&[
            ("AMPT2__SERVER__WORKERS", "16"),
            ("AMPT2__SERVER__TLS", "true"),
            ("AMPT2__STORE__PATH", "007"),
            ("AMPT2__STORE__API_KEY", "s3cret"),
            ("OTHER__SERVER__WORKERS", "99"),
        ]);
        let overrides = ov(&[("server.workers", "32")]);

        let file_only: Cfg =
            load_with_env(Some(file.path()), "AMPT2", vars(&[]), &[]).expect("load");
        assert_eq!(file_only.name, "from-file");
        assert_eq!(file_only.server.listen, "0.0.0.0:1");
        assert_eq!(file_only.server.workers, 8);
        assert!(
            !file_only.server.tls,
            "default kept where the file is silent"
        );

        let with_env: Cfg =
            load_with_env(Some(file.path()), "AMPT2", env.clone(), &[]).expect("load");
        assert_eq!(with_env.server.workers, 16);
        assert!(with_env.server.tls);
        assert_eq!(with_env.store.path, "007", "strings stay strings");
        assert_eq!(with_env.server.listen, "0.0.0.0:1");
        assert_eq!(
            with_env.store.api_key.as_ref().map(Secret::expose),
            Some("s3cret")
        );

        let with_flags: Cfg =
            load_with_env(Some(file.path()), "AMPT2", env, &overrides).expect("load");
        assert_eq!(with_flags.server.workers, 32);
        assert_eq!(with_flags.name, "from-file");
    }

    #[test]
    fn process_environment_is_read() {
        // `load` reads the real environment; with a prefix nobody sets it sees only defaults.
        let cfg: Cfg = load(None, "AMP_RUNTIME_TEST_UNSET_PREFIX", &[]).expect("load");
        assert_eq!(cfg, Cfg::default());
    }

    #[test]
    fn errors_name_key_and_source() {
        let err = load_with_env::<Cfg>(
            None,
            "AMPT3",
            vars(&[("AMPT3__SERVER__WORKERS", "many")]),
            &[],
        )
        .expect_err("bad env");
        let text = err.to_string();
        assert!(text.contains("server.workers"), "{text}");
        assert!(text.contains("AMPT3__SERVER__WORKERS"), "{text}");

        let err = load_with_env::<Cfg>(None, "AMPT3", vars(&[]), &ov(&[("server.tls", "maybe")]))
            .expect_err("bad flag");
        let text = err.to_string();
        assert!(
            text.contains("server.tls") && text.contains("override"),
            "{text}"
        );

        let file = toml_file("[server]\nworkers = \"x\"\n");
        let err = load_with_env::<Cfg>(Some(file.path()), "AMPT3", vars(&[]), &[])
            .expect_err("bad file value");
        let text = err.to_string();
        assert!(
            text.contains("server.workers") && text.contains("file"),
            "{text}"
        );

        let file = toml_file("[server]\nlisten = \n");
        let err =
            load_with_env::<Cfg>(Some(file.path()), "AMPT3", vars(&[]), &[]).expect_err("bad toml");
        assert!(matches!(err, ConfigError::File { .. }), "{err}");

        let file = toml_file("[server]\nlistn = \"x\"\n");
        let err = load_with_env::<Cfg>(Some(file.path()), "AMPT3", vars(&[]), &[])
            .expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load_with_env::<Cfg>(
            Some(Path::new("/nonexistent/amp.toml")),
            "AMPT4",
            vars(&[]),
            &[],
        )
        .expect_err("missing");
        assert!(matches!(err, ConfigError::MissingFile(_)));
        assert!(err.to_string().contains("/nonexistent/amp.toml"));
    }

    #[test]
    fn secret_is_redacted() {
        let s: Secret = serde_json::from_str("\"hunter2\"").expect("deserialize");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(b"from-file\n").expect("write");
        let s = Secret::resolve(None, Some(f.path()))
            .expect("read")
            .expect("some");
        assert_eq!(s.expose(), "from-file");
        assert!(Secret::resolve(None, None).expect("none").is_none());
    }
}
