//! The run journal: one append-only JSON-lines file per real run under the state
//! directory. Each operation's undo data is written and fsynced *before* the operation
//! runs, so a controller killed at any point leaves enough to roll every host back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::plan::Undo;
use crate::quote::Cmd;

/// How to reach a host again without the inventory (for `kfix rollback`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetRec {
    pub local: bool,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<String>,
    pub become_: bool,
    pub become_user: Option<String>,
    /// Jump hosts (`ssh -J`), when the inventory went through one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jump: Vec<String>,
}

/// Where a delegated operation ran (`run_on`): the delegate's inventory name and how to
/// reach it, so its undo runs there too.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OnRec {
    pub host: String,
    pub target: TargetRec,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what ran, by whom, against what.
    Run {
        run_id: String,
        started_unix: u64,
        operator: String,
        playbook: String,
        playbook_hash: String,
        playbook_file: String,
        inventory: Option<String>,
        limit: Option<String>,
        ssh_config: Option<String>,
        kfix_version: String,
    },
    /// A host about to be changed, with how to reach it.
    Host { host: String, target: TargetRec },
    /// The planned change of a step on a host.
    Plan {
        host: String,
        step: String,
        verdict: String,
        diff: String,
    },
    /// An operation about to run: its undo and the fingerprint of the state before.
    Op {
        host: String,
        step: String,
        index: usize,
        desc: String,
        undo: Undo,
        /// The operation's fingerprint command (`probe` in journals: the name they
        /// have always had on disk).
        #[serde(rename = "probe")]
        fingerprint: Option<Cmd>,
        before: Option<String>,
        /// Set when the operation ran on a delegate host (`run_on`), not on `host`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on: Option<OnRec>,
        /// The file it writes and the digest of the bytes written (a file write).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wrote: Option<crate::plan::Written>,
    },
    /// The operation finished; `after` fingerprints the state it left.
    OpDone {
        host: String,
        index: usize,
        ok: bool,
        after: Option<String>,
        error: Option<String>,
    },
    /// After the host's last step: the state an operation left, read again because a
    /// later step whose effect kfix cannot see (a service restart, a command) may have
    /// changed it (flanneld recreating a device a step deleted). `kfix rollback`
    /// compares this instead of `OpDone`'s `after`.
    Settled {
        host: String,
        index: usize,
        after: Option<String>,
    },
    /// An operation was undone (by the run's own rollback or by `kfix rollback`).
    Undone {
        host: String,
        index: usize,
        ok: bool,
        by: String,
        error: Option<String>,
    },
    /// The host's final status in this run (or in a rollback of it).
    HostDone {
        host: String,
        status: String,
        reason: Option<String>,
    },
    /// The run ended (absent when the controller was killed).
    End {
        finished_unix: u64,
        summary: std::collections::BTreeMap<String, usize>,
    },
}

/// Where a secret's value was in a journaled undo's stdin (e.g. a file's earlier content
/// that held it): `kfix rollback` puts the value back when it is given again.
pub fn secret_marker(name: &str) -> String {
    format!("{MARKER_OPEN}{name}{MARKER_CLOSE}")
}

/// The two ends of a [`secret_marker`].
const MARKER_OPEN: &str = "{{kfix-secret:";
const MARKER_CLOSE: &str = "}}";

pub(crate) fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if !needle.is_empty() && hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

