//! Bounded work for every GraphQL document, decided before it is done.
//!
//! [`DocumentGuard`] runs ahead of async-graphql's own parsing and
//! validation, on every transport (HTTP, batches, WebSocket, SSE): it counts
//! a document's tokens and bracket nesting in one pass over the text,
//! parses it, and sums its fields, fragment spreads, aliases and directives
//! as they would be once fragments are expanded — each fragment measured
//! once, never expanded — so a document that spreads fragments into each
//! other is refused in time linear in its size. It also refuses text that
//! no backend can store (the NUL character).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationDefinition, Selection,
    SelectionSet,
};
use async_graphql::{
    Name, Positioned, Request, ServerError, ServerResult, ValidationResult, Value, Variables,
};

use super::limits::{
    LIMIT_EXCEEDED, MAX_MESSAGE_CHARS, PARSE_FAILED, VALIDATION_FAILED, limit_exceeded, refusal,
    truncate_chars,
};
use crate::limits::DocumentLimits;

/// Measures documents before async-graphql parses and validates them.
pub struct DocumentGuard {
    limits: Arc<DocumentLimits>,
}

impl DocumentGuard {
    /// A guard holding documents to `limits`.
    pub fn new(limits: DocumentLimits) -> Self {
        Self {
            limits: Arc::new(limits),
        }
    }
}

impl ExtensionFactory for DocumentGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExtension {
            limits: self.limits.clone(),
        })
    }
}

struct GuardExtension {
    limits: Arc<DocumentLimits>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for GuardExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(field) = nul_in_variables(&request.variables) {
            return Err(nul_refusal(&field));
        }
        let document = parse(&request.query, &self.limits)?;
        request.set_parsed_query(document);
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|mut error| {
                    let limit = match error.message.as_str() {
                        "Query is nested too deep." => Some("depth"),
                        "Query is too complex." => Some("complexity"),
                        _ => None,
                    };
                    let extensions = error.extensions.get_or_insert_with(Default::default);
                    extensions.set("code", "BAD_USER_INPUT");
                    match limit {
                        Some(limit) => {
                            extensions.set("reason", LIMIT_EXCEEDED);
                            extensions.set("limit", limit);
                        }
                        None => extensions.set("reason", VALIDATION_FAILED),
                    }
                    error
                })
                .collect()
        })
    }
}

/// Parses `query` once its size and nesting are known to be in bounds,
/// and measures the parsed document: the checks every document passes
/// before anything else looks at it.
pub fn parse(query: &str, limits: &DocumentLimits) -> ServerResult<ExecutableDocument> {
    scan_text(query, limits)?;
    let document = async_graphql::parser::parse_query(query).map_err(|err| {
        let pos = err.positions().next();
        let at = pos.map_or_else(String::new, |p| {
            format!(" at line {}, column {}", p.line, p.column)
        });
        refusal(
            format!(
                "the document does not parse{at}: {}",
                first_line(&err.to_string())
            ),
            PARSE_FAILED,
            pos,
        )
    })?;
    measure(&document, limits)?;
    if let Some(field) = nul_in_document(&document) {
        return Err(nul_refusal(&field));
    }
    Ok(document)
}

/// The operation of `document` that a request runs: the one named, or
/// the only one.
pub fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// What a parser message says was expected, without the source lines it
/// quotes (pest's `= expected …` line), or a plain "syntax error".
fn first_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("= "))
        .unwrap_or("syntax error");
    truncate_chars(line, MAX_MESSAGE_CHARS)
}

fn nul_refusal(field: &str) -> ServerError {
    let mut error = refusal(
        "text may not contain the NUL character (U+0000)",
        VALIDATION_FAILED,
        None,
    );
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("field", field);
    }
    error
}

