//! Views of memory that someone else may change at any time: guest RAM, a VMM's
//! surface memfds, dma-buf mappings.
//!
//! A Rust reference (`&[u8]`, `&mut [u8]`) promises that the bytes do not change while
//! it lives (or that nobody else sees them); memory a guest, a VMM or a device writes
//! keeps neither promise, and forming such a reference is undefined behaviour whatever
//! the bytes mean. So guestfb never forms one over shared memory. It hands out
//! [`VolatileSlice`] (read) and [`VolatileSliceMut`] (read and write) instead, which
//! follow vm-memory's rules for its `VolatileSlice`:
//!
//! * a view is a raw pointer, a length and a lifetime; it never dereferences to a slice;
//! * single values are read and written with `read_volatile` / `write_volatile`;
//! * bulk bytes are copied with `ptr::copy` (the compiler cannot assume they stay put,
//!   so it neither merges nor repeats the loads; a concurrent writer tears a picture,
//!   which is all a framebuffer reader can expect);
//! * raw pointers ([`VolatileSlice::as_ptr`]) go only to code that reads through them
//!   without forming references (the SIMD row kernels of `import::convert`).
//!
//! A read-only mapping gives only a [`VolatileSlice`]: it cannot be written from safe
//! code. Private bytes convert into views for free ([`VolatileSlice::from`]).
//!
//! ```
//! use guestfb::sys::volatile::{VolatileSlice, VolatileSliceMut};
//!
//! let mut private = vec![0u8; 16];
//! let view = VolatileSliceMut::from(&mut private[..]);
//! view.write_at(4, &[1, 2, 3]).unwrap();
//! view.fill_range(8, 2, 0xAA).unwrap();
//! let read: VolatileSlice<'_> = view.as_read();
//! assert_eq!(read.get(5), Some(2));
//! assert_eq!(read.subslice(4, 6).unwrap().to_vec(), [1, 2, 3, 0, 0xAA, 0xAA]);
//! assert!(read.subslice(12, 8).is_err()); // past the end: an error, never a panic
//! ```

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::{Result, SysError};

/// A read-only view of `len` bytes that may change under it (see the module docs).
#[derive(Clone, Copy)]
pub struct VolatileSlice<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a [u8]>,
}

/// A writable view of `len` bytes that others may read and write meanwhile.
///
/// Dereferences to the read view, so every [`VolatileSlice`] method works on it.
#[derive(Clone, Copy)]
pub struct VolatileSliceMut<'a> {
    read: VolatileSlice<'a>,
    _life: PhantomData<&'a mut [u8]>,
}

// SAFETY: a view is a pointer to plain bytes with no thread affinity. Every access goes
// through volatile reads/writes or `ptr::copy`, which are what concurrent users of
// shared memory (other threads, other processes, the guest) have to expect anyway.
unsafe impl Send for VolatileSlice<'_> {}
// SAFETY: as above; `&VolatileSlice` only reads through the pointer.
unsafe impl Sync for VolatileSlice<'_> {}
// SAFETY: as for `VolatileSlice`; writes are volatile or `ptr::copy` too.
unsafe impl Send for VolatileSliceMut<'_> {}
// SAFETY: as above.
unsafe impl Sync for VolatileSliceMut<'_> {}

impl std::fmt::Debug for VolatileSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolatileSlice")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl std::fmt::Debug for VolatileSliceMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolatileSliceMut")
            .field("ptr", &self.read.ptr)
            .field("len", &self.read.len)
            .finish()
    }
}

fn out_of_bounds(offset: usize, len: usize, size: usize) -> SysError {
    SysError::OutOfBounds {
        offset: offset as u64,
        len: len as u64,
        size: size as u64,
    }
}

