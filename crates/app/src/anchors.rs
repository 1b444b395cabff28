//! Audit chain anchors (issue 18 item 3): the chain head — newest record id and hash — signed
//! with the audit key and appended, one JSON line each, to a file outside the data directory
//! (`audit_anchor_file`, by default next to the JWT secret file), and logged. Whoever can
//! rewrite the data directory but not that file cannot make `espwatch audit verify` accept a
//! rewritten chain (the anchored record's hash changes) or a truncated one (the anchored
//! record is gone).
//!
//! A second sink: with `audit_anchor_syslog` (a syslog socket, usually `/dev/log`) every anchor
//! is also sent to syslog (facility authpriv, severity notice, tag `espwatch`, the line
//! `espwatch-audit-anchor {json}`), where the system's logger — often forwarding to another
//! machine — keeps it beyond the reach of the data directory's owner. `espwatch audit verify
//! --syslog-anchors FILE` reads the anchors back from such a log (any line carrying the
//! marker; the rest is ignored) and checks the chain against them as against the file.
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

/// What precedes an anchor's JSON in a syslog line.
pub const SYSLOG_MARKER: &str = "espwatch-audit-anchor ";

/// Where anchors go, and the key that signs them.
pub struct AnchorLog {
    pub path: Option<PathBuf>,
    /// A syslog datagram socket (e.g. `/dev/log`) every anchor is also sent to.
    pub syslog: Option<PathBuf>,
    key: AuditKey,
}

impl AnchorLog {
    pub fn new(path: Option<PathBuf>, key: AuditKey) -> AnchorLog {
        AnchorLog {
            path,
            syslog: None,
            key,
        }
    }

    /// Also sends every anchor to the syslog socket `socket`.
    pub fn with_syslog(mut self, socket: Option<PathBuf>) -> AnchorLog {
        self.syslog = socket;
        self
    }

    /// Sends an anchor line to syslog (RFC 3164 on the local socket: `<PRI>TAG[PID]: MSG`;
    /// the logger adds time and host). authpriv.notice: PRI = 10 × 8 + 5.
    #[cfg(unix)]
    fn send_syslog(socket: &Path, line: &str) -> anyhow::Result<()> {
        let message = format!(
            "<85>espwatch[{}]: {SYSLOG_MARKER}{line}",
            std::process::id()
        );
        let sender = std::os::unix::net::UnixDatagram::unbound()?;
        sender
            .send_to(message.as_bytes(), socket)
            .with_context(|| {
                format!("sending the audit anchor to syslog at {}", socket.display())
            })?;
        Ok(())
    }

    #[cfg(not(unix))]
    fn send_syslog(socket: &Path, _line: &str) -> anyhow::Result<()> {
        anyhow::bail!("syslog anchors need a Unix socket ({})", socket.display())
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
        if let Some(socket) = &self.syslog {
            Self::send_syslog(socket, &line)?;
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
            syslog: self.syslog.clone(),
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

/// The anchors in a syslog file (or any log): every line carrying [`SYSLOG_MARKER`], the
/// others ignored. A marked line that does not parse is an error (an altered log).
pub fn read_syslog_anchors(path: &Path) -> anyhow::Result<Vec<Anchor>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut anchors = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Some(at) = line.find(SYSLOG_MARKER) else {
            continue;
        };
        let json = line[at + SYSLOG_MARKER.len()..].trim();
        anchors.push(serde_json::from_str(json).with_context(|| {
            format!(
                "{} line {} carries an audit anchor that does not parse",
                path.display(),
                n + 1
            )
        })?);
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
        let pruned_through = verification.pruned.as_ref().map_or(0, |(id, _)| *id);
        if anchor.id <= pruned_through {
            // The anchored record was pruned; the verified prune record names the last one.
            if let Some((id, hash)) = &verification.pruned
                && *id == anchor.id
                && *hash != anchor.hash
            {
                problems.push(format!(
                    "record {} does not have the hash anchored on {} (the trail up to it was rewritten)",
                    anchor.id, anchor.ts
                ));
            }
        } else if head_id < anchor.id {
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn anchors_sent_to_syslog_are_read_back_from_its_log() {
        let dir = std::env::temp_dir().join(format!("espwatch-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("log.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let key = AuditKey::derive(b"a secret of at least thirty-two bytes, for the test");
        let log = AnchorLog::new(None, key.clone()).with_syslog(Some(socket.clone()));
        let anchor = log.write(42, "k2:abc").unwrap();

        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).unwrap();
        let message = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(message.starts_with("<85>espwatch["), "{message}");
        // As rsyslog writes it to a file: time, host, tag, message; other lines around it.
        let body = &message[message.find("]: ").unwrap() + 3..];
        let file = dir.join("auth.log");
        std::fs::write(
            &file,
            format!(
                "Dec  4 21:40:00 host sshd[1]: Accepted publickey\nDec  4 21:40:01 host espwatch[7]: {body}\n"
            ),
        )
        .unwrap();
        let read = read_syslog_anchors(&file).unwrap();
        assert_eq!(read, vec![anchor]);
        assert!(read[0].is_authentic(&key));
        // An altered anchor line is refused, not skipped.
        std::fs::write(&file, format!("x espwatch[7]: {SYSLOG_MARKER}{{\"id\": 4")).unwrap();
        assert!(read_syslog_anchors(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
