//! The vocabulary every other module shares: labels and patterns, digests, image references and the
//! action graph. Imports nothing else of cbuild's.

pub mod action;
pub mod digest;
pub mod error;
pub mod label;
pub mod platform;
pub mod reference;
pub mod test_spec;
