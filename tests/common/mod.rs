//! Helpers shared by the integration tests (each test binary uses a part of them).
#![allow(dead_code)]

#[cfg(feature = "qemu")]
pub mod qemu;
pub mod soak;
pub mod weston;

use std::path::{Path, PathBuf};

/// Whether a guest-tier test can run here: true when `/dev/udmabuf` exists.
///
/// Outside the guest the test is skipped with a `SKIP` line on stderr, unless
/// `GUESTFB_REQUIRE_GUEST=1` (set by `scripts/test.sh` for the guest tier), where a
/// missing device is a failure: a broken harness must never look green.
pub fn require_guest(test: &str) -> bool {
    if Path::new("/dev/udmabuf").exists() {
        return true;
    }
    if std::env::var("GUESTFB_REQUIRE_GUEST").as_deref() == Ok("1") {
        panic!(
            "guest tier test {test} ran outside the guest (no /dev/udmabuf) while \
             GUESTFB_REQUIRE_GUEST=1; run it through scripts/guest/run.sh"
        );
    }
    eprintln!("SKIP {test}: needs /dev/udmabuf; run scripts/test.sh (guest tier)");
    false
}

/// The path of example `name`, built beside the test binaries
/// (target/<profile>/deps/<test> → target/<profile>/examples/<name>). Panics if it is
/// missing: scripts/test.sh builds the examples before the tests.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --all-features --examples`",
        path.display()
    );
    path
}
