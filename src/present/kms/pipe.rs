//! Properties, the connector → CRTC → primary plane pipe, and the formats and modifiers
//! a plane takes (`IN_FORMATS`).

use std::collections::HashMap;

use drm::buffer::DrmModifier;
use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, AtomicCommitFlags,
    Device as ControlDevice, Mode, ResourceHandle,
};

use crate::format::{Modifier, PixelFormat};

use super::card::{Blob, BlobId, Card};
use super::error::{ioctl, KmsError};
use super::placement::Placement;

/// The properties of one KMS object, by name: (handle, current value).
#[derive(Debug, Clone)]
pub(super) struct Props {
    pub(super) object: &'static str,
    pub(super) id: u32,
    pub(super) by_name: HashMap<String, (property::Handle, u64)>,
}

impl Props {
    pub(super) fn of<H: ResourceHandle>(
        card: &Card,
        handle: H,
        object: &'static str,
    ) -> Result<Self, KmsError> {
        let raw: drm::control::RawResourceHandle = handle.into();
        let id = u32::from(raw);
        let set = card.get_properties(handle).map_err(ioctl(format!(
            "DRM_IOCTL_MODE_OBJ_GETPROPERTIES on {object} {id}"
        )))?;
        let (handles, values) = set.as_props_and_values();
        let mut by_name = HashMap::new();
        for (&prop, &value) in handles.iter().zip(values) {
            let info = card
                .get_property(prop)
                .map_err(ioctl(format!("DRM_IOCTL_MODE_GETPROPERTY {prop:?}")))?;
            by_name.insert(info.name().to_string_lossy().into_owned(), (prop, value));
        }
        Ok(Self {
            object,
            id,
            by_name,
        })
    }

    pub(super) fn handle(&self, name: &'static str) -> Result<property::Handle, KmsError> {
        self.by_name
            .get(name)
            .map(|&(handle, _)| handle)
            .ok_or(KmsError::NoProperty {
                object: self.object,
                id: self.id,
                name,
            })
    }

    pub(super) fn value(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&(_, value)| value)
    }
}

pub(super) fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

/// The first connected connector that is not writeback (or the one named `wanted`).
pub(super) fn find_connector(
    card: &Card,
    wanted: Option<&str>,
) -> Result<connector::Info, KmsError> {
    let resources = card
        .resource_handles()
        .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
    let mut seen = Vec::new();
    for &handle in resources.connectors() {
        let info = card
            .get_connector(handle, false)
            .map_err(ioctl(format!("DRM_IOCTL_MODE_GETCONNECTOR {handle:?}")))?;
        let name = connector_name(&info);
        seen.push(format!("{name}: {:?}", info.state()));
        if info.interface() == connector::Interface::Writeback {
            continue;
        }
        if wanted.is_some_and(|wanted| wanted != name) {
            continue;
        }
        if info.state() == connector::State::Connected && !resources.crtcs().is_empty() {
            return Ok(info);
        }
    }
    Err(KmsError::NoConnector {
        path: card.path().to_path_buf(),
        connectors: seen,
    })
}

/// A CRTC that can drive the connector (its current one if it has one).
pub(super) fn find_crtc(
    card: &Card,
    connector: &connector::Info,
) -> Result<crtc::Handle, KmsError> {
    let resources = card
        .resource_handles()
        .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
    let mut candidates = Vec::new();
    if let Some(encoder) = connector.current_encoder() {
        if let Ok(info) = card.get_encoder(encoder) {
            candidates.extend(info.crtc());
        }
    }
    for &encoder in connector.encoders() {
        if let Ok(info) = card.get_encoder(encoder) {
            candidates.extend(resources.filter_crtcs(info.possible_crtcs()));
        }
    }
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| KmsError::NoCrtc {
            connector: connector_name(connector),
        })
}

/// DRM_PLANE_TYPE_PRIMARY.
pub(super) const PLANE_TYPE_PRIMARY: u64 = 1;

/// One (format, modifier) pair a plane takes, from IN_FORMATS.
pub(super) type FormatModifier = (u32, u64);

/// Parses an IN_FORMATS blob (`struct drm_format_modifier_blob`).
pub(super) fn parse_in_formats(blob: &[u8]) -> Option<Vec<FormatModifier>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(blob.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(blob.get(at..at + 8)?.try_into().ok()?))
    };
    let count_formats = u32_at(8)? as usize;
    let formats_offset = u32_at(12)? as usize;
    let count_modifiers = u32_at(16)? as usize;
    let modifiers_offset = u32_at(20)? as usize;
    let formats: Vec<u32> = (0..count_formats)
        .map(|index| u32_at(formats_offset + index * 4))
        .collect::<Option<_>>()?;
    let mut pairs = Vec::new();
    for index in 0..count_modifiers {
        // struct drm_format_modifier { __u64 formats; __u32 offset; __u32 pad; __u64 modifier; }
        let at = modifiers_offset + index * 24;
        let mask = u64_at(at)?;
        let offset = u32_at(at + 8)? as usize;
        let modifier = u64_at(at + 16)?;
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                if let Some(&format) = formats.get(offset + bit) {
                    pairs.push((format, modifier));
                }
            }
        }
    }
    Some(pairs)
}

