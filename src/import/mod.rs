//! Turning exported framebuffers into something drawable: CPU mappings and conversion.

#[cfg(feature = "egl")]
pub mod egl;
