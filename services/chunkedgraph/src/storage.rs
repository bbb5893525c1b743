//! Which Bigtable to talk to, chosen by configuration alone: Cloud Bigtable, an emulator named
//! by `BIGTABLE_EMULATOR_HOST`, or (the default) our emulator embedded in this process.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args, Clone, Debug)]
pub struct StorageArgs {
    /// Directory of the embedded storage, used unless Cloud Bigtable or an emulator is named.
    #[arg(long, default_value = "chunkedgraph-data")]
    pub data_dir: PathBuf,
    /// Cloud Bigtable project (with --bigtable-instance; credentials from application defaults).
    #[arg(long, env = "BIGTABLE_PROJECT", requires = "bigtable_instance")]
    pub bigtable_project: Option<String>,
    /// Cloud Bigtable instance.
    #[arg(long, env = "BIGTABLE_INSTANCE", requires = "bigtable_project")]
    pub bigtable_instance: Option<String>,
}

/// Where the data lives, for messages.
pub enum Backend {
    Cloud { project: String, instance: String },
    Emulator(String),
    Embedded(PathBuf),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cloud { project, instance } => {
                write!(f, "Cloud Bigtable {project}/{instance}")
            }
            Backend::Emulator(host) => write!(f, "Bigtable emulator at {host}"),
            Backend::Embedded(dir) => write!(f, "embedded storage in {}", dir.display()),
        }
    }
}

impl StorageArgs {
    pub fn backend(&self) -> Backend {
        if let (Some(project), Some(instance)) = (&self.bigtable_project, &self.bigtable_instance) {
            return Backend::Cloud {
                project: project.clone(),
                instance: instance.clone(),
            };
        }
        match std::env::var("BIGTABLE_EMULATOR_HOST") {
            Ok(host) if !host.is_empty() => Backend::Emulator(host),
            _ => Backend::Embedded(self.data_dir.join("bigtable")),
        }
    }

    /// Connects; the embedded store lives as long as the returned client's channel.
    pub async fn connect(&self) -> anyhow::Result<(cg_bigtable::Client, Backend)> {
        let backend = self.backend();
        let target = match &backend {
            Backend::Cloud { project, instance } => cg_bigtable::Target::Cloud {
                project: project.clone(),
                instance: instance.clone(),
            },
            Backend::Emulator(host) => cg_bigtable::Target::Emulator(host.clone()),
            Backend::Embedded(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let store = cg_emulator::open(dir, cg_emulator::StoreOptions::default())
                    .with_context(|| format!("opening embedded storage in {}", dir.display()))?;
                cg_bigtable::Target::Channel(
                    cg_emulator::in_process_channel(store),
                    "chunkedgraph".into(),
                    "local".into(),
                )
            }
        };
        let client = cg_bigtable::Config::new(target)
            .connect()
            .await
            .with_context(|| format!("connecting to {backend}"))?;
        Ok((client, backend))
    }
}