/// Counts tokens and bracket nesting in one pass over the text, refusing
/// as soon as either is over its limit. Commas, white space and comments
/// are not tokens, as in the GraphQL grammar.
fn scan_text(text: &str, limits: &DocumentLimits) -> ServerResult<()> {
    let bytes = text.as_bytes();
    let (mut i, mut tokens, mut nesting) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' | b'[' | b'(' => {
                nesting += 1;
                if nesting > limits.max_query_nesting {
                    return Err(limit_exceeded(
                        "nesting",
                        format!(
                            "the document nests brackets more than {} deep",
                            limits.max_query_nesting
                        ),
                    ));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                nesting = nesting.saturating_sub(1);
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+') => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.'))
                {
                    i += 1;
                }
                if i < bytes.len() && matches!(bytes[i], b'-' | b'+') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > limits.max_query_tokens {
            return Err(limit_exceeded(
                "tokens",
                format!(
                    "the document has more than {} tokens",
                    limits.max_query_tokens
                ),
            ));
        }
    }
    Ok(())
}

/// What a selection set amounts to once its fragments are expanded.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Cost {
    fields: u64,
    spreads: u64,
    aliases: u64,
    directives: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.fields = self.fields.saturating_add(other.fields);
        self.spreads = self.spreads.saturating_add(other.spreads);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.directives = self.directives.saturating_add(other.directives);
    }
}

/// Sums the document's expanded size over all its operations (validation
/// visits every one) and refuses it when over a limit. Each fragment is
/// measured once, after the fragments it spreads, so the work is linear in
/// the document however its fragments multiply.
fn measure(document: &ExecutableDocument, limits: &DocumentLimits) -> ServerResult<()> {
    let fragments = fragment_costs(document)?;
    let mut total = Cost::default();
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(operation) => vec![operation],
        DocumentOperations::Multiple(operations) => operations.values().collect(),
    };
    for operation in operations {
        total.directives = total
            .directives
            .saturating_add(operation.node.directives.len() as u64);
        total.add(selection_cost(
            &operation.node.selection_set.node,
            &fragments,
        ));
    }
    let checks = [
        ("fields", total.fields, limits.max_query_fields, "fields"),
        (
            "fragmentSpreads",
            total.spreads,
            limits.max_query_fields,
            "fragment spreads",
        ),
        (
            "aliases",
            total.aliases,
            limits.max_query_aliases,
            "aliased fields",
        ),
        (
            "directives",
            total.directives,
            limits.max_query_directives,
            "directives",
        ),
    ];
    for (limit, count, max, what) in checks {
        if count > max as u64 {
            return Err(limit_exceeded(
                limit,
                format!("the document has more than {max} {what} once its fragments are expanded"),
            ));
        }
    }
    Ok(())
}

/// Each fragment's expanded cost, computed in dependency order without
/// recursion across fragments; a fragment that spreads itself, directly or
/// not, is refused.
fn fragment_costs(document: &ExecutableDocument) -> ServerResult<HashMap<&Name, Cost>> {
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut costs: HashMap<&Name, Cost> = HashMap::new();
    let mut marks: HashMap<&Name, Mark> = HashMap::new();
    for root in document.fragments.keys() {
        if marks.contains_key(root) {
            continue;
        }
        marks.insert(root, Mark::Visiting);
        let mut stack: Vec<(&Name, Vec<&Name>, usize)> =
            vec![(root, spreads_of(&document.fragments[root]), 0)];
        while let Some((name, spreads, next)) = stack.last_mut() {
            if let Some(&spread) = spreads.get(*next) {
                *next += 1;
                match marks.get(spread) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        let pos = document.fragments[spread].pos;
                        return Err(refusal(
                            format!("fragment `{spread}` spreads itself"),
                            VALIDATION_FAILED,
                            Some(pos),
                        ));
                    }
                    None => {
                        if let Some((key, fragment)) = document.fragments.get_key_value(spread) {
                            marks.insert(key, Mark::Visiting);
                            stack.push((key, spreads_of(fragment), 0));
                        }
                    }
                }
            } else {
                let name = *name;
                let fragment = &document.fragments[name].node;
                let mut cost = selection_cost(&fragment.selection_set.node, &costs);
                cost.directives = cost
                    .directives
                    .saturating_add(fragment.directives.len() as u64);
                costs.insert(name, cost);
                marks.insert(name, Mark::Done);
                stack.pop();
            }
        }
    }
    Ok(costs)
}

