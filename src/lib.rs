//! guestfb shows a virtual machine's framebuffer on a Linux host without copying it.
//!
//! Data flows through the modules in one direction:
//! [`sys`] (kernel interfaces) → [`export`] (guest memory, framebuffer descriptions, pin
//! manager) → [`import`] (CPU mapping, conversion, EGL) → [`present`] (wl_shm, GL, KMS).
//! [`source`] produces frames (the built-in demo guest, QEMU's D-Bus display). Lower
//! layers never use upper ones.
#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod export;
pub mod format;
pub mod import;
pub mod present;
pub mod rect;
pub mod source;
pub mod sys;
#[cfg(feature = "testing")]
pub mod testing;
