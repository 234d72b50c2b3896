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

/// Its output: `mode uid gid` and a newline, the resolved path and a NUL (a path may
/// hold newlines), the content.
const READ_FILE: &str = r#"[ -e "$1" ] || exit 3
stat -L -c '%a %u %g' -- "$1" || exit 4
readlink -z -f -- "$1" || exit 4
exec cat -- "$1""#;

/// The script for [`Host::read_files`]: `$list` (a literal shell snippet that may
/// append paths to "$@", e.g. from a glob, and may name in `kfix_tail` one more file
/// to read last, e.g. under /proc), then every path in "$@" read with three processes
/// in all, whatever their number (a process per file and per field costs the host more
/// than the round trip). Its output: the number of paths and a newline; each path and
/// a NUL; one `0`/`1` per path (does it exist), with a tail ` 0`/` 1` for `kfix_tail`,
/// and a newline; for the existing ones, `mode uid gid size inode ctime` lines (the
/// stamp [`file_probe`] prints: see [`ReadPart`]), their resolved paths each ending in
/// a NUL, then their contents back to back; then, when the tail
/// exists, [`TAIL_MARK`] and the tail's content, whatever its length. A file that
/// changes while it is read shows as contents that do not add up to the sizes (or do
/// not end where the mark begins): the caller reads again. Regular files only in "$@":
/// /proc and /sys files report size 0, which is why one of those goes in the tail. A
/// macro so that the script stays a compile-time constant.
macro_rules! read_files_script {
    ($list:literal) => {
        concat!(
            "kfix_tail=\n",
            $list,
            "\n",
            r#"printf '%s\n' "$#"; [ "$#" -eq 0 ] || printf '%s\0' "$@"
n=$#
for p in "$@"; do
  if [ -e "$p" ]; then set -- "$@" "$p"; printf 1; else printf 0; fi
done
shift "$n"
if [ -n "$kfix_tail" ]; then if [ -e "$kfix_tail" ]; then printf ' 1'; else printf ' 0'; kfix_tail=; fi; fi
echo
{ [ "$#" -eq 0 ] || { TZ=UTC0 stat -L -c '%a %u %g %s %i %z' -- "$@" && readlink -z -f -- "$@"; }; } &&
if [ -n "$kfix_tail" ]; then printf 'kfix-tail\0' | cat -- "$@" - "$kfix_tail"
elif [ "$#" -gt 0 ]; then cat -- "$@"; fi"#
        )
    };
}
pub(crate) use read_files_script;

/// What separates the files [`read_files_script`] reads from its tail.
pub const TAIL_MARK: &[u8] = b"kfix-tail\0";

/// What [`Host::read_files`] read.
#[derive(Clone, Debug, Default)]
pub struct FilesRead {
    /// Every path read, in order, with its file (None: it does not exist).
    pub files: Vec<(String, Option<FileInfo>)>,
    /// The content of `kfix_tail` (None: none was named, or it does not exist).
    pub tail: Option<Vec<u8>>,
    /// Each existing file's resolved path and its [`file_probe`] stamp, in order (the
    /// host's files as they are, whatever the planning overlay predicts).
    pub stamps: Vec<(String, String)>,
}

