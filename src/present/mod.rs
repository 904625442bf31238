//! Putting frames on a screen: wl_shm, GL, KMS.

#[cfg(feature = "kms")]
pub mod kms;
