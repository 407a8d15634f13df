//! Labels and patterns (being written)
