//! `route` steps: a route present or absent, matched on destination and device;
//! deletion captures every attribute so undo re-adds the route exactly.

use serde_json::Value;

use crate::host::{HResult, Host, failed};
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::{Presence, RouteSpec};
use crate::quote::Cmd;

/// A route as `ip -j route` reports it, reduced to what identifies and recreates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: String,
    pub dev: Option<String>,
    pub gateway: Option<String>,
    pub metric: Option<u64>,
    pub protocol: Option<String>,
    pub scope: Option<String>,
    pub prefsrc: Option<String>,
    pub onlink: bool,
}

impl Route {
    fn from_json(v: &Value) -> Option<Route> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Route {
            dst: s("dst")?,
            dev: s("dev"),
            gateway: s("gateway"),
            metric: v.get("metric").and_then(Value::as_u64),
            protocol: s("protocol"),
            scope: s("scope"),
            prefsrc: s("prefsrc"),
            onlink: v
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink"))),
        })
    }

    /// `ip route` arguments that identify and recreate this route.
    pub fn args(&self, full: bool) -> Vec<String> {
        let mut a = vec![self.dst.clone()];
        if let Some(g) = &self.gateway {
            a.extend(["via".into(), g.clone()]);
        }
        if let Some(d) = &self.dev {
            a.extend(["dev".into(), d.clone()]);
        }
        if full {
            if let Some(p) = &self.protocol {
                a.extend(["proto".into(), p.clone()]);
            }
            if let Some(s) = &self.scope {
                a.extend(["scope".into(), s.clone()]);
            }
            if let Some(s) = &self.prefsrc {
                a.extend(["src".into(), s.clone()]);
            }
        }
        a.extend(["metric".into(), self.metric.unwrap_or(0).to_string()]);
        if full && self.onlink {
            a.push("onlink".into());
        }
        a
    }

    /// Is the route on `dev` (when given) and not on `not_dev` (when given)?
    pub fn on_device(&self, dev: Option<&str>, not_dev: Option<&str>) -> bool {
        let on = self.dev.as_deref();
        dev.is_none_or(|d| on == Some(d)) && not_dev.is_none_or(|d| on != Some(d))
    }

    pub fn line(&self) -> String {
        self.args(true).join(" ")
    }
}

/// Routes in `table` whose destination is exactly `dest`.
pub async fn routes_to(h: &Host, dest: &str, table: &str) -> HResult<Vec<Route>> {
    let out = h
        .run(&Cmd::new([
            "ip", "-j", "route", "show", "table", table, "exact", dest,
        ]))
        .await?;
    if !out.success() {
        return failed(format!("cannot list routes to {dest}: {}", out.stderr()));
    }
    let text = out.stdout();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| crate::host::HostError::Failed(format!("bad `ip -j route` output: {e}")))?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(Route::from_json).collect())
        .unwrap_or_default())
}

/// Normalise a destination the way `ip` prints it (a host route has no /32).
pub fn normalize_dest(d: &str) -> String {
    d.strip_suffix("/32").unwrap_or(d).to_string()
}

pub async fn plan(id: &str, s: &RouteSpec, h: &Host) -> HResult<StepPlan> {
    let dest = normalize_dest(&h.render(&s.dest)?);
    let dev = h.render_opt(&s.dev)?;
    let not_dev = h.render_opt(&s.not_dev)?;
    let via = h.render_opt(&s.via)?;
    let table = h
        .render_opt(&s.table)?
        .unwrap_or_else(|| "main".to_string());
    let routes = routes_to(h, &dest, &table).await?;
    let matching: Vec<Route> = routes
        .into_iter()
        .filter(|r| r.on_device(dev.as_deref(), not_dev.as_deref()))
        .filter(|r| via.as_ref().is_none_or(|g| r.gateway.as_ref() == Some(g)))
        .filter(|r| {
            s.metric
                .is_none_or(|m| r.metric.unwrap_or(0) == u64::from(m))
        })
        .collect();
    let table_args = |mut a: Vec<String>| {
        if table != "main" {
            a.extend(["table".into(), table.clone()]);
        }
        a
    };
    let probe = Cmd::new([
        "ip",
        "route",
        "show",
        "table",
        table.as_str(),
        "exact",
        dest.as_str(),
    ]);
    let ip = |verb: &str, args: Vec<String>| {
        let mut v = vec!["ip".to_string(), "route".to_string(), verb.to_string()];
        v.extend(table_args(args));
        Cmd::new(v)
    };
    match s.state {
        Presence::Absent => {
            if matching.is_empty() {
                return Ok(StepPlan::no_change(id, "route", None));
            }
            let ops = matching
                .iter()
                .map(|r| {
                    Op::new(
                        format!("delete route {}", r.line()),
                        ip("del", r.args(false)),
                        Undo::Cmd(ip("add", r.args(true))),
                    )
                    .probe(probe.clone())
                })
                .collect();
            let before: Vec<String> = matching.iter().map(Route::line).collect();
            Ok(StepPlan::change(id, "route", state_diff(&before, &[]), ops))
        }
        Presence::Present => {
            if !matching.is_empty() {
                return Ok(StepPlan::no_change(id, "route", None));
            }
            let r = Route {
                dst: dest,
                dev,
                gateway: via,
                metric: s.metric.map(u64::from),
                protocol: None,
                scope: None,
                prefsrc: None,
                onlink: false,
            };
            let op = Op::new(
                format!("add route {}", r.line()),
                ip("add", r.args(false)),
                Undo::Cmd(ip("del", r.args(false))),
            )
            .probe(probe);
            Ok(StepPlan::change(
                id,
                "route",
                state_diff(&[], &[r.line()]),
                vec![op],
            ))
        }
    }
}
