//! Host tier: the probe example prints a JSON report that matches this machine.

mod common;

#[test]
fn probe_example_prints_this_machines_facts() {
    let probe = common::example_binary("probe");
    let output = std::process::Command::new(&probe)
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kernel"], guestfb::sys::kernel_release());
    let udmabuf = std::path::Path::new("/dev/udmabuf").exists();
    assert_eq!(report["udmabuf"]["present"], udmabuf);
    if !udmabuf {
        assert_eq!(report["pin"]["longterm_pin"]["kind"], "no_udmabuf");
        assert_eq!(report["cpu_read_path"], "memfd_direct");
    }
    let pools = guestfb::sys::hugetlb::pools();
    assert_eq!(
        report["hugetlb_pools"].as_array().unwrap().len(),
        pools.len()
    );
    assert_eq!(report["wayland"]["available"], false);
    #[cfg(feature = "egl")]
    {
        // Mesa's software device imports dma-bufs (Mesa 25, from the setup).
        assert_eq!(report["egl"]["available"], true, "{}", report["egl"]);
        let formats = report["egl"]["dmabuf_formats"].as_array().unwrap();
        assert!(formats.iter().any(|format| format == "XR24"));
    }
}
