//! Guest tier: KMS scanout on vkms (/dev/dri/card1, Virtual-1 at 1024×768), read back
//! pixel for pixel through the Writeback-1 connector.
#![cfg(feature = "kms")]

mod common;

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestfb::export::{DiscardMode, Exporter, PinManager, PinPolicy, PinPurpose};
use guestfb::format::PixelFormat;
use guestfb::present::kms::{
    Card, CopyReason, KmsPresenter, Released, ScanoutPath, Writeback, WritebackTarget,
};
use guestfb::source::demo::{self, DemoConfig, DemoGuest};
use guestfb::sys::dmabuf::{Access, DmaBuf, Mapping};
use guestfb::sys::memfd::{Memfd, Seals};
use guestfb::sys::udmabuf::{Range, Udmabuf};

const VKMS: &str = "/dev/dri/card1";
const WIDTH: u32 = 1024;
const HEIGHT: u32 = 768;

fn unlimited() -> PinPolicy {
    PinPolicy {
        budget: u64::MAX,
        allow_without_longterm: false,
    }
}

/// A writeback target in a udmabuf of a 4 KiB-page memfd, read through the memfd.
struct Capture {
    memfd: Memfd,
    _dmabuf: DmaBuf,
    target: WritebackTarget,
    writeback: Writeback,
}

impl Capture {
    fn new(card: &Card) -> Self {
        let len = u64::from(WIDTH * 4 * HEIGHT);
        let memfd = Memfd::create("guestfb-writeback").unwrap();
        memfd.set_size(len).unwrap();
        memfd.add_seals(Seals::SHRINK | Seals::GROW).unwrap();
        let dmabuf = Udmabuf::open()
            .unwrap()
            .create(Range {
                memfd: memfd.as_fd(),
                offset: 0,
                size: len,
            })
            .unwrap();
        let target = WritebackTarget::from_dmabuf(card, &dmabuf, WIDTH, HEIGHT, WIDTH * 4).unwrap();
        let writeback = Writeback::find(card).unwrap();
        assert_eq!(writeback.name(), "Writeback-1");
        Self {
            memfd,
            _dmabuf: dmabuf,
            target,
            writeback,
        }
    }

    /// Captures what the presenter's CRTC shows; the target is poisoned first.
    fn take(&self, presenter: &KmsPresenter) -> Vec<u8> {
        let len = (WIDTH * 4 * HEIGHT) as usize;
        let map = Mapping::new(self.memfd.as_fd(), 0, len, Access::ReadWrite).unwrap();
        map.bytes_mut().unwrap().fill(0x5A);
        self.writeback
            .capture(
                presenter.card(),
                presenter.crtc(),
                &self.target,
                Duration::from_secs(20),
            )
            .unwrap();
        map.bytes().to_vec()
    }
}

/// Asserts `captured` (XRGB8888, 1024×768) shows demo frame `frame` exactly.
fn assert_demo_frame(captured: &[u8], frame: u64, what: &str) {
    let mut wrong = 0usize;
    let mut first = None;
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let at = ((y * WIDTH + x) * 4) as usize;
            let got = [captured[at + 2], captured[at + 1], captured[at]];
            let want = demo::pattern_rgb(WIDTH, HEIGHT, frame, x, y);
            if got != want {
                wrong += 1;
                first.get_or_insert((x, y, got, want));
            }
        }
    }
    assert_eq!(
        wrong, 0,
        "{what}: {wrong} of {} pixels differ from demo frame {frame}; first (x, y, got, want) = {first:?}",
        WIDTH * HEIGHT
    );
}

fn demo_guest(format: PixelFormat, hugetlb: Option<u64>) -> DemoGuest {
    DemoGuest::new(DemoConfig {
        width: WIDTH,
        height: HEIGHT,
        format,
        hugetlb,
        ..DemoConfig::default()
    })
    .unwrap()
}

fn presenter(exporter: &Exporter) -> KmsPresenter {
    KmsPresenter::new(
        Card::open(VKMS).unwrap(),
        Some("Virtual-1"),
        exporter.pins(),
    )
    .unwrap()
}

