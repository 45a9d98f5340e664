//! The inference worker: a dedicated thread that owns the `Engine`, and ONE priority queue in front
//! of it. Classes, highest first: `Safety` (per-frame probes) > `Description` > `Question` (HMI).
//!
//! Every class queue is bounded and never grows past its capacity:
//! - `Safety` and `Description`: latest frame wins — a new job replaces the oldest queued one, which
//!   completes with `Error::Superseded`;
//! - `Question`: a full queue rejects the new job with `Error::QueueFull` (a question is never
//!   silently dropped).
//!
//! A running generation does not hold safety up: between two of its tokens it takes the waiting
//! safety job and runs it first (`Engine::generate_preemptible`), then goes on where it was. So a
//! safety probe waits for at most one decoder step (or one frame prefix) of a generation.
//!
//! Results come back through `JobHandle`, which is a `Future` (usable from tokio without blocking a
//! runtime thread, no tokio dependency) and can also be waited on synchronously.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::job::{JobClass, QueueLimits};
use crate::probes::{Probe, ProbeSet};
use crate::providers::SessionReport;
use crate::request::Preemption;
use crate::types::{ContextUse, Frame, GenerateParams, Generation, ProbeOutcome};

/// Receives streamed text deltas on the worker thread (forward them to a channel for async use).
pub type TextSink = Box<dyn FnMut(&str) + Send>;

/// What the engine was loaded as (copied out of the worker thread at start).
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub bundle_name: String,
    pub variant: String,
    pub reports: Vec<SessionReport>,
    pub probes: ProbeSet,
    /// The static KV capacity of a bundle; `None` for a published release (its KV grows).
    pub kv_capacity: Option<usize>,
    pub load_time: Duration,
}

enum Work {
    Probe {
        frame: Frame,
        probes: Option<Vec<Probe>>,
        done: Completer<ProbeOutcome>,
    },
    /// How much context a prompt takes (`Engine::context_use`): a check, queued as a Question.
    ContextUse {
        question: String,
        done: Completer<Option<ContextUse>>,
    },
    Generate {
        frame: Frame,
        question: String,
        params: GenerateParams,
        sink: Option<TextSink>,
        done: Completer<Generation>,
    },
}

struct Queued {
    work: Work,
    cancel: Arc<AtomicBool>,
    queued_at: Instant,
}

impl Queued {
    fn fail(self, e: Error) {
        match self.work {
            Work::Probe { done, .. } => done.complete(Err(e)),
            Work::ContextUse { done, .. } => done.complete(Err(e)),
            Work::Generate { done, .. } => done.complete(Err(e)),
        }
    }
}

#[derive(Default)]
struct Queues {
    classes: [VecDeque<Queued>; 3],
    stopping: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    limits: QueueLimits,
}

