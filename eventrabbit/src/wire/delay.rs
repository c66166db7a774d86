//! Delays the broker holds a message for (delayed publishing): rounded up onto a grid,
//! so that a service publishing at many different times makes few wait queues: 10 ms
//! below 10 s, 1 s below 10 min, 10 s below 6 h, 1 min beyond. The longest delay is the
//! broker's TTL limit, 2^31 - 1 ms (about 24.8 days).

use crate::error::{Error, Result};
use std::time::Duration;

/// The longest delay the broker's TTL can express.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(i32::MAX as u64);

/// `delay` rounded up to the grid (see the module's documentation).
pub(crate) fn on_grid(delay: Duration) -> Result<Duration> {
    // Never early: a part of a millisecond counts as one.
    let ms = delay.as_nanos().div_ceil(1_000_000);
    let step: u128 = match ms {
        0..10_000 => 10,
        10_000..600_000 => 1_000,
        600_000..21_600_000 => 10_000,
        _ => 60_000,
    };
    let rounded = ms.div_ceil(step) * step;
    if rounded > MAX_DELAY.as_millis() {
        return Err(Error::InvalidDelay {
            delay,
            reason: format!(
                "longer than the broker's TTL limit of {} ms (about 24.8 days); keep far-future messages in the outbox (eventrabbit-postgres, publish_at)",
                MAX_DELAY.as_millis()
            ),
        });
    }
    Ok(Duration::from_millis(rounded as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_onto_the_grid() {
        let ms = Duration::from_millis;
        assert_eq!(on_grid(ms(0)).unwrap(), ms(0));
        assert_eq!(on_grid(ms(1)).unwrap(), ms(10));
        assert_eq!(on_grid(Duration::from_micros(1)).unwrap(), ms(10));
        assert_eq!(on_grid(ms(1_230)).unwrap(), ms(1_230));
        assert_eq!(on_grid(ms(10_001)).unwrap(), ms(11_000));
        assert_eq!(on_grid(ms(3_600_001)).unwrap(), ms(3_610_000));
        assert_eq!(on_grid(ms(86_400_001)).unwrap(), ms(86_460_000));
        assert!(on_grid(MAX_DELAY + ms(1)).is_err());
        assert!(on_grid(Duration::MAX).is_err());
    }
}
