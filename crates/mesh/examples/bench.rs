//! Meshing benchmark on a real segmentation, against zmesh on the same volume.
//!
//! ```sh
//! cargo run --release -p cg-mesh --example bench -- [--volume PATH] [--resolution 10,10,10]
//!     [--reduction 100] [--max-error 15] [--zmesh-max-error 40] [--chunk 128] [--runs 3]
//!     [--no-zmesh]
//! ```
//!
//! Default volume: `shared/data/neuroproof-sample2-gt.npy` in or beside the checkout (250³
//! uint32, (z, y, x), ~10 nm isotropic). Our `--max-error` is a bound on every original
//! vertex's distance to the simplified surface; zmesh's `max_error` is a quadric threshold
//! (at 40 nm its measured maximum is about 16 nm), so the defaults compare ours at 15 nm
//! with zmesh at 40 nm, both at the same reduction factor. Errors are measured the same way
//! for both meshers: vertex-to-surface distances between the unsimplified surface and the
//! simplified one, both ways.
//!
//! Measures our whole-volume meshing (MV/s), simplification of every label (one thread,
//! then all cores), triangles before and after; then the production path, chunk by chunk
//! (blocks with a 1-voxel overlap, faces locked, Draco and legacy encoding), on one thread
//! and on all cores, with the stitched meshes checked for cracks and measured for error.
//! zmesh (single-threaded; it has no threads) runs through `tests/python/zmesh_bench.py`
//! in `.venv-mesh` on the same volume in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cg_mesh::distance::SurfaceIndex;
use cg_mesh::draco::{self, GridQuantization};
use cg_mesh::{legacy, mesh_labels, simplify, simplify_many, BlockGeometry, Mesh, SimplifyParams};

