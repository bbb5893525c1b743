//! The pipeline's input: affinities or a boundary map, from `.npy` (read whole), zarr (v2 or
//! v3) or a Neuroglancer precomputed volume (read a box at a time), local or in a bucket.
//!
//! A box is always answered as `Affinities::crop` of the whole volume would answer it: the
//! edges leaving the box through its low faces are 0. So a task sees the same numbers
//! whichever format the input came in.

use std::path::Path;

use anyhow::{bail, Context};
use cg_segmentation::{Affinities, Box3};
use cg_volume::{Array, Volume, ZarrArray};

/// How the input's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// f32 `(3, z, y, x)`: channel 0 links a voxel to the one before it in z, 1 in y, 2 in x.
    /// A precomputed volume holds them as 3 channels.
    Affinities,
    /// f32 `(z, y, x)`, 1 = membrane: affinities are `1 − max(b_u, b_v)`.
    Boundary,
}

pub enum Input {
    Memory(Affinities),
    Zarr(ZarrArray, InputKind),
    Precomputed(Volume, InputKind),
}

impl Input {
    /// Opens `spec`: a `.npy` file, a zarr array (a path or URL ending in `.zarr`, or any
    /// folder with `.zarray` / `zarr.json`), or a precomputed volume (`precomputed://URL`, or a
    /// folder with an `info` file).
    pub async fn open(spec: &str, kind: InputKind) -> anyhow::Result<Input> {
        if let Some(url) = spec.strip_prefix("precomputed://") {
            return Self::precomputed(url, kind).await;
        }
        if let Some(url) = spec.strip_prefix("zarr://") {
            return Self::zarr(url, kind).await;
        }
        let local = !spec.contains("://");
        if local && spec.ends_with(".npy") {
            return Self::npy(Path::new(spec), kind);
        }
        let url = if local {
            let p = Path::new(spec)
                .canonicalize()
                .with_context(|| format!("input {spec} does not exist"))?;
            if p.join("info").exists() {
                return Self::precomputed(&format!("file://{}", p.display()), kind).await;
            }
            format!("file://{}", p.display())
        } else {
            spec.to_string()
        };
        if url.trim_end_matches('/').ends_with(".zarr") || local {
            return Self::zarr(&url, kind).await;
        }
        bail!(
            "input {spec}: give a .npy file, a zarr array, or precomputed://URL for a \
             precomputed volume"
        )
    }

    fn npy(path: &Path, kind: InputKind) -> anyhow::Result<Input> {
        let arr = cg_volume::npy::read_as::<f32>(path)
            .with_context(|| format!("reading {} as float32 .npy", path.display()))?;
        let shape = arr.shape().to_vec();
        let affs = match (kind, shape.as_slice()) {
            (InputKind::Boundary, &[z, y, x]) => Affinities::from_boundary([z, y, x], arr.data())?,
            (InputKind::Affinities, &[3, z, y, x]) => Affinities::new([z, y, x], arr.into_data())?,
            _ => bail!(
                "{}: shape {shape:?} does not fit --input-kind {kind:?} (boundary: (z, y, x); \
                 affinities: (3, z, y, x))",
                path.display()
            ),
        };
        Ok(Input::Memory(affs))
    }

    async fn zarr(url: &str, kind: InputKind) -> anyhow::Result<Input> {
        let z = ZarrArray::open(url)
            .await
            .with_context(|| format!("opening zarr array {url}"))?;
        let rank = z.shape().len();
        match (kind, rank) {
            (InputKind::Boundary, 3) | (InputKind::Affinities, 4) => {}
            _ => bail!(
                "zarr array {url}: shape {:?} does not fit {kind:?} (boundary: (z, y, x); \
                 affinities: (3, z, y, x))",
                z.shape()
            ),
        }
        if kind == InputKind::Affinities && z.shape()[0] != 3 {
            bail!(
                "zarr array {url}: affinities need 3 channels first, got {:?}",
                z.shape()
            );
        }
        if z.data_type() != cg_volume::DataType::F32 {
            bail!(
                "zarr array {url}: data type {}, need float32",
                z.data_type()
            );
        }
        Ok(Input::Zarr(z, kind))
    }

    async fn precomputed(url: &str, kind: InputKind) -> anyhow::Result<Input> {
        let v = Volume::open(url)
            .await
            .with_context(|| format!("opening precomputed volume {url}"))?;
        let channels = v.info().num_channels;
        match (kind, channels) {
            (InputKind::Boundary, 1) | (InputKind::Affinities, 3) => {}
            _ => bail!(
                "precomputed volume {url}: {channels} channel(s) do not fit {kind:?} \
                 (boundary: 1, affinities: 3)"
            ),
        }
        if v.info().data_type != cg_volume::DataType::F32 {
            bail!(
                "precomputed volume {url}: data type {}, need float32",
                v.info().data_type
            );
        }
        Ok(Input::Precomputed(v, kind))
    }

