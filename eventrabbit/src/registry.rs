//! Which handler serves which action: the program-wide registry and per-queue routes.

use crate::handler::{Registration, registered};
use crate::{Error, Result};
use std::collections::HashMap;

/// The handlers one queue dispatches to, by action.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    by_action: HashMap<&'static str, &'static Registration>,
}

impl Routes {
    pub(crate) fn get(&self, action: &str) -> Option<&'static Registration> {
        self.by_action.get(action).copied()
    }

    /// The actions served.
    pub(crate) fn actions(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_action.keys().copied()
    }
}

/// Fails if two registered handlers serve the same action.
pub(crate) fn check_duplicates() -> Result<()> {
    all().map(|_| ())
}

fn all() -> Result<HashMap<&'static str, &'static Registration>> {
    let mut map: HashMap<&'static str, &'static Registration> = HashMap::new();
    for reg in registered() {
        if let Some(first) = map.insert(reg.action, reg) {
            let (a, b) = if first.name <= reg.name {
                (first, reg)
            } else {
                (reg, first)
            };
            return Err(Error::DuplicateAction {
                action: reg.action.to_owned(),
                first: a.name.to_owned(),
                second: b.name.to_owned(),
            });
        }
    }
    Ok(map)
}

/// The routes of `queue`: every registered handler, or only the `only` actions.
pub(crate) fn routes(queue: &str, only: Option<&[String]>) -> Result<Routes> {
    let all = all()?;
    let by_action = match only {
        None => all,
        Some(actions) => {
            let mut map = HashMap::new();
            for action in actions {
                let (k, v) =
                    all.get_key_value(action.as_str())
                        .ok_or_else(|| Error::UnknownAction {
                            queue: queue.to_owned(),
                            action: action.clone(),
                        })?;
                map.insert(*k, *v);
            }
            map
        }
    };
    Ok(Routes { by_action })
}
