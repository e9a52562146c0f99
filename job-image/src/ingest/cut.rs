//! Cutting: the workers that check each partition's records and cut them into batches
//! ([`super::batch`]), handing closed batches to the uploader.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::batch::{Batch, Batcher, Record};
use super::error::IngestError;
use super::fetch::KafkaRecord;

/// What the poll thread hands the uploader.
pub(super) enum Work {
    Batch(Batch),
    /// A worker could not compress a batch: the run fails with this.
    Failed(IngestError),
}

/// What the poll thread hands a worker.
pub(super) enum Step<'c> {
    /// Records of the worker's partitions, in the order Kafka delivered them.
    Records(Vec<KafkaRecord<'c>>),
    /// A partition's plan is done: close its batch, to be committed up to `next`.
    Finish { partition: i32, next: i64 },
    /// The run is cut short: close every open batch as it is.
    Cut,
}

/// A worker: checks its partitions' records, cuts them into batches and hands closed batches
/// to the uploader. Ends when the poll thread drops its queue or the uploader is gone.
pub(super) fn check_and_cut(
    mut batchers: BTreeMap<i32, Batcher>,
    steps: std::sync::mpsc::Receiver<Step<'_>>,
    tx: &mpsc::Sender<Work>,
    cut_keeps: bool,
) {
    // Hands a closed batch on; false ends the worker (and so the run): compressing failed or
    // the uploader is gone.
    let hand = |closed: std::io::Result<Option<Batch>>, partition: i32| match closed {
        Ok(None) => true,
        Ok(Some(batch)) => tx.blocking_send(Work::Batch(batch)).is_ok(),
        Err(e) => {
            let _ = tx.blocking_send(Work::Failed(IngestError::Internal(format!(
                "cannot compress a landing object of partition {partition}: {e}"
            ))));
            false
        }
    };
    // Several closed batches at once (ranges of the log closed together); false as `hand`.
    let hand_all = |closed: std::io::Result<Vec<Batch>>, partition: i32| match closed {
        Ok(closed) => closed
            .into_iter()
            .all(|batch| hand(Ok(Some(batch)), partition)),
        Err(e) => {
            hand(Err(e), partition);
            false
        }
    };
    for step in steps {
        match step {
            Step::Records(messages) => {
                for message in &messages {
                    let partition = message.partition();
                    let Some(batcher) = batchers.get_mut(&partition) else {
                        continue;
                    };
                    if batcher.has_cuts() && !hand_all(batcher.reach(message.offset()), partition) {
                        return;
                    }
                    let record = Record {
                        offset: message.offset(),
                        timestamp_ms: message.timestamp_ms(),
                        key: message.key(),
                        value: message.payload(),
                        headers: message,
                    };
                    if !hand(batcher.push(&record), partition) {
                        return;
                    }
                }
            }
            Step::Finish { partition, next } => {
                if let Some(batcher) = batchers.get_mut(&partition)
                    && !hand_all(batcher.finish(next), partition)
                {
                    return;
                }
            }
            Step::Cut => {
                for (partition, batcher) in &mut batchers {
                    // Interval mode keeps only whole batches; the run fails and its rerun
                    // drains the interval again.
                    let closed = batcher.cut_short();
                    let closed = if cut_keeps {
                        closed
                    } else {
                        closed.map(|_| None)
                    };
                    if !hand(closed, *partition) {
                        return;
                    }
                }
            }
        }
    }
}
