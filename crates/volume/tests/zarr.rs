//! Zarr arrays written by zarr-python (v2 with numcodecs' c-blosc, and v3; see
//! data/make_zarr_fixtures.py) read back equal to the arrays NumPy saved beside them.

use std::path::PathBuf;

use cg_volume::{npy, Element, IntoDyn, ZarrArray};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/zarr")
        .join(name)
}

async fn check<T: Element + IntoDyn>(name: &str, version: u8) {
    let want = npy::read_as::<T>(data(&format!("{name}.npy"))).unwrap();
    let a = ZarrArray::open(data(name).to_str().unwrap()).await.unwrap();
    assert_eq!(a.zarr_format(), version, "{name}");
    assert_eq!(a.shape(), want.shape(), "{name}");
    assert_eq!(a.data_type(), T::DATA_TYPE, "{name}");
    let got = a.read_all::<T>().await.unwrap();
    assert!(got == want, "{name}: contents differ");
    // A region crossing chunk borders.
    let r = a.read_region::<T>(&[3, 5, 2], &[12, 9, 7]).await.unwrap();
    for (z, y, x) in [(0, 0, 0), (11, 8, 6), (5, 3, 2)] {
        assert_eq!(
            r.get(&[z, y, x]),
            want.get(&[z + 3, y + 5, x + 2]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn zarr_v2_uncompressed_gzip_zlib_fortran_big_endian() {
    check::<i32>("v2_zlib_f", 2).await;
    check::<u8>("v2_gzip_nested", 2).await;
    // Big-endian, with a missing chunk read as fill_value 3.
    check::<u32>("v2_raw_be", 2).await;
}

#[cfg(feature = "blosc")]
#[tokio::test]
async fn zarr_v2_blosc_from_c_blosc() {
    check::<u32>("v2_blosc_lz4", 2).await;
    check::<u16>("v2_blosc_zstd_bitshuffle", 2).await;
    check::<f32>("v2_blosc_blosclz", 2).await;
    check::<i64>("v2_blosc_zlib_f", 2).await;
}

#[tokio::test]
async fn zarr_v3_default_keys() {
    check::<u32>("v3_gzip", 3).await;
    check::<i16>("v3_raw", 3).await;
    #[cfg(feature = "blosc")]
    check::<u64>("v3_blosc", 3).await;
}
