//! Putting frames on a screen: wl_shm, GL, KMS.

#[cfg(feature = "egl")]
pub mod gl;
#[cfg(feature = "wayland")]
pub mod wayland;