/// Handle to the inference thread.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    info: EngineInfo,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts the thread and loads the engine on it; returns once the engine is loaded (blocking:
    /// from async code call it in `spawn_blocking`). A load failure is returned here.
    pub fn spawn(config: EngineConfig, limits: QueueLimits) -> Result<Worker> {
        if limits.safety == 0 || limits.description == 0 || limits.question == 0 {
            return Err(Error::Config("every queue limit must be at least 1".into()));
        }
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            limits,
        });
        let (tx, rx) = std::sync::mpsc::channel::<Result<EngineInfo>>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("autoneural-inference".into())
            .spawn(move || {
                let t = Instant::now();
                let engine = match Engine::load(&config) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let info = EngineInfo {
                    bundle_name: engine.name().to_string(),
                    variant: engine.variant().to_string(),
                    reports: engine.reports().to_vec(),
                    probes: engine.probes().clone(),
                    kv_capacity: engine.kv_capacity(),
                    load_time: t.elapsed(),
                };
                if tx.send(Ok(info)).is_err() {
                    return;
                }
                run_loop(engine, &thread_shared);
            })
            .map_err(|e| Error::WorkerStopped(format!("cannot start the inference thread: {e}")))?;
        match rx.recv() {
            Ok(Ok(info)) => Ok(Worker {
                shared,
                thread: Some(thread),
                info,
                next_id: AtomicU64::new(1),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::WorkerStopped(
                    "the inference thread ended while loading".into(),
                ))
            }
        }
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Safety class: the bundle's probes (or `probes`) on `frame`.
    pub fn probe(
        &self,
        frame: Frame,
        probes: Option<Vec<Probe>>,
    ) -> Result<JobHandle<ProbeOutcome>> {
        let (done, handle) = self.pair();
        let cancel = Arc::clone(&handle.cancel);
        self.enqueue(
            JobClass::Safety,
            Queued {
                work: Work::Probe {
                    frame,
                    probes,
                    done,
                },
                cancel,
                queued_at: Instant::now(),
            },
        )?;
        Ok(handle)
    }

    /// Description class: free text about `frame` for `prompt`.
    pub fn describe(
        &self,
        frame: Frame,
        prompt: String,
        params: GenerateParams,
        sink: Option<TextSink>,
    ) -> Result<JobHandle<Generation>> {
        self.generate(JobClass::Description, frame, prompt, params, sink)
    }

    /// Question class: an HMI question about `frame`.
    pub fn ask(
        &self,
        frame: Frame,
        question: String,
        params: GenerateParams,
        sink: Option<TextSink>,
    ) -> Result<JobHandle<Generation>> {
        self.generate(JobClass::Question, frame, question, params, sink)
    }

    fn generate(
        &self,
        class: JobClass,
        frame: Frame,
        question: String,
        params: GenerateParams,
        sink: Option<TextSink>,
    ) -> Result<JobHandle<Generation>> {
        let (done, handle) = self.pair();
        let cancel = Arc::clone(&handle.cancel);
        let work = Work::Generate {
            frame,
            question,
            params,
            sink,
            done,
        };
        self.enqueue(
            class,
            Queued {
                work,
                cancel,
                queued_at: Instant::now(),
            },
        )?;
        Ok(handle)
    }

    /// How much of the model's context a request for `question` takes before its first token
    /// (`None`: the model's context grows). Queued as a Question; meant for checks at start-up.
    pub fn context_use(&self, question: String) -> Result<JobHandle<Option<ContextUse>>> {
        let (done, handle) = self.pair();
        let cancel = Arc::clone(&handle.cancel);
        self.enqueue(
            JobClass::Question,
            Queued {
                work: Work::ContextUse { question, done },
                cancel,
                queued_at: Instant::now(),
            },
        )?;
        Ok(handle)
    }

    /// Jobs waiting per class (Safety, Description, Question).
    pub fn queued(&self) -> [usize; 3] {
        let q = self.shared.queues.lock().unwrap_or_else(|p| p.into_inner());
        [q.classes[0].len(), q.classes[1].len(), q.classes[2].len()]
    }

    fn pair<T>(&self) -> (Completer<T>, JobHandle<T>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                value: None,
                waker: None,
            }),
            ready: Condvar::new(),
        });
        let cancel = Arc::new(AtomicBool::new(false));
        (
            Completer {
                slot: Some(Arc::clone(&slot)),
            },
            JobHandle { id, slot, cancel },
        )
    }

    fn enqueue(&self, class: JobClass, job: Queued) -> Result<()> {
        let mut q = self.shared.queues.lock().unwrap_or_else(|p| p.into_inner());
        if q.stopping {
            drop(q);
            job.fail(Error::WorkerStopped("shutting down".into()));
            return Err(Error::WorkerStopped("shutting down".into()));
        }
        let limit = match class {
            JobClass::Safety => self.shared.limits.safety,
            JobClass::Description => self.shared.limits.description,
            JobClass::Question => self.shared.limits.question,
        };
        let queue = &mut q.classes[class as usize];
        // Cancelled jobs give their place up at once (their callers stopped waiting).
        let mut cancelled = Vec::new();
        let mut i = 0;
        while i < queue.len() {
            if queue[i].cancel.load(Ordering::Relaxed) {
                cancelled.extend(queue.remove(i));
            } else {
                i += 1;
            }
        }
        let mut superseded = None;
        if queue.len() >= limit {
            match class {
                JobClass::Safety | JobClass::Description => superseded = queue.pop_front(),
                JobClass::Question => {
                    drop(q);
                    for c in cancelled {
                        c.fail(Error::Cancelled);
                    }
                    return Err(Error::QueueFull {
                        class,
                        capacity: limit,
                    });
                }
            }
        }
        queue.push_back(job);
        drop(q);
        self.shared.wake.notify_one();
        for c in cancelled {
            c.fail(Error::Cancelled);
        }
        if let Some(old) = superseded {
            old.fail(Error::Superseded { class });
        }
        Ok(())
    }

    /// Stops the thread after the running job; queued jobs fail with `WorkerStopped`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let pending: Vec<Queued> = {
            let mut q = self.shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.stopping = true;
            q.classes.iter_mut().flat_map(|c| c.drain(..)).collect()
        };
        self.shared.wake.notify_all();
        for job in pending {
            job.fail(Error::WorkerStopped("shut down".into()));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_loop(mut engine: Engine, shared: &Shared) {
    let default_probes = engine.probes().probes.clone();
    loop {
        let job = {
            let mut q = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if q.stopping {
                    return;
                }
                if let Some(job) = q.classes.iter_mut().find_map(|c| c.pop_front()) {
                    break job;
                }
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        if job.cancel.load(Ordering::Relaxed) {
            job.fail(Error::Cancelled);
            continue;
        }
        let waited = job.queued_at.elapsed();
        match job.work {
            Work::Probe {
                frame,
                probes,
                done,
            } => {
                let probes = probes.unwrap_or_else(|| default_probes.clone());
                let r = engine.probe(&frame, &probes).map(|mut o| {
                    o.timings.queue_wait = waited;
                    o
                });
                done.complete(r);
            }
            Work::ContextUse { question, done } => done.complete(engine.context_use(&question)),
            Work::Generate {
                frame,
                question,
                params,
                mut sink,
                done,
            } => {
                let mut emit = |s: &str| {
                    if let Some(sink) = sink.as_mut() {
                        sink(s);
                    }
                };
                let mut preempt = || next_safety_job(shared, &default_probes);
                let r = engine
                    .generate_preemptible(
                        &frame,
                        &question,
                        &params,
                        &mut emit,
                        &job.cancel,
                        &mut preempt,
                    )
                    .map(|mut g| {
                        g.timings.queue_wait = waited;
                        g
                    });
                done.complete(r);
            }
        }
    }
}

/// The oldest waiting safety job that is still wanted, to run inside a generation (cancelled ones
/// on the way complete with `Cancelled`). None while stopping: the generation finishes or is
/// cancelled, and `stop` fails what is queued.
fn next_safety_job(shared: &Shared, default_probes: &[Probe]) -> Option<Preemption> {
    loop {
        let job = {
            let mut q = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            if q.stopping {
                return None;
            }
            q.classes[JobClass::Safety as usize].pop_front()?
        };
        if job.cancel.load(Ordering::Relaxed) {
            job.fail(Error::Cancelled);
            continue;
        }
        let waited = job.queued_at.elapsed();
        let Work::Probe {
            frame,
            probes,
            done,
        } = job.work
        else {
            // Only probes are queued as Safety; anything else is put back untouched.
            let mut q = shared.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.classes[JobClass::Safety as usize].push_front(job);
            return None;
        };
        return Some(Preemption {
            frame,
            probes: probes.unwrap_or_else(|| default_probes.to_vec()),
            done: Box::new(move |r| {
                done.complete(r.map(|mut o| {
                    o.timings.queue_wait = waited;
                    o
                }))
            }),
        });
    }
}

struct SlotState<T> {
    value: Option<Result<T>>,
    waker: Option<Waker>,
}

struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
}

/// The worker's end of a job's result. Dropping it without a result reports `WorkerStopped`.
struct Completer<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Completer<T> {
    fn complete(mut self, value: Result<T>) {
        if let Some(slot) = self.slot.take() {
            fill(&slot, value);
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            fill(
                &slot,
                Err(Error::WorkerStopped(
                    "the job was dropped without a result".into(),
                )),
            );
        }
    }
}

fn fill<T>(slot: &Slot<T>, value: Result<T>) {
    let waker = {
        let mut s = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        s.value = Some(value);
        s.waker.take()
    };
    slot.ready.notify_all();
    if let Some(w) = waker {
        w.wake();
    }
}

/// A submitted job: await it (it is a `Future`), `wait()` for it, or `cancel()` it.
pub struct JobHandle<T> {
    id: u64,
    slot: Arc<Slot<T>>,
    cancel: Arc<AtomicBool>,
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T> JobHandle<T> {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancels the job: a queued job completes with `Error::Cancelled`; a running generation stops
    /// after the current token and returns what it has (`FinishReason::Cancelled`).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A token that cancels this job from elsewhere.
    pub fn cancel_token(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Blocks until the job has a result.
    pub fn wait(self) -> Result<T> {
        let mut s = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = s.value.take() {
                return v;
            }
            s = self.slot.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Like `wait` with a time limit; `None` if no result yet.
    pub fn wait_timeout(&self, limit: Duration) -> Option<Result<T>> {
        let deadline = Instant::now() + limit;
        let mut s = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = s.value.take() {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self
                .slot
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A handle nobody waits on any more cancels its job (a queued job is skipped, a running
/// generation stops after its current token): a caller that timed out or went away does not keep
/// the worker busy. After the result was taken this changes nothing.
impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
