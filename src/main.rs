//! kfix: the command-line entry point. Parses arguments and dispatches to the
//! subcommands (src/commands/), which return the process exit code.

use std::process::ExitCode;

use clap::Parser;

use kfix::cli::{Cli, Command};
use kfix::commands::catalog::{
    alert_rules_doc, docs, list, list_inventory, new_playbook, npd_monitor, print_schema, validate,
};
use kfix::commands::check::check;
use kfix::commands::history::{history, rollback_run};
use kfix::commands::load_playbook;
use kfix::commands::run::run;
use kfix::commands::serve::{approve, serve};
use kfix::outcome::{Ends, Exit, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that only print end quietly, like other Unix tools, when the reader
    // of their output goes away (`kfix inventory | head`). The commands that reach hosts
    // keep Rust's default (SIGPIPE ignored): a write to a pipe whose reader died (an ssh
    // master, a closed report reader) is an error they handle, never the death of a run
    // half-way through changing a host; their report goes through `kfix::outln!`.
    let reaches_hosts = matches!(
        cli.command,
        Command::Run(_)
            | Command::Check(_)
            | Command::Rollback(_)
            | Command::Serve(_)
            | Command::Approve(_)
    );
    if !reaches_hosts {
        // SAFETY: setting a signal disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            kfix::report::failure(&Failure::new(
                Exit::HostProblem,
                format!("cannot start the async runtime: {e}"),
            ));
            return ExitCode::from(Exit::HostProblem.code());
        }
    };
    let end = match rt.block_on(dispatch(cli)) {
        Ok(e) => e,
        Err(f) => {
            kfix::report::failure(&f);
            f.exit
        }
    };
    ExitCode::from(end.code())
}

async fn dispatch(cli: Cli) -> Ends {
    match cli.command {
        Command::Run(a) => run(a).await,
        Command::Check(a) => check(a).await,
        Command::Validate { paths, dir } => validate(paths, dir.playbook_dir.as_deref()),
        Command::List { dir } => list(dir.playbook_dir.as_deref()),
        Command::Docs {
            out,
            alert_rules,
            runbook_base_url,
            for_,
            inventory,
            npd,
            kfix_path,
            interval,
            dir,
        } => {
            if npd {
                npd_monitor(&kfix_path, &interval, dir.playbook_dir.as_deref())
            } else if alert_rules {
                alert_rules_doc(
                    runbook_base_url,
                    &for_,
                    inventory,
                    dir.playbook_dir.as_deref(),
                )
            } else {
                docs(&out, dir.playbook_dir.as_deref())
            }
        }
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
        Command::Serve(a) => serve(a).await,
        Command::Approve(a) => approve(a).await,
        Command::Show { playbook, dir } => {
            let pb = load_playbook(&playbook, dir.playbook_dir.as_deref())?;
            kfix::out!("{}", kfix::show::runbook(&pb));
            Ok(Exit::Ok)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "kfix", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Command::Schema => print_schema(),
        Command::New {
            id,
            dir,
            schema_ref,
        } => new_playbook(&id, &dir, schema_ref.as_deref()),
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => Ok(Exit::Ok),
                Err(e) => Err(Failure::new(
                    Exit::WriteFailed,
                    format!("cannot write the man page: {e}"),
                )),
            }
        }
    }
}
