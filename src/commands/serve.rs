//! `kfix serve` (the Alertmanager webhook receiver, see src/serve/) and `kfix approve`
//! (its client): set-up, the decision log on stderr, signals.

#[allow(unused_imports)]
use super::*;

use crate::serve as server;

/// Read a bearer token file, refusing one that others can read.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot read the token file {}: {e}\n  = hint: create it with a long random value: (umask 077; head -c 32 /dev/urandom | base64 > {})",
            path.display(),
            path.display()
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "the token file {} is readable by other users\n  = hint: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(format!(
            "the token in {} is shorter than 16 characters\n  = hint: (umask 077; head -c 32 /dev/urandom | base64 > {})",
            path.display(),
            path.display()
        ));
    }
    Ok(token)
}

pub async fn serve(a: cli::ServeArgs) -> u8 {
    let t = &a.target;
    let fail = |e: String| {
        eprintln!("error: {e}");
        exit::BAD_INPUT
    };
    let token = match read_token(&a.token_file) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let usage = |e: String| {
        eprintln!("error: {e}");
        exit::USAGE
    };
    let listen: std::net::SocketAddr = match a.listen.parse() {
        Ok(l) => l,
        Err(e) => return usage(format!("--listen {}: {e} (want ADDRESS:PORT)", a.listen)),
    };
    let drain = match rollout::parse_duration(&a.drain_timeout) {
        Ok(d) => d,
        Err(e) => return usage(format!("--drain-timeout: {e}")),
    };
    let json = match t.format() {
        Ok(cli::Output::Human) => false,
        Ok(cli::Output::Json) => true,
        _ => return usage("`kfix serve --output` is human or json (the log's format)".into()),
    };
    let mut pbs = Vec::new();
    for p in playbook::discover(&t.dir.playbook_dir) {
        match load_playbook(&p.display().to_string(), &t.dir.playbook_dir) {
            Ok(pb) => pbs.push(Arc::new(pb)),
            Err(c) => return c,
        }
    }
    if pbs.is_empty() {
        return fail(format!(
            "no playbooks in {}\n  = hint: pass --playbook-dir or KFIX_PLAYBOOK_DIR",
            t.dir.playbook_dir.display()
        ));
    }
    let hosts = match targets(t) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let base = match settings(t, "serve") {
        Ok(s) => s,
        Err(c) => return c,
    };
    let state = journal::state_dir(t.state_dir.as_deref());
    let kill_switch = a
        .kill_switch
        .clone()
        .unwrap_or_else(|| state.join("serve").join("kill-switch"));
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return exit::HOST_PROBLEM;
        }
    };
    if !listen.ip().is_loopback() {
        eprintln!(
            "warning: listening on {listen}, not loopback: requests carry the token in clear text; put a TLS proxy in front"
        );
    }
    remove_dead_control_dirs();
    let cfg = server::Config {
        token,
        auto_apply: a.auto_apply,
        max_hosts_per_hour: a.max_hosts_per_hour,
        max_body: a.max_body,
        kill_switch,
        state,
        hosts,
        playbooks: pbs,
        base,
        inventory: t.inventory.clone(),
        ssh_config: t.ssh_config.clone(),
        drain,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<server::Decision>();
    let printer = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if json {
                if let Ok(line) = serde_json::to_string(&d) {
                    eprintln!("{line}");
                }
            } else {
                eprintln!("{}", log_line(&d));
            }
        }
    });
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let res = server::serve(cfg, tx, listener, shutdown).await;
    let _ = printer.await;
    match res {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::HOST_PROBLEM
        }
    }
}

fn log_line(d: &server::Decision) -> String {
    let mut s = format!("kfix serve: {}", d.event);
    for (k, v) in [
        ("run", &d.run),
        ("alert", &d.alertname),
        ("fingerprint", &d.fingerprint),
        ("playbook", &d.playbook),
        ("host", &d.host),
    ] {
        if let Some(v) = v {
            s.push_str(&format!(" {k}={}", crate::report::line(v)));
        }
    }
    if !d.detail.is_empty() {
        s.push_str(": ");
        s.push_str(&crate::report::line(&d.detail));
    }
    s
}

/// `kfix approve RUN`: POST /runs/RUN/approve (or GET /runs/RUN with --show).
pub async fn approve(a: cli::ApproveArgs) -> u8 {
    let token = match read_token(&a.token_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let base = a.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let req = if a.show {
        client.get(format!("{base}/runs/{}", a.run_id))
    } else {
        client
            .post(format!("{base}/runs/{}/approve", a.run_id))
            .header(
                "x-kfix-approver",
                format!("kfix approve, {}", journal::operator()),
            )
    };
    let resp = match req
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: cannot reach kfix serve at {base}: {e}\n  = hint: pass --server URL (or KFIX_SERVER)"
            );
            return exit::HOST_PROBLEM;
        }
    };
    let code = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if code.is_success() {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        exit::OK
    } else {
        eprintln!(
            "error: {} {}: {}",
            code.as_u16(),
            code.canonical_reason().unwrap_or(""),
            crate::report::line(body["error"].as_str().unwrap_or("(no message)"))
        );
        exit::HOST_PROBLEM
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_alert_label_cannot_forge_a_log_line() {
        let d = crate::serve::Decision {
            event: "planned",
            run: Some("r1".into()),
            alertname: Some("X\nkfix serve: approved run=r1 by=admin".into()),
            fingerprint: None,
            host: Some("n1\x1b[2K".into()),
            playbook: None,
            detail: "reason\r".into(),
        };
        let l = super::log_line(&d);
        assert!(
            !l.contains('\n') && !l.contains('\x1b') && !l.contains('\r'),
            "{l:?}"
        );
        assert!(l.contains("alert=X\\nkfix serve: approved"), "{l}");
    }
}
