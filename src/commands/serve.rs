//! `kfix serve` (the Alertmanager webhook receiver, see src/serve/) and `kfix approve`
//! (its client): set-up, the decision log on stderr, signals.

#[allow(unused_imports)]
use super::*;

use crate::serve as server;

/// `kfix serve --approvers-file`: `NAME TOKEN` per line (`#` comments), names unique
/// (letters, digits, `.`, `_`, `@`, `-`), tokens of 16 characters or more, each
/// distinct from every other and from the webhook's.
fn read_approvers(path: &std::path::Path, webhook: &str) -> Result<Vec<(String, String)>, String> {
    let text = crate::localfs::read_private(path, "approvers file")?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let mut words = line.split_whitespace();
        let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "{at}: expected `NAME TOKEN`\n  = hint: e.g. `alice $(head -c 32 /dev/urandom | base64)`"
            ));
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        {
            return Err(format!(
                "{at}: approver name `{}` may hold only letters, digits, `.`, `_`, `@` and `-`",
                crate::report::line(name)
            ));
        }
        if token.len() < 16 {
            return Err(format!(
                "{at}: {name}'s token is shorter than 16 characters"
            ));
        }
        if token == webhook {
            return Err(format!(
                "{at}: {name}'s token is the webhook's: whoever can post alerts could approve them\n  = hint: give each approver a token of their own"
            ));
        }
        if let Some((other, _)) = out.iter().find(|(n, t)| n == name || t == token) {
            return Err(format!(
                "{at}: {name} repeats {other}'s name or token: each approver has a name and a token of their own"
            ));
        }
        out.push((name.to_string(), token.to_string()));
    }
    if out.is_empty() {
        return Err(format!(
            "{} names no approver\n  = hint: one `NAME TOKEN` per line",
            path.display()
        ));
    }
    Ok(out)
}

/// Read a bearer token file, refusing one that others can read.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let hint = |p: &std::path::Path| {
        format!(
            "  = hint: create it with a long random value: (umask 077; head -c 32 /dev/urandom | base64 > {})",
            p.display()
        )
    };
    let token = crate::localfs::read_private(path, "token file")
        .map_err(|e| {
            if e.contains("hint:") {
                e
            } else {
                format!("{e}\n{}", hint(path))
            }
        })?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(format!(
            "the token in {} is shorter than 16 characters\n{}",
            path.display(),
            hint(path)
        ));
    }
    Ok(token)
}

