//! analysis (being written)
