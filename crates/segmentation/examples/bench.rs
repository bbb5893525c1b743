//! Quality and speed of watershed + mean-affinity agglomeration.
//!
//! ```sh
//! cargo run --release -p cg-segmentation --example bench -- [flags]
//! ```
//!
//! - gala (50×100×200, affinities from its boundary map): ARAND and VOI against the ground
//!   truth at each agglomeration threshold.
//! - a seeded Voronoi volume (`--synthetic N`: N³ voxels, default 320 ≈ 32.8 MV): watershed +
//!   region graph MV/s, agglomeration MV/s, peak resident memory (VmHWM) per stage, ARAND.
//! - the same Voronoi volume chunked (`cg_segmentation::chunked::run`, `--chunk Z,Y,X`,
//!   `--ghost G`, `--threads T`; default 64³ chunks, ghost 4, 2 threads): the same figures
//!   (wall clock), checked equal to the whole-volume supervoxels. `--only chunked` runs it
//!   alone, with only the affinities resident, so its peak is its own.
//! - optionally the NeuroProof ground truth with a noisy membrane (`--neuroproof`).
//!
//! Flags: `--data DIR` (fixtures; default `$CG_SHARED_DATA`, else `shared/data` beside the
//! checkout), `--thresholds 0.02,0.03,...` (gala), `--ws LOW,HIGH,MERGE,SIZE,DUST` (gala's
//! watershed parameters; default `WatershedParams::default()`), `--synthetic N`, `--noise S`,
//! `--ws-synthetic ...`, `--synthetic-thresholds ...`,
//! `--only gala|synthetic|chunked|neuroproof`, `--sweep` (grid search of the watershed parameters on
//! gala), `--export DIR` (write the affinities and ground truths used, as .npy, for
//! tests/python/segmentation), `--json FILE` (results).

use std::fmt::Write as _;
use std::time::Instant;

use cg_segmentation::agglomeration::relabel;
use cg_segmentation::chunked;
use cg_segmentation::synthetic::{boundary_from_labels, voronoi, VoronoiParams};
use cg_segmentation::{agglomerate, evaluate, npy, watershed, Affinities, WatershedParams};

struct Args {
    data: String,
    thresholds: Vec<f64>,
    ws: WatershedParams,
    ws_synthetic: WatershedParams,
    synthetic_thresholds: Vec<f64>,
    synthetic: usize,
    noise: f64,
    only: Option<String>,
    sweep: bool,
    neuroproof: bool,
    export: Option<String>,
    json: Option<String>,
    chunk: [usize; 3],
    ghost: usize,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        data: std::env::var("CG_SHARED_DATA").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").into()
        }),
        thresholds: vec![0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5],
        ws: WatershedParams::default(),
        // Little size merging, so the agglomeration has work: many basins per cell.
        ws_synthetic: WatershedParams {
            t_low: 0.0,
            t_high: 0.99,
            t_merge: 0.9,
            t_size: 20,
            t_dust: 10,
        },
        synthetic_thresholds: vec![0.2, 0.3, 0.5],
        synthetic: 320,
        noise: 0.3,
        only: None,
        sweep: false,
        neuroproof: false,
        export: None,
        json: None,
        chunk: [64, 64, 64],
        ghost: 4,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    let floats = |s: String| -> Result<Vec<f64>, String> {
        s.split(',')
            .map(|v| v.trim().parse::<f64>().map_err(|e| format!("{v}: {e}")))
            .collect()
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value()?,
            "--thresholds" => a.thresholds = floats(value()?)?,
            "--ws" => a.ws = ws_params(&floats(value()?)?)?,
            "--ws-synthetic" => a.ws_synthetic = ws_params(&floats(value()?)?)?,
            "--synthetic-thresholds" => a.synthetic_thresholds = floats(value()?)?,
            "--synthetic" => a.synthetic = value()?.parse().map_err(|e| format!("{e}"))?,
            "--noise" => a.noise = value()?.parse().map_err(|e| format!("{e}"))?,
            "--only" => a.only = Some(value()?),
            "--sweep" => a.sweep = true,
            "--neuroproof" => a.neuroproof = true,
            "--export" => a.export = Some(value()?),
            "--json" => a.json = Some(value()?),
            "--chunk" => {
                let v = floats(value()?)?;
                let [z, y, x] = v[..] else {
                    return Err("--chunk takes Z,Y,X".into());
                };
                a.chunk = [z as usize, y as usize, x as usize];
            }
            "--ghost" => a.ghost = value()?.parse().map_err(|e| format!("{e}"))?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    a.thresholds.sort_by(|x, y| y.total_cmp(x));
    a.synthetic_thresholds.sort_by(|x, y| y.total_cmp(x));
    Ok(a)
}

