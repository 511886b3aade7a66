//! The compiled-artifact cache: a component compiled once is stored beside its blob, keyed by
//! the component's SHA-256 and the engine's compatibility fingerprint, so a restart or a
//! rollback loads machine code instead of compiling again.
//!
//! **Invariant:** an artifact is only ever loaded into an engine with the fingerprint it was
//! stored under, and only from our own store; anything else is compiled from the component.

use super::{CompileError, PluginCode, Runtime};
use crate::store::Artifact;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How code was obtained, counted for `/metrics` and for the restart test.
#[derive(Debug, Default)]
pub struct CodeStats {
    compiled: AtomicU64,
    loaded: AtomicU64,
}

impl CodeStats {
    /// Components compiled from their bytes since start.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Components loaded from a stored artifact since start.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }
}

/// Feeds `Hash` input into SHA-256, so the fingerprint is stable across Rust releases (std's
/// `DefaultHasher` promises no such thing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

/// The engine's compatibility fingerprint: wasmtime's own hash of everything that makes code
/// loadable (its version, the target triple and CPU flags, every code-generation setting), kept
/// stable across Rust releases by hashing with SHA-256. A change of any of them means a miss.
pub fn fingerprint(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

impl Runtime {
    /// The compiled code stored for the component `sha256` under this engine's fingerprint, if
    /// any. A failed read only costs a compile, so it is logged, not returned.
    pub async fn stored_artifact(&self, sha256: &str) -> Option<Vec<u8>> {
        match self.store.artifact(sha256, &self.fingerprint).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(sha256, error = %e, "reading a stored artifact failed");
                None
            }
        }
    }

    /// The code of a component: loaded from `artifact` (what [`Runtime::stored_artifact`]
    /// found) when it is usable, else compiled from `bytes`. Returns whether it compiled.
    /// CPU-heavy and blocking: call it from `spawn_blocking`, never on an async worker.
    pub fn load_or_compile(
        &self,
        sha256: &str,
        artifact: Option<Vec<u8>>,
        bytes: &[u8],
    ) -> Result<(PluginCode, bool), CompileError> {
        if let Some(artifact) = artifact {
            match self.deserialize(&artifact) {
                Ok(component) => {
                    self.code_stats.loaded.fetch_add(1, Ordering::Relaxed);
                    return Ok((self.link(&component)?, false));
                }
                Err(e) => {
                    tracing::warn!(sha256, error = %e, "stored artifact unusable; compiling");
                }
            }
        }
        Ok((self.compile(bytes)?, true))
    }

    /// Stores the compiled code of the component `sha256` (whose blob must be stored) for the
    /// next start. Failing only costs a compile later, so it is logged, not returned.
    pub async fn save_artifact(&self, sha256: &str, code: &PluginCode) {
        let Some(artifact) = self.artifact(code) else {
            return;
        };
        if let Err(e) = self.store.put_artifact(sha256, artifact).await {
            tracing::warn!(sha256, error = %e, "storing the compiled artifact failed");
        }
    }

    /// The compiled code as the store keeps it, for a deploy to store with its component.
    /// `None` (logged) if it cannot be serialised: that only costs a compile at the next start.
    pub fn artifact(&self, code: &PluginCode) -> Option<Artifact> {
        match code.pre.instance_pre().component().serialize() {
            Ok(bytes) => Some(Artifact {
                fingerprint: self.fingerprint.clone(),
                bytes,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "serialising the compiled code failed");
                None
            }
        }
    }

    /// Compiles a component from its bytes, counting it.
    pub(super) fn compile_component(&self, bytes: &[u8]) -> Result<Component, CompileError> {
        super::check_header(bytes)?;
        let component = Component::from_binary(&self.engine, bytes).map_err(|e| {
            let message = format!("{e:#}");
            // wasmtime checks a component against what one slot of the instance pool holds.
            if message.contains("pooling allocator") {
                CompileError::OverInstanceLimits(message)
            } else {
                CompileError::Invalid(message)
            }
        })?;
        self.code_stats.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(component)
    }

    /// Loads machine code this engine produced earlier.
    #[expect(
        unsafe_code,
        reason = "loads only artifacts this engine wrote (see SAFETY)"
    )]
    fn deserialize(&self, artifact: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: `Component::deserialize` trusts its input to be code wasmtime produced. The
        // artifact comes from our own store, written only from `Component::serialize`
        // under this engine's fingerprint, in the data directory only Plinth writes; wasmtime
        // still checks its header and engine compatibility and refuses a mismatch.
        unsafe { Component::deserialize(&self.engine, artifact) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fingerprint_changes_with_code_generation_settings() {
        let plain = wasmtime::Engine::new(&wasmtime::Config::new()).unwrap();
        let mut config = wasmtime::Config::new();
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        let other = wasmtime::Engine::new(&config).unwrap();
        let fp = super::fingerprint(&plain);
        assert_eq!(fp, super::fingerprint(&plain));
        assert_eq!(fp.len(), 32);
        assert_ne!(fp, super::fingerprint(&other));
    }
}
