//! Where archive files go: a local directory or an S3-compatible bucket, through
//! `object_store`, and the manifest that says what is where.
//!
//! Layout under the archive's root:
//! - `raw/<well>/<YYYY-MM-DD>-<checksum16>.parquet`: one file per well and UTC day archived
//!   (late readings of a day archived later make another file of that day);
//! - `manifest/raw/<well>/<YYYY-MM-DD>-<checksum16>.json`: one [`ManifestEntry`] per file,
//!   written after the file was read back and verified.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use espwatch_core::{Point, TimeRange, Timestamp, WellId};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::columns::{self, hex};

/// What the manifest records about one archive file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path of the Parquet file under the archive's root.
    pub path: String,
    pub well_id: String,
    /// The range archived, `[from, to)` in UTC microseconds (one day).
    pub from: Timestamp,
    pub to: Timestamp,
    /// Readings in the file.
    pub rows: u64,
    /// First and last reading.
    pub min_ts: Timestamp,
    pub max_ts: Timestamp,
    /// SHA-256 of the readings' values ([`columns::checksum`]).
    pub checksum: String,
    /// SHA-256 of the file's bytes.
    pub file_sha256: String,
    pub bytes: u64,
    /// When it was archived (UTC microseconds).
    pub archived_at: Timestamp,
}

impl ManifestEntry {
    pub fn range(&self) -> TimeRange {
        TimeRange {
            from: self.from,
            to: self.to,
        }
    }
}

/// An archive location.
#[derive(Clone)]
pub struct Archive {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// What the archive was opened from (for messages), credentials never included.
    url: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

/// How long a request to the archive may be retried before the job gives up for this round.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

impl Archive {
    /// Opens `url`: `s3://bucket[/prefix]` (credentials, region and endpoint from the usual
    /// `AWS_*` environment variables, e.g. `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for an
    /// S3-compatible server), `file:///dir` or a plain directory path (created if missing).
    pub fn open(url: &str) -> anyhow::Result<Archive> {
        Archive::open_with_options(url, &[])
    }

