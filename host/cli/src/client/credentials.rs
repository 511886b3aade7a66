//! Sessions stored by `plinth login`: one per server, in `plinth/credentials.json` under the
//! user's config directory (or the file `PLINTH_CREDENTIALS` names), readable by the user only.

use super::ClientError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One server's stored credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Session {
    /// Sent as the bearer token.
    pub access_token: String,
    /// Renews `access_token` when it expires (absent for a stored API key or admin token).
    pub refresh_token: Option<String>,
    /// The account's email, for `plinth login`'s message.
    pub email: Option<String>,
}

impl Session {
    /// What to keep of a `/auth/login` or `/auth/refresh` answer.
    pub(crate) fn from_login(answer: plinth_host::auth::Session) -> Self {
        Self {
            access_token: answer.access_token,
            refresh_token: Some(answer.refresh_token),
            email: Some(answer.user.email),
        }
    }
}

/// Every stored session, by server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Credentials {
    servers: BTreeMap<String, Session>,
}

fn local(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(format!("{what}: {e}"))
}

impl Credentials {
    /// Where sessions are kept.
    pub(crate) fn path() -> Result<PathBuf, ClientError> {
        if let Some(path) = std::env::var_os("PLINTH_CREDENTIALS") {
            return Ok(PathBuf::from(path));
        }
        dirs::config_dir()
            .map(|dir| dir.join("plinth").join("credentials.json"))
            .ok_or_else(|| {
                ClientError::Local(
                    "no config directory for stored logins; set PLINTH_CREDENTIALS".into(),
                )
            })
    }

    /// The stored sessions (none when nothing is stored yet).
    pub(crate) fn load() -> Result<Self, ClientError> {
        let path = Self::path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| local(&format!("reading {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(local(&format!("reading {}", path.display()), e)),
        }
    }

    /// The session stored for `server`.
    pub(crate) fn session(&self, server: &str) -> Option<&Session> {
        self.servers.get(server)
    }

    /// Stores `session` for `server`.
    pub(crate) fn set(&mut self, server: &str, session: Session) {
        self.servers.insert(server.to_string(), session);
    }

    /// Forgets `server`'s session, returning it.
    pub(crate) fn remove(&mut self, server: &str) -> Option<Session> {
        self.servers.remove(server)
    }

    /// Writes the file with mode 0600 (created that way, never readable by others even briefly),
    /// replacing the old one atomically.
    pub(crate) fn save(&self) -> Result<(), ClientError> {
        use std::io::Write;
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local("creating the config dir", e))?;
        }
        let temp = path.with_extension("json.tmp");
        // A leftover from an interrupted save may have other permissions: start afresh.
        let _ = std::fs::remove_file(&temp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temp)
            .map_err(|e| local(&format!("writing {}", temp.display()), e))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| local("encoding", e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| local(&format!("writing {}", temp.display()), e))?;
        std::fs::rename(&temp, &path).map_err(|e| local(&format!("writing {}", path.display()), e))
    }
}
