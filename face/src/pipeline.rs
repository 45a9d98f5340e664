//! The face pipeline: detection -> rotated face crop -> 468 landmarks -> per-eye crops -> iris and
//! eyelid landmarks -> signals. Between detections the face is tracked from the previous frame's
//! landmarks (MediaPipe's scheme), so the detector runs only every `detect_every` frames or when
//! the track is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use autoneural_inference::{CpuOptions, LibraryPaths};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use crate::bundle::FaceBundle;
use crate::detector::{self, Detection};
use crate::error::FaceError;
use crate::geometry::{BBox, Point3, Roi};
use crate::image::{RgbImage, TensorMaker};
use crate::signals::{self, Calibration, Eye, Gaze, HeadPose, SignalConfig, mesh};

/// How the pipeline runs (daemon config `[face]`, without the bundle path).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Run the detector at least every this many frames even while tracking (1 = every frame).
    pub detect_every: u32,
    /// ONNX Runtime intra-op threads for the three graphs (1 keeps the face path on one core).
    pub threads: usize,
    pub signals: SignalConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            detect_every: 10,
            threads: 1,
            signals: SignalConfig::default(),
        }
    }
}

/// Per-stage time of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaceTimings {
    pub detect: Duration,
    pub landmarks: Duration,
    pub iris: Duration,
    pub total: Duration,
}

/// Iris-model output for one eye, normalised to the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct EyeLandmarks {
    pub contour: Vec<Point3>,
    pub iris: Vec<Point3>,
}

/// What the face pipeline saw in one frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceFrame {
    /// Probability that a face is in view (landmark model's presence, or the best detection).
    pub face_present: f32,
    /// The detection this frame's crop came from (None when tracked from the last frame).
    pub detection: Option<Detection>,
    pub roi: Option<Roi>,
    /// 468 points normalised to the frame, when a face was found.
    pub landmarks: Option<Vec<Point3>>,
    /// Image-left and image-right eye.
    pub eye_landmarks: Option<[EyeLandmarks; 2]>,
    pub eyes: Option<[Eye; 2]>,
    pub head_pose: Option<HeadPose>,
    pub gaze: Option<Gaze>,
    /// Probability the eyes are closed (mean of the two eyes).
    pub eyes_closed: Option<f32>,
    /// Probability that the gaze is inside the road cone.
    pub eyes_on_road: Option<f32>,
    /// Whether the road cone is centred on this driver's learned neutral gaze.
    pub calibrated: bool,
    pub tracked: bool,
    pub timings: FaceTimings,
}

struct Graph {
    name: &'static str,
    session: Session,
}

impl Graph {
    fn open(
        paths: &LibraryPaths,
        name: &'static str,
        path: &Path,
        threads: usize,
    ) -> Result<Self, FaceError> {
        let session = autoneural_inference::cpu_graph_session(
            paths,
            name,
            path,
            &CpuOptions::with_threads(threads),
        )
        .map_err(|e| FaceError::runtime(name, format!("{}: {e}", path.display())))?;
        Ok(Self { name, session })
    }