/// What a plane takes: IN_FORMATS pairs when the driver has them, else its format list
/// (implicitly linear).
#[derive(Debug, Clone)]
pub(super) struct PlaneFormats {
    pub(super) formats: Vec<u32>,
    pub(super) pairs: Option<Vec<FormatModifier>>,
}

impl PlaneFormats {
    pub(super) fn takes(&self, fourcc: u32, modifier: Modifier) -> bool {
        match (modifier, &self.pairs) {
            (Modifier::Implicit, _) => self.formats.contains(&fourcc),
            (Modifier::Explicit(modifier), Some(pairs)) => {
                pairs.contains(&(fourcc, u64::from(modifier)))
            }
            (Modifier::Explicit(modifier), None) => {
                modifier == DrmModifier::Linear && self.formats.contains(&fourcc)
            }
        }
    }
}

/// The connector → CRTC → primary plane chain the presenter drives.
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) connector: connector::Handle,
    pub(super) connector_name: String,
    pub(super) crtc: crtc::Handle,
    pub(super) plane: plane::Handle,
    pub(super) mode: Mode,
    pub(super) formats: PlaneFormats,
    pub(super) connector_props: Props,
    pub(super) crtc_props: Props,
    pub(super) plane_props: Props,
}

impl Pipe {
    pub(super) fn find(card: &Card, connector: Option<&str>) -> Result<Self, KmsError> {
        card.enable_atomic()?;
        let info = find_connector(card, connector)?;
        let name = connector_name(&info);
        let mode = info
            .modes()
            .iter()
            .find(|mode| {
                mode.mode_type()
                    .contains(drm::control::ModeTypeFlags::PREFERRED)
            })
            .or_else(|| info.modes().first())
            .copied()
            .ok_or_else(|| KmsError::NoMode {
                connector: name.clone(),
            })?;
        let crtc = find_crtc(card, &info)?;
        let resources = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
        let planes = card
            .plane_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETPLANERESOURCES"))?;
        let mut primary = None;
        for handle in planes {
            let plane = card
                .get_plane(handle)
                .map_err(ioctl(format!("DRM_IOCTL_MODE_GETPLANE {handle:?}")))?;
            if !resources
                .filter_crtcs(plane.possible_crtcs())
                .contains(&crtc)
            {
                continue;
            }
            let props = Props::of(card, handle, "plane")?;
            if props.value("type") != Some(PLANE_TYPE_PRIMARY) {
                continue;
            }
            let pairs = match props.value("IN_FORMATS") {
                Some(blob) if blob != 0 => card
                    .get_property_blob(blob)
                    .ok()
                    .and_then(|bytes| parse_in_formats(&bytes)),
                _ => None,
            };
            primary = Some((
                handle,
                PlaneFormats {
                    formats: plane.formats().to_vec(),
                    pairs,
                },
                props,
            ));
            break;
        }
        let (plane, formats, plane_props) = primary.ok_or(KmsError::NoPlane {
            crtc: crtc.into(),
            format: PixelFormat::Xrgb8888,
            modifier: 0,
        })?;
        Ok(Self {
            connector: info.handle(),
            connector_name: name,
            crtc,
            plane,
            mode,
            formats,
            connector_props: Props::of(card, info.handle(), "connector")?,
            crtc_props: Props::of(card, crtc, "CRTC")?,
            plane_props,
        })
    }

    pub(super) fn mode_size(&self) -> (u32, u32) {
        let (width, height) = self.mode.size();
        (u32::from(width), u32::from(height))
    }

