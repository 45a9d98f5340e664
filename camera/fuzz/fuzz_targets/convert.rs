//! Fuzzes the frame converters: any format, geometry and bytes must give pixels or a
//! `ConvertError`, never a panic, and the output must always have the promised size.
#![no_main]

use autoneural_camera::{Channels, Converter, Fit, OutputSpec, PixelFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Header: format, channels/fit, width, height, stride slack, output size; then the pixels.
    let Some((head, data)) = input.split_first_chunk::<8>() else {
        return;
    };
    let format = PixelFormat::ALL[usize::from(head[0]) % PixelFormat::ALL.len()];
    let channels = if head[1] & 1 == 0 { Channels::Rgb } else { Channels::Mono };
    let fit = if head[1] & 2 == 0 { Fit::Stretch } else { Fit::CenterCrop };
    // Small sizes keep the fuzzer fast; 0 and odd sizes are included on purpose.
    let width = u32::from(u16::from_le_bytes([head[2], head[3] & 0x01]));
    let height = u32::from(head[4]);
    let min = format.min_stride(width).unwrap_or(0) as u32;
    // Mostly valid strides, sometimes too small.
    let stride = (min + u32::from(head[5] % 16)).saturating_sub(u32::from(head[6] >> 6));
    let size = 1 + u32::from(head[7] % 64);
    let mut spec = OutputSpec::square(size, channels);
    spec.fit = fit;
    let Ok(mut converter) = Converter::new(spec) else {
        return;
    };
    if let Ok(pixels) = converter.convert_raw(format, width, height, stride, data) {
        assert_eq!(pixels.len(), spec.len());
    }
});