pub async fn serve(a: cli::ServeArgs) -> Ends {
    let t = &a.target;
    let token = read_token(&a.token_file).map_err(Failure::bad_input)?;
    let approvers = match &a.approvers_file {
        Some(f) => read_approvers(f, &token).map_err(Failure::bad_input)?,
        None => Vec::new(),
    };
    let usage = |e: String| Err(Failure::usage(e));
    let listen: std::net::SocketAddr = match a.listen.parse() {
        Ok(l) => l,
        Err(e) => return usage(format!("--listen {}: {e} (want ADDRESS:PORT)", a.listen)),
    };
    let duration =
        |flag: &str, v: &str| rollout::parse_duration(v).map_err(|e| format!("{flag} {v}: {e}"));
    let durations = (
        duration("--drain-timeout", &a.drain_timeout),
        duration("--header-timeout", &a.header_timeout),
        duration("--request-timeout", &a.request_timeout),
        duration("--retention", &a.retention),
    );
    let (drain, header_timeout, request_timeout, retention) = match durations {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return usage(e),
    };
    if retention < Duration::from_secs(3600) {
        return usage(format!(
            "--retention {}: at least 1h (auto-apply's budget counts the last hour's records)",
            a.retention
        ));
    }
    if a.max_connections == 0 || a.max_plans == 0 {
        return usage("--max-connections and --max-plans are at least 1".into());
    }
    let json = match t.format() {
        Ok(cli::Output::Human) => false,
        Ok(cli::Output::Json) => true,
        _ => return usage("`kfix serve --output` is human or json (the log's format)".into()),
    };
    let pbs: Vec<Arc<playbook::Playbook>> = all_playbooks(t.dir.playbook_dir.as_deref())?
        .into_iter()
        .map(|(pb, _)| Arc::new(pb))
        .collect();
    let hosts = targets(t)?;
    let base = settings(t, "serve")?;
    let state = journal::state_dir(t.state_dir.as_deref());
    let kill_switch = a
        .kill_switch
        .clone()
        .unwrap_or_else(|| state.join("serve").join("kill-switch"));
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            return Err(Failure::new(
                Exit::HostProblem,
                format!("cannot listen on {listen}: {e}"),
            ));
        }
    };
    if !listen.ip().is_loopback() {
        report::note(&format!(
            "warning: listening on {listen}, not loopback: requests carry the token in clear text; put a TLS proxy in front"
        ));
    }
    remove_dead_control_dirs();
    let cfg = server::Config {
        webhook_token: token,
        approvers,
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
        limits: server::listen::Limits {
            max_connections: a.max_connections,
            header_timeout,
            request_timeout,
            shutdown_grace: Duration::from_secs(5),
        },
        max_plans: a.max_plans,
        retention,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<server::Decision>();
    let printer = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if json {
                if let Ok(line) = serde_json::to_string(&d) {
                    report::note(&line);
                }
            } else {
                report::note(&log_line(&d));
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
        Ok(()) => Ok(Exit::Ok),
        Err(e) => Err(Failure::new(Exit::HostProblem, e.to_string())),
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

/// `kfix approve RUN`: GET /runs/RUN, show the plan and its digest, ask, then POST
/// /runs/RUN/approve naming that digest (the server applies only that plan). With
/// --show: the record as JSON, nothing approved.
pub async fn approve(a: cli::ApproveArgs) -> Ends {
    let token = read_token(&a.token_file).map_err(Failure::bad_input)?;
    let base = a.server.trim_end_matches('/');
    let client = approve_client(base, a.ca_file.as_deref()).map_err(Failure::usage)?;
    let call = |req: reqwest::RequestBuilder| {
        req.bearer_auth(&token)
            .timeout(Duration::from_secs(30))
            .send()
    };
    let unreachable = |e: reqwest::Error| {
        // reqwest's own message names only the URL: the cause (refused, a certificate
        // not trusted) is in its sources.
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(cause) = src {
            why.push_str(&format!(": {cause}"));
            src = cause.source();
        }
        Err(Failure::new(
            Exit::HostProblem,
            format!("cannot reach kfix serve at {base}: {why}"),
        )
        .hint("pass --server URL (or KFIX_SERVER); an https server signed by your own CA needs --ca-file"))
    };
    let refused = |code: reqwest::StatusCode, body: &serde_json::Value| {
        Err(Failure::new(
            Exit::HostProblem,
            format!(
                "{} {}: {}",
                code.as_u16(),
                code.canonical_reason().unwrap_or(""),
                crate::report::line(body["error"].as_str().unwrap_or("(no message)"))
            ),
        ))
    };
    let resp = match call(client.get(format!("{base}/runs/{}", a.run_id))).await {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    let code = resp.status();
    let rec: serde_json::Value = resp.json().await.unwrap_or_default();
    if !code.is_success() {
        return refused(code, &rec);
    }
    if a.show {
        crate::outln!("{}", serde_json::to_string_pretty(&rec).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    let run: report::approval::Run = serde_json::from_value(rec).map_err(|e| {
        Failure::new(
            Exit::HostProblem,
            format!(
                "the server's record of run {} is not one kfix reads: {e}",
                a.run_id
            ),
        )
    })?;
    crate::out!("{}", report::approval::text(&run));
    let Some(digest) = run.plan_digest.clone() else {
        return Err(Failure::new(
            Exit::HostProblem,
            format!(
                "run {} has no plan to approve (state {})",
                a.run_id,
                crate::report::line(&run.state)
            ),
        ));
    };
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::new(
                Exit::NotConfirmed,
                "approving needs confirmation, and stdin is not a terminal",
            )
            .hint("review the plan above, then pass --yes"));
        }
        if !report::ask(&format!(
            "Approve this plan (digest {})?",
            &digest[..digest.len().min(12)]
        )) {
            report::note("not approved");
            return Ok(Exit::NotConfirmed);
        }
    }
    let post = client
        .post(format!("{base}/runs/{}/approve", a.run_id))
        .json(&serde_json::json!({ "digest": digest }));
    let resp = match call(post).await {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    let code = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if code.is_success() {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        Ok(Exit::Ok)
    } else {
        refused(code, &body)
    }
}

/// The HTTP client `kfix approve` talks to the server with: `https://` verified against
/// the system's CAs (and `--ca-file`'s), `http://` only to a loopback address — the
/// approver's token must never cross a network in clear text.
fn approve_client(
    server: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let url = reqwest::Url::parse(server).map_err(|e| format!("--server {server}: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "--server {server}: plain http to another machine would send the approver's token in clear text\n  = hint: use https://, or run kfix approve on the server's machine (http://127.0.0.1:9095)"
                ));
            }
        }
        other => return Err(format!("--server {server}: `{other}` is not http or https")),
    }
    let mut b = reqwest::Client::builder().https_only(url.scheme() == "https");
    if let Some(f) = ca_file {
        let pem = std::fs::read(f).map_err(|e| format!("--ca-file {}: {e}", f.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: {e}", f.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-file {}: no PEM certificate in it",
                f.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// A serve record's plan as a person reviews it: what, where, each changing step's
/// diff and commands, and the digest an approval names.
#[cfg(test)]
mod tests {
    #[test]
    fn approvers_have_names_and_tokens_of_their_own() {
        use std::os::unix::fs::PermissionsExt;
        let f = std::env::temp_dir().join(format!("kfix-approvers-{}", std::process::id()));
        let webhook = "webhook-token-0123456789";
        let read = |text: &str, mode: u32| {
            std::fs::write(&f, text).expect("write");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            super::read_approvers(&f, webhook)
        };
        let ok = read(
            "# who\nalice aaaaaaaaaaaaaaaaaaaa\n\nbob.smith bbbbbbbbbbbbbbbbbbbb\n",
            0o600,
        )
        .expect("valid");
        assert_eq!(ok[1], ("bob.smith".to_string(), "b".repeat(20)));
        for (text, mode, want) in [
            (
                "alice aaaaaaaaaaaaaaaaaaaa\n",
                0o644,
                "readable by other users",
            ),
            (
                "alice webhook-token-0123456789\n",
                0o600,
                "is the webhook's",
            ),
            (
                "alice aaaaaaaaaaaaaaaaaaaa\nbob aaaaaaaaaaaaaaaaaaaa\n",
                0o600,
                "repeats alice's",
            ),
            ("alice short\n", 0o600, "shorter than 16"),
            (
                "al ice aaaaaaaaaaaaaaaaaaaa\n",
                0o600,
                "expected `NAME TOKEN`",
            ),
            ("al\x1bice aaaaaaaaaaaaaaaaaaaa\n", 0o600, "may hold only"),
            ("# nobody\n", 0o600, "names no approver"),
        ] {
            let e = read(text, mode).expect_err(want);
            assert!(e.contains(want), "{text:?}: {e}");
        }
        std::fs::remove_file(&f).expect("cleanup");
    }

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