    /// Adds the plane's state to `req`: `fb` at `placement`, with `rotation` if given.
    pub(super) fn add_plane(
        &self,
        req: &mut AtomicModeReq,
        fb: Option<framebuffer::Handle>,
        placement: Option<Placement>,
        rotation: Option<u64>,
    ) -> Result<(), KmsError> {
        let props = &self.plane_props;
        req.add_property(
            self.plane,
            props.handle("FB_ID")?,
            property::Value::Framebuffer(fb),
        );
        req.add_property(
            self.plane,
            props.handle("CRTC_ID")?,
            property::Value::CRTC(fb.map(|_| self.crtc)),
        );
        if let Some(p) = placement {
            for (name, value) in [
                ("SRC_X", u64::from(p.src.x) << 16),
                ("SRC_Y", u64::from(p.src.y) << 16),
                ("SRC_W", u64::from(p.src.width) << 16),
                ("SRC_H", u64::from(p.src.height) << 16),
                ("CRTC_X", i64::from(p.dst.x) as u64),
                ("CRTC_Y", i64::from(p.dst.y) as u64),
                ("CRTC_W", u64::from(p.dst.width)),
                ("CRTC_H", u64::from(p.dst.height)),
            ] {
                req.add_raw_property(self.plane.into(), props.handle(name)?, value);
            }
        }
        if let (Some(rotation), Some(handle)) = (rotation, props.by_name.get("rotation")) {
            req.add_raw_property(self.plane.into(), handle.0, rotation);
        }
        Ok(())
    }

    /// Adds the modeset (mode blob, ACTIVE, connector routing) to `req`.
    pub(super) fn add_modeset(&self, req: &mut AtomicModeReq, blob: &Blob) -> Result<(), KmsError> {
        req.add_property(
            self.connector,
            self.connector_props.handle("CRTC_ID")?,
            property::Value::CRTC(Some(self.crtc)),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("MODE_ID")?,
            property::Value::Blob(blob.handle.0),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("ACTIVE")?,
            property::Value::Boolean(true),
        );
        Ok(())
    }

    pub(super) fn mode_blob(&self, card: &Card) -> Result<Blob, KmsError> {
        let value = card
            .create_property_blob(&self.mode)
            .map_err(ioctl("DRM_IOCTL_MODE_CREATEPROPBLOB (mode)"))?;
        let id = match value {
            property::Value::Blob(id) => id,
            other => u64::from(other),
        };
        Ok(Blob {
            card: card.clone(),
            handle: BlobId(id),
        })
    }

    /// Turns the pipe off: plane off, CRTC inactive, connector unrouted.
    pub(super) fn disable_all(&self, card: &Card) -> Result<(), KmsError> {
        let mut req = AtomicModeReq::new();
        self.add_plane(&mut req, None, None, None)?;
        req.add_property(
            self.connector,
            self.connector_props.handle("CRTC_ID")?,
            property::Value::CRTC(None),
        );
        // Every other connector on the CRTC (a writeback connector) goes too: a disabled
        // CRTC with connectors is refused with EINVAL.
        let crtc_id = u64::from(u32::from(self.crtc));
        let resources = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;
        for &other in resources.connectors() {
            if other == self.connector {
                continue;
            }
            let props = Props::of(card, other, "connector")?;
            if props.value("CRTC_ID") == Some(crtc_id) {
                req.add_property(other, props.handle("CRTC_ID")?, property::Value::CRTC(None));
            }
        }
        req.add_property(
            self.crtc,
            self.crtc_props.handle("MODE_ID")?,
            property::Value::Blob(0),
        );
        req.add_property(
            self.crtc,
            self.crtc_props.handle("ACTIVE")?,
            property::Value::Boolean(false),
        );
        card.commit(
            AtomicCommitFlags::ALLOW_MODESET,
            req,
            &format!("atomic commit disabling CRTC {:?}", self.crtc),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Modifier;

    #[test]
    fn in_formats_blob_parses() {
        // version 1, 2 formats, 1 modifier (LINEAR) covering both.
        let mut blob = Vec::new();
        for value in [1u32, 0, 2, 24, 1, 32] {
            blob.extend_from_slice(&value.to_ne_bytes());
        }
        blob.extend_from_slice(&0x3432_5258u32.to_ne_bytes()); // XR24
        blob.extend_from_slice(&0x3631_4752u32.to_ne_bytes()); // RG16
        blob.extend_from_slice(&0b11u64.to_ne_bytes());
        blob.extend_from_slice(&0u32.to_ne_bytes());
        blob.extend_from_slice(&0u32.to_ne_bytes());
        blob.extend_from_slice(&0u64.to_ne_bytes());
        let pairs = parse_in_formats(&blob).unwrap();
        assert_eq!(pairs, vec![(0x3432_5258, 0), (0x3631_4752, 0)]);
        let formats = PlaneFormats {
            formats: vec![0x3432_5258, 0x3631_4752],
            pairs: Some(pairs),
        };
        assert!(formats.takes(0x3432_5258, Modifier::LINEAR));
        assert!(formats.takes(0x3432_5258, Modifier::Implicit));
        assert!(!formats.takes(0x3432_5258, Modifier::from_raw(1 << 56 | 1)));
        assert!(!formats.takes(0x3432_4742, Modifier::LINEAR));
        assert!(parse_in_formats(&blob[..20]).is_none());
    }
}
