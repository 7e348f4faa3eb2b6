//! A call's arguments against the tool's input schema, before the gate: the checks that keep a
//! malformed call from reaching an approver or the server (an object; every required property;
//! each property's JSON type and `enum`; no property the schema closes out). Deeper JSON
//! Schema (patterns, formats, nested objects) is the server's to check.

use serde_json::Value;

/// `Err` names the first thing wrong.
pub fn check(schema: &Value, args: &Value) -> Result<(), String> {
    let Some(args) = args.as_object() else {
        return Err("the arguments must be a JSON object".into());
    };
    let properties = schema["properties"].as_object();
    for required in schema["required"].as_array().into_iter().flatten() {
        if let Some(name) = required.as_str()
            && !args.contains_key(name)
        {
            return Err(format!("the argument {name:?} is required"));
        }
    }
    for (name, value) in args {
        let Some(spec) = properties.and_then(|p| p.get(name)) else {
            if schema["additionalProperties"] == Value::Bool(false) {
                let known: Vec<&String> =
                    properties.map(|p| p.keys().collect()).unwrap_or_default();
                return Err(format!(
                    "no argument {name:?} (the tool takes: {})",
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            continue;
        };
        if let Some(kind) = &spec.get("type")
            && !type_matches(kind, value)
        {
            return Err(format!(
                "the argument {name:?} must be of type {kind}, got {value}"
            ));
        }
        if let Some(allowed) = spec["enum"].as_array()
            && !allowed.contains(value)
        {
            return Err(format!(
                "the argument {name:?} must be one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    Ok(())
}

fn type_matches(kind: &Value, value: &Value) -> bool {
    match kind {
        Value::String(k) => one_type(k, value),
        Value::Array(kinds) => kinds
            .iter()
            .any(|k| k.as_str().is_some_and(|k| one_type(k, value))),
        _ => true,
    }
}

fn one_type(kind: &str, value: &Value) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_arguments_are_named() {
        let schema = json!({"type": "object", "properties": {
            "repo_path": {"type": "string"}, "max_count": {"type": "integer"},
            "mode": {"type": "string", "enum": ["a", "b"]}
        }, "required": ["repo_path"], "additionalProperties": false});
        assert!(check(&schema, &json!({"repo_path": "/workspace/r"})).is_ok());
        for (args, want) in [
            (json!([]), "JSON object"),
            (json!({}), "\"repo_path\" is required"),
            (json!({"repo_path": 3}), "of type \"string\""),
            (json!({"repo_path": "x", "max_count": 1.5}), "\"integer\""),
            (json!({"repo_path": "x", "mode": "c"}), "one of"),
            (
                json!({"repo_path": "x", "bcc": "eve@x"}),
                "no argument \"bcc\"",
            ),
        ] {
            let e = check(&schema, &args).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
