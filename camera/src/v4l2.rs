//! V4L2 capture: open by path or stable name, check capabilities, negotiate format / size / frame
//! interval, set optional controls, mmap streaming with driver timestamps.
//!
//! Built on the `v4l` crate's ioctl layer (`v4l::v4l2` and its bindings). Its higher-level API is
//! avoided on purpose: it panics on some device answers (non-UTF-8 names in QUERYCAP, unknown
//! colorspace values in G_FMT, a failing STREAMOFF when a stream is dropped), and a camera must
//! never be able to take the daemon down.

use std::io;
use std::os::raw::c_void;
use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::v4l_sys::*;
use v4l::v4l2::{self as ioctl_api, vidioc};

use crate::{CameraError, Frame, FrameSource, PixelFormat, monotonic_now};

/// What to open and how. Deserialises from the daemon's TOML (`[camera]` table).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct V4l2Config {
    /// `/dev/videoN`, or a name under `/dev/v4l/by-id/` or `/dev/v4l/by-path/` (full path or just
    /// the name). Resolved again on every reconnect, so a replugged camera is found at its new node.
    pub device: String,
    /// Pixel formats in order of preference; the first one the device offers is used.
    #[serde(deserialize_with = "formats_from_names")]
    pub formats: Vec<PixelFormat>,
    /// Requested size; the driver picks the nearest it supports (the frame says what was used).
    pub width: u32,
    pub height: u32,
    /// Requested frame rate; `None` keeps the driver's.
    pub fps: Option<u32>,
    /// mmap buffers to request (the driver may grant more or fewer; at least 2 are required).
    pub buffers: u32,
    /// A frame must arrive within this time, else the device is considered stuck (reconnect).
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Manual exposure (V4L2_CID_EXPOSURE_ABSOLUTE, 100 µs units); switches auto exposure off.
    pub exposure: Option<i32>,
    /// Gain (V4L2_CID_GAIN), device units.
    pub gain: Option<i32>,
}

impl Default for V4l2Config {
    fn default() -> Self {
        V4l2Config {
            device: "/dev/video0".to_string(),
            formats: vec![
                PixelFormat::Yuyv,
                PixelFormat::Mjpeg,
                PixelFormat::Nv12,
                PixelFormat::Grey,
                PixelFormat::Y16,
            ],
            width: 640,
            height: 480,
            fps: Some(30),
            buffers: 4,
            timeout: Duration::from_secs(2),
            exposure: None,
            gain: None,
        }
    }
}

fn formats_from_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<PixelFormat>, D::Error> {
    let names: Vec<String> = serde::Deserialize::deserialize(d)?;
    names
        .iter()
        .map(|n| {
            PixelFormat::parse(n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown pixel format {n:?} (YUYV, MJPEG, NV12, GREY, Y16, RGB24)"
                ))
            })
        })
        .collect()
}

mod millis {
    use std::time::Duration;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// What the device agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The device node actually opened (symlinks resolved).
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    /// Frame interval as numerator/denominator seconds, if the driver reports one.
    pub interval: Option<(u32, u32)>,
    pub buffers: u32,
}

/// Finds the device node for a configured name: an existing path as is, otherwise the name under
/// `/dev/v4l/by-id/` or `/dev/v4l/by-path/`.
pub fn resolve_device(name: &str) -> Result<PathBuf, CameraError> {
    let direct = Path::new(name);
    let candidates = [
        direct.to_path_buf(),
        Path::new("/dev/v4l/by-id").join(name),
        Path::new("/dev/v4l/by-path").join(name),
    ];
    for path in candidates {
        if path.exists() {
            return Ok(std::fs::canonicalize(&path).unwrap_or(path));
        }
    }
    Err(CameraError::DeviceGone {
        device: name.to_string(),
        source: io::Error::from_raw_os_error(libc::ENOENT),
    })
}

/// An open file descriptor, closed on drop (errors ignored: the device may already be gone).
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor; nothing else closes it.
        unsafe { libc::close(self.0) };
    }
}

/// One mmap'ed driver buffer.
struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// An open, streaming device. Dropping it stops streaming and releases the buffers.
struct Stream {
    // Field order matters: mappings are unmapped before the descriptor is closed.
    mappings: Vec<Mapping>,
    fd: Fd,
    negotiated: Negotiated,
}

// SAFETY: the raw pointers in `mappings` point into driver buffers owned by this stream alone; the
// stream is only ever used by one thread at a time (`&mut self`).
unsafe impl Send for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut typ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        // Errors are expected when the device is gone; the kernel cleans up on close anyway.
        let _ = xioctl(self.fd.0, vidioc::VIDIOC_STREAMOFF, &mut typ);
    }
}

