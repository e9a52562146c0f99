//! The session factory: the one place that builds DataFusion's execution context, from a named
//! profile whose values flags and environment variables override (the seed's SparkSession
//! factory, for DataFusion).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::store::Location;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("unknown profile {0:?}: expected development or production")]
    UnknownProfile(String),
    #[error("cannot parse {input:?} as a size: expected bytes or a number with KiB, MiB or GiB")]
    BadSize { input: String },
    #[error("cannot create the spill directory {dir}: {source}")]
    SpillDir { dir: String, source: std::io::Error },
    #[error("cannot create the ETL's cache directory in {dir}: {source}")]
    CacheDir { dir: String, source: std::io::Error },
    #[error("cannot build the DataFusion runtime: {0}")]
    Runtime(#[from] datafusion::error::DataFusionError),
}

/// A named set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A laptop: small memory, two partitions, local files.
    Development,
    /// A pod: a memory limit below the container's with spilling, one partition per CPU the
    /// pod may use.
    Production,
}

impl FromStr for Profile {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" | "dev" => Ok(Profile::Development),
            "production" | "prod" => Ok(Profile::Production),
            other => Err(SessionError::UnknownProfile(other.to_owned())),
        }
    }
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Development => "development",
            Profile::Production => "production",
        }
    }
}

/// Everything the factory needs; start from [`SessionSettings::for_profile`], then override.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub profile: Profile,
    /// Bytes the ETL may use in all; DataFusion's operators get `memory_pool_percent` of it
    /// ([`SessionSettings::pool_size`]) and spill beyond that.
    pub memory_limit: usize,
    /// The share of the memory limit that DataFusion's pool bounds. The pool counts what
    /// operators reserve (sort buffers, hash tables, window state) but not record batches in
    /// flight between operators, landing objects being decoded, the writers' buffers or memory
    /// the allocator keeps; the rest of the limit is headroom for those (docs/etl.md, "Memory").
    pub memory_pool_percent: u8,
    pub spill_dir: PathBuf,
    pub target_partitions: usize,
    pub batch_size: usize,
    /// Events with more than one copy in the landing zone that deduplication filters out with
    /// an in-memory list; beyond this it sorts the copies instead (slower, but it spills).
    pub max_duplicates_in_memory: usize,
}

/// Values given on the command line or in the environment; `None` keeps the profile's.
#[derive(Debug, Clone, Default)]
pub struct SessionOverrides {
    pub memory_limit: Option<usize>,
    pub memory_pool_percent: Option<u8>,
    pub spill_dir: Option<PathBuf>,
    pub target_partitions: Option<usize>,
}

const MIB: usize = 1024 * 1024;

/// Spark's default share for execution and storage (spark.memory.fraction), a starting point.
const DEFAULT_MEMORY_POOL_PERCENT: u8 = 60;

/// About 10 MiB of event ids and source orders held outside the memory pool.
const MAX_DUPLICATES_IN_MEMORY: usize = 100_000;

/// The CPUs this process may use; cgroup quotas included, so it is the pod's limit in
/// Kubernetes.
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl SessionSettings {
    pub fn for_profile(profile: Profile) -> Self {
        match profile {
            Profile::Development => Self {
                profile,
                memory_limit: 1024 * MIB,
                memory_pool_percent: DEFAULT_MEMORY_POOL_PERCENT,
                spill_dir: std::env::temp_dir().join("streamflow-spill"),
                target_partitions: 2,
                batch_size: 8192,
                max_duplicates_in_memory: MAX_DUPLICATES_IN_MEMORY,
            },
            Profile::Production => Self {
                profile,
                memory_limit: 3 * 1024 * MIB,
                memory_pool_percent: DEFAULT_MEMORY_POOL_PERCENT,
                spill_dir: PathBuf::from("/tmp/streamflow-spill"),
                target_partitions: available_cpus(),
                batch_size: 8192,
                max_duplicates_in_memory: MAX_DUPLICATES_IN_MEMORY,
            },
        }
    }

    /// Bytes DataFusion's memory pool lets operators reserve before they spill.
    pub fn pool_size(&self) -> usize {
        self.memory_limit / 100 * usize::from(self.memory_pool_percent.clamp(1, 100))
    }

    pub fn with_overrides(mut self, overrides: &SessionOverrides) -> Self {
        if let Some(limit) = overrides.memory_limit {
            self.memory_limit = limit;
        }
        if let Some(percent) = overrides.memory_pool_percent {
            self.memory_pool_percent = percent;
        }
        if let Some(dir) = &overrides.spill_dir {
            self.spill_dir = dir.clone();
        }
        if let Some(n) = overrides.target_partitions {
            self.target_partitions = n.max(1);
        }
        self
    }
}

