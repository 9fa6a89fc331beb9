//! The per-request set of DataLoaders. A new set is made for every request,
//! so cached rows never outlive it or leak between viewers.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;

use crate::app::AppState;
use crate::error::AppError;
use crate::orgs::loaders::{MembershipsByUserLoader, OrganizationLoader};

/// Why a batch load failed; cloneable, as DataLoader requires.
#[derive(Clone, Debug)]
pub struct LoadError(Arc<sea_orm::DbErr>);

impl From<sea_orm::DbErr> for LoadError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self(Arc::new(err))
    }
}

impl From<LoadError> for AppError {
    fn from(err: LoadError) -> Self {
        AppError::Internal(anyhow::anyhow!("batch load failed: {}", err.0))
    }
}

/// Every DataLoader a request may use.
pub struct Loaders {
    pub organizations: DataLoader<OrganizationLoader>,
    pub memberships_by_user: DataLoader<MembershipsByUserLoader>,
}

impl Loaders {
    /// A fresh, empty set over the state's database.
    pub fn new(state: &AppState) -> Self {
        Self {
            organizations: DataLoader::new(OrganizationLoader(state.db.clone()), tokio::spawn),
            memberships_by_user: DataLoader::new(
                MembershipsByUserLoader(state.db.clone()),
                tokio::spawn,
            ),
        }
    }
}