    /// Checks that the graph has the input and outputs the manifest names.
    fn expect(&self, path: &Path, input: &str, outputs: &[&str]) -> Result<(), FaceError> {
        let ins: Vec<&str> = self.session.inputs().iter().map(|o| o.name()).collect();
        let outs: Vec<&str> = self.session.outputs().iter().map(|o| o.name()).collect();
        if !ins.contains(&input) {
            return Err(FaceError::bundle(
                path,
                format!("no input `{input}` (graph has: {})", ins.join(", ")),
            ));
        }
        for o in outputs {
            if !outs.contains(o) {
                return Err(FaceError::bundle(
                    path,
                    format!("no output `{o}` (graph has: {})", outs.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Runs with one NCHW input; returns the named outputs' data.
    fn run(
        &mut self,
        input: &str,
        size: u32,
        data: &[f32],
        outputs: &[&str],
    ) -> Result<Vec<Vec<f32>>, FaceError> {
        let n = size as usize;
        let t = TensorRef::from_array_view(([1usize, 3, n, n], data))
            .map_err(|e| FaceError::runtime(self.name, e))?;
        let out = self
            .session
            .run(ort::inputs![input => t])
            .map_err(|e| FaceError::runtime(self.name, e))?;
        outputs
            .iter()
            .map(|name| {
                let v = out
                    .get(*name)
                    .ok_or_else(|| FaceError::runtime(self.name, format!("no output `{name}`")))?;
                let (_, d) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| FaceError::runtime(self.name, format!("{name}: {e}")))?;
                Ok(d.to_vec())
            })
            .collect()
    }
}

/// The three networks with their buffers and the tracking / calibration state of one camera.
pub struct FacePipeline {
    bundle: FaceBundle,
    config: PipelineConfig,
    anchors: Vec<(f32, f32)>,
    detector: Graph,
    landmarks: Graph,
    iris: Graph,
    tensors: TensorMaker,
    input: Vec<f32>,
    track: Option<Roi>,
    since_detect: u32,
    calibration: Calibration,
}

impl FacePipeline {
    /// Opens the bundle's variant on ONNX Runtime's CPU provider (the library found from `paths`
    /// like the model's) and checks each graph's I/O against the manifest.
    pub fn open(
        dir: &Path,
        variant: &str,
        paths: &LibraryPaths,
        config: PipelineConfig,
    ) -> Result<Self, FaceError> {
        let bundle = FaceBundle::open(dir, variant)?;
        let m = &bundle.manifest;
        let threads = config.threads;
        let dp = bundle.detector_path();
        let detector = Graph::open(paths, "face detector", &dp, threads)?;
        detector.expect(
            &dp,
            &m.detector.input,
            &[&m.detector.boxes, &m.detector.scores],
        )?;
        let lp = bundle.landmarks_path();
        let landmarks = Graph::open(paths, "face landmarks", &lp, threads)?;
        landmarks.expect(
            &lp,
            &m.landmarks.input,
            &[&m.landmarks.landmarks, &m.landmarks.presence],
        )?;
        let ip = bundle.iris_path();
        let iris = Graph::open(paths, "iris landmarks", &ip, threads)?;
        iris.expect(&ip, &m.iris.input, &[&m.iris.contour, &m.iris.iris])?;
        let anchors = detector::anchors(&m.detector);
        Ok(Self {
            bundle,
            config,
            anchors,
            detector,
            landmarks,
            iris,
            tensors: TensorMaker::default(),
            input: Vec::new(),
            track: None,
            since_detect: 0,
            calibration: Calibration::default(),
        })
    }

    pub fn bundle(&self) -> &FaceBundle {
        &self.bundle
    }

    /// Forgets the tracked face and the calibration (a new camera, a new stream).
    pub fn reset(&mut self) {
        self.track = None;
        self.since_detect = 0;
        self.calibration = Calibration::default();
    }

    /// Every face the detector finds in `img` (normalised, best first).
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        let spec = &self.bundle.manifest.detector;
        let pad = self
            .tensors
            .letterboxed(img, spec.size, spec.input_range, &mut self.input)?;
        let out = self.detector.run(
            &spec.input,
            spec.size,
            &self.input,
            &[&spec.boxes, &spec.scores],
        )?;
        Ok(detector::decode(spec, &self.anchors, &out[0], &out[1], pad))
    }

    /// The 468 landmarks in `roi` and the presence probability.
    pub fn landmarks_in(
        &mut self,
        img: &RgbImage,
        roi: &Roi,
    ) -> Result<(Vec<Point3>, f32), FaceError> {
        let spec = &self.bundle.manifest.landmarks;
        self.tensors
            .warped(img, roi, spec.size, spec.input_range, &mut self.input);
        let out = self.landmarks.run(
            &spec.input,
            spec.size,
            &self.input,
            &[&spec.landmarks, &spec.presence],
        )?;
        let raw = out[0].get(..mesh::POINTS * 3).ok_or_else(|| {
            FaceError::runtime(
                self.landmarks.name,
                format!("{} values, expected {}", out[0].len(), mesh::POINTS * 3),
            )
        })?;
        let presence = out[1].last().map_or(0.0, |&l| 1.0 / (1.0 + (-l).exp()));
        Ok((
            roi.project(raw, (spec.size, spec.size), (0.0, 0.0), false),
            presence,
        ))
    }

    /// Eyelid contour and iris of the eye in `roi`; `flip` for the image-right eye.
    pub fn eye_in(
        &mut self,
        img: &RgbImage,
        roi: &Roi,
        flip: bool,
    ) -> Result<EyeLandmarks, FaceError> {
        let spec = &self.bundle.manifest.iris;
        self.tensors.warped_resized(
            img,
            roi,
            spec.size,
            spec.input_range,
            flip,
            &mut self.input,
        )?;
        let out = self.iris.run(
            &spec.input,
            spec.size,
            &self.input,
            &[&spec.contour, &spec.iris],
        )?;
        let (c, i) = (&out[0], &out[1]);
        if c.len() < signals::EYE_CONTOUR_POINTS * 3 || i.len() < signals::IRIS_POINTS * 3 {
            return Err(FaceError::runtime(
                self.iris.name,
                format!("{} contour / {} iris values", c.len(), i.len()),
            ));
        }
        let t = (spec.size, spec.size);
        Ok(EyeLandmarks {
            contour: roi.project(&c[..signals::EYE_CONTOUR_POINTS * 3], t, (0.0, 0.0), flip),
            iris: roi.project(&i[..signals::IRIS_POINTS * 3], t, (0.0, 0.0), flip),
        })
    }

    /// One frame at `t` seconds (any monotonic clock; used for calibration resets) with the
    /// vehicle speed when known.
    pub fn process(
        &mut self,
        img: &RgbImage,
        t: f64,
        speed_kmh: Option<f32>,
    ) -> Result<FaceFrame, FaceError> {
        let start = Instant::now();
        let size = img.size();
        let mut frame = FaceFrame::default();
        let lm_scale = self.bundle.manifest.landmarks.roi_scale;
        let min_presence = self.bundle.manifest.landmarks.min_presence;

        // 1. Where is the face: the track from the last frame, or a new detection.
        let mut roi = if self.since_detect + 1 < self.config.detect_every.max(1) {
            self.track
        } else {
            None
        };
        frame.tracked = roi.is_some();
        if roi.is_none() {
            let t0 = Instant::now();
            let dets = self.detect(img)?;
            frame.timings.detect = t0.elapsed();
            self.since_detect = 0;
            if let Some(d) = dets.into_iter().next() {
                frame.face_present = d.score;
                roi = face_roi(&d, size, lm_scale);
                frame.detection = Some(d);
            }
        } else {
            self.since_detect += 1;
        }

        // 2. Landmarks in the face region; a low presence ends the track.
        let mut landmarks = None;
        if let Some(r) = roi {
            let t0 = Instant::now();
            let (lm, presence) = self.landmarks_in(img, &r)?;
            frame.timings.landmarks = t0.elapsed();
            frame.face_present = presence;
            frame.roi = Some(r);
            if presence > min_presence {
                self.track = roi_from_landmarks(&lm, size, lm_scale);
                landmarks = Some(lm);
            } else {
                self.track = None;
            }
        }
        let Some(lm) = landmarks else {
            self.track = None;
            self.calibration
                .observe(t, false, None, false, speed_kmh, &self.config.signals);
            frame.timings.total = start.elapsed();
            return Ok(frame);
        };

        // 3. Both eyes.
        let t0 = Instant::now();
        let iris_scale = self.bundle.manifest.iris.roi_scale;
        let mut eyes_lm = Vec::with_capacity(2);
        for (outer, inner, flip) in [
            (mesh::LEFT_EYE_OUTER, mesh::LEFT_EYE_INNER, false),
            (mesh::RIGHT_EYE_INNER, mesh::RIGHT_EYE_OUTER, true),
        ] {
            let Some(eye_roi) = eye_roi(&lm, outer, inner, size, iris_scale) else {
                break;
            };
            eyes_lm.push(self.eye_in(img, &eye_roi, flip)?);
        }
        frame.timings.iris = t0.elapsed();

        // 4. Signals.
        let cfg = &self.config.signals;
        frame.head_pose = signals::head_pose(&lm, size);
        let eyes: Vec<Eye> = eyes_lm
            .iter()
            .filter_map(|e| signals::eye(&e.contour, &e.iris, size, cfg))
            .collect();
        if let ([a, b], Some(pose)) = (eyes.as_slice(), frame.head_pose) {
            let eye_gaze = Gaze {
                yaw: (a.gaze.yaw + b.gaze.yaw) / 2.0,
                pitch: (a.gaze.pitch + b.gaze.pitch) / 2.0,
            };
            let gaze = Gaze {
                yaw: pose.yaw + eye_gaze.yaw,
                pitch: pose.pitch + eye_gaze.pitch,
            };
            let closed = 1.0 - (a.openness + b.openness) / 2.0;
            self.calibration
                .observe(t, true, Some(gaze), closed < 0.3, speed_kmh, cfg);
            let (neutral, calibrated) = self.calibration.neutral(cfg);
            frame.gaze = Some(gaze);
            frame.eyes_closed = Some(closed);
            frame.eyes_on_road = Some(signals::on_road(gaze, neutral, cfg));
            frame.calibrated = calibrated;
            frame.eyes = Some([*a, *b]);
        } else {
            self.calibration
                .observe(t, true, None, false, speed_kmh, cfg);
        }
        if let Ok::<[EyeLandmarks; 2], _>(pair) = eyes_lm.try_into() {
            frame.eye_landmarks = Some(pair);
        }
        frame.landmarks = Some(lm);
        frame.timings.total = start.elapsed();
        Ok(frame)
    }
}

/// The landmark model's region for a detection: square, `scale` x the box's long side, turned by
/// the line between the eyes.
pub fn face_roi(d: &Detection, size: (u32, u32), scale: f32) -> Option<Roi> {
    let (w, h) = (size.0 as f32, size.1 as f32);
    let a = d.keypoints.first()?;
    let b = d.keypoints.get(1)?;
    Some(Roi::square_around(
        &d.bbox,
        size,
        (a.0 * w, a.1 * h),
        (b.0 * w, b.1 * h),
        scale,
    ))
}

/// The next frame's face region from this frame's landmarks (box around all points, turned by the
/// outer eye corners).
pub fn roi_from_landmarks(lm: &[Point3], size: (u32, u32), scale: f32) -> Option<Roi> {
    let bbox = BBox::around(lm.iter().map(|p| (p[0], p[1])))?;
    let (w, h) = (size.0 as f32, size.1 as f32);
    let a = lm.get(mesh::LEFT_EYE_OUTER)?;
    let b = lm.get(mesh::RIGHT_EYE_OUTER)?;
    Some(Roi::square_around(
        &bbox,
        size,
        (a[0] * w, a[1] * h),
        (b[0] * w, b[1] * h),
        scale,
    ))
}

/// The iris model's region for one eye: around its two corners `a` -> `b`, `scale` x their
/// distance, turned by the line between them.
pub fn eye_roi(lm: &[Point3], a: usize, b: usize, size: (u32, u32), scale: f32) -> Option<Roi> {
    let (pa, pb) = (lm.get(a)?, lm.get(b)?);
    let bbox = BBox::around([(pa[0], pa[1]), (pb[0], pb[1])])?;
    let (w, h) = (size.0 as f32, size.1 as f32);
    Some(Roi::square_around(
        &bbox,
        size,
        (pa[0] * w, pa[1] * h),
        (pb[0] * w, pb[1] * h),
        scale,
    ))
}
