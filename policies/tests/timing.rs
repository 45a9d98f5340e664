//! Each default rule at its Euro NCAP boundary, escalation, and clearing with hysteresis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use autoneural_policies::{AlertEvent, AlertId, ClearReason, Rules};
use common::*;

#[test]
fn long_distraction_boundary_is_three_seconds() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 2.0)
        .hold(off_road(), 2.9)
        .hold(attentive(), 3.0);
    assert_eq!(drive.timeline(), vec![], "a 2.9 s glance raises nothing");

    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 2.0)
        .hold(off_road(), 3.0)
        .hold(attentive(), 3.0);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![(secs(5.0), "raised", 1), (secs(6.0), "cleared", 1)],
        "a 3.0 s glance warns when it reaches 3.0 s and clears 1 s after the eyes return"
    );
}

#[test]
fn long_distraction_escalates_at_five_seconds_and_clears_after_one_second() {
    let mut drive = Drive::new(Rules::builtin());
    // 5.5 s: below unresponsive's 6 s, which would take over (tests/overlaps.rs).
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 5.5)
        .hold(attentive(), 0.9);
    assert!(
        drive.is_active(AlertId::LongDistraction),
        "0.9 s is inside the hysteresis"
    );
    drive.hold(attentive(), 1.0);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![
            (secs(4.0), "raised", 1),
            (secs(6.0), "escalated", 2),
            (secs(7.5), "cleared", 2),
        ]
    );
}

#[test]
fn one_noisy_frame_neither_raises_nor_clears() {
    // An off-road run of 2 s, one on-road frame, 1 s more: still one 3 s distraction.
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 2.0)
        .hold(attentive(), 0.1)
        .hold(off_road(), 0.9)
        .hold(off_road(), 1.0);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![(secs(4.0), "raised", 1)]
    );
    // While clearing, one off-road frame does not restart the hysteresis.
    drive
        .hold(attentive(), 0.5)
        .hold(off_road(), 0.1)
        .hold(attentive(), 1.0);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![(secs(4.0), "raised", 1), (secs(6.0), "cleared", 1)]
    );
    // Isolated off-road frames every second never raise anything.
    let mut drive = Drive::new(Rules::builtin());
    for _ in 0..20 {
        drive.hold(attentive(), 0.9).hold(off_road(), 0.1);
    }
    assert_eq!(drive.timeline(), vec![]);
}

#[test]
fn the_boundary_does_not_depend_on_the_frame_rate() {
    for rate in [5, 10, 15, 30] {
        let mut drive = Drive::at_rate(Rules::builtin(), rate);
        drive
            .hold(attentive(), 2.0)
            .hold(off_road(), 5.8)
            .hold(attentive(), 3.0);
        assert_eq!(
            drive.of(AlertId::LongDistraction),
            vec![
                (secs(5.0), "raised", 1),
                (secs(7.0), "escalated", 2),
                (secs(8.8), "cleared", 2),
            ],
            "{rate} Hz"
        );
    }
}

#[test]
fn phone_use_boundary_is_three_seconds() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(phone(), 2.9)
        .hold(attentive(), 2.0);
    assert_eq!(drive.timeline(), vec![]);
    drive.hold(phone(), 3.0).hold(attentive(), 2.0);
    assert_eq!(
        drive.of(AlertId::PhoneUse),
        vec![(secs(8.9), "raised", 1), (secs(9.9), "cleared", 1)]
    );
}

#[test]
fn microsleep_at_one_second_then_sleep_at_three_supersedes_it() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(eyes_closed(), 0.9)
        .hold(attentive(), 2.0);
    assert_eq!(drive.timeline(), vec![], "0.9 s closed is a long blink");

    drive.hold(eyes_closed(), 4.0).hold(attentive(), 2.0);
    assert_eq!(
        drive.timeline(),
        vec![
            (secs(4.9), "raised", AlertId::Microsleep, 2),
            (secs(6.9), "raised", AlertId::Sleep, 3),
            (secs(6.9), "cleared", AlertId::Microsleep, 2),
            (secs(8.9), "cleared", AlertId::Sleep, 3),
        ]
    );
    let superseded = drive.events.iter().any(|(_, e)| {
        matches!(
            e,
            AlertEvent::Cleared {
                reason: ClearReason::Superseded { by: AlertId::Sleep },
                ..
            }
        )
    });
    assert!(superseded);
}

#[test]
fn sleep_boundary_is_three_seconds() {
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(eyes_closed(), 2.9)
        .hold(attentive(), 2.0);
    assert!(drive.of(AlertId::Sleep).is_empty());
    assert_eq!(
        drive.of(AlertId::Microsleep).len(),
        2,
        "microsleep raised and cleared"
    );
}

