//! Backups of the embedded store in an S3 bucket: `espwatch store backup|restore` with
//! `s3://bucket[/prefix]` instead of a directory.
//!
//! The backup (or the backup chain's next backup) is made by `espwatch_store`'s `backup` /
//! `incremental` exactly as for a directory, into a local staging directory, so it is the
//! same consistent, verified copy; then each of its files is uploaded and verified (the
//! object's size, and the SHA-256 of the object read back from the bucket, equal to the
//! manifest's) before the manifest is uploaded, last: a backup whose manifest (`BACKUP.json`,
//! or its entry in `CHAIN.json`) is in the bucket is whole there. The keys under the prefix
//! are the directory layout (`BACKUP.json`, `espwatch.db`, ... or `CHAIN.json`,
//! `STATE.sqlite`, `0000/...`), so `aws s3 sync` of the prefix gives a directory that
//! `store restore --from DIR` reads as well.
//!
//! A chain continues from the bucket: its `CHAIN.json` and `STATE.sqlite` (the signatures of
//! the last backup) are fetched into the staging directory, the delta is made there, its
//! files uploaded, then `CHAIN.json` (the commit point), then `STATE.sqlite` (a crash in
//! between leaves the old state: the next delta only copies more than it needs).
//!
//! A restore fetches the manifest, then only the files of the backups it applies into a
//! staging directory, and restores from there (checksums, every segment and log batch
//! decoded, readings counted: the store's restore).
//!
//! Credentials come from the environment (or whatever `object_store` finds), never from
//! configuration, and are never part of a message.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use espwatch_store::embedded::backup::{self as local, BackupReport, MANIFEST, Manifest};
use espwatch_store::embedded::incremental::{
    self, CHAIN, Chain, ChainReport, ChainRestoreReport, LOCK, LOCK_TTL_MICROS, LockOwner, STATE,
};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Archive;
use crate::columns::hex;

/// Files up to this size go up in one PUT; larger ones as a multipart upload of parts this
/// size (never more than a few parts in memory).
const PART: usize = 16 << 20;
/// Parts in flight at once in a multipart upload.
const PARTS_IN_FLIGHT: usize = 2;

/// What went up: files and bytes (manifests included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub files: usize,
    pub bytes: u64,
}

/// A backup made and uploaded.
#[derive(Debug)]
pub struct S3Backup {
    pub report: BackupReport,
    pub uploaded: Uploaded,
    pub seconds: f64,
}

/// A backup chain's next backup made and uploaded.
#[derive(Debug)]
pub struct S3ChainBackup {
    pub report: ChainReport,
    pub uploaded: Uploaded,
    pub seconds: f64,
}

/// What a restore from the bucket applied.
#[derive(Debug)]
pub enum S3Restore {
    Full {
        report: BackupReport,
        downloaded: u64,
        seconds: f64,
    },
    Chain {
        report: ChainRestoreReport,
        downloaded: u64,
        seconds: f64,
    },
}

fn key(name: &str) -> anyhow::Result<Path> {
    Path::parse(name).with_context(|| format!("backup file name {name:?}"))
}

/// Whether anything is stored under the bucket's prefix.
async fn is_empty(store: &Arc<dyn ObjectStore>, url: &str) -> anyhow::Result<bool> {
    let first = store
        .list(None)
        .next()
        .await
        .transpose()
        .with_context(|| format!("listing {url}"))?;
    Ok(first.is_none())
}

