//! Precomputed volumes end to end: the NeuroProof fixture (250³ uint32, real neurons) through
//! every layout and back, partial writes, multi-channel data, and clear errors on corrupt
//! files.

use std::path::PathBuf;

use cg_volume::{
    npy, Array, BBox, DataEncoding, DataType, Encoding, Error, Info, Scale, ShardHash, ShardSpec,
    Store, Volume, VolumeOptions, VolumeType,
};

/// `shared/data` beside the repository (CI lays it there), or `$CG_SHARED_DATA`.
fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("CG_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "fixture {} missing: set CG_SHARED_DATA to the shared data folder",
        p.display()
    );
    p
}

fn seg_info(encoding: Encoding, sharding: Option<ShardSpec>, size: [u64; 3]) -> Info {
    let mut scale = Scale::new(size, [10.0, 10.0, 10.0], [64, 64, 64], encoding);
    scale.voxel_offset = [100, -20, 7];
    scale.sharding = sharding;
    Info::new(VolumeType::Segmentation, DataType::U32, 1, scale)
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

/// The sub-array of a `[z, y, x]` array at `[z0, y0, x0]` of shape `shape`.
fn crop(a: &Array<u32>, at: [usize; 3], shape: [usize; 3]) -> Array<u32> {
    let s = a.shape();
    let mut out = Vec::with_capacity(shape.iter().product());
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let row = ((at[0] + z) * s[1] + at[1] + y) * s[2] + at[2];
            out.extend_from_slice(&a.data()[row..row + shape[2]]);
        }
    }
    Array::new(shape.to_vec(), out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neuroproof_round_trips_through_every_layout() {
    let gt = npy::read_as::<u32>(fixture("neuroproof-sample2-gt.npy")).unwrap();
    assert_eq!(gt.shape(), &[250, 250, 250]);
    let murmur_gzip = ShardSpec::new(
        0,
        ShardHash::Murmurhash3X86_128,
        2,
        3,
        DataEncoding::Gzip,
        DataEncoding::Gzip,
    )
    .unwrap();
    let identity_raw = ShardSpec::new(
        1,
        ShardHash::Identity,
        1,
        2,
        DataEncoding::Raw,
        DataEncoding::Raw,
    )
    .unwrap();
    let layouts = [
        (Encoding::CompressedSegmentation, None, true),
        (Encoding::CompressedSegmentation, None, false),
        (Encoding::Raw, None, true),
        (Encoding::Raw, None, false),
        (
            Encoding::CompressedSegmentation,
            Some(murmur_gzip.clone()),
            false,
        ),
        (
            Encoding::CompressedSegmentation,
            Some(identity_raw.clone()),
            false,
        ),
        (Encoding::Raw, Some(murmur_gzip), false),
        (Encoding::Raw, Some(identity_raw), false),
    ];
    for (encoding, sharding, gzip) in layouts {
        let what = format!("{encoding:?} sharded={} gzip={gzip}", sharding.is_some());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let info = seg_info(encoding.clone(), sharding.clone(), [250, 250, 250]);
        let vol = Volume::create(Store::open(&url).unwrap(), info)
            .await
            .unwrap()
            .with_options(VolumeOptions {
                gzip,
                ..Default::default()
            });
        vol.write_box(0, [100, -20, 7], &gt).await.unwrap();

        // What is on disk follows the layout.
        let files = files_under(&dir.path().join("10_10_10"));
        match &sharding {
            None => {
                // 4³ chunks, the last of each axis clipped at 250 (192..250).
                assert_eq!(files.len(), 64, "{what}");
                assert!(files.iter().all(|f| f.ends_with(".gz") == gzip), "{what}");
                assert!(
                    files
                        .iter()
                        .any(|f| f.starts_with("292-350_172-230_199-257")),
                    "{what}"
                );
            }
            Some(spec) => {
                assert!(files.iter().all(|f| f.ends_with(".shard")), "{what}");
                assert!(
                    files.len() as u64 <= spec.num_shards() && files.len() > 1,
                    "{what}"
                );
            }
        }

        // Reopened from the URL, the whole volume and an unaligned box read back equal.
        let back = Volume::open(&url).await.unwrap();
        assert_eq!(back.info().scales[0].encoding, encoding);
        let all = back
            .read_box::<u32>(0, back.info().scales[0].bounds())
            .await
            .unwrap();
        assert!(all == gt, "{what}: volume differs");
        let sub = BBox::new([137, 41, 70], [301, 99, 200]);
        let got = back.read_box::<u32>(0, sub).await.unwrap();
        assert_eq!(got, crop(&gt, [63, 61, 37], [130, 58, 164]), "{what}");
    }
}

#[tokio::test]
async fn partial_writes_patch_existing_chunks() {
    let gt = npy::read_as::<u32>(fixture("gala-train-gt.npy")).unwrap(); // [50, 100, 200]
    for sharded in [false, true] {
        let spec = sharded.then(|| {
            ShardSpec::new(
                0,
                ShardHash::Murmurhash3X86_128,
                1,
                1,
                DataEncoding::Gzip,
                DataEncoding::Raw,
            )
            .unwrap()
        });
        let mut info = seg_info(Encoding::CompressedSegmentation, spec, [200, 100, 50]);
        info.scales[0].voxel_offset = [0, 0, 0];
        info.scales[0].chunk_sizes = vec![[32, 32, 16]];
        let vol = Volume::create(Store::memory(), info).await.unwrap();
        vol.write_box(0, [0, 0, 0], &gt).await.unwrap();
        // Overwrite an unaligned box with a constant label; missing nothing else.
        let patch = Array::filled(vec![9, 21, 45], 777_777u32).unwrap();
        vol.write_box(0, [17, 30, 5], &patch).await.unwrap();
        let mut want = gt.clone();
        for z in 5..14 {
            for y in 30..51 {
                for x in 17..62 {
                    want.set(&[z, y, x], 777_777);
                }
            }
        }
        let got = vol
            .read_box::<u32>(0, BBox::new([0, 0, 0], [200, 100, 50]))
            .await
            .unwrap();
        assert!(got == want, "sharded={sharded}");
    }
}

#[tokio::test]
async fn multichannel_u64_and_missing_chunks() {
    let mut scale = Scale::new([20, 10, 6], [4.0, 4.0, 40.0], [8, 8, 4], Encoding::Raw);
    scale.voxel_offset = [-5, 0, 0];
    let info = Info::new(VolumeType::Image, DataType::U64, 3, scale);
    let vol = Volume::create(Store::memory(), info).await.unwrap();
    let n = 3 * 6 * 10 * 20;
    let data = Array::new(vec![3, 6, 10, 20], (0..n as u64).map(|v| v << 33).collect()).unwrap();
    vol.write_box(0, [-5, 0, 0], &data).await.unwrap();
    let got = vol
        .read_box::<u64>(0, BBox::new([-5, 0, 0], [15, 10, 6]))
        .await
        .unwrap();
    assert_eq!(got, data);
    // A 3-d array is refused for a 3-channel volume.
    let flat = Array::<u64>::zeros(vec![1, 1, 1]).unwrap();
    assert!(matches!(
        vol.write_box(0, [0, 0, 0], &flat).await,
        Err(Error::InvalidArgument(_))
    ));
    // Out of bounds.
    assert!(matches!(
        vol.read_box::<u64>(0, BBox::new([-6, 0, 0], [0, 1, 1]))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(vol.scale(1).is_err());

    // Missing chunks: an error naming the chunk, or zeros with fill_missing.
    let info = seg_info(Encoding::Raw, None, [100, 100, 100]);
    let store = Store::memory();
    let vol = Volume::create(store.clone(), info).await.unwrap();
    let b = BBox::new([100, -20, 7], [110, -10, 17]);
    let e = vol.read_box::<u32>(0, b).await.unwrap_err();
    assert!(e.to_string().contains("100-164_-20-44_7-71"), "{e}");
    let vol = vol.with_options(VolumeOptions {
        fill_missing: true,
        ..Default::default()
    });
    let got = vol.read_box::<u32>(0, b).await.unwrap();
    assert!(got.data().iter().all(|&v| v == 0));
}

#[tokio::test]
async fn corrupt_files_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let store = Store::open(&path).unwrap();
    let vol = Volume::create(store.clone(), seg_info(Encoding::Raw, None, [64, 64, 64]))
        .await
        .unwrap()
        .with_options(VolumeOptions {
            gzip: false,
            ..Default::default()
        });
    let data = Array::filled(vec![64, 64, 64], 5u32).unwrap();
    vol.write_box(0, [100, -20, 7], &data).await.unwrap();
    let bounds = vol.info().scales[0].bounds();
    let chunk = dir.path().join("10_10_10/100-164_-20-44_7-71");

    // Truncated raw chunk.
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..1000]).unwrap();
    let e = vol.read_box::<u32>(0, bounds).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("1000 bytes, expected 1048576"),
        "{e}"
    );

    // Truncated gzip chunk.
    std::fs::remove_file(&chunk).unwrap();
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap()
    };
    let gz_path = dir.path().join("10_10_10/100-164_-20-44_7-71.gz");
    std::fs::write(&gz_path, &gz[..gz.len() / 2]).unwrap();
    let e = vol.read_box::<u32>(0, bounds).await.unwrap_err();
    assert!(e.to_string().contains("gzip"), "{e}");
    // The whole gzip file reads fine.
    std::fs::write(&gz_path, &gz).unwrap();
    assert_eq!(vol.read_box::<u32>(0, bounds).await.unwrap(), data);

    // Truncated compressed_segmentation chunk.
    let cs = Volume::create(
        Store::memory(),
        seg_info(Encoding::CompressedSegmentation, None, [64, 64, 64]),
    )
    .await
    .unwrap()
    .with_options(VolumeOptions {
        gzip: false,
        ..Default::default()
    });
    let noisy = Array::new(
        vec![64, 64, 64],
        (0..64 * 64 * 64u32).map(|v| v % 7).collect(),
    )
    .unwrap();
    cs.write_box(0, [100, -20, 7], &noisy).await.unwrap();
    let key = "10_10_10/100-164_-20-44_7-71";
    let b = cs.store().get(key).await.unwrap().unwrap();
    cs.store().put(key, b.slice(..b.len() - 100)).await.unwrap();
    let e = cs.read_box::<u32>(0, bounds).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");

    // Bad info JSON, and an info that is JSON but invalid.
    std::fs::write(dir.path().join("info"), b"{\"type\": \"segmentation\",").unwrap();
    let e = Volume::open(&path).await.unwrap_err();
    assert!(matches!(e, Error::InvalidMetadata { .. }), "{e}");
    let mut info = seg_info(Encoding::Raw, None, [64, 64, 64]);
    info.scales[0].encoding = Encoding::CompressedSegmentation;
    info.scales[0].compressed_segmentation_block_size = None;
    std::fs::write(dir.path().join("info"), serde_json::to_vec(&info).unwrap()).unwrap();
    let e = Volume::open(&path).await.unwrap_err();
    assert!(
        e.to_string().contains("compressed_segmentation_block_size"),
        "{e}"
    );
    // No info at all.
    let e = Volume::open(dir.path().join("nothing").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // Bad shard index.
    let spec = ShardSpec::new(
        0,
        ShardHash::Identity,
        1,
        0,
        DataEncoding::Raw,
        DataEncoding::Raw,
    )
    .unwrap();
    let sv = Volume::create(
        Store::memory(),
        seg_info(Encoding::Raw, Some(spec), [64, 64, 64]),
    )
    .await
    .unwrap();
    sv.write_box(0, [100, -20, 7], &data).await.unwrap();
    let mut shard = sv
        .store()
        .get("10_10_10/0.shard")
        .await
        .unwrap()
        .unwrap()
        .to_vec();
    shard[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    sv.store().put("10_10_10/0.shard", shard).await.unwrap();
    let sv = Volume::open_store(sv.store().clone()).await.unwrap();
    let e = sv.read_box::<u32>(0, bounds).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // Rewriting part of a corrupt shard refuses rather than dropping its entries.
    let e = sv
        .write_box(
            0,
            [100, -20, 7],
            &Array::filled(vec![1, 1, 1], 1u32).unwrap(),
        )
        .await;
    assert!(matches!(e, Err(Error::Corrupt { .. })), "{e:?}");
}
