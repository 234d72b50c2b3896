//! The command channel's tests: over the local transport (no lab), a request's start mark,
//! a channel that ends before or after it, the in-channel host lock.

use super::*;
use crate::quote::Cmd;
use crate::transport::tests::lock_free;
use crate::transport::{Become, Conn, SshOptions, Target};

async fn local() -> Conn {
    let opts = SshOptions {
        config_file: None,
        connect_timeout: Duration::from_secs(5),
        control_dir: std::env::temp_dir(),
        accept_new_host_keys: false,
        handshakes: Default::default(),
        host_lock_dir: crate::transport::LOCK_DIR.into(),
    };
    Conn::open(
        &Target::Local,
        Become::default(),
        &opts,
        Duration::from_secs(20),
    )
    .await
    .expect("local conn")
}

/// Processes on this machine whose command line is exactly `argv`.
fn procs(argv: &[&str]) -> usize {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == want.as_bytes())
        .count()
}

#[tokio::test]
async fn round_trips_share_one_shell_and_keep_codes_output_quoting_and_stdin() {
    let conn = local().await;
    let pid = Cmd::script("printf '%s' \"$$\"", Vec::<String>::new());
    let first = conn.run(&pid).await.expect("pid").stdout();
    assert!(!first.is_empty());
    // An exit, a cd and a variable stay in their request.
    let leaky = Cmd::script("cd /; x=set; echo out; echo err >&2; exit 3", [""]);
    let out = conn.run(&leaky).await.expect("leaky");
    assert_eq!(
        (out.code, out.stdout(), out.stderr()),
        (Some(3), "out\n".to_string(), "err".to_string())
    );
    let state = Cmd::script("printf '%s:%s' \"$PWD\" \"$x\"", Vec::<String>::new());
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        conn.run(&state).await.expect("state").stdout(),
        format!("{}:", cwd.display())
    );
    // Arguments are data; stdin arrives byte for byte (no newline added).
    let hostile = "a'b; $(touch /tmp/kfix-pwned) `x` \"q\"\n\\n %s";
    let echo = Cmd::new(["printf", "%s|", hostile]);
    assert_eq!(
        conn.run(&echo).await.expect("echo").stdout(),
        format!("{hostile}|")
    );
    let cat = Cmd::new(["cat"]).with_stdin(hostile.as_bytes().to_vec());
    let out = conn.run(&cat).await.expect("cat");
    assert_eq!(out.stdout(), hostile);
    // A script the shell cannot parse fails its own request only.
    let broken = Cmd::script("if then", Vec::<String>::new());
    assert_eq!(conn.run(&broken).await.expect("broken").code, Some(2));
    assert_eq!(conn.run(&pid).await.expect("pid").stdout(), first);
    assert_eq!(
        conn.traffic().sessions,
        1,
        "every round trip in the one channel"
    );
    assert_eq!(conn.traffic().round_trips, 7);
    assert!(!std::path::Path::new("/tmp/kfix-pwned").exists());
    conn.close().await;
}

