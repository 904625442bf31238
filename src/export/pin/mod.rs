//! The pin manager: long-term pins of guest pages for display, with a budget, shared
//! leases, and discards that revoke exports before the memory goes away.
//!
//! The kernel does none of this bookkeeping for udmabuf: it charges no locked_vm, and a
//! `FALLOC_FL_PUNCH_HOLE` of a pinned range succeeds and silently disconnects the
//! display's pages from the guest's (verified on 6.12). So guestfb keeps the books:
//! every pin goes through the pin manager (via
//! [`Exporter::export`](super::Exporter::export)), and every discard through
//! [`PinManager::discard`].

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sys::dmabuf::{Access, DmaBuf, MapPiece, Mapping};
use crate::sys::memfd::Memfd;
use crate::sys::udmabuf::{self, Udmabuf};
use crate::sys::volatile::VolatileSlice;
use crate::sys::SysError;

use super::memory::{MemfdId, MemfdPiece};
use super::ExportError;

pub(crate) mod kernel;

use kernel::{has_cap_ipc_lock, populate, probe_with};
pub use kernel::{LongtermPin, PinSemantics, Quirk};

/// What a pin is for. Scanout needs a long-term pin; the policy decides what happens on
/// kernels without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinPurpose {
    /// A display engine or GPU reads the pages for as long as the frame is shown.
    Scanout,
    /// Short CPU reads (the gl=off copy path); a plain reference is good enough.
    CpuRead,
}

/// How the pin manager behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinPolicy {
    /// Most bytes pinned at once (overlaps counted once).
    pub budget: u64,
    /// Allow scanout pins on kernels that hold pages by plain reference (before 6.11).
    /// Off by default; when on, [`PinManager::semantics`] and each lease report it.
    pub allow_without_longterm: bool,
}

impl Default for PinPolicy {
    /// The budget follows vfio's locked_vm accounting: RLIMIT_MEMLOCK's soft limit,
    /// unlimited for a process with CAP_IPC_LOCK (as root usually is).
    fn default() -> Self {
        let budget = if has_cap_ipc_lock() {
            u64::MAX
        } else {
            rustix::process::getrlimit(rustix::process::Resource::Memlock)
                .current
                .unwrap_or(u64::MAX)
        };
        Self {
            budget,
            allow_without_longterm: false,
        }
    }
}

/// One pin: a udmabuf over memfd pieces, shared by every lease with the same pieces.
#[derive(Debug)]
struct PinRecord {
    pieces: Vec<(MemfdId, u64, u64)>,
    /// The memfds, for mapping them directly when there is no dma-buf.
    memfds: Vec<MemfdPiece>,
    dmabuf: Option<DmaBuf>,
    /// The CPU mapping, made on first read and dropped with the pin (or at revoke).
    mapping: Option<Mapping>,
    holders: Vec<Holder>,
}

