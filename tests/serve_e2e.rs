//! `kfix serve` end to end: the real Prometheus Alertmanager (Debian's
//! prometheus-alertmanager) routes alerts posted to its API to `kfix serve` by its
//! webhook_config; kfix plans the right playbook for the right lab host, `kfix approve`
//! applies it, repeats are deduplicated, bad requests get the right answer, resolved
//! alerts close their plan, and records survive a restart. Both servers run on loopback
//! inside the lab's controller namespace.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, require_root};
use serde_json::{Value, json};

const KFIX: &str = "127.0.0.1:9095";

/// A TLS-terminating reverse proxy (argv: PKI dir, listen address, upstream URL): what
/// sits in front of kfix serve when approvers reach it over a network.
const TLS_PROXY: &str = r#"
import http.server, ssl, sys, urllib.request, urllib.error
pki, listen, upstream = sys.argv[1:4]
class P(http.server.BaseHTTPRequestHandler):
    def go(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        req = urllib.request.Request(upstream + self.path, data=body, method=self.command)
        for h in ("Authorization", "Content-Type"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            r = urllib.request.urlopen(req, timeout=30)
            code, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            code, data = e.code, e.read()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = go
    do_POST = go
host, port = listen.rsplit(":", 1)
srv = http.server.HTTPServer((host, int(port)), P)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(pki + "/tls.crt", pki + "/tls.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
const AM: &str = "127.0.0.1:9093";

/// A process started in the lab's controller netns, killed (SIGTERM, then KILL) on drop.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Daemon {
    fn start(lab: &Lab, name: &'static str, argv: &[&str], log: &str) -> Daemon {
        let ctl = std::fs::read_to_string(lab.dir.join("ctl_ns")).unwrap();
        let log = std::fs::File::create(lab.dir.join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ctl.trim()])
            .args(argv)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env("KFIX_STATE_DIR", lab.dir.join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon { child, name }
    }

    /// SIGTERM and wait: the exit status.
    fn stop(&mut self) -> Option<i32> {
        // `ip netns exec` execs the program: the child's pid is the daemon's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop on SIGTERM", self.name);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP request from the controller netns: (status, body as JSON or string).
fn http(
    lab: &Lab,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    const PY: &str = r#"
import sys, urllib.request, urllib.error
method, url, token, body = sys.argv[1:5]
data = None if body == "-" else (open(body[1:], "rb").read() if body.startswith("@") else body.encode())
req = urllib.request.Request(url, data=data, method=method)
if token != "-":
    req.add_header("Authorization", "Bearer " + token)
req.add_header("Content-Type", "application/json")
try:
    r = urllib.request.urlopen(req, timeout=10); code, data = r.status, r.read()
except urllib.error.HTTPError as e:
    code, data = e.code, e.read()
except Exception as e:
    code, data = 0, str(e).encode()
sys.stdout.write("%d\n" % code); sys.stdout.write(data.decode(errors="replace"))
"#;
    let out = lab.ctl(&[
        "python3",
        "-c",
        PY,
        method,
        url,
        token.unwrap_or("-"),
        body.unwrap_or("-"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let v = serde_json::from_str(rest).unwrap_or_else(|_| Value::String(rest.to_string()));
    (code.trim().parse().unwrap_or(0), v)
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn webhook(alerts: Value) -> String {
    json!({"version": "4", "status": "firing", "receiver": "kfix", "groupLabels": {},
           "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "groupKey": "{}:{}",
           "truncatedAlerts": 0, "alerts": alerts})
    .to_string()
}

fn alert(status: &str, name: &str, node: &str, fp: &str) -> Value {
    json!({"status": status, "labels": {"alertname": name, "node": node, "severity": "critical"},
           "annotations": {}, "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "", "fingerprint": fp})
}

/// One alert posted to kfix serve's webhook, with the token: (status, answer).
fn post_alert(s: &Setup, status: &str, name: &str, node: &str, fp: &str) -> (u16, Value) {
    let body = webhook(json!([alert(status, name, node, fp)]));
    let url = format!("http://{KFIX}/alerts");
    http(&s.lab, "POST", &url, Some(&s.token), Some(&body))
}

/// The alert is answered 200 and ignored, for the reason given.
#[track_caller]
fn assert_ignored(s: &Setup, name: &str, node: &str, fp: &str, why: &str) {
    let (code, v) = post_alert(s, "firing", name, node, fp);
    assert_eq!(
        (code, &v["decisions"][0]["decision"]),
        (200, &json!("ignored")),
        "{v}"
    );
    assert!(
        v["decisions"][0]["detail"].as_str().unwrap().contains(why),
        "{v}"
    );
}

struct Setup {
    lab: Lab,
    /// The webhook's token (Alertmanager's).
    token: String,
    token_file: String,
    /// Alice's approver token, and the file `kfix approve` reads it from.
    approver: String,
    approver_file: String,
    approvers_file: String,
}

fn setup() -> Setup {
    let lab = Lab::up(3);
    for h in ["h1", "h3"] {
        lab.sh(h, "sysctl -qw net.ipv4.ip_forward=0");
    }
    lab.sh(
        "h2",
        "sysctl -qw net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > /etc/sysctl.conf",
    );
    // h2 calls itself by another name than the inventory's: found through its facts.
    lab.sh("h2", "hostname ip-10-250-0-12.lab.internal");
    let token = "kfix-test-token-0123456789abcdef".to_string();
    let token_file = lab.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let approver = "alice-approver-token-fedcba9876543210".to_string();
    let approver_file = lab.dir.join("alice.token");
    std::fs::write(&approver_file, format!("{approver}\n")).unwrap();
    let approvers_file = lab.dir.join("approvers");
    std::fs::write(&approvers_file, format!("# name token\nalice {approver}\n")).unwrap();
    for f in [&approver_file, &approvers_file] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Setup {
        token,
        token_file: token_file.to_str().unwrap().to_string(),
        approver,
        approver_file: approver_file.to_str().unwrap().to_string(),
        approvers_file: approvers_file.to_str().unwrap().to_string(),
        lab,
    }
}

fn start_kfix(s: &Setup, extra: &[&str], log: &str) -> Daemon {
    let inv = s.lab.inventory();
    let cfg = s.lab.ssh_config();
    let mut argv = vec![
        env!("CARGO_BIN_EXE_kfix"),
        "serve",
        "-i",
        inv.to_str().unwrap(),
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--token-file",
        &s.token_file,
        "--approvers-file",
        &s.approvers_file,
        "--listen",
        KFIX,
    ];
    argv.extend_from_slice(extra);
    let d = Daemon::start(&s.lab, "kfix serve", &argv, log);
    wait_for("kfix serve to listen", 20, || {
        (get(s, "/runs").0 == 200).then_some(())
    });
    d
}

/// `GET http://KFIX{path}` with the token.
fn get(s: &Setup, path: &str) -> (u16, Value) {
    let url = format!("http://{KFIX}{path}");
    http(&s.lab, "GET", &url, Some(&s.token), None)
}

fn runs(s: &Setup) -> Vec<Value> {
    let (code, v) = get(s, "/runs");
    assert_eq!(code, 200, "{v}");
    v["runs"].as_array().unwrap().clone()
}

fn run(s: &Setup, id: &str) -> Value {
    let (code, v) = get(s, &format!("/runs/{id}"));
    assert_eq!(code, 200, "{v}");
    v
}

fn wait_state(s: &Setup, id: &str, state: &str) -> Value {
    wait_for(&format!("run {id} to be {state}"), 60, || {
        let r = run(s, id);
        (r["state"] == state).then_some(r)
    })
}

#[test]
fn alertmanager_to_kfix_serve_to_a_fixed_node() {
    if !require_root() {
        return;
    }
    let s = setup();
    let lab = &s.lab;
    let am_data = lab.dir.join("alertmanager-data");
    // docs/alerts.md's recipe: Debian's Alertmanager runs as `prometheus`, and the
    // webhook's token file (0600) is given to that user. Alertmanager reads it as
    // `prometheus`; kfix serve (root) reads the same file and accepts it.
    std::fs::create_dir_all(&am_data).unwrap();
    let chown = |p: &std::path::Path| {
        let st = Command::new("chown")
            .args(["prometheus:", p.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "chown prometheus: {}", p.display());
    };
    chown(std::path::Path::new(&s.token_file));
    chown(&am_data);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(std::path::Path::new(&s.token_file)), 0o600);
    // The lab's directory lets `prometheus` through (no listing); the ones above it
    // are the machine's and must already.
    std::fs::set_permissions(
        &lab.dir,
        std::fs::Permissions::from_mode(mode(&lab.dir) | 0o001),
    )
    .unwrap();
    for d in lab.dir.ancestors().skip(1) {
        assert!(
            mode(d) & 0o001 != 0,
            "{} is not searchable by others",
            d.display()
        );
    }
    let mut kfix = start_kfix(&s, &[], "serve.log");

    // Alertmanager, routing every alert to kfix serve with the bearer token.
    let am_cfg = lab.dir.join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: kfix\n  group_by: [alertname, node]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: kfix\n    webhook_configs:\n      - url: http://{KFIX}/alerts\n        send_resolved: true\n\
             \x20       http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
            s.token_file
        ),
    )
    .unwrap();
    let _am = Daemon::start(
        lab,
        "alertmanager",
        &[
            "setpriv",
            "--reuid=prometheus",
            "--regid=prometheus",
            "--init-groups",
            "--",
            "prometheus-alertmanager",
            &format!("--config.file={}", am_cfg.display()),
            &format!("--storage.path={}", am_data.display()),
            &format!("--web.listen-address={AM}"),
            "--cluster.listen-address=",
        ],
        "alertmanager.log",
    );
    wait_for("alertmanager to be ready", 30, || {
        let (code, _) = http(lab, "GET", &format!("http://{AM}/-/ready"), None, None);
        (code == 200).then_some(())
    });

    // An alert for h1, posted to Alertmanager's API, reaches kfix, which plans F3 on h1.
    let before_h1 = lab.snapshot("h1");
    let before_h2 = lab.snapshot("h2");
    let out = lab.ctl(&[
        "amtool",
        &format!("--alertmanager.url=http://{AM}"),
        "alert",
        "add",
        "alertname=KfixNodeIpForwardingDisabled",
        "node=h1",
        "severity=critical",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = wait_for("the alert to reach kfix serve", 30, || {
        runs(&s).into_iter().find(|r| r["host"] == "h1")
    });
    assert_eq!(rec["playbook"], "persist-ip-forward");
    assert_eq!(rec["alertname"], "KfixNodeIpForwardingDisabled");
    let id = rec["id"].as_str().unwrap().to_string();
    let planned = wait_state(&s, &id, "awaiting_approval");
    let steps = planned["plan"]["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|st| st["verdict"] == "change"
            && st["diff"].as_str().unwrap().contains("net.ipv4.ip_forward")),
        "{planned:#}"
    );
    assert_eq!(lab.snapshot("h1"), before_h1, "planning changed h1");
    // The plan is in `kfix history` too.
    let hist = lab.kfix(&["history", &id]);
    assert!(
        String::from_utf8_lossy(&hist.stdout).contains("awaiting_approval"),
        "{}",
        String::from_utf8_lossy(&hist.stdout)
    );

    // The same alert again (Alertmanager's fingerprint): deduplicated while pending.
    let fp = planned["fingerprint"].as_str().unwrap().to_string();
    let url = format!("http://{KFIX}/alerts");
    let (code, v) = post_alert(&s, "firing", "KfixNodeIpForwardingDisabled", "h1", &fp);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["decisions"][0]["decision"], "duplicate", "{v}");
    assert_eq!(v["decisions"][0]["run"], id.as_str());

    // Wrong requests get the right answers, and change nothing.
    assert_ignored(
        &s,
        "NoSuchAlert",
        "h1",
        "f-unknown",
        "no playbook handles alertname \"NoSuchAlert\"",
    );
    assert_ignored(
        &s,
        "KfixNodeIpForwardingDisabled",
        "node-99",
        "f-node",
        "node \"node-99\" is not in the inventory",
    );
    let body = webhook(json!([alert(
        "firing",
        "KfixNodeIpForwardingDisabled",
        "node-99",
        "f-node"
    )]));
    let (code, v) = http(lab, "POST", &url, None, Some(&body));
    assert_eq!(code, 401, "{v}");
    let (code, _) = http(
        lab,
        "POST",
        &url,
        Some("wrong-token-wrong-token"),
        Some(&body),
    );
    assert_eq!(code, 401);
    let (code, v) = http(lab, "GET", &format!("http://{KFIX}/runs/{id}"), None, None);
    assert_eq!(code, 401, "reading needs the token too: {v}");
    let (code, v) = http(
        lab,
        "POST",
        &url,
        Some(&s.token),
        Some("{\"version\": \"4\", \"alerts\": [}"),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("not an Alertmanager webhook"),
        "{v}"
    );
    let big = lab.dir.join("big-body");
    std::fs::write(&big, "x".repeat(2 << 20)).unwrap();
    let big = format!("@{}", big.display());
    let (code, _) = http(lab, "POST", &url, Some(&s.token), Some(&big));
    assert_eq!(code, 413, "bodies over --max-body are refused");
    let (code, v) = http(
        lab,
        "POST",
        &format!("http://{KFIX}/runs/nope/approve"),
        Some(&s.approver),
        Some("{\"digest\": \"x\"}"),
    );
    assert_eq!(code, 404, "{v}");
    // The webhook's token posts alerts but never approves; an approver's never posts
    // alerts; an approval names the digest of the plan it saw.
    let approve_url = format!("http://{KFIX}/runs/{id}/approve");
    let digest = run(&s, &id)["plan_digest"].as_str().unwrap().to_string();
    let good = format!("{{\"digest\": \"{digest}\"}}");
    let (code, v) = http(lab, "POST", &approve_url, Some(&s.token), Some(&good));
    assert_eq!(code, 403, "{v}");
    let (code, v) = http(lab, "POST", &url, Some(&s.approver), Some(&body));
    assert_eq!(code, 403, "{v}");
    let (code, v) = http(lab, "POST", &approve_url, Some(&s.approver), None);
    assert_eq!(code, 400, "{v}");
    let other = format!("{{\"digest\": \"{}\"}}", "0".repeat(64));
    let (code, v) = http(lab, "POST", &approve_url, Some(&s.approver), Some(&other));
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not the plan"), "{v}");
    assert_eq!(run(&s, &id)["state"], "awaiting_approval");
    assert_eq!(runs(&s).len(), 1, "only the one real alert made a run");

    // A node named by the hostname it reports (not an inventory name or address).
    wait_for("the hosts' hostnames", 30, || {
        let log = std::fs::read_to_string(lab.dir.join("serve.log")).unwrap();
        log.contains("kfix serve: hostnames: 3 of 3 hosts")
            .then_some(())
    });
    let (_, v) = post_alert(
        &s,
        "firing",
        "KfixNodeIpForwardingDisabled",
        "ip-10-250-0-12.lab.internal",
        "f-h2",
    );
    assert_eq!(
        v["decisions"][0]["decision"],
        "planning",
        "{v}\n{}",
        std::fs::read_to_string(lab.dir.join("serve.log")).unwrap()
    );
    let id2 = v["decisions"][0]["run"].as_str().unwrap().to_string();
    assert_eq!(run(&s, &id2)["host"], "h2");
    wait_state(&s, &id2, "nothing_to_do");

    // A second node's alert, resolved before anyone approved it: closed, never applied.
    let (_, v) = post_alert(&s, "firing", "KfixNodeIpForwardingDisabled", "h3", "f-h3");
    let id3 = v["decisions"][0]["run"].as_str().unwrap().to_string();
    wait_state(&s, &id3, "awaiting_approval");
    let before_h3 = lab.snapshot("h3");
    let (_, v) = post_alert(&s, "resolved", "KfixNodeIpForwardingDisabled", "h3", "f-h3");
    assert_eq!(v["decisions"][0]["decision"], "closed", "{v}");
    assert_eq!(run(&s, &id3)["state"], "resolved");
    let out = lab.kfix(&[
        "approve",
        &id3,
        "--server",
        &format!("http://{KFIX}"),
        "--token-file",
        &s.approver_file,
        "--yes",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a closed plan cannot be approved"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `kfix approve` without --yes and without a terminal: shows the plan, approves
    // nothing.
    let server = format!("http://{KFIX}");
    let approve = |extra: &[&str]| {
        let mut a = vec![
            "approve",
            id.as_str(),
            "--server",
            server.as_str(),
            "--token-file",
            s.approver_file.as_str(),
        ];
        a.extend_from_slice(extra);
        lab.kfix(&a)
    };
    let out = approve(&[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("plan digest: {digest}")) && shown.contains("+net.ipv4.ip_forward"),
        "{shown}"
    );
    assert_eq!(run(&s, &id)["state"], "awaiting_approval");
    // With --yes it applies the plan; h1 is fixed, h2 and h3 untouched.
    let out = approve(&["--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = wait_state(&s, &id, "applied");
    assert_eq!(done["approved_by"], "approver alice", "{done:#}");
    assert_eq!(done["result"]["status"], "changed", "{done:#}");
    assert_eq!(lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
    assert_eq!(lab.snapshot("h2"), before_h2);
    assert_eq!(lab.snapshot("h3"), before_h3);
    // The apply is a journaled run: `kfix rollback` can undo it.
    let apply_run = done["apply_run"].as_str().unwrap();
    let out = lab.kfix(&["rollback", apply_run, "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restart: records survive; SIGTERM is a clean exit.
    assert_eq!(kfix.stop(), Some(0));
    let log = std::fs::read_to_string(lab.dir.join("serve.log")).unwrap();
    for line in [
        "kfix serve: planned run=",
        "kfix serve: duplicate",
        "kfix serve: ignored",
        "kfix serve: refused",
        "kfix serve: closed",
        "kfix serve: applied",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
    let _kfix = start_kfix(&s, &[], "serve2.log");
    assert_eq!(run(&s, &id)["state"], "applied");
    assert_eq!(run(&s, &id3)["state"], "resolved");
}

/// Auto-apply: only for a playbook that allows it, with the server's --auto-apply, at
/// most --max-hosts-per-hour hosts; the kill switch stops it.
#[test]
fn auto_apply_within_the_blast_radius() {
    if !require_root() {
        return;
    }
    let s = setup();
    let lab = &s.lab;
    // A playbook directory with F3 marked auto_apply.
    let dir = lab.dir.join("playbooks");
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/persist-ip-forward.yaml"
    ))
    .unwrap();
    std::fs::write(
        dir.join("persist-ip-forward.yaml"),
        format!("{src}\nauto_apply: true\n"),
    )
    .unwrap();
    let _kfix = start_kfix(
        &s,
        &[
            "--auto-apply",
            "--max-hosts-per-hour",
            "1",
            "--playbook-dir",
            dir.to_str().unwrap(),
        ],
        "serve.log",
    );
    let post = |node: &str, fp: &str| {
        let (code, v) = post_alert(&s, "firing", "KfixNodeIpForwardingDisabled", node, fp);
        assert_eq!(code, 200, "{v}");
        v["decisions"][0]["run"].as_str().unwrap().to_string()
    };
    let first = post("h1", "fp-1");
    let r = wait_state(&s, &first, "applied");
    assert_eq!(r["approved_by"], "auto");
    assert_eq!(lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
    // The hour's budget is spent: h3 waits for a human.
    let second = post("h3", "fp-3");
    let r = wait_for("h3 to be held", 60, || {
        let r = run(&s, &second);
        let held = r["reason"]
            .as_str()
            .is_some_and(|x| x.starts_with("not auto-applied"));
        (r["state"] == "awaiting_approval" && held).then_some(r)
    });
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("blast radius: 1 host of persist-ip-forward auto-applied in the last hour"),
        "{r:#}"
    );
    assert_eq!(lab.sh("h3", "cat /proc/sys/net/ipv4/ip_forward"), "0\n");
    // The kill switch stops approvals as well.
    let kill = lab.dir.join("state/serve/kill-switch");
    std::fs::write(&kill, "").unwrap();
    let digest = format!(
        "{{\"digest\": \"{}\"}}",
        run(&s, &second)["plan_digest"].as_str().unwrap()
    );
    let (code, v) = http(
        lab,
        "POST",
        &format!("http://{KFIX}/runs/{second}/approve"),
        Some(&s.approver),
        Some(&digest),
    );
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("kill switch engaged"),
        "{v}"
    );
    std::fs::remove_file(&kill).unwrap();
    // `kfix approve` over TLS, as through the proxy one puts in front of kfix serve: a
    // TLS-terminating proxy with a certificate from the site's CA (made with openssl).
    let pki = lab.dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let made = Command::new("bash")
        .arg("-c")
        .arg(
            "set -e\nopenssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=site-ca -keyout ca.key -out ca.crt\n\
             openssl req -newkey rsa:2048 -nodes -subj /CN=kfix -keyout tls.key -out tls.csr\n\
             printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' >tls.ext\n\
             openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile tls.ext -out tls.crt",
        )
        .current_dir(&pki)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let proxy = pki.join("proxy.py");
    std::fs::write(&proxy, TLS_PROXY).unwrap();
    let _proxy = Daemon::start(
        lab,
        "tls proxy",
        &[
            "python3",
            proxy.to_str().unwrap(),
            pki.to_str().unwrap(),
            "127.0.0.1:9443",
            &format!("http://{KFIX}"),
        ],
        "proxy.log",
    );
    let approve = |server: &str, ca: Option<&std::path::Path>| {
        let mut a = vec![
            "approve",
            second.as_str(),
            "--server",
            server,
            "--token-file",
            s.approver_file.as_str(),
            "--yes",
        ];
        if let Some(ca) = ca {
            a.extend(["--ca-file", ca.to_str().unwrap()]);
        }
        lab.kfix(&a)
    };
    wait_for("the TLS proxy", 20, || {
        let probe = "import socket; socket.create_connection(('127.0.0.1', 9443), 1)";
        lab.ctl(&["python3", "-c", probe])
            .status
            .success()
            .then_some(())
    });
    // Plain http to another machine: refused before anything is sent.
    let out = approve("http://10.250.0.1:9095", None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("in clear text"));
    // The site's CA unknown: the certificate is not trusted, nothing is approved.
    let out = approve("https://127.0.0.1:9443", None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert_eq!(run(&s, &second)["state"], "awaiting_approval");
    let out = approve("https://127.0.0.1:9443", Some(&pki.join("ca.crt")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = wait_state(&s, &second, "applied");
    assert_eq!(r["approved_by"], "approver alice", "{r:#}");
    assert_eq!(lab.sh("h3", "cat /proc/sys/net/ipv4/ip_forward"), "1\n");
}

/// Clients that send half a request and go silent, more of them than the server takes,
/// and one webhook of 300 alerts for one host: the server stays answerable, drops the
/// slow ones after the header deadline, plans the 300 alerts once, and stops promptly
/// on SIGTERM with the half-sent connections still open.
#[test]
fn floods_and_slow_clients_do_not_hold_the_server() {
    if !require_root() {
        return;
    }
    let s = setup();
    let lab = &s.lab;
    let mut kfix = start_kfix(
        &s,
        &[
            "--max-connections",
            "8",
            "--header-timeout",
            "2s",
            "--request-timeout",
            "5s",
            "--max-plans",
            "1",
        ],
        "serve.log",
    );
    // 50 connections, each a request line and one header, then silence (held 60 s).
    const SLOW: &str = r#"
import socket, sys, time
held = []
for i in range(50):
    try:
        c = socket.create_connection(("127.0.0.1", 9095), 2)
        c.sendall(b"POST /alerts HTTP/1.1\r\nHost: kfix\r\n")
        held.append(c)
    except OSError:
        pass
print("opened", len(held), flush=True)
time.sleep(60)
"#;
    let slow = lab.dir.join("slow.py");
    std::fs::write(&slow, SLOW).unwrap();
    let _slow = Daemon::start(
        lab,
        "slow clients",
        &["python3", slow.to_str().unwrap()],
        "slow.log",
    );
    wait_for("the slow clients", 20, || {
        std::fs::read_to_string(lab.dir.join("slow.log"))
            .ok()
            .filter(|l| l.contains("opened"))
    });
    // The slots free up within the header deadline: an honest request is answered.
    let t0 = Instant::now();
    wait_for("an answer while slow clients hold connections", 15, || {
        (get(&s, "/runs").0 == 200).then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let log = std::fs::read_to_string(lab.dir.join("serve.log")).unwrap();
    assert!(log.contains("connections are open (the cap)"), "{log}");

    // 300 alerts (300 fingerprints) for one host and one playbook: one run plans them;
    // alerts for two more hosts plan one at a time (--max-plans 1).
    let mut alerts: Vec<Value> = (0..300)
        .map(|i| {
            alert(
                "firing",
                "KfixNodeIpForwardingDisabled",
                "h1",
                &format!("fp-{i}"),
            )
        })
        .collect();
    for h in ["h2", "h3"] {
        alerts.push(alert(
            "firing",
            "KfixNodeIpForwardingDisabled",
            h,
            &format!("fp-{h}"),
        ));
    }
    let url = format!("http://{KFIX}/alerts");
    let (code, v) = http(
        lab,
        "POST",
        &url,
        Some(&s.token),
        Some(&webhook(json!(alerts))),
    );
    assert_eq!(code, 200, "{v}");
    let decisions = v["decisions"].as_array().unwrap();
    let planning = decisions
        .iter()
        .filter(|d| d["decision"] == "planning")
        .count();
    let duplicates = decisions
        .iter()
        .filter(|d| d["decision"] == "duplicate")
        .count();
    assert_eq!((planning, duplicates), (3, 299), "{v}");
    assert_eq!(runs(&s).len(), 3);
    wait_for("the three plans", 60, || {
        runs(&s)
            .iter()
            .all(|r| r["state"] != "planning")
            .then_some(())
    });
    let log = std::fs::read_to_string(lab.dir.join("serve.log")).unwrap();
    assert_eq!(
        log.matches("kfix serve: queued").count(),
        2,
        "two plans waited for the one running: {log}"
    );

    // SIGTERM with half-sent connections open: the server is gone within seconds.
    let t0 = Instant::now();
    kfix.stop();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}