#[test]
fn unresponsive_counts_eyes_closed_and_off_road_together() {
    // 3 s off road then 2.9 s eyes closed: 5.9 s without a response.
    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 3.0)
        .hold(eyes_closed(), 2.9)
        .hold(attentive(), 2.0);
    assert!(drive.of(AlertId::Unresponsive).is_empty());

    let mut drive = Drive::new(Rules::builtin());
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 3.0)
        .hold(eyes_closed(), 3.0)
        .hold(attentive(), 2.0);
    assert_eq!(
        drive.of(AlertId::Unresponsive),
        vec![(secs(7.0), "raised", 3), (secs(8.0), "cleared", 3)]
    );
}

#[test]
fn speed_gating_silences_distraction_rules_below_ten_kmh() {
    let mut drive = Drive::new(Rules::builtin());
    drive.speed_kmh = Some(8.0);
    drive
        .hold(attentive(), 1.0)
        .hold(off_road(), 8.0)
        .hold(phone(), 5.0);
    assert_eq!(drive.timeline(), vec![], "standing still");

    drive.speed_kmh = Some(10.0);
    drive.hold(off_road(), 3.1);
    assert_eq!(
        drive.of(AlertId::LongDistraction),
        vec![(secs(17.0), "raised", 1)],
        "the gate opens at 10 km/h and the timer starts then"
    );
    // Slowing down makes the condition false: the alert clears after the hysteresis.
    drive.speed_kmh = Some(3.0);
    drive.hold(off_road(), 1.1);
    assert_eq!(
        drive.of(AlertId::LongDistraction)[1],
        (secs(18.1), "cleared", 1)
    );
    // Sleep is not gated.
    drive.hold(eyes_closed(), 3.1);
    assert!(drive.is_active(AlertId::Sleep));
}

#[test]
fn drowsiness_from_three_yawns_in_five_minutes() {
    let mut drive = Drive::new(Rules::builtin());
    drive.hold(attentive(), 1.0);
    for _ in 0..2 {
        drive.hold(yawning(), 3.0).hold(attentive(), 100.0);
    }
    assert!(drive.of(AlertId::Drowsiness).is_empty(), "two yawns");
    drive.hold(yawning(), 3.0).hold(attentive(), 1.0);
    let raised = drive.of(AlertId::Drowsiness);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].1, "raised");
    // Raised when the third yawn is confirmed by the filter (a few frames into it).
    assert!(
        raised[0].0 >= secs(207.0) && raised[0].0 < secs(207.5),
        "{raised:?}"
    );
    assert_eq!(drive.engine.state().yawns_in_window, 3);

    // Yawns spread wider than the window never add up.
    let mut drive = Drive::new(Rules::builtin());
    for _ in 0..5 {
        drive.hold(yawning(), 3.0).hold(attentive(), 160.0);
    }
    assert!(drive.of(AlertId::Drowsiness).is_empty());
}

#[test]
fn drowsiness_from_perclos_over_sixty_seconds() {
    // Eyes closed 0.6 s of every 3 s = 20 % PERCLOS.
    let mut drive = Drive::new(Rules::builtin());
    for _ in 0..25 {
        drive.hold(attentive(), 2.4).hold(eyes_closed(), 0.6);
    }
    let raised = drive.of(AlertId::Drowsiness);
    assert_eq!(raised.len(), 1, "{raised:?}");
    // Judged once 80 % of the 60 s window has data.
    assert!(raised[0].0 >= secs(48.0), "{raised:?}");
    let perclos = drive.engine.state().perclos.unwrap();
    assert!((0.18..0.22).contains(&perclos), "{perclos}");

    // 0.3 s of every 3 s = 10 %: no alert.
    let mut drive = Drive::new(Rules::builtin());
    for _ in 0..40 {
        drive.hold(attentive(), 2.7).hold(eyes_closed(), 0.3);
    }
    assert!(drive.of(AlertId::Drowsiness).is_empty());
}

#[test]
fn cooldown_delays_a_repeated_alert() {
    let mut rules = Rules::builtin();
    rules.phone_use.cooldown = secs(10.0);
    let mut drive = Drive::new(rules);
    drive
        .hold(phone(), 3.0)
        .hold(attentive(), 1.0)
        .hold(phone(), 5.0);
    // Raised at 3.0, cleared at 4.0, condition true again from 4.0 (3 s at 7.0) but cooling
    // down until 14.0, so not raised within this drive.
    assert_eq!(
        drive.of(AlertId::PhoneUse),
        vec![(secs(3.0), "raised", 1), (secs(4.0), "cleared", 1)]
    );
    drive.hold(phone(), 6.0);
    assert_eq!(drive.of(AlertId::PhoneUse)[2], (secs(14.0), "raised", 1));
}