    /// [`Archive::open`] with S3 settings given explicitly (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, ...: the keys of
    /// `object_store`'s `AmazonS3ConfigKey`), taking precedence over the environment.
    pub fn open_with_options(url: &str, options: &[(String, String)]) -> anyhow::Result<Archive> {
        let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p.trim_matches('/')),
                None => (rest, ""),
            };
            if bucket.is_empty() {
                bail!("archive URL {url:?} names no bucket");
            }
            let mut builder = AmazonS3Builder::from_env();
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key
                    .parse()
                    .with_context(|| format!("unknown S3 archive option {key:?}"))?;
                builder = builder.with_config(key, value);
            }
            let s3 = builder
                .with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 3,
                    retry_timeout: RETRY_TIMEOUT,
                })
                .build()
                .with_context(|| format!("configuring the S3 archive {url}"))?;
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating archive directory {dir}"))?;
            let fs = LocalFileSystem::new_with_prefix(dir)
                .with_context(|| format!("opening archive directory {dir}"))?
                .with_automatic_cleanup(true);
            Arc::new(fs)
        };
        Ok(Archive {
            store,
            url: url.to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes the readings of `well` in `range` as one Parquet file, reads it back, checks
    /// its rows and checksum against `points`, then records it in the manifest. Returns the
    /// entry only when all of that succeeded.
    pub async fn put_verified(
        &self,
        well: &WellId,
        range: TimeRange,
        points: &[Point],
    ) -> anyhow::Result<ManifestEntry> {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            bail!("nothing to archive for {well}");
        };
        let checksum = columns::checksum(points);
        let file = {
            let well = well.clone();
            let points = points.to_vec();
            tokio::task::spawn_blocking(move || columns::encode(&well, &points))
                .await
                .context("encoding task")??
        };
        let file_sha256 = hex(&Sha256::digest(&file));
        let name = format!("{}-{}", day_name(range.from), &checksum[..16]);
        let path = Path::from_iter([
            PathPart::from("raw"),
            PathPart::from(well.as_str()),
            PathPart::from(format!("{name}.parquet")),
        ]);
        let bytes = file.len() as u64;
        self.store
            .put(&path, PutPayload::from(file))
            .await
            .with_context(|| format!("writing {path} to the archive {}", self.url))?;

        // Read back what the archive now holds, decode it, compare.
        let back = self
            .store
            .get(&path)
            .await
            .with_context(|| format!("reading back {path}"))?
            .bytes()
            .await
            .with_context(|| format!("reading back {path}"))?;
        let back_sha = hex(&Sha256::digest(&back));
        if back_sha != file_sha256 {
            bail!("archive file {path} read back with different bytes");
        }
        let decoded = tokio::task::spawn_blocking(move || columns::decode(back))
            .await
            .context("decoding task")??;
        if decoded.points.len() != points.len() {
            bail!(
                "archive file {path} holds {} readings, {} were written",
                decoded.points.len(),
                points.len()
            );
        }
        if columns::checksum(&decoded.points) != checksum || decoded.well_id != *well {
            bail!("archive file {path} read back with different values");
        }

        let entry = ManifestEntry {
            path: path.to_string(),
            well_id: well.as_str().to_owned(),
            from: range.from,
            to: range.to,
            rows: points.len() as u64,
            min_ts: first.0,
            max_ts: last.0,
            checksum,
            file_sha256,
            bytes,
            archived_at: Timestamp(now_micros()),
        };
        let manifest_path = Path::from_iter([
            PathPart::from("manifest"),
            PathPart::from("raw"),
            PathPart::from(well.as_str()),
            PathPart::from(format!("{name}.json")),
        ]);
        self.store
            .put(
                &manifest_path,
                PutPayload::from(serde_json::to_vec_pretty(&entry)?),
            )
            .await
            .with_context(|| format!("writing manifest entry {manifest_path}"))?;
        Ok(entry)
    }

    /// Manifest entries, of one well or all, by well then time.
    pub async fn list(&self, well: Option<&WellId>) -> anyhow::Result<Vec<ManifestEntry>> {
        let mut parts = vec![PathPart::from("manifest"), PathPart::from("raw")];
        if let Some(w) = well {
            parts.push(PathPart::from(w.as_str()));
        }
        let prefix = Path::from_iter(parts);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .with_context(|| format!("listing the archive {}", self.url))?;
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            if !meta.location.as_ref().ends_with(".json") {
                continue;
            }
            let body = self
                .store
                .get(&meta.location)
                .await
                .with_context(|| format!("reading {}", meta.location))?
                .bytes()
                .await?;
            let entry: ManifestEntry = serde_json::from_slice(&body)
                .with_context(|| format!("manifest entry {} is not valid", meta.location))?;
            out.push(entry);
        }
        out.sort_by(|a, b| (&a.well_id, a.from, a.min_ts).cmp(&(&b.well_id, b.from, b.min_ts)));
        Ok(out)
    }

    /// The readings of an archived file, after checking its bytes and values against the
    /// manifest.
    pub async fn read(&self, entry: &ManifestEntry) -> anyhow::Result<Vec<Point>> {
        let path = Path::parse(&entry.path)?;
        let data: Bytes = self
            .store
            .get(&path)
            .await
            .with_context(|| format!("reading {path} from the archive {}", self.url))?
            .bytes()
            .await?;
        if hex(&Sha256::digest(&data)) != entry.file_sha256 {
            bail!("archive file {path} does not match its manifest entry (bytes changed)");
        }
        let decoded = tokio::task::spawn_blocking(move || columns::decode(data))
            .await
            .context("decoding task")??;
        if decoded.points.len() as u64 != entry.rows
            || columns::checksum(&decoded.points) != entry.checksum
        {
            bail!("archive file {path} does not match its manifest entry (values)");
        }
        Ok(decoded.points)
    }
}

/// Checks an archive URL without opening it (configuration validation).
pub fn check_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        if rest.split('/').next().unwrap_or_default().is_empty() {
            return Err(format!("{url:?} names no bucket (s3://bucket[/prefix])"));
        }
        return Ok(());
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(format!(
            "{url:?}: only a directory, file:///dir or s3://bucket[/prefix] are supported"
        ));
    }
    if url.strip_prefix("file://").unwrap_or(url).is_empty() {
        return Err("an empty directory name".into());
    }
    Ok(())
}

/// Checks one `archive_options` key: an S3 setting `object_store` knows, and no credential
/// (those come from the environment, so no configuration file ever holds one).
pub fn check_s3_option(key: &str) -> Result<(), String> {
    let parsed: AmazonS3ConfigKey = key
        .parse()
        .map_err(|_| format!("{key:?} is not an S3 setting (e.g. aws_endpoint, aws_region)"))?;
    let secret = matches!(
        parsed,
        AmazonS3ConfigKey::SecretAccessKey | AmazonS3ConfigKey::Token
    ) || key.contains("secret")
        || key.contains("token")
        || key.contains("customer_key");
    if secret {
        return Err(format!(
            "{key:?} is a credential: set it in the environment (AWS_SECRET_ACCESS_KEY, \
             AWS_SESSION_TOKEN, ...), not in the configuration"
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD` of a UTC day start.
pub fn day_name(ts: Timestamp) -> String {
    chrono::DateTime::from_timestamp_micros(ts.0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| ts.0.to_string())
}

pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
