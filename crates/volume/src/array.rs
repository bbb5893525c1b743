//! In-memory arrays and boxes.
//!
//! Convention: an [`Array`] is C-ordered (last axis fastest) and volume arrays have shape
//! `[z, y, x]` (or `[c, z, y, x]` with channels), like the `.npy` fixtures and NumPy code
//! generally. That memory layout is byte-for-byte Neuroglancer's Fortran-ordered `[x, y, z, c]`,
//! so chunks need no transposition. Coordinates and boxes ([`BBox`]), by contrast, are
//! `[x, y, z]`, as in precomputed `info` files. [`Array::reversed_axes`] converts between an
//! array indexed `[z, y, x]` and one indexed `[x, y, z]`.

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};

/// An n-dimensional C-ordered array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Element> Array<T> {
    /// Wraps `data`, which must hold exactly the product of `shape` values.
    pub fn new(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        let n = checked_len(&shape)?;
        if n != data.len() {
            return Err(Error::InvalidArgument(format!(
                "shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Array { shape, data })
    }

    /// An array of `T::default()` (zero).
    pub fn zeros(shape: Vec<usize>) -> Result<Self> {
        Self::filled(shape, T::default())
    }

    /// An array holding `value` everywhere.
    pub fn filled(shape: Vec<usize>, value: T) -> Result<Self> {
        let n = checked_len(&shape)?;
        Ok(Array {
            shape,
            data: vec![value; n],
        })
    }

    /// The extent of each axis, slowest first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values in C order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The values in C order, mutably.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The values in C order, by value.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        T::DATA_TYPE
    }

    /// The value at `index` (one entry per axis), or `None` out of bounds.
    pub fn get(&self, index: &[usize]) -> Option<T> {
        self.offset(index).map(|o| self.data[o])
    }

    /// Sets the value at `index`; `false` if out of bounds.
    pub fn set(&mut self, index: &[usize], value: T) -> bool {
        match self.offset(index) {
            Some(o) => {
                self.data[o] = value;
                true
            }
            None => false,
        }
    }

    fn offset(&self, index: &[usize]) -> Option<usize> {
        if index.len() != self.shape.len() {
            return None;
        }
        let mut o = 0;
        for (&i, &n) in index.iter().zip(&self.shape) {
            if i >= n {
                return None;
            }
            o = o * n + i;
        }
        Some(o)
    }

    /// The same values with the axis order reversed: `[z, y, x]` becomes `[x, y, z]` (element
    /// `[i, j, k]` moves to `[k, j, i]`), and back. Equivalently, the result's C-order data is
    /// this array's data in Fortran order.
    pub fn reversed_axes(&self) -> Array<T> {
        let nd = self.shape.len();
        if nd <= 1 {
            return self.clone();
        }
        let new_shape: Vec<usize> = self.shape.iter().rev().copied().collect();
        let mut out = Vec::with_capacity(self.data.len());
        // Walk the output in C order; the source index is the reversed output index.
        let mut src_strides = vec![1usize; nd];
        for a in (0..nd - 1).rev() {
            src_strides[a] = src_strides[a + 1] * self.shape[a + 1];
        }
        let rev_strides: Vec<usize> = src_strides.iter().rev().copied().collect();
        let mut idx = vec![0usize; nd];
        for _ in 0..self.data.len() {
            let o: usize = idx.iter().zip(&rev_strides).map(|(i, s)| i * s).sum();
            out.push(self.data[o]);
            for a in (0..nd).rev() {
                idx[a] += 1;
                if idx[a] < new_shape[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        Array {
            shape: new_shape,
            data: out,
        }
    }
}

fn checked_len(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| Error::InvalidArgument(format!("shape {shape:?} overflows")))
}

/// An array whose element type is known only at run time (from a file header).
#[derive(Clone, Debug, PartialEq)]
pub enum DynArray {
    U8(Array<u8>),
    I8(Array<i8>),
    U16(Array<u16>),
    I16(Array<i16>),
    U32(Array<u32>),
    I32(Array<i32>),
    U64(Array<u64>),
    I64(Array<i64>),
    F32(Array<f32>),
    F64(Array<f64>),
}

macro_rules! dyn_dispatch {
    ($self:expr, $a:ident => $body:expr) => {
        match $self {
            DynArray::U8($a) => $body,
            DynArray::I8($a) => $body,
            DynArray::U16($a) => $body,
            DynArray::I16($a) => $body,
            DynArray::U32($a) => $body,
            DynArray::I32($a) => $body,
            DynArray::U64($a) => $body,
            DynArray::I64($a) => $body,
            DynArray::F32($a) => $body,
            DynArray::F64($a) => $body,
        }
    };
}

/// Conversion between a typed [`Array`] and [`DynArray`].
pub trait IntoDyn: Element {
    fn into_dyn(a: Array<Self>) -> DynArray;
    fn from_dyn(a: DynArray) -> std::result::Result<Array<Self>, DynArray>;
}

macro_rules! into_dyn {
    ($t:ty, $v:ident) => {
        impl IntoDyn for $t {
            fn into_dyn(a: Array<Self>) -> DynArray {
                DynArray::$v(a)
            }
            fn from_dyn(a: DynArray) -> std::result::Result<Array<Self>, DynArray> {
                match a {
                    DynArray::$v(a) => Ok(a),
                    other => Err(other),
                }
            }
        }
    };
}
into_dyn!(u8, U8);
into_dyn!(i8, I8);
into_dyn!(u16, U16);
into_dyn!(i16, I16);
into_dyn!(u32, U32);
into_dyn!(i32, I32);
into_dyn!(u64, U64);
into_dyn!(i64, I64);
into_dyn!(f32, F32);
into_dyn!(f64, F64);

impl DynArray {
    /// The extent of each axis.
    pub fn shape(&self) -> &[usize] {
        dyn_dispatch!(self, a => a.shape())
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        dyn_dispatch!(self, a => a.data_type())
    }

    /// See [`Array::reversed_axes`].
    pub fn reversed_axes(&self) -> DynArray {
        dyn_dispatch!(self, a => a.reversed_axes().into())
    }

    /// The typed array; fails if the stored type is not `T`.
    pub fn into_typed<T: IntoDyn>(self) -> Result<Array<T>> {
        let stored = self.data_type();
        T::from_dyn(self).map_err(|_| Error::DataTypeMismatch {
            stored: stored.to_string(),
            requested: T::DATA_TYPE.to_string(),
        })
    }

    /// Builds a typed array of runtime type `dtype` from little-endian bytes.
    pub(crate) fn from_le_bytes(dtype: DataType, shape: Vec<usize>, bytes: &[u8]) -> Result<Self> {
        fn mk<T: IntoDyn>(shape: Vec<usize>, bytes: &[u8]) -> Result<DynArray> {
            Ok(T::into_dyn(Array::new(
                shape,
                crate::dtype::decode_le::<T>(bytes),
            )?))
        }
        match dtype {
            DataType::U8 => mk::<u8>(shape, bytes),
            DataType::I8 => mk::<i8>(shape, bytes),
            DataType::U16 => mk::<u16>(shape, bytes),
            DataType::I16 => mk::<i16>(shape, bytes),
            DataType::U32 => mk::<u32>(shape, bytes),
            DataType::I32 => mk::<i32>(shape, bytes),
            DataType::U64 => mk::<u64>(shape, bytes),
            DataType::I64 => mk::<i64>(shape, bytes),
            DataType::F32 => mk::<f32>(shape, bytes),
            DataType::F64 => mk::<f64>(shape, bytes),
        }
    }
}

impl<T: IntoDyn> From<Array<T>> for DynArray {
    fn from(a: Array<T>) -> Self {
        T::into_dyn(a)
    }
}

/// A half-open box of voxels `[min, max)`, coordinates `[x, y, z]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BBox {
    pub min: [i64; 3],
    pub max: [i64; 3],
}

impl BBox {
    /// The box `[min, max)`.
    pub fn new(min: [i64; 3], max: [i64; 3]) -> Self {
        BBox { min, max }
    }

    /// The box starting at `offset` with `size` voxels along x, y, z.
    pub fn from_offset_size(offset: [i64; 3], size: [u64; 3]) -> Self {
        BBox {
            min: offset,
            max: [
                offset[0].saturating_add(size[0] as i64),
                offset[1].saturating_add(size[1] as i64),
                offset[2].saturating_add(size[2] as i64),
            ],
        }
    }

    /// Voxels along x, y, z (zero where max <= min).
    pub fn size(&self) -> [u64; 3] {
        std::array::from_fn(|a| (self.max[a] - self.min[a]).max(0) as u64)
    }

    /// The shape of an array covering this box: `[z, y, x]`.
    pub fn shape_zyx(&self) -> [usize; 3] {
        let s = self.size();
        [s[2] as usize, s[1] as usize, s[0] as usize]
    }

    /// Number of voxels.
    pub fn volume(&self) -> u64 {
        self.size().iter().product()
    }

    /// True when the box holds no voxel.
    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.max[a] <= self.min[a])
    }

    /// The overlap of two boxes (possibly empty).
    pub fn intersection(&self, other: &BBox) -> BBox {
        BBox {
            min: std::array::from_fn(|a| self.min[a].max(other.min[a])),
            max: std::array::from_fn(|a| self.max[a].min(other.max[a])),
        }
    }

    /// True when `other` lies entirely inside this box.
    pub fn contains_box(&self, other: &BBox) -> bool {
        (0..3).all(|a| self.min[a] <= other.min[a] && other.max[a] <= self.max[a])
    }
}

/// Copies a box of `size` (`[c, z, y, x]`) from a C-ordered 4-d source at `src_at` into a
/// 4-d destination at `dst_at`. Callers guarantee the boxes are in bounds.
pub(crate) fn copy_box<T: Copy>(
    src: &[T],
    src_shape: [usize; 4],
    src_at: [usize; 4],
    dst: &mut [T],
    dst_shape: [usize; 4],
    dst_at: [usize; 4],
    size: [usize; 4],
) {
    let row = size[3];
    if row == 0 {
        return;
    }
    for c in 0..size[0] {
        for z in 0..size[1] {
            for y in 0..size[2] {
                let s = (((src_at[0] + c) * src_shape[1] + src_at[1] + z) * src_shape[2]
                    + src_at[2]
                    + y)
                    * src_shape[3]
                    + src_at[3];
                let d = (((dst_at[0] + c) * dst_shape[1] + dst_at[1] + z) * dst_shape[2]
                    + dst_at[2]
                    + y)
                    * dst_shape[3]
                    + dst_at[3];
                dst[d..d + row].copy_from_slice(&src[s..s + row]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Array::new(vec![2, 3], vec![0u8; 6]).is_ok());
        assert!(matches!(
            Array::new(vec![2, 3], vec![0u8; 5]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Array::<u8>::zeros(vec![usize::MAX, 3]).is_err());
    }

    #[test]
    fn reversed_axes_moves_elements() {
        // shape [z=2, y=3, x=4], value = 100z + 10y + x
        let data: Vec<u32> = (0..2)
            .flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| 100 * z + 10 * y + x)))
            .collect();
        let a = Array::new(vec![2, 3, 4], data).unwrap();
        let r = a.reversed_axes();
        assert_eq!(r.shape(), &[4, 3, 2]);
        for z in 0..2 {
            for y in 0..3 {
                for x in 0..4 {
                    assert_eq!(r.get(&[x, y, z]), a.get(&[z, y, x]));
                }
            }
        }
        assert_eq!(r.reversed_axes(), a);
    }

    #[test]
    fn get_set_bounds() {
        let mut a = Array::<u16>::zeros(vec![2, 2]).unwrap();
        assert!(a.set(&[1, 0], 7));
        assert!(!a.set(&[2, 0], 7));
        assert_eq!(a.get(&[1, 0]), Some(7));
        assert_eq!(a.get(&[0, 0, 0]), None);
        assert_eq!(a.data(), &[0, 0, 7, 0]);
    }

    #[test]
    fn bbox_geometry() {
        let b = BBox::from_offset_size([-2, 0, 5], [4, 3, 2]);
        assert_eq!(b.max, [2, 3, 7]);
        assert_eq!(b.shape_zyx(), [2, 3, 4]);
        assert_eq!(b.volume(), 24);
        let c = BBox::new([0, 1, 6], [10, 10, 10]);
        assert_eq!(c.intersection(&b), BBox::new([0, 1, 6], [2, 3, 7]));
        assert!(BBox::new([0, 0, 0], [1, 0, 1]).is_empty());
        assert!(b.contains_box(&BBox::new([-1, 0, 5], [2, 1, 6])));
        assert!(!b.contains_box(&c));
    }

    #[test]
    fn copy_box_pastes_region() {
        let src: Vec<u8> = (0..24).collect(); // [1, 2, 3, 4]
        let mut dst = vec![0u8; 2 * 4 * 5];
        copy_box(
            &src,
            [1, 2, 3, 4],
            [0, 1, 1, 1],
            &mut dst,
            [1, 2, 4, 5],
            [0, 0, 2, 3],
            [1, 1, 2, 2],
        );
        // src[z=1, y=1..3, x=1..3] = 17,18,21,22 -> dst[z=0, y=2..4, x=3..5]
        assert_eq!(dst[2 * 5 + 3..2 * 5 + 5], [17, 18]);
        assert_eq!(dst[3 * 5 + 3..3 * 5 + 5], [21, 22]);
        assert_eq!(dst.iter().filter(|&&v| v != 0).count(), 4);
    }

    #[test]
    fn dyn_array_typing() {
        let d: DynArray = Array::new(vec![2], vec![1u32, 2]).unwrap().into();
        assert_eq!(d.data_type(), DataType::U32);
        assert_eq!(d.shape(), &[2]);
        assert!(matches!(
            d.clone().into_typed::<u64>(),
            Err(Error::DataTypeMismatch { .. })
        ));
        assert_eq!(d.into_typed::<u32>().unwrap().data(), &[1, 2]);
    }
}
