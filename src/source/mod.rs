//! Where frames come from: the built-in demo guest, and QEMU's D-Bus display
//! (feature `qemu`).

pub mod demo;
#[cfg(feature = "qemu")]
pub mod qemu;
