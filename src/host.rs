//! One host during a run: its connection, template context, facts, and the read and
//! write primitives steps and probes are built from (reads see the planning overlay).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use minijinja::Value;
use serde::Serialize;

use crate::diag::Pos;
use crate::plan::{Op, Undo};
use crate::quote::Cmd;
use crate::template;
use crate::transport::{Conn, Output, TransportError};
use crate::yaml::At;

/// An error while probing, planning or applying on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The transport failed: the host is unreachable or a command timed out.
    Transport(TransportError),
    /// Anything else: a command failed, a template did not render, bad remote data.
    Failed(String),
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Transport(t) => write!(f, "{t}"),
            HostError::Failed(s) => f.write_str(s),
        }
    }
}

impl From<TransportError> for HostError {
    fn from(e: TransportError) -> Self {
        HostError::Transport(e)
    }
}

pub type HResult<T> = Result<T, HostError>;

pub fn failed<T>(msg: impl Into<String>) -> HResult<T> {
    Err(HostError::Failed(msg.into()))
}

/// Facts gathered from a host in one round trip.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Facts {
    pub hostname: String,
    pub kernel: String,
    pub arch: String,
    pub os_id: String,
    pub os_version: String,
    pub systemd: bool,
    pub uid: u32,
}

/// Facts as NUL-terminated fields: a hostname may hold anything but NUL (newlines too),
/// and comes back byte for byte (`$(…; echo .)` keeps command substitution from eating
/// trailing newlines; the dot and `uname`'s own newline are then cut).
const FACTS_SCRIPT: &str = r#"n=$(uname -n; echo .); n=${n%?}; n=${n%?}
printf '%s\0' "$n" "$(uname -r)" "$(uname -m)"
( . /etc/os-release 2>/dev/null; printf '%s\0' "${ID:-unknown}" "${VERSION_ID:-}" )
if [ -d /run/systemd/system ]; then printf 'systemd\0'; else printf 'other\0'; fi
printf '%s\0' "$(id -u)""#;

/// A file as read from a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub content: Vec<u8>,
    /// Octal permission bits, e.g. "644".
    pub mode: String,
    pub uid: String,
    pub gid: String,
    /// The path with symlinks resolved: writes go there.
    pub real_path: String,
}

const READ_FILE: &str = r#"[ -e "$1" ] || exit 3
stat -L -c '%a %u %g' -- "$1" || exit 4
readlink -f -- "$1"
exec cat -- "$1""#;

/// Write stdin to $1 atomically: through symlinks, temp file in the same directory,
/// fsync, rename; mode $2 (empty: keep the old mode, else 0644), owner $3:$4 if given.
/// The temp file is removed on any failure, so a full disk leaves the original intact.
pub const WRITE_FILE: &str = r#"set -e
p=$(readlink -f -- "$1") || p=$1
d=$(dirname -- "$p")
[ -d "$d" ] || { echo "directory $d does not exist" >&2; exit 1; }
t=$(mktemp "$d/.kfix-tmp.XXXXXX")
trap 'rm -f -- "$t"' EXIT
cat > "$t"
if [ -n "$2" ]; then chmod "$2" "$t"; elif [ -e "$p" ]; then chmod --reference="$p" "$t"; else chmod 644 "$t"; fi
if [ -n "$3" ]; then chown "$3:$4" "$t"; elif [ -e "$p" ]; then chown --reference="$p" "$t"; fi
sync -- "$t"
mv -f -- "$t" "$p"
trap - EXIT
sync -- "$d" 2>/dev/null || true"#;

/// Remove a file that a step created (undo of a write to a path that did not exist).
pub const REMOVE_FILE: &str = r#"p=$(readlink -f -- "$1") || p=$1
rm -f -- "$p""#;

/// A file as an earlier step of the plan will leave it.
#[derive(Clone, Debug)]
pub struct PredictedFile {
    pub content: Vec<u8>,
    /// The mode the step sets (as `stat %a` prints it), if it sets one.
    pub mode: Option<String>,
}

