//! BlazeFace post-processing: SSD anchors, box and keypoint decoding, score thresholding and
//! weighted non-maximum suppression (overlapping detections are averaged, weighted by score).

use crate::bundle::DetectorSpec;
use crate::geometry::BBox;

/// One face: its box and keypoints (normalised to the frame) and its score.
/// Keypoints: right eye, left eye (as seen in the image: the first is on the image's left),
/// nose tip, mouth, right ear tragion, left ear tragion.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f32,
    pub bbox: BBox,
    pub keypoints: Vec<(f32, f32)>,
}

/// Anchor centres (x, y) normalised to the input, in the order of the model's outputs.
pub fn anchors(spec: &DetectorSpec) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    let strides = &spec.strides;
    let mut layer = 0;
    while layer < strides.len() {
        let mut last = layer;
        let mut repeats = 0;
        while last < strides.len() && strides[last] == strides[layer] {
            last += 1;
            repeats += if spec.interpolated_scale_aspect_ratio == 1.0 {
                2
            } else {
                1
            };
        }
        let cells = (spec.size / strides[layer].max(1)) as usize;
        for y in 0..cells {
            let cy = (y as f32 + spec.anchor_offset) / cells as f32;
            for x in 0..cells {
                let cx = (x as f32 + spec.anchor_offset) / cells as f32;
                for _ in 0..repeats {
                    out.push((cx, cy));
                }
            }
        }
        layer = last;
    }
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Decodes raw outputs (`boxes`: per anchor centre offset, size and keypoint offsets in input
/// pixels; `scores`: logits) into detections above the score threshold, merged by weighted NMS,
/// with the letterbox padding removed.
pub fn decode(
    spec: &DetectorSpec,
    anchors: &[(f32, f32)],
    boxes: &[f32],
    scores: &[f32],
    pad: (f32, f32),
) -> Vec<Detection> {
    let per = 4 + 2 * spec.keypoints;
    let scale = spec.size as f32;
    let mut raw: Vec<(f32, Vec<(f32, f32)>)> = Vec::new();
    for (i, (&(ax, ay), &logit)) in anchors.iter().zip(scores).enumerate() {
        let score = sigmoid(logit.clamp(-spec.score_clip, spec.score_clip));
        if score <= spec.min_score {
            continue;
        }
        let Some(b) = boxes.get(i * per..(i + 1) * per) else {
            break;
        };
        let (cx, cy) = (b[0] / scale + ax, b[1] / scale + ay);
        let (hw, hh) = (b[2] / scale / 2.0, b[3] / scale / 2.0);
        if hw <= 0.0 || hh <= 0.0 {
            continue;
        }
        let mut pts = vec![(cx - hw, cy - hh), (cx + hw, cy + hh)];
        for k in 0..spec.keypoints {
            pts.push((b[4 + 2 * k] / scale + ax, b[5 + 2 * k] / scale + ay));
        }
        raw.push((score, pts));
    }
    let merged = weighted_nms(raw, spec.min_suppression_threshold);
    let (hs, vs) = (1.0 - 2.0 * pad.0, 1.0 - 2.0 * pad.1);
    merged
        .into_iter()
        .map(|(score, pts)| {
            let p: Vec<(f32, f32)> = pts
                .iter()
                .map(|&(x, y)| ((x - pad.0) / hs, (y - pad.1) / vs))
                .collect();
            Detection {
                score,
                bbox: BBox {
                    xmin: p[0].0,
                    ymin: p[0].1,
                    xmax: p[1].0,
                    ymax: p[1].1,
                },
                keypoints: p[2..].to_vec(),
            }
        })
        .collect()
}

fn bbox_of(pts: &[(f32, f32)]) -> BBox {
    BBox {
        xmin: pts[0].0,
        ymin: pts[0].1,
        xmax: pts[1].0,
        ymax: pts[1].1,
    }
}

/// Highest score first: every remaining detection overlapping it by more than `threshold` (IoU) is
/// merged into it (points averaged, weighted by score; the top score kept).
fn weighted_nms(
    mut dets: Vec<(f32, Vec<(f32, f32)>)>,
    threshold: f32,
) -> Vec<(f32, Vec<(f32, f32)>)> {
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Vec::new();
    while let Some((top_score, top)) = dets.first().cloned() {
        let top_box = bbox_of(&top);
        let (near, rest): (Vec<_>, Vec<_>) = dets
            .into_iter()
            .partition(|(_, p)| bbox_of(p).iou(&top_box) > threshold);
        let total: f32 = near.iter().map(|(s, _)| s).sum();
        let merged = if near.is_empty() || total <= 0.0 {
            top
        } else {
            (0..top.len())
                .map(|k| {
                    let x: f32 = near.iter().map(|(s, p)| p[k].0 * s).sum();
                    let y: f32 = near.iter().map(|(s, p)| p[k].1 * s).sum();
                    (x / total, y / total)
                })
                .collect()
        };
        out.push((top_score, merged));
        if near.is_empty() {
            // cannot happen for boxes with an area (a box overlaps itself); stop rather than loop
            break;
        }
        dets = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn short_range() -> DetectorSpec {
        DetectorSpec {
            size: 128,
            input: "input".into(),
            input_range: [-1.0, 1.0],
            boxes: "regressors".into(),
            scores: "classificators".into(),
            strides: vec![8, 16, 16, 16],
            anchor_offset: 0.5,
            interpolated_scale_aspect_ratio: 1.0,
            keypoints: 6,
            min_score: 0.5,
            min_suppression_threshold: 0.3,
            score_clip: 80.0,
        }
    }

    #[test]
    fn the_short_range_model_has_896_anchors() {
        let a = anchors(&short_range());
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[512], (0.5 / 8.0, 0.5 / 8.0));
    }

    #[test]
    fn overlapping_detections_merge_and_distant_ones_stay() {
        let spec = short_range();
        let anchors = vec![(0.5, 0.5); 3];
        let mut boxes = vec![0.0f32; 3 * 16];
        // two boxes of 32 px at the centre, one shifted by 4 px; a third one far away
        boxes[2] = 32.0;
        boxes[3] = 32.0;
        boxes[16] = 4.0;
        boxes[18] = 32.0;
        boxes[19] = 32.0;
        boxes[32] = -50.0;
        boxes[33] = -50.0;
        boxes[34] = 20.0;
        boxes[35] = 20.0;
        let scores = [3.0, 1.0, 2.0];
        let d = decode(&spec, &anchors, &boxes, &scores, (0.0, 0.0));
        assert_eq!(d.len(), 2);
        assert!((d[0].score - sigmoid(3.0)).abs() < 1e-6);
        // merged centre moves toward the second box by its weight
        let cx = (d[0].bbox.xmin + d[0].bbox.xmax) / 2.0;
        let w = sigmoid(1.0) / (sigmoid(3.0) + sigmoid(1.0));
        assert!((cx - (0.5 + w * 4.0 / 128.0)).abs() < 1e-5, "{cx}");
        assert!(d[1].bbox.xmax < 0.2);
    }

    #[test]
    fn low_scores_and_empty_boxes_give_nothing() {
        let spec = short_range();
        let anchors = vec![(0.5, 0.5); 2];
        let boxes = vec![0.0f32; 32];
        assert!(decode(&spec, &anchors, &boxes, &[-2.0, 5.0], (0.0, 0.0)).is_empty());
    }

    #[test]
    fn letterbox_padding_is_removed() {
        let spec = short_range();
        let mut boxes = vec![0.0f32; 16];
        boxes[2] = 16.0;
        boxes[3] = 16.0;
        let d = decode(&spec, &[(0.5, 0.25)], &boxes, &[4.0], (0.0, 0.125));
        let cy = (d[0].bbox.ymin + d[0].bbox.ymax) / 2.0;
        assert!((cy - (0.25 - 0.125) / 0.75).abs() < 1e-6);
    }
}
