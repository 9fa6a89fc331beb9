//! An organization's workflows as a catalog: tags, archiving, duplication,
//! and the list dashboards page through. Knows nothing of GraphQL.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use entity::workflow;
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter, Set, Value,
};
use uuid::Uuid;

use super::definition::WorkflowDefinition;
use super::service::{
    MemberWorkflow, NewWorkflow, WorkflowName, active_version_id, find_for_member, insert_workflow,
};
use super::versions;
use crate::db::{begin_write, locked};
use crate::error::{AppError, AppResult};
use crate::orgs::policy::{self, Action};
use crate::orgs::principal::Principal;
use crate::pagination::{Key, ListQuery, Position, RowList, Window};
use crate::state::AppState;

/// Most tags a workflow may carry.
const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
const MAX_TAG_CHARS: usize = 32;
/// Longest search text, in characters.
const MAX_SEARCH_CHARS: usize = 100;

/// A workflow's tags: lower-case, unique, sorted; each 1 to 32 characters
/// of `a-z 0-9 - _ : .`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tags(BTreeSet<String>);

impl Tags {
    /// Parses user input; `field` names the list in the error, and
    /// `field[i]` a tag.
    pub fn parse(raw: &[String], field: &str) -> AppResult<Self> {
        let mut tags = BTreeSet::new();
        for (i, tag) in raw.iter().enumerate() {
            tags.insert(parse_tag(tag, &format!("{field}[{i}]"))?);
        }
        if tags.len() > MAX_TAGS {
            return Err(AppError::bad_input(
                field,
                format!("a workflow has at most {MAX_TAGS} tags"),
            ));
        }
        Ok(Self(tags))
    }

    /// As stored: the tags joined by single spaces.
    pub fn stored(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The tags of a stored value, sorted.
    pub fn from_stored(stored: &str) -> Vec<String> {
        stored.split_whitespace().map(str::to_owned).collect()
    }

    /// The tags of a stored value (valid when stored).
    pub fn from_stored_value(stored: &str) -> Self {
        Self(stored.split_whitespace().map(str::to_owned).collect())
    }
}

fn parse_tag(raw: &str, field: &str) -> AppResult<String> {
    let tag = raw.trim().to_lowercase();
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_:.".contains(c);
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || !tag.chars().all(allowed) {
        return Err(AppError::bad_input(
            field,
            format!("a tag has 1 to {MAX_TAG_CHARS} of the characters a-z 0-9 - _ : ."),
        ));
    }
    Ok(tag)
}

/// Which workflows a list holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WorkflowFilter {
    /// Case-insensitive text in the name.
    pub search: Option<String>,
    /// Workflows carrying every one of these.
    pub tags: Tags,
    /// Only archived workflows when true; only the others when false.
    pub archived: bool,
}

impl WorkflowFilter {
    /// Checks the search text; `field` is the filter's path.
    pub fn parse_search(raw: Option<&str>, field: &str) -> AppResult<Option<String>> {
        let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > MAX_SEARCH_CHARS {
            return Err(AppError::bad_input(
                format!("{field}.search"),
                format!("search text has at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        Ok(Some(text.to_lowercase()))
    }
}

/// The order of a workflow list; ties are broken by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WorkflowOrder {
    #[default]
    CreatedNewestFirst,
    CreatedOldestFirst,
    UpdatedNewestFirst,
    NameAscending,
}

impl WorkflowOrder {
    /// The kind cursors of this order carry, so that one order's cursor
    /// is refused by another.
    pub fn cursor_kind(self) -> &'static str {
        match self {
            Self::CreatedNewestFirst => "workflow.created_desc",
            Self::CreatedOldestFirst => "workflow.created_asc",
            Self::UpdatedNewestFirst => "workflow.updated_desc",
            Self::NameAscending => "workflow.name_asc",
        }
    }

    /// Where `workflow` stands in this order.
    pub fn position_of(self, workflow: &workflow::Model) -> ListPosition {
        match self {
            Self::CreatedNewestFirst | Self::CreatedOldestFirst => ListPosition::At(Position {
                at: workflow.created_at,
                id: workflow.id,
            }),
            Self::UpdatedNewestFirst => ListPosition::At(Position {
                at: workflow.updated_at,
                id: workflow.id,
            }),
            Self::NameAscending => ListPosition::Name {
                name: workflow.name.clone(),
                id: workflow.id,
            },
        }
    }
}

/// The last workflow seen in a list, as its cursor carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListPosition {
    At(Position),
    Name { name: String, id: Uuid },
}

impl fmt::Display for ListPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::At(position) => write!(f, "t/{position}"),
            Self::Name { name, id } => write!(f, "n/{id}/{name}"),
        }
    }
}

