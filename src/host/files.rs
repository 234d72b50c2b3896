//! Files on a host as kfix reads and writes them: the read scripts and their answers
//! (one file, or many and a tail in one round trip), the atomic write and remove scripts,
//! and the operations that write a file with their undo and fingerprint.

#[allow(unused_imports)]
use super::*;

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
pub(super) const READ_FILE: &str = r#"[ -e "$1" ] || exit 3
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
pub(super) fn parse_files(out: &[u8]) -> HResult<Option<FilesRead>> {
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
pub(super) fn parse_read<'a>(
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

pub(super) fn write_op_as(
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
