//! API keys: with a key file configured, every call but health checks must carry
//! `authorization: Bearer <key>` with one of its keys.
//!
//! Only the keys' SHA-256 digests are kept in memory, and a presented key is compared
//! by digest in constant time, so neither a memory dump nor response timing gives a
//! key away. Keys are never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Shorter keys are refused at start-up: they could be guessed.
pub const MIN_KEY_BYTES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this call needs an API key: send the header `authorization: Bearer <key>`")]
    Missing,
    #[error("the authorization header must read `Bearer <key>`")]
    Malformed,
    #[error("the API key is not valid")]
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read API key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("API key file {0} holds no key (one key per line; '#' starts a comment)")]
    Empty(PathBuf),
    #[error("API key file {path}, line {line}: keys must be at least {MIN_KEY_BYTES} bytes of visible ASCII")]
    WeakKey { path: PathBuf, line: usize },
}

#[derive(Debug)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Reads one key per line; blank lines and lines starting with '#' are skipped.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: path.to_owned(), source })?;
        let mut digests = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.len() < MIN_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyFileError::WeakKey { path: path.to_owned(), line: index + 1 });
            }
            digests.push(digest(key));
        }
        if digests.is_empty() {
            return Err(KeyFileError::Empty(path.to_owned()));
        }
        Ok(Self { digests })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks the `authorization` value of a call.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let presented = digest(key.trim());
        // Every stored digest is compared, whatever matches, so time does not depend on which.
        let matched = self.digests.iter().fold(false, |found, stored| found | same(stored, &presented));
        if matched { Ok(()) } else { Err(AuthError::Rejected) }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality that reads every byte, whatever differs.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Guards a gRPC service: lets every call through when no keys are configured.
#[derive(Debug, Clone, Default)]
pub struct Authorize(Option<Arc<ApiKeys>>);

impl Authorize {
    pub fn new(keys: Option<Arc<ApiKeys>>) -> Self {
        Self(keys)
    }
}

impl Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(keys) = &self.0 {
            keys.check(request.metadata().get("authorization").map(|v| v.as_bytes()))?;
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Result<ApiKeys, KeyFileError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        ApiKeys::load(file.path())
    }

    #[test]
    fn bearer_keys_from_the_file_are_accepted_and_others_refused() {
        let keys = keys("# operators\n\nfirst-key-0123456789\n  second-key-0123456789  \n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(b"Bearer first-key-0123456789")), Ok(()));
        assert_eq!(keys.check(Some(b"bearer second-key-0123456789")), Ok(()));
        assert_eq!(keys.check(None), Err(AuthError::Missing));
        assert_eq!(keys.check(Some(b"first-key-0123456789")), Err(AuthError::Malformed));
        assert_eq!(keys.check(Some(b"Basic first-key-0123456789")), Err(AuthError::Malformed));
        assert_eq!(keys.check(Some(b"Bearer \xff")), Err(AuthError::Malformed));
        assert_eq!(keys.check(Some(b"Bearer first-key-012345678")), Err(AuthError::Rejected));
    }

    #[test]
    fn weak_or_missing_keys_are_refused_at_start_up() {
        assert!(matches!(keys("# nothing\n\n"), Err(KeyFileError::Empty(_))));
        assert!(matches!(keys("short\n"), Err(KeyFileError::WeakKey { line: 1, .. })));
        assert!(matches!(
            keys("good-key-0123456789\nwith a space in it\n"),
            Err(KeyFileError::WeakKey { line: 2, .. })
        ));
        assert!(matches!(ApiKeys::load(Path::new("no/such/file")), Err(KeyFileError::Read { .. })));
    }
}
