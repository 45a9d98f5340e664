//! The inference queue's vocabulary: job priority classes and queue bounds (used by the worker
//! and named in errors).

/// Priority class of a job (declaration order = priority order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobClass {
    /// Per-frame safety probes.
    Safety,
    /// The periodic scene description.
    Description,
    /// HMI questions.
    Question,
}

/// Capacity of each class queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub safety: usize,
    pub description: usize,
    pub question: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            safety: 1,
            description: 1,
            question: 4,
        }
    }
}