/// Whether nothing but a backup's lock (and the shipped log) is stored under the bucket's prefix.
async fn is_empty_but_lock(store: &Arc<dyn ObjectStore>, url: &str) -> anyhow::Result<bool> {
    let mut objects = store.list(None);
    while let Some(o) = objects
        .next()
        .await
        .transpose()
        .with_context(|| format!("listing {url}"))?
    {
        let name = o.location.as_ref();
        // The shipped log (`crate::ship`) may come before the chain's first backup.
        let shipped = name
            .strip_prefix(incremental::SHIPPED_LOG)
            .is_some_and(|rest| rest.starts_with('/'));
        if name != LOCK && !shipped {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A backup chain's prefix held by one backup: the `LOCK.json` object, created only when
/// absent (`If-None-Match: *`), with its owner and expiry (the directory chain's
/// [`incremental::ChainLock`], in the bucket). Released by [`ChainLease::release`]; a lease
/// never released (the backup died) expires after [`LOCK_TTL_MICROS`] and is taken over.
#[derive(Debug)]
pub struct ChainLease {
    store: Arc<dyn ObjectStore>,
    url: String,
    token: String,
}

impl ChainLease {
    /// Takes the chain in `bucket` for one backup; refused, naming the holder, while another
    /// backup holds it.
    pub async fn acquire(bucket: &Archive) -> anyhow::Result<ChainLease> {
        Self::acquire_for(bucket, LOCK_TTL_MICROS).await
    }

    /// As [`ChainLease::acquire`], held for `ttl_micros`.
    pub async fn acquire_for(bucket: &Archive, ttl_micros: i64) -> anyhow::Result<ChainLease> {
        let (store, url) = (&bucket.store, bucket.url());
        let owner = LockOwner::new(ttl_micros);
        let body = serde_json::to_vec_pretty(&owner)?;
        // Two tries: the second after removing an expired lock.
        for _ in 0..2 {
            let put = store
                .put_opts(
                    &key(LOCK)?,
                    PutPayload::from(body.clone()),
                    PutMode::Create.into(),
                )
                .await;
            match put {
                Ok(_) => {
                    return Ok(ChainLease {
                        store: store.clone(),
                        url: url.to_owned(),
                        token: owner.token,
                    });
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let held = fetch_small(store, url, LOCK)
                        .await?
                        .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok());
                    match held {
                        Some(h) if h.expired() => {
                            tracing::warn!(
                                url,
                                owner = %h.owner,
                                "taking over an expired backup lock (its backup died?)"
                            );
                            store
                                .delete(&key(LOCK)?)
                                .await
                                .with_context(|| format!("removing the expired lock of {url}"))?;
                        }
                        Some(h) => bail!("{}", h.refusal(url, &format!("{url}/{LOCK}"))),
                        None => bail!(
                            "{url}/{LOCK} cannot be read: another backup may be running; remove it if none is"
                        ),
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("locking {url} for a backup")),
            }
        }
        bail!("{url}: another backup took the lock first")
    }

    /// Removes the lock, if it is still this lease's (one taken over after expiry is not).
    pub async fn release(self) -> anyhow::Result<()> {
        let held = fetch_small(&self.store, &self.url, LOCK)
            .await?
            .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok());
        if held.is_some_and(|h| h.token == self.token) {
            self.store
                .delete(&key(LOCK)?)
                .await
                .with_context(|| format!("removing the lock of {}", self.url))?;
        }
        Ok(())
    }
}

/// The object's bytes, or `None` when there is none.
async fn fetch_small(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    name: &str,
) -> anyhow::Result<Option<bytes::Bytes>> {
    match store.get(&key(name)?).await {
        Ok(got) => Ok(Some(
            got.bytes()
                .await
                .with_context(|| format!("reading {name} from {url}"))?,
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {name} from {url}")),
    }
}

fn sha256_file(path: &FsPath) -> anyhow::Result<(u64, String)> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Uploads the local file `from` as `name`, then checks the object: its size, and the
/// SHA-256 of its bytes read back, against `(bytes, sha256)` of the local file (as the
/// manifest records them). Returns the bytes uploaded.
async fn upload_verified(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    from: &FsPath,
    name: &str,
    expected: (u64, &str),
) -> anyhow::Result<u64> {
    let location = key(name)?;
    let (bytes, sha256) = expected;
    let what = || format!("uploading {name} to {url}");
    if bytes <= PART as u64 {
        let data = tokio::fs::read(from)
            .await
            .with_context(|| format!("reading {}", from.display()))?;
        store
            .put(&location, PutPayload::from(data))
            .await
            .with_context(what)?;
    } else {
        let upload = store.put_multipart(&location).await.with_context(what)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut file = tokio::fs::File::open(from)
            .await
            .with_context(|| format!("opening {}", from.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let read: anyhow::Result<()> = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("reading {}", from.display()))?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .with_context(what)?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = read {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.with_context(what)?;
    }

    // Verify what the bucket now holds, not what was sent.
    let meta = store
        .head(&location)
        .await
        .with_context(|| format!("checking {name} in {url}"))?;
    if meta.size != bytes {
        bail!(
            "{name} in {url} holds {} bytes after the upload, {bytes} were sent",
            meta.size
        );
    }
    let mut stream = store
        .get(&location)
        .await
        .with_context(|| format!("reading back {name} from {url}"))?
        .into_stream();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .with_context(|| format!("reading back {name} from {url}"))?
    {
        hasher.update(&chunk);
        total += chunk.len() as u64;
    }
    if total != bytes || hex(&hasher.finalize()) != sha256 {
        bail!("{name} read back from {url} differs from what was uploaded");
    }
    Ok(bytes)
}

/// [`upload_verified`] of a file whose checksum is computed here (manifests, chain state).
async fn upload_file(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    from: &FsPath,
    name: &str,
) -> anyhow::Result<u64> {
    let path = from.to_owned();
    let (bytes, sha) = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .context("checksum task")??;
    upload_verified(store, url, from, name, (bytes, &sha)).await
}

/// Downloads `name` into the local file `to`, streaming; returns its size.
async fn download(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    name: &str,
    to: &FsPath,
) -> anyhow::Result<u64> {
    if let Some(dir) = to.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut stream = store
        .get(&key(name)?)
        .await
        .with_context(|| format!("reading {name} from {url}"))?
        .into_stream();
    let mut file = tokio::fs::File::create(to)
        .await
        .with_context(|| format!("creating {}", to.display()))?;
    let mut total = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .with_context(|| format!("reading {name} from {url}"))?
    {
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", to.display()))?;
        total += chunk.len() as u64;
    }
    file.flush()
        .await
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(total)
}

/// A manifest names files and directories of the backup: each must stay a plain name, so
/// nothing is downloaded outside the staging directory.
fn check_name(url: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("the manifest in {url} names an unexpected file {name:?}");
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> espwatch_store::StoreResult<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .context("backup task")??)
}

/// Backs the data directory `data_dir` (a server may run on it) up into the bucket, whose
/// prefix must hold nothing yet: the copy is made and verified in `staging` (a directory of
/// its own, left for the caller to remove), uploaded file by file, each verified, then its
/// manifest.
pub async fn backup(
    data_dir: &FsPath,
    bucket: &Archive,
    staging: &FsPath,
) -> anyhow::Result<S3Backup> {
    let started = Instant::now();
    let (store, url) = (&bucket.store, bucket.url());
    if !is_empty(store, url).await? {
        bail!("{url} is not empty: choose a new prefix (or use --incremental with a backup chain)");
    }
    let local_dir = staging.join("backup");
    let report = {
        let (dir, to) = (data_dir.to_owned(), local_dir.clone());
        blocking(move || local::backup(&dir, &to)).await?
    };
    let mut uploaded = Uploaded::default();
    for f in &report.manifest.files {
        uploaded.bytes += upload_verified(
            store,
            url,
            &local_dir.join(&f.name),
            &f.name,
            (f.bytes, &f.sha256),
        )
        .await?;
        uploaded.files += 1;
    }
    uploaded.bytes += upload_file(store, url, &local_dir.join(MANIFEST), MANIFEST).await?;
    uploaded.files += 1;
    Ok(S3Backup {
        report,
        uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The next backup of the chain in the bucket (a full one when the prefix is empty), made in
/// `staging` from the chain's manifest and state fetched from the bucket.
///
/// One backup at a time per prefix: [`ChainLease`] refuses a second one while the first
/// holds the chain.
pub async fn backup_chain(
    data_dir: &FsPath,
    bucket: &Archive,
    staging: &FsPath,
) -> anyhow::Result<S3ChainBackup> {
    let lease = ChainLease::acquire(bucket).await?;
    let done = backup_chain_held(data_dir, bucket, staging).await;
    let released = lease.release().await;
    let done = done?;
    released?;
    Ok(done)
}

async fn backup_chain_held(
    data_dir: &FsPath,
    bucket: &Archive,
    staging: &FsPath,
) -> anyhow::Result<S3ChainBackup> {
    let started = Instant::now();
    let (store, url) = (&bucket.store, bucket.url());
    let repo = staging.join("chain");
    tokio::fs::create_dir_all(&repo)
        .await
        .with_context(|| format!("creating {}", repo.display()))?;
    match fetch_small(store, url, CHAIN).await? {
        Some(chain) => {
            tokio::fs::write(repo.join(CHAIN), &chain)
                .await
                .context("writing the chain's manifest")?;
            if download(store, url, STATE, &repo.join(STATE))
                .await
                .is_err()
            {
                bail!("{url} holds {CHAIN} but not {STATE}: start a new chain under a new prefix");
            }
        }
        None if !is_empty_but_lock(store, url).await? => {
            bail!("{url} is not empty and not a backup chain: choose a new prefix");
        }
        None => {}
    }
    let report = {
        let (dir, to) = (data_dir.to_owned(), repo.clone());
        blocking(move || incremental::backup_chain(&dir, &to)).await?
    };
    let mut uploaded = Uploaded::default();
    let entry = &report.entry;
    for f in &entry.files {
        let name = format!("{}/{}", entry.dir, f.name);
        uploaded.bytes += upload_verified(
            store,
            url,
            &repo.join(&entry.dir).join(&f.name),
            &name,
            (f.bytes, &f.sha256),
        )
        .await?;
        uploaded.files += 1;
    }
    // The commit point, then the state the next delta starts from.
    for name in [CHAIN, STATE] {
        uploaded.bytes += upload_file(store, url, &repo.join(name), name).await?;
        uploaded.files += 1;
    }
    Ok(S3ChainBackup {
        report,
        uploaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores the backup or backup chain in the bucket into `data_dir` (new or empty), as of
/// `until` (UTC microseconds; chains only), through `staging`.
pub async fn restore(
    bucket: &Archive,
    data_dir: &FsPath,
    until: Option<i64>,
    staging: &FsPath,
) -> anyhow::Result<S3Restore> {
    let started = Instant::now();
    let (store, url) = (&bucket.store, bucket.url());
    // Refused before anything is downloaded, as the store's restore would refuse it after.
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .with_context(|| format!("reading {}", data_dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new directory",
            data_dir.display()
        );
    }
    let repo = staging.join("restore");
    let mut downloaded = 0u64;
    if let Some(text) = fetch_small(store, url, CHAIN).await? {
        let chain: Chain = serde_json::from_slice(&text)
            .with_context(|| format!("{CHAIN} in {url} is not valid"))?;
        tokio::fs::create_dir_all(&repo)
            .await
            .with_context(|| format!("creating {}", repo.display()))?;
        tokio::fs::write(repo.join(CHAIN), &text)
            .await
            .context("writing the chain's manifest")?;
        // Only the backups the restore applies (the store's restore chooses the same ones).
        for b in chain
            .backups
            .iter()
            .take_while(|b| until.is_none_or(|t| b.started_at <= t))
        {
            for f in &b.files {
                check_name(url, &b.dir)?;
                check_name(url, &f.name)?;
                let name = format!("{}/{}", b.dir, f.name);
                downloaded += download(store, url, &name, &repo.join(&b.dir).join(&f.name)).await?;
            }
        }
        let report = {
            let (from, to) = (repo.clone(), data_dir.to_owned());
            blocking(move || incremental::restore_chain(&from, &to, until)).await?
        };
        return Ok(S3Restore::Chain {
            report,
            downloaded,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let Some(text) = fetch_small(store, url, MANIFEST).await? else {
        bail!("{url} holds no backup ({MANIFEST}) and no backup chain ({CHAIN})");
    };
    if until.is_some() {
        bail!(
            "--until needs a backup chain (made with `store backup --incremental`); {url} is not one"
        );
    }
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{MANIFEST} in {url} is not valid"))?;
    tokio::fs::create_dir_all(&repo)
        .await
        .with_context(|| format!("creating {}", repo.display()))?;
    tokio::fs::write(repo.join(MANIFEST), &text)
        .await
        .context("writing the backup's manifest")?;
    for f in &manifest.files {
        check_name(url, &f.name)?;
        downloaded += download(store, url, &f.name, &repo.join(&f.name)).await?;
    }
    let report = {
        let (from, to) = (repo.clone(), data_dir.to_owned());
        blocking(move || local::restore(&from, &to)).await?
    };
    Ok(S3Restore::Full {
        report,
        downloaded,
        seconds: started.elapsed().as_secs_f64(),
    })
}
