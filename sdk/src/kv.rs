//! Durable key-value storage: the plugin's own buckets on the host (`wasi:keyvalue` plus
//! Plinth's compare-and-swap and prefix scans).
//!
//! ```ignore
//! use plinth_sdk::kv::Bucket;
//!
//! let bucket = Bucket::open("default")?;
//! bucket.set("greeting", &"hello")?;                  // JSON
//! let greeting: Option<String> = bucket.get("greeting")?;
//! let visits = bucket.increment("visits", 1)?;         // atomic
//! for key in bucket.keys("user/") { let key = key?; /* ... */ }
//! ```
//!
//! Every bucket is private to the plugin: another plugin opening the same name sees its own data.
//! A write that returns `Ok` is on disk. Limits: keys up to 1 KiB, values up to the operator's
//! limit (1 MiB by default), and a per-plugin quota (256 MiB by default).

use crate::bindings::plinth::host::kv as plinth_kv;
use crate::bindings::wasi::keyvalue::{atomics, store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// Most keys one page of [`Bucket::keys`] fetches from the host.
const PAGE: u32 = 1000;

/// Why a storage call failed: a stable `code` (`quota_exceeded`, `value_too_large`,
/// `invalid_key`, `not_a_counter`, `overflow`, `invalid_json`, `storage_failed`,
/// `store_unavailable` (the host's database cannot be reached: try again), ...) and the host's
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: String,
    message: String,
}

impl Error {
    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status that fits this error when passed on to a client.
    pub fn status(&self) -> u16 {
        match self.code.as_str() {
            "quota_exceeded" => 507,
            "value_too_large" => 413,
            "invalid_key" | "not_a_counter" | "overflow" => 400,
            "conflict" => 409,
            "store_unavailable" => 503,
            _ => 500,
        }
    }

    fn invalid_json(key: &str, e: serde_json::Error) -> Self {
        Self {
            code: "invalid_json".into(),
            message: format!("the value of {key:?} is not the expected JSON: {e}"),
        }
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NoSuchStore => Self {
                code: "no_such_store".into(),
                message: "no such bucket".into(),
            },
            store::Error::AccessDenied => Self {
                code: "access_denied".into(),
                message: "access denied".into(),
            },
            // The host's messages start with their code: `quota_exceeded: ...`.
            store::Error::Other(message) => Self {
                code: message
                    .split_once(':')
                    .map_or("storage_failed", |(code, _)| code)
                    .to_string(),
                message,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Response {
    /// The error in Plinth's JSON shape, with a fitting status.
    fn from(e: Error) -> Self {
        crate::Response::error(e.status(), &e.code, &e.message)
    }
}

/// A bucket of the plugin's storage.
pub struct Bucket {
    inner: store::Bucket,
}

impl Bucket {
    /// Opens (creating on first write) the bucket `name`.
    pub fn open(name: &str) -> Result<Self, Error> {
        Ok(Self {
            inner: store::open(name)?,
        })
    }

    /// The value at `key` decoded from JSON, or `None`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get_bytes(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::invalid_json(key, e)),
        }
    }

    /// The raw bytes at `key`, or `None`.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.get(key)?)
    }

    /// Stores `value` as JSON at `key`.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::invalid_json(key, e))?;
        self.set_bytes(key, &bytes)
    }

    /// Stores raw bytes at `key`.
    pub fn set_bytes(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(self.inner.set(key, value)?)
    }

    /// Removes `key` (absent is fine).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.inner.delete(key)?)
    }

    /// Whether `key` holds a value.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.inner.exists(key)?)
    }

    /// Atomically adds `delta` to the counter at `key` (absent counts as 0) and returns the new
    /// value. A counter reads back with `get::<u64>`.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        Ok(atomics::increment(&self.inner, key, delta)?)
    }

    /// Sets `key` to `value` only if it holds exactly `expected` (`None`: absent). Returns
    /// whether it did; of several racing writers that read the same value, exactly one wins.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        Ok(plinth_kv::compare_and_swap(
            &self.inner,
            key,
            expected,
            value,
        )?)
    }

    /// Read-modify-write of a JSON value without lost updates. `change` gets the current
    /// value (`None` when absent) and returns the value to store, or `None` to leave the key as
    /// it is. The new value is stored with compare-and-swap; when another request changed the
    /// key in between, `change` runs again on the fresh value (up to `attempts` times, then the
    /// error code is `conflict`). Returns what was stored, or `None` if nothing was.
    pub fn update<T, F>(&self, key: &str, attempts: u32, mut change: F) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        for _ in 0..attempts.max(1) {
            let current = self.get_bytes(key)?;
            let decoded = match &current {
                None => None,
                Some(bytes) => {
                    Some(serde_json::from_slice(bytes).map_err(|e| Error::invalid_json(key, e))?)
                }
            };
            let Some(next) = change(decoded) else {
                return Ok(None);
            };
            let bytes = serde_json::to_vec(&next).map_err(|e| Error::invalid_json(key, e))?;
            if self.compare_and_swap(key, current.as_deref(), &bytes)? {
                return Ok(Some(next));
            }
        }
        Err(Error {
            code: "conflict".into(),
            message: format!("{key:?} kept changing; gave up after {attempts} attempts"),
        })
    }

    /// One page of the keys starting with `prefix`, in byte order, after `cursor` (the
    /// `cursor` of the previous page; it stays valid across requests).
    pub fn keys_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        let page = plinth_kv::list_keys_with_prefix(&self.inner, prefix, cursor, limit)?;
        Ok(KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    /// Every key starting with `prefix`, in byte order, fetched page by page.
    pub fn keys(&self, prefix: &str) -> Keys<'_> {
        Keys {
            bucket: self,
            prefix: prefix.to_string(),
            buffered: Vec::new().into_iter(),
            cursor: None,
            done: false,
        }
    }
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in byte order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` at the end.
    pub cursor: Option<String>,
}

/// The iterator of [`Bucket::keys`].
pub struct Keys<'a> {
    bucket: &'a Bucket,
    prefix: String,
    buffered: std::vec::IntoIter<String>,
    cursor: Option<String>,
    done: bool,
}

impl Iterator for Keys<'_> {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.buffered.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            match self
                .bucket
                .keys_page(&self.prefix, self.cursor.as_deref(), PAGE)
            {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.cursor = page.cursor;
                    self.buffered = page.keys.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