#[test]
fn direct_scanout_and_page_flip_are_pixel_exact() {
    if !common::require_guest("direct_scanout_and_page_flip_are_pixel_exact") {
        return;
    }
    let mut guest = demo_guest(PixelFormat::Xrgb8888, None);
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let mut presenter = presenter(&exporter);
    assert_eq!(presenter.mode_size(), (WIDTH, HEIGHT));
    let capture = Capture::new(presenter.card());

    let first = exporter
        .export(1, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let status = presenter.present(&first).unwrap();
    assert_eq!(status.path, ScanoutPath::Direct);
    assert!(!status.scaled && !status.without_longterm_pin);
    assert_eq!(
        presenter.plane_framebuffer().unwrap(),
        presenter.current_framebuffer()
    );
    assert_demo_frame(&capture.take(&presenter), 0, "first frame (modeset)");

    // The guest draws frame 1; a new export of the buffer is page-flipped in.
    guest.step();
    let second = exporter
        .export(1, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let fb_before = presenter.current_framebuffer();
    let status = presenter.present(&second).unwrap();
    assert_eq!((status.generation, status.path), (2, ScanoutPath::Direct));
    assert_ne!(presenter.current_framebuffer(), fb_before);
    assert_eq!(
        presenter.plane_framebuffer().unwrap(),
        presenter.current_framebuffer()
    );
    assert_demo_frame(&capture.take(&presenter), 1, "second frame (page flip)");
    presenter.shutdown().unwrap();
}

#[test]
fn copy_path_converts_a_format_the_plane_lacks() {
    if !common::require_guest("copy_path_converts_a_format_the_plane_lacks") {
        return;
    }
    // vkms's primary plane takes ARGB8888, XRGB8888, XRGB16161616, ARGB16161616, RGB565.
    let mut guest = demo_guest(PixelFormat::Bgr888, None);
    guest.step();
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let mut presenter = presenter(&exporter);
    let capture = Capture::new(presenter.card());
    let export = exporter
        .export(3, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let status = presenter.present(&export).unwrap();
    assert_eq!(status.path, ScanoutPath::Copy(CopyReason::FormatNotOnPlane));
    // The automatic fill is GL (headless EGL in the guest); llvmpipe does not import
    // BGR888, so the frame falls back to the CPU fill, and the log says why.
    assert_eq!(status.fill, Some("cpu"));
    eprintln!("copy path log: {:?}", presenter.log());
    // The scanout buffer is a gbm buffer object: Mesa's GBM in software (kms_swrast)
    // on vkms' card node, no GPU (GBM_ALWAYS_SOFTWARE is not even needed).
    assert!(
        presenter
            .log()
            .iter()
            .any(|line| line.contains("copy path: gbm buffer object")),
        "{:?}",
        presenter.log()
    );
    assert_demo_frame(&capture.take(&presenter), 1, "BGR888 through the copy path");
    #[cfg(feature = "egl")]
    if presenter.fill_name() == "gl" {
        assert!(
            presenter
                .log()
                .iter()
                .any(|line| line.contains("GL fill failed") && line.contains("CPU fill")),
            "{:?}",
            presenter.log()
        );
        // A second frame of the same format goes straight to the CPU fill, and the log
        // does not grow.
        let lines = presenter.log().len();
        guest.step();
        let export = exporter
            .export(3, &guest.desc(), PinPurpose::Scanout)
            .unwrap();
        let status = presenter.present(&export).unwrap();
        assert_eq!(status.fill, Some("cpu"));
        assert_demo_frame(&capture.take(&presenter), 2, "BGR888, second frame");
        assert_eq!(presenter.log().len(), lines, "{:?}", presenter.log());
    }
    presenter.shutdown().unwrap();
}

#[test]
fn hugetlb_vmap_quirk_is_found_and_avoided() {
    if !common::require_guest("hugetlb_vmap_quirk_is_found_and_avoided") {
        return;
    }
    let guest = demo_guest(PixelFormat::Xrgb8888, Some(2 << 20));
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let mut presenter = presenter(&exporter);
    let found = presenter.probe_vmap_quirk().unwrap();
    eprintln!(
        "kernel {}: hugetlb vmap quirk present = {found}",
        exporter.pins().semantics().kernel
    );
    assert!(
        found,
        "the 6.12 guest kernel's vmap_udmabuf ignores folio offsets: the probe must see it"
    );
    assert!(presenter.avoids_hugetlb_scanout());
    let capture = Capture::new(presenter.card());
    let export = exporter
        .export(5, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let status = presenter.present(&export).unwrap();
    assert_eq!(status.path, ScanoutPath::Copy(CopyReason::HugetlbVmapQuirk));
    assert!(presenter
        .log()
        .iter()
        .any(|line| line.contains("HugetlbVmapQuirk")));
    assert_demo_frame(
        &capture.take(&presenter),
        0,
        "hugetlb export via the copy path",
    );
    presenter.shutdown().unwrap();
}

#[test]
fn revoke_moves_the_plane_off_before_the_discard() {
    if !common::require_guest("revoke_moves_the_plane_off_before_the_discard") {
        return;
    }
    let guest = demo_guest(PixelFormat::Xrgb8888, None);
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let presenter = Arc::new(Mutex::new(presenter(&exporter)));
    let capture = Capture::new(presenter.lock().unwrap().card());
    let export = exporter
        .export(9, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    presenter.lock().unwrap().present(&export).unwrap();
    let shown_fb = presenter.lock().unwrap().current_framebuffer();
    assert!(shown_fb.is_some());
    assert_demo_frame(
        &capture.take(&presenter.lock().unwrap()),
        0,
        "before the revoke",
    );
    assert!(exporter.pins().pinned_bytes() > 0);

    // The listener releases the plane; it records what the kernel shows at that moment,
    // and whether the guest memory was still intact (the hole not punched yet).
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let presenter = presenter.clone();
        let seen = seen.clone();
        let memfd = guest.memfd().clone();
        exporter.pins().on_revoke(move |revocation| {
            let mut presenter = presenter.lock().unwrap();
            let released = presenter.release(revocation.buffer_id, revocation.generation);
            let on_plane = presenter.plane_framebuffer();
            let mut probe = [0u8; 4];
            let map =
                Mapping::new(memfd.as_fd(), demo::FRAMEBUFFER_BASE, 4096, Access::Read).unwrap();
            map.bytes().read_at(0, &mut probe).unwrap();
            seen.lock().unwrap().push((
                released.map_err(|e| e.to_string()),
                on_plane.map_err(|e| e.to_string()),
                probe,
            ));
        });
    }
    let fb_len = u64::from(guest.stride()) * u64::from(HEIGHT);
    let report = exporter
        .pins()
        .discard(
            guest.memfd(),
            demo::FRAMEBUFFER_BASE,
            fb_len,
            DiscardMode::Revoke,
        )
        .unwrap();
    assert_eq!(report.revoked.len(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (released, on_plane, probe) = &seen[0];
    assert_eq!(released.as_ref().unwrap(), &Released::MovedToBlack);
    let on_plane = on_plane.as_ref().unwrap();
    assert_ne!(
        on_plane, &shown_fb,
        "the plane still scanned the revoked buffer"
    );
    assert!(on_plane.is_some(), "the plane shows the black buffer");
    // The first framebuffer pixel keeps the guest's colour until the hole is punched.
    let (width, height) = (guest.config().width, guest.config().height);
    let [r, g, b] = demo::pattern_rgb(width, height, guest.frame(), 0, 0);
    assert_eq!(probe[..3], [b, g, r], "the listener ran after the discard");
    assert_eq!(exporter.pins().pinned_bytes(), 0);
    assert_eq!(exporter.pins().pin_count(), 0);
    assert!(export.is_revoked());

    // The screen is black, the presenter goes on with a fresh export.
    let presenter_guard = presenter.lock().unwrap();
    let black = capture.take(&presenter_guard);
    assert!(
        black.chunks_exact(4).all(|pixel| pixel[..3] == [0, 0, 0]),
        "after release the CRTC shows black"
    );
    drop(presenter_guard);
    let mut presenter = presenter.lock().unwrap();
    assert!(
        presenter.present(&export).is_err(),
        "a revoked export is refused"
    );
    presenter.shutdown().unwrap();
}

#[cfg(feature = "egl")]
fn gl_demo_guest(format: PixelFormat, hugetlb: Option<u64>, y0_top: bool) -> DemoGuest {
    DemoGuest::new(DemoConfig {
        width: WIDTH,
        height: HEIGHT,
        format,
        hugetlb,
        y0_top,
        ..DemoConfig::default()
    })
    .unwrap()
}

#[cfg(feature = "egl")]
#[test]
fn gl_fill_draws_formats_the_plane_lacks_exactly() {
    use guestfb::present::kms::GlFill;
    if !common::require_guest("gl_fill_draws_formats_the_plane_lacks_exactly") {
        return;
    }
    // XBGR8888 / ABGR8888 are not on vkms's primary plane but llvmpipe imports them.
    for (format, y0_top) in [
        (PixelFormat::Xbgr8888, true),
        (PixelFormat::Abgr8888, true),
        (PixelFormat::Xbgr8888, false),
    ] {
        let what = format!("{format} y0_top={y0_top}");
        let mut guest = gl_demo_guest(format, None, y0_top);
        let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
        let mut presenter = presenter(&exporter);
        presenter.set_fill(Box::new(GlFill::new().expect("headless EGL in the guest")));
        let capture = Capture::new(presenter.card());
        for frame in 0..2u64 {
            let export = exporter
                .export(11, &guest.desc(), PinPurpose::Scanout)
                .unwrap();
            let status = presenter.present(&export).unwrap();
            eprintln!(
                "{what} frame {frame}: {status:?}; log {:?}",
                presenter.log()
            );
            assert!(
                matches!(status.path, ScanoutPath::Copy(_)),
                "{what}: {status:?}"
            );
            assert_eq!(status.fill, Some("gl"), "{what}: {:?}", presenter.log());
            assert_demo_frame(
                &capture.take(&presenter),
                frame,
                &format!("{what} through the GL fill, frame {frame}"),
            );
            guest.step();
        }
        presenter.shutdown().unwrap();
    }
}

#[cfg(feature = "egl")]
#[test]
fn gl_fill_is_the_default_and_reported() {
    if !common::require_guest("gl_fill_is_the_default_and_reported") {
        return;
    }
    let guest = gl_demo_guest(PixelFormat::Xbgr8888, None, true);
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let mut presenter = presenter(&exporter);
    assert_eq!(
        presenter.fill_name(),
        "cpu",
        "nothing chosen before a copy frame"
    );
    let capture = Capture::new(presenter.card());
    let export = exporter
        .export(12, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let status = presenter.present(&export).unwrap();
    eprintln!("default fill: {status:?}; log {:?}", presenter.log());
    assert_eq!(status.path, ScanoutPath::Copy(CopyReason::FormatNotOnPlane));
    assert_eq!(presenter.fill_name(), "gl");
    assert_eq!(status.fill, Some("gl"));
    assert!(presenter
        .log()
        .iter()
        .any(|line| line.starts_with("copy path fill: gl")));
    assert_demo_frame(&capture.take(&presenter), 0, "XBGR8888, default fill");
    presenter.shutdown().unwrap();
}

#[cfg(feature = "egl")]
#[test]
fn gl_fill_avoids_the_hugetlb_vmap_quirk_exactly() {
    use guestfb::present::kms::GlFill;
    if !common::require_guest("gl_fill_avoids_the_hugetlb_vmap_quirk_exactly") {
        return;
    }
    let guest = gl_demo_guest(PixelFormat::Xrgb8888, Some(2 << 20), true);
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let mut presenter = presenter(&exporter);
    assert!(presenter.probe_vmap_quirk().unwrap());
    presenter.set_fill(Box::new(GlFill::new().expect("headless EGL in the guest")));
    let capture = Capture::new(presenter.card());
    let export = exporter
        .export(13, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let status = presenter.present(&export).unwrap();
    eprintln!("hugetlb GL fill: {status:?}; log {:?}", presenter.log());
    assert_eq!(status.path, ScanoutPath::Copy(CopyReason::HugetlbVmapQuirk));
    assert_eq!(status.fill, Some("gl"));
    assert_demo_frame(
        &capture.take(&presenter),
        0,
        "hugetlb export through the GL fill",
    );
    presenter.shutdown().unwrap();
}

/// A second opener of the card is not DRM master: its commits fail with a typed error
/// naming the card, not a bare EACCES, while the master's scanout goes on.
#[test]
fn a_presenter_without_drm_master_gets_a_clear_error() {
    if !common::require_guest("a_presenter_without_drm_master_gets_a_clear_error") {
        return;
    }
    let guest = demo_guest(PixelFormat::Xrgb8888, None);
    let exporter = Exporter::new(guest.memory().clone(), PinManager::new(unlimited()));
    let export = exporter
        .export(1, &guest.desc(), PinPurpose::Scanout)
        .unwrap();
    let mut master = presenter(&exporter);
    master.present(&export).unwrap();
    let mut second = presenter(&exporter);
    let error = second.present(&export).unwrap_err();
    assert!(
        matches!(error, guestfb::present::kms::KmsError::MasterLost { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("/dev/dri/card1"), "{text}");
    // The master still flips.
    master.present(&export).unwrap();
    drop(second);
    master.shutdown().unwrap();
}
