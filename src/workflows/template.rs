//! Templates in step configs: minijinja with strict undefined, so an
//! unknown variable is an error rather than an empty string.
//!
//! A string that is exactly one `{{ expression }}` yields the expression's
//! typed value (`"{{ input.n }}"` gives `7`, not `"7"`); any other string
//! renders to a string. Other JSON values pass through unchanged.
//!
//! Rendering is bounded: a [`Renderer`] holds one step's budget, shared by
//! every template in its config — instructions (minijinja's fuel), bytes
//! rendered, and nesting of calls — and a template over any of them fails
//! with an error naming the limit. Checking (`check*`) only parses: its
//! cost is linear in the source and it builds no value.

use std::io;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

/// Deepest nesting of macro calls and includes in one template.
const RECURSION_LIMIT: usize = 32;

/// The variable a sole expression's value is kept in while it is evaluated.
const RESULT: &str = "__flowpilot_result";

fn configured(env: &mut Environment<'static>) {
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(RECURSION_LIMIT);
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

/// Checks that `source` parses, without compiling or rendering it; the
/// error says what is wrong. Parsing only: compiling folds constant
/// expressions, so `'a' * 100000000` would be built right here, in the API
/// process. Rendering (see `engine::rendering`) compiles where memory is
/// capped.
pub fn check(source: &str) -> Result<(), String> {
    match sole_expression(source) {
        Some(expression) => check_expression(expression),
        None => minijinja::machinery::parse(
            source,
            "<template>",
            Default::default(),
            Default::default(),
        )
        .map(|_| ())
        .map_err(|e| describe(&e)),
    }
}

/// Checks that a bare expression (CONDITION's `if`) parses.
pub fn check_expression(expression: &str) -> Result<(), String> {
    minijinja::machinery::parse_expr(expression)
        .map(|_| ())
        .map_err(|e| describe(&e))
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

/// Whether every template in `source` only looks a value up
/// (`{{ steps.fetch.output.items[0] }}`): no operator, filter, call or tag,
/// so rendering it costs no more than copying what it names.
pub fn only_looks_up(source: &str) -> bool {
    if source.contains("{%") || source.contains("{#") {
        return false;
    }
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return false;
        };
        let inner = after[..end].trim();
        let inner = inner.strip_prefix('-').unwrap_or(inner);
        let inner = inner.strip_suffix('-').unwrap_or(inner);
        if !is_lookup(inner.trim()) {
            return false;
        }
        rest = &after[end + 2..];
    }
    true
}

/// [`only_looks_up`] for every string inside `value`.
pub fn value_only_looks_up(value: &Value) -> bool {
    match value {
        Value::String(source) => only_looks_up(source),
        Value::Array(items) => items.iter().all(value_only_looks_up),
        Value::Object(map) => map.values().all(value_only_looks_up),
        _ => true,
    }
}

/// Whether `expression` is a name followed by attribute and index lookups:
/// `a.b[0]['c']`.
pub fn is_lookup(expression: &str) -> bool {
    let bytes = expression.as_bytes();
    let name = |i: usize| -> Option<usize> {
        let first = *bytes.get(i)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let len = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        Some(i + len)
    };
    let Some(mut i) = name(0) else {
        return false;
    };
    while i < bytes.len() {
        i = match bytes[i] {
            b'.' => match name(i + 1) {
                Some(next) => next,
                None => return false,
            },
            b'[' => {
                let inside = &bytes[i + 1..];
                let len = match inside.first() {
                    Some(quote @ (b'\'' | b'"')) => {
                        match inside[1..].iter().position(|b| b == quote || *b == b'\\') {
                            Some(n) if inside[1 + n] == *quote => n + 2,
                            _ => return false,
                        }
                    }
                    Some(b) if b.is_ascii_digit() => {
                        inside.iter().take_while(|b| b.is_ascii_digit()).count()
                    }
                    _ => return false,
                };
                if inside.get(len) != Some(&b']') {
                    return false;
                }
                i + 1 + len + 1
            }
            _ => return false,
        };
    }
    true
}

