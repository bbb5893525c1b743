//! Interop: volumes and shards written by cloud-volume 12.15.2 (see data/make_fixtures.py),
//! with the expected arrays saved by NumPy, read back through cg-volume; and cg-volume's own
//! compressed_segmentation encoding compared byte for byte with cloud-volume's.

use std::path::PathBuf;

use bytes::Bytes;
use cg_volume::{cseg, npy, Array, BBox, Error, ShardReader, ShardSpec, Store, Volume};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cloudvolume")
        .join(name)
}

async fn open(name: &str) -> Volume {
    Volume::open(data(name).to_str().unwrap()).await.unwrap()
}

#[tokio::test]
async fn reads_gzipped_compressed_segmentation_u64() {
    let vol = open("cseg_gzip").await;
    let want = npy::read_as::<u64>(data("cseg_gzip.npy")).unwrap();
    assert_eq!(want.shape(), &[11, 29, 37]);
    let bounds = vol.info().scales[0].bounds();
    assert_eq!(bounds, BBox::new([3, -2, 5], [40, 27, 16]));
    let got = vol.read_box::<u64>(0, bounds).await.unwrap();
    assert_eq!(got, want);
    // An unaligned inner box.
    let sub = BBox::new([10, 0, 7], [30, 20, 15]);
    let got = vol.read_box::<u64>(0, sub).await.unwrap();
    assert_eq!(got.shape(), &[8, 20, 20]);
    for (z, y, x) in [(0, 0, 0), (7, 19, 19), (3, 11, 5)] {
        let w = want.get(&[z + 2, y + 2, x + 7]);
        assert_eq!(got.get(&[z, y, x]), w);
    }
}

#[tokio::test]
async fn our_compressed_segmentation_matches_cloud_volume_bytes() {
    let vol = open("cseg_gzip").await;
    let want = npy::read_as::<u64>(data("cseg_gzip.npy")).unwrap();
    let s = &vol.info().scales[0];
    let block = s
        .compressed_segmentation_block_size
        .unwrap()
        .map(|v| v as usize);
    let mut compared = 0;
    for g in [[0, 0, 0], [2, 1, 1], [1, 0, 1]] {
        let cb = s.chunk_bbox(g);
        let key = vol.chunk_key(0, g).unwrap();
        let theirs = std::fs::read(data("cseg_gzip").join(format!("{key}.gz"))).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&theirs[..]), &mut raw)
            .unwrap();
        // Cut the chunk out of the expected array.
        let [nz, ny, nx] = cb.shape_zyx();
        let mut vals = Vec::with_capacity(nz * ny * nx);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let at = [
                        (cb.min[2] - 5) as usize + z,
                        (cb.min[1] + 2) as usize + y,
                        (cb.min[0] - 3) as usize + x,
                    ];
                    vals.push(want.get(&at).unwrap());
                }
            }
        }
        let ours = cseg::encode(&vals, [nx, ny, nz], 1, block).unwrap();
        assert_eq!(ours, raw, "chunk {g:?}");
        assert_eq!(
            cseg::decode::<u64>(&raw, [nx, ny, nz], 1, block).unwrap(),
            vals
        );
        compared += 1;
    }
    assert_eq!(compared, 3);
}

#[tokio::test]
async fn reads_two_channel_raw_u16() {
    let vol = open("raw_2ch").await;
    let want = npy::read_as::<u16>(data("raw_2ch.npy")).unwrap();
    assert_eq!(want.shape(), &[2, 7, 18, 20]);
    let got = vol
        .read_box::<u16>(0, vol.info().scales[0].bounds())
        .await
        .unwrap();
    assert_eq!(got, want);
    assert!(matches!(
        vol.read_box::<u32>(0, BBox::new([0, 0, 0], [1, 1, 1]))
            .await,
        Err(Error::DataTypeMismatch { .. })
    ));
}

#[tokio::test]
async fn reads_sharded_compressed_segmentation_u32() {
    let vol = open("sharded").await;
    let want = npy::read_as::<u32>(data("sharded.npy")).unwrap();
    let got = vol
        .read_box::<u32>(0, vol.info().scales[0].bounds())
        .await
        .unwrap();
    assert_eq!(got, want);
    let sub = BBox::new([5, 3, 2], [33, 21, 11]);
    let got = vol.read_box::<u32>(0, sub).await.unwrap();
    assert_eq!(got.get(&[0, 0, 0]), want.get(&[2, 3, 5]));
    assert_eq!(got.get(&[8, 17, 27]), want.get(&[10, 20, 32]));
}

#[tokio::test]
async fn reads_generic_shards_by_key() {
    let dir = data("generic_shards");
    let spec: ShardSpec =
        serde_json::from_slice(&std::fs::read(dir.join("spec.json")).unwrap()).unwrap();
    let keys: Array<u64> = npy::read_as(data("generic_shards_keys.npy")).unwrap();
    let reader = ShardReader::new(Store::open(dir.to_str().unwrap()).unwrap(), spec).unwrap();
    for &k in keys.data() {
        let want = format!("label-{k};").repeat((k % 7 + 1) as usize);
        assert_eq!(
            reader.get(k).await.unwrap(),
            Some(Bytes::from(want)),
            "key {k}"
        );
    }
    assert_eq!(reader.get(12345).await.unwrap(), None);
}
