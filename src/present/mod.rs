//! Putting frames on a screen: wl_shm, GL, KMS.

#[cfg(feature = "wayland")]
pub mod wayland;