/// Octal mode as `stat -c %a` prints it: "0600" -> "600", "0" stays "0".
pub fn normalize_mode(m: &str) -> String {
    let t = m.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// A host's predicted state during planning: what earlier steps of the plan will have
/// changed, so later steps plan against it instead of the current state.
#[derive(Default, Debug)]
pub struct Overlay {
    pub files: BTreeMap<String, Option<PredictedFile>>,
    pub services: BTreeMap<String, bool>,
    /// iptables chains a planned flush empties: (table, chain), chain "*" for all.
    pub flushed: std::collections::BTreeSet<(String, String)>,
    /// The state each service had when planning first looked at it.
    pub initial_services: BTreeMap<String, bool>,
    pub paths: BTreeMap<String, bool>,
}

/// Everything a step or probe needs from its host.
pub struct Host {
    /// Shared: `kfix check --all` assesses every playbook over one connection.
    pub conn: std::sync::Arc<Conn>,
    pub ctx: Value,
    pub facts: Facts,
    pub run_id: String,
    pub playbook_file: String,
    pub overlay: Mutex<Overlay>,
    /// When false (probing, applying), reads ignore the overlay and see the host as it is.
    pub use_overlay: std::sync::atomic::AtomicBool,
    /// The run's secret values by variable name: never sent as a command argument.
    pub secrets: Vec<(String, String)>,
}

impl Host {
    pub fn overlay_on(&self) -> bool {
        self.use_overlay.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Planning reads through the overlay; probing and applying see the real host.
    pub fn set_overlay(&self, on: bool) {
        self.use_overlay
            .store(on, std::sync::atomic::Ordering::Relaxed);
        if on && let Ok(mut ov) = self.overlay.lock() {
            ov.files.clear();
            ov.services.clear();
            ov.paths.clear();
            ov.flushed.clear();
        }
    }

    pub async fn run(&self, cmd: &Cmd) -> HResult<Output> {
        self.refuse_exposed(cmd)?;
        Ok(self.conn.run(cmd).await?)
    }

    /// An error when a secret value is among `cmd`'s arguments: the target's process
    /// list (`ps`) would show it. Stdin is not checked: it is where secrets belong.
    pub fn refuse_exposed(&self, cmd: &Cmd) -> HResult<()> {
        match exposed_secret(cmd, &self.secrets) {
            None => Ok(()),
            Some(name) => failed(format!(
                "the value of secret variable `{name}` would be an argument of `{}`, visible in the target's process list; kfix refuses to send it\n  = hint: give it to the command on stdin (a `command` step's `stdin:`), or write it with a `file` step",
                cmd.argv.first().map_or("", String::as_str)
            )),
        }
    }

    /// Run and require exit 0; the error carries the command's stderr.
    pub async fn run_ok(&self, cmd: &Cmd) -> HResult<Output> {
        let out = self.run(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            failed(format!(
                "`{}` exited with {}: {}",
                short(&cmd.to_shell()),
                out.code.map_or("a signal".to_string(), |c| c.to_string()),
                out.stderr()
            ))
        }
    }

    /// Render a playbook string; errors name the playbook position.
    pub fn render(&self, t: &At<String>) -> HResult<String> {
        template::render(&t.value, &self.ctx).map_err(|e| HostError::Failed(self.at(t.pos, &e)))
    }

    pub fn render_opt(&self, t: &Option<At<String>>) -> HResult<Option<String>> {
        t.as_ref().map(|t| self.render(t)).transpose()
    }

    pub fn render_words(&self, w: &At<crate::playbook::Words>) -> HResult<Vec<String>> {
        w.value
            .0
            .iter()
            .map(|s| {
                template::render(s, &self.ctx).map_err(|e| HostError::Failed(self.at(w.pos, &e)))
            })
            .collect()
    }

    pub fn at(&self, pos: Pos, msg: &str) -> String {
        format!("{}:{}:{}: {msg}", self.playbook_file, pos.line, pos.col)
    }

    /// Read a file (None when it does not exist), through the planning overlay.
    pub async fn read_file(&self, path: &str) -> HResult<Option<FileInfo>> {
        let real = self.read_file_real(path).await?;
        if self.overlay_on() {
            let ov = self
                .overlay
                .lock()
                .map_err(|_| HostError::Failed("overlay lock poisoned".into()))?;
            let key = real
                .as_ref()
                .map_or(path.to_string(), |f| f.real_path.clone());
            if let Some(predicted) = ov.files.get(&key) {
                return Ok(predicted.clone().map(|p| match real {
                    Some(f) => FileInfo {
                        content: p.content,
                        mode: p.mode.unwrap_or(f.mode.clone()),
                        ..f
                    },
                    None => FileInfo {
                        content: p.content,
                        // WRITE_FILE creates files 0644 unless a mode is given.
                        mode: p.mode.unwrap_or_else(|| "644".into()),
                        uid: "0".into(),
                        gid: "0".into(),
                        real_path: key.clone(),
                    },
                }));
            }
        }
        Ok(real)
    }

    async fn read_file_real(&self, path: &str) -> HResult<Option<FileInfo>> {
        let out = self.run(&Cmd::script(READ_FILE, [path])).await?;
        match out.code {
            Some(3) => return Ok(None),
            Some(0) => {}
            _ => return failed(format!("cannot read {path}: {}", out.stderr())),
        }
        let mut parts = out.stdout.splitn(3, |b| *b == b'\n');
        let stat = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let real_path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let content = parts.next().unwrap_or_default().to_vec();
        let mut s = stat.split_whitespace();
        let (Some(mode), Some(uid), Some(gid)) = (s.next(), s.next(), s.next()) else {
            return failed(format!("cannot stat {path}: unexpected output `{stat}`"));
        };
        Ok(Some(FileInfo {
            content,
            mode: mode.to_string(),
            uid: uid.to_string(),
            gid: gid.to_string(),
            real_path,
        }))
    }

    /// Record a predicted file content and mode (planning only); None: removed.
    pub fn predict_file(&self, real_path: &str, content: Option<Vec<u8>>, mode: Option<&str>) {
        if let Ok(mut ov) = self.overlay.lock() {
            let p = content.map(|content| PredictedFile {
                content,
                mode: mode.map(normalize_mode),
            });
            ov.files.insert(real_path.to_string(), p);
        }
    }

    pub fn predict_service(&self, name: &str, active: bool) {
        if let Ok(mut ov) = self.overlay.lock() {
            ov.services.insert(name.to_string(), active);
        }
    }

    /// Remember the state a service had before the plan touched it (first call wins).
    pub fn note_initial_service(&self, name: &str, active: bool) {
        if let Ok(mut ov) = self.overlay.lock() {
            ov.initial_services
                .entry(name.to_string())
                .or_insert(active);
        }
    }

    pub fn initial_service(&self, name: &str) -> Option<bool> {
        self.overlay
            .lock()
            .ok()
            .and_then(|ov| ov.initial_services.get(name).copied())
    }

    pub fn predicted_service(&self, name: &str) -> Option<bool> {
        if !self.overlay_on() {
            return None;
        }
        self.overlay
            .lock()
            .ok()
            .and_then(|ov| ov.services.get(name).copied())
    }

    pub fn predict_flush(&self, table: &str, chain: &str) {
        if let Ok(mut ov) = self.overlay.lock() {
            ov.flushed.insert((table.to_string(), chain.to_string()));
        }
    }

    /// Will a planned flush have emptied this chain?
    pub fn predicted_flushed(&self, table: &str, chain: &str) -> bool {
        self.overlay_on()
            && self.overlay.lock().is_ok_and(|ov| {
                ov.flushed.contains(&(table.to_string(), chain.to_string()))
                    || ov.flushed.contains(&(table.to_string(), "*".to_string()))
            })
    }

    pub fn predict_path(&self, path: &str, exists: bool) {
        if let Ok(mut ov) = self.overlay.lock() {
            ov.paths.insert(path.to_string(), exists);
        }
    }

    /// Does a path exist (no symlink following on the last component)?
    pub async fn path_exists(&self, path: &str) -> HResult<bool> {
        if self.overlay_on()
            && let Some(e) = self
                .overlay
                .lock()
                .ok()
                .and_then(|ov| ov.paths.get(path).copied())
        {
            return Ok(e);
        }
        let out = self
            .run(&Cmd::script(r#"[ -e "$1" ] || [ -L "$1" ]"#, [path]))
            .await?;
        Ok(out.success())
    }
}

/// The operations that write a file atomically, and undo it, for a planned change.
pub fn write_op(path: &str, before: Option<&FileInfo>, after: &[u8], mode: Option<&str>) -> Op {
    let target = before.map_or(path.to_string(), |b| b.real_path.clone());
    let cmd = Cmd::script(
        WRITE_FILE,
        [
            target.clone(),
            mode.unwrap_or("").to_string(),
            String::new(),
            String::new(),
        ],
    )
    .with_stdin(after.to_vec());
    let undo = Undo::Cmd(match before {
        Some(b) => Cmd::script(
            WRITE_FILE,
            [target.clone(), b.mode.clone(), b.uid.clone(), b.gid.clone()],
        )
        .with_stdin(b.content.clone()),
        None => Cmd::script(REMOVE_FILE, [target.clone()]),
    });
    let desc = match (before, path == target) {
        (Some(_), true) => format!("write {path} (atomic)"),
        (Some(_), false) => format!("write {target} (through symlink {path}, atomic)"),
        (None, _) => format!("create {path} (atomic)"),
    };
    Op::new(desc, cmd, undo).probe(Cmd::script(
        r#"if [ -e "$1" ]; then stat -c '%a %u %g' -- "$1" && sha256sum < "$1"; else echo absent; fi"#,
        [target],
    ))
}

/// Gather facts in one round trip.
pub async fn gather_facts(conn: &Conn) -> HResult<Facts> {
    let out = conn
        .run(&Cmd::script(FACTS_SCRIPT, Vec::<String>::new()))
        .await?;
    if !out.success() {
        return failed(format!("gathering facts failed: {}", out.stderr()));
    }
    let text = out.stdout();
    let l: Vec<&str> = text.split('\0').collect();
    let get = |i: usize| l.get(i).map(|s| s.trim().to_string()).unwrap_or_default();
    Ok(Facts {
        hostname: l.first().map(|s| s.to_string()).unwrap_or_default(),
        kernel: get(1),
        arch: get(2),
        os_id: get(3),
        os_version: get(4),
        systemd: get(5) == "systemd",
        uid: get(6).parse().unwrap_or(u32::MAX),
    })
}

/// Shorten a long command line for error messages.
pub fn short(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() > 120 || s.contains('\n') {
        let cut: String = first.chars().take(117).collect();
        format!("{cut}...")
    } else {
        first.to_string()
    }
}

/// Diff two texts as a unified diff with file headers.
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("a{}", prefix_slash(path)),
            &format!("b{}", prefix_slash(path)),
        )
        .to_string()
}

fn prefix_slash(p: &str) -> String {
    if Path::new(p).is_absolute() {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// The name of the first secret whose value appears in one of `cmd`'s arguments.
pub fn exposed_secret<'a>(cmd: &Cmd, secrets: &'a [(String, String)]) -> Option<&'a str> {
    secrets
        .iter()
        .find(|(_, v)| !v.is_empty() && cmd.argv.iter().any(|a| a.contains(v.as_str())))
        .map(|(n, _)| n.as_str())
}
