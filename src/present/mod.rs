//! Putting frames on a screen: wl_shm and EGL windows (Wayland), GL drawing, KMS.

#[cfg(feature = "egl")]
pub mod gl;
#[cfg(feature = "kms")]
pub mod kms;
#[cfg(feature = "wayland")]
pub mod wayland;