impl PinRecord {
    fn cpu_mapping(&mut self) -> Result<&Mapping, SysError> {
        if self.mapping.is_none() {
            let mapping = match &self.dmabuf {
                Some(dmabuf) => dmabuf.mmap(Access::Read)?,
                None => map_memfds_directly(&self.memfds)?,
            };
            self.mapping = Some(mapping);
        }
        Ok(self.mapping.as_ref().expect("mapping was just made"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    lease: u64,
    buffer_id: u64,
    generation: u64,
}

#[derive(Debug, Default)]
struct PinTable {
    records: BTreeMap<u64, PinRecord>,
    next_id: u64,
    revoked_leases: BTreeMap<u64, Holder>,
}

impl PinTable {
    /// Bytes pinned, overlaps counted once, optionally with extra pieces added.
    fn pinned_bytes_with(&self, extra: &[(MemfdId, u64, u64)]) -> u64 {
        let mut ranges: Vec<(MemfdId, u64, u64)> = self
            .records
            .values()
            .filter(|record| record.dmabuf.is_some())
            .flat_map(|record| record.pieces.iter().copied())
            .chain(extra.iter().copied())
            .collect();
        ranges.sort();
        let mut total = 0;
        let mut current: Option<(MemfdId, u64, u64)> = None;
        for (id, start, len) in ranges {
            let end = start + len;
            match &mut current {
                Some((cur_id, _, cur_end)) if *cur_id == id && start <= *cur_end => {
                    *cur_end = (*cur_end).max(end);
                }
                _ => {
                    if let Some((_, s, e)) = current {
                        total += e - s;
                    }
                    current = Some((id, start, end));
                }
            }
        }
        if let Some((_, s, e)) = current {
            total += e - s;
        }
        total
    }
}

/// A revoked export, as reported to listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The buffer whose export died.
    pub buffer_id: u64,
    /// The generation that died; the next export of the buffer gets a higher one.
    pub generation: u64,
}

type Listener = Box<dyn FnMut(&Revocation) + Send>;

#[derive(Default)]
struct Shared {
    table: Mutex<PinTable>,
    listeners: Mutex<Vec<Listener>>,
}

/// Whether a discard of pinned memory is refused or revokes the exports first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardMode {
    /// Refuse while any export pins the range.
    Refuse,
    /// Revoke the exports that pin it (listeners are told), then discard.
    Revoke,
}

/// What a discard did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscardReport {
    /// Exports revoked first.
    pub revoked: Vec<Revocation>,
}

/// Pins guest memory for display, keeps the budget, and coordinates discards.
///
/// A VMM discards guest RAM (balloon, `virtio-mem`, free page reporting) through the
/// pin manager, so an export of those pages is refused or revoked first:
/// ```
/// use std::sync::Arc;
/// use guestfb::export::{
///     DiscardMode, Exporter, FramebufferDesc, GuestMemory, PinManager, PinPolicy, PinPurpose,
/// };
/// use guestfb::format::PixelFormat;
/// use guestfb::sys::memfd::{Memfd, Seals};
///
/// let pins = PinManager::new(PinPolicy::default());
/// // What this kernel does for pins (long-term pinning, hugetlb folios, limits).
/// println!("{:?}", pins.semantics().longterm_pin);
///
/// let ram = Arc::new(Memfd::create("guest-ram")?);
/// ram.set_size(1 << 20)?;
/// ram.add_seals(Seals::SHRINK)?;
/// let mut memory = GuestMemory::new();
/// memory.add_region(0, 1 << 20, ram.clone(), 0)?;
/// let exporter = Exporter::new(Arc::new(memory), pins);
/// let desc = FramebufferDesc::packed(PixelFormat::Xrgb8888, 64, 48, 256, 0);
/// let export = exporter.export(1, &desc, PinPurpose::CpuRead)?;
/// assert_eq!(exporter.pins().pin_count(), 1);
///
/// // The guest balloons out the framebuffer's pages: refused while shown...
/// assert!(exporter.pins().discard(&ram, 0, 1 << 20, DiscardMode::Refuse).is_err());
/// // ...or the export is revoked first, then the range discarded.
/// let report = exporter.pins().discard(&ram, 0, 1 << 20, DiscardMode::Revoke)?;
/// assert_eq!(report.revoked.len(), 1);
/// assert!(export.is_revoked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PinManager {
    shared: Arc<Shared>,
    udmabuf: Option<Udmabuf>,
    semantics: PinSemantics,
    policy: PinPolicy,
}

impl std::fmt::Debug for PinManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinManager")
            .field("semantics", &self.semantics)
            .field("policy", &self.policy)
            .field("pinned_bytes", &self.pinned_bytes())
            .finish()
    }
}

/// One export's hold on a pin. Dropping the last lease of a pin unpins it.
pub(crate) struct PinLease {
    shared: Arc<Shared>,
    record: u64,
    lease: u64,
    longterm: bool,
}

impl std::fmt::Debug for PinLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinLease")
            .field("record", &self.record)
            .field("lease", &self.lease)
            .field("longterm", &self.longterm)
            .finish()
    }
}

impl PinManager {
    /// Opens `/dev/udmabuf` if there is one and probes the kernel.
    pub fn new(policy: PinPolicy) -> Self {
        let udmabuf = Udmabuf::open().ok();
        let semantics = probe_with(udmabuf.as_ref());
        Self {
            shared: Arc::default(),
            udmabuf,
            semantics,
            policy,
        }
    }