fn ws_params(v: &[f64]) -> Result<WatershedParams, String> {
    let [low, high, merge, size, dust] = v[..] else {
        return Err("--ws takes LOW,HIGH,MERGE,SIZE,DUST".into());
    };
    Ok(WatershedParams {
        t_low: low as f32,
        t_high: high as f32,
        t_merge: merge as f32,
        t_size: size as u64,
        t_dust: dust as u64,
    })
}

/// A memory figure of /proc/self/status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident set size since the last reset, in MiB.
fn peak_mib() -> f64 {
    status_mib("VmHWM:")
}

/// CPU time of this thread so far, in seconds (10 ms resolution): on a loaded machine it
/// shows what the wall clock would on an idle one.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// CPU time of all threads of this process so far, in seconds.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Resets the peak (Linux ≥ 4.0: writing 5 to clear_refs), so each stage reports its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    threshold: f64,
    segments: usize,
    arand: f64,
    voi_split: f64,
    voi_merge: f64,
}

/// Watershed, one agglomeration to the lowest threshold, then each threshold's scores.
fn score_thresholds(
    affs: &Affinities,
    gt: &[u32],
    ws: &WatershedParams,
    thresholds: &[f64],
) -> Result<(Vec<Row>, usize), Box<dyn std::error::Error>> {
    let seg = watershed(affs, ws)?;
    let lowest = thresholds.iter().copied().fold(f64::INFINITY, f64::min);
    let agg = agglomerate(&seg.graph, lowest);
    let mut rows = Vec::new();
    for &t in thresholds {
        let comps = agg.components_at(&seg.graph, t);
        let mut labels = seg.labels.clone();
        relabel(&mut labels, &seg.graph, &comps);
        let s = evaluate(&labels, gt)?;
        let mut distinct: Vec<u64> = comps.clone();
        distinct.sort_unstable();
        distinct.dedup();
        rows.push(Row {
            threshold: t,
            segments: distinct.len(),
            arand: s.arand,
            voi_split: s.voi_split,
            voi_merge: s.voi_merge,
        });
    }
    Ok((rows, seg.graph.ids.len()))
}

fn print_rows(rows: &[Row]) {
    println!("  threshold  segments   ARAND   VOI split  VOI merge");
    for r in rows {
        println!(
            "  {:9.3}  {:8}  {:.4}  {:9.4}  {:9.4}",
            r.threshold, r.segments, r.arand, r.voi_split, r.voi_merge
        );
    }
}

