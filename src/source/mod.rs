//! Where frames come from: the built-in demo guest, later real VMMs.

pub mod demo;
