//! The `streamflow` job image: every stage of the pipeline, as a library the binary and the
//! tests share.

pub mod etl;
pub mod events;
pub mod excerpt;
pub mod ingest;
pub mod kafka_security;
pub mod landing;
pub mod outcome;
pub mod produce;
pub mod store;
pub mod validate;