    /// Shape (z, y, x).
    pub fn shape(&self) -> anyhow::Result<[usize; 3]> {
        Ok(match self {
            Input::Memory(a) => a.shape(),
            Input::Zarr(z, _) => {
                let s = z.shape();
                let n = s.len();
                [s[n - 3], s[n - 2], s[n - 1]]
            }
            Input::Precomputed(v, _) => v.scale(0)?.bounds().shape_zyx(),
        })
    }

    /// The affinities of box `b` (z, y, x), as `crop` of the whole volume gives them.
    pub async fn read(&self, b: &Box3) -> anyhow::Result<Affinities> {
        let shape = self.shape()?;
        if !b.fits(shape) {
            bail!(
                "box {:?}..{:?} (z, y, x) is empty or outside the input {shape:?}",
                b.start,
                b.stop
            );
        }
        let bs = b.shape();
        match self {
            Input::Memory(a) => Ok(a.crop(b)?),
            Input::Zarr(z, kind) => match kind {
                InputKind::Boundary => {
                    let arr: Array<f32> = z.read_region(&b.start, &bs).await?;
                    Ok(Affinities::from_boundary(bs, arr.data())?)
                }
                InputKind::Affinities => {
                    let mut start = vec![0];
                    start.extend(b.start);
                    let mut size = vec![3];
                    size.extend(bs);
                    let arr: Array<f32> = z.read_region(&start, &size).await?;
                    Ok(zero_low_faces(Affinities::new(bs, arr.into_data())?))
                }
            },
            Input::Precomputed(v, kind) => {
                let s = v.scale(0)?;
                let bbox = super::grid::volume_box(b, s.voxel_offset);
                let arr: Array<f32> = v.read_box(0, bbox).await?;
                match kind {
                    InputKind::Boundary => Ok(Affinities::from_boundary(bs, arr.data())?),
                    InputKind::Affinities => {
                        Ok(zero_low_faces(Affinities::new(bs, arr.into_data())?))
                    }
                }
            }
        }
    }
}

/// Drops the edges that leave a box through its low faces, as `Affinities::crop` does.
fn zero_low_faces(mut a: Affinities) -> Affinities {
    let [nz, ny, nx] = a.shape();
    let n = nz * ny * nx;
    let data = a.data_mut();
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            if z == 0 {
                data[row..row + nx].fill(0.0);
            }
            if y == 0 {
                data[n + row..n + row + nx].fill(0.0);
            }
            data[2 * n + row] = 0.0;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundary(shape: [usize; 3]) -> Vec<f32> {
        let n = shape.iter().product::<usize>();
        (0..n).map(|i| ((i * 7919) % 101) as f32 / 100.0).collect()
    }

    #[tokio::test]
    async fn every_format_answers_a_box_like_crop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = [6usize, 7, 9];
        let b = boundary(shape);
        let whole = Affinities::from_boundary(shape, &b).expect("affinities");
        let boxes = [
            Box3::new([0, 0, 0], shape),
            Box3::new([1, 2, 3], [5, 7, 8]),
            Box3::new([2, 0, 4], [3, 3, 9]),
        ];

        // .npy, both kinds.
        let bpath = dir.path().join("b.npy");
        cg_volume::npy::write(
            &bpath,
            &Array::new(shape.to_vec(), b.clone()).expect("array"),
        )
        .expect("write");
        let apath = dir.path().join("a.npy");
        let mut ashape = vec![3];
        ashape.extend(shape);
        cg_volume::npy::write(
            &apath,
            &Array::new(ashape, whole.data().to_vec()).expect("array"),
        )
        .expect("write");
        let inputs = [
            Input::open(bpath.to_str().expect("utf-8"), InputKind::Boundary)
                .await
                .expect("npy boundary"),
            Input::open(apath.to_str().expect("utf-8"), InputKind::Affinities)
                .await
                .expect("npy affinities"),
        ];
        for input in &inputs {
            assert_eq!(input.shape().expect("shape"), shape);
            for bx in &boxes {
                let got = input.read(bx).await.expect("read");
                assert_eq!(got, whole.crop(bx).expect("crop"), "{bx:?}");
            }
        }
        assert!(
            Input::open(bpath.to_str().expect("utf-8"), InputKind::Affinities)
                .await
                .is_err()
        );
        let outside = Box3::new([0, 0, 0], [7, 7, 9]);
        assert!(inputs[0].read(&outside).await.is_err());

        // Affinities through the low-face rule, as a zarr or precomputed reader gives them.
        let bx = &boxes[1];
        let full = Affinities::new(bx.shape(), {
            let mut v = Vec::new();
            for c in 0..3 {
                let ch = whole.channel(c);
                for z in bx.start[0]..bx.stop[0] {
                    for y in bx.start[1]..bx.stop[1] {
                        for x in bx.start[2]..bx.stop[2] {
                            v.push(ch[(z * shape[1] + y) * shape[2] + x]);
                        }
                    }
                }
            }
            v
        })
        .expect("affinities");
        assert_eq!(zero_low_faces(full), whole.crop(bx).expect("crop"));
    }
}