/// ioctl with EINTR retry.
fn xioctl<T>(fd: i32, request: vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is the properly sized, initialised struct the request expects (callers pair
        // each request with its struct type from the kernel headers).
        match unsafe { ioctl_api::ioctl(fd, request, arg as *mut T as *mut c_void) } {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the kernel's plain-old-data V4L2 structs, for which all-zero is valid.
    unsafe { std::mem::zeroed() }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Stream {
    fn open(config: &V4l2Config) -> Result<Stream, CameraError> {
        if config.formats.is_empty() {
            return Err(CameraError::Config("no pixel format to negotiate".into()));
        }
        let path = resolve_device(&config.device)?;
        let dev = path.display().to_string();
        let err = |what: &'static str| {
            let dev = dev.clone();
            move |e: io::Error| CameraError::from_io(&dev, what, e)
        };
        let unsupported = |reason: String| CameraError::Unsupported {
            device: dev.clone(),
            reason,
        };
        let fd = Fd(
            ioctl_api::open(&path, libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .map_err(err("open"))?,
        );

        // Capabilities: a capture device that streams.
        let mut cap: v4l2_capability = zeroed();
        xioctl(fd.0, vidioc::VIDIOC_QUERYCAP, &mut cap).map_err(err("VIDIOC_QUERYCAP"))?;
        let caps = if cap.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        if caps & V4L2_CAP_VIDEO_CAPTURE == 0 {
            return Err(unsupported("not a video capture device".into()));
        }
        if caps & V4L2_CAP_STREAMING == 0 {
            return Err(unsupported("no streaming I/O".into()));
        }

        // Format: the first preference the device lists.
        let offered = enum_formats(fd.0).map_err(err("VIDIOC_ENUM_FMT"))?;
        let format = config
            .formats
            .iter()
            .copied()
            .find(|f| offered.contains(f))
            .ok_or_else(|| {
                let names: Vec<&str> = offered.iter().map(|f| f.name()).collect();
                unsupported(format!(
                    "offers none of the wanted formats (it has {})",
                    names.join(", ")
                ))
            })?;
        let mut fmt: v4l2_format = zeroed();
        fmt.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        // `pix` is the union member for VIDEO_CAPTURE formats.
        fmt.fmt.pix.width = config.width;
        fmt.fmt.pix.height = config.height;
        fmt.fmt.pix.pixelformat = u32::from_le_bytes(format.fourcc());
        fmt.fmt.pix.field = v4l2_field_V4L2_FIELD_NONE;
        xioctl(fd.0, vidioc::VIDIOC_S_FMT, &mut fmt).map_err(err("VIDIOC_S_FMT"))?;
        // SAFETY: as above; the driver filled in `pix`.
        let pix = unsafe { fmt.fmt.pix };
        let got = PixelFormat::from_fourcc(pix.pixelformat.to_le_bytes());
        if got != Some(format) {
            return Err(unsupported(format!(
                "asked for {format}, driver set {:?}",
                String::from_utf8_lossy(&pix.pixelformat.to_le_bytes())
            )));
        }
        let stride = match format.min_stride(pix.width) {
            Some(min) if u64::from(pix.bytesperline) < min => min as u32,
            Some(_) => pix.bytesperline,
            None => 0,
        };

        // Frame interval: ask, then report what the driver chose.
        let mut parm: v4l2_streamparm = zeroed();
        parm.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        if let Some(fps) = config.fps.filter(|&f| f > 0) {
            // `capture` is the union member for VIDEO_CAPTURE.
            parm.parm.capture.timeperframe = v4l2_fract {
                numerator: 1,
                denominator: fps,
            };
            if let Err(e) = xioctl(fd.0, vidioc::VIDIOC_S_PARM, &mut parm) {
                log::warn!("{dev}: cannot set {fps} fps: {e}");
            }
        } else {
            let _ = xioctl(fd.0, vidioc::VIDIOC_G_PARM, &mut parm);
        }
        // SAFETY: as above.
        let tpf = unsafe { parm.parm.capture.timeperframe };
        let interval =
            (tpf.numerator > 0 && tpf.denominator > 0).then_some((tpf.numerator, tpf.denominator));

        set_controls(fd.0, &dev, config);

        // Buffers: request, map, queue, stream on.
        let mut req: v4l2_requestbuffers = zeroed();
        req.count = config.buffers.clamp(2, 32);
        req.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        req.memory = v4l2_memory_V4L2_MEMORY_MMAP;
        xioctl(fd.0, vidioc::VIDIOC_REQBUFS, &mut req).map_err(err("VIDIOC_REQBUFS"))?;
        if req.count < 2 {
            return Err(unsupported(format!("driver granted {} buffers", req.count)));
        }
        let mut mappings = Vec::with_capacity(req.count as usize);
        for index in 0..req.count {
            let mut buf = capture_buffer();
            buf.index = index;
            xioctl(fd.0, vidioc::VIDIOC_QUERYBUF, &mut buf).map_err(err("VIDIOC_QUERYBUF"))?;
            // SAFETY: mapping the driver's buffer at the offset it gave us; checked for failure.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    buf.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.0,
                    buf.m.offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(err("mmap")(io::Error::last_os_error()));
            }
            mappings.push(Mapping {
                ptr,
                len: buf.length as usize,
            });
            xioctl(fd.0, vidioc::VIDIOC_QBUF, &mut buf).map_err(err("VIDIOC_QBUF"))?;
        }
        let mut typ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        xioctl(fd.0, vidioc::VIDIOC_STREAMON, &mut typ).map_err(err("VIDIOC_STREAMON"))?;
        Ok(Stream {
            negotiated: Negotiated {
                path,
                driver: c_string(&cap.driver),
                card: c_string(&cap.card),
                format,
                width: pix.width,
                height: pix.height,
                stride,
                interval,
                buffers: req.count,
            },
            mappings,
            fd,
        })
    }

    /// Waits for the next filled buffer, copies it into `data`, and gives the buffer back.
    fn next(&mut self, timeout: Duration, data: &mut Vec<u8>) -> Result<Frame, CameraError> {
        let n = &self.negotiated;
        let dev = n.path.display().to_string();
        let mut pfd = libc::pollfd {
            fd: self.fd.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = loop {
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => {
                    return Err(CameraError::from_io(
                        &dev,
                        "poll",
                        io::Error::last_os_error(),
                    ));
                }
                r => break r,
            }
        };
        if ready == 0 {
            return Err(CameraError::Timeout {
                device: dev,
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        let mut buf = capture_buffer();
        xioctl(self.fd.0, vidioc::VIDIOC_DQBUF, &mut buf)
            .map_err(|e| CameraError::from_io(&dev, "VIDIOC_DQBUF", e))?;
        let frame = self.copy_out(&buf, data);
        // Requeue whatever happened to the copy, so the driver keeps its buffers.
        xioctl(self.fd.0, vidioc::VIDIOC_QBUF, &mut buf)
            .map_err(|e| CameraError::from_io(&dev, "VIDIOC_QBUF", e))?;
        frame.map(|(timestamp, sequence)| Frame {
            format: n.format,
            width: n.width,
            height: n.height,
            stride: n.stride,
            data: std::mem::take(data),
            timestamp,
            sequence,
        })
    }

    /// Validates a dequeued buffer and copies its bytes; returns (timestamp, sequence).
    fn copy_out(
        &self,
        buf: &v4l2_buffer,
        data: &mut Vec<u8>,
    ) -> Result<(Duration, u64), CameraError> {
        let n = &self.negotiated;
        let sequence = u64::from(buf.sequence);
        let corrupt = |reason: String| CameraError::CorruptFrame {
            format: n.format,
            sequence,
            reason,
        };
        let mapping = self
            .mappings
            .get(buf.index as usize)
            .ok_or_else(|| corrupt(format!("driver returned unknown buffer {}", buf.index)))?;
        if buf.flags & V4L2_BUF_FLAG_ERROR != 0 {
            return Err(corrupt("driver flagged the buffer as erroneous".into()));
        }
        let used = (buf.bytesused as usize).min(mapping.len);
        let need = n.format.frame_len(n.stride, n.height).unwrap_or(4);
        if (used as u64) < need {
            return Err(corrupt(format!("{used} bytes, need {need}")));
        }
        // SAFETY: the mapping is `mapping.len` bytes of driver memory we own until requeued.
        let bytes = unsafe { std::slice::from_raw_parts(mapping.ptr as *const u8, used) };
        if n.format == PixelFormat::Mjpeg && !bytes.starts_with(&[0xFF, 0xD8]) {
            return Err(corrupt("no JPEG start-of-image marker".into()));
        }
        data.clear();
        data.extend_from_slice(bytes);
        let monotonic =
            buf.flags & V4L2_BUF_FLAG_TIMESTAMP_MASK == V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
        let timestamp = if monotonic {
            Duration::from_secs(buf.timestamp.tv_sec.max(0) as u64)
                + Duration::from_micros(buf.timestamp.tv_usec.clamp(0, 999_999) as u64)
        } else {
            monotonic_now()
        };
        Ok((timestamp, sequence))
    }
}

fn capture_buffer() -> v4l2_buffer {
    let mut buf: v4l2_buffer = zeroed();
    buf.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
    buf.memory = v4l2_memory_V4L2_MEMORY_MMAP;
    buf
}

/// The project's formats among those the device lists.
fn enum_formats(fd: i32) -> io::Result<Vec<PixelFormat>> {
    let mut found = Vec::new();
    for index in 0..256 {
        let mut desc: v4l2_fmtdesc = zeroed();
        desc.index = index;
        desc.type_ = v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE;
        match xioctl(fd, vidioc::VIDIOC_ENUM_FMT, &mut desc) {
            Ok(()) => {
                if let Some(f) = PixelFormat::from_fourcc(desc.pixelformat.to_le_bytes()) {
                    found.push(f);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Sets the optional controls. A control the device lacks is logged, not fatal: the camera still
/// gives useful frames.
fn set_controls(fd: i32, dev: &str, config: &V4l2Config) {
    let set = |id: u32, value: i32, name: &str| {
        let mut ctrl = v4l2_control { id, value };
        if let Err(e) = xioctl(fd, vidioc::VIDIOC_S_CTRL, &mut ctrl) {
            log::warn!("{dev}: cannot set {name} to {value}: {e}");
        }
    };
    if let Some(exposure) = config.exposure {
        set(V4L2_CID_EXPOSURE_AUTO, 1, "manual exposure mode");
        set(V4L2_CID_EXPOSURE_ABSOLUTE, exposure, "exposure");
    }
    if let Some(gain) = config.gain {
        set(V4L2_CID_GAIN, gain, "gain");
    }
}

/// A V4L2 camera as a [`FrameSource`].
pub struct V4l2Source {
    config: V4l2Config,
    stream: Option<Stream>,
    spare: Vec<u8>,
}

impl V4l2Source {
    /// Opens the device and starts streaming.
    pub fn open(config: V4l2Config) -> Result<V4l2Source, CameraError> {
        let stream = Stream::open(&config)?;
        // Debug: the application reports streaming from the capture thread's health events.
        log::debug!("camera streaming: {}", describe(&stream.negotiated));
        Ok(V4l2Source {
            config,
            stream: Some(stream),
            spare: Vec::new(),
        })
    }

    /// What the device agreed to (None while disconnected).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.stream.as_ref().map(|s| &s.negotiated)
    }
}

fn describe(n: &Negotiated) -> String {
    let fps = match n.interval {
        Some((num, den)) => format!(" @ {:.1} fps", f64::from(den) / f64::from(num)),
        None => String::new(),
    };
    format!(
        "{} ({} {}) {} {}x{}{}",
        n.path.display(),
        n.driver,
        n.card,
        n.format,
        n.width,
        n.height,
        fps
    )
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, CameraError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CameraError::DeviceGone {
                device: self.config.device.clone(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        let result = stream.next(self.config.timeout, &mut self.spare);
        if let Err(e) = &result
            && e.recovery() == crate::Recovery::Reconnect
        {
            // Release the device now: a replugged camera may reuse the node only once we let go.
            self.stream = None;
        }
        result.map(Some)
    }

    fn reconnect(&mut self) -> Result<(), CameraError> {
        self.stream = None;
        let stream = Stream::open(&self.config)?;
        // Debug: the application reports streaming from the capture thread's health events.
        log::debug!("camera streaming: {}", describe(&stream.negotiated));
        self.stream = Some(stream);
        Ok(())
    }

    fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.capacity() < buffer.capacity() {
            self.spare = buffer;
        }
    }

    fn describe(&self) -> String {
        match &self.stream {
            Some(s) => describe(&s.negotiated),
            None => format!("{} (disconnected)", self.config.device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_from_toml_and_rejects_unknown_formats() {
        let config: V4l2Config = toml::from_str(
            "device = \"usb-cam-index0\"\nformats = [\"grey\", \"Y16\"]\ntimeout = 500\ngain = 4\n",
        )
        .expect("parses");
        assert_eq!(config.formats, [PixelFormat::Grey, PixelFormat::Y16]);
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert_eq!((config.width, config.gain), (640, Some(4)));
        assert!(toml::from_str::<V4l2Config>("formats = [\"H264\"]").is_err());
        assert!(toml::from_str::<V4l2Config>("colour = true").is_err());
    }

    #[test]
    fn a_missing_device_is_gone_not_fatal() {
        let err = V4l2Source::open(V4l2Config {
            device: "/dev/no-such-video-device".into(),
            ..V4l2Config::default()
        })
        .err()
        .expect("fails");
        assert_eq!(err.recovery(), crate::Recovery::Reconnect, "{err}");
    }

    #[test]
    fn a_non_video_node_is_refused_as_unsupported() {
        // /dev/null exists but answers VIDIOC_QUERYCAP with ENOTTY: an I/O error, not a panic.
        let err = V4l2Source::open(V4l2Config {
            device: "/dev/null".into(),
            ..V4l2Config::default()
        })
        .err()
        .expect("fails");
        assert!(err.to_string().contains("QUERYCAP"), "{err}");
        assert_eq!(err.recovery(), crate::Recovery::Fatal, "{err}");
    }
}
