//! cnb (being written)