/// Adds to `named` the ids of the steps `source` names as `steps.<id>` or
/// `steps['<id>']`; false when it uses `steps` any other way (it may then
/// read any step). Plain text that says "steps" counts too: a bare
/// expression (CONDITION's `if`) has no `{{ }}` to tell them apart.
pub fn named_steps(source: &str, named: &mut std::collections::HashSet<String>) -> bool {
    let bytes = source.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(found) = source[from..].find("steps") {
        let start = from + found;
        let end = start + "steps".len();
        from = end;
        if (start > 0 && is_ident(bytes[start - 1])) || bytes.get(end).is_some_and(|b| is_ident(*b))
        {
            continue;
        }
        let rest = &source[end..];
        let id = if let Some(after) = rest.strip_prefix('.') {
            after
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
        } else if let Some(after) = rest.strip_prefix("['").or_else(|| rest.strip_prefix("[\"")) {
            after.split(['\'', '"']).next()
        } else {
            None
        };
        match id {
            Some(id) if !id.is_empty() => {
                named.insert(id.to_owned());
            }
            _ => return false,
        }
    }
    true
}

/// Renders the templates of one step's config against one context, within
/// one budget of fuel and bytes for all of them.
pub struct Renderer {
    context: minijinja::Value,
    fuel_left: u64,
    bytes_left: usize,
    max_bytes: usize,
}

impl Renderer {
    /// A renderer over `context` that may run `fuel` template instructions
    /// and produce `max_bytes` of rendered text (or JSON) in all.
    pub fn new(context: &Value, fuel: u64, max_bytes: usize) -> Self {
        Self {
            context: minijinja::Value::from_serialize(context),
            fuel_left: fuel,
            bytes_left: max_bytes,
            max_bytes,
        }
    }

