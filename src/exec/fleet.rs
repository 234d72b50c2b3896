//! The dispatcher: batches, the failure budget, bounded concurrency and the stop flag
//! over every host's apply.

#[allow(unused_imports)]
use super::*;

/// How the apply phase went, beyond the host reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rollout {
    pub batches: Vec<BatchReport>,
    /// Why the rollout stopped before every host was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub batch: usize,
    pub hosts: Vec<String>,
    pub failed: usize,
    pub duration_ms: u64,
}

/// Run `f` on every item, at most `limit` at once, starting them in order (so with
/// `--forks 1` hosts go one after another, in inventory order). Results come back in the
/// items' order; a panicked task yields its `JoinError`.
pub(super) async fn bounded<T, R, F, Fut>(
    items: Vec<T>,
    limit: usize,
    f: F,
) -> Vec<Result<R, tokio::task::JoinError>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    let mut results: Vec<Option<Result<R, tokio::task::JoinError>>> =
        items.iter().map(|_| None).collect();
    let mut next = items.into_iter().enumerate();
    loop {
        while set.len() < limit.max(1) {
            let Some((i, item)) = next.next() else { break };
            let handle = set.spawn(f(item));
            index_of.insert(handle.id(), i);
        }
        match set.join_next_with_id().await {
            Some(Ok((id, r))) => {
                if let Some(i) = index_of.get(&id) {
                    results[*i] = Some(Ok(r));
                }
            }
            Some(Err(e)) => {
                if let Some(i) = index_of.get(&e.id()) {
                    results[*i] = Some(Err(e));
                }
            }
            None => break,
        }
    }
    results.into_iter().flatten().collect()
}

/// Why no further host may start: the failure budget was exceeded, or Ctrl-C.
pub(super) fn stop_reason(
    halted: &std::sync::Mutex<Option<String>>,
    settings: &RunSettings,
) -> Option<String> {
    halted.lock().ok().and_then(|h| h.clone()).or_else(|| {
        settings
            .stop
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| "interrupted (Ctrl-C)".to_string())
    })
}

/// A host the halted rollout will not start: nothing was applied.
pub(super) async fn not_attempted(p: Assessed, why: &str) -> HostReport {
    let mut report = p.report;
    report.status = Status::NotAttempted;
    report.reason = Some(format!("rollout halted: {why}"));
    mark_not_run(&mut report);
    if let Some(h) = p.host {
        Conn::close_shared(h.conn).await;
    }
    close_delegates(p.delegates).await;
    report
}

pub(super) fn is_failure(s: Status) -> bool {
    matches!(
        s,
        Status::Failed | Status::RollbackFailed | Status::Unreachable
    )
}

