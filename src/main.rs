//! kfix: the command-line entry point. Parses arguments, resolves settings, runs the
//! engine, hands results to the reporter, and maps the outcome to an exit code.

mod cli;
mod diag;
mod engine;
mod host;
mod inventory;
mod journal;
mod matrix;
mod plan;
mod playbook;
mod probe;
mod quote;
mod report;
mod rollback;
mod rollout;
mod show;
mod steps;
mod template;
mod transport;
mod yaml;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command, Target};
use engine::{HostReport, RunSettings, Status};
use report::Format;

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const HOST_PROBLEM: u8 = 1;
    pub const BAD_INPUT: u8 = 3;
    pub const NOT_CONFIRMED: u8 = 4;
    pub const ROLLBACK_FAILED: u8 = 5;
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`kfix inventory | head`): Rust ignores SIGPIPE by default and println! would panic.
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(rt.block_on(dispatch(cli)))
}

async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Run(a) => run(a).await,
        Command::Check(a) => check(a).await,
        Command::Validate { paths, dir } => validate(paths, &dir.playbook_dir),
        Command::List { dir } => list(&dir.playbook_dir),
        Command::Docs { out, dir } => docs(&out, &dir.playbook_dir),
        Command::Inventory {
            inventory,
            limit,
            output,
        } => list_inventory(inventory, limit, output),
        Command::History {
            run_id,
            state_dir,
            output,
        } => history(run_id, state_dir, output),
        Command::Rollback(a) => rollback_run(a).await,
        Command::Show { playbook, dir } => match load_playbook(&playbook, &dir.playbook_dir) {
            Ok(pb) => {
                print!("{}", show::runbook(&pb));
                exit::OK
            }
            Err(code) => code,
        },
    }
}

fn load_playbook(arg: &str, dir: &std::path::Path) -> Result<playbook::Playbook, u8> {
    let loaded = playbook::resolve(arg, dir).and_then(|p| playbook::load(&p));
    loaded.map_err(|d| {
        eprintln!("{d}");
        exit::BAD_INPUT
    })
}

