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
    let mut nodes: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| !path.is_dir())
        .collect();
    nodes.sort();
    nodes
        .iter()
        .map(|node| json!({ "node": node, "driver": drm_driver(node) }))
        .collect()
}

/// The DRM driver's name (DRM_IOCTL_VERSION).
#[cfg(feature = "kms")]
fn drm_driver(node: &std::path::Path) -> Option<String> {
    use drm::Device;
    let card = guestfb::present::kms::Card::open(node).ok()?;
    let driver = card.get_driver().ok()?;
    Some(driver.name().to_string_lossy().into_owned())
}

#[cfg(not(feature = "kms"))]
fn drm_driver(_: &std::path::Path) -> Option<String> {
    None
}

/// Headless EGL: which platform, and which dma-buf formats import (gl=on needs them).
#[cfg(feature = "egl")]
fn egl_facts() -> serde_json::Value {
    use guestfb::format::fourcc_name;
    use guestfb::import::egl::{EglImporter, Platform};
    match EglImporter::headless() {
        Err(error) => json!({ "available": false, "error": error.to_string() }),
        Ok(importer) => {
            let platform = match importer.platform() {
                Platform::Wayland => "wayland".to_owned(),
                Platform::Device { software: true, .. } => "device (software)".to_owned(),
                Platform::Device { .. } => "device".to_owned(),
                Platform::Surfaceless => "surfaceless".to_owned(),
            };
            let formats: Vec<String> = importer
                .formats()
                .keys()
                .map(|&code| fourcc_name(code))
                .collect();
            json!({
                "available": true,
                "platform": platform,
                "external_textures": importer.has_external_textures(),
                "dmabuf_formats": formats,
            })
        }
    }
}

#[cfg(not(feature = "egl"))]
fn egl_facts() -> serde_json::Value {
    json!({ "available": false, "error": "built without the egl feature" })
}

/// The compositor's globals (which presenters can work: wl_shm, linux-dmabuf, viewporter).
#[cfg(feature = "wayland")]
fn wayland_facts() -> serde_json::Value {
    use wayland_client::globals::{registry_queue_init, GlobalListContents};
    use wayland_client::protocol::wl_registry::{self, WlRegistry};
    use wayland_client::{Connection, Dispatch, QueueHandle};

    struct Registry;
    impl Dispatch<WlRegistry, GlobalListContents> for Registry {
        fn event(
            _: &mut Self,
            _: &WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    let connection = match Connection::connect_to_env() {
        Ok(connection) => connection,
        Err(error) => return json!({ "available": false, "error": error.to_string() }),
    };
    match registry_queue_init::<Registry>(&connection) {
        Err(error) => json!({ "available": false, "error": error.to_string() }),
        Ok((globals, _queue)) => {
            let mut list: Vec<(String, u32)> = globals.contents().with_list(|list| {
                list.iter()
                    .map(|global| (global.interface.clone(), global.version))
                    .collect()
            });
            list.sort();
            list.dedup();
            let has = |name: &str| list.iter().any(|(interface, _)| interface == name);
            json!({
                "available": true,
                "shm": has("wl_shm"),
                "linux_dmabuf": list.iter().find(|(i, _)| i == "zwp_linux_dmabuf_v1").map(|(_, v)| v),
                "viewporter": has("wp_viewporter"),
                "globals": list.iter().map(|(i, v)| format!("{i} v{v}")).collect::<Vec<_>>(),
            })
        }
    }
}

#[cfg(not(feature = "wayland"))]
fn wayland_facts() -> serde_json::Value {
    json!({ "available": false, "error": "built without the wayland feature" })
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
        "egl": egl_facts(),
        "wayland": wayland_facts(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("JSON of plain values")
    );
}
