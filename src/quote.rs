//! The one quoting path: every byte that reaches a remote shell is built here.
//!
//! A [`Cmd`] is an argument vector; [`Cmd::to_shell`] turns it into a POSIX shell
//! command line in which every argument is a single-quoted word, so templated values
//! are always data, never shell syntax.

/// Quote one argument for a POSIX shell: the result is always exactly one word whose
/// value is `arg`, byte for byte.
pub fn quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if safe {
        return arg.to_string();
    }
    quote_always(arg)
}

/// An argument vector as a person would type it: each word quoted by [`quote`] (for
/// labels, runbooks and messages; the command run is built by [`Cmd::to_shell`]).
pub fn display(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

pub(crate) fn quote_always(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A command to run on a host: an argument vector plus optional bytes for its stdin.
/// Serialized (in the run journal) with stdin as base64.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64")]
    pub stdin: Option<Vec<u8>>,
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Cmd {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    /// A fixed shell script (a constant of kfix, never templated) run by `sh -c` with
    /// `args` as its positional parameters `$1`, `$2`, ...: values reach the script as
    /// data only.
    pub fn script<I, S>(script: &'static str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "kfix".to_string(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        Cmd { argv, stdin: None }
    }

    pub fn with_stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Prefix the command with `sudo` so it runs as `user` (root when `None`).
    /// `-n` never prompts: a password prompt would hang a fleet run.
    pub fn with_become(mut self, user: Option<&str>) -> Self {
        let mut argv = vec!["sudo".to_string(), "-n".to_string()];
        if let Some(u) = user {
            argv.push("-u".to_string());
            argv.push(u.to_string());
        }
        argv.push("--".to_string());
        argv.append(&mut self.argv);
        self.argv = argv;
        self
    }

    /// The command line a POSIX shell runs: each argument quoted by [`quote`].
    pub fn to_shell(&self) -> String {
        // A first word containing `=` would be read as an assignment: always quote it.
        self.argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && a.contains('=') {
                    quote_always(a)
                } else {
                    quote(a)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A kfix script ([`Cmd::script`]) as shell text: its arguments set as positional
    /// parameters by the same quoting, then the script. None for any other command.
    fn script_body(&self) -> Option<String> {
        match &self.argv[..] {
            [sh, c, script, zero, args @ ..] if sh == "sh" && c == "-c" && zero == "kfix" => {
                let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
                Some(format!("set -- {}\n{script}", args.join(" ")))
            }
            _ => None,
        }
    }

    /// The command as one line of a script that runs several (a batch of reads; an
    /// operation and its probes): a kfix script runs in a subshell of that script (a
    /// fork, where `sh -c` would be a fork and an exec of a new shell); any other command
    /// is its [`Cmd::to_shell`] line.
    pub fn to_script_line(&self) -> String {
        match self.script_body() {
            Some(body) => format!("({body}\n)"),
            None => self.to_shell(),
        }
    }

    /// The command as the body of a subshell its caller provides (the command channel
    /// runs each request in one): a kfix script without a subshell of its own (one fork
    /// fewer than [`Cmd::to_script_line`]); any other command is its [`Cmd::to_shell`]
    /// line.
    pub fn to_subshell_body(&self) -> String {
        self.script_body().unwrap_or_else(|| self.to_shell())
    }

    /// The command line with a kfix script body elided (`sh -c '…' kfix ARGS`), for
    /// human output; JSON shows [`Cmd::display`].
    pub fn display_short(&self) -> String {
        if self.argv.len() >= 4
            && self.argv[0] == "sh"
            && self.argv[1] == "-c"
            && self.argv[3] == "kfix"
        {
            let mut short = self.clone();
            short.argv[2] = "…".to_string();
            return short.display();
        }
        self.display()
    }

    /// What the dry-run shows for this command: the exact shell line, with a hint
    /// that stdin carries data when it does.
    pub fn display(&self) -> String {
        match &self.stdin {
            Some(d) => format!("{}  # stdin: {} bytes", self.to_shell(), d.len()),
            None => self.to_shell(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh_echo(args: &[&str]) -> Vec<String> {
        // printf each argument NUL-terminated, through a real shell.
        let mut c = Cmd::new(["printf", "%s\\0"]);
        c.argv.extend(args.iter().map(|s| s.to_string()));
        let out = Command::new("sh")
            .arg("-c")
            .arg(c.to_shell())
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{:?}", out);
        let s = String::from_utf8(out.stdout).expect("utf8");
        let mut v: Vec<String> = s.split('\0').map(str::to_string).collect();
        v.pop();
        v
    }

    #[test]
    fn hostile_values_round_trip() {
        let hostile = [
            "; rm -rf /",
            "$(touch /tmp/kfix-pwned)",
            "`id`",
            "a'b\"c",
            "line1\nline2",
            "-n",
            "--help",
            "",
            " spaced ",
            "ünïcødé ✓",
            "*",
            "~root",
            "a\\b",
            "$HOME",
            "x=y",
            "!",
            "\t",
        ];
        assert_eq!(sh_echo(&hostile), hostile.to_vec());
        assert!(!std::path::Path::new("/tmp/kfix-pwned").exists());
    }

    #[test]
    fn plain_words_stay_readable() {
        let c = Cmd::new(["ip", "route", "del", "172.16.0.0/12", "dev", "eth0"]);
        assert_eq!(c.to_shell(), "ip route del 172.16.0.0/12 dev eth0");
        assert_eq!(quote("-A"), "-A");
        assert_eq!(Cmd::new(["a=b", "c=d"]).to_shell(), "'a=b' c=d");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn script_args_are_positional_data() {
        let c = Cmd::script("printf '%s' \"$1\"", ["$(id) ; echo no"]);
        let out = Command::new("sh")
            .arg("-c")
            .arg(c.to_shell())
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "$(id) ; echo no");
    }

    #[test]
    fn a_script_line_keeps_arguments_data_and_the_outer_script_intact() {
        let c = Cmd::script(
            "printf '%s|' \"$#\" \"$@\"; x=inner; exit 3",
            ["$(id) ; echo no", "a'b\nc", ""],
        );
        let line = c.to_script_line();
        assert!(
            line.starts_with("(set -- "),
            "a subshell, not a new sh: {line}"
        );
        let body = c.to_subshell_body();
        assert!(
            body.starts_with("set -- "),
            "no subshell of its own: {body}"
        );
        // In a script of several; and as the channel runs a request: `eval` of the
        // quoted body in a subshell. Both keep the arguments and the outer script.
        for run in [line, format!("( eval {} ) 8<&- 9>&-", quote_always(&body))] {
            let outer = format!("x=outer; {run}; printf '%s:%s' \"$?\" \"$x\"");
            let out = Command::new("sh")
                .args(["-c", &outer, "kfix", "outer-arg"])
                .output()
                .expect("sh runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "3|$(id) ; echo no|a'b\nc||3:outer",
                "{run}"
            );
        }
        // Anything else is its plain command line.
        let plain = Cmd::new(["cat", "--", "/etc/x y"]);
        assert_eq!(plain.to_script_line(), plain.to_shell());
        assert_eq!(plain.to_subshell_body(), plain.to_shell());
    }

    #[test]
    fn become_prefixes_sudo() {
        let c = Cmd::new(["id", "-u"]).with_become(None);
        assert_eq!(c.to_shell(), "sudo -n -- id -u");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any argument (no NUL: argv cannot carry one) reaches the command byte for byte
        /// through a real POSIX shell, and nothing else runs.
        #[test]
        fn any_argument_round_trips_through_sh(args in proptest::collection::vec("[^\u{0}]{0,40}", 1..4)) {
            let mut c = Cmd::new(["printf", "%s\\0"]);
            c.argv.extend(args.iter().cloned());
            let out = std::process::Command::new("sh").arg("-c").arg(c.to_shell()).output().expect("sh runs");
            prop_assert!(out.status.success());
            let got: Vec<String> = String::from_utf8(out.stdout).expect("utf8").split('\0').map(str::to_string).collect();
            prop_assert_eq!(&got[..got.len() - 1], &args[..]);
        }

        /// A templated value renders verbatim into exactly one argument.
        #[test]
        fn template_values_stay_one_argument(v in "[^\u{0}]{0,40}") {
            let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({"v": v})));
            let words = crate::playbook::split_words("printf %s {{ v }}").expect("splits");
            let rendered: Vec<String> = words.iter().map(|w| crate::template::render(w, &ctx).expect("renders")).collect();
            prop_assert_eq!(rendered.len(), 3);
            prop_assert_eq!(&rendered[2], &v);
        }
    }
}
