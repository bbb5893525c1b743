//! Our Draco fragments decoded by Google's decoder (DracoPy, pinned in
//! `tests/python/requirements.txt`, installed into `.venv-mesh` by `tests/python/venv.sh`):
//! positions and faces must come back exactly as we expect them.

use std::path::Path;
use std::process::Command;

use cg_mesh::draco::{self, DracoOptions, GridQuantization};
use cg_mesh::{legacy, mesh_labels, simplify, BlockGeometry, Mesh, SimplifyParams};

/// Writes `NAME.drc` and `NAME.expected` (the mesh Draco should decode to, legacy layout),
/// entropy coded.
fn write_case(dir: &Path, name: &str, mesh: &Mesh, q: &GridQuantization) {
    write_coded(dir, name, mesh, q, &DracoOptions::default());
}

/// [`write_case`] in all four codings (`NAME`, `NAME-plain-indices`, `NAME-plain-positions`,
/// `NAME-plain`).
fn write_all_codings(dir: &Path, name: &str, mesh: &Mesh, q: &GridQuantization) {
    for (suffix, c, p) in [
        ("", true, true),
        ("-plain-indices", false, true),
        ("-plain-positions", true, false),
        ("-plain", false, false),
    ] {
        let options = DracoOptions {
            compress_connectivity: c,
            compress_positions: p,
        };
        write_coded(dir, &format!("{name}{suffix}"), mesh, q, &options);
    }
}

fn write_coded(dir: &Path, name: &str, mesh: &Mesh, q: &GridQuantization, options: &DracoOptions) {
    let expected = Mesh {
        vertices: mesh
            .vertices
            .iter()
            .map(|v| q.snap(*v).expect("inside the box"))
            .collect(),
        triangles: mesh.triangles.clone(),
    };
    let bytes = draco::encode_with(mesh, q, options).unwrap();
    // Our own decoder agrees with the expectation before Google's is asked.
    assert_eq!(draco::decode(&bytes).unwrap(), expected, "{name}");
    std::fs::write(dir.join(format!("{name}.drc")), bytes).unwrap();
    std::fs::write(
        dir.join(format!("{name}.expected")),
        legacy::encode(&expected).unwrap(),
    )
    .unwrap();
}

fn ball_volume(n: usize, centre: [f64; 3], r: f64) -> Vec<u32> {
    let mut v = vec![0u32; n * n * n];
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let d2 = (x as f64 - centre[0]).powi(2)
                    + (y as f64 - centre[1]).powi(2)
                    + (z as f64 - centre[2]).powi(2);
                if d2 <= r * r {
                    v[(z * n + y) * n + x] = 1 + (x > n / 2) as u32;
                }
            }
        }
    }
    v
}

#[test]
fn google_decoder_reads_our_fragments_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let res = [8.0, 8.0, 40.0];

    // A single voxel: 6 vertices, one-byte indices.
    let mut one = vec![0u8; 27];
    one[13] = 1;
    let geo = BlockGeometry::new([100, 200, 30], res);
    let m = &mesh_labels(&one, [3; 3], &geo).unwrap()[0].mesh;
    write_all_codings(
        dir.path(),
        "voxel",
        m,
        &GridQuantization::for_mesh(m, 5).unwrap(),
    );

    // Two chunk fragments of two labels, simplified, on the lattice shared by both chunks:
    // 256..65535 vertices use two-byte indices.
    let n = 48;
    let labels = ball_volume(n, [23.5, 23.5, 23.5], 20.0);
    for (i, x0) in [0usize, 24].into_iter().enumerate() {
        let mut block = Vec::new();
        for z in 0..n {
            for y in 0..n {
                block.extend_from_slice(
                    &labels[(z * n + y) * n + x0..(z * n + y) * n + (x0 + 25).min(n)],
                );
            }
        }
        let shape = [n, n, (x0 + 25).min(n) - x0];
        let geo = BlockGeometry::new([x0 as i64, 0, 0], res);
        let planes = geo.face_planes_nm(shape);
        let q = GridQuantization::for_chunk(
            planes.map(|p| p[0] as f64),
            planes.map(|p| p[1] as f64),
            5,
        )
        .unwrap();
        for lm in mesh_labels(&block, shape, &geo).unwrap() {
            write_all_codings(
                dir.path(),
                &format!("chunk{i}-label{}-full", lm.label),
                &lm.mesh,
                &q,
            );
            let s = simplify(
                &lm.mesh,
                &SimplifyParams {
                    reduction: 20.0,
                    max_error_nm: 40.0,
                    locked_planes: Some(planes),
                    keep_components: true,
                    distance_bound: true,
                },
            );
            write_case(
                dir.path(),
                &format!("chunk{i}-label{}-simplified", lm.label),
                &s.mesh,
                &q,
            );
        }
    }

    // Over 65535 vertices: varint indices.
    let side = 300u32;
    let big = Mesh {
        vertices: (0..side * side)
            .map(|i| [(i % side) as f32 * 3.0, (i / side) as f32 * 3.0, 7.0])
            .collect(),
        triangles: (0..side - 1)
            .flat_map(|r| {
                (0..side - 1).map(move |c| [r * side + c, r * side + c + 1, (r + 1) * side + c])
            })
            .collect(),
    };
    write_all_codings(
        dir.path(),
        "grid90000",
        &big,
        &GridQuantization::for_mesh(&big, 1).unwrap(),
    );

    run_checker(dir.path());
}

fn run_checker(dir: &Path) {
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let venv = Command::new("bash")
        .arg(python_dir.join("venv.sh"))
        .output()
        .expect("bash runs tests/python/venv.sh");
    assert!(
        venv.status.success(),
        "could not set up .venv-mesh (needs python3 with venv, e.g. `apt-get install python3 \
         python3-venv`, and PyPI for the pinned DracoPy):\n{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let check = Command::new(&python)
        .arg(python_dir.join("check_draco.py"))
        .arg(dir)
        .output()
        .expect("the venv's python runs");
    let report = String::from_utf8_lossy(&check.stdout);
    println!("{report}{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        check.status.success(),
        "DracoPy disagrees with our encoder:\n{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(report.contains(" 0 failed"), "{report}");
}
