//! The engine, the event streams, the shared state and every domain
//! service stand below the API: none of them names the GraphQL layer, the
//! HTTP layer, the server wiring in `app`, or the crates those are built
//! on. This reads the sources, so a new file under those folders is held
//! to the rule without being listed.

use std::path::{Path, PathBuf};

/// What code below the API must not name.
const ABOVE_THE_API: [&str; 5] = [
    "async_graphql",
    "axum",
    "crate::graphql",
    "crate::http",
    "crate::app",
];

/// The sources held to the rule: every file of these folders, `state.rs`,
/// and each domain's `service.rs`.
fn below_the_api() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("state.rs")];
    for folder in ["engine", "events"] {
        let entries = std::fs::read_dir(src.join(folder)).expect("the folder is there");
        files.extend(entries.map(|entry| entry.expect("a directory entry").path()));
    }
    for domain in ["auth", "executions", "orgs", "workflows"] {
        files.push(src.join(domain).join("service.rs"));
    }
    files.retain(|file| file.extension().is_some_and(|ext| ext == "rs"));
    files
}

/// The forbidden names `source` uses, with their line numbers; comments
/// are not code.
fn forbidden_names(source: &str) -> Vec<(usize, &'static str)> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .flat_map(|(number, line)| {
            ABOVE_THE_API
                .iter()
                .filter(move |name| names(line, name) || groups(line, name))
                .map(move |name| (number + 1, *name))
        })
        .collect()
}

/// Whether `line` names `path` in a grouped import, `use crate::{…}`: one
/// of the group's items starts with what follows `crate::`.
fn groups(line: &str, path: &str) -> bool {
    let (Some(item), Some(group)) = (path.strip_prefix("crate::"), line.split_once("crate::{"))
    else {
        return false;
    };
    group
        .1
        .split([',', '}'])
        .map(|entry| entry.trim().split("::").next().unwrap_or_default())
        .any(|first| first == item)
}

/// Whether `line` names `path` as a path of its own (so `crate::app` does
/// not match `crate::application`).
fn names(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + path.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

#[test]
fn the_engine_events_state_and_services_never_name_the_api_layers() {
    let files = below_the_api();
    assert!(files.len() > 20, "too few sources found: {files:?}");
    let mut found = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("a readable source");
        for (line, name) in forbidden_names(&source) {
            found.push(format!("{}:{line} names {name}", file.display()));
        }
    }
    assert!(found.is_empty(), "below the API:\n{}", found.join("\n"));
}

#[test]
fn a_forbidden_name_is_found_in_code_but_not_in_comments_or_longer_names() {
    let source = "use crate::graphql::context::RequestContext;\n\
                  // crate::http is mentioned here\n\
                  let x = crate::application::run();\n\
                  fn f(_: &async_graphql::Context<'_>) {}\n\
                  use crate::{engine::http, http::router};\n";
    assert_eq!(
        forbidden_names(source),
        vec![
            (1, "crate::graphql"),
            (4, "async_graphql"),
            (5, "crate::http")
        ]
    );
}
