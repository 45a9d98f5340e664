//! The frame stage: an autoneural-camera source (or autoneural-scenes' synthetic scenario) on its
//! capture thread (latest frame wins, reconnect with back-off), each taken frame converted once into
//! the model's input size and, when the face pipeline is on, once into packed RGB at the camera's
//! configured size.

use std::sync::Arc;
use std::time::Duration;

use autoneural_camera as camera;
use autoneural_inference::PixelLayout;
use autoneural_scenes as scenes;
use camera::{
    CameraError, Capture, CaptureOptions, Channels, Converter, Health, LatestFrame, OutputSpec,
    Recovery, TakeError,
};
use log::{error, info, warn};

use crate::config::{CameraConfig, SourceKind};
use crate::stages::{Captured, FrameFeed, SourceEvent, monotonic_now};

/// A frame converted into the model's input: packed RGB (or mono), `size` x `size`.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub sequence: u64,
    /// Capture time (CLOCK_MONOTONIC).
    pub timestamp: Duration,
    pub width: u32,
    pub height: u32,
    /// How `pixels` are packed, in the model's terms ([`layout`] of the converter's channels).
    pub layout: PixelLayout,
    pub pixels: Arc<[u8]>,
    /// The same frame for the face pipeline (None when it is off).
    pub face: Option<FaceInput>,
}

/// The model's pixel layout for what camera's `Converter` writes: the one place where the camera's
/// and the inference crate's words for "packed RGB or mono" meet (neither crate depends on the
/// other).
pub fn layout(channels: Channels) -> PixelLayout {
    match channels {
        Channels::Rgb => PixelLayout::Rgb8,
        Channels::Mono => PixelLayout::Mono8,
    }
}

/// A frame as packed RGB (mono cameras replicated to three channels) at the camera's size.
#[derive(Debug, Clone)]
pub struct FaceInput {
    pub width: u32,
    pub height: u32,
    pub rgb: Arc<[u8]>,
}

/// Opens the configured source (not yet started). A camera that is not there yet (no device
/// node, a replay directory without frames: errors that ask for a reconnect) is not an error: the
/// daemon starts without it and the capture thread opens it with back-off when it appears
/// ([`Reopening`]). Configuration problems (an unknown scenario or pixel format, a device that is
/// not a camera) are errors, since retrying cannot fix them.
pub fn open(
    cfg: &CameraConfig,
) -> anyhow::Result<(Box<dyn camera::FrameSource>, Option<Duration>)> {
    match try_open(cfg) {
        Ok(opened) => Ok(opened),
        Err(e) if e.recovery() == Recovery::Reconnect => {
            warn!("camera: {e}; starting without it and retrying with back-off");
            Ok((Box::new(Reopening::new(cfg.clone(), e)), None))
        }
        Err(e) => Err(anyhow::anyhow!("camera: {e}")),
    }
}

