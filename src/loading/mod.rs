//! Loading: finds the workspace, evaluates `BUILD.star` files (and the `.star` files they load) with
//! the embedded prelude, and builds the [`TargetGraph`]. Every user error is a located [`LoadError`].

pub mod attrs;
pub mod diagnostics;
pub mod eval;
pub mod glob;
pub mod graph;
pub mod workspace;

pub use attrs::{AttrValue, FileRef};
pub use diagnostics::{LoadError, Site};
pub use eval::{EvalLimits, GlobCall, PackageInputs, TargetNode};
pub use graph::{load, load_limited, Loaded, TargetGraph};
pub use workspace::{Workspace, WorkspaceConfig, WorkspaceError, BUILD_FILE};
