//! Templates in step configs: minijinja with strict undefined, so an
//! unknown variable is an error rather than an empty string.
//!
//! A string that is exactly one `{{ expression }}` yields the expression's
//! typed value (`"{{ input.n }}"` gives `7`, not `"7"`); any other string
//! renders to a string. Other JSON values pass through unchanged.

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env
    })
}

/// The expression inside a string that is exactly one `{{ … }}`.
fn sole_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let nested = ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|marker| inner.contains(marker));
    if nested {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    Some(inner)
}

/// Whether `source` holds template syntax at all (otherwise it renders as is).
pub fn has_template(source: &str) -> bool {
    ["{{", "{%", "{#"]
        .iter()
        .any(|marker| source.contains(marker))
}

/// Compiles `source` without rendering it; the error says what is wrong.
pub fn check(source: &str) -> Result<(), String> {
    let env = environment();
    match sole_expression(source) {
        Some(expression) => env.compile_expression(expression).map(|_| ()),
        None => env.template_from_str(source).map(|_| ()),
    }
    .map_err(|e| describe(&e))
}

/// Compiles a bare expression (CONDITION's `if`) without evaluating it.
pub fn check_expression(expression: &str) -> Result<(), String> {
    environment()
        .compile_expression(expression)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Evaluates a bare expression to its truth; an undefined value is an error.
pub fn evaluate_condition(expression: &str, context: &Value) -> Result<bool, String> {
    let compiled = environment()
        .compile_expression(expression)
        .map_err(|e| describe(&e))?;
    let value = compiled.eval(context).map_err(|e| describe(&e))?;
    if value.is_undefined() {
        return Err(format!(
            "undefined value: `{}` is not defined",
            expression.trim()
        ));
    }
    Ok(value.is_true())
}

/// Checks every string inside `value`, returning the JSON path (below
/// `prefix`) and message of the first that does not compile.
pub fn check_value(value: &Value, prefix: &str) -> Result<(), (String, String)> {
    match value {
        Value::String(source) => check(source).map_err(|message| (prefix.to_owned(), message)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{prefix}[{i}]"))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_value(item, &format!("{prefix}.{key}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Renders one string against `context`, typed when it is a sole expression.
pub fn render(source: &str, context: &Value) -> Result<Value, String> {
    let env = environment();
    match sole_expression(source) {
        Some(expression) => {
            let compiled = env
                .compile_expression(expression)
                .map_err(|e| describe(&e))?;
            let value = compiled.eval(context).map_err(|e| describe(&e))?;
            // Strict mode fails on printing an undefined value, not on
            // returning one: a lookup of a missing key must fail here.
            if value.is_undefined() {
                return Err(format!(
                    "undefined value: `{}` is not defined",
                    expression.trim()
                ));
            }
            serde_json::to_value(&value)
                .map_err(|e| format!("the value of `{expression}` is not JSON: {e}"))
        }
        None => env
            .render_str(source, context)
            .map(Value::String)
            .map_err(|e| describe(&e)),
    }
}

/// Renders every string inside `value` against `context`.
pub fn render_value(value: &Value, context: &Value) -> Result<Value, String> {
    match value {
        Value::String(source) => render(source, context),
        Value::Array(items) => items
            .iter()
            .map(|item| render_value(item, context))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(key, item)| Ok((key.clone(), render_value(item, context)?)))
            .collect::<Result<serde_json::Map<_, _>, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sole_expression_keeps_its_type() {
        let context = json!({ "input": { "n": 7, "tags": ["a", "b"] } });
        assert_eq!(render("{{ input.n }}", &context).unwrap(), json!(7));
        assert_eq!(render(" {{ input.n * 2 }} ", &context).unwrap(), json!(14));
        assert_eq!(
            render("{{ input.tags }}", &context).unwrap(),
            json!(["a", "b"])
        );
    }

    #[test]
    fn any_other_string_renders_to_a_string() {
        let context = json!({ "input": { "n": 7 } });
        assert_eq!(
            render("n is {{ input.n }}", &context).unwrap(),
            json!("n is 7")
        );
        assert_eq!(
            render("{{ input.n }}{{ input.n }}", &context).unwrap(),
            json!("77")
        );
        assert_eq!(render("plain", &context).unwrap(), json!("plain"));
    }

    #[test]
    fn conditions_evaluate_to_their_truth() {
        let context = json!({ "input": { "n": 7, "flag": false } });
        assert_eq!(evaluate_condition("input.n > 5", &context), Ok(true));
        assert_eq!(evaluate_condition("input.flag", &context), Ok(false));
        assert!(evaluate_condition("input.nope", &context).is_err());
        assert!(check_expression("input.n >").is_err());
    }

    #[test]
    fn unknown_variables_are_errors() {
        let context = json!({ "input": {} });
        assert!(render("{{ input.missing }}", &context).is_err());
        assert!(render("hello {{ nobody }}", &context).is_err());
    }

    #[test]
    fn nested_values_render_in_place() {
        let context = json!({ "steps": { "a": { "output": { "x": 1 } } } });
        let rendered = render_value(
            &json!({ "x": "{{ steps.a.output.x }}", "list": ["{{ steps.a.output.x + 1 }}", true] }),
            &context,
        )
        .unwrap();
        assert_eq!(rendered, json!({ "x": 1, "list": [2, true] }));
    }

    #[test]
    fn templates_that_do_not_compile_are_reported_with_their_path() {
        assert!(check("{{ input.n ").is_err());
        assert!(check("{% if %}").is_err());
        let (path, _) =
            check_value(&json!({ "a": ["ok", "{{ 1 + }}"] }), "config.output").unwrap_err();
        assert_eq!(path, "config.output.a[1]");
    }
}
