//! One host during a run: its connection, template context, facts, and the read and
//! write primitives steps and probes are built from (reads see the planning overlay).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use minijinja::Value;
use serde::Serialize;

use crate::diag::Pos;
use crate::plan::{Op, ReadPart, Undo};
use crate::quote::Cmd;
use crate::template;
use crate::transport::{Conn, Output, TransportError};
use crate::yaml::At;

mod files;
#[cfg(test)]
mod tests;

pub(crate) use files::read_files_script;
pub use files::*;

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
/// and comes back byte for byte. Hostname, kernel release and machine are read from
/// /proc/sys/kernel by the shell itself (these text files, unlike numeric /proc/sys
/// ones, read one byte at a time as dash does; `arch` is there since Linux 6.1); else
/// one `uname` prints the three, space-separated: release and machine hold no space,
/// so they are the last two fields and the hostname is the rest (`$(…; echo .)` keeps
/// command substitution from eating trailing newlines; the dot and `uname`'s own
/// newline are then cut). The effective uid is read from /proc/self/status by the
/// shell too (`id -u` where there is no /proc).
const FACTS_SCRIPT: &str = r#"n= r= m= k=/proc/sys/kernel
if [ -r $k/hostname ] && IFS= read -r r <$k/osrelease && IFS= read -r m <$k/arch; then
  while IFS= read -r x; do n=$n$x'
'; done <$k/hostname; n=${n%?}
else
  n=$(uname -n -r -m; echo .); n=${n%?}; n=${n%?}
  m=${n##* }; n=${n% *}; r=${n##* }; n=${n% *}
fi 2>/dev/null
printf '%s\0' "$n" "$r" "$m"
( . /etc/os-release 2>/dev/null; printf '%s\0' "${ID:-unknown}" "${VERSION_ID:-}" )
if [ -d /run/systemd/system ]; then printf 'systemd\0'; else printf 'other\0'; fi
u=; while IFS=' 	' read -r k r e x; do [ "$k" = Uid: ] && { u=$e; break; }; done 2>/dev/null </proc/self/status
printf '%s\0' "${u:-$(id -u)}""#;

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
    /// Built-in chains' policies a planned step sets: (table, chain) -> policy.
    pub policies: BTreeMap<(String, String), String>,
    /// The state each service had when planning first looked at it.
    pub initial_services: BTreeMap<String, bool>,
    pub paths: BTreeMap<String, bool>,
}

/// Outputs of the read-only commands sent while a host is assessed (preconditions,
/// gathering, planning, detection): the same read asked again in that phase (detection
/// re-reading what planning read) costs no round trip. Off, and emptied, before
/// anything changes the host: applying re-reads everything fresh. On again after the
/// last change, for verification, holding the reads sent along with that change.
#[derive(Default)]
pub struct ReadCache(Mutex<Option<std::collections::HashMap<Vec<String>, Output>>>);

impl ReadCache {
    /// Start remembering reads (an empty cache).
    pub fn enable(&self) {
        if let Ok(mut c) = self.0.lock() {
            *c = Some(Default::default());
        }
    }

    /// Remember these answers (read after the last change, see
    /// [`crate::probe::read_of`]) and whatever is read next, until [`Self::disable`].
    pub fn prime(&self, answers: Vec<(Cmd, Output)>) {
        self.enable();
        for (cmd, out) in answers {
            self.put(&cmd, &out);
        }
    }

    /// Forget every read and stop remembering.
    pub fn disable(&self) {
        if let Ok(mut c) = self.0.lock() {
            *c = None;
        }
    }

    fn forget(&self, cmd: &Cmd) {
        if let Ok(mut c) = self.0.lock()
            && let Some(m) = c.as_mut()
        {
            m.remove(&cmd.argv);
        }
    }

    fn get(&self, cmd: &Cmd) -> Option<Output> {
        let c = self.0.lock().ok()?;
        c.as_ref()?.get(&cmd.argv).cloned()
    }

    fn put(&self, cmd: &Cmd, out: &Output) {
        if let Ok(mut c) = self.0.lock()
            && let Some(m) = c.as_mut()
        {
            m.insert(cmd.argv.clone(), out.clone());
        }
    }
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
    /// Reads remembered during assessment (see [`ReadCache`]).
    pub reads: ReadCache,
}

