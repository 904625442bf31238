//! Turning exported framebuffers into something drawable: CPU mappings and conversion.

pub mod cpu;

pub use cpu::{CpuMapping, CpuPath};
