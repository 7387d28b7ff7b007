//! Errors from loading and storing relay keys. Every file error names the file.

use std::path::PathBuf;

use thiserror::Error;

use super::cert::CertError;
use super::pem::PemError;
use super::rsa::RsaError;
use super::tagged::TaggedError;

/// What is wrong with the contents of a key file.
#[derive(Debug, Error)]
pub enum FileProblem {
    #[error("{0}")]
    Tagged(#[from] TaggedError),
    #[error("has tag {found:?}, expected {expected:?}")]
    WrongTag {
        expected: &'static str,
        found: String,
    },
    #[error("key body is {found} bytes, expected {expected}")]
    WrongLength { expected: usize, found: usize },
    #[error("file is empty")]
    Empty,
    #[error("{0}")]
    Pem(#[from] PemError),
    #[error("{0}")]
    Rsa(#[from] RsaError),
    #[error("{0}")]
    Cert(#[from] CertError),
    #[error("stored public key does not match the secret key")]
    PublicKeyMismatch,
}

/// Errors from [`crate::keys::RelayKeys`] and the key-file functions.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {} is corrupt ({problem}); refusing to replace it — move it away to generate a new key", path.display())]
    Corrupt { path: PathBuf, problem: FileProblem },
    #[error("{} does not belong with {}: {what}", path.display(), other.display())]
    Mismatch {
        path: PathBuf,
        other: PathBuf,
        what: &'static str,
    },
    #[error(
        "the medium-term signing key must be (re)created but the master identity secret key {} is missing (offline master key?)",
        path.display()
    )]
    MasterKeyOffline { path: PathBuf },
    /// C tor's words (familykeys.c) for a `FamilyId` whose key is not in the directory.
    #[error("No key was found for listed FamilyID {id} (looked for *.secret_family_key in {})", dir.display())]
    FamilyKeyMissing { id: String, dir: PathBuf },
    #[error("cannot generate key: {0}")]
    Generate(#[from] RsaError),
}

impl KeyError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, problem: impl Into<FileProblem>) -> Self {
        KeyError::Corrupt {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
