//! Writeback capture: what a CRTC shows, written into a framebuffer (vkms Writeback-1).
//! The tests read the scanout back this way; the quirk probe too.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, property, AtomicCommitFlags,
    Device as ControlDevice,
};
use drm::ClientCapability;

use crate::sys::dmabuf::DmaBuf;

use super::card::{import_xrgb8888, Card, Dumb, Fb, Gem};
use super::error::{ioctl, KmsError};
use super::pipe::{connector_name, Props};

/// A writeback connector and the properties a capture sets.
#[derive(Debug, Clone)]
pub struct Writeback {
    connector: connector::Handle,
    name: String,
    crtc_id: property::Handle,
    fb_id: property::Handle,
    out_fence: property::Handle,
}

/// A framebuffer a writeback job writes into (XRGB8888): a dumb buffer, or an imported
/// dma-buf (a udmabuf, so the caller reads it through its memfd).
#[derive(Debug)]
pub struct WritebackTarget {
    fb: Fb,
    _gem: Option<Gem>,
    dumb: Option<Dumb>,
    size: (u32, u32),
    stride: u32,
}

impl WritebackTarget {
    /// A dumb buffer of `width`×`height`.
    pub fn dumb(card: &Card, width: u32, height: u32) -> Result<Self, KmsError> {
        let dumb = Dumb::new(card, width, height)?;
        let fb = dumb.add_fb()?;
        let stride = dumb.pitch();
        Ok(Self {
            fb,
            _gem: None,
            dumb: Some(dumb),
            size: (width, height),
            stride,
        })
    }

    /// `dmabuf` (XRGB8888, `stride` bytes per row) imported with PRIME.
    pub fn from_dmabuf(
        card: &Card,
        dmabuf: &DmaBuf,
        width: u32,
        height: u32,
        stride: u32,
    ) -> Result<Self, KmsError> {
        let (fb, gem) = import_xrgb8888(card, dmabuf, (width, height), stride, "writeback target")?;
        Ok(Self {
            fb,
            _gem: Some(gem),
            dumb: None,
            size: (width, height),
            stride,
        })
    }

    /// The framebuffer.
    pub fn framebuffer(&self) -> framebuffer::Handle {
        self.fb.handle
    }

    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// Bytes per row.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// A dumb target's bytes (`None` for an imported dma-buf: read its memfd instead).
    pub fn read_dumb(&self) -> Result<Option<Vec<u8>>, KmsError> {
        match &self.dumb {
            Some(dumb) => dumb.read_back().map(Some),
            None => Ok(None),
        }
    }
}

impl Writeback {
    /// Finds the first writeback connector (enables the client capability first).
    pub fn find(card: &Card) -> Result<Self, KmsError> {
        card.enable_atomic()?;
        drm::Device::set_client_capability(card, ClientCapability::WritebackConnectors, true)
            .map_err(|source| KmsError::ClientCap {
                path: card.path().to_path_buf(),
                cap: "WRITEBACK_CONNECTORS",
                source,
            })?;
        let resources = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
        for &handle in resources.connectors() {
            let info = card
                .get_connector(handle, false)
                .map_err(ioctl(format!("DRM_IOCTL_MODE_GETCONNECTOR {handle:?}")))?;
            if info.interface() != connector::Interface::Writeback {
                continue;
            }
            let props = Props::of(card, handle, "connector")?;
            return Ok(Self {
                connector: handle,
                name: connector_name(&info),
                crtc_id: props.handle("CRTC_ID")?,
                fb_id: props.handle("WRITEBACK_FB_ID")?,
                out_fence: props.handle("WRITEBACK_OUT_FENCE_PTR")?,
            });
        }
        Err(KmsError::NoWriteback {
            path: card.path().to_path_buf(),
        })
    }

    /// The connector's name (`Writeback-1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Captures what `crtc` shows into `target` and waits (up to `timeout`) for the
    /// out-fence. The CRTC must be active; the connector is routed to it (a modeset the
    /// first time).
    pub fn capture(
        &self,
        card: &Card,
        crtc: crtc::Handle,
        target: &WritebackTarget,
        timeout: Duration,
    ) -> Result<(), KmsError> {
        let fence = Box::new(AtomicI32::new(-1));
        let mut req = AtomicModeReq::new();
        req.add_property(
            self.connector,
            self.crtc_id,
            property::Value::CRTC(Some(crtc)),
        );
        req.add_property(
            self.connector,
            self.fb_id,
            property::Value::Framebuffer(Some(target.fb.handle)),
        );
        // The kernel writes the sync-file fd into this i32 during the commit.
        req.add_raw_property(self.connector.into(), self.out_fence, fence.as_ptr() as u64);
        card.commit(
            AtomicCommitFlags::ALLOW_MODESET,
            req,
            &format!(
                "writeback commit {} → FB {:?} on CRTC {crtc:?}",
                self.name, target.fb.handle
            ),
        )?;
        let raw = fence.load(Ordering::SeqCst);
        let start = Instant::now();
        let Some(fence) = crate::sys::adopt_kernel_fd(raw) else {
            return Err(KmsError::WritebackTimeout {
                fb: target.fb.handle.into(),
                waited_ms: 0,
            });
        };
        let done = crate::sys::poll_readable(fence.as_fd(), timeout)
            .map_err(ioctl("poll on writeback fence"))?;
        if !done {
            return Err(KmsError::WritebackTimeout {
                fb: target.fb.handle.into(),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        Ok(())
    }
}