impl FromStr for ListPosition {
    type Err = ();

    fn from_str(key: &str) -> Result<Self, ()> {
        match key.split_once('/') {
            Some(("t", position)) => Ok(Self::At(position.parse()?)),
            Some(("n", rest)) => {
                let (id, name) = rest.split_once('/').ok_or(())?;
                Ok(Self::Name {
                    name: name.to_owned(),
                    id: id.parse().map_err(|_| ())?,
                })
            }
            _ => Err(()),
        }
    }
}

/// `text` with LIKE's wildcards escaped (by `\\`), to match literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl Key for ListPosition {
    fn values(&self) -> Vec<Value> {
        match self {
            Self::At(position) => position.values(),
            Self::Name { name, id } => vec![name.clone().into(), (*id).into()],
        }
    }
}

/// Organizations' workflows, in `order`. The caller authorizes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkflowList {
    filter: WorkflowFilter,
    order: WorkflowOrder,
    window: Window<ListPosition>,
}

impl WorkflowList {
    /// The list, once its cursors are known to be of `order`.
    pub fn new(
        filter: WorkflowFilter,
        order: WorkflowOrder,
        window: Window<ListPosition>,
    ) -> AppResult<Self> {
        let by_name = order == WorkflowOrder::NameAscending;
        for (argument, cursor) in [("after", &window.after), ("before", &window.before)] {
            if let Some(position) = cursor
                && by_name != matches!(position, ListPosition::Name { .. })
            {
                return Err(AppError::bad_input(
                    argument,
                    "this cursor is not one this list gave",
                ));
            }
        }
        Ok(Self {
            filter,
            order,
            window,
        })
    }

    fn rows(&self) -> ListQuery<workflow::Entity> {
        use workflow::Column;
        let filter = &self.filter;
        let mut select = workflow::Entity::find();
        select = if filter.archived {
            select.filter(Column::ArchivedAt.is_not_null())
        } else {
            select.filter(Column::ArchivedAt.is_null())
        };
        if let Some(search) = &filter.search {
            let lower_name = Func::lower(Expr::col((workflow::Entity, Column::Name)));
            select = select.filter(
                Expr::expr(lower_name)
                    .like(LikeExpr::new(format!("%{}%", escape_like(search))).escape('\\')),
            );
        }
        for tag in &filter.tags.0 {
            // Stored as words joined by single spaces: match a whole word.
            let escaped = escape_like(tag);
            let like = |pattern: String| Column::Tags.like(LikeExpr::new(pattern).escape('\\'));
            select = select.filter(
                Condition::any()
                    .add(Column::Tags.eq(tag.as_str()))
                    .add(like(format!("{escaped} %")))
                    .add(like(format!("% {escaped}")))
                    .add(like(format!("% {escaped} %"))),
            );
        }
        let (order, ascending) = match self.order {
            WorkflowOrder::CreatedNewestFirst => (vec![Column::CreatedAt, Column::Id], false),
            WorkflowOrder::CreatedOldestFirst => (vec![Column::CreatedAt, Column::Id], true),
            WorkflowOrder::UpdatedNewestFirst => (vec![Column::UpdatedAt, Column::Id], false),
            WorkflowOrder::NameAscending => (vec![Column::Name, Column::Id], true),
        };
        ListQuery {
            select,
            parent: Column::OrganizationId,
            parent_of: |row| row.organization_id,
            order,
            ascending,
        }
    }
}

impl RowList for WorkflowList {
    type Entity = workflow::Entity;
    type Key = ListPosition;

    fn query(&self, _now: chrono::DateTime<chrono::Utc>) -> ListQuery<workflow::Entity> {
        self.rows()
    }

    fn window(&self) -> &Window<ListPosition> {
        &self.window
    }
}