struct Args {
    volume: PathBuf,
    resolution: [f64; 3],
    reduction: f32,
    max_error: f32,
    chunk: usize,
    runs: usize,
    zmesh: bool,
    zmesh_max_error: f32,
}

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = Args {
        volume: root.join("shared/data/neuroproof-sample2-gt.npy"),
        resolution: [10.0; 3],
        reduction: 100.0,
        max_error: 15.0,
        chunk: 128,
        runs: 3,
        zmesh: true,
        zmesh_max_error: 40.0,
    };
    if !args.volume.exists() {
        // shared/ may sit beside the checkout rather than inside it.
        args.volume = root.join("../shared/data/neuroproof-sample2-gt.npy");
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--volume" => args.volume = PathBuf::from(value()?),
            "--resolution" => {
                let v = value()?;
                let parts: Vec<f64> = v
                    .split(',')
                    .map(|p| p.parse().map_err(|e| format!("{v}: {e}")))
                    .collect::<Result<_, _>>()?;
                args.resolution = parts
                    .try_into()
                    .map_err(|_| "--resolution wants x,y,z".to_string())?;
            }
            "--reduction" => args.reduction = number(value()?)? as f32,
            "--max-error" => args.max_error = number(value()?)? as f32,
            "--chunk" => args.chunk = number(value()?)? as usize,
            "--runs" => args.runs = (number(value()?)? as usize).max(1),
            "--no-zmesh" => args.zmesh = false,
            "--zmesh-max-error" => args.zmesh_max_error = number(value()?)? as f32,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let array = match cg_volume::npy::read_as::<u32>(&args.volume) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "bench: cannot read {} as a uint32 volume: {e}",
                args.volume.display()
            );
            std::process::exit(1);
        }
    };
    let Ok(shape) = <[usize; 3]>::try_from(array.shape()) else {
        eprintln!(
            "bench: expected a 3-d volume, got shape {:?}",
            array.shape()
        );
        std::process::exit(1);
    };
    let labels = array.into_data();
    let voxels = labels.len() as f64;
    println!(
        "volume {} {:?} (z, y, x), resolution {:?} nm, reduction {}x, max error {} nm",
        args.volume.display(),
        shape,
        args.resolution,
        args.reduction,
        args.max_error
    );

    // --- Ours, whole volume as one block.
    let geo = BlockGeometry::new([0; 3], args.resolution);
    let mut mesh_times = Vec::new();
    let mut meshes = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        meshes = mesh_labels(&labels, shape, &geo).expect("volume shape matches");
        mesh_times.push(t.elapsed().as_secs_f64());
    }
    mesh_times.sort_by(f64::total_cmp);
    let t_mesh = mesh_times[0];
    let full: BTreeMap<u64, Mesh> = meshes.into_iter().map(|m| (m.label, m.mesh)).collect();
    let tri_full: usize = full.values().map(|m| m.triangles.len()).sum();
    let open_or_bad = full
        .values()
        .map(Mesh::topology)
        .filter(|t| t.non_manifold_edges + t.misoriented_edges > 0)
        .count();

    let params = SimplifyParams {
        reduction: args.reduction,
        max_error_nm: args.max_error,
        locked_planes: None,
        keep_components: true,
        distance_bound: true,
    };
    let t = Instant::now();
    let simplified: BTreeMap<u64, (Mesh, f32)> = full
        .iter()
        .map(|(&l, m)| {
            let s = simplify(m, &params);
            (l, (s.mesh, s.error_nm))
        })
        .collect();
    let t_simplify = t.elapsed().as_secs_f64();
    let tri_simplified: usize = simplified.values().map(|(m, _)| m.triangles.len()).sum();
    let reported_error = simplified.values().map(|(_, e)| *e).fold(0f32, f32::max);
    let ours_error = measure_errors(
        &full,
        simplified.iter().map(|(&l, (m, _))| (l, m)),
        args.max_error as f64,
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let refs: Vec<&Mesh> = full.values().collect();
    let t = Instant::now();
    let parallel = simplify_many(&refs, &params, threads);
    let t_parallel = t.elapsed().as_secs_f64();
    assert_eq!(
        parallel
            .iter()
            .map(|s| s.mesh.triangles.len())
            .sum::<usize>(),
        tri_simplified
    );

    println!("\nours (cg-mesh), whole volume, 1 thread:");
    println!(
        "  marching cubes   {:.3} s  {:.1} MV/s  ({} labels, {} triangles, {} with non-manifold or misoriented edges)",
        t_mesh,
        voxels / t_mesh / 1e6,
        full.len(),
        tri_full,
        open_or_bad
    );
    println!(
        "  simplification   {:.3} s  -> {} triangles ({:.1}x fewer)",
        t_simplify,
        tri_simplified,
        tri_full as f64 / tri_simplified.max(1) as f64
    );
    println!(
        "  mesh + simplify  {:.3} s  {:.2} MV/s",
        t_mesh + t_simplify,
        voxels / (t_mesh + t_simplify) / 1e6
    );
    println!(
        "  on {threads} threads: simplification {:.3} s, mesh + simplify {:.3} s  {:.2} MV/s",
        t_parallel,
        t_mesh + t_parallel,
        voxels / (t_mesh + t_parallel) / 1e6
    );
    println!("  meshoptimizer's error estimate: max {reported_error:.1} nm");
    println!("  measured error: {ours_error}");

    // --- Ours, chunked as in production: blocks with a 1-voxel overlap, faces locked.
    let (t_chunked, one, stitched) = chunked(&labels, shape, &args, 1);
    let chunked_error = report_chunked(&args, voxels, 1, t_chunked, &one, &stitched, &full);
    let (t_chunked_n, all, stitched) = chunked(&labels, shape, &args, threads);
    report_chunked(&args, voxels, threads, t_chunked_n, &all, &stitched, &full);
    assert_eq!(one.simplified, all.simplified, "threads change nothing");

    // --- zmesh on the same volume.
    if args.zmesh {
        match run_zmesh(&args) {
            Ok((report, zmeshes)) => {
                let z_error = measure_errors(
                    &full,
                    zmeshes.iter().map(|(&l, m)| (l, m)),
                    args.zmesh_max_error as f64,
                );
                let get = |k: &str| report.get(k).copied().unwrap_or(f64::NAN);
                let (zm, zs) = (get("mesh_s"), get("simplify_s"));
                println!(
                    "\nzmesh (same volume, reduction {}x, max_error {} nm):",
                    args.reduction, args.zmesh_max_error
                );
                println!(
                    "  marching cubes   {:.3} s  {:.1} MV/s  ({} triangles unsimplified)",
                    zm,
                    voxels / zm / 1e6,
                    get("triangles_full")
                );
                println!(
                    "  simplification   {:.3} s  -> {} triangles",
                    zs,
                    get("triangles_simplified")
                );
                println!(
                    "  mesh + simplify  {:.3} s  {:.2} MV/s",
                    zm + zs,
                    voxels / (zm + zs) / 1e6
                );
                println!("  measured error: {z_error}");
                println!(
                    "\nours vs zmesh: {:.1}x the throughput on 1 thread ({:.1}x on {threads}), {:.2}x the triangles, max error {:.1} vs {:.1} nm, mean {:.2} vs {:.2} nm (original -> simplified)",
                    (zm + zs) / (t_mesh + t_simplify),
                    (zm + zs) / (t_mesh + t_parallel),
                    tri_simplified as f64 / get("triangles_simplified"),
                    ours_error.to_simplified_max,
                    z_error.to_simplified_max,
                    ours_error.to_simplified_mean,
                    z_error.to_simplified_mean
                );
                println!(
                    "ours chunked vs zmesh: {:.1}x the throughput on 1 thread ({:.1}x on {threads}), {:.2}x the triangles, max error {:.1} vs {:.1} nm, mean {:.2} vs {:.2} nm",
                    (zm + zs) / t_chunked,
                    (zm + zs) / t_chunked_n,
                    one.simplified as f64 / get("triangles_simplified"),
                    chunked_error.to_simplified_max,
                    z_error.to_simplified_max,
                    chunked_error.to_simplified_mean,
                    z_error.to_simplified_mean
                );
            }
            Err(e) => println!("\nzmesh: not run: {e}"),
        }
    }
}