fn rows_json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"threshold\": {}, \"segments\": {}, \"arand\": {:.6}, \"voi_split\": {:.6}, \"voi_merge\": {:.6}}}",
                r.threshold, r.segments, r.arand, r.voi_split, r.voi_merge
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn ws_json(ws: &WatershedParams) -> String {
    format!(
        "{{\"t_low\": {}, \"t_high\": {}, \"t_merge\": {}, \"t_size\": {}, \"t_dust\": {}}}",
        ws.t_low, ws.t_high, ws.t_merge, ws.t_size, ws.t_dust
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("{e}\n(see the header of examples/bench.rs)"))?;
    let run = |what: &str| args.only.as_deref().is_none_or(|o| o == what);
    let mut json = String::from("{");

    if run("gala") {
        let boundary = npy::read::<f32>(format!("{}/gala-train-boundary.npy", args.data))?;
        let gt = npy::read::<u32>(format!("{}/gala-train-gt.npy", args.data))?;
        let shape = boundary.shape3().ok_or("gala boundary is not 3-d")?;
        let affs = Affinities::from_boundary(shape, &boundary.data)?;
        if let Some(dir) = &args.export {
            std::fs::create_dir_all(dir)?;
            npy::write(
                format!("{dir}/gala-affs.npy"),
                &[3, shape[0], shape[1], shape[2]],
                affs.data(),
            )?;
            npy::write(format!("{dir}/gala-gt.npy"), &shape, &gt.data)?;
        }
        if args.sweep {
            sweep(&affs, &gt.data, &args.thresholds)?;
        }
        let t0 = Instant::now();
        let (rows, supervoxels) = score_thresholds(&affs, &gt.data, &args.ws, &args.thresholds)?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "gala {shape:?}: {supervoxels} supervoxels, watershed {:?}, all thresholds in {secs:.2} s",
            args.ws
        );
        print_rows(&rows);
        let best = rows
            .iter()
            .min_by(|a, b| a.arand.total_cmp(&b.arand))
            .ok_or("no thresholds")?;
        println!(
            "  best ARAND {:.4} at threshold {} (VOI {:.4} + {:.4})",
            best.arand, best.threshold, best.voi_split, best.voi_merge
        );
        let _ = write!(
            json,
            "\"gala\": {{\"shape\": {shape:?}, \"supervoxels\": {supervoxels}, \"watershed\": {}, \"thresholds\": {}}}",
            ws_json(&args.ws),
            rows_json(&rows)
        );
    }

    if run("synthetic") {
        let n = args.synthetic;
        let params = VoronoiParams {
            shape: [n, n, n],
            cell: 24.0,
            membrane: 1.0,
            noise: args.noise,
            seed: 1,
        };
        let t0 = Instant::now();
        let syn = voronoi(&params)?;
        let affs = syn.affinities()?;
        let gen = t0.elapsed().as_secs_f64();
        let voxels = affs.voxels() as f64;
        let mv = voxels / 1e6;
        println!(
            "\nsynthetic Voronoi {:?} ({mv:.1} MV, cell {}, noise {}), generated in {gen:.1} s",
            params.shape, params.cell, params.noise
        );
        if let Some(dir) = &args.export {
            std::fs::create_dir_all(dir)?;
            npy::write(
                format!("{dir}/synthetic-affs.npy"),
                &[3, n, n, n],
                affs.data(),
            )?;
        }
        let gt = syn.ground_truth();
        let cells = syn.cells.iter().max().copied().unwrap_or(0);
        if let Some(dir) = &args.export {
            npy::write(format!("{dir}/synthetic-gt.npy"), &[n, n, n], &gt)?;
        }
        drop(syn);
        let base = status_mib("VmRSS:");
        reset_peak();
        let (t0, c0) = (Instant::now(), cpu_secs());
        let seg = watershed(&affs, &args.ws_synthetic)?;
        let ws_secs = t0.elapsed().as_secs_f64();
        let ws_cpu = cpu_secs() - c0;
        let ws_peak = peak_mib();
        reset_peak();
        let threshold = args
            .synthetic_thresholds
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let (t0, c0) = (Instant::now(), cpu_secs());
        let agg = agglomerate(&seg.graph, threshold);
        let agg_secs = t0.elapsed().as_secs_f64();
        let agg_cpu = cpu_secs() - c0;
        let mut labels = seg.labels.clone();
        let t1 = Instant::now();
        relabel(&mut labels, &seg.graph, &agg.components);
        let relabel_secs = t1.elapsed().as_secs_f64();
        let agg_peak = peak_mib();
        let scores = evaluate(&labels, &gt)?;
        println!(
            "  watershed + region graph: {ws_secs:.2} s = {:.1} MV/s (CPU {ws_cpu:.2} s = {:.1} MV/s), {} supervoxels, {} edges, peak {ws_peak:.0} MiB (resident before: {base:.0} MiB of inputs)",
            mv / ws_secs,
            mv / ws_cpu,
            seg.graph.ids.len(),
            seg.graph.edges.len()
        );
        println!(
            "  agglomeration to {threshold}: {agg_secs:.3} s = {:.1} MV/s (CPU {agg_cpu:.2} s) ({} merges); with relabelling the volume {:.3} s = {:.1} MV/s, peak {agg_peak:.0} MiB",
            mv / agg_secs,
            agg.merges.len(),
            agg_secs + relabel_secs,
            mv / (agg_secs + relabel_secs)
        );
        println!(
            "  at {threshold}: ARAND {:.4}, VOI split {:.4} merge {:.4} ({} ground-truth cells)",
            scores.arand, scores.voi_split, scores.voi_merge, cells
        );
        let mut rows = Vec::new();
        for &t in &args.synthetic_thresholds {
            let comps = agg.components_at(&seg.graph, t);
            let mut labels = seg.labels.clone();
            relabel(&mut labels, &seg.graph, &comps);
            let s = evaluate(&labels, &gt)?;
            let mut distinct = comps;
            distinct.sort_unstable();
            distinct.dedup();
            rows.push(Row {
                threshold: t,
                segments: distinct.len(),
                arand: s.arand,
                voi_split: s.voi_split,
                voi_merge: s.voi_merge,
            });
        }
        print_rows(&rows);
        let whole_hash = labels_hash(&seg.labels);
        let whole_merges = agg.merges.len();
        let (whole_svs, whole_edges) = (seg.graph.ids.len(), seg.graph.edges.len());
        drop(seg);
        drop(labels);
        drop(agg);
        let chunked = chunked_figures(&args, &affs, threshold, mv, || {
            Ok((whole_hash, whole_merges))
        })?;
        println!(
            "  (whole volume: {whole_svs} supervoxels, {whole_edges} edges; affinity input {:.0} MiB)",
            voxels * 12.0 / 1048576.0
        );
        if json.len() > 1 {
            json.push_str(", ");
        }
        let _ = write!(json, "\"chunked\": {chunked}, ");
        let _ = write!(
            json,
            "\"synthetic\": {{\"shape\": {:?}, \"megavoxels\": {mv:.3}, \"watershed\": {}, \"threshold\": {threshold}, \"supervoxels\": {}, \"edges\": {}, \"watershed_region_graph_s\": {ws_secs:.4}, \"watershed_region_graph_mvps\": {:.3}, \"watershed_region_graph_cpu_s\": {ws_cpu:.2}, \"agglomeration_cpu_s\": {agg_cpu:.2}, \"agglomeration_s\": {agg_secs:.4}, \"agglomeration_mvps\": {:.3}, \"agglomeration_with_relabel_mvps\": {:.3}, \"resident_mib_inputs\": {base:.1}, \"peak_mib_watershed\": {ws_peak:.1}, \"peak_mib_agglomeration\": {agg_peak:.1}, \"arand\": {:.6}, \"voi_split\": {:.6}, \"voi_merge\": {:.6}, \"thresholds\": {}}}",
            params.shape,
            ws_json(&args.ws_synthetic),
            whole_svs,
            whole_edges,
            mv / ws_secs,
            mv / agg_secs,
            mv / (agg_secs + relabel_secs),
            scores.arand,
            scores.voi_split,
            scores.voi_merge,
            rows_json(&rows)
        );
    }

    if args.only.as_deref() == Some("chunked") {
        // Only the affinities resident: the peak is the chunked run's own. The whole-volume
        // run that checks it comes after the measurement.
        let n = args.synthetic;
        let syn = voronoi(&VoronoiParams {
            shape: [n, n, n],
            cell: 24.0,
            membrane: 1.0,
            noise: args.noise,
            seed: 1,
        })?;
        let affs = syn.affinities()?;
        drop(syn);
        let mv = affs.voxels() as f64 / 1e6;
        let threshold = args
            .synthetic_thresholds
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        println!("\nsynthetic Voronoi [{n}, {n}, {n}] ({mv:.1} MV), chunked only");
        let ws = args.ws_synthetic;
        let chunked = chunked_figures(&args, &affs, threshold, mv, || {
            let seg = watershed(&affs, &ws)?;
            let merges = agglomerate(&seg.graph, threshold).merges.len();
            Ok((labels_hash(&seg.labels), merges))
        })?;
        if json.len() > 1 {
            json.push_str(", ");
        }
        let _ = write!(json, "\"chunked\": {chunked}");
    }

    if args.neuroproof && run("neuroproof") {
        let gt = npy::read::<u32>(format!("{}/neuroproof-sample2-gt.npy", args.data))?;
        let shape = gt.shape3().ok_or("neuroproof is not 3-d")?;
        let boundary = boundary_from_labels(shape, &gt.data, args.noise, 2)?;
        let affs = Affinities::from_boundary(shape, &boundary)?;
        drop(boundary);
        let t0 = Instant::now();
        let (rows, supervoxels) = score_thresholds(&affs, &gt.data, &args.ws, &args.thresholds)?;
        println!(
            "\nneuroproof {shape:?} (membrane from labels, noise {}): {supervoxels} supervoxels, {:.1} s",
            args.noise,
            t0.elapsed().as_secs_f64()
        );
        print_rows(&rows);
        if json.len() > 1 {
            json.push_str(", ");
        }
        let _ = write!(json, "\"neuroproof\": {}", rows_json(&rows));
    }

    json.push('}');
    if let Some(path) = &args.json {
        std::fs::write(path, &json)?;
    }
    Ok(())
}

