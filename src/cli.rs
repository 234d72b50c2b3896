//! Command-line arguments (clap). Only the shapes live here; main.rs resolves them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::report::Format;

#[derive(Parser, Debug)]
#[command(
    name = "kfix",
    version,
    about = "Remediation playbooks for Kubernetes nodes: detect, dry-run, apply, verify, roll back.",
    after_help = "Examples:\n  kfix list\n  kfix run persist-ip-forward --dry-run\n  kfix run persist-ip-forward -i inventory/prod.ini --limit node-17 --dry-run\n  kfix run persist-ip-forward -i inventory/prod.ini --limit node-17 --yes\n  kfix check flannel-bogus-route service-masquerade -i inventory/prod.ini\n  kfix validate playbooks/*.yaml\n\nExit codes: 0 ok, 1 a host failed or was unreachable (check: a problem was found),\n2 usage error (also a flag value it does not take), 3 invalid playbook/inventory/vars,\n4 not confirmed, 5 a rollback failed, 6 a report could not be written."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a playbook: plan every host, then (unless --dry-run) apply, verify, roll back on failure.
    #[command(
        after_help = "Examples:\n  kfix run persist-ip-forward --dry-run\n  kfix run service-masquerade -i inventory/prod.ini -l 'kube_node:!node-3' -e node_cidr=192.168.2.0/24 --dry-run\n  kfix run raise-nofile-limits -i inventory/prod.ini --yes --output json"
    )]
    Run(RunArgs),
    /// Preconditions and detection only: which hosts have which problem. Changes nothing.
    #[command(
        after_help = "Examples:\n  kfix check persist-ip-forward\n  kfix check flannel-bogus-route service-masquerade -i inventory/prod.ini --output json"
    )]
    Check(CheckArgs),
    /// Parse and validate playbooks (all in the playbook directory when no path is given).
    Validate {
        /// Playbook files, or directories of them.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// List the playbooks in the playbook directory.
    List {
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Show a playbook as a readable runbook.
    Show {
        /// A playbook file or an id from `kfix list`.
        playbook: String,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Write the runbook pages (one Markdown page per playbook, Meaning / Impact /
    /// Diagnosis / Mitigation) into a directory.
    #[command(
        after_help = "Examples:\n  kfix docs\n  kfix docs --out /tmp/runbooks\n  kfix docs --npd --kfix-path /usr/local/bin/kfix > kfix-monitor.json\n  kfix docs --alert-rules --runbook-base-url https://git.example.com/ops/kfix/-/blob/main/docs/runbooks -i inventory/prod.ini > kfix-rules.yml"
    )]
    Docs {
        /// The directory the pages (and their index) are written to.
        #[arg(long, default_value = "docs/runbooks")]
        out: PathBuf,
        /// Print Prometheus alerting rules (for the metrics `kfix check --all --output prom`
        /// writes) instead of writing the runbook pages.
        #[arg(long)]
        alert_rules: bool,
        /// Where the runbook pages are published; each rule's `runbook_url` points there.
        #[arg(long, env = "KFIX_RUNBOOK_BASE_URL", requires = "alert_rules")]
        runbook_base_url: Option<String>,
        /// How long a problem must persist before its alert fires.
        #[arg(long = "for", default_value = "5m", requires = "alert_rules")]
        for_: String,
        /// Print node-problem-detector's custom-plugin-monitor configuration (JSON): one
        /// permanent condition per playbook, each checked by `kfix check --npd ID` on the
        /// node.
        #[arg(long, conflicts_with = "alert_rules")]
        npd: bool,
        /// With --npd: where kfix is installed on the nodes (node-problem-detector runs it).
        #[arg(long, default_value = "/usr/local/bin/kfix", requires = "npd")]
        kfix_path: String,
        /// With --npd: how often each check runs (node-problem-detector's duration syntax).
        #[arg(long, default_value = "5m", requires = "npd")]
        interval: String,
        /// The inventory the rules' suggested `kfix check` command names (`-i PATH`);
        /// without it the command says `-i INVENTORY` for the reader to fill in.
        #[arg(short, long, value_name = "PATH", requires = "alert_rules")]
        inventory: Option<PathBuf>,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// List the hosts an inventory and --limit resolve to, with their variables
    /// (passwords, tokens and keys masked).
    #[command(
        after_help = "Examples:\n  kfix inventory -i inventory/kubespray.ini\n  kfix inventory -i inventory/kubespray.ini --limit 'k8s_cluster:!etcd' --output json"
    )]
    Inventory {
        /// Inventory (Ansible INI or YAML). Without one, the local host.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Hosts to list, in `run --limit`'s patterns.
        #[arg(short, long)]
        limit: Option<String>,
        /// human: a table; json: one JSON document.
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// List the recorded runs (newest first), or show one run's journal.
    #[command(after_help = "Examples:\n  kfix history\n  kfix history 20261123T101500.123-3f2a")]
    History {
        /// One run to show (its diffs and outcomes); without it, every recorded run.
        run_id: Option<String>,
        /// Where run journals are kept (default: $XDG_STATE_HOME/kfix, ~/.local/state/kfix).
        #[arg(long, env = "KFIX_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// human: a table; json: one JSON document.
        #[arg(short, long, value_enum, default_value_t = Format::Human)]
        output: Format,
    },
    /// Undo what a run applied, host by host in reverse order, refusing hosts that changed since.
    #[command(
        after_help = "Examples:\n  kfix rollback 20261123T101500.123-3f2a --dry-run\n  kfix rollback 20261123T101500.123-3f2a --limit 'node-1*' --yes\n  kfix rollback 20261123T101500.123-3f2a --limit 'kube_node:!node-3' --yes"
    )]
    Rollback(RollbackArgs),
    /// Receive Alertmanager webhooks: plan the fix for the alerting node (read-only), apply
    /// it when approved (or automatically where the playbook and --auto-apply allow).
    #[command(
        after_help = "Examples:\n  kfix serve -i inventory/prod.ini --token-file /etc/kfix/webhook.token --approvers-file /etc/kfix/approvers\n  kfix serve -i inventory/prod.ini --token-file /etc/kfix/webhook.token --listen 127.0.0.1:9095 --auto-apply --max-hosts-per-hour 2\n\nEndpoints (all need `Authorization: Bearer TOKEN`):\n  POST /alerts              Alertmanager webhook (payload version 4), the webhook's token\n  GET  /runs, /runs/ID      the plans and runs, with their state and plan_digest\n  POST /runs/ID/approve     {\"digest\": PLAN_DIGEST}, an approver's token: apply that plan"
    )]
    Serve(ServeArgs),
    /// Approve a plan that `kfix serve` holds: the server re-checks the host and applies.
    #[command(
        after_help = "Examples:\n  kfix approve 20261123T101500.123-3f2a --token-file ~/.config/kfix/approver.token\n  kfix approve 20261123T101500.123-3f2a --token-file ~/.config/kfix/approver.token --yes\n  kfix approve 20261123T101500.123-3f2a --server http://127.0.0.1:9095 --show"
    )]
    Approve(ApproveArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  kfix completions bash > /etc/bash_completion.d/kfix\n  kfix completions zsh > \"${fpath[1]}/_kfix\"\n  kfix completions fish > ~/.config/fish/completions/kfix.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the playbook JSON Schema (draft-07), for editors through yaml-language-server.
    #[command(
        after_help = "Examples:\n  kfix schema > playbook.schema.json\n\nIn a playbook, a first line `# yaml-language-server: $schema=playbook.schema.json`\n(a path relative to the playbook) makes editors complete and check its fields."
    )]
    Schema,
    /// Write a commented playbook skeleton, DIR/ID.yaml, that validates as it is.
    #[command(
        after_help = "Examples:\n  kfix new fix-conntrack-max\n  kfix new fix-conntrack-max --dir playbooks --schema-ref ../docs/playbook.schema.json"
    )]
    New {
        /// The new playbook's id (lowercase letters, digits, dashes); also its file name.
        id: String,
        /// The directory the skeleton is written to (never over an existing file).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The schema the skeleton's yaml-language-server line names. Without it:
        /// playbook.schema.json, written beside the skeleton when it is not there.
        #[arg(long, value_name = "PATH_OR_URL")]
        schema_ref: Option<String>,
    },
    /// Print kfix's man page (roff), made from this command line's own help.
    #[command(
        after_help = "Examples:\n  kfix man > /usr/local/share/man/man1/kfix.1\n  kfix man | man -l -"
    )]
    Man,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Address to listen on (keep it on loopback, behind a proxy, unless you must).
    #[arg(long, default_value = "127.0.0.1:9095")]
    pub listen: String,
    /// A file holding the webhook's bearer token (mode 0600): Alertmanager posts alerts
    /// with it; it reads runs too, but never approves one.
    #[arg(long, env = "KFIX_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// A file of approvers (mode 0600), one `NAME TOKEN` per line: each token approves
    /// plans, recorded under its NAME. Without it nothing is approved by hand.
    #[arg(long, env = "KFIX_APPROVERS_FILE")]
    pub approvers_file: Option<PathBuf>,
    /// Allow playbooks marked `auto_apply: true` to be applied without approval.
    #[arg(long)]
    pub auto_apply: bool,
    /// Auto-apply at most this many hosts per playbook per hour.
    #[arg(long, default_value_t = 1)]
    pub max_hosts_per_hour: usize,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// While this file exists nothing is applied (default: STATE_DIR/serve/kill-switch).
    #[arg(long)]
    pub kill_switch: Option<PathBuf>,
    /// On shutdown, wait this long for runs in progress to finish or roll back.
    #[arg(long, default_value = "5m")]
    pub drain_timeout: String,
    /// Connections open at once; more are closed at once.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// A client must send a request's headers within this (slow clients are cut off).
    #[arg(long, default_value = "10s")]
    pub header_timeout: String,
    /// And the whole request within this.
    #[arg(long, default_value = "30s")]
    pub request_timeout: String,
    /// Plans (dry-runs over SSH) at once, whatever arrives; more wait their turn.
    #[arg(long, default_value_t = 4)]
    pub max_plans: usize,
    /// Forget closed run records older than this (at least 1h: auto-apply counts the
    /// last hour's).
    #[arg(long, default_value = "168h")]
    pub retention: String,
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The run id `kfix serve` gave the plan (see GET /runs, or its log).
    pub run_id: String,
    /// The server's base URL.
    #[arg(long, env = "KFIX_SERVER", default_value = "http://127.0.0.1:9095")]
    pub server: String,
    /// Your approver token's file (one line of `kfix serve --approvers-file`, the token
    /// alone; mode 0600).
    #[arg(long, env = "KFIX_APPROVER_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Show the plan (and its state) instead of approving it.
    #[arg(long)]
    pub show: bool,
    /// Approve the plan shown without asking (required when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// A PEM file of the CA that signed the server's certificate (an `https://`
    /// server whose CA is not in the system's store; the system's stay trusted too).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The run to undo (see `kfix history`).
    pub run_id: String,
    /// Only these hosts: the same patterns as `run --limit` (groups come from the
    /// inventory the run used, when it can still be read).
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Show what would be undone, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Roll back without asking (required when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// An ssh_config file (default: the one the run used).
    #[arg(long)]
    pub ssh_config: Option<PathBuf>,
    /// A secret the run used, given again (`KEY=PATH`): the journal keeps no secret, so
    /// undoing a change to content that held one needs it. Repeatable.
    #[arg(long = "secret-file", value_name = "KEY=PATH")]
    pub secret_files: Vec<String>,
    /// The same, as a value on the command line (visible in `ps`; prefer --secret-file).
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// Where run journals are kept (default: $XDG_STATE_HOME/kfix, ~/.local/state/kfix).
    #[arg(long, env = "KFIX_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Hosts rolled back at once.
    #[arg(short, long, default_value_t = 50)]
    pub forks: usize,
    /// Seconds to wait for an SSH connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// SSH handshakes in flight at once: each costs CPU at both ends, and a controller
    /// handshaking with every host at once starves itself (docs/scale.md).
    #[arg(long, default_value_t = crate::transport::HANDSHAKES_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: u32,
    /// Seconds any one remote command may take.
    #[arg(long, default_value_t = 120)]
    pub command_timeout: u64,
    /// human: a table per host; json: one JSON document.
    #[arg(short, long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
}

