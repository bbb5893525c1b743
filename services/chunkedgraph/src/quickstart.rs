//! `chunkedgraph quickstart`: from nothing to a proofreadable dataset in one command. Makes
//! a seeded synthetic volume, runs the pipeline on the embedded storage, prints how to open
//! it (Neuroglancer link, caveclient and cloud-volume snippets), and serves it. A re-run
//! reuses the data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cg_graph::query::RootQuery;
use cg_graph::ChunkedGraph;
use clap::Parser;

use crate::ingest_cmd::{parse_u32s, Triple};

const TABLE: &str = "quickstart";

#[derive(clap::Args)]
pub struct QuickstartArgs {
    /// Where the dataset and its storage live; reused by a re-run.
    #[arg(long, default_value = "chunkedgraph-data/quickstart")]
    data_dir: PathBuf,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Build the dataset and print the links, but do not serve.
    #[arg(long)]
    no_serve: bool,
    /// Size of the synthetic volume in voxels, `x,y,z`.
    #[arg(long, value_parser = parse_u32s, default_value = "256,256,128")]
    size: Triple<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Wrappers so the subcommands' own flags parse the arguments we build.
#[derive(Parser)]
struct PipelineCli {
    #[command(subcommand)]
    cmd: crate::pipeline::PipelineCommand,
}

#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    args: crate::server::ServeArgs,
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let data = args.data_dir.to_string_lossy().into_owned();
    let [x, y, z] = args.size.0;
    let size = format!("{x},{y},{z}");
    let seed = args.seed.to_string();
    let pipeline = PipelineCli::try_parse_from([
        "pipeline",
        "run",
        "--synthetic",
        &size,
        "--seed",
        &seed,
        "--table",
        TABLE,
        "--data-dir",
        &data,
        "--resolution",
        "8,8,8",
    ])
    .context("pipeline arguments")?;
    crate::pipeline::run(pipeline.cmd).await?;

    // A few objects of the chunk at the centre, where the link's view is.
    let storage = crate::storage::StorageArgs {
        data_dir: args.data_dir.clone(),
        bigtable_project: None,
        bigtable_instance: None,
    };
    let segments = {
        let (client, _) = storage.connect().await?;
        let g = ChunkedGraph::open(client, TABLE).await?;
        let geo = g.geometry();
        let mid = [x / 2, y / 2, z / 2];
        let coord = [0, 1, 2].map(|a| mid[a] / geo.chunk_size[a].max(1));
        let centre = geo.chunk_id(1, coord)?;
        let svs: Vec<u64> = (1..=40)
            .filter_map(|s| geo.node_id(centre, s).ok())
            .collect();
        let q = RootQuery {
            fail_to_zero: true,
            ..Default::default()
        };
        let mut roots = g.roots(&svs, &q).await?;
        roots.retain(|&r| r != 0);
        roots.sort_unstable();
        roots.dedup();
        roots.truncate(5);
        roots
    };

    let base = format!("http://{}", args.listen);
    let source = format!("graphene://{base}/segmentation/table/{TABLE}");
    let segs: Vec<String> = segments.iter().map(|s| format!("\"{s}\"")).collect();
    let state = format!(
        r#"{{"dimensions":{{"x":[8e-9,"m"],"y":[8e-9,"m"],"z":[8e-9,"m"]}},"position":[{},{},{}],"crossSectionScale":1,"projectionScale":512,"layers":[{{"type":"segmentation","source":"{source}","name":"{TABLE}","segments":[{}]}}],"layout":"4panel"}}"#,
        x / 2,
        y / 2,
        z / 2,
        segs.join(",")
    );
    println!();
    println!("graphene source:   {source}");
    println!(
        "Neuroglancer:      https://neuroglancer-demo.appspot.com/#!{}",
        percent_encode(&state)
    );
    println!(
        "                   (any Neuroglancer works: the server answers CORS for every origin)"
    );
    println!();
    println!("caveclient:");
    println!("    from caveclient.chunkedgraph import ChunkedGraphClient");
    println!("    from caveclient.auth import AuthClient");
    println!("    cg = ChunkedGraphClient(server_address=\"{base}\", table_name=\"{TABLE}\", auth_client=AuthClient(token=\"local\"))");
    if let Some(r) = segments.first() {
        println!("    cg.get_leaves({r})");
    }
    println!();
    println!("cloud-volume:");
    println!("    from cloudvolume import CloudVolume");
    println!(
        "    cv = CloudVolume(\"{source}\", secrets={{\"token\": \"local\"}}, use_https=False)"
    );
    println!("    cv.download(cv.bounds, agglomerate=True)");
    println!();
    if args.no_serve {
        println!(
            "serve it with: chunkedgraph serve --data-dir {data} --listen {}",
            args.listen
        );
        return Ok(());
    }
    let listen = args.listen.to_string();
    let serve = ServeCli::try_parse_from(["serve", "--data-dir", &data, "--listen", &listen])
        .context("serve arguments")?;
    crate::server::run(serve.args).await
}