#[tokio::test]
async fn the_same_read_asked_at_once_runs_once_in_one_round_trip() {
    let conn = local().await;
    let log = std::env::temp_dir().join(format!("kfix-wave-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let counted = Cmd::script("echo ran >> \"$1\"; echo same", [log.display().to_string()]);
    let other = Cmd::new(["echo", "other"]);
    let (a, b, c) = tokio::join!(conn.run(&counted), conn.run(&counted), conn.run(&other));
    assert_eq!(a.expect("a").stdout(), "same\n");
    assert_eq!(b.expect("b").stdout(), "same\n");
    assert_eq!(c.expect("c").stdout(), "other\n");
    assert_eq!(std::fs::read_to_string(&log).expect("log"), "ran\n");
    assert_eq!(conn.traffic().round_trips, 1);
    std::fs::remove_file(&log).expect("cleanup");
    conn.close().await;
}

#[tokio::test]
async fn data_the_shell_cannot_hold_goes_in_a_session_of_its_own() {
    let conn = local().await;
    let data = b"a\0b\xff".to_vec();
    let out = conn
        .run(&Cmd::new(["od", "-An", "-tx1"]).with_stdin(data))
        .await
        .expect("od");
    assert_eq!(
        out.stdout().split_whitespace().collect::<Vec<_>>(),
        ["61", "00", "62", "ff"]
    );
    assert_eq!(conn.traffic().sessions, 1, "a session, no channel");
    conn.run(&Cmd::new(["true"])).await.expect("true");
    assert_eq!(conn.traffic().sessions, 2, "then the channel");
    conn.close().await;
}

#[tokio::test]
async fn a_timed_out_request_ends_its_channel_and_the_watchdog_ends_the_command() {
    let conn = local().await;
    // A duration no other process runs (another test process may run this test).
    let secs = format!("37.{}", std::process::id());
    let sleeper = ["sleep", secs.as_str()];
    let slow = Cmd::new(sleeper);
    let err = conn
        .run_with_timeout(&slow, Duration::from_secs(1))
        .await
        .expect_err("timed out");
    assert_eq!(err, TransportError::Timeout(Duration::from_secs(1)));
    assert_eq!(procs(&sleeper), 1, "still running right after");
    // A new channel serves the next round trip.
    assert!(conn.run(&Cmd::new(["true"])).await.expect("true").success());
    assert_eq!(conn.traffic().sessions, 2);
    // Limit 1 + 2 s, seen by the watchdog within two ticks.
    let deadline = Instant::now() + Duration::from_secs(1 + 2 + 2 * TICK + 3);
    while procs(&sleeper) > 0 {
        assert!(Instant::now() < deadline, "the watchdog kills the command");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    conn.close().await;
}

/// The process group of a channel's shell and what its state descriptor is.
async fn group_and_state(ch: &mut Channel) -> (String, String) {
    let Call::Done(Ok(out)) = ch
        .call(
            "ps -o pgid= -p $$ | tr -d ' \\n'; echo; ls -l \"$kfix_s\"",
            None,
            Duration::from_secs(5),
        )
        .await
    else {
        panic!("no answer");
    };
    let said = out.stdout();
    let (group, state) = said.split_once('\n').expect("two lines");
    (group.to_string(), state.to_string())
}

fn group_alive(group: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-g", group])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("pgrep")
        .success()
}

/// A controller that keeps the pipe open but sends nothing (as a dead one whose ssh
/// master lingers): the watchdog ends the channel after `idle` seconds, and then
/// itself; nothing is left on the host.
async fn ends_when_idle(shell: &str, setup: String) -> String {
    let mut ch = crate::transport::local::spawn_channel(shell, setup)
        .await
        .expect("spawn");
    let (group, state) = group_and_state(&mut ch).await;
    // Busy for longer than the idle bound, then idle again: the watchdog follows.
    let Call::Done(Ok(out)) = ch
        .call("sleep 4; echo slept", None, Duration::from_secs(9))
        .await
    else {
        panic!("no answer");
    };
    assert_eq!(
        out.stdout(),
        "slept\n",
        "a request longer than the idle bound is not cut"
    );
    let Proc::Local(child) = &mut ch.proc else {
        panic!("local")
    };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ended within 10 s")
        .expect("status");
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(&group) {
        assert!(Instant::now() < deadline, "the watchdog ends too");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state
}

#[tokio::test]
async fn a_request_finding_its_channel_ended_goes_in_a_new_one() {
    // The channel's shell ends between two requests (as the watchdog ends an idle
    // one while the controller is slow to send): the next request, none of which
    // reached a shell, runs in a new channel instead of failing the host.
    let conn = local().await;
    let group = conn
        .run(&Cmd::new(["sh", "-c", "ps -o pgid= -p $PPID | tr -d ' '"]))
        .await
        .expect("first request");
    let group = group.stdout().trim().to_string();
    assert!(!group.is_empty());
    assert_eq!(conn.traffic().sessions, 1);
    let killed = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{group}")])
        .status()
        .expect("kill");
    assert!(killed.success());
    // Dead (a zombie until reaped: its descriptors, the channel's input among
    // them, closed at its death).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = conn
        .run(&Cmd::new(["echo", "again"]))
        .await
        .expect("run in a new channel, not 'Broken pipe'");
    assert_eq!(out.stdout(), "again\n");
    assert_eq!(conn.traffic().sessions, 2, "a second channel");
}

#[tokio::test]
async fn a_request_reaching_a_shell_that_has_just_ended_is_gone_not_failed() {
    // Over SSH the controller writes to the ssh client, which takes the request
    // even when the remote shell has just ended (the watchdog ended the channel as
    // the request was on its way); only the output's end says so. Here the shell
    // ends and something else keeps its input open, as the client does.
    let line = "sh -s; exec sleep 3 >&- 2>&-";
    let mut ch = crate::transport::local::spawn_channel(
        line,
        setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
    )
    .await
    .expect("spawn");
    let Call::Done(Ok(out)) = ch.call("echo up", None, Duration::from_secs(5)).await else {
        panic!("no answer");
    };
    assert_eq!(out.stdout(), "up\n");
    // The shell ends in the middle of a request: that one ran, it is not resent.
    let Call::Done(Err(e)) = ch.call_in_shell("exit 0", Duration::from_secs(5)).await else {
        panic!("a request that started is a failure, not 'nothing ran'");
    };
    assert!(e.to_string().contains("in the middle"), "{e}");
    let marker = std::env::temp_dir().join(format!("kfix-gone-{}", std::process::id()));
    let touch = format!("touch {}", marker.display());
    assert!(
        matches!(
            ch.call(&touch, None, Duration::from_secs(5)).await,
            Call::Gone
        ),
        "taken by the input, never run: gone"
    );
    assert!(!marker.exists());
    ch.close().await;
}

#[tokio::test]
async fn a_request_that_started_before_its_channel_died_is_not_run_again() {
    let conn = local().await;
    let log = std::env::temp_dir().join(format!("kfix-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    // Each run appends a line, then the channel's whole process group is killed.
    let script = "echo ran >> \"$1\"; kill -s KILL -- -$(ps -o pgid= -p $$ | tr -d ' ')";
    let err = conn
        .run(&Cmd::script(script, [log.display().to_string()]))
        .await
        .expect_err("the channel died under the request");
    assert!(err.to_string().contains("in the middle"), "{err}");
    let ran = std::fs::read_to_string(&log).expect("log");
    std::fs::remove_file(&log).expect("cleanup");
    assert_eq!(ran, "ran\n", "run once, never resent");
}

#[tokio::test]
async fn idleness_is_counted_from_the_end_of_the_last_request() {
    // Idle bound 3 s, a tick a second; a request busy for 4 s that a tick sees
    // running. Measured from that tick, the channel would be "idle" 3 s about 1 s
    // after the request ended; it must stay usable for the idle bound after it.
    let mut ch = crate::transport::local::spawn_channel(
        "exec sh -s",
        setup_script(1, 3, crate::transport::LOCK_DIR),
    )
    .await
    .expect("spawn");
    let Call::Done(Ok(out)) = ch
        .call("sleep 4; echo slept", None, Duration::from_secs(9))
        .await
    else {
        panic!("no answer");
    };
    assert_eq!(out.stdout(), "slept\n");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let Call::Done(Ok(out)) = ch.call("echo again", None, Duration::from_secs(5)).await else {
        panic!("the channel ended 2 s after its last request, under the 3 s idle bound");
    };
    assert_eq!(out.stdout(), "again\n");
    ch.close().await;
}

#[tokio::test]
async fn an_idle_channel_ends_by_itself_and_leaves_nothing() {
    let state = ends_when_idle("exec sh -s", setup_script(1, 3, crate::transport::LOCK_DIR)).await;
    assert!(state.contains("pipe:["), "{state}");
}

#[tokio::test]
async fn the_state_also_works_where_the_shell_makes_here_documents_files() {
    // bash before 5.1 (and any bash for a long document) puts a here-document in a
    // deleted temporary file rather than a pipe.
    let long = format!("\n{}kfix-state\n", "i 0\n".repeat(20_000));
    let setup =
        setup_script(1, 3, crate::transport::LOCK_DIR).replace("\ni 0\nkfix-state\n", &long);
    assert_ne!(setup, setup_script(1, 3, crate::transport::LOCK_DIR));
    let state = ends_when_idle("exec bash -s", setup).await;
    assert!(state.contains("(deleted)"), "{state}");
}

#[tokio::test]
async fn what_the_login_shell_prints_is_not_output_and_a_failed_setup_runs_nothing() {
    let chatty = "echo motd; echo warn >&2; exec sh -s";
    let mut ch = crate::transport::local::spawn_channel(
        chatty,
        setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
    )
    .await
    .expect("spawn");
    let Call::Done(Ok(out)) = ch.call("echo hi", None, Duration::from_secs(5)).await else {
        panic!("no answer");
    };
    assert_eq!(out.stdout(), "hi\n");
    ch.close().await;
    let marker = std::env::temp_dir().join(format!("kfix-ch-{}", std::process::id()));
    let line = format!("touch {}", marker.display());
    let mut broken = crate::transport::local::spawn_channel(
        "exit 1",
        setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
    )
    .await
    .expect("spawn");
    assert!(matches!(
        broken.call(&line, None, Duration::from_secs(5)).await,
        Call::NotStarted
    ));
    assert!(!marker.exists());
}

/// A channel whose host lock lives in `dir` (this machine's own /run is left alone).
async fn lock_channel(dir: &std::path::Path) -> Channel {
    let setup = setup_script(TICK, IDLE, &dir.display().to_string());
    crate::transport::local::spawn_channel("exec sh -s", setup)
        .await
        .expect("spawn")
}

async fn in_shell(ch: &mut Channel, line: &str) -> String {
    let Call::Done(Ok(out)) = ch.call_in_shell(line, Duration::from_secs(20)).await else {
        panic!("no answer to {line}");
    };
    out.stdout()
}

#[tokio::test]
async fn the_channel_holds_the_lock_its_commands_do_not_and_it_goes_with_the_shell() {
    let dir = std::env::temp_dir().join(format!("kfix-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut a = lock_channel(&dir).await;
    assert_eq!(
        in_shell(&mut a, &lock_request("run A", 0)).await,
        "locked \n"
    );
    assert!(!lock_free(&dir), "held by A's shell");
    assert_eq!(
        std::fs::read_to_string(dir.join("owner")).expect("owner"),
        "run A\n"
    );
    // A command started in the channel does not hold the lock's descriptor: a
    // daemon it leaves behind would keep the lock for ever.
    let Call::Done(Ok(out)) = a
        .call("ls -l /proc/self/fd/", None, Duration::from_secs(5))
        .await
    else {
        panic!("no answer");
    };
    assert!(!out.stdout().contains("lock"), "{}", out.stdout());
    // Another run is told who holds it, and keeps nothing open.
    let mut b = lock_channel(&dir).await;
    assert_eq!(
        in_shell(&mut b, &lock_request("run B", 0)).await,
        "held run A\n"
    );
    // Taking it again after a channel ended waits only for a record of one's own.
    let started = Instant::now();
    assert_eq!(
        in_shell(&mut b, &lock_request("run B", 30)).await,
        "held run A\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for another run's lock"
    );
    let mut a2 = lock_channel(&dir).await;
    let retake = lock_request("run A", 30);
    let waiting = tokio::spawn(async move {
        let Call::Done(Ok(out)) = a2.call_in_shell(&retake, Duration::from_secs(40)).await else {
            panic!("no answer");
        };
        (out.stdout(), a2)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "waits for the old channel");
    // The old channel ends (its stdin closed): the lock passes to the new one.
    a.close().await;
    let (said, mut a2) = waiting.await.expect("join");
    assert_eq!(said, "locked run A\n");
    assert!(!lock_free(&dir));
    // Released: the record cleared first, then the lock.
    in_shell(&mut a2, RELEASE).await;
    assert!(lock_free(&dir));
    assert_eq!(
        std::fs::read_to_string(dir.join("owner")).expect("owner"),
        ""
    );
    // A channel that ends holding the lock clears the record as it goes.
    assert_eq!(
        in_shell(&mut b, &lock_request("run B", 0)).await,
        "locked \n"
    );
    b.close().await;
    assert!(lock_free(&dir));
    assert_eq!(
        std::fs::read_to_string(dir.join("owner")).expect("owner"),
        ""
    );
    a2.close().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
