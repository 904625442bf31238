//! Host EGL tests (llvmpipe): import memfds as dma-bufs, render, read back.
#![cfg(feature = "egl")]

use guestfb::import::egl::{fourcc_name, EglImporter};

#[test]
fn probe_prints_formats() {
    let importer = EglImporter::headless().expect("headless EGL");
    eprintln!("{importer:?}");
    for (code, mods) in importer.formats() {
        eprintln!("{} {:x?}", fourcc_name(*code), mods);
    }
}