/// Parses `1048576`, `512MiB`, `2GiB`, `2G` or `64KiB`.
pub fn parse_size(input: &str) -> Result<usize, SessionError> {
    let bad = || SessionError::BadSize {
        input: input.to_owned(),
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1024,
        "M" | "MB" | "MiB" => MIB,
        "G" | "GB" | "GiB" => 1024 * MIB,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// Builds the context: a fair spilling memory pool of the limit's share (the default pool lets one
/// operator starve the others instead of making them spill), a disk manager in the spill
/// directory, and the object stores of `locations` registered so S3 and local paths resolve.
pub fn build_session(
    settings: &SessionSettings,
    locations: &[&Location],
) -> Result<SessionContext, SessionError> {
    std::fs::create_dir_all(&settings.spill_dir).map_err(|source| SessionError::SpillDir {
        dir: settings.spill_dir.display().to_string(),
        source,
    })?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(settings.pool_size())))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
            DiskManagerMode::Directories(vec![settings.spill_dir.clone()]),
        ))
        .build_arc()?;
    for location in locations {
        location.register_with(&runtime);
    }
    let mut config = SessionConfig::new()
        .with_target_partitions(settings.target_partitions.max(1))
        .with_batch_size(settings.batch_size);
    // Each sort keeps this much back to merge its spill files; DataFusion's fixed 10 MiB per
    // sort would take a small pool whole when several sorts run at once (two gold tables, each
    // sorting per partition), leaving them nothing to sort with.
    config.options_mut().execution.sort_spill_reservation_bytes =
        (settings.pool_size() / 64).clamp(256 * 1024, 10 * MIB);
    // Sort-merge joins spill; hash joins hold their whole build side in memory and fail when it
    // outgrows the pool (transactions joined with sessions are as large as the input).
    config.options_mut().optimizer.prefer_hash_join = false;
    // The cache holds one Arrow IPC file per partition, so its scans are parallel already; a
    // file split into byte ranges is read range by range whole into memory (DataFusion 55's
    // Arrow source), outside the pool, where a file read whole streams batch by batch.
    config.options_mut().optimizer.repartition_file_scans = false;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// A directory of its own in the spill directory for the ETL's cached intermediates, removed
/// when dropped (when the run ends, whether it succeeded or not).
pub fn cache_dir(settings: &SessionSettings) -> Result<tempfile::TempDir, SessionError> {
    tempfile::Builder::new()
        .prefix("etl-cache-")
        .tempdir_in(&settings.spill_dir)
        .map_err(|source| SessionError::CacheDir {
            dir: settings.spill_dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 * MIB);
        assert_eq!(parse_size("2G").unwrap(), 2048 * MIB);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1TiB").is_err());
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = SessionSettings::for_profile(Profile::Production);
        let s = base.clone().with_overrides(&SessionOverrides {
            memory_limit: Some(100 * MIB),
            ..Default::default()
        });
        assert_eq!(s.memory_limit, 100 * MIB);
        assert_eq!(s.pool_size(), 60 * MIB, "the default share");
        let half = s.clone().with_overrides(&SessionOverrides {
            memory_pool_percent: Some(50),
            ..Default::default()
        });
        assert_eq!(half.pool_size(), 50 * MIB);
        assert_eq!(s.target_partitions, base.target_partitions);
        assert_eq!(s.spill_dir, base.spill_dir);
        assert_eq!("dev".parse::<Profile>().unwrap(), Profile::Development);
        assert!("staging".parse::<Profile>().is_err());
    }

    #[test]
    fn the_session_carries_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SessionSettings {
            spill_dir: dir.path().join("spill"),
            target_partitions: 3,
            ..SessionSettings::for_profile(Profile::Development)
        };
        let ctx = build_session(&settings, &[]).unwrap();
        assert_eq!(ctx.state().config().target_partitions(), 3);
        assert!(dir.path().join("spill").is_dir());
        assert!(matches!(
            ctx.runtime_env().memory_pool.memory_limit(),
            datafusion::execution::memory_pool::MemoryLimit::Finite(n) if n == settings.pool_size() && n < settings.memory_limit
        ));
    }
}
