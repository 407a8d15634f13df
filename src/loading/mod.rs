//! loading (being written)
