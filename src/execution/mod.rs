//! execution (being written)