/// What one chunk gave.
#[derive(Default)]
struct ChunkOut {
    t_mesh: f64,
    t_simplify: f64,
    t_encode: f64,
    triangles: usize,
    simplified: usize,
    fragments: usize,
    drc_bytes: usize,
    legacy_bytes: usize,
    parts: Vec<(u64, Mesh)>,
}

/// Meshes, simplifies and encodes one block (the chunk plus a 1-voxel overlap on its high
/// faces), as production does.
fn one_chunk(labels: &[u32], shape: [usize; 3], lo: [usize; 3], args: &Args, bin: u32) -> ChunkOut {
    let [nz, ny, nx] = shape;
    let c = args.chunk.max(2);
    let [z0, y0, x0] = lo;
    let (z1, y1, x1) = (
        (z0 + c + 1).min(nz),
        (y0 + c + 1).min(ny),
        (x0 + c + 1).min(nx),
    );
    let mut block = Vec::with_capacity((z1 - z0) * (y1 - y0) * (x1 - x0));
    for z in z0..z1 {
        for y in y0..y1 {
            let row = (z * ny + y) * nx;
            block.extend_from_slice(&labels[row + x0..row + x1]);
        }
    }
    let bshape = [z1 - z0, y1 - y0, x1 - x0];
    let geo = BlockGeometry::new([x0 as i64, y0 as i64, z0 as i64], args.resolution);
    let mut out = ChunkOut::default();
    let t = Instant::now();
    let meshes = mesh_labels(&block, bshape, &geo).expect("block shape matches");
    out.t_mesh = t.elapsed().as_secs_f64();
    let planes = geo.face_planes_nm(bshape);
    let params = SimplifyParams {
        reduction: args.reduction,
        max_error_nm: args.max_error,
        locked_planes: Some(planes),
        keep_components: true,
        distance_bound: true,
    };
    let Ok(q) = GridQuantization::for_chunk(
        planes.map(|p| p[0] as f64),
        planes.map(|p| p[1] as f64),
        bin,
    ) else {
        return out;
    };
    for lm in meshes {
        out.triangles += lm.mesh.triangles.len();
        let t = Instant::now();
        let s = simplify(&lm.mesh, &params);
        out.t_simplify += t.elapsed().as_secs_f64();
        out.simplified += s.mesh.triangles.len();
        if s.mesh.triangles.is_empty() {
            continue;
        }
        let t = Instant::now();
        out.drc_bytes += draco::encode(&s.mesh, &q).map(|b| b.len()).unwrap_or(0);
        out.t_encode += t.elapsed().as_secs_f64();
        out.legacy_bytes += legacy::encode(&s.mesh).map(|b| b.len()).unwrap_or(0);
        out.fragments += 1;
        out.parts.push((lm.label, s.mesh));
    }
    out
}

