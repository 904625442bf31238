//! Host tier: the export layer without /dev/udmabuf. Exports map the guest's memfds
//! directly (the gl=off fallback), and the lease, revoke and generation rules still
//! hold.

use std::sync::Arc;

use guestfb::export::{
    DiscardMode, ExportError, Exporter, GuestMemory, LongtermPin, PinManager, PinPolicy, PinPurpose,
};
use guestfb::format::{PixelFormat, ALL_FORMATS};
use guestfb::import::{CpuMapping, CpuPath};
use guestfb::source::demo::{pattern_rgb, DemoConfig, DemoGuest, BARS};

fn exporter(guest: &DemoGuest) -> Exporter {
    Exporter::new(
        guest.memory().clone(),
        PinManager::new(PinPolicy::default()),
    )
}

fn host_only() -> bool {
    // On the guest tier these run too, but through the udmabuf path instead.
    !std::path::Path::new("/dev/udmabuf").exists()
}

#[test]
fn demo_guest_pixels_read_back_through_the_memfd_path() {
    let guest = DemoGuest::new(DemoConfig {
        width: 1001,
        height: 667,
        stride_padding: 36,
        ..DemoConfig::default()
    })
    .unwrap();
    let exporter = exporter(&guest);
    if host_only() {
        assert_eq!(
            exporter.pins().semantics().longterm_pin,
            LongtermPin::NoUdmabuf
        );
    }
    let export = exporter
        .export(1, &guest.desc(), PinPurpose::CpuRead)
        .unwrap();
    let mapping = CpuMapping::new(export);
    if host_only() {
        assert_eq!(mapping.path().unwrap(), CpuPath::MemfdDirect);
    }
    let stride = guest.stride() as usize;
    mapping
        .read(|bytes, layout| {
            assert_eq!(layout.planes()[0].stride as usize, stride);
            for (x, y) in [(0, 0), (1000, 0), (500, 333), (130, 600), (999, 666)] {
                let at = y * stride + x * 4;
                let [r, g, b] = pattern_rgb(1001, 667, 0, x as u32, y as u32);
                assert_eq!(
                    bytes.subslice(at, 4).unwrap().to_vec(),
                    [b, g, r, 0xFF],
                    "pixel {x},{y}"
                );
            }
        })
        .unwrap();
    // Bars, left to right.
    for (index, bar) in BARS.iter().enumerate() {
        let x = (index as u32 * 1001 + 500) / 8;
        let y = 300;
        if !guestfb::source::demo::block_rect(1001, 667, 0).width.eq(&0) {
            let pixel = pattern_rgb(1001, 667, 0, x, y);
            if pixel != [255, 255, 255] || *bar == [255, 255, 255] {
                assert_eq!(&pixel, bar, "bar {index}");
            }
        }
    }
}

#[test]
fn scattered_framebuffer_reads_like_a_contiguous_one() {
    for format in ALL_FORMATS {
        let config = DemoConfig {
            width: 320,
            height: 200,
            format,
            stride_padding: 8,
            ..DemoConfig::default()
        };
        let plain = DemoGuest::new(config).unwrap();
        let scattered = DemoGuest::new(DemoConfig {
            scattered: true,
            ..config
        })
        .unwrap();
        assert_eq!(scattered.desc().ranges.len(), 2, "{format}");
        assert!(scattered.desc().ranges[0].addr > scattered.desc().ranges[1].addr);
        let read = |guest: &DemoGuest| {
            let export = exporter(guest)
                .export(1, &guest.desc(), PinPurpose::CpuRead)
                .unwrap();
            let len = guest
                .desc()
                .ranges
                .iter()
                .map(|range| range.len)
                .sum::<u64>() as usize;
            CpuMapping::new(export)
                .read(|bytes, _| bytes.subslice(0, len).unwrap().to_vec())
                .unwrap()
        };
        assert!(
            read(&plain) == read(&scattered),
            "{format}: scattered bytes differ"
        );
    }
}

#[test]
fn discard_refuses_then_revokes_and_generations_advance() {
    let guest = DemoGuest::new(DemoConfig::default()).unwrap();
    let exporter = exporter(&guest);
    let export = exporter
        .export(5, &guest.desc(), PinPurpose::CpuRead)
        .unwrap();
    let mapping = CpuMapping::new(export.clone());
    let fb_start = guest.desc().ranges[0].addr;
    let refused = exporter
        .pins()
        .discard(guest.memfd(), fb_start, 4096, DiscardMode::Refuse);
    assert!(
        matches!(refused, Err(ExportError::RangePinned { .. })),
        "{refused:?}"
    );
    assert_ne!(
        mapping
            .read(|bytes, _| bytes.subslice(0, 4).unwrap().to_vec())
            .unwrap(),
        vec![0; 4]
    );

    let report = exporter
        .pins()
        .discard(guest.memfd(), fb_start, 4096, DiscardMode::Revoke)
        .unwrap();
    assert_eq!(report.revoked.len(), 1);
    assert!(matches!(
        mapping.read(|_, _| ()),
        Err(ExportError::Revoked {
            buffer_id: 5,
            generation: 1
        })
    ));
    let again = exporter
        .export(5, &guest.desc(), PinPurpose::CpuRead)
        .unwrap();
    assert_eq!(again.generation(), 2);
    // The punched page reads as zeros through the new export.
    assert_eq!(
        CpuMapping::new(again)
            .read(|bytes, _| bytes.subslice(0, 4).unwrap().to_vec())
            .unwrap(),
        vec![0; 4]
    );
    assert!(matches!(
        exporter
            .pins()
            .discard(guest.memfd(), u64::MAX - 10, 4096, DiscardMode::Revoke),
        Err(ExportError::DiscardOutside { .. })
    ));
}

#[test]
fn hugetlb_guest_ram_is_detected_and_readable() {
    let pool = guestfb::sys::hugetlb::pool(2 << 20);
    let free = pool.map_or(0, |pool| pool.free);
    assert!(
        free >= 2,
        "host tier needs at least 2 free 2 MiB hugepages (scripts/test.sh reserves them; \
         /proc/sys/vm/nr_hugepages); pool: {pool:?}"
    );
    let guest = DemoGuest::new(DemoConfig {
        hugetlb: Some(2 << 20),
        width: 256,
        height: 128,
        ..DemoConfig::default()
    })
    .unwrap();
    assert!(guest.memfd().is_hugetlb());
    assert_eq!(guest.memfd().page_size(), 2 << 20);
    let export = exporter(&guest)
        .export(1, &guest.desc(), PinPurpose::CpuRead)
        .unwrap();
    let first = CpuMapping::new(export)
        .read(|bytes, _| bytes.subslice(0, 4).unwrap().to_vec())
        .unwrap();
    let [r, g, b] = pattern_rgb(256, 128, 0, 0, 0);
    assert_eq!(first, vec![b, g, r, 0xFF]);
}

#[test]
fn unused_memory_map_rejects_bad_descriptions() {
    let memory = Arc::new(GuestMemory::new());
    let exporter = Exporter::new(memory, PinManager::new(PinPolicy::default()));
    let desc = guestfb::export::FramebufferDesc::packed(PixelFormat::Xrgb8888, 64, 64, 256, 0);
    assert!(matches!(
        exporter.export(1, &desc, PinPurpose::CpuRead),
        Err(ExportError::OutsideGuestMemory { .. })
    ));
}
