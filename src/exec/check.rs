//! `kfix check`'s scan: every playbook's preconditions and detection on every host,
//! read-only, over one connection per host (read once more over a new one when it ends).

#[allow(unused_imports)]
use super::*;

/// One host's row of `kfix check --all`.
pub struct HostScan {
    pub host: String,
    /// One report per playbook, in the playbooks' order.
    pub reports: Vec<HostReport>,
    /// What the scan sent: round trips (facts and each batch count once), the commands
    /// they carried and the sessions they opened.
    pub traffic: Traffic,
}

/// One host's row of a check: every playbook assessed over one connection, once more
/// over a new one when that connection ended during it ([`connection_ended`]).
async fn check_host(
    inv: &InvHost,
    pbs: &[Arc<Playbook>],
    settings: &Arc<RunSettings>,
) -> (Vec<HostReport>, Traffic) {
    let mut traffic = Traffic::default();
    let mut again = true;
    loop {
        let (conn, facts) = match connect(inv, settings, false).await {
            Ok(c) => c,
            Err((status, why)) => {
                let reports = pbs
                    .iter()
                    .map(|_| {
                        let mut r = internal_error(inv.name.clone(), "");
                        r.status = status;
                        r.reason = Some(why.clone());
                        r
                    })
                    .collect();
                return (reports, traffic);
            }
        };
        let reports: Vec<HostReport> = futures_util::future::join_all(pbs.iter().map(|pb| {
            let (conn, facts) = (conn.clone(), facts.clone());
            async move {
                let p = assess(pb, inv, conn, facts, settings, true).await;
                close_delegates(p.delegates).await;
                let mut report = p.report;
                redact(&mut report, &secrets(pb, inv, settings));
                report
            }
        }))
        .await;
        traffic += conn.traffic();
        let ended = connection_ended(&reports, &conn).await;
        Conn::close_shared(conn).await;
        if !(ended && std::mem::take(&mut again)) {
            return (reports, traffic);
        }
    }
}

/// Every playbook's preconditions and detection on every host, read-only, over one
/// connection per host. A host's playbooks are assessed concurrently, so the probes
/// they issue at the same moment travel as one batch.
pub async fn check_matrix(
    pbs: Vec<Arc<Playbook>>,
    hosts: Vec<InvHost>,
    settings: Arc<RunSettings>,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<HostScan> {
    let _ = events.send(Event::Phase {
        name: "checking",
        hosts: hosts.len(),
    });
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let n = pbs.len();
    let refs: Vec<&Playbook> = pbs.iter().map(|p| &**p).collect();
    let settings = with_inventory_hostnames(&refs, settings).await;
    let results = bounded(hosts, settings.config.forks, |inv| {
        let (pbs, settings, events) = (pbs.clone(), settings.clone(), events.clone());
        async move {
            let _ = events.send(Event::HostStarted {
                host: inv.name.clone(),
            });
            let (reports, traffic) = check_host(&inv, &pbs, &settings).await;
            if let Some(last) = reports.last() {
                let _ = events.send(Event::HostDone {
                    report: last.clone(),
                });
            }
            (reports, traffic)
        }
    })
    .await;
    results
        .into_iter()
        .zip(names)
        .map(|(r, host)| {
            let (reports, traffic) = r.unwrap_or_else(|e| {
                (
                    (0..n).map(|_| internal_error(host.clone(), &e)).collect(),
                    Traffic::default(),
                )
            });
            HostScan {
                host,
                reports,
                traffic,
            }
        })
        .collect()
}
