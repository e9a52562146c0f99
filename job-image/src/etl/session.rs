//! The session factory: the one place that builds DataFusion's execution context, from a named
//! profile whose values flags and environment variables override (the seed's SparkSession
//! factory, for DataFusion).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
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

/// How many of the memory pool's largest consumers an out-of-memory error names.
const CONSUMERS_NAMED_ON_REFUSAL: std::num::NonZeroUsize = std::num::NonZeroUsize::new(8).unwrap();

/// Gold tables computed and written concurrently: while one is in its single-threaded final
/// merge and CSV encoding, the other's scans and sorts use the remaining CPU.
pub const GOLD_TABLES_AT_ONCE: usize = 2;

/// Bytes per row of a sorted gold input in Arrow, rounded up: the widest measured here (item
/// lines, 1,024-row batches) took about 150 KB a batch.
const ROW_BYTES_ESTIMATE: usize = 256;

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

    /// How many spill files one sort merges in one pass.
    ///
    /// DataFusion seats two batches of every spill file it merges, in a reservation the pool
    /// cannot take back, and by default seats as many files as the pool has room for (its own
    /// comment: good for a pool of its own, not for a shared one): one partition's merge could
    /// take the pool whole and leave the other sorts' merges and the final merge of the
    /// partitions nothing. Bounded, the sorts that can run at once each seat at most half of
    /// an equal share and merge in more passes instead.
    pub fn spill_merge_fan_in(&self) -> usize {
        let sorts_at_once = self.target_partitions.max(1) * GOLD_TABLES_AT_ONCE;
        let budget_per_merge = self.pool_size() / sorts_at_once / 2;
        let bytes_per_file = 2 * self.batch_size.max(1) * ROW_BYTES_ESTIMATE;
        // Zero would mean unbounded to DataFusion, and a merge needs two files.
        (budget_per_merge / bytes_per_file).max(2)
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
        // A refusal names the pool's largest consumers, so a run that fails for memory says
        // what held it.
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(settings.pool_size()),
            CONSUMERS_NAMED_ON_REFUSAL,
        )))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![
                    settings.spill_dir.clone(),
                ]))
                .with_max_spill_merge_fan_in(settings.spill_merge_fan_in()),
        )
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
    // A sort sorts what it holds as one concatenated batch when it holds less than this, and
    // otherwise merges its batches through a row-format copy of their keys, reserved apart from
    // the sort as memory that cannot spill. A sort takes up to its share of the pool before it
    // spills, so that copy could be refused exactly when the pool is full (the spill test: a
    // sort at 39.6 MB, its merge refused after 30.9 MB of a 48 MB pool). No sort holds more
    // than the pool, so with the pool as the threshold every sort is one concatenated batch,
    // counted in the sort's own reservation.
    config.options_mut().execution.sort_in_place_threshold_bytes = settings.pool_size();
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
        assert_eq!(
            ctx.runtime_env().disk_manager.max_spill_merge_fan_in(),
            settings.spill_merge_fan_in()
        );
        assert_eq!(
            ctx.state()
                .config()
                .options()
                .execution
                .sort_in_place_threshold_bytes,
            settings.pool_size(),
            "every sort is one concatenated batch"
        );
    }

    #[test]
    fn spill_merges_seat_at_most_half_an_equal_share_of_the_pool() {
        let small = SessionSettings {
            memory_limit: 48 * MIB,
            memory_pool_percent: 100,
            target_partitions: 2,
            batch_size: 1024,
            ..SessionSettings::for_profile(Profile::Development)
        };
        // Four sorts at once (two tables, two partitions), just under 6 MiB each (the pool is
        // rounded down to whole percents); 512 KiB a file.
        assert_eq!(small.spill_merge_fan_in(), 11);
        let all_merges_seated =
            small.spill_merge_fan_in() * 2 * small.batch_size * ROW_BYTES_ESTIMATE * 4;
        assert!(all_merges_seated <= small.pool_size() / 2);
        let tiny = SessionSettings {
            memory_limit: MIB,
            ..small.clone()
        };
        assert_eq!(tiny.spill_merge_fan_in(), 2, "never 0 (unbounded) or 1");
        let production = SessionSettings {
            target_partitions: 2,
            ..SessionSettings::for_profile(Profile::Production)
        };
        assert!(
            production.spill_merge_fan_in() > 50,
            "one pass for most sorts"
        );
    }
}