/// One voxel's share of [`labels_hash`].
fn voxel_hash(index: u64, label: u64) -> u64 {
    let mut h = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ label;
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 29)
}

/// An order-free hash of the whole-volume supervoxels named as the chunked run names them
/// (first voxel + 1), so the chunked labels can be checked one chunk at a time.
fn labels_hash(labels: &[u64]) -> u64 {
    let mut first = std::collections::HashMap::new();
    labels.iter().enumerate().fold(0u64, |h, (i, &l)| {
        let id = if l == 0 {
            0
        } else {
            *first.entry(l).or_insert(i as u64 + 1)
        };
        h.wrapping_add(voxel_hash(i as u64, id))
    })
}

/// The chunked run on the synthetic volume: figures printed, JSON returned.
fn chunked_figures(
    args: &Args,
    affs: &Affinities,
    threshold: f64,
    mv: f64,
    whole: impl FnOnce() -> Result<(u64, usize), Box<dyn std::error::Error>>,
) -> Result<String, Box<dyn std::error::Error>> {
    let params = chunked::ChunkedParams {
        chunk_size: args.chunk,
        ghost: args.ghost,
        watershed: args.ws_synthetic,
        threshold,
        threads: args.threads,
    };
    let base = status_mib("VmRSS:");
    reset_peak();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (t0, c0) = (Instant::now(), process_cpu_secs());
    let shape = affs.shape();
    let hash = std::sync::atomic::AtomicU64::new(0);
    // Process CPU time when the leaves, all tasks, and the graph steps are done: on a machine
    // shared with other work, CPU seconds per stage show what the wall clock would on an
    // idle one.
    let tree_for_marks = chunked::TaskTree::new(affs.shape(), params.chunk_size)?;
    let leaves = tree_for_marks.tasks(0).len();
    let marks = [leaves, tree_for_marks.len(), tree_for_marks.len() + 1];
    let cpu_marks = std::sync::Mutex::new([f64::NAN; 3]);
    let (tree, finished, t) = chunked::run_streaming(
        affs,
        &params,
        |done, _| {
            if let Some(k) = marks.iter().position(|&m| m == done) {
                cpu_marks.lock().unwrap_or_else(|e| e.into_inner())[k] = process_cpu_secs();
            }
        },
        |c| {
            let cs = c.core.shape();
            let mut h = 0u64;
            for (r, row) in c.labels.chunks(cs[2].max(1)).enumerate() {
                let (z, y) = (r / cs[1], r % cs[1]);
                let g = ((c.core.start[0] + z) * shape[1] + c.core.start[1] + y) * shape[2]
                    + c.core.start[2];
                for (x, &l) in row.iter().enumerate() {
                    h = h.wrapping_add(voxel_hash((g + x) as u64, l));
                }
            }
            hash.fetch_add(h, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        },
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - c0;
    let peak = peak_mib();
    let m = cpu_marks.into_inner().unwrap_or_else(|e| e.into_inner());
    let stage_cpu = [m[0] - c0, m[1] - m[0], m[2] - m[1], cpu - (m[2] - c0)];
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let ws_secs = t.tasks() + t.graph + t.labels;
    let (whole_hash, whole_merges) = whole()?;
    let same =
        hash.into_inner() == whole_hash && finished.agglomeration.merges.len() == whole_merges;
    let input_mib = affs.voxels() as f64 * 12.0 / 1048576.0;
    println!(
        "  chunked {:?} ghost {} on {} threads ({} tasks, {} levels): {secs:.2} s in all (CPU {cpu:.2} s of all threads), peak {peak:.0} MiB = {:.2}x the affinity input (resident before: {base:.0} MiB); load {} -> {}",
        params.chunk_size,
        params.ghost,
        params.threads,
        tree.len(),
        tree.levels(),
        peak / input_mib,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!(
        "    watershed + region graph: {ws_secs:.2} s = {:.1} MV/s (leaves {:.2} s, parents {:.2} s, basin graph + size merge {:.2} s, chunk labels {:.2} s)",
        mv / ws_secs,
        t.levels[0],
        t.tasks() - t.levels[0],
        t.graph,
        t.labels
    );
    // Leaves and chunk labels run on all threads, the rest mostly on one.
    let ideal = (stage_cpu[0] + stage_cpu[3]) / params.threads as f64
        + stage_cpu[1]
        + (stage_cpu[2] - t.agglomeration).max(0.0);
    println!(
        "    CPU seconds: leaves {:.2}, parents {:.2}, graph steps (incl. agglomeration) {:.2}, chunk labels {:.2}; with {} idle cores watershed + region graph would take about {ideal:.2} s = {:.1} MV/s",
        stage_cpu[0],
        stage_cpu[1],
        stage_cpu[2],
        stage_cpu[3],
        params.threads,
        mv / ideal
    );
    println!(
        "    agglomeration to {threshold}: {:.3} s = {:.1} MV/s; {} supervoxels, {} edges; same supervoxels and merge count as the whole volume: {same}",
        t.agglomeration,
        mv / t.agglomeration,
        finished.graph.ids.len(),
        finished.graph.edges.len(),
    );
    Ok(format!(
        "{{\"chunk\": {:?}, \"ghost\": {}, \"threads\": {}, \"total_s\": {secs:.4}, \"watershed_region_graph_s\": {ws_secs:.4}, \"watershed_region_graph_mvps\": {:.3}, \"agglomeration_s\": {:.4}, \"agglomeration_mvps\": {:.3}, \"peak_mib\": {peak:.1}, \"peak_over_input\": {:.3}, \"cpu_s\": {cpu:.3}, \"stage_cpu_s\": {stage_cpu:?}, \"idle_estimate_mvps\": {:.3}, \"same_as_whole\": {same}, \"load\": \"{}\"}}",
        params.chunk_size,
        params.ghost,
        params.threads,
        mv / ws_secs,
        t.agglomeration,
        mv / t.agglomeration,
        peak / input_mib,
        mv / ideal,
        load.trim()
    ))
}

/// Grid search of the watershed parameters on gala: the best ARAND over thresholds for each.
fn sweep(
    affs: &Affinities,
    gt: &[u32],
    thresholds: &[f64],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut results = Vec::new();
    for &t_low in &[0.0f32, 0.0001] {
        for &t_high in &[0.9999f32, 0.99, 0.95, 0.9, 0.8, 0.7] {
            for &t_merge in &[0.1f32, 0.3, 0.5, 0.7] {
                for &t_size in &[0u64, 50, 100, 250, 500] {
                    for &t_dust in &[0u64, 25, 100] {
                        let ws = WatershedParams {
                            t_low,
                            t_high,
                            t_merge,
                            t_size,
                            t_dust,
                        };
                        let (rows, sv) = score_thresholds(affs, gt, &ws, thresholds)?;
                        if let Some(best) = rows.iter().min_by(|a, b| a.arand.total_cmp(&b.arand)) {
                            results.push((best.arand, best.threshold, sv, ws));
                        }
                    }
                }
            }
        }
    }
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("sweep: best 10 of {}", results.len());
    for (arand, t, sv, ws) in results.iter().take(10) {
        println!("  ARAND {arand:.4} at threshold {t} ({sv} supervoxels): {ws:?}");
    }
    Ok(())
}
