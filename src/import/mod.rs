//! Turning exported framebuffers into something drawable: CPU mappings and conversion
//! (gl=off), EGL images (gl=on).

pub mod convert;
pub mod cpu;
#[cfg(feature = "egl")]
pub mod egl;

pub use cpu::{CpuMapping, CpuPath};