impl Record {
    /// The record as it may be written: every secret value in its text replaced by
    /// `********`, and in an undo's stdin by [`secret_marker`] (so a rollback given the
    /// value again restores the exact bytes). Arguments never hold secrets: planning
    /// refuses any command that would carry one.
    pub fn sealed(mut self, secrets: &[(String, String)]) -> Record {
        if secrets.is_empty() {
            return self;
        }
        let mask = |s: &mut String| crate::secrets::mask(s, secrets);
        match &mut self {
            Record::Plan { diff, .. } => mask(diff),
            Record::Op { desc, undo, .. } => {
                mask(desc);
                if let Undo::Cmd(Cmd {
                    stdin: Some(input), ..
                })
                | Undo::Last(Cmd {
                    stdin: Some(input), ..
                }) = undo
                {
                    for (name, v) in secrets {
                        *input = replace_bytes(input, v.as_bytes(), secret_marker(name).as_bytes());
                    }
                }
            }
            Record::OpDone { error, .. } | Record::Undone { error, .. } => {
                if let Some(e) = error {
                    mask(e);
                }
            }
            Record::HostDone { reason, .. } => {
                if let Some(r) = reason {
                    mask(r);
                }
            }
            Record::Run { .. }
            | Record::Host { .. }
            | Record::Settled { .. }
            | Record::End { .. } => {}
        }
        self
    }
}

/// Put secret values back where [`Record::sealed`] marked them in an undo's stdin.
/// Errors with the names of the secrets it needs and was not given.
pub fn unseal(cmd: &Cmd, secrets: &[(String, String)]) -> Result<Cmd, Vec<String>> {
    let Some(input) = &cmd.stdin else {
        return Ok(cmd.clone());
    };
    let mut out = input.clone();
    for (name, v) in secrets {
        out = replace_bytes(&out, secret_marker(name).as_bytes(), v.as_bytes());
    }
    let text = String::from_utf8_lossy(&out);
    let mut missing: Vec<String> = text
        .match_indices(MARKER_OPEN)
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest.find(MARKER_CLOSE).map(|end| rest[..end].to_string())
        })
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Ok(Cmd {
            argv: cmd.argv.clone(),
            stdin: Some(out),
        })
    } else {
        Err(missing)
    }
}