    /// Reports the pin semantics of the running kernel, from behaviour where it can.
    pub fn probe() -> PinSemantics {
        probe_with(Udmabuf::open().ok().as_ref())
    }

    /// What this manager found when it started.
    pub fn semantics(&self) -> &PinSemantics {
        &self.semantics
    }

    /// The policy.
    pub fn policy(&self) -> PinPolicy {
        self.policy
    }

    /// Replaces the udmabuf limits checked before each create (tests use small ones).
    #[cfg(feature = "testing")]
    pub(crate) fn set_udmabuf_limits(&mut self, limits: udmabuf::Limits) {
        if let Some(device) = &mut self.udmabuf {
            device.set_limits(limits);
        }
    }

    /// Whether pins make udmabufs (false: memfds are mapped directly, nothing pinned).
    pub fn has_udmabuf(&self) -> bool {
        self.udmabuf.is_some()
    }

    /// Bytes pinned now, overlaps counted once.
    pub fn pinned_bytes(&self) -> u64 {
        lock(&self.shared.table).pinned_bytes_with(&[])
    }

    /// Number of distinct pins (udmabufs) held.
    pub fn pin_count(&self) -> usize {
        lock(&self.shared.table).records.len()
    }

    /// Calls `listener` for every export revoked by a discard, before the memory is
    /// discarded. Holders drop their images, mappings and planes there.
    pub fn on_revoke(&self, listener: impl FnMut(&Revocation) + Send + 'static) {
        lock(&self.shared.listeners).push(Box::new(listener));
    }

