//! Where the CLI keeps its state: a per-user directory (`$AMP_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/amp`, else `~/.config/amp`) holding `key.pem` (the agent's key, 0600),
//! `identity.json` (the registration, 0600) and `config.json` (the provider URL).

use std::path::{Path, PathBuf};

use amp_client::Identity;
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The CLI's files.
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
}

/// `config.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Settings {
    /// The provider URL last registered with.
    pub(crate) provider: Option<String>,
}

impl Paths {
    /// The directory from the flag or environment, else the per-user default.
    pub(crate) fn resolve(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(dir) = flag.filter(|d| !d.as_os_str().is_empty()) {
            return Ok(Self { dir });
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => Path::new(&h).join(".config"),
                None => bail!("cannot find a config directory: set AMP_CONFIG_DIR or HOME"),
            },
        };
        Ok(Self {
            dir: base.join("amp"),
        })
    }

    pub(crate) fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    pub(crate) fn identity(&self) -> PathBuf {
        self.dir.join("identity.json")
    }

    fn settings_file(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `config.json`, or defaults when there is none.
    pub(crate) fn settings(&self) -> anyhow::Result<Settings> {
        let path = self.settings_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid config file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub(crate) fn save_settings(&self, s: &Settings) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec_pretty(s)?;
        text.push(b'\n');
        amp_client::identity::write_private(&self.settings_file(), &text)?;
        Ok(())
    }

    /// The registered identity.
    pub(crate) fn load_identity(&self) -> anyhow::Result<Identity> {
        let (json, key) = (self.identity(), self.key());
        if !key.exists() {
            bail!("no key at {}: run `amp init` first", key.display());
        }
        if !json.exists() {
            bail!("not registered yet: run `amp register --provider URL --tenant T --name N`");
        }
        Ok(Identity::load(&json, &key)?)
    }

    /// The provider URL: the flag (or `AMP_PROVIDER`), else `config.json`, else the
    /// endpoint the registration reported.
    pub(crate) fn provider(&self, flag: Option<&str>) -> anyhow::Result<String> {
        if let Some(p) = flag.filter(|p| !p.is_empty()) {
            return Ok(p.to_owned());
        }
        if let Some(p) = self.settings()?.provider {
            return Ok(p);
        }
        if let Ok(id) = self.load_identity() {
            let endpoint = &id.registration().provider.endpoint;
            if !endpoint.is_empty() {
                return Ok(endpoint.clone());
            }
        }
        bail!("no provider: pass --provider URL (or set AMP_PROVIDER)")
    }
}
