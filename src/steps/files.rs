//! File content steps: `file_lines` (ensure, rewrite or remove lines), `json` (set and
//! unset keys, keep the rest), `file` (whole content). Writes are atomic; undo restores
//! the old bytes, mode and owner, or removes a file the step created.

use regex::Regex;
use serde_json::{Map, Value};

use crate::host::{HResult, Host, failed, normalize_mode, unified_diff, unit_write_op, write_op};
use crate::plan::StepPlan;
use crate::playbook::{FileLinesSpec, FileSpec, JsonSpec, Presence};
use crate::template;

/// Plan a write of `new` over the current content; no change when equal. `unit`: the
/// file is systemd configuration (see [`crate::host::WRITE_UNIT`]).
async fn plan_write(
    id: &str,
    kind: &'static str,
    h: &Host,
    path: &str,
    new: String,
    mode: Option<&str>,
    unit: bool,
) -> HResult<StepPlan> {
    let info = h.read_file(path).await?;
    let old = info
        .as_ref()
        .map(|i| String::from_utf8_lossy(&i.content).into_owned());
    let mode_change = match (mode, &info) {
        (Some(m), Some(i)) => normalize_mode(m) != normalize_mode(&i.mode),
        _ => false,
    };
    if old.as_deref() == Some(new.as_str()) && !mode_change {
        return Ok(StepPlan::no_change(id, kind, None));
    }
    let real = info
        .as_ref()
        .map_or(path.to_string(), |i| i.real_path.clone());
    let mut diff = unified_diff(&real, old.as_deref().unwrap_or(""), &new);
    if info.is_none() {
        diff = format!("(new file)\n{diff}");
    }
    if mode_change && let (Some(m), Some(i)) = (mode, &info) {
        diff.push_str(&format!("mode {} -> {m}\n", i.mode));
    }
    let op = if unit {
        let dir = std::path::Path::new(&real)
            .parent()
            .map_or("/".to_string(), |d| d.display().to_string());
        let dir_exists = h.path_exists(&dir).await?;
        unit_write_op(path, info.as_ref(), new.as_bytes(), mode, dir_exists)
    } else {
        write_op(path, info.as_ref(), new.as_bytes(), mode)
    };
    h.predict_file(&real, Some(new.into_bytes()), mode);
    Ok(StepPlan::change(id, kind, diff, vec![op]))
}

fn regex(h: &Host, t: &crate::playbook::Text) -> HResult<Regex> {
    let src = h.render(t)?;
    Regex::new(&src)
        .map_err(|e| crate::host::HostError::Failed(h.at(t.pos, &format!("invalid regex: {e}"))))
}

pub async fn plan_lines(id: &str, s: &FileLinesSpec, h: &Host) -> HResult<StepPlan> {
    let path = h.render(&s.path)?;
    let info = h.read_file(&path).await?;
    if info.is_none() && !s.create {
        return failed(format!(
            "{path} does not exist (set `create: true` to create it)"
        ));
    }
    let old = info
        .as_ref()
        .map(|i| String::from_utf8_lossy(&i.content).into_owned())
        .unwrap_or_default();
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    for spec in &s.lines {
        let l = &spec.value;
        let line = h.render_opt(&l.line)?;
        let re = l.regexp.as_ref().map(|r| regex(h, r)).transpose()?;
        match (l.state, line, re, &l.replace) {
            (Presence::Present, Some(line), re, None) => {
                let last = re
                    .as_ref()
                    .and_then(|re| lines.iter().rposition(|x| re.is_match(x)));
                match last {
                    Some(i) => lines[i] = line,
                    None if lines.contains(&line) => {}
                    None => lines.push(line),
                }
            }
            (Presence::Present, None, Some(re), Some(rep)) => {
                let rep = h.render(rep)?;
                for x in lines.iter_mut() {
                    if re.is_match(x) {
                        *x = re.replace_all(x, rep.as_str()).into_owned();
                    }
                }
            }
            (Presence::Absent, line, re, None) if line.is_some() || re.is_some() => {
                lines.retain(|x| {
                    !(line.as_deref() == Some(x.as_str())
                        || re.as_ref().is_some_and(|re| re.is_match(x)))
                });
            }
            _ => {
                return failed(h.at(
                    spec.pos,
                    "a line spec is `line` (+ optional `regexp`), `regexp` + `replace`, or `state: absent` with `line` or `regexp`",
                ));
            }
        }
    }
    let mut new = lines.join("\n");
    if !new.is_empty() && (old.ends_with('\n') || old.is_empty()) {
        new.push('\n');
    }
    if info.is_some() && new == old {
        return Ok(StepPlan::no_change(id, "file_lines", None));
    }
    plan_write(id, "file_lines", h, &path, new, None, false).await
}