/// The files in [`read_files_script`]'s output, in order; `Ok(None)` when a file changed
/// while it was read (the contents do not match the sizes).
fn parse_files(out: &[u8]) -> HResult<Option<FilesRead>> {
    let bad = |what: &str| HostError::Failed(format!("reading files: unexpected answer ({what})"));
    let mut rest = out;
    let mut take = |end: u8| -> Option<&[u8]> {
        let i = rest.iter().position(|&b| b == end)?;
        let (field, tail) = (&rest[..i], &rest[i + 1..]);
        rest = tail;
        Some(field)
    };
    let n: usize = String::from_utf8_lossy(take(b'\n').ok_or_else(|| bad("count"))?)
        .parse()
        .map_err(|_| bad("count"))?;
    let mut paths = Vec::new();
    for _ in 0..n {
        let p = take(0).ok_or_else(|| bad("paths"))?;
        paths.push(String::from_utf8_lossy(p).into_owned());
    }
    let line = take(b'\n').ok_or_else(|| bad("existence"))?;
    let (exists, tail_exists) = match line {
        [e @ .., b' ', b'1'] => (e, true),
        [e @ .., b' ', b'0'] | e => (e, false),
    };
    let exists = exists.to_vec();
    if exists.len() != n || exists.iter().any(|b| *b != b'0' && *b != b'1') {
        return Err(bad("existence"));
    }
    let k = exists.iter().filter(|b| **b == b'1').count();
    let mut stats = Vec::new();
    let mut stamps = Vec::new();
    for _ in 0..k {
        let line = String::from_utf8_lossy(take(b'\n').ok_or_else(|| bad("stat"))?).into_owned();
        let f: Vec<&str> = line.split_whitespace().collect();
        let [mode, uid, gid, size, ..] = f[..] else {
            return Err(bad("stat"));
        };
        let size: usize = size.parse().map_err(|_| bad("size"))?;
        stats.push((mode.to_string(), uid.to_string(), gid.to_string(), size));
        stamps.push(line);
    }
    let mut reals = Vec::new();
    for _ in 0..k {
        let r = take(0).ok_or_else(|| bad("resolved paths"))?;
        reals.push(String::from_utf8_lossy(r).into_owned());
    }
    let sized = stats.iter().map(|s| s.3).sum::<usize>();
    let tail = match tail_exists {
        false if rest.len() == sized => None,
        true if rest.len() >= sized && rest[sized..].starts_with(TAIL_MARK) => {
            Some(rest[sized + TAIL_MARK.len()..].to_vec())
        }
        _ => return Ok(None),
    };
    let stamps = reals.iter().cloned().zip(stamps).collect();
    let mut stats = stats.into_iter().zip(reals);
    let mut files = Vec::new();
    for (path, e) in paths.into_iter().zip(exists) {
        if e == b'0' {
            files.push((path, None));
            continue;
        }
        let Some(((mode, uid, gid, size), real_path)) = stats.next() else {
            return Err(bad("count"));
        };
        let (content, tail) = rest.split_at(size);
        rest = tail;
        files.push((
            path,
            Some(FileInfo {
                content: content.to_vec(),
                mode,
                uid,
                gid,
                real_path,
            }),
        ));
    }
    Ok(Some(FilesRead {
        files,
        tail,
        stamps,
    }))
}

/// A file from READ_FILE's output (exit 3: it does not exist).
fn parse_read<'a>(
    path: &str,
    code: Option<i32>,
    stdout: &'a [u8],
    stderr: &str,
) -> HResult<Option<FileInfo>> {
    match code {
        Some(3) => return Ok(None),
        Some(0) => {}
        _ => return failed(format!("cannot read {path}: {stderr}")),
    }
    let cut = |b: &'a [u8], at: u8| match b.iter().position(|&c| c == at) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[b.len()..]),
    };
    let (stat, rest) = cut(stdout, b'\n');
    let (real_path, content) = cut(rest, 0);
    let stat = String::from_utf8_lossy(stat).into_owned();
    let real_path = String::from_utf8_lossy(real_path).into_owned();
    let content = content.to_vec();
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

