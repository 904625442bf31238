//! Putting frames on a screen: wl_shm, GL, KMS.
