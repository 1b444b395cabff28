//! Password hashing: Argon2id, m = 19 MiB, t = 2, p = 1 (OWASP's baseline), 16-byte random
//! salt, PHC strings in the store. Hashing is CPU- and memory-heavy on purpose, so it runs on
//! the blocking pool behind a semaphore: at most `concurrency` hashes at once, and a caller
//! that cannot get a slot within `queue_timeout` is told to come back later (hashing must
//! not be a denial-of-service lever).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;
pub const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes queued: answer 503 with Retry-After.
    #[error("password hashing is saturated")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

#[derive(Clone)]
pub struct PasswordHashing {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Verified against when the user does not exist, so unknown users cost the same time.
    dummy_hash: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the current thread (callers are on the blocking pool).
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| HashError::Internal(e.to_string()))?;
    argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}

/// True when `password` matches the PHC string; false for a mismatch or an unreadable hash.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    argon2().verify_password(password.as_bytes(), phc).is_ok()
}

impl PasswordHashing {
    pub fn new(concurrency: usize, queue_timeout: Duration) -> Result<Self, HashError> {
        let dummy = hash_blocking("espwatch timing equaliser, never a real password")?;
        Ok(PasswordHashing {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_timeout,
            dummy_hash: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?;
        Ok(result)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Verifies against `phc`, or against a dummy hash when there is no user, so both take
    /// the same time; `None` always answers false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let dummy = self.dummy_hash.clone();
        self.run(move || match phc {
            Some(phc) => verify_blocking(&password, &phc),
            None => {
                let _ = verify_blocking(&password, &dummy);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_carries_owasp_parameters_and_verifies() {
        let phc = hash_blocking("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("correct horse battery", &phc));
        assert!(!verify_blocking("correct horse battery!", &phc));
        assert!(!verify_blocking("x", "not a phc string"));
        let again = hash_blocking("correct horse battery").unwrap();
        assert_ne!(phc, again, "random salt");
    }
}