/// Archives a workflow (EDITOR and up): it can no longer run and leaves
/// the lists. CONFLICT when it already is archived.
pub async fn archive(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
) -> AppResult<MemberWorkflow> {
    set_archived(state, actor, workflow_id, Some(state.clock.now())).await
}

/// Brings an archived workflow back (EDITOR and up). CONFLICT when it is
/// not archived.
pub async fn unarchive(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
) -> AppResult<MemberWorkflow> {
    set_archived(state, actor, workflow_id, None).await
}

async fn set_archived(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
    archived_at: Option<DateTime<Utc>>,
) -> AppResult<MemberWorkflow> {
    let found = find_for_member(&state.db, actor, workflow_id).await?;
    policy::authorize(found.role, Action::UpdateWorkflow)?;
    let txn = begin_write(&state.db).await?;
    let current = locked(workflow::Entity::find_by_id(workflow_id), &txn)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    match (current.archived_at, archived_at) {
        (Some(_), Some(_)) => {
            return Err(AppError::Conflict(
                "the workflow is already archived".to_owned(),
            ));
        }
        (None, None) => {
            return Err(AppError::Conflict(
                "the workflow is not archived".to_owned(),
            ));
        }
        _ => {}
    }
    let revision = current.revision + 1;
    let mut active = current.into_active_model();
    active.archived_at = Set(archived_at);
    active.revision = Set(revision);
    active.updated_at = Set(state.clock.now());
    let workflow = active.update(&txn).await?;
    txn.commit().await?;
    Ok(MemberWorkflow {
        workflow,
        role: found.role,
    })
}

/// Copies a workflow (EDITOR and up): a new workflow in the same
/// organization whose first version is the original's active definition,
/// with its description, tags and concurrency limit.
pub async fn duplicate(
    state: &AppState,
    actor: Principal,
    workflow_id: Uuid,
    name: Option<WorkflowName>,
) -> AppResult<MemberWorkflow> {
    let original = find_for_member(&state.db, actor, workflow_id).await?;
    policy::authorize(original.role, Action::CreateWorkflow)?;
    let source = original.workflow;
    let version = versions::version_of(&state.db, workflow_id, active_version_id(&source)?).await?;
    let definition =
        WorkflowDefinition::from_stored(&version.definition).map_err(AppError::Internal)?;
    let new = NewWorkflow {
        organization_id: source.organization_id,
        name: name.unwrap_or_else(|| WorkflowName::copy_of(&source.name)),
        description: source.description,
        definition,
        max_concurrency: source.max_concurrency,
        tags: Tags::from_stored_value(&source.tags),
    };
    let message = format!("Copied from version {} of {}", version.number, source.name);
    let workflow = insert_workflow(state, actor, new, Some(message)).await?;
    tracing::info!(workflow_id = %workflow.id, from = %workflow_id, "workflow duplicated");
    Ok(MemberWorkflow {
        workflow,
        role: original.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lower_cased_deduplicated_and_sorted() {
        let raw = ["Prod", " billing ", "prod"].map(str::to_owned);
        let tags = Tags::parse(&raw, "tags").unwrap();
        assert_eq!(tags.stored(), "billing prod");
        assert_eq!(Tags::from_stored(&tags.stored()), ["billing", "prod"]);
    }

    #[test]
    fn tags_with_spaces_or_too_many_characters_are_refused() {
        for bad in ["two words", "", "ä", &"t".repeat(33)] {
            let error = Tags::parse(&[bad.to_owned()], "tags");
            assert!(error.is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..21).map(|n| format!("t{n}")).collect();
        assert!(Tags::parse(&many, "tags").is_err());
    }

    #[test]
    fn search_wildcards_are_matched_literally() {
        assert_eq!(escape_like("50%_off"), "50\\%\\_off");
    }

    #[test]
    fn list_positions_read_back_as_written() {
        let id = Uuid::now_v7();
        for position in [
            ListPosition::Name {
                name: "a/b c".to_owned(),
                id,
            },
            ListPosition::At(Position {
                at: DateTime::from_timestamp_nanos(1_700_000_000_000_000_001),
                id,
            }),
        ] {
            assert_eq!(position.to_string().parse::<ListPosition>(), Ok(position));
        }
    }
}