/// Set a dotted key path in a JSON object, creating intermediate objects.
fn set_path(root: &mut Map<String, Value>, path: &str, v: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut cur = root;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = entry
            .as_object_mut()
            .ok_or_else(|| format!("`{p}` in `{path}` is not an object"))?;
    }
    cur.insert(last.to_string(), v);
    Ok(())
}

fn unset_path(root: &mut Map<String, Value>, path: &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut cur = root;
    for p in parts {
        match cur.get_mut(p).and_then(Value::as_object_mut) {
            Some(o) => cur = o,
            None => return,
        }
    }
    cur.shift_remove(last);
}

pub async fn plan_json(id: &str, s: &JsonSpec, h: &Host) -> HResult<StepPlan> {
    let path = h.render(&s.path)?;
    let info = h.read_file(&path).await?;
    let mut doc: Map<String, Value> = match &info {
        Some(i) if !i.content.iter().all(u8::is_ascii_whitespace) => {
            match serde_json::from_slice::<Value>(&i.content) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return failed(format!("{path} is not a JSON object")),
                Err(e) => {
                    return failed(format!(
                        "{path} is not valid JSON ({e}); fix or remove it first"
                    ));
                }
            }
        }
        Some(_) => Map::new(),
        None if s.create => Map::new(),
        None => {
            return failed(format!(
                "{path} does not exist (set `create: true` to create it)"
            ));
        }
    };
    let before = doc.clone();
    for (k, v) in &s.set.value {
        let v = template::render_json(v, &h.ctx)
            .map_err(|e| crate::host::HostError::Failed(h.at(s.set.pos, &e)))?;
        set_path(&mut doc, k, v)
            .map_err(|e| crate::host::HostError::Failed(h.at(s.set.pos, &e)))?;
    }
    for k in &s.unset {
        unset_path(&mut doc, &h.render(k)?);
    }
    if info.is_some() && doc == before {
        return Ok(StepPlan::no_change(id, "json", None));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(doc))
        .map_err(|e| crate::host::HostError::Failed(format!("cannot serialise {path}: {e}")))?;
    text.push('\n');
    plan_write(id, "json", h, &path, text, None, false).await
}

pub async fn plan_file(id: &str, s: &FileSpec, h: &Host) -> HResult<StepPlan> {
    let path = h.render(&s.path)?;
    let content = h.render(&s.content)?;
    let mode = h.render_opt(&s.mode)?;
    if let Some(m) = &mode
        && (m.is_empty() || m.len() > 4 || !m.chars().all(|c| ('0'..='7').contains(&c)))
    {
        return failed(format!("mode `{m}` is not an octal mode such as 0644"));
    }
    plan_write(
        id,
        "file",
        h,
        &path,
        content,
        mode.as_deref(),
        s.daemon_reload,
    )
    .await
}

impl super::Plan for FileLinesSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan_lines(&step.id, self, h).await
    }
}

impl super::Plan for JsonSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan_json(&step.id, self, h).await
    }
}

impl super::Plan for FileSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan_file(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        let mut m: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "log-opts": {"max-size": "10m"}}"#).expect("json");
        set_path(&mut m, "storage-driver", Value::from("overlay2")).expect("set");
        set_path(&mut m, "log-opts.max-file", Value::from("3")).expect("set");
        unset_path(&mut m, "a");
        assert_eq!(
            serde_json::to_string(&m).expect("ser"),
            r#"{"log-opts":{"max-size":"10m","max-file":"3"},"storage-driver":"overlay2"}"#
        );
        assert!(set_path(&mut m, "storage-driver.x", Value::from(1)).is_err());
    }
}