/// A run id: UTC time to the millisecond plus a few random-ish hex digits, so ids
/// sort by start time and are unique enough (a journal is never overwritten anyway).
fn run_id() -> String {
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

fn parse_extra_vars(v: &[String]) -> Result<BTreeMap<String, serde_json::Value>, u8> {
    let mut m = BTreeMap::new();
    for kv in v {
        let Some((k, val)) = kv.split_once('=') else {
            eprintln!(
                "error: `-e {kv}` is not KEY=VALUE\n  = hint: e.g. -e flannel_iface=flannel.1"
            );
            return Err(exit::BAD_INPUT);
        };
        // Like YAML scalars: true/false and integers are typed, the rest are strings.
        let v = match val {
            "true" | "True" => serde_json::Value::Bool(true),
            "false" | "False" => serde_json::Value::Bool(false),
            _ => val.parse::<i64>().map_or_else(
                |_| serde_json::Value::String(val.to_string()),
                serde_json::Value::from,
            ),
        };
        m.insert(k.trim().to_string(), v);
    }
    Ok(m)
}

/// Load the inventory (or the local host) and select hosts with --limit.
fn targets(t: &Target) -> Result<Vec<inventory::Host>, u8> {
    let inv = match &t.inventory {
        Some(p) => inventory::Inventory::load(p).map_err(|errs| {
            eprintln!("{}", diag::Diagnostics(errs));
            exit::BAD_INPUT
        })?,
        None => inventory::Inventory::localhost(),
    };
    let hosts = inv.select(t.limit.as_deref()).map_err(|e| {
        eprintln!("error: {e}\n  = hint: `kfix inventory`-style check: list host and group names in the inventory");
        exit::BAD_INPUT
    })?;
    Ok(hosts.into_iter().cloned().collect())
}

/// The rollout policy: flags, else the playbook's `rollout:`, else the defaults.
fn policy(a: &cli::RunArgs, pb: &playbook::Playbook) -> Result<rollout::Policy, u8> {
    let bad = |flag: &str, e: String| {
        eprintln!("error: {flag}: {e}");
        exit::BAD_INPUT
    };
    let pick = |flag: &Option<String>, spec: &Option<yaml::At<String>>| {
        flag.clone()
            .or_else(|| spec.as_ref().map(|s| s.value.clone()))
    };
    let serial = match pick(&a.serial, &pb.rollout.serial) {
        Some(s) => rollout::Serial::parse(&s).map_err(|e| bad("--serial", e))?,
        None if pb.disruptive => rollout::Serial::canary(),
        None => rollout::Serial::all(),
    };
    let max_fail = match pick(&a.max_fail, &pb.rollout.max_fail) {
        Some(s) => rollout::MaxFail::parse(&s).map_err(|e| bad("--max-fail", e))?,
        None => rollout::MaxFail::Count(0),
    };
    let max_fail_per_batch = pick(&a.max_fail_per_batch, &pb.rollout.max_fail_per_batch)
        .map(|s| rollout::MaxFail::parse(&s).map_err(|e| bad("--max-fail-per-batch", e)))
        .transpose()?;
    let pause = pick(&a.pause, &pb.rollout.pause)
        .map(|s| rollout::parse_duration(&s).map_err(|e| bad("--pause", e)))
        .transpose()?
        .unwrap_or_default();
    Ok(rollout::Policy {
        serial,
        max_fail,
        max_fail_per_batch,
        pause,
    })
}

fn settings(t: &Target, run_id: &str) -> Result<RunSettings, u8> {
    let control_dir = std::env::temp_dir().join(format!("kfix-{run_id}"));
    Ok(RunSettings {
        run_id: run_id.to_string(),
        forks: t.forks,
        ssh: transport::SshOptions {
            config_file: t.ssh_config.clone(),
            connect_timeout: Duration::from_secs(t.connect_timeout),
            control_dir,
            accept_new_host_keys: false,
        },
        command_timeout: Duration::from_secs(t.command_timeout),
        extra_vars: parse_extra_vars(&t.extra_vars)?,
        journal: None,
        policy: rollout::Policy {
            serial: rollout::Serial::all(),
            max_fail: rollout::MaxFail::Count(0),
            max_fail_per_batch: None,
            pause: Duration::ZERO,
        },
        stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        host_timeout: None,
    })
}

/// Create this run's private control-socket directory (with our pid in it), after
/// removing the directories of earlier runs whose process is gone (a killed controller).
fn make_control_dir(s: &RunSettings) -> Result<(), u8> {
    make_private_dir(&s.ssh.control_dir)
}

fn make_private_dir(dir: &std::path::Path) -> Result<(), u8> {
    use std::os::unix::fs::DirBuilderExt;
    remove_dead_control_dirs();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .and_then(|()| std::fs::write(dir.join("pid"), std::process::id().to_string()))
        .map_err(|e| {
            eprintln!("error: cannot create {}: {e}", dir.display());
            exit::HOST_PROBLEM
        })
}

/// `$TMPDIR/kfix-*` directories whose `pid` names no live process are leftovers of a
/// killed run: their SSH masters have exited on their own (idle), the sockets remain.
fn remove_dead_control_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // Named after a run id: `kfix-` and a date.
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kfix-"))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        let Some(pid) = is_ours
            .then(|| std::fs::read_to_string(path.join("pid")).ok())
            .flatten()
        else {
            continue;
        };
        let dead = pid
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if dead {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn exit_for(hosts: &[HostReport]) -> u8 {
    if hosts.iter().any(|h| h.status == Status::RollbackFailed) {
        exit::ROLLBACK_FAILED
    } else if hosts.iter().all(|h| h.status.is_ok()) {
        exit::OK
    } else {
        exit::HOST_PROBLEM
    }
}

fn confirm(n: usize) -> bool {
    eprint!("Apply these changes to {n} host(s)? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

fn print_doc(
    run_id: &str,
    pb: &str,
    dry_run: bool,
    hosts: &[HostReport],
    rollout: Option<&engine::Rollout>,
    journal: Option<String>,
) {
    let doc = report::RunDoc {
        run_id,
        playbook: pb,
        dry_run,
        hosts,
        summary: report::summary(hosts),
        rollout,
        journal,
    };
    match serde_json::to_string_pretty(&doc) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot serialise the report: {e}"),
    }
}

/// The hosts, a run id and the run's settings (with its private control directory).
/// Ctrl-C sets the stop flag (no new host starts); a second Ctrl-C exits at once.
fn prepare(
    t: &Target,
    policy: Option<rollout::Policy>,
) -> Result<(Vec<inventory::Host>, String, Arc<RunSettings>), u8> {
    let hosts = targets(t)?;
    let id = run_id();
    let mut s = settings(t, &id)?;
    if let Some(p) = policy {
        s.policy = p;
    }
    make_control_dir(&s)?;
    let stop = s.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!(
                "\ninterrupted: no new host will start; running hosts finish or roll back (Ctrl-C again to quit now)"
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    Ok((hosts, id, Arc::new(s)))
}

async fn run(a: cli::RunArgs) -> u8 {
    let t = &a.target;
    let pb = match load_playbook(&a.playbook, &t.dir.playbook_dir) {
        Ok(pb) => Arc::new(pb),
        Err(c) => return c,
    };
    if pb.steps.is_empty() {
        eprintln!(
            "error: `{}` is detection only: kfix has no safe automatic fix for it\n  = remedy: {}\n  = hint: `kfix check {}` shows which hosts have the problem",
            pb.id,
            pb.remedy.as_deref().unwrap_or("(none given)"),
            pb.id
        );
        return exit::BAD_INPUT;
    }
    if !a.dry_run && !a.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: a real run needs confirmation, and stdin is not a terminal\n  = hint: review with --dry-run, then pass --yes"
        );
        return exit::NOT_CONFIRMED;
    }
    let policy = match policy(&a, &pb) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let host_timeout = match a
        .host_timeout
        .as_deref()
        .map(rollout::parse_duration)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --host-timeout: {e}");
            return exit::BAD_INPUT;
        }
    };
    let (hosts, id, s) = match prepare(t, Some(policy)) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let s = Arc::new(RunSettings {
        host_timeout,
        ..(*s).clone()
    });
    let json = match t.format() {
        Ok(cli::Output::Human) => false,
        Ok(cli::Output::Json) => true,
        Ok(cli::Output::Html(_)) => {
            eprintln!("error: `--output html FILE` is for `kfix check --all`");
            return exit::BAD_INPUT;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report::progress(rx, false));
    let planned = engine::plan_all(pb.clone(), hosts, s.clone(), false, tx.clone()).await;
    let to_change = planned
        .iter()
        .filter(|p| p.report.status == Status::WouldChange)
        .count();
    let plan_reports: Vec<HostReport> = planned.iter().map(|p| p.report.clone()).collect();
    let mode = if a.dry_run { "dry-run" } else { "plan" };
    let mut journal_path = None;
    let mut rollout_info: Option<engine::Rollout> = None;
    let reports = if a.dry_run || to_change == 0 {
        drop(tx);
        let _ = reporter.await;
        engine::finish(planned).await
    } else {
        if !json && !a.yes {
            // The plan is shown before anything changes, for the operator to confirm.
            let _ = tx.send(engine::Event::Phase {
                name: "planned",
                hosts: 0,
            });
            println!("kfix run {} (run {id}, {mode})\n", pb.id);
            print!("{}", report::render_hosts(&plan_reports, t.verbose));
        }
        if !a.yes && !confirm(to_change) {
            drop(tx);
            let _ = reporter.await;
            let _ = engine::finish(planned).await;
            eprintln!("not applied");
            let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
            return exit::NOT_CONFIRMED;
        }
        // Every real run is journaled; undo data is durable before a host changes.
        let state = journal::state_dir(t.state_dir.as_deref());
        let j = match journal::Journal::create(&state, &id) {
            Ok(j) => Arc::new(j),
            Err(e) => {
                drop(tx);
                let _ = reporter.await;
                let _ = engine::finish(planned).await;
                eprintln!(
                    "error: cannot create the run journal under {}: {e}\n  = hint: pass --state-dir DIR (or KFIX_STATE_DIR) pointing at a writable directory",
                    state.display()
                );
                return exit::HOST_PROBLEM;
            }
        };
        let header = journal::Record::Run {
            run_id: id.clone(),
            started_unix: journal::now_unix(),
            operator: journal::operator(),
            playbook: pb.id.clone(),
            playbook_hash: pb.hash.clone(),
            playbook_file: pb.file.display().to_string(),
            inventory: t.inventory.as_ref().map(|p| p.display().to_string()),
            limit: t.limit.clone(),
            ssh_config: t
                .ssh_config
                .as_ref()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .map(|p| p.display().to_string()),
            kfix_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        if let Err(e) = j.record(&header) {
            drop(tx);
            let _ = reporter.await;
            let _ = engine::finish(planned).await;
            eprintln!(
                "error: cannot write the run journal {}: {e}",
                j.path().display()
            );
            return exit::HOST_PROBLEM;
        }
        let s = Arc::new(RunSettings {
            journal: Some(j.clone()),
            ..(*s).clone()
        });
        let (r, ro) = engine::apply_all(pb.clone(), planned, s, tx).await;
        rollout_info = Some(ro);
        let _ = reporter.await;
        let summary = report::summary(&r)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let _ = j.record(&journal::Record::End {
            finished_unix: journal::now_unix(),
            summary,
        });
        journal_path = Some(j.path().to_path_buf());
        r
    };
    let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
    if json {
        let jp = journal_path.as_ref().map(|p| p.display().to_string());
        print_doc(&id, &pb.id, a.dry_run, &reports, rollout_info.as_ref(), jp);
    } else {
        let title = if a.dry_run || to_change == 0 {
            mode
        } else {
            "applied"
        };
        println!("kfix run {} (run {id}, {title})\n", pb.id);
        print!("{}", report::render_hosts(&reports, t.verbose));
        println!();
        print!("{}", report::render_table(&reports));
        if let Some(why) = rollout_info.as_ref().and_then(|r| r.halted.as_ref()) {
            println!("rollout halted: {why}");
        }
        if let Some(p) = &journal_path {
            println!("journal: {}  (undo with: kfix rollback {id})", p.display());
        }
    }
    exit_for(&reports)
}

async fn check(a: cli::CheckArgs) -> u8 {
    let t = &a.target;
    let format = match t.format() {
        Ok(cli::Output::Html(_)) if !a.all => {
            eprintln!("error: `--output html FILE` goes with `kfix check --all`");
            return exit::BAD_INPUT;
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let names: Vec<String> = if a.all {
        playbook::discover(&t.dir.playbook_dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    } else {
        a.playbooks.clone()
    };
    if names.is_empty() {
        eprintln!(
            "error: no playbooks in {}\n  = hint: pass --playbook-dir or KFIX_PLAYBOOK_DIR",
            t.dir.playbook_dir.display()
        );
        return exit::BAD_INPUT;
    }
    let mut pbs = Vec::new();
    for p in &names {
        match load_playbook(p, &t.dir.playbook_dir) {
            Ok(pb) => pbs.push(Arc::new(pb)),
            Err(c) => return c,
        }
    }
    let (hosts, id, s) = match prepare(t, None) {
        Ok(p) => p,
        Err(c) => return c,
    };
    // One connection per host for every playbook.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report::progress(rx, false));
    let per_host = engine::check_matrix(pbs.clone(), hosts, s.clone(), tx).await;
    let _ = reporter.await;
    let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
    let ids: Vec<String> = pbs.iter().map(|p| p.id.clone()).collect();
    if a.all {
        let m = matrix::Matrix::build(&id, &ids, per_host);
        match format {
            cli::Output::Json => match serde_json::to_string_pretty(&m) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: {e}"),
            },
            cli::Output::Human => print!(
                "{}",
                m.render_text(matrix::terminal_width().unwrap_or(usize::MAX))
            ),
            cli::Output::Html(file) => {
                if let Err(e) = std::fs::write(&file, m.render_html()) {
                    eprintln!("error: cannot write {}: {e}", file.display());
                    return exit::HOST_PROBLEM;
                }
                print!(
                    "{}",
                    m.render_text(matrix::terminal_width().unwrap_or(usize::MAX))
                );
                println!("\nwrote {}", file.display());
            }
        }
        return if m.any_problem() {
            exit::HOST_PROBLEM
        } else {
            exit::OK
        };
    }
    // Per playbook, the hosts' results.
    let all: Vec<(String, Vec<HostReport>)> = ids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            (
                pid.clone(),
                per_host
                    .iter()
                    .filter_map(|(_, r)| r.get(i).cloned())
                    .collect(),
            )
        })
        .collect();
    let problem = all
        .iter()
        .flat_map(|(_, r)| r)
        .any(|h| h.status != Status::Healthy && h.status != Status::Skipped);
    if t.format() == Ok(cli::Output::Json) {
        let doc: Vec<serde_json::Value> = all
            .iter()
            .map(|(id, hosts)| {
                let hosts: Vec<serde_json::Value> = hosts
                    .iter()
                    .map(|h| {
                        let st = if h.status == Status::WouldChange {
                            "problem"
                        } else {
                            h.status.as_str()
                        };
                        serde_json::json!({"host": h.host, "status": st, "reason": h.reason})
                    })
                    .collect();
                serde_json::json!({"playbook": id, "hosts": hosts})
            })
            .collect();
        match serde_json::to_string_pretty(&serde_json::json!({"run_id": id, "checks": doc})) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        for (pid, hosts) in &all {
            println!("{pid}");
            for h in hosts {
                let word = if h.status == Status::WouldChange {
                    "PROBLEM".to_string()
                } else {
                    h.status.as_str().to_string()
                };
                println!(
                    "  {:<20} {:<12} {}",
                    h.host,
                    word,
                    h.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    if problem {
        exit::HOST_PROBLEM
    } else {
        exit::OK
    }
}

fn validate(paths: Vec<PathBuf>, dir: &std::path::Path) -> u8 {
    let paths = if paths.is_empty() {
        playbook::discover(dir)
    } else {
        paths
    };
    if paths.is_empty() {
        eprintln!(
            "error: no playbooks found in {}\n  = hint: pass paths, or --playbook-dir",
            dir.display()
        );
        return exit::BAD_INPUT;
    }
    let mut bad = 0;
    for p in &paths {
        match playbook::load(p) {
            Ok(pb) => println!("ok  {}  ({}, {} steps)", p.display(), pb.id, pb.steps.len()),
            Err(d) => {
                bad += 1;
                eprintln!("{d}\n");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} playbook(s) invalid", paths.len());
        exit::BAD_INPUT
    } else {
        exit::OK
    }
}

fn list(dir: &std::path::Path) -> u8 {
    let mut code = exit::OK;
    for p in playbook::discover(dir) {
        match playbook::load(&p) {
            Ok(pb) => println!(
                "{:<28} {:<9} {}",
                pb.id,
                format!("{:?}", pb.severity).to_lowercase(),
                pb.title
            ),
            Err(_) => {
                println!(
                    "{:<28} {:<9} (invalid: run `kfix validate {}`)",
                    p.display(),
                    "-",
                    p.display()
                );
                code = exit::BAD_INPUT;
            }
        }
    }
    code
}

fn history(run_id: Option<String>, state_dir: Option<PathBuf>, output: Format) -> u8 {
    let state = journal::state_dir(state_dir.as_deref());
    let paths = match &run_id {
        Some(id) => vec![journal::journal_path(&state, id)],
        None => journal::list(&state),
    };
    let mut runs = Vec::new();
    for p in &paths {
        match journal::read(p) {
            Ok(records) => runs.push((rollback::fold(&records).0, records)),
            Err(e) => {
                eprintln!(
                    "error: cannot read {}: {e}\n  = hint: `kfix history` lists the recorded runs",
                    p.display()
                );
                return exit::BAD_INPUT;
            }
        }
    }
    if output == Format::Json {
        let doc: Vec<serde_json::Value> = runs
            .iter()
            .map(|(info, records)| {
                let mut v = serde_json::to_value(info).unwrap_or_default();
                if run_id.is_some() {
                    v["records"] = serde_json::to_value(records).unwrap_or_default();
                }
                v
            })
            .collect();
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return exit::OK;
    }
    if run_id.is_none() {
        println!(
            "{:<25} {:<12} {:<26} {:>5}  RESULT",
            "RUN", "OPERATOR", "PLAYBOOK", "HOSTS"
        );
    }
    for (info, records) in &runs {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for st in info.hosts.values() {
            *counts.entry(st.as_str()).or_insert(0) += 1;
        }
        let mut result: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        if !info.finished {
            result.push("(did not finish: the controller stopped)".into());
        }
        if run_id.is_none() {
            println!(
                "{:<25} {:<12} {:<26} {:>5}  {}",
                info.run_id,
                info.operator,
                info.playbook,
                info.hosts.len(),
                result.join(", ")
            );
            continue;
        }
        println!(
            "run {}  playbook {} (sha256 {})  by {}",
            info.run_id,
            info.playbook,
            &info.playbook_hash[..12.min(info.playbook_hash.len())],
            info.operator
        );
        println!(
            "inventory {}  limit {}",
            info.inventory.as_deref().unwrap_or("(local host)"),
            info.limit.as_deref().unwrap_or("(all)")
        );
        for r in records {
            match r {
                journal::Record::Plan {
                    host, step, diff, ..
                } => {
                    println!("\n{host} {step}:");
                    for l in diff.lines() {
                        println!("    {l}");
                    }
                }
                journal::Record::OpDone {
                    host,
                    index,
                    ok,
                    error,
                    ..
                } => {
                    let what = if *ok {
                        "ok".to_string()
                    } else {
                        format!("FAILED: {}", error.as_deref().unwrap_or(""))
                    };
                    println!("  {host} op #{index}: {what}");
                }
                journal::Record::Undone {
                    host,
                    index,
                    ok,
                    by,
                    ..
                } => {
                    println!(
                        "  {host} op #{index}: undone by {by}{}",
                        if *ok { "" } else { " (FAILED)" }
                    );
                }
                journal::Record::HostDone {
                    host,
                    status,
                    reason,
                } => {
                    println!("  {host}: {status} {}", reason.as_deref().unwrap_or(""));
                }
                _ => {}
            }
        }
        println!("\nresult: {}", result.join(", "));
    }
    exit::OK
}

/// Does `name` match a `--limit` of names and globs (`*`, `?`) separated by `,` or `:`?
fn limit_matches(limit: &str, name: &str) -> bool {
    fn glob(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some('?'), Some(_)) => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let s: Vec<char> = name.chars().collect();
    limit
        .split([',', ':'])
        .filter(|p| !p.is_empty())
        .any(|p| glob(&p.chars().collect::<Vec<_>>(), &s))
}

async fn rollback_run(a: cli::RollbackArgs) -> u8 {
    let state = journal::state_dir(a.state_dir.as_deref());
    let path = journal::journal_path(&state, &a.run_id);
    let records = match journal::read(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: no journal for run `{}` ({}: {e})\n  = hint: `kfix history` lists the recorded runs; pass --state-dir if they live elsewhere",
                a.run_id,
                path.display()
            );
            return exit::BAD_INPUT;
        }
    };
    let (info, hosts) = rollback::fold(&records);
    let hosts: Vec<rollback::HostOps> = hosts
        .into_iter()
        .filter(|h| a.limit.as_deref().is_none_or(|l| limit_matches(l, &h.host)))
        .collect();
    if hosts.is_empty() {
        eprintln!(
            "error: run {} changed no host{}",
            a.run_id,
            if a.limit.is_some() {
                " matching --limit"
            } else {
                ""
            }
        );
        return exit::BAD_INPUT;
    }
    if !a.dry_run && !a.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: a rollback needs confirmation, and stdin is not a terminal\n  = hint: review with --dry-run, then pass --yes"
        );
        return exit::NOT_CONFIRMED;
    }
    if !a.dry_run && !a.yes && !confirm(hosts.len()) {
        eprintln!("not rolled back");
        return exit::NOT_CONFIRMED;
    }
    let id = run_id();
    let control_dir = std::env::temp_dir().join(format!("kfix-{id}"));
    let ssh = transport::SshOptions {
        config_file: a
            .ssh_config
            .clone()
            .or(info.ssh_config.as_ref().map(PathBuf::from)),
        connect_timeout: Duration::from_secs(a.connect_timeout),
        control_dir: control_dir.clone(),
        accept_new_host_keys: false,
    };
    if let Err(c) = make_private_dir(&control_dir) {
        return c;
    }
    let journal = if a.dry_run {
        None
    } else {
        match journal::Journal::append_to(&path) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                eprintln!("error: cannot append to {}: {e}", path.display());
                return exit::HOST_PROBLEM;
            }
        }
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(a.forks.max(1)));
    let mut tasks = Vec::new();
    for h in hosts {
        let (sem, ssh, journal, run) = (
            sem.clone(),
            ssh.clone(),
            journal.clone(),
            info.run_id.clone(),
        );
        let timeout = Duration::from_secs(a.command_timeout);
        let dry = a.dry_run;
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            rollback::rollback_host(&run, h, &ssh, timeout, dry, journal).await
        }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            reports.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&control_dir);
    if let Some(j) = &journal {
        for r in &reports {
            let _ = j.record(&journal::Record::HostDone {
                host: r.host.clone(),
                status: r.status.as_str().to_string(),
                reason: r.reason.clone(),
            });
        }
    }
    if a.output == Format::Json {
        let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &reports {
            *summary.entry(r.status.as_str()).or_insert(0) += 1;
        }
        let doc = serde_json::json!({"rollback_of": info.run_id, "dry_run": a.dry_run, "hosts": reports, "summary": summary});
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        println!(
            "kfix rollback {}{}\n",
            info.run_id,
            if a.dry_run { " (dry-run)" } else { "" }
        );
        for r in &reports {
            println!(
                "{}  {}  {}",
                r.host,
                r.status.as_str(),
                r.reason.as_deref().unwrap_or("")
            );
            for o in &r.operations {
                println!("    {o}");
            }
        }
    }
    if reports.iter().all(|r| r.status.is_ok()) {
        exit::OK
    } else {
        exit::HOST_PROBLEM
    }
}

