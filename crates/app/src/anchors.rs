//! Audit chain anchors (issue 18 item 3): the chain head — newest record id and hash — signed
//! with the audit key and appended, one JSON line each, to a file outside the data directory
//! (`audit_anchor_file`, by default next to the JWT secret file), and logged. Whoever can
//! rewrite the data directory but not that file cannot make `espwatch audit verify` accept a
//! rewritten chain (the anchored record's hash changes) or a truncated one (the anchored
//! record is gone).
//!
//! What an anchor cannot cover: records appended after the newest anchor (at most
//! `audit_anchor_secs` of them, plus whatever the server appended after its last anchor if it
//! was killed); those are protected by the keyed chain only.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use espwatch_store::{AuditFilter, AuditKey, AuditVerification, SecurityStore};
use serde::{Deserialize, Serialize};

/// One anchor line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    /// The newest audit record at anchoring time.
    pub id: i64,
    /// Its chain hash.
    pub hash: String,
    /// When the anchor was written (RFC 3339, UTC).
    pub ts: String,
    /// HMAC-SHA256 of `id`, `hash` and `ts` with the audit key.
    pub mac: String,
}

impl Anchor {
    fn mac_parts<'a>(id: &'a str, hash: &'a str, ts: &'a str) -> [&'a [u8]; 4] {
        [
            b"espwatch audit anchor",
            id.as_bytes(),
            hash.as_bytes(),
            ts.as_bytes(),
        ]
    }

    pub fn new(key: &AuditKey, id: i64, hash: &str) -> Anchor {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let id_text = id.to_string();
        let mac = key.mac(&Self::mac_parts(&id_text, hash, &ts));
        Anchor {
            id,
            hash: hash.to_owned(),
            ts,
            mac,
        }
    }

    pub fn is_authentic(&self, key: &AuditKey) -> bool {
        let id = self.id.to_string();
        key.verify_mac(&Self::mac_parts(&id, &self.hash, &self.ts), &self.mac)
    }
}

/// Where anchors go, and the key that signs them.
pub struct AnchorLog {
    pub path: Option<PathBuf>,
    key: AuditKey,
}

impl AnchorLog {
    pub fn new(path: Option<PathBuf>, key: AuditKey) -> AnchorLog {
        AnchorLog { path, key }
    }

    /// Signs and records the chain head: a log line always, and a line appended (and synced)
    /// to the anchor file when there is one. Blocking file I/O: call off the async runtime.
    pub fn write(&self, id: i64, hash: &str) -> anyhow::Result<Anchor> {
        let anchor = Anchor::new(&self.key, id, hash);
        let line = serde_json::to_string(&anchor)?;
        tracing::info!(target: "espwatch::audit_anchor", anchor = %line, "audit chain anchored");
        if let Some(path) = &self.path {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("opening the audit anchor file {}", path.display()))?;
            writeln!(file, "{line}")
                .and_then(|()| file.sync_data())
                .with_context(|| format!("writing the audit anchor file {}", path.display()))?;
        }
        Ok(anchor)
    }

    /// Anchors the store's current chain head (nothing when the trail is empty).
    pub async fn anchor_head(&self, store: &dyn SecurityStore) -> anyhow::Result<Option<i64>> {
        let head = store
            .list_audit(&AuditFilter {
                limit: 1,
                ..AuditFilter::default()
            })
            .await?;
        let Some(head) = head.into_iter().next() else {
            return Ok(None);
        };
        let (id, hash) = (head.id, head.hash);
        let this = AnchorLog {
            path: self.path.clone(),
            key: self.key.clone(),
        };
        tokio::task::spawn_blocking(move || this.write(id, &hash))
            .await
            .context("anchor writer task")??;
        Ok(Some(id))
    }
}

/// Every line of an anchor file (a missing file is empty).
pub fn read_anchors(path: &Path) -> anyhow::Result<Vec<Anchor>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut anchors = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        anchors.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {} is not an anchor", path.display(), n + 1))?,
        );
    }
    Ok(anchors)
}

/// Holds a verified chain against the anchors: every anchor must be authentic, and the
/// newest one's record must still exist with the anchored hash. Returns the problems found
/// (empty: consistent) and the newest anchor.
pub async fn check_anchors(
    store: &dyn SecurityStore,
    verification: &AuditVerification,
    anchors: &[Anchor],
    key: &AuditKey,
) -> anyhow::Result<(Vec<String>, Option<Anchor>)> {
    let mut problems = Vec::new();
    for (n, anchor) in anchors.iter().enumerate() {
        if !anchor.is_authentic(key) {
            problems.push(format!(
                "anchor line {} is not signed with this audit key (forged, altered, or another secret)",
                n + 1
            ));
        }
    }
    let newest = anchors
        .iter()
        .filter(|a| a.is_authentic(key))
        .max_by_key(|a| a.id)
        .cloned();
    if let Some(anchor) = &newest {
        let head_id = verification.head.as_ref().map_or(0, |(id, _)| *id);
        if head_id < anchor.id {
            problems.push(format!(
                "records {}..={} are missing: the trail was anchored at record {} on {} and now ends at {head_id} (the newest records were deleted)",
                head_id + 1,
                anchor.id,
                anchor.id,
                anchor.ts
            ));
        } else {
            let record = store
                .list_audit(&AuditFilter {
                    before_id: Some(anchor.id + 1),
                    limit: 1,
                    ..AuditFilter::default()
                })
                .await?;
            match record.first() {
                Some(r) if r.id == anchor.id && r.hash == anchor.hash => {}
                Some(r) if r.id == anchor.id => problems.push(format!(
                    "record {} does not have the hash anchored on {} (the trail up to it was rewritten)",
                    anchor.id, anchor.ts
                )),
                _ => problems.push(format!(
                    "record {} anchored on {} is missing",
                    anchor.id, anchor.ts
                )),
            }
        }
    }
    Ok((problems, newest))
}
