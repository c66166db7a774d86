//! Two handlers for one action: start-up fails and names both (never a silent override).
//! In its own test binary, since the registry is program-wide.

use eventrabbit::{Config, Error, build_event_dependencies, consumer};

mod billing {
    #[eventrabbit::consumer(action = "T_DUPLICATED")]
    pub async fn on_paid(_amount: i64) {}
}

#[consumer(action = "T_DUPLICATED")]
async fn on_paid_again(_amount: i64) {}

#[tokio::test]
async fn the_same_action_registered_twice_fails_at_start_naming_both_functions() {
    let err = build_event_dependencies(eventrabbit_tests::amqp_addr(), Config::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateAction { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("T_DUPLICATED"), "{msg}");
    assert!(msg.contains("duplicate_action::billing::on_paid"), "{msg}");
    assert!(msg.contains("duplicate_action::on_paid_again"), "{msg}");
}