/// Variable names whose values are never printed by `kfix inventory`.
fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with("_file")
}

fn list_inventory(inventory: Option<PathBuf>, limit: Option<String>, output: Format) -> u8 {
    let t = Target {
        inventory,
        limit,
        extra_vars: Vec::new(),
        ssh_config: None,
        forks: 1,
        connect_timeout: 1,
        command_timeout: 1,
        output: vec![
            if output == Format::Json {
                "json"
            } else {
                "human"
            }
            .to_string(),
        ],
        verbose: false,
        state_dir: None,
        dir: cli::DirArgs {
            playbook_dir: PathBuf::from("playbooks"),
        },
    };
    let hosts = match targets(&t) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let masked = |vars: &inventory::Vars| -> BTreeMap<String, serde_json::Value> {
        vars.iter()
            .map(|(k, v)| {
                let v = if is_secret_name(k) {
                    serde_json::Value::String("********".into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    };
    if output == Format::Json {
        let doc: Vec<serde_json::Value> = hosts
            .iter()
            .map(|h| serde_json::json!({"host": h.name, "address": h.address(), "groups": h.groups, "vars": masked(&h.vars)}))
            .collect();
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return exit::OK;
    }
    for h in &hosts {
        println!(
            "{}  ({})  groups: {}",
            h.name,
            h.address(),
            h.groups.join(", ")
        );
        for (k, v) in masked(&h.vars) {
            println!("    {k} = {v}");
        }
    }
    println!("{} host(s)", hosts.len());
    exit::OK
}

fn docs(out: &std::path::Path, dir: &std::path::Path) -> u8 {
    let mut pbs = Vec::new();
    for p in playbook::discover(dir) {
        match playbook::load(&p) {
            Ok(pb) => pbs.push(pb),
            Err(d) => {
                eprintln!("{d}");
                return exit::BAD_INPUT;
            }
        }
    }
    match show::write_pages(&pbs, out) {
        Ok(files) => {
            println!("wrote {} pages to {}", files.len(), out.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: cannot write runbooks to {}: {e}", out.display());
            exit::HOST_PROBLEM
        }
    }
}
