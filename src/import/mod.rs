//! Turning exported framebuffers into something drawable: CPU mappings and conversion
//! (gl=off), EGL images (gl=on).

pub mod convert;
pub mod cpu;
pub mod dmabuf;
#[cfg(feature = "egl")]
pub mod egl;

pub use cpu::{CpuMapping, CpuPath};