/// The chunked pipeline over the whole volume on `threads` threads (chunks taken in turn);
/// returns the wall time of meshing + simplification + encoding, the chunks' results
/// summed, and the fragments stitched per label.
fn chunked(
    labels: &[u32],
    shape: [usize; 3],
    args: &Args,
    threads: usize,
) -> (f64, ChunkOut, BTreeMap<u64, Mesh>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let c = args.chunk.max(2);
    let bin = (args
        .resolution
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        / 2f64.sqrt())
    .floor()
    .max(1.0) as u32;
    let mut origins = Vec::new();
    for z0 in (0..shape[0] - 1).step_by(c) {
        for y0 in (0..shape[1] - 1).step_by(c) {
            for x0 in (0..shape[2] - 1).step_by(c) {
                origins.push([z0, y0, x0]);
            }
        }
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let t = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(&lo) = origins.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let out = one_chunk(labels, shape, lo, args, bin);
                    results.lock().expect("no thread panicked").push(out);
                }
            });
        }
    });
    let wall = t.elapsed().as_secs_f64();
    let mut sum = ChunkOut::default();
    let mut parts: BTreeMap<u64, Vec<Mesh>> = BTreeMap::new();
    for r in results.into_inner().expect("no thread panicked") {
        sum.t_mesh += r.t_mesh;
        sum.t_simplify += r.t_simplify;
        sum.t_encode += r.t_encode;
        sum.triangles += r.triangles;
        sum.simplified += r.simplified;
        sum.fragments += r.fragments;
        sum.drc_bytes += r.drc_bytes;
        sum.legacy_bytes += r.legacy_bytes;
        for (label, m) in r.parts {
            parts.entry(label).or_default().push(m);
        }
    }
    let stitched = parts
        .into_iter()
        .map(|(label, p)| (label, Mesh::stitch(p.iter())))
        .collect();
    (wall, sum, stitched)
}

/// Prints the chunked pipeline's figures and checks its stitched meshes: no more open
/// edges than the whole-volume mesh has (at the dataset's edge), and the measured error.
fn report_chunked(
    args: &Args,
    voxels: f64,
    threads: usize,
    wall: f64,
    sum: &ChunkOut,
    stitched: &BTreeMap<u64, Mesh>,
    full: &BTreeMap<u64, Mesh>,
) -> Errors {
    let c = args.chunk.max(2);
    let mut cracked = 0;
    let mut pinched = 0;
    for (label, m) in stitched {
        let topo = m.topology();
        if topo.boundary_edges > full.get(label).map_or(0, |m| m.topology().boundary_edges) {
            cracked += 1;
        }
        pinched += topo.non_manifold_edges;
    }
    let error = measure_errors(
        full,
        stitched.iter().map(|(&l, m)| (l, m)),
        args.max_error as f64,
    );
    println!("\nours, chunked {c}³ (+1 overlap), faces locked, {threads} thread(s):");
    println!(
        "  wall time        {:.3} s  {:.2} MV/s  (mesh + simplify + encode)",
        wall,
        voxels / wall / 1e6
    );
    println!(
        "  marching cubes   {:.3} s cpu  ({} triangles)",
        sum.t_mesh, sum.triangles
    );
    println!(
        "  simplification   {:.3} s cpu  -> {} triangles in {} fragments",
        sum.t_simplify, sum.simplified, sum.fragments
    );
    println!(
        "  draco {:.1} MB in {:.3} s cpu; legacy {:.1} MB",
        sum.drc_bytes as f64 / 1e6,
        sum.t_encode,
        sum.legacy_bytes as f64 / 1e6
    );
    println!(
        "  stitched per label: {cracked} labels with more open edges than the whole-volume mesh; {pinched} pinched (non-manifold) edges"
    );
    println!("  measured error: {error}");
    error
}

/// Vertex-to-surface distances (nm) between the unsimplified surfaces and simplified ones.
#[derive(Default)]
struct Errors {
    /// Original vertices to the simplified surface: detail lost.
    to_simplified_max: f64,
    to_simplified_mean: f64,
    /// Simplified vertices to the original surface: vertices moved off it.
    to_original_max: f64,
    beyond: usize,
    /// Original vertices farther than the error bound from the simplified surface, of all.
    over_bound: usize,
    vertices: usize,
    bound: f64,
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "original -> simplified max {:.1} nm (mean {:.2}; {} of {} vertices ({:.3} %) beyond {} nm); simplified -> original max {:.1} nm{}",
            self.to_simplified_max,
            self.to_simplified_mean,
            self.over_bound,
            self.vertices,
            100.0 * self.over_bound as f64 / self.vertices.max(1) as f64,
            self.bound,
            self.to_original_max,
            if self.beyond > 0 { format!(" ({} vertices beyond the {SEARCH_NM} nm search radius)", self.beyond) } else { String::new() }
        )
    }
}