/// Opens the configured source once.
fn try_open(
    cfg: &CameraConfig,
) -> Result<(Box<dyn camera::FrameSource>, Option<Duration>), CameraError> {
    match cfg.source {
        SourceKind::Synthetic => {
            let name = cfg
                .scenario
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default();
            let scenario = if name.ends_with(".toml") {
                scenes::Scenario::load(std::path::Path::new(&name))
                    .map_err(|e| CameraError::Config(format!("camera.scenario: {e}")))?
            } else {
                scenes::Scenario::builtin(&name).ok_or_else(|| {
                    let names: Vec<&str> = scenes::BUILTIN.iter().map(|(n, _)| *n).collect();
                    CameraError::Config(format!(
                        "camera.scenario: no shipped scenario {name:?} (shipped: {})",
                        names.join(", ")
                    ))
                })?
            };
            let source = scenes::ScenarioSource::new(
                scenario,
                cfg.width.get() as u32,
                cfg.height.get() as u32,
            )
            .realtime(true)
            .looping(cfg.looping);
            let epoch = source.epoch();
            Ok((Box::new(source), Some(epoch)))
        }
        SourceKind::V4l2 => {
            let mut v = camera::V4l2Config {
                device: device_name(cfg),
                width: cfg.width.get() as u32,
                height: cfg.height.get() as u32,
                fps: Some(cfg.fps.get() as u32),
                timeout: cfg.frame_timeout_ms.ms(),
                ..camera::V4l2Config::default()
            };
            if !cfg.formats.is_empty() {
                v.formats = cfg
                    .formats
                    .iter()
                    .map(|n| {
                        camera::PixelFormat::parse(n).ok_or_else(|| {
                            CameraError::Config(format!(
                                "camera.formats: unknown pixel format {n:?}"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            Ok((Box::new(camera::V4l2Source::open(v)?), None))
        }
        SourceKind::Replay => {
            let mut r = camera::ReplayConfig::new(replay_dir(cfg));
            r.looping = cfg.looping;
            r.interval = Duration::from_secs_f64(1.0 / cfg.fps.get() as f64);
            Ok((Box::new(camera::ReplaySource::open(r)?), None))
        }
    }
}

fn device_name(cfg: &CameraConfig) -> String {
    cfg.device
        .as_ref()
        .map(|d| d.get_ref().display().to_string())
        .unwrap_or_default()
}

fn replay_dir(cfg: &CameraConfig) -> std::path::PathBuf {
    cfg.directory
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_default()
}

/// A camera that was not there at start-up: every frame request fails with the reason until
/// `reconnect` (called by the capture thread with back-off) manages to open it; from then on it
/// is that source.
pub struct Reopening {
    cfg: CameraConfig,
    inner: Option<Box<dyn camera::FrameSource>>,
    /// Why the last open failed, reported by the next frame request.
    pending: Option<CameraError>,
}

impl Reopening {
    fn new(cfg: CameraConfig, first: CameraError) -> Self {
        Self {
            cfg,
            inner: None,
            pending: Some(first),
        }
    }

    /// The configured source's name (what it is called before it could be opened).
    fn configured(&self) -> String {
        match self.cfg.source {
            SourceKind::V4l2 => format!("v4l2 {}", device_name(&self.cfg)),
            SourceKind::Replay => format!("replay {}", replay_dir(&self.cfg).display()),
            SourceKind::Synthetic => "synthetic".into(),
        }
    }
}

impl camera::FrameSource for Reopening {
    fn next_frame(&mut self) -> Result<Option<camera::Frame>, CameraError> {
        match &mut self.inner {
            Some(source) => source.next_frame(),
            None => Err(self
                .pending
                .take()
                .unwrap_or_else(|| CameraError::DeviceGone {
                    device: self.configured(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not opened yet"),
                })),
        }
    }

    fn reconnect(&mut self) -> Result<(), CameraError> {
        match &mut self.inner {
            Some(source) => source.reconnect(),
            None => {
                let (source, _) = try_open(&self.cfg)?;
                info!("camera: opened {}", source.describe());
                self.inner = Some(source);
                Ok(())
            }
        }
    }

    fn recycle(&mut self, buffer: Vec<u8>) {
        if let Some(source) = &mut self.inner {
            source.recycle(buffer);
        }
    }

    fn describe(&self) -> String {
        match &self.inner {
            Some(source) => source.describe(),
            None => self.configured(),
        }
    }
}

pub struct CameraStage {
    /// Owns the capture thread (stopped when dropped).
    _capture: Capture,
    frames: LatestFrame,
    converter: Converter,
    face_converter: Option<Converter>,
    epoch: Option<Duration>,
    name: String,
    /// Set while every frame taken since is corrupt (undecodable): the capture's last delivery
    /// when the first of them was taken. Later deliveries do not count until a frame converts
    /// again: a camera that sends only garbage is as silent as one that sends nothing.
    corrupt_since: Option<Duration>,
}

impl CameraStage {
    /// Starts the capture thread. `input_size`/`channels`: what the model takes (width, height);
    /// `face_size`: the RGB image the face pipeline takes, when it is on.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        source: Box<dyn camera::FrameSource>,
        epoch: Option<Duration>,
        input_size: (u32, u32),
        channels: Channels,
        face_size: Option<(u32, u32)>,
        frame_timeout: Duration,
        backoff: (Duration, Duration),
    ) -> anyhow::Result<Self> {
        let name = source.describe();
        let (w, h) = input_size;
        let converter = Converter::new(OutputSpec {
            width: w,
            height: h,
            ..OutputSpec::square(w, channels)
        })
        .map_err(|e| anyhow::anyhow!("model input {w}x{h}: {e}"))?;
        let face_converter = face_size
            .map(|(width, height)| {
                Converter::new(OutputSpec {
                    width,
                    height,
                    ..OutputSpec::square(width, Channels::Rgb)
                })
                .map_err(|e| anyhow::anyhow!("face pipeline input {width}x{height}: {e}"))
            })
            .transpose()?;
        let options = CaptureOptions {
            // A frame older than the frame timeout is not worth processing.
            max_age: Some(frame_timeout),
            backoff_initial: backoff.0,
            backoff_max: backoff.1,
            ..CaptureOptions::default()
        };
        // Health changes are rare; frames are not logged.
        let capture = Capture::spawn(source, options, |event| match &event.health {
            Health::Streaming { source } => info!("camera: streaming from {source}"),
            Health::Starting => {}
            Health::Ended => info!("camera: the stream ended"),
            Health::Reconnecting {
                attempt,
                retry_in,
                reason,
            } => warn!(
                "camera: {reason}; reconnecting (attempt {attempt}) in {} ms",
                retry_in.as_millis()
            ),
            Health::Failed { reason, retrying } => {
                if *retrying {
                    warn!("camera: {reason}; still retrying at the longest back-off")
                } else {
                    error!("camera: {reason}; not retrying")
                }
            }
        })?;
        let frames = capture.frames();
        info!("camera: {name}");
        Ok(Self {
            _capture: capture,
            frames,
            converter,
            face_converter,
            epoch,
            name,
            corrupt_since: None,
        })
    }

    fn problem(&self) -> Option<String> {
        match self.frames.health() {
            Health::Reconnecting {
                reason, attempt, ..
            } => Some(format!("{reason} (reconnect attempt {attempt})")),
            Health::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl FrameFeed for CameraStage {
    type Frame = ModelInput;

    fn next(&mut self, timeout: Duration) -> SourceEvent<ModelInput> {
        match self.frames.take(Some(timeout)) {
            Ok(frame) => {
                let converted = self.converter.convert(&frame).map(Arc::<[u8]>::from);
                let face = self.face_converter.as_mut().map(|c| {
                    let (width, height) = (c.spec().width, c.spec().height);
                    c.convert(&frame).map(|rgb| FaceInput {
                        width,
                        height,
                        rgb: Arc::from(rgb),
                    })
                });
                let (sequence, timestamp) = (frame.sequence, frame.timestamp);
                self.frames.give_back(frame);
                let (converted, face) = match face.transpose() {
                    Ok(face) => (converted, face),
                    Err(e) => (Err(e), None),
                };
                match converted {
                    Ok(pixels) => {
                        self.corrupt_since = None;
                        let spec = self.converter.spec();
                        SourceEvent::Frame(Captured {
                            frame: Arc::new(ModelInput {
                                sequence,
                                timestamp,
                                width: spec.width,
                                height: spec.height,
                                layout: layout(spec.channels),
                                pixels,
                                face,
                            }),
                            timestamp,
                            sequence,
                        })
                    }
                    Err(e) if e.is_corrupt_frame() => {
                        if self.corrupt_since.is_none() {
                            self.corrupt_since =
                                Some(self.frames.last_captured_at().unwrap_or_else(monotonic_now));
                        }
                        SourceEvent::Timeout
                    }
                    Err(e) => SourceEvent::Failed(format!("frame conversion: {e}")),
                }
            }
            Err(TakeError::Timeout) => match self.problem() {
                Some(p) => SourceEvent::Failed(p),
                None => SourceEvent::Timeout,
            },
            Err(TakeError::Closed) => match self.frames.health() {
                Health::Ended => SourceEvent::Ended,
                _ => {
                    std::thread::sleep(timeout);
                    SourceEvent::Failed(
                        self.problem()
                            .unwrap_or_else(|| "the capture stopped".into()),
                    )
                }
            },
        }
    }

    fn dropped(&self) -> u64 {
        let s = self.frames.stats();
        s.dropped + s.stale
    }

    fn last_delivery(&self) -> Option<Duration> {
        self.corrupt_since
            .or_else(|| self.frames.last_captured_at())
    }

    fn epoch(&self) -> Option<Duration> {
        self.epoch
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// An image file as one frame (`autoneurald --observe`): converted to the model's input like a
/// camera frame, and given to the face pipeline at its own size when `face` is set.
/// `input_size`: the model's square input, or `None` to keep the image's own size.
pub fn still(
    path: &std::path::Path,
    input_size: Option<u32>,
    face: bool,
    sequence: u64,
) -> anyhow::Result<ModelInput> {
    let img = image::open(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the image: {e}", path.display()))?
        .to_rgb8();
    let (width, height) = img.dimensions();
    if width > camera::convert::MAX_DIMENSION || height > camera::convert::MAX_DIMENSION {
        anyhow::bail!(
            "{}: {width}x{height} is larger than {} pixels a side",
            path.display(),
            camera::convert::MAX_DIMENSION
        );
    }
    let data = img.into_raw();
    let timestamp = Duration::from_secs(sequence);
    let frame = camera::Frame {
        format: camera::PixelFormat::Rgb24,
        width,
        height,
        stride: width * 3,
        data,
        timestamp,
        sequence,
    };
    let (out_w, out_h) = input_size.map_or((width, height), |s| (s, s));
    let mut converter = Converter::new(OutputSpec {
        width: out_w,
        height: out_h,
        ..OutputSpec::square(out_w, Channels::Rgb)
    })
    .map_err(|e| anyhow::anyhow!("model input {out_w}x{out_h}: {e}"))?;
    let pixels = Arc::<[u8]>::from(
        converter
            .convert(&frame)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    );
    let face = face.then(|| FaceInput {
        width,
        height,
        rgb: Arc::from(frame.data.as_slice()),
    });
    Ok(ModelInput {
        sequence,
        timestamp,
        width: out_w,
        height: out_h,
        layout: layout(converter.spec().channels),
        pixels,
        face,
    })
}
