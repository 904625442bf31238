//! Turning exported framebuffers into something drawable: CPU mappings and conversion.

pub mod convert;
