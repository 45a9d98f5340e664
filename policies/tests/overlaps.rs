//! One event, one alert: the false-positive drives of issue 16 (Euro NCAP 2026 on-road
//! false-positive tests). Each drive is replayed at 10 observations/s through the default rules and
//! its whole alert timeline is asserted, so a second alert for the same event fails here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use autoneural_policies::{AlertEvent, AlertId, ClearReason, Field, Probabilities, Rules};
use common::*;

/// Eyes closed as a real gaze estimator reports them: no gaze on the road either.
fn closed_and_off_road() -> Probabilities {
    eyes_closed().with(Field::EyesOnRoad, 0.04)
}

fn superseded_by(drive: &Drive, id: AlertId, by: AlertId) -> bool {
    drive.events.iter().any(|(_, e)| {
        matches!(e, AlertEvent::Cleared { alert, reason: ClearReason::Superseded { by: b } }
            if alert.id == id && *b == by)
    })
}

#[test]
fn a_twelve_second_glance_is_long_distraction_then_unresponsive_and_never_vats() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 12.0)
        .hold(attentive(), 3.0);
    assert_eq!(
        drive.timeline(),
        vec![
            (secs(4.0), "raised", AlertId::LongDistraction, 1),
            (secs(6.0), "escalated", AlertId::LongDistraction, 2),
            (secs(7.0), "raised", AlertId::Unresponsive, 3),
            (secs(7.0), "cleared", AlertId::LongDistraction, 2),
            (secs(14.0), "cleared", AlertId::Unresponsive, 3),
        ]
    );
    assert!(superseded_by(
        &drive,
        AlertId::LongDistraction,
        AlertId::Unresponsive
    ));
}

#[test]
fn four_seconds_of_closed_eyes_are_drowsiness_only() {
    // The estimator also says "not on the road" while the eyes are closed: still no distraction.
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(closed_and_off_road(), 4.0)
        .hold(attentive(), 3.0);
    assert_eq!(
        drive.timeline(),
        vec![
            (secs(2.0), "raised", AlertId::Microsleep, 2),
            (secs(4.0), "raised", AlertId::Sleep, 3),
            (secs(4.0), "cleared", AlertId::Microsleep, 2),
            (secs(6.0), "cleared", AlertId::Sleep, 3),
        ]
    );
}

#[test]
fn closed_eyes_long_enough_end_in_unresponsive_alone() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(closed_and_off_road(), 8.0)
        .hold(attentive(), 3.0);
    assert_eq!(
        drive.timeline(),
        vec![
            (secs(2.0), "raised", AlertId::Microsleep, 2),
            (secs(4.0), "raised", AlertId::Sleep, 3),
            (secs(4.0), "cleared", AlertId::Microsleep, 2),
            (secs(7.0), "raised", AlertId::Unresponsive, 3),
            (secs(7.0), "cleared", AlertId::Sleep, 3),
            (secs(10.0), "cleared", AlertId::Unresponsive, 3),
        ]
    );
    assert!(superseded_by(&drive, AlertId::Sleep, AlertId::Unresponsive));
}

#[test]
fn a_long_glance_after_short_ones_does_not_also_raise_vats() {
    // 2 s + 2 s + 2 s of short glances (6 s in the window), then a 4 s glance: before, VATS
    // counted the long glance too and raised at 10 s cumulative next to long_distraction.
    let mut drive = Drive::new(Rules::builtin());
    drive.hold(attentive(), 1.0);
    for _ in 0..3 {
        drive.hold(off_road(), 2.0).hold(attentive(), 1.0);
    }
    drive.hold(off_road(), 4.0).hold(attentive(), 3.0);
    assert_eq!(
        drive.timeline(),
        vec![
            (secs(13.0), "raised", AlertId::LongDistraction, 1),
            (secs(15.0), "cleared", AlertId::LongDistraction, 1),
        ]
    );
}

#[test]
fn short_glances_still_add_up_to_vats() {
    // Five 2.5 s glances (each below long_distraction's 3 s), 0.5 s on the road in between.
    let mut drive = Drive::new(Rules::builtin());
    drive.hold(attentive(), 1.0);
    for _ in 0..5 {
        drive.hold(off_road(), 2.5).hold(attentive(), 0.5);
    }
    drive.hold(attentive(), 3.0);
    let vats = drive.of(AlertId::ShortDistraction);
    assert_eq!(vats.first(), Some(&(secs(12.5), "raised", 1)), "{vats:?}");
    assert!(drive.of(AlertId::LongDistraction).is_empty());
}

#[test]
fn a_vats_alert_gives_way_when_the_glance_becomes_long() {
    // 4 x 2.5 s glances: VATS raised at 10 s cumulative inside the fourth; a fifth glance that
    // lasts 3 s is long_distraction's and takes over.
    let mut drive = Drive::new(Rules::builtin());
    drive.hold(attentive(), 1.0);
    for _ in 0..3 {
        drive.hold(off_road(), 2.5).hold(attentive(), 0.5);
    }
    drive.hold(off_road(), 4.0).hold(attentive(), 3.0);
    let timeline = drive.timeline();
    let ids: Vec<(AlertId, &str)> = timeline.iter().map(|e| (e.2, e.1)).collect();
    assert_eq!(
        ids,
        vec![
            (AlertId::ShortDistraction, "raised"),
            (AlertId::LongDistraction, "raised"),
            (AlertId::ShortDistraction, "cleared"),
            (AlertId::LongDistraction, "cleared"),
        ],
        "{timeline:?}"
    );
    assert!(superseded_by(
        &drive,
        AlertId::ShortDistraction,
        AlertId::LongDistraction
    ));
}

#[test]
fn eyes_off_the_road_with_the_eyes_open_after_a_blink_still_count() {
    // Closed eyes pause distraction; a glance that goes on with the eyes open is timed from
    // the moment the eyes open.
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(closed_and_off_road(), 0.5)
        .hold(off_road(), 3.5)
        .hold(attentive(), 2.0);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![(secs(4.5), "raised", 1), (secs(6.0), "cleared", 1)]
    );
}