/// Apply the planned changes batch by batch (canary first when the policy says so),
/// bounded concurrency inside a batch, halting when the failure budget is exceeded or
/// the operator pressed Ctrl-C: hosts not started by then are `not_attempted`.
pub async fn apply_all(
    pb: Arc<Playbook>,
    planned: Vec<Assessed>,
    settings: Arc<RunSettings>,
    events: mpsc::UnboundedSender<Event>,
) -> (Vec<HostReport>, Rollout) {
    let order: Vec<String> = planned.iter().map(|p| p.report.host.clone()).collect();
    let mut done: BTreeMap<String, HostReport> = BTreeMap::new();
    let mut todo = Vec::new();
    for p in planned {
        if p.report.status == Status::WouldChange {
            todo.push(p);
        } else {
            if let Some(h) = p.host {
                Conn::close_shared(h.conn).await;
            }
            close_delegates(p.delegates).await;
            done.insert(p.report.host.clone(), p.report);
        }
    }
    let total = todo.len();
    let sizes = settings.policy.serial.batches(total);
    let mut rollout = Rollout::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let halted: Arc<std::sync::Mutex<Option<String>>> = Arc::new(std::sync::Mutex::new(None));
    let mut rest = todo.into_iter();
    for (b, size) in sizes.iter().enumerate() {
        let batch: Vec<Assessed> = rest.by_ref().take(*size).collect();
        let names: Vec<String> = batch.iter().map(|p| p.report.host.clone()).collect();
        let _ = events.send(Event::Phase {
            name: "applying",
            hosts: batch.len(),
        });
        let _ = events.send(Event::Batch {
            batch: b + 1,
            of: sizes.len(),
            hosts: batch.len(),
        });
        let started = Instant::now();
        let results = bounded(batch, settings.config.forks, |p| {
            let (pb, settings, events) = (pb.clone(), settings.clone(), events.clone());
            let (failures, halted) = (failures.clone(), halted.clone());
            async move {
                if let Some(why) = stop_reason(&halted, &settings) {
                    return not_attempted(p, &why).await;
                }
                let _ = events.send(Event::HostStarted {
                    host: p.report.host.clone(),
                });
                let secrets = p.secrets.clone();
                let mut report = apply_host(&pb, p, &settings).await;
                redact(&mut report, &secrets);
                if let Some(j) = &settings.journal {
                    let _ = j.record(&Record::HostDone {
                        host: report.host.clone(),
                        status: report.status.as_str().to_string(),
                        reason: report.reason.clone(),
                    });
                }
                if is_failure(report.status) {
                    let n = failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if settings.policy.max_fail.is_exceeded(n, total)
                        && let Ok(mut h) = halted.lock()
                    {
                        h.get_or_insert_with(|| {
                            format!(
                                "{n} of {} failed, over the failure budget ({})",
                                crate::text::count(total, "host"),
                                settings.policy.max_fail.describe()
                            )
                        });
                    }
                }
                let _ = events.send(Event::HostDone {
                    report: report.clone(),
                });
                report
            }
        })
        .await;
        let mut batch_failed = 0;
        for (res, name) in results.into_iter().zip(&names) {
            let mut r = match res {
                Ok(r) => r,
                Err(e) => internal_error(name.clone(), &e),
            };
            r.batch = Some(b + 1);
            batch_failed += usize::from(is_failure(r.status));
            done.insert(r.host.clone(), r);
        }
        rollout.batches.push(BatchReport {
            batch: b + 1,
            hosts: names.clone(),
            failed: batch_failed,
            duration_ms: elapsed_ms(started),
        });
        if let Some(rule) = settings.policy.max_fail_per_batch
            && rule.is_exceeded(batch_failed, names.len())
            && let Ok(mut h) = halted.lock()
        {
            h.get_or_insert_with(|| {
                format!(
                    "{batch_failed} of {} in batch {} failed ({} per batch)",
                    crate::text::count(names.len(), "host"),
                    b + 1,
                    rule.describe()
                )
            });
        }
        if let Some(why) = stop_reason(&halted, &settings) {
            rollout.halted = Some(why.clone());
            for p in rest.by_ref() {
                let report = not_attempted(p, &why).await;
                done.insert(report.host.clone(), report);
            }
            break;
        }
        if b + 1 < sizes.len() && !settings.policy.pause.is_zero() {
            let _ = events.send(Event::Pause {
                secs: settings.policy.pause.as_secs(),
            });
            tokio::time::sleep(settings.policy.pause).await;
        }
    }
    if rollout.halted.is_none() {
        rollout.halted = halted.lock().ok().and_then(|h| h.clone());
    }
    let reports = order.into_iter().filter_map(|h| done.remove(&h)).collect();
    (reports, rollout)
}

/// Close the connections of planned hosts without applying (dry-run, check, declined).
pub async fn finish(planned: Vec<Assessed>) -> Vec<HostReport> {
    let mut out = Vec::new();
    for p in planned {
        if let Some(h) = p.host {
            Conn::close_shared(h.conn).await;
        }
        close_delegates(p.delegates).await;
        out.push(p.report);
    }
    out
}
