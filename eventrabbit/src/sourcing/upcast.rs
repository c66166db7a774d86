//! Upcasters: old shapes of an event's `data`, upgraded as they are read.

use super::event::RecordedEvent;
use super::store::StoreError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type UpcastFn = Arc<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// Upcasters keyed by action and revision. An action starts at revision 1; each upcaster
/// reads one revision and makes the next, so an action with two upcasters is written at
/// revision 3 and an event stored at revision 1 is read through both.
///
/// ```
/// use eventrabbit::sourcing::Upcasters;
/// use serde_json::json;
/// // Revision 1 of DEPOSITED had `amount`; revision 2 calls it `cents`.
/// let upcasters = Upcasters::new().upcast("DEPOSITED", 1, |mut data| {
///     let amount = data["amount"].take();
///     data["cents"] = amount;
///     Ok(data)
/// });
/// assert_eq!(upcasters.revision("DEPOSITED"), 2);
/// assert_eq!(upcasters.revision("OPENED"), 1);
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    chains: HashMap<String, BTreeMap<u32, UpcastFn>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (action, chain) in &self.chains {
            map.entry(action, &chain.keys().collect::<Vec<_>>());
        }
        map.finish()
    }
}

impl Upcasters {
    /// None: every action at revision 1.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the upcaster of `action` from revision `from` to `from + 1` (replacing one
    /// added before for the same revision). An action's chain runs from revision 1 up to
    /// the first revision without an upcaster.
    #[must_use]
    pub fn upcast<F>(mut self, action: &str, from: u32, upcast: F) -> Self
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    {
        self.chains
            .entry(action.to_owned())
            .or_default()
            .insert(from, Arc::new(upcast));
        self
    }

    /// The revision `action` is written at now.
    #[must_use]
    pub fn revision(&self, action: &str) -> u32 {
        let mut revision = 1;
        if let Some(chain) = self.chains.get(action) {
            while revision < u32::MAX && chain.contains_key(&revision) {
                revision += 1;
            }
        }
        revision
    }

    /// `event` in its action's current shape.
    pub fn apply(&self, mut event: RecordedEvent) -> Result<RecordedEvent, StoreError> {
        let Some(chain) = self.chains.get(&event.action) else {
            return Ok(event);
        };
        while event.revision < u32::MAX {
            let Some(upcast) = chain.get(&event.revision) else {
                break;
            };
            let data = std::mem::take(&mut event.data);
            let failed = |reason: String| StoreError::Upcast {
                stream: event.stream.clone(),
                version: event.version,
                action: event.action.clone(),
                revision: event.revision,
                reason,
            };
            event.data = match upcast(data) {
                Ok(data) if data.is_object() => data,
                Ok(_) => return Err(failed("the upcaster did not return a JSON object".into())),
                Err(reason) => return Err(failed(reason)),
            };
            event.revision += 1;
        }
        Ok(event)
    }
}