impl<'a> VolatileSlice<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be readable for all of `'a` (a mapping that outlives the
    /// view), and nobody may hold a Rust reference into it meanwhile.
    pub unsafe fn new(ptr: *const u8, len: usize) -> Self {
        Self {
            ptr: NonNull::new(ptr.cast_mut()).unwrap_or(NonNull::dangling()),
            len: if ptr.is_null() { 0 } else { len },
            _life: PhantomData,
        }
    }

    /// The empty view.
    pub fn empty() -> Self {
        Self::from(&[][..])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte, for code that reads through raw pointers (never into a
    /// reference) within `len` bytes.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// `len` bytes from `offset`, or an error naming the range and the view's size.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<VolatileSlice<'a>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(Self {
                // SAFETY: offset ≤ end ≤ self.len: inside (or one past) the view.
                ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(offset)) },
                len,
                _life: PhantomData,
            }),
            _ => Err(out_of_bounds(offset, len, self.len)),
        }
    }

    /// The byte at `offset` (one volatile read), `None` past the end.
    pub fn get(&self, offset: usize) -> Option<u8> {
        (offset < self.len).then(|| {
            // SAFETY: offset < len: inside the readable view.
            unsafe { self.ptr.as_ptr().add(offset).read_volatile() }
        })
    }

    /// The little-endian `u32` at `offset` (one volatile read of each byte), `None` when
    /// it does not fit.
    pub fn get_u32_le(&self, offset: usize) -> Option<u32> {
        let mut word = [0u8; 4];
        self.read_at(offset, &mut word).ok()?;
        Some(u32::from_le_bytes(word))
    }

    /// Copies `out.len()` bytes from `offset` into private memory.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let from = self.subslice(offset, out.len())?;
        // SAFETY: `from` is readable for out.len() bytes; `out` is private memory of the
        // same length that a shared view cannot overlap (it is borrowed mutably here).
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies the whole view into private memory; `out` must have the view's length.
    pub fn copy_to(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != self.len {
            return Err(out_of_bounds(0, out.len(), self.len));
        }
        self.read_at(0, out)
    }

    /// The bytes, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len];
        // SAFETY: the view is readable for `len` bytes and `out` is a fresh private
        // buffer of that length.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), out.as_mut_ptr(), self.len) };
        out
    }
}

impl<'a> From<&'a [u8]> for VolatileSlice<'a> {
    /// A view of private bytes (for tests and for callers that already copied).
    fn from(bytes: &'a [u8]) -> Self {
        // SAFETY: the slice is readable for 'a and, being borrowed, nobody writes it.
        unsafe { Self::new(bytes.as_ptr(), bytes.len()) }
    }
}

impl<'a> VolatileSliceMut<'a> {
    /// A writable view of `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be readable and writable for all of `'a`, and nobody may
    /// hold a Rust reference into it meanwhile.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self {
            // SAFETY: the caller's promise covers reads too.
            read: unsafe { VolatileSlice::new(ptr, len) },
            _life: PhantomData,
        }
    }

    /// The read-only view of the same bytes.
    pub fn as_read(&self) -> VolatileSlice<'a> {
        self.read
    }

    /// The first byte, for code that writes through raw pointers within `len` bytes.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.read.ptr.as_ptr()
    }

    /// `len` bytes from `offset`, writable, or an error naming the range.
    pub fn subslice_mut(&self, offset: usize, len: usize) -> Result<VolatileSliceMut<'a>> {
        Ok(Self {
            read: self.read.subslice(offset, len)?,
            _life: PhantomData,
        })
    }

    /// Writes one byte (volatile); an error past the end.
    pub fn set(&self, offset: usize, value: u8) -> Result<()> {
        if offset >= self.read.len {
            return Err(out_of_bounds(offset, 1, self.read.len));
        }
        // SAFETY: offset < len: inside the writable view.
        unsafe { self.as_mut_ptr().add(offset).write_volatile(value) };
        Ok(())
    }

    /// Copies `bytes` in at `offset`.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let to = self.subslice_mut(offset, bytes.len())?;
        // SAFETY: `to` is writable for bytes.len() bytes; `bytes` is a shared borrow,
        // which a writable view of shared memory cannot be (nobody forms references to
        // it), so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), to.as_mut_ptr(), bytes.len()) };
        Ok(())
    }

    /// Copies all of `from` (another view, which may overlap this one) in at `offset`.
    pub fn copy_from_volatile(&self, offset: usize, from: VolatileSlice<'_>) -> Result<()> {
        let to = self.subslice_mut(offset, from.len())?;
        // SAFETY: both ranges are valid for from.len() bytes; `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(from.as_ptr(), to.as_mut_ptr(), from.len()) };
        Ok(())
    }

    /// Sets `len` bytes from `offset` to `value`.
    pub fn fill_range(&self, offset: usize, len: usize, value: u8) -> Result<()> {
        let to = self.subslice_mut(offset, len)?;
        // SAFETY: `to` is writable for `len` bytes.
        unsafe { std::ptr::write_bytes(to.as_mut_ptr(), value, len) };
        Ok(())
    }

    /// Sets every byte to `value`.
    pub fn fill(&self, value: u8) {
        // SAFETY: the view is writable for its whole length.
        unsafe { std::ptr::write_bytes(self.as_mut_ptr(), value, self.read.len) };
    }
}

impl<'a> std::ops::Deref for VolatileSliceMut<'a> {
    type Target = VolatileSlice<'a>;

    fn deref(&self) -> &VolatileSlice<'a> {
        &self.read
    }
}

impl<'a> From<&'a mut [u8]> for VolatileSliceMut<'a> {
    /// A writable view of private bytes.
    fn from(bytes: &'a mut [u8]) -> Self {
        // SAFETY: the slice is readable and writable for 'a, and the exclusive borrow
        // keeps every reference to it out of reach meanwhile.
        unsafe { Self::new(bytes.as_mut_ptr(), bytes.len()) }
    }
}

impl<'a> From<VolatileSliceMut<'a>> for VolatileSlice<'a> {
    fn from(view: VolatileSliceMut<'a>) -> Self {
        view.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_accesses_are_errors_that_name_the_range() {
        let mut bytes = [0u8; 8];
        let view = VolatileSliceMut::from(&mut bytes[..]);
        assert_eq!(
            view.subslice(6, 4).unwrap_err().to_string(),
            SysError::OutOfBounds {
                offset: 6,
                len: 4,
                size: 8
            }
            .to_string()
        );
        assert!(view.subslice(usize::MAX, 2).is_err());
        assert!(view.set(8, 1).is_err());
        assert!(view.write_at(7, &[1, 2]).is_err());
        assert!(view.fill_range(0, 9, 1).is_err());
        assert_eq!(view.get(8), None);
        assert_eq!(view.get_u32_le(5), None);
        assert!(view.copy_to(&mut [0; 7]).is_err());
        assert_eq!(bytes, [0; 8], "nothing was written by the refused calls");
    }

    #[test]
    fn reads_writes_and_overlapping_copies() {
        let mut bytes: Vec<u8> = (0..16).collect();
        let view = VolatileSliceMut::from(&mut bytes[..]);
        assert_eq!(view.get_u32_le(4), Some(u32::from_le_bytes([4, 5, 6, 7])));
        view.copy_from_volatile(2, view.subslice(0, 8).unwrap())
            .unwrap();
        view.set(15, 99).unwrap();
        let mut out = [0u8; 4];
        view.read_at(2, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(
            view.as_read().to_vec()[..10],
            [0, 1, 0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(bytes[15], 99);
        assert!(VolatileSlice::empty().is_empty());
    }
}