    fn environment(&self) -> Environment<'static> {
        let mut env = Environment::new();
        configured(&mut env);
        env.set_fuel(Some(self.fuel_left.max(1)));
        env
    }

    fn spend(&mut self, state: &minijinja::State<'_, '_>, bytes: usize) {
        let consumed = state.fuel_levels().map_or(0, |(consumed, _)| consumed);
        self.fuel_left = self.fuel_left.saturating_sub(consumed);
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
    }

    fn failure(&self, err: &minijinja::Error, writer: &BoundedWriter) -> String {
        if writer.exceeded {
            self.over_bytes()
        } else if err.kind() == ErrorKind::OutOfFuel {
            "the templates ran more instructions than allowed (FLOWPILOT_TEMPLATE_FUEL)".to_owned()
        } else {
            describe(err)
        }
    }

    /// Renders one string, typed when it is a sole expression.
    pub fn render(&mut self, source: &str) -> Result<Value, String> {
        if !has_template(source) {
            return Ok(Value::String(source.to_owned()));
        }
        match sole_expression(source) {
            Some(expression) => self.evaluate(expression),
            None => {
                let env = self.environment();
                let template = env.template_from_str(source).map_err(|e| describe(&e))?;
                let mut writer = BoundedWriter::new(self.bytes_left);
                let rendered = template.render_captured_to(&self.context, &mut writer);
                match rendered {
                    Ok(captured) => {
                        let bytes = writer.bytes.len();
                        self.spend(captured.state(), bytes);
                        String::from_utf8(writer.bytes)
                            .map(Value::String)
                            .map_err(|_| "the template rendered text that is not UTF-8".to_owned())
                    }
                    Err(err) => Err(self.failure(&err, &writer)),
                }
            }
        }
    }

    /// Evaluates one expression; an undefined value is an error.
    fn evaluate_raw(&mut self, expression: &str) -> Result<minijinja::Value, String> {
        let env = self.environment();
        // Evaluated as a template that assigns it, so the fuel it used can be
        // read back; the expression itself cannot hold `%}` (see
        // `sole_expression`).
        let source = format!("{{% set {RESULT} = ({expression}) %}}");
        let template = env.template_from_str(&source).map_err(|e| describe(&e))?;
        let captured = template
            .render_captured(&self.context)
            .map_err(|err| self.failure(&err, &BoundedWriter::new(0)))?;
        self.spend(captured.state(), 0);
        let value = captured.state().lookup(RESULT).unwrap_or_default();
        // Strict mode fails on printing an undefined value, not on
        // returning one: a lookup of a missing key must fail here.
        if value.is_undefined() {
            return Err(format!(
                "undefined value: `{}` is not defined",
                expression.trim()
            ));
        }
        Ok(value)
    }

    /// Evaluates one expression to its JSON value, within the byte budget.
    fn evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let value = self.evaluate_raw(expression)?;
        let mut writer = BoundedWriter::new(self.bytes_left);
        if serde_json::to_writer(&mut writer, &value).is_err() {
            return Err(if writer.exceeded {
                self.over_bytes()
            } else {
                format!("the value of `{}` is not JSON", expression.trim())
            });
        }
        self.bytes_left = self.bytes_left.saturating_sub(writer.bytes.len());
        serde_json::from_slice(&writer.bytes)
            .map_err(|e| format!("the value of `{}` is not JSON: {e}", expression.trim()))
    }

    fn over_bytes(&self) -> String {
        format!(
            "the templates rendered more than {} bytes (FLOWPILOT_MAX_STEP_OUTPUT_BYTES)",
            self.max_bytes
        )
    }

    /// Evaluates a bare expression to its truth; an undefined value is an
    /// error.
    pub fn evaluate_condition(&mut self, expression: &str) -> Result<bool, String> {
        Ok(self.evaluate_raw(expression)?.is_true())
    }

    /// Renders every string inside `value`.
    pub fn render_value(&mut self, value: &Value) -> Result<Value, String> {
        match value {
            Value::String(source) => self.render(source),
            Value::Array(items) => items
                .iter()
                .map(|item| self.render_value(item))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(key, item)| Ok((key.clone(), self.render_value(item)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// Collects output up to a number of bytes and fails the write beyond it,
/// so an oversized result is never built whole.
struct BoundedWriter {
    bytes: Vec<u8>,
    room: usize,
    exceeded: bool,
}

impl BoundedWriter {
    fn new(room: usize) -> Self {
        Self {
            bytes: Vec::new(),
            room,
            exceeded: false,
        }
    }
}

impl io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.room - self.bytes.len() {
            self.exceeded = true;
            return Err(io::Error::other("output limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

    fn render(source: &str, context: &Value) -> Result<Value, String> {
        Renderer::new(context, 100_000, 1 << 20).render(source)
    }

    fn evaluate_condition(expression: &str, context: &Value) -> Result<bool, String> {
        Renderer::new(context, 100_000, 1 << 20).evaluate_condition(expression)
    }

    fn render_value(value: &Value, context: &Value) -> Result<Value, String> {
        Renderer::new(context, 100_000, 1 << 20).render_value(value)
    }

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

    #[test]
    fn large_constant_expressions_are_checked_for_syntax_only() {
        // Compiling would fold these into gigabytes; parsing does not.
        let folded = "{{ ('a' * 100000000) ~ ('a' * 100000000) ~ ('a' * 100000000) }}";
        assert!(check(folded).is_ok());
        assert!(check("{% set a = 'a' * 100000000 %}{{ a ~ a ~ a ~ a }}").is_ok());
        assert!(check_expression("'a' * 100000000 == 'b' * 100000000").is_ok());
        assert!(check("{{ 'a' * }}").is_err());
    }

    #[test]
    fn the_steps_a_template_names_are_found_or_all_are_needed() {
        let mut named = std::collections::HashSet::new();
        assert!(named_steps(
            "{{ steps.fetch.output ~ steps['b'].output }} mysteps",
            &mut named
        ));
        assert!(named_steps("nothing named", &mut named));
        assert!(named_steps("steps.c.output.ok and input.x", &mut named));
        let mut expected: Vec<_> = named.into_iter().collect();
        expected.sort();
        assert_eq!(expected, ["b", "c", "fetch"]);
        let mut named = std::collections::HashSet::new();
        assert!(!named_steps(
            "{% for s in steps %}{{ s }}{% endfor %}",
            &mut named
        ));
        assert!(!named_steps("{{ steps[name] }}", &mut named));
    }

    #[test]
    fn lookups_are_told_apart_from_everything_else() {
        for plain in [
            "no template",
            "{{ input.n }}",
            "n={{ steps.fetch.output.items[0]['name'] }} and {{- input.x -}}",
            "{{ a[\"b c\"].d_1 }}",
        ] {
            assert!(only_looks_up(plain), "{plain}");
        }
        for costly in [
            "{{ 'a' * 1000 }}",
            "{{ input.n + 1 }}",
            "{{ input.list | join }}",
            "{{ range(10) }}",
            "{% for x in input %}{% endfor %}",
            "{{ a ~ b }}",
            "{{ a[b] }}",
            "{{ a['b }}",
            "{{ 5 }}",
            "{{ a.",
        ] {
            assert!(!only_looks_up(costly), "{costly}");
        }
    }

    #[test]
    fn nested_loops_run_out_of_fuel_with_an_error_naming_the_limit() {
        let context = json!({ "input": {} });
        let mut renderer = Renderer::new(&context, 100_000, 1 << 20);
        let loops = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let refused = renderer.render(loops).unwrap_err();
        assert!(refused.contains("FLOWPILOT_TEMPLATE_FUEL"), "{refused}");
    }

    #[test]
    fn fuel_is_shared_by_every_template_of_one_config() {
        let context = json!({ "input": {} });
        let mut renderer = Renderer::new(&context, 2_000, 1 << 20);
        let loop_of_300 = "{% for i in range(300) %}{{ i }}{% endfor %}";
        assert!(renderer.render(loop_of_300).is_ok());
        let mut refused = None;
        for _ in 0..20 {
            if let Err(err) = renderer.render(loop_of_300) {
                refused = Some(err);
                break;
            }
        }
        assert!(refused.is_some_and(|e| e.contains("FLOWPILOT_TEMPLATE_FUEL")));
    }

    #[test]
    fn output_over_the_byte_limit_fails_without_being_kept() {
        let context = json!({ "input": {} });
        let mut renderer = Renderer::new(&context, 100_000, 1_000);
        let refused = renderer.render("{{ 'a' * 100000 }}").unwrap_err();
        assert!(
            refused.contains("FLOWPILOT_MAX_STEP_OUTPUT_BYTES"),
            "{refused}"
        );
        let refused = renderer.render("x{{ 'a' * 100000 }}").unwrap_err();
        assert!(
            refused.contains("FLOWPILOT_MAX_STEP_OUTPUT_BYTES"),
            "{refused}"
        );
        // The budget is shared: two halves fit, a third does not.
        let mut renderer = Renderer::new(&context, 100_000, 1_000);
        assert!(renderer.render("{{ 'a' * 450 }}").is_ok());
        assert!(renderer.render("{{ 'a' * 450 }}").is_ok());
        assert!(renderer.render("{{ 'a' * 450 }}").is_err());
    }

    #[test]
    fn macros_recursing_without_end_stop_at_the_recursion_limit() {
        let context = json!({ "input": {} });
        let mut renderer = Renderer::new(&context, 1_000_000, 1 << 20);
        let refused = renderer
            .render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            .unwrap_err();
        assert!(!refused.is_empty());
    }
}