/// Where journals live: `--state-dir`, else `$KFIX_STATE_DIR`, `$XDG_STATE_HOME/kfix`,
/// `$HOME/.local/state/kfix`.
pub fn state_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("KFIX_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|p| p.join("kfix")))
        .or_else(|| env("HOME").map(|p| p.join(".local/state/kfix")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/kfix/state"))
}

pub fn journal_path(state: &Path, run_id: &str) -> PathBuf {
    state.join("runs").join(format!("{run_id}.jsonl"))
}

/// An open journal, shared by the tasks of a run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Appends, one line at a time.
    file: Mutex<File>,
    /// A second handle on the file: its fsyncs run outside the append lock.
    syncer: Arc<File>,
    /// Lines appended so far, and made durable so far (a line's number is its count).
    written: AtomicU64,
    durable: AtomicU64,
    /// One group fsync at a time: the callers waiting meanwhile share the next one.
    syncing: tokio::sync::Mutex<()>,
    /// An fsync failed (the kernel may have dropped the data and will not say so
    /// again) or a line was cut short: nothing more is written or called durable.
    broken: AtomicBool,
    /// fsyncs so far.
    fsyncs: AtomicU64,
}

impl Journal {
    fn open(path: PathBuf, file: File) -> std::io::Result<Journal> {
        let syncer = Arc::new(file.try_clone()?);
        Ok(Journal {
            path,
            file: Mutex::new(file),
            syncer,
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: tokio::sync::Mutex::new(()),
            broken: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
        })
    }

    /// Create a new journal (fails if one exists for this run id).
    pub fn create(state: &Path, run_id: &str) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = journal_path(state, run_id);
        // Old file contents and the undo commands rollback runs as root: private.
        crate::localfs::private_dir(state)?;
        crate::localfs::private_dir(&state.join("runs"))?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Journal::open(path, file)
    }

    /// Open an existing journal for appending (rollback records).
    pub fn append_to(path: &Path) -> std::io::Result<Journal> {
        crate::localfs::written_only_by_us(path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Journal::open(path.to_path_buf(), file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fsyncs the journal has made (group commit makes it fewer than records).
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::SeqCst)
    }

    /// An error once a write or an fsync has failed (see `broken`).
    fn usable(&self) -> std::io::Result<()> {
        match self.broken.load(Ordering::SeqCst) {
            true => Err(std::io::Error::other(
                "an earlier write or fsync of the journal failed",
            )),
            false => Ok(()),
        }
    }

    /// Append one line; its number.
    fn append(&self, r: &Record) -> std::io::Result<u64> {
        self.usable()?;
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        if let Err(e) = f.write_all(&line) {
            // A line cut short (a full disk) would hide every line after it from
            // `read`: nothing more is written.
            self.broken.store(true, Ordering::SeqCst);
            return Err(e);
        }
        Ok(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// After an fsync that started once line `upto` was written.
    fn synced(&self, res: std::io::Result<()>, upto: u64) -> std::io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::SeqCst);
        match res {
            Ok(()) => {
                self.durable.fetch_max(upto, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Append one record and make it durable before returning (blocking: for callers
    /// outside a fleet's hot path).
    pub fn record(&self, r: &Record) -> std::io::Result<()> {
        let seq = self.append(r)?;
        let res = self.syncer.sync_data();
        self.synced(res, seq)
    }

    /// Append one record and make it durable before returning, sharing the fsync with
    /// the records other hosts append meanwhile (group commit): a fleet's hosts do not
    /// queue behind one fsync each, and the disk sees a handful instead of hundreds.
    pub async fn record_durable(&self, r: &Record) -> std::io::Result<()> {
        let seq = self.append(r)?;
        if self.durable.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        let _turn = self.syncing.lock().await;
        if self.durable.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        self.usable()?;
        // Every line up to here is written: this fsync covers them all.
        let upto = self.written.load(Ordering::SeqCst);
        let f = Arc::clone(&self.syncer);
        let res = tokio::task::spawn_blocking(move || f.sync_data())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.synced(res, upto)
    }
}

/// Read a journal. A truncated last line (a controller killed mid-write) is ignored.
/// A journal someone else could have written (its undo commands would run as root) is
/// refused.
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let f = File::open(path)?;
    crate::localfs::written_only_by_us(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// Every journal in the state directory, newest first.
pub fn list(state: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    v.reverse();
    v
}

/// The operator running kfix: the sudo caller if any, else the login name, else the uid.
pub fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A run id: UTC time to the millisecond plus a few random-ish hex digits, so ids
/// sort by start time and are unique enough (a journal is never overwritten anyway).
pub fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let salt = (now.subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    let ms = now.subsec_millis();
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{ms:03}-{salt:04x}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_cut_short_stops_the_journal_for_good() {
        // /dev/full: every write fails as on a full disk.
        let full = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("open");
        let j = Journal::open("/dev/full".into(), full).expect("journal");
        let r = Record::HostDone {
            host: "h1".into(),
            status: "changed".into(),
            reason: None,
        };
        assert!(j.record_durable(&r).await.is_err());
        assert!(j.broken.load(Ordering::SeqCst));
        let err = j.record(&r).expect_err("still refused");
        assert!(err.to_string().contains("earlier write or fsync"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_from_many_hosts_at_once_share_fsyncs_and_all_arrive() {
        let dir = std::env::temp_dir().join(format!("kfix-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Arc::new(Journal::create(&dir, "run-1").expect("create"));
        let n = 200;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let j = Arc::clone(&j);
                tokio::spawn(async move {
                    let r = Record::HostDone {
                        host: format!("h{i}"),
                        status: "changed".into(),
                        reason: None,
                    };
                    j.record_durable(&r).await.expect("durable");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(j.durable.load(Ordering::SeqCst), n);
        let mut hosts: Vec<String> = read(j.path())
            .expect("read")
            .into_iter()
            .map(|r| match r {
                Record::HostDone { host, .. } => host,
                other => panic!("{other:?}"),
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), n as usize, "every record, once");
        eprintln!("{} fsyncs for {n} records", j.fsyncs());
        assert!(j.fsyncs() < n / 2, "{} fsyncs for {n} records", j.fsyncs());
        // The blocking path syncs on its own.
        let before = j.fsyncs();
        j.record(&Record::HostDone {
            host: "last".into(),
            status: "ok".into(),
            reason: None,
        })
        .expect("record");
        assert_eq!(j.fsyncs(), before + 1);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_delegated_op_records_where_it_ran_and_old_journals_still_read() {
        let on = OnRec {
            host: "cp1".into(),
            target: TargetRec {
                local: false,
                address: "10.0.0.1".into(),
                port: Some(22),
                user: Some("root".into()),
                key_file: None,
                become_: false,
                become_user: None,
                jump: vec![],
            },
        };
        let op = Record::Op {
            host: "h2".into(),
            step: "s".into(),
            index: 0,
            desc: "d".into(),
            undo: Undo::Nothing,
            fingerprint: None,
            before: None,
            on: Some(on.clone()),
            wrote: None,
        };
        let line = serde_json::to_string(&op).unwrap();
        assert!(line.contains("\"on\":{\"host\":\"cp1\""), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), op);
        // A journal written before `run_on` existed has no `on`: the op ran on `host`.
        let old = r#"{"type":"op","host":"h2","step":"s","index":0,"desc":"d","undo":"nothing","probe":null,"before":null}"#;
        let Record::Op { on, .. } = serde_json::from_str::<Record>(old).unwrap() else {
            panic!("not an op");
        };
        assert_eq!(on, None);
    }

    #[test]
    fn secrets_are_sealed_in_records_and_unsealed_for_rollback() {
        let secrets = vec![("token".to_string(), "s3cr3t".to_string())];
        let undo = Cmd::new(["sh", "-c", "x"]).with_stdin(b"a=s3cr3t\nb=s3cr3t\n".to_vec());
        let op = Record::Op {
            host: "h1".into(),
            step: "s".into(),
            index: 0,
            desc: "write s3cr3t".into(),
            undo: Undo::Cmd(undo.clone()),
            fingerprint: None,
            before: None,
            on: None,
            wrote: None,
        }
        .sealed(&secrets);
        let line = serde_json::to_string(&op).unwrap();
        let Record::Op {
            desc,
            undo: Undo::Cmd(sealed),
            ..
        } = op
        else {
            panic!("{line}")
        };
        assert_eq!(desc, "write ********");
        assert_eq!(
            sealed.stdin.as_deref(),
            Some(&b"a={{kfix-secret:token}}\nb={{kfix-secret:token}}\n"[..])
        );
        assert_eq!(unseal(&sealed, &secrets), Ok(undo));
        assert_eq!(unseal(&sealed, &[]), Err(vec!["token".to_string()]));
        let done = Record::OpDone {
            host: "h1".into(),
            index: 0,
            ok: false,
            after: None,
            error: Some("bad s3cr3t".into()),
        }
        .sealed(&secrets);
        assert!(!serde_json::to_string(&done).unwrap().contains("s3cr3t"));
    }

    #[test]
    fn round_trips_and_tolerates_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("kfix-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal::create(&dir, "r1").expect("create");
        let op = Record::Op {
            host: "h1".into(),
            step: "s".into(),
            index: 0,
            desc: "write".into(),
            undo: Undo::Cmd(Cmd::new(["sh", "-c", "x"]).with_stdin(b"old\x00bytes".to_vec())),
            fingerprint: Some(Cmd::new(["cat", "/x"])),
            before: Some("0:a".into()),
            on: None,
            wrote: None,
        };
        j.record(&op).expect("write");
        assert!(
            Journal::create(&dir, "r1").is_err(),
            "a run id is never reused"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .and_then(|mut f| f.write_all(b"{\"type\":\"op_do"))
            .expect("torn write");
        assert_eq!(read(j.path()).expect("read"), vec![op]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