    /// Pins `pieces` (in order) for buffer `buffer_id` generation `generation`.
    ///
    /// Identical pieces share one udmabuf. udmabuf's limits, the budget and the seals
    /// are checked and the pages populated before any udmabuf is created: a short
    /// hugetlb pool is an error here, never a SIGBUS later. A [`PinPurpose::CpuRead`]
    /// over udmabuf's limits pins nothing and maps the memfds directly instead.
    pub(crate) fn pin(
        &self,
        pieces: &[MemfdPiece],
        purpose: PinPurpose,
        buffer_id: u64,
        generation: u64,
    ) -> Result<PinLease, ExportError> {
        let longterm = self.semantics.longterm_pin.is_longterm();
        if purpose == PinPurpose::Scanout
            && self.udmabuf.is_some()
            && !longterm
            && !self.policy.allow_without_longterm
        {
            return Err(ExportError::NoLongtermPin {
                kernel: self.semantics.kernel.clone(),
            });
        }
        let key: Vec<(MemfdId, u64, u64)> = pieces
            .iter()
            .map(|piece| (piece.memfd_id, piece.offset, piece.len))
            .collect();
        let mut table = lock(&self.shared.table);
        let lease = table.next_id;
        table.next_id += 1;
        let holder = Holder {
            lease,
            buffer_id,
            generation,
        };
        // A scanout shares only a pin that has the dma-buf it needs (a CPU read over
        // the udmabuf limits pins without one, see below).
        let needs_dmabuf = purpose == PinPurpose::Scanout && self.udmabuf.is_some();
        if let Some((&record_id, record)) = table
            .records
            .iter_mut()
            .find(|(_, record)| record.pieces == key && (record.dmabuf.is_some() || !needs_dmabuf))
        {
            record.holders.push(holder);
            return Ok(PinLease {
                shared: self.shared.clone(),
                record: record_id,
                lease,
                longterm,
            });
        }

        let dmabuf = match &self.udmabuf {
            Some(device) => {
                let ranges: Vec<udmabuf::Range<'_>> = pieces
                    .iter()
                    .map(|piece| udmabuf::Range {
                        memfd: piece.memfd.as_fd(),
                        offset: piece.offset,
                        size: piece.len,
                    })
                    .collect();
                // Check limits and seals before touching the pool.
                let total = pieces.iter().map(|piece| piece.len).sum();
                match device.limits().check(ranges.len(), total) {
                    Ok(()) => {
                        let pinned = table.pinned_bytes_with(&[]);
                        let after = table.pinned_bytes_with(&key);
                        if after > self.policy.budget {
                            return Err(ExportError::BudgetExceeded {
                                requested: after - pinned,
                                pinned,
                                budget: self.policy.budget,
                            });
                        }
                        for range in &ranges {
                            udmabuf::check_range(range)?;
                        }
                        for piece in pieces {
                            populate(&piece.memfd, piece.offset, piece.len)?;
                        }
                        Some(if let [range] = ranges.as_slice() {
                            device.create(*range)?
                        } else {
                            device.create_list(&ranges)?
                        })
                    }
                    // Over udmabuf's limits a CPU read needs no dma-buf: the memfds are
                    // mapped directly (`CpuPath::MemfdDirect`), as without udmabuf. A
                    // scanout has no such way out: the error names the limit.
                    Err(SysError::SizeLimit { .. } | SysError::ListLimit { .. })
                        if purpose == PinPurpose::CpuRead =>
                    {
                        None
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            None => None,
        };
        let record_id = lease;
        table.records.insert(
            record_id,
            PinRecord {
                pieces: key,
                memfds: pieces.to_vec(),
                dmabuf,
                mapping: None,
                holders: vec![holder],
            },
        );
        Ok(PinLease {
            shared: self.shared.clone(),
            record: record_id,
            lease,
            longterm,
        })
    }

    /// Discards `len` bytes of `memfd` at `offset` (`FALLOC_FL_PUNCH_HOLE`), as a
    /// balloon, virtio-mem or the guest's own free would.
    ///
    /// While exports pin any of it: [`DiscardMode::Refuse`] fails with
    /// [`ExportError::RangePinned`]; [`DiscardMode::Revoke`] revokes them (their
    /// dma-buf and mapping are dropped, listeners told) and only then punches the hole.
    pub fn discard(
        &self,
        memfd: &Memfd,
        offset: u64,
        len: u64,
        mode: DiscardMode,
    ) -> Result<DiscardReport, ExportError> {
        let end = offset
            .checked_add(len)
            .filter(|&end| len > 0 && end <= memfd.size().unwrap_or(0))
            .ok_or(ExportError::DiscardOutside { offset, len })?;
        let id = MemfdId::of(memfd)?;
        let mut revoked = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut table = lock(&self.shared.table);
            let hit: Vec<u64> = table
                .records
                .iter()
                .filter(|(_, record)| {
                    record.pieces.iter().any(|&(piece_id, start, piece_len)| {
                        piece_id == id && start < end && offset < start + piece_len
                    })
                })
                .map(|(&record_id, _)| record_id)
                .collect();
            if !hit.is_empty() && mode == DiscardMode::Refuse {
                return Err(ExportError::RangePinned {
                    offset,
                    len,
                    exports: hit
                        .iter()
                        .map(|record_id| table.records[record_id].holders.len())
                        .sum(),
                });
            }
            for record_id in hit {
                if let Some(record) = table.records.remove(&record_id) {
                    for holder in &record.holders {
                        revoked.push(Revocation {
                            buffer_id: holder.buffer_id,
                            generation: holder.generation,
                        });
                        table.revoked_leases.insert(holder.lease, *holder);
                    }
                    dropped.push(record);
                }
            }
        }
        for revocation in &revoked {
            for listener in lock(&self.shared.listeners).iter_mut() {
                listener(revocation);
            }
        }
        // Our dma-buf fds and mappings go before the hole is punched.
        drop(dropped);
        memfd.punch_hole(offset, len)?;
        Ok(DiscardReport { revoked })
    }
}

impl PinLease {
    /// Whether the pages are pinned long-term (false only with the opt-in policy on an
    /// old kernel, or with no udmabuf at all).
    pub fn is_longterm(&self) -> bool {
        self.longterm
    }

    /// Whether a discard revoked this lease.
    pub fn is_revoked(&self) -> bool {
        lock(&self.shared.table)
            .revoked_leases
            .contains_key(&self.lease)
    }

    /// Runs `f` with the pinned dma-buf (`None` when there is no udmabuf and memfds are
    /// mapped directly); `None` as the outer result when the lease was revoked. The
    /// pin cannot be revoked while `f` runs.
    pub fn with_dmabuf<R>(&self, f: impl FnOnce(Option<&DmaBuf>) -> R) -> Option<R> {
        let table = lock(&self.shared.table);
        let record = table.records.get(&self.record)?;
        Some(f(record.dmabuf.as_ref()))
    }

    /// Runs `f` over the exported bytes, read through the CPU: the udmabuf's mmap
    /// inside a `DMA_BUF_IOCTL_SYNC` read bracket, or the memfds mapped directly when
    /// there is no udmabuf. `None` when the lease was revoked: a revoked export cannot
    /// be read, and revocation waits for a read in progress.
    pub fn with_cpu_bytes<R>(
        &self,
        f: impl FnOnce(VolatileSlice<'_>) -> R,
    ) -> Option<Result<R, SysError>> {
        let mut table = lock(&self.shared.table);
        let record = table.records.get_mut(&self.record)?;
        Some((|| {
            record.cpu_mapping()?;
            let sync = match &record.dmabuf {
                Some(dmabuf) => Some(dmabuf.sync(Access::Read)?),
                None => None,
            };
            let mapping = record.mapping.as_ref().expect("mapped above");
            let result = f(mapping.bytes());
            if let Some(sync) = sync {
                sync.end()?;
            }
            Ok(result)
        })())
    }
}

impl Drop for PinLease {
    fn drop(&mut self) {
        let mut table = lock(&self.shared.table);
        table.revoked_leases.remove(&self.lease);
        let now_unused = table.records.get_mut(&self.record).is_some_and(|record| {
            record.holders.retain(|holder| holder.lease != self.lease);
            record.holders.is_empty()
        });
        if now_unused {
            table.records.remove(&self.record);
        }
    }
}

/// Maps memfd pieces back to back without a udmabuf. A single piece is widened to its
/// memfd's page size (hugetlb mappings must be huge-page aligned) and narrowed back.
fn map_memfds_directly(pieces: &[MemfdPiece]) -> Result<Mapping, SysError> {
    let too_big = |piece: &MemfdPiece| SysError::OutOfBounds {
        offset: piece.offset,
        len: piece.len,
        size: usize::MAX as u64,
    };
    if let [piece] = pieces {
        let page = piece.memfd.page_size();
        let start = piece.offset - piece.offset % page;
        let end = piece.end().next_multiple_of(page);
        let len = usize::try_from(end - start).map_err(|_| too_big(piece))?;
        let skip = (piece.offset - start) as usize;
        let piece_len = usize::try_from(piece.len).map_err(|_| too_big(piece))?;
        return Mapping::new(piece.memfd.as_fd(), start, len, Access::Read)?
            .narrow(skip, piece_len);
    }
    let map_pieces = pieces
        .iter()
        .map(|piece| {
            Ok(MapPiece {
                fd: piece.memfd.as_fd(),
                offset: piece.offset,
                len: usize::try_from(piece.len).map_err(|_| too_big(piece))?,
            })
        })
        .collect::<Result<Vec<_>, SysError>>()?;
    Mapping::stitched(&map_pieces)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bookkeeping behind; keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_follows_cap_ipc_lock_or_memlock() {
        let policy = PinPolicy::default();
        if has_cap_ipc_lock() {
            assert_eq!(policy.budget, u64::MAX);
        } else {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock);
            assert_eq!(policy.budget, limit.current.unwrap_or(u64::MAX));
        }
        assert!(!policy.allow_without_longterm);
    }

    #[test]
    fn overlapping_pieces_count_once() {
        let memfd = Memfd::create("x").unwrap();
        let id = MemfdId::of(&memfd).unwrap();
        let table = PinTable::default();
        let pieces = [(id, 0, 8192), (id, 4096, 8192), (id, 65536, 4096)];
        assert_eq!(table.pinned_bytes_with(&pieces), 12288 + 4096);
    }
}