/// The names of the fragments `fragment` spreads (its selection sets nest
/// no deeper than the text's bracket limit).
fn spreads_of(fragment: &Positioned<FragmentDefinition>) -> Vec<&Name> {
    fn walk<'a>(set: &'a SelectionSet, out: &mut Vec<&'a Name>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => walk(&field.node.selection_set.node, out),
                Selection::FragmentSpread(spread) => out.push(&spread.node.fragment_name.node),
                Selection::InlineFragment(inline) => walk(&inline.node.selection_set.node, out),
            }
        }
    }
    let mut out = Vec::new();
    walk(&fragment.node.selection_set.node, &mut out);
    out
}

/// A selection set's expanded cost, given the costs of the fragments it
/// spreads (an unknown fragment counts nothing: validation reports it).
fn selection_cost(set: &SelectionSet, fragments: &HashMap<&Name, Cost>) -> Cost {
    let mut cost = Cost::default();
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                cost.add(Cost {
                    fields: 1,
                    spreads: 0,
                    aliases: u64::from(field.alias.is_some()),
                    directives: field.directives.len() as u64,
                });
                cost.add(selection_cost(&field.selection_set.node, fragments));
            }
            Selection::FragmentSpread(spread) => {
                cost.add(Cost {
                    spreads: 1,
                    directives: spread.node.directives.len() as u64,
                    ..Cost::default()
                });
                if let Some(fragment) = fragments.get(&spread.node.fragment_name.node) {
                    cost.add(*fragment);
                }
            }
            Selection::InlineFragment(inline) => {
                cost.directives = cost
                    .directives
                    .saturating_add(inline.node.directives.len() as u64);
                cost.add(selection_cost(&inline.node.selection_set.node, fragments));
            }
        }
    }
    cost
}

/// The variable holding a NUL character, as `variables.<path>`, if any.
fn nul_in_variables(variables: &Variables) -> Option<String> {
    variables
        .iter()
        .find_map(|(name, value)| nul_path(value, &mut format!("variables.{name}")))
}

/// The argument whose literal holds a NUL character, if any.
fn nul_in_document(document: &ExecutableDocument) -> Option<String> {
    fn in_set(set: &SelectionSet) -> Option<String> {
        set.items.iter().find_map(|item| match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                field
                    .arguments
                    .iter()
                    .find_map(|(name, value)| {
                        // Variables in the literal are checked as variables.
                        let literal = value
                            .node
                            .clone()
                            .into_const_with(|_| Ok::<_, std::convert::Infallible>(Value::Null))
                            .ok()?;
                        nul_path(&literal, &mut name.node.to_string())
                    })
                    .or_else(|| in_set(&field.selection_set.node))
            }
            Selection::FragmentSpread(_) => None,
            Selection::InlineFragment(inline) => in_set(&inline.node.selection_set.node),
        })
    }
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(operation) => vec![operation],
        DocumentOperations::Multiple(operations) => operations.values().collect(),
    };
    operations
        .into_iter()
        .find_map(|operation| {
            operation
                .node
                .variable_definitions
                .iter()
                .find_map(|definition| {
                    let default = definition.node.default_value.as_ref()?;
                    nul_path(
                        &default.node,
                        &mut format!("${}", definition.node.name.node),
                    )
                })
                .or_else(|| in_set(&operation.node.selection_set.node))
        })
        .or_else(|| {
            document
                .fragments
                .values()
                .find_map(|fragment| in_set(&fragment.node.selection_set.node))
        })
}