const SEARCH_NM: f64 = 200.0;

fn measure_errors<'a>(
    full: &BTreeMap<u64, Mesh>,
    simplified: impl Iterator<Item = (u64, &'a Mesh)>,
    bound: f64,
) -> Errors {
    let mut e = Errors {
        bound,
        ..Errors::default()
    };
    let mut count = 0usize;
    for (label, s) in simplified {
        let Some(orig) = full.get(&label) else {
            continue;
        };
        if s.triangles.is_empty() {
            continue;
        }
        let grid = SurfaceIndex::new(s, 20.0);
        for v in &orig.vertices {
            match grid.distance(*v, SEARCH_NM) {
                Some(d) => {
                    e.to_simplified_max = e.to_simplified_max.max(d);
                    e.to_simplified_mean += d;
                    e.over_bound += usize::from(d > bound);
                }
                None => {
                    e.beyond += 1;
                    e.over_bound += 1;
                }
            }
            count += 1;
        }
        let grid = SurfaceIndex::new(orig, 20.0);
        for v in &s.vertices {
            match grid.distance(*v, SEARCH_NM) {
                Some(d) => e.to_original_max = e.to_original_max.max(d),
                None => e.beyond += 1,
            }
        }
    }
    e.to_simplified_mean /= count.max(1) as f64;
    e.vertices = count;
    e
}

type ZmeshReport = BTreeMap<String, f64>;

fn run_zmesh(args: &Args) -> Result<(ZmeshReport, BTreeMap<u64, Mesh>), String> {
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let venv = Command::new("bash")
        .arg(python_dir.join("venv.sh"))
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !venv.status.success() {
        return Err(format!(
            "could not set up .venv-mesh: {}",
            String::from_utf8_lossy(&venv.stderr)
        ));
    }
    let python = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let out = std::env::temp_dir().join(format!("cg-mesh-zmesh-{}.bin", std::process::id()));
    let r = args.resolution;
    let run = Command::new(&python)
        .arg(python_dir.join("zmesh_bench.py"))
        .arg(&args.volume)
        .arg(format!("{},{},{}", r[0], r[1], r[2]))
        .arg(format!("{}", args.reduction.round() as u64))
        .arg(format!("{}", args.zmesh_max_error))
        .arg(&out)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "zmesh_bench.py failed: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&run.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    println!("\nzmesh_bench.py: {line}");
    // A flat JSON object of numbers (and one version string, skipped).
    let report: ZmeshReport = line
        .trim_matches(|c| c == '{' || c == '}')
        .split(", ")
        .filter_map(|kv| {
            let (k, v) = kv.split_once(": ")?;
            Some((k.trim_matches('"').to_string(), v.parse().ok()?))
        })
        .collect();
    let bytes = std::fs::read(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    Ok((report, read_meshes(&bytes)?))
}

fn read_meshes(mut b: &[u8]) -> Result<BTreeMap<u64, Mesh>, String> {
    let mut out = BTreeMap::new();
    let take = |n: usize, b: &mut &[u8]| -> Result<Vec<u8>, String> {
        if b.len() < n {
            return Err("truncated zmesh output".into());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    while !b.is_empty() {
        let head = take(16, &mut b)?;
        let label = u64::from_le_bytes(head[..8].try_into().map_err(|_| "header")?);
        let nv = u32::from_le_bytes(head[8..12].try_into().map_err(|_| "header")?) as usize;
        let nt = u32::from_le_bytes(head[12..16].try_into().map_err(|_| "header")?) as usize;
        let v = take(nv * 12, &mut b)?;
        let t = take(nt * 12, &mut b)?;
        let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let u = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        out.insert(
            label,
            Mesh {
                vertices: v
                    .chunks_exact(12)
                    .map(|c| [f(&c[0..]), f(&c[4..]), f(&c[8..])])
                    .collect(),
                triangles: t
                    .chunks_exact(12)
                    .map(|c| [u(&c[0..]), u(&c[4..]), u(&c[8..])])
                    .collect(),
            },
        );
    }
    Ok(out)
}