#[derive(Args, Debug, Clone)]
pub struct DirArgs {
    /// A directory of playbooks to use besides the built-in ones: a playbook there with
    /// a built-in's id replaces it.
    #[arg(long, env = "KFIX_PLAYBOOK_DIR", global = true)]
    pub playbook_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Inventory (Ansible INI or YAML). Without one, the local host is the target.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Hosts to target, in Ansible's pattern language (names, groups, globs, a:b, a:&b, a:!b, @file).
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Set a variable (overrides playbook defaults and inventory vars). Repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// Set a secret variable from a file's contents (one trailing newline dropped): it
    /// stays out of kfix's own command line, and is masked everywhere. Repeatable.
    #[arg(long = "secret-file", value_name = "KEY=PATH")]
    pub secret_files: Vec<String>,
    /// An ssh_config file for every SSH connection.
    #[arg(long)]
    pub ssh_config: Option<PathBuf>,
    /// Hosts worked on at once.
    #[arg(short, long, default_value_t = 50)]
    pub forks: usize,
    /// The SSH user for hosts whose inventory names none (`ansible_user` wins, as in
    /// Ansible).
    #[arg(short, long)]
    pub user: Option<String>,
    /// The SSH private key for hosts whose inventory names none
    /// (`ansible_ssh_private_key_file` wins, as in Ansible).
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// Seconds to wait for an SSH connection.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// SSH handshakes in flight at once: each costs CPU at both ends, and a controller
    /// handshaking with every host at once starves itself (docs/scale.md).
    #[arg(long, default_value_t = crate::transport::HANDSHAKES_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: u32,
    /// Seconds any one remote command may take (a step can set its own).
    #[arg(long, default_value_t = 120)]
    pub command_timeout: u64,
    /// human: plans and a summary table; json: one JSON document on stdout;
    /// `html FILE` (check --all): a self-contained page with the matrix;
    /// `prom FILE` (check --all): node_exporter textfile-collector metrics.
    #[arg(short, long, num_args = 1..=2, value_names = ["FORMAT", "FILE"], default_value = "human")]
    pub output: Vec<String>,
    /// Show every step (also unchanged ones) and the exact commands.
    #[arg(short, long)]
    pub verbose: bool,
    /// Where run journals are kept (default: $XDG_STATE_HOME/kfix, ~/.local/state/kfix).
    #[arg(long, env = "KFIX_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DirArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Playbook files or ids from the playbook directory. Several run one after the
    /// other (each planned, confirmed and applied in turn, each its own run id and
    /// journal) over one connection per host.
    #[arg(required = true, num_args = 1..)]
    pub playbooks: Vec<String>,
    #[command(flatten)]
    pub target: Target,
    /// Plan only: show what would change, change nothing (`-C`/`--check`, as in Ansible).
    #[arg(long, short = 'C', visible_alias = "check")]
    pub dry_run: bool,
    /// Accepted for Ansible habits: kfix always shows the diff of what it changes.
    #[arg(long)]
    pub diff: bool,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Batch sizes, the last repeating: e.g. `1,10%,100%`. Default: the playbook's
    /// `rollout.serial`, else a canary host first for disruptive playbooks, else all at once.
    #[arg(long)]
    pub serial: Option<String>,
    /// Failure budget across the whole rollout: `N` hosts or `P%` of the hosts to change.
    /// Default 0: the first failed host halts the rollout.
    #[arg(long)]
    pub max_fail: Option<String>,
    /// Also halt after a batch in which more than `N` or `P%` of its hosts failed.
    #[arg(long)]
    pub max_fail_per_batch: Option<String>,
    /// Pause between batches, e.g. `30s`, `2m`.
    #[arg(long)]
    pub pause: Option<String>,
    /// Give up on a host (and roll it back) when applying takes longer, e.g. `10m`.
    #[arg(long)]
    pub host_timeout: Option<String>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Playbook files or ids.
    #[arg(required_unless_present = "all")]
    pub playbooks: Vec<String>,
    /// Every playbook in the playbook directory: a matrix of hosts and problems.
    #[arg(long, conflicts_with = "playbooks")]
    pub all: bool,
    /// Where the runbook pages are published: the HTML matrix links each playbook there
    /// (`BASE/ID.md`).
    #[arg(long, env = "KFIX_RUNBOOK_BASE_URL")]
    pub runbook_base_url: Option<String>,
    /// Answer as a node-problem-detector custom plugin: one playbook on one host (this
    /// one, unless -i/--limit select exactly one); exit 0 healthy or not applicable, 1
    /// problem, 2 unknown (could not tell); one short line on stdout. `kfix docs --npd`
    /// writes the monitor configuration that runs it.
    #[arg(long, conflicts_with = "all")]
    pub npd: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Where a command's result goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Human,
    Json,
    Html(PathBuf),
    /// node_exporter textfile-collector metrics (`kfix check --all`).
    Prom(PathBuf),
}

impl Target {
    /// The `--output` choice, checked.
    pub fn format(&self) -> Result<Output, String> {
        match self
            .output
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["human"] => Ok(Output::Human),
            ["json"] => Ok(Output::Json),
            ["html", file] => Ok(Output::Html(PathBuf::from(file))),
            ["prom", file] => Ok(Output::Prom(PathBuf::from(file))),
            [f @ ("html" | "prom")] => {
                Err(format!("`--output {f}` needs a file: --output {f} FILE"))
            }
            [other, ..] => Err(format!(
                "unknown output `{other}` (human, json, html FILE or prom FILE)"
            )),
            [] => Ok(Output::Human),
        }
    }
}

#[cfg(test)]
mod help_tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option and argument of every subcommand says what it is for (the man page
    /// and the completions are made from this help).
    #[test]
    fn every_option_has_help() {
        let cmd = Cli::command();
        let mut missing = Vec::new();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }
}