/// The path below `path` of a string in `value` holding a NUL, if any.
fn nul_path(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.clone()),
        Value::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &mut format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(path.clone());
            }
            nul_path(item, &mut format!("{path}.{key}"))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::limits::tests::{limits, reason_and_limit};

    fn doubling_fragments(n: usize) -> String {
        let mut query = String::from("query{__typename ...F0}");
        for i in 0..n {
            query.push_str(&format!(
                " fragment F{i} on Query{{__typename ...F{next} ...F{next}}}",
                next = i + 1
            ));
        }
        query.push_str(&format!(" fragment F{n} on Query{{__typename}}"));
        query
    }

    #[test]
    fn fragments_that_double_are_measured_without_expanding_them() {
        // 2^60 fields once expanded: refused at once.
        let document = async_graphql::parser::parse_query(doubling_fragments(60)).unwrap();
        let refused = measure(&document, &limits()).unwrap_err();
        assert_eq!(
            reason_and_limit(&refused),
            (LIMIT_EXCEEDED.into(), Some("fields".into()))
        );
        let small = async_graphql::parser::parse_query(doubling_fragments(5)).unwrap();
        assert!(measure(&small, &limits()).is_ok());
    }

    #[test]
    fn a_parse_error_says_what_was_expected_without_quoting_the_source() {
        let err = async_graphql::parser::parse_query("query { secret-text-here").unwrap_err();
        let said = first_line(&err.to_string());
        assert!(!said.contains("secret"), "{said}");
        assert!(said.starts_with("expected"), "{said}");
    }

    #[test]
    fn a_fragment_cycle_is_refused_as_invalid() {
        let document = async_graphql::parser::parse_query(
            "query{...A} fragment A on Query{...B} fragment B on Query{...A}",
        )
        .unwrap();
        let refused = measure(&document, &limits()).unwrap_err();
        assert_eq!(reason_and_limit(&refused).0, VALIDATION_FAILED);
    }

    #[test]
    fn aliases_and_directives_count_once_expanded() {
        let aliases = (0..60)
            .map(|i| format!("a{i}: __typename"))
            .collect::<Vec<_>>();
        let query = format!(
            "query{{...F ...F}} fragment F on Query{{{}}}",
            aliases.join(" ")
        );
        let document = async_graphql::parser::parse_query(query).unwrap();
        let refused = measure(&document, &limits()).unwrap_err();
        assert_eq!(reason_and_limit(&refused).1.as_deref(), Some("aliases"));
    }

    #[test]
    fn tokens_and_nesting_are_counted_before_parsing() {
        let long = format!("{{{}}}", "__typename ".repeat(20_000));
        let refused = scan_text(&long, &limits()).unwrap_err();
        assert_eq!(reason_and_limit(&refused).1.as_deref(), Some("tokens"));
        let deep = format!("{{f(a:{}1{})}}", "[".repeat(100), "]".repeat(100));
        let refused = scan_text(&deep, &limits()).unwrap_err();
        assert_eq!(reason_and_limit(&refused).1.as_deref(), Some("nesting"));
        // Strings, comments and commas are one token or none.
        let quiet = format!(
            "# {}\n{{f(a:\"{}\", b:\"\"\"{}\"\"\")}}",
            "x ".repeat(20_000),
            "y ".repeat(20_000),
            "z ".repeat(20_000)
        );
        assert!(scan_text(&quiet, &limits()).is_ok());
    }

    #[test]
    fn a_nul_in_a_variable_or_a_literal_is_found_with_its_path() {
        let variables = Variables::from_json(serde_json::json!({"input": {"name": "a\u{0}b"}}));
        assert_eq!(
            nul_in_variables(&variables).as_deref(),
            Some("variables.input.name")
        );
        let document = async_graphql::parser::parse_query(r#"{ f(slug: "a\u0000b") }"#).unwrap();
        assert_eq!(nul_in_document(&document).as_deref(), Some("slug"));
        let clean = async_graphql::parser::parse_query(r#"{ f(slug: "ab") }"#).unwrap();
        assert_eq!(nul_in_document(&clean), None);
    }
}