/// Write stdin to $1 atomically: through symlinks (`readlink` only when $1 is one), a
/// temp file in the same directory given its mode $2 and owner $3:$4 first (neither
/// given: the old file's mode, ACL and owner, copied by one `cp --attributes-only`;
/// a new file gets 0644), then the data, written and fsynced by one `dd`, then
/// renamed over $1 and the directory synced. The temp file is removed on any failure,
/// so a full disk leaves the original intact.
///
/// Nobody else can race it: a directory that a user other than root or the one
/// running the script (or a group other than root's) can write to is refused before
/// anything is created. The temp file has a random name (the kernel's
/// `random/uuid`, read by the shell's `read`), is created and opened once by the
/// shell with `set -C` (O_EXCL: never through a symlink, never an existing file), and
/// from then on is changed only through that descriptor: mode, owner and ACL set on
/// `/dev/fd/3` (the opened file, whatever its name points to by then), the data
/// written to fd 3 (a mode without write permission does not stop it). Before the
/// rename the name must still be the opened file (`-ef`), or nothing is renamed.
macro_rules! write_file_script {
    () => {
        r#"set -e
p=$1; if [ -L "$p" ]; then p=$(readlink -f -- "$1") || p=$1; fi
case $p in */*) d=${p%/*}; d=${d:-/} ;; *) d=. ;; esac
[ -d "$d" ] || { echo "directory $d does not exist" >&2; exit 1; }
o=$(stat -L -c '%u %g %a' -- "$d"); m=${o##* }; g=${o#* }; g=${g%% *}
if { [ "${o%% *}" != 0 ] && [ ! -O "$d" ]; } || [ $((0$m & 2)) != 0 ] || { [ $((0$m & 020)) != 0 ] && [ "$g" != 0 ]; }; then
  echo "refusing to write $p: its directory $d can be written by others (owner uid ${o%% *}, group $g, mode $m)" >&2; exit 1
fi
read -r r </proc/sys/kernel/random/uuid
t=$d/.kfix-tmp.$r
set -C; exec 3>"$t"; set +C
trap 'rm -f -- "$t"' EXIT
if [ -z "$2$3" ] && [ -e "$p" ]; then cp --attributes-only --preserve=mode,ownership -- "$p" /dev/fd/3
else
  if [ -n "$2" ]; then chmod "$2" /dev/fd/3; elif [ -e "$p" ]; then chmod --reference="$p" /dev/fd/3; else chmod 644 /dev/fd/3; fi
  if [ -n "$3" ]; then chown "$3:$4" /dev/fd/3; elif [ -e "$p" ]; then chown --reference="$p" /dev/fd/3; fi
fi
dd bs=64k conv=fsync status=none >&3
[ "$t" -ef /dev/fd/3 ] || { echo "refusing to rename $t over $p: the name no longer is the file kfix wrote" >&2; exit 1; }
exec 3>&-
mv -f -- "$t" "$p"
trap - EXIT
sync -- "$d" 2>/dev/null || true"#
    };
}
pub const WRITE_FILE: &str = write_file_script!();

macro_rules! remove_file_script {
    () => {
        r#"p=$1; if [ -L "$p" ]; then p=$(readlink -f -- "$1") || p=$1; fi
rm -f -- "$p""#
    };
}

/// Remove a file that a step created (undo of a write to a path that did not exist).
pub const REMOVE_FILE: &str = remove_file_script!();

/// [`WRITE_FILE`] for systemd's configuration (a unit drop-in): the file's directory
/// is created when missing (`docker.service.d`), and systemd re-reads its units after
/// the write (`daemon-reload`), so what it runs next is what the file says.
pub const WRITE_UNIT: &str = concat!(
    "mkdir -p -- \"$(dirname -- \"$1\")\"\n",
    write_file_script!(),
    "\nsystemctl daemon-reload"
);

/// Its undo for an existing file: the old bytes back, then `daemon-reload`.
pub const RESTORE_UNIT: &str = concat!(write_file_script!(), "\nsystemctl daemon-reload");

/// Its undo for a file it created: removed, its directory too when the write made it
/// (`$2` = 1) and it is empty again, then `daemon-reload`.
pub const REMOVE_UNIT: &str = concat!(
    remove_file_script!(),
    "\n[ \"$2\" != 1 ] || rmdir -- \"${p%/*}\" 2>/dev/null || true\nsystemctl daemon-reload"
);

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

/// The operations that write a file atomically, and undo it, for a planned change.
/// Where [`write_op`] writes `path`: the file a read resolved it to, or the path as
/// given when it does not exist.
pub fn written_path(path: &str, before: Option<&FileInfo>) -> String {
    before.map_or(path.to_string(), |b| b.real_path.clone())
}

pub fn write_op(path: &str, before: Option<&FileInfo>, after: &[u8], mode: Option<&str>) -> Op {
    write_op_as(path, before, after, mode, None)
}

/// [`write_op`] for systemd configuration (see [`WRITE_UNIT`]); `dir_exists`: whether
/// the file's directory is there already (else the write creates it, the undo removes
/// it again when empty).
pub fn unit_write_op(
    path: &str,
    before: Option<&FileInfo>,
    after: &[u8],
    mode: Option<&str>,
    dir_exists: bool,
) -> Op {
    write_op_as(path, before, after, mode, Some(dir_exists))
}

fn write_op_as(
    path: &str,
    before: Option<&FileInfo>,
    after: &[u8],
    mode: Option<&str>,
    unit: Option<bool>,
) -> Op {
    let target = written_path(path, before);
    let (write, restore) = match unit {
        Some(_) => (WRITE_UNIT, RESTORE_UNIT),
        None => (WRITE_FILE, WRITE_FILE),
    };
    let cmd = Cmd::script(
        write,
        [
            target.clone(),
            mode.unwrap_or("").to_string(),
            String::new(),
            String::new(),
        ],
    )
    .with_stdin(after.to_vec());
    let undo = Undo::Cmd(match (before, unit) {
        (Some(b), _) => Cmd::script(
            restore,
            [target.clone(), b.mode.clone(), b.uid.clone(), b.gid.clone()],
        )
        .with_stdin(b.content.clone()),
        (None, None) => Cmd::script(REMOVE_FILE, [target.clone()]),
        (None, Some(dir_exists)) => Cmd::script(
            REMOVE_UNIT,
            [
                target.clone(),
                if dir_exists { "0" } else { "1" }.to_string(),
            ],
        ),
    });
    let mut desc = match (before, path == target) {
        (Some(_), true) => format!("write {path} (atomic)"),
        (Some(_), false) => format!("write {target} (through symlink {path}, atomic)"),
        (None, _) => format!("create {path} (atomic)"),
    };
    if unit.is_some() {
        desc.push_str(", then systemctl daemon-reload");
    }
    let mut op = Op::new(desc, cmd, undo).fingerprint(file_probe(&target));
    op.wrote = Some(crate::plan::Written {
        sha256: crate::playbook::hex(&<sha2::Sha256 as sha2::Digest>::digest(after)),
        path: target,
    });
    op
}

/// A file's fingerprint in one program: mode, owner, size, inode and change time (in
/// UTC, to the nanosecond). Any write, rename over it, chmod or chown gives a new inode or
/// change time, as git's index and make notice changes; a content hash would need a
/// second program (`sha256sum`), twice per write. A rewrite with the same bytes also
/// counts as a change, so `kfix rollback` errs on the side of refusing. Kernels before
/// 6.13 stamp changes with the clock tick's time: an in-place write of the same size
/// within a few milliseconds of the fingerprint can go unseen there.
pub(crate) fn file_probe(path: &str) -> Cmd {
    Cmd::script(
        r#"if [ -e "$1" ]; then TZ=UTC0 stat -c '%a %u %g %s %i %z' -- "$1"; else echo absent; fi"#,
        [path],
    )
}

/// An operation's probe answer from a round trip's reads (`answer`: a read's answer,
/// when it was made), when one of them holds it (see [`Op::fingerprint_in`]).
pub fn fingerprint_answer<'a>(
    op: &Op,
    answer: impl FnOnce(&Cmd) -> Option<&'a Output>,
) -> Option<Output> {
    let (read, part) = op.fingerprint_in.as_ref()?;
    part_of_read(part, answer(read)?)
}

/// What the probe `part` stands for would have printed, from a read's answer; None when
/// the read failed, changed while read, or does not hold that part.
pub fn part_of_read(part: &ReadPart, read: &Output) -> Option<Output> {
    if !read.success() {
        return None;
    }
    let r = parse_files(&read.stdout).ok()??;
    let (code, stdout) = match part {
        ReadPart::Tail => match r.tail {
            Some(t) => (0, t),
            None => (3, Vec::new()),
        },
        ReadPart::Stamp(path) => match r.stamps.iter().find(|(real, _)| real == path) {
            Some((_, stamp)) => (0, format!("{stamp}\n").into_bytes()),
            None if r.files.iter().any(|(p, f)| p == path && f.is_none()) => {
                (0, b"absent\n".to_vec())
            }
            None => return None,
        },
    };
    Some(Output {
        code: Some(code),
        stdout,
        stderr: Vec::new(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const READ_GIVEN: &str = read_files_script!("");
    /// The first argument is the tail.
    const READ_WITH_TAIL: &str = read_files_script!("kfix_tail=$1; shift");

    fn read_with(script: &str, args: &[&str]) -> FilesRead {
        let out = std::process::Command::new("sh")
            .args(["-c", script, "kfix"])
            .args(args)
            .output()
            .expect("sh runs");
        assert!(out.status.success());
        parse_files(&out.stdout)
            .expect("parsed")
            .expect("consistent")
    }

    fn read_locally(args: &[&str]) -> Vec<(String, Option<FileInfo>)> {
        let read = read_with(READ_GIVEN, args);
        assert!(read.tail.is_none());
        read.files
    }

    #[test]
    fn a_proc_file_read_last_comes_whole_after_the_sized_files() {
        let d = std::env::temp_dir().join(format!("kfix-read-tail-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let conf = d.join("a.conf");
        std::fs::write(&conf, b"x = 1\nkfix-tail\0").expect("write");
        let c = conf.display().to_string();
        // A /proc/sys file says its size is 0 and reads at an offset as end of file:
        // only a read of its own, last, gets it whole.
        let proc = "/proc/sys/net/ipv4/ip_local_port_range";
        let want = std::fs::read(proc).expect("proc");
        assert!(want.len() > 2, "{want:?}");
        let read = read_with(READ_WITH_TAIL, &[proc, &c]);
        assert_eq!(read.tail.as_deref(), Some(want.as_slice()));
        assert_eq!(read.files.len(), 1);
        assert_eq!(
            read.files[0].1.as_ref().expect("conf").content,
            b"x = 1\nkfix-tail\0"
        );
        // No file but the tail; a tail that does not exist; files that do not.
        let only = read_with(READ_WITH_TAIL, &[proc]);
        assert_eq!((only.files.len(), only.tail), (0, Some(want)));
        let gone = read_with(READ_WITH_TAIL, &["/proc/sys/kfix/none", &c, "/kfix/none"]);
        assert!(gone.tail.is_none());
        assert!(gone.files[0].1.is_some() && gone.files[1].1.is_none());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn many_files_come_back_each_with_its_own_outcome() {
        let d = std::env::temp_dir().join(format!("kfix-read-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let odd = d.join("a b\n0 1\n");
        std::fs::write(&odd, b"x = 1\n\0KFIX 9 9 9 9\nno newline").expect("write");
        let empty = d.join("empty");
        std::fs::write(&empty, b"").expect("write");
        let link = d.join("link.conf");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&odd, &link).expect("symlink");
        let s = |p: &std::path::Path| p.display().to_string();
        let missing = s(&d.join("missing"));
        let files = read_locally(&[&s(&odd), &missing, &s(&empty), &s(&link)]);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [s(&odd), missing.clone(), s(&empty), s(&link)]);
        let f = files[0].1.as_ref().expect("exists");
        assert_eq!(f.content, b"x = 1\n\0KFIX 9 9 9 9\nno newline");
        assert_eq!(f.real_path, s(&odd));
        assert!(files[1].1.is_none(), "missing file");
        assert_eq!(files[2].1.as_ref().expect("empty file").content, b"");
        let l = files[3].1.as_ref().expect("through the link");
        assert_eq!(
            (l.real_path.as_str(), &l.content),
            (s(&odd).as_str(), &f.content)
        );
        assert!(read_locally(&[&missing]).iter().all(|(_, f)| f.is_none()));
        assert!(read_locally(&[]).is_empty());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn a_file_that_changed_while_read_is_noticed() {
        // Sizes say 3 + 2 bytes; 6 arrived: a file grew between stat and cat.
        let out = b"2\n/a\0/b\x0011\n644 0 0 3\n644 0 0 2\n/a\0/b\0abcdef";
        assert!(parse_files(out).expect("well formed").is_none());
        let ok = b"2\n/a\0/b\x0011\n644 0 0 3\n644 0 0 2\n/a\0/b\0abcde";
        let files = parse_files(ok)
            .expect("well formed")
            .expect("consistent")
            .files;
        assert_eq!(files[1].1.as_ref().expect("b").content, b"de");
        // A file that grew shows as bytes where the tail's mark should begin.
        let grew = b"1\n/a\x001 1\n644 0 0 3\n/a\0abcdkfix-tail\x001\n";
        assert!(parse_files(grew).expect("well formed").is_none());
        let ok = b"1\n/a\x001 1\n644 0 0 3\n/a\0abckfix-tail\x001\n";
        let read = parse_files(ok).expect("well formed").expect("consistent");
        assert_eq!(read.tail.as_deref(), Some(&b"1\n"[..]));
        assert!(parse_files(b"garbage").is_err());
        assert!(parse_files(b"1\n/a\0").is_err());
    }

    #[test]
    fn the_atomic_write_keeps_bytes_mode_and_links_and_leaves_nothing_on_failure() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = std::env::temp_dir().join(format!("kfix-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (real, link) = (dir.join("real.conf"), dir.join("link.conf"));
        std::fs::write(&real, "old\n").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o440)).expect("chmod");
        // Another owner, when this runs as root.
        let owned = std::os::unix::fs::chown(&real, Some(65534), Some(65534)).is_ok();
        symlink(&real, &link).expect("symlink");
        let write = |path: &std::path::Path, mode: &str, data: &[u8]| {
            crate::transport::tests::sh(
                &["-c", WRITE_FILE, "kfix", &path.display().to_string(), mode],
                data,
            )
        };
        // Through the link, into the real file; bytes as given (no newline added, NUL
        // and non-UTF-8 kept, more than one dd block); its read-only mode kept.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let out = write(&link, "", &data);
        assert!(out.status.success(), "{out:?}");
        assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
        assert_eq!(std::fs::read(&real).expect("read"), data);
        let meta = std::fs::metadata(&real).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        if owned {
            use std::os::unix::fs::MetadataExt;
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "owner kept");
        }
        // A mode given is set; a new file gets 0644.
        assert!(write(&real, "600", b"x").status.success());
        assert_eq!(
            std::fs::metadata(&real).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let fresh = dir.join("fresh.conf");
        assert!(write(&fresh, "", b"").status.success());
        assert_eq!(std::fs::read(&fresh).expect("read"), b"");
        assert_eq!(
            std::fs::metadata(&fresh)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        // A write that fails (an owner that does not exist) leaves the original and no
        // temp file.
        let out = crate::transport::tests::sh(
            &[
                "-c",
                WRITE_FILE,
                "kfix",
                &real.display().to_string(),
                "",
                "kfix-no-such-user",
                "0",
            ],
            b"new",
        );
        assert!(!out.status.success());
        assert_eq!(std::fs::read(&real).expect("read"), b"x");
        // Someone swapping the temp name for a symlink to another file between its
        // creation and the copy of the old file's attributes (a `cp` first in PATH does
        // it here): the other file keeps its mode and bytes, nothing is renamed over the
        // target, and the swapped-in name is not followed.
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep\n").expect("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let real_cp = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v cp"])
                .output()
                .expect("which cp")
                .stdout,
        )
        .expect("utf-8");
        std::fs::write(
            bin.join("cp"),
            format!(
                "#!/bin/sh\nfor f in \"$KFIX_DIR\"/.kfix-tmp.*; do mv -- \"$f\" \"$KFIX_DIR/aside\"; ln -s -- \"$KFIX_VICTIM\" \"$f\"; done\nexec {} \"$@\"\n",
                real_cp.trim()
            ),
        )
        .expect("fake cp");
        std::fs::set_permissions(bin.join("cp"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
        let raced = crate::transport::tests::sh_with_env(
            &["-c", WRITE_FILE, "kfix", &real.display().to_string(), ""],
            b"raced\n",
            &[
                ("PATH", path.as_ref()),
                ("KFIX_DIR", dir.as_os_str()),
                ("KFIX_VICTIM", victim.as_os_str()),
            ],
        );
        assert!(!raced.status.success(), "{raced:?}");
        assert!(
            String::from_utf8_lossy(&raced.stderr).contains("no longer is the file"),
            "{raced:?}"
        );
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep\n");
        assert_eq!(
            std::fs::metadata(&victim)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o644,
            "the victim's mode is its own"
        );
        assert_eq!(std::fs::read(&real).expect("read"), b"x");
        assert!(!std::fs::symlink_metadata(&real).expect("real").is_symlink());
        std::fs::remove_file(dir.join("aside")).expect("aside");
        std::fs::remove_dir_all(&bin).expect("bin");
        std::fs::remove_file(&victim).expect("victim");
        // A directory others can write to is refused before anything is created there
        // (world-writable; group-writable by a group other than root's).
        let open_dir = dir.join("open");
        std::fs::create_dir(&open_dir).expect("open");
        for (mode, gid) in [(0o777, 0), (0o1777, 0), (0o775, 65534)] {
            std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            let grouped = std::os::unix::fs::chown(&open_dir, None, Some(gid)).is_ok();
            if gid != 0 && !grouped {
                continue;
            }
            let out = write(&open_dir.join("f.conf"), "", b"no");
            assert!(!out.status.success(), "{mode:o}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("can be written by others"),
                "{out:?}"
            );
            assert_eq!(
                std::fs::read_dir(&open_dir).expect("ls").count(),
                0,
                "{mode:o}"
            );
        }
        // Group-writable by root's group only is fine (root is the only writer).
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        if std::os::unix::fs::chown(&open_dir, None, Some(0)).is_ok() {
            assert!(write(&open_dir.join("f.conf"), "", b"ok").status.success());
            std::fs::remove_file(open_dir.join("f.conf")).expect("rm");
        }
        std::fs::remove_dir(&open_dir).expect("open");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh.conf", "link.conf", "real.conf"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn facts_by(prefix: &[&str]) -> Vec<String> {
        let out = std::process::Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["sh", "-c", FACTS_SCRIPT])
            .output()
            .expect("facts run");
        assert!(out.status.success(), "{out:?}");
        out.stdout
            .split(|b| *b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    #[test]
    fn the_facts_name_the_host_kernel_and_machine_as_uname_does() {
        let uname = |flag: &str| {
            let out = std::process::Command::new("uname")
                .arg(flag)
                .output()
                .expect("uname");
            String::from_utf8_lossy(&out.stdout).trim_end().to_string()
        };
        let f = facts_by(&["env"]);
        assert_eq!(f[..3], [uname("-n"), uname("-r"), uname("-m")]);
        // Where there is no /proc/sys/kernel/arch (before Linux 6.1), uname answers.
        let old = FACTS_SCRIPT.replace("$k/arch", "$k/kfix-no-arch");
        let out = std::process::Command::new("sh")
            .args(["-c", &old])
            .output()
            .expect("facts run");
        let g: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        assert_eq!(String::from_utf8_lossy(g[2]), uname("-m"));
        assert_eq!(String::from_utf8_lossy(g[0]), uname("-n"));
        // A hostname is bytes: spaces and newlines, a trailing one too, come back as set
        // (in a UTS namespace of its own, when this runs as root).
        let odd = "a b\nc\n";
        let set = format!(
            "import socket; socket.sethostname({odd:?}); import os; os.execvp('sh', ['sh', '-c', {FACTS_SCRIPT:?}])"
        );
        let out = std::process::Command::new("unshare")
            .args(["--uts", "python3", "-c", &set])
            .output()
            .expect("unshare");
        if out.status.success() {
            let h: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
            assert_eq!(String::from_utf8_lossy(h[0]), odd);
            assert_eq!(String::from_utf8_lossy(h[1]), uname("-r"));
        } else {
            eprintln!("no UTS namespace here (not root?): {out:?}");
        }
    }

    #[test]
    fn a_files_fingerprint_changes_with_any_write_to_it_and_not_with_reads() {
        let d = std::env::temp_dir().join(format!("kfix-probe-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let f = d.join("a.conf");
        let path = f.display().to_string();
        let probe = file_probe(&path).to_shell();
        let print = || {
            let out = std::process::Command::new("sh")
                .args(["-c", &probe])
                .env("TZ", "Asia/Shanghai")
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let sh = |cmd: &str| {
            let st = std::process::Command::new("sh")
                .args(["-c", cmd, "kfix", &path])
                .status()
                .expect("sh runs");
            assert!(st.success(), "{cmd}");
        };
        assert_eq!(print(), "absent\n");
        std::fs::write(&f, "x = 1\n").expect("write");
        let mut seen = vec![print()];
        assert!(seen[0].ends_with(" +0000\n"), "in UTC: {}", seen[0]);
        // Reads and the same fingerprint again: no change.
        std::fs::read(&f).expect("read");
        assert_eq!(print(), seen[0]);
        // Each of these is a change, even when the bytes end up the same.
        for change in [
            "cp -- \"$1\" \"$1.new\" && mv -- \"$1.new\" \"$1\"",
            "chmod 600 -- \"$1\"",
            "chmod 600 -- \"$1\"; chown \"$(id -u):$(id -g)\" -- \"$1\"",
            "printf 'x = 1\\n' > \"$1\"",
            "printf 'x = 2\\n' > \"$1\"",
        ] {
            // Kernels before 6.13 stamp a change with the clock tick's time (a few ms).
            std::thread::sleep(std::time::Duration::from_millis(20));
            sh(change);
            let now = print();
            assert!(
                !seen.contains(&now),
                "`{change}` left the fingerprint {now}"
            );
            seen.push(now);
        }
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn the_facts_carry_the_effective_uid() {
        let uid = |prefix: &[&str]| facts_by(prefix)[6].clone();
        let id = std::process::Command::new("id")
            .arg("-u")
            .output()
            .expect("id");
        let me = String::from_utf8_lossy(&id.stdout).trim().to_string();
        assert_eq!(uid(&["env"]), me);
        if me == "0" {
            let nobody = [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ];
            assert_eq!(uid(&nobody), "65534");
        }
    }
}
