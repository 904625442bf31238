//! Prints what this machine offers guestfb, as JSON: kernel, udmabuf and its limits,
//! pin semantics, hugetlb pools, DRM devices, the CPU read path, and the display side.
//!
//! `cargo run --example probe`

use guestfb::export::PinManager;
use serde_json::json;

fn drm_devices() -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir("/dev/dri") else {
        return Vec::new();
    };
    let mut devices: Vec<serde_json::Value> = entries
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let driver = std::fs::read_link(format!("/sys/class/drm/{name}/device/driver"))
                .ok()
                .and_then(|link| link.file_name().map(|n| n.to_string_lossy().into_owned()));
            json!({ "node": format!("/dev/dri/{name}"), "driver": driver })
        })
        .collect();
    devices.sort_by_key(|device| device["node"].as_str().unwrap_or_default().to_owned());
    devices
}

fn main() {
    let semantics = PinManager::probe();
    let cpu_path = if semantics.udmabuf_present {
        "udmabuf_mmap"
    } else {
        "memfd_direct"
    };
    let report = json!({
        "kernel": semantics.kernel,
        "page_size": guestfb::sys::page_size(),
        "udmabuf": {
            "present": semantics.udmabuf_present,
            "limits": semantics.limits,
        },
        "pin": semantics,
        "hugetlb_pools": guestfb::sys::hugetlb::pools(),
        "drm_devices": drm_devices(),
        "cpu_read_path": cpu_path,
        "wayland_display": std::env::var("WAYLAND_DISPLAY").ok(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("JSON of plain values")
    );
}
