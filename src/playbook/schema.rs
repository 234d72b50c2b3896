//! The playbook's JSON Schema (draft-07, for editors through yaml-language-server),
//! generated from the model: step, probe and gather fields from the serde structs the
//! loader reads them into (their doc comments become descriptions), the envelope from
//! the loader's own key lists. `kfix schema` prints it; docs/playbook.schema.json is
//! that output, kept current by a test.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::load::{PROBE_SUBJECTS, RawProbe, STEP_COMMON, TOP_KEYS};
use super::model::*;

/// Where the published schema lives in the repository.
pub const SCHEMA_PATH: &str = "docs/playbook.schema.json";

struct Gen(schemars::SchemaGenerator);

impl Gen {
    fn of<T: JsonSchema>(&mut self) -> Value {
        let mut v = self.0.subschema_for::<T>().to_value();
        widen_strings(&mut v);
        v
    }
}

/// The loader reads a scalar as its text where it expects a string (`value: 1` is
/// "1"), so a string in the schema takes numbers and booleans too — but not where only
/// some strings are allowed (an enum, a constant, a pattern).
fn widen_strings(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let plain = !m.contains_key("enum") && !m.contains_key("const");
            if plain && m.get("type") == Some(&json!("string")) && !m.contains_key("pattern") {
                m.insert("type".into(), json!(["string", "number", "boolean"]));
            }
            if plain
                && let Some(Value::Array(types)) = m.get_mut("type")
                && types.contains(&json!("string"))
                && types.len() == 2
                && types.contains(&json!("null"))
            {
                *types = vec![
                    json!("string"),
                    json!("number"),
                    json!("boolean"),
                    json!("null"),
                ];
            }
            for x in m.values_mut() {
                widen_strings(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(widen_strings),
        _ => {}
    }
}

/// One step kind's specification schema.
fn kind_schema(g: &mut Gen, kind: &str) -> Value {
    macro_rules! schema_of_kind {
        ($($variant:ident($spec:ty) = $name:literal),* $(,)?) => {
            match kind {
                $($name => g.of::<$spec>(),)*
                _ => json!({}),
            }
        };
    }
    crate::for_each_step_kind!(schema_of_kind)
}

fn text(description: &str) -> Value {
    json!({"type": ["string", "number", "boolean"], "description": description})
}

fn probe(g: &mut Gen) -> Value {
    let mut p = g.of::<RawProbe>();
    if let Value::Object(m) = &mut p {
        m.insert(
            "description".into(),
            json!("A check on the host: one subject (what is observed) and at most one predicate (exists, equals, not_equals, matches, not_matches, exit) over it."),
        );
        let one: Vec<Value> = PROBE_SUBJECTS
            .iter()
            .map(|s| json!({"required": [s]}))
            .collect();
        m.insert("oneOf".into(), Value::Array(one));
    }
    p
}

fn step_common(g: &mut Gen, probes: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    for key in STEP_COMMON {
        let v = match *key {
            "id" => {
                json!({"type": "string", "description": "Unique within the playbook; `drift:` probes and the journal name the step by it."})
            }
            "name" => text("What the step does, in the plan and the runbook."),
            "irreversible" => {
                text("Why this step cannot be undone (required when it has no undo).")
            }
            "when" => text("A minijinja expression; the step is skipped when it is false."),
            "only_if" => {
                json!({"type": "array", "items": probes.clone(), "description": "Probes that must all hold on the host for the step to run (else: no change)."})
            }
            "timeout" => {
                json!({"type": "integer", "minimum": 0, "description": "Seconds each of the step's remote commands may take (overrides --command-timeout)."})
            }
            "run_on" => text(
                "An inventory host or group pattern: the step runs on the first reachable host it selects (delegation), with the fixed host's variables.",
            ),
            _ => g.of::<Value>(),
        };
        m.insert((*key).to_string(), v);
    }
    m
}

/// The whole schema.
pub fn schema() -> Value {
    let mut g = Gen(SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator());
    let probe_def = probe(&mut g);
    let probes = json!({"$ref": "#/definitions/probe"});
    let common = step_common(&mut g, &probes);
    let steps: Vec<Value> = STEP_KINDS
        .iter()
        .map(|kind| {
            let mut props = common.clone();
            props.insert((*kind).to_string(), kind_schema(&mut g, kind));
            json!({
                "title": format!("a `{kind}` step"),
                "type": "object",
                "properties": props,
                "required": ["id", kind],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut gather = g.of::<RawGather>();
    if let Value::Object(m) = &mut gather {
        m.insert(
            "oneOf".into(),
            json!([{"required": ["file"]}, {"required": ["command"]}, {"required": ["value"]}]),
        );
    }
    let var = json!({
        "description": "A default value (any YAML), or the long form with `default`, `description` and `secret`. Without a default (and not gathered) the variable is required.",
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "default": {"description": "The value when the operator sets none."},
                    "description": {"type": "string"},
                    "secret": {"type": "boolean", "description": "Never shown in output, diffs or the journal; may only reach a command's stdin or a file's content."},
                    "choices": {"type": "array", "minItems": 1, "description": "The values it may take: any other from -e or the inventory is refused before connecting."}
                },
                "minProperties": 1,
                "additionalProperties": false
            },
            {"not": {"type": "object"}}
        ]
    });
    let mut top = Map::new();
    for key in TOP_KEYS {
        let v = match *key {
            "id" => {
                json!({"type": "string", "pattern": "^[a-z0-9-]+$", "description": "The playbook's id: lowercase letters, digits and dashes."})
            }
            "title" => text("One line: what the playbook fixes."),
            "summary" => text("What the problem is and what the fix does, for the runbook."),
            "severity" => g.of::<Severity>(),
            "source" => text("The incident this fix encodes (catalogue entry, field report)."),
            "alerts" => json!({
                "type": "array",
                "description": "The Prometheus alerts this playbook answers (`kfix serve`): an alertname, or one with labels to match.",
                "items": {"anyOf": [{"type": "string"}, g.of::<AlertMatch>()]}
            }),
            "auto_apply" => {
                json!({"type": "boolean", "description": "`kfix serve` may apply it without a human approval (when the server allows it too)."})
            }
            "disruptive" => {
                json!({"type": "boolean", "description": "The playbook restarts workloads (canary-first rollout, drain first)."})
            }
            "vars" => json!({
                "type": "object",
                "description": "Variables the playbook reads; inventory and `-e` override them.",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": var.clone()
            }),
            "preconditions" => {
                json!({"type": "array", "items": probes.clone(), "description": "Whether the host is relevant at all; a host failing one is skipped."})
            }
            "detect" => {
                json!({"type": "array", "items": probes.clone(), "description": "Whether the problem is there now (without it: exactly when some step plans a change)."})
            }
            "verify" => {
                json!({"type": "array", "items": probes.clone(), "description": "Checked after apply; a failure rolls the host back."})
            }
            "steps" => {
                json!({"type": "array", "minItems": 1, "items": {"oneOf": steps.clone()}, "description": "The typed steps: each has an id and exactly one kind."})
            }
            "rollout" => g.of::<RolloutSpec>(),
            "remedy" => text("For a detection-only playbook (no steps): what fixes the problem."),
            "gather" => json!({
                "type": "object",
                "description": "Values read from each host before anything else, as `gathered.NAME`.",
                "propertyNames": {"pattern": "^[A-Za-z0-9_]+$"},
                "additionalProperties": gather.clone()
            }),
            "impact" => text("What breaks while the problem is there."),
            "diagnosis" => {
                json!({"type": "array", "items": g.of::<DiagnosisStep>(), "description": "Commands a person runs to confirm the problem by hand."})
            }
            "follow_up" => {
                json!({"type": "array", "items": {"type": "string"}, "description": "What to do after a successful run that kfix does not do."})
            }
            _ => json!({}),
        };
        top.insert((*key).to_string(), v);
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://kfix.invalid/playbook.schema.json",
        "title": "kfix playbook",
        "description": "A kfix remediation playbook. Generated by `kfix schema` from kfix's playbook model; `kfix validate` checks more (templates, step ids, secrets).",
        "type": "object",
        "properties": top,
        "required": ["id", "title"],
        "anyOf": [{"required": ["steps"]}, {"required": ["remedy"]}],
        "additionalProperties": false,
        "definitions": {"probe": probe_def},
    })
}

/// The schema as the file holds it: pretty JSON and a final newline.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_the_loader_takes_is_in_the_schema() {
        let s = schema();
        let top = s["properties"].as_object().unwrap();
        assert_eq!(top.len(), TOP_KEYS.len());
        for k in TOP_KEYS {
            assert!(top[*k] != json!({}), "top-level `{k}` has no schema");
        }
        let steps = s["properties"]["steps"]["items"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(steps.len(), STEP_KINDS.len());
        for (kind, v) in STEP_KINDS.iter().zip(steps) {
            assert!(
                v["properties"][kind] != json!({}),
                "step kind `{kind}` has no schema"
            );
            for c in STEP_COMMON {
                assert!(
                    v["properties"][c] != json!({}),
                    "step field `{c}` has no schema"
                );
            }
        }
        let subjects = s["definitions"]["probe"]["oneOf"].as_array().unwrap();
        assert_eq!(subjects.len(), PROBE_SUBJECTS.len());
    }

    #[test]
    fn doc_comments_become_descriptions() {
        let s = schema_text();
        // From EtcdDelete's `group` doc comment.
        assert!(s.contains("deleted whole or not at all"), "{s}");
    }
}