impl Host {
    /// A host about to be assessed: no planning overlay yet, remembering its reads.
    pub fn assessing(
        conn: std::sync::Arc<Conn>,
        ctx: Value,
        facts: Facts,
        run_id: String,
        playbook_file: String,
        secrets: Vec<(String, String)>,
    ) -> Host {
        let h = Host {
            conn,
            ctx,
            facts,
            run_id,
            playbook_file,
            overlay: Mutex::default(),
            use_overlay: std::sync::atomic::AtomicBool::new(false),
            secrets,
            reads: ReadCache::default(),
        };
        h.reads.enable();
        h
    }

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
            ov.policies.clear();
        }
    }

    /// Run a read-only command (steps' planning, probes, gathering): what changes a
    /// host goes through the engine's executor, never through here.
    pub async fn run(&self, cmd: &Cmd) -> HResult<Output> {
        self.refuse_exposed(cmd)?;
        if cmd.stdin.is_some() {
            return Ok(self.conn.run(cmd).await?);
        }
        if let Some(out) = self.reads.get(cmd) {
            return Ok(out);
        }
        let out = self.conn.run(cmd).await?;
        self.reads.put(cmd, &out);
        Ok(out)
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
        let out = self.run(&Cmd::script(READ_FILE, [path])).await?;
        let real = parse_read(path, out.code, &out.stdout, &out.stderr())?;
        self.through_overlay(path, real)
    }

    /// A file's content only (None when it does not exist), for probes and gathered
    /// values: one program (`cat`) where [`Host::read_file`] needs three for the mode,
    /// owner and resolved path a write keeps. While planning, through the overlay (an
    /// `only_if` sees what earlier steps will have written).
    pub async fn read_content(&self, path: &str) -> HResult<Option<Vec<u8>>> {
        if self.overlay_on() {
            return Ok(self.read_file(path).await?.map(|i| i.content));
        }
        let out = self
            .run(&Cmd::script(
                r#"[ -e "$1" ] || exit 3; exec cat -- "$1""#,
                [path],
            ))
            .await?;
        match out.code {
            Some(3) => Ok(None),
            Some(0) => Ok(Some(out.stdout)),
            _ => failed(format!("cannot read {path}: {}", out.stderr())),
        }
    }

    /// Read several files (and a tail, see [`read_files_script`]) in one round trip,
    /// the files through the planning overlay. `script` is made by
    /// [`read_files_script`]; `args` are its positional parameters.
    pub async fn read_files(&self, script: &'static str, args: &[String]) -> HResult<FilesRead> {
        let cmd = Cmd::script(script, args.iter().cloned());
        let mut why = String::from("they kept changing while read");
        for _ in 0..3 {
            let out = self.run(&cmd).await?;
            let parsed = if out.success() {
                parse_files(&out.stdout)?
            } else {
                None
            };
            match parsed {
                Some(mut read) => {
                    let mut files = Vec::new();
                    for (path, real) in std::mem::take(&mut read.files) {
                        let f = self.through_overlay(&path, real)?;
                        files.push((path, f));
                    }
                    return Ok(FilesRead { files, ..read });
                }
                // A file vanished or changed while read (or cannot be read): again,
                // not from the cache.
                _ => {
                    if !out.success() {
                        why = out.stderr();
                    }
                    self.reads.forget(&cmd);
                }
            }
        }
        failed(format!("cannot read files: {why}"))
    }

    /// What a file read from the host will be once the planned steps before this one
    /// have run (the read as it is when the overlay is off).
    fn through_overlay(&self, path: &str, real: Option<FileInfo>) -> HResult<Option<FileInfo>> {
        if !self.overlay_on() {
            return Ok(real);
        }
        let ov = self
            .overlay
            .lock()
            .map_err(|_| HostError::Failed("overlay lock poisoned".into()))?;
        let key = real
            .as_ref()
            .map_or(path.to_string(), |f| f.real_path.clone());
        let Some(predicted) = ov.files.get(&key) else {
            return Ok(real);
        };
        Ok(predicted.clone().map(|p| match real {
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

    pub fn predict_policy(&self, table: &str, chain: &str, policy: &str) {
        if let Ok(mut ov) = self.overlay.lock() {
            ov.policies
                .insert((table.to_string(), chain.to_string()), policy.to_string());
        }
    }

    /// The policy an earlier planned step will have set on this chain.
    pub fn predicted_policy(&self, table: &str, chain: &str) -> Option<String> {
        if !self.overlay_on() {
            return None;
        }
        self.overlay
            .lock()
            .ok()?
            .policies
            .get(&(table.to_string(), chain.to_string()))
            .cloned()
    }

    /// Every policy planned so far for `table`'s chains.
    pub fn predicted_policies(&self, table: &str) -> Vec<(String, String)> {
        if !self.overlay_on() {
            return Vec::new();
        }
        self.overlay.lock().map_or(Vec::new(), |ov| {
            ov.policies
                .iter()
                .filter(|((t, _), _)| t == table)
                .map(|((_, c), p)| (c.clone(), p.clone()))
                .collect()
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
