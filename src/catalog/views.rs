//! Views: create, load, list, replace (commit), drop, rename, register. View metadata files
//! are written to object storage like table metadata; a name is a table or a view.

use super::CatalogService;

impl CatalogService {}
