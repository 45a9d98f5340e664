//! Durations serialised as seconds (f64), the unit of the rules file and the JSONL schema.

use std::time::Duration;

use serde::Serializer;

pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}

pub fn serialize_option<S: Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_some(&value.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}
