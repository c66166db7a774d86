//! Which handler serves which action: the program-wide registry and per-queue routes.

use super::registration::{Registration, registered};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The handlers one queue dispatches to, sorted by action: a lookup is a binary search
/// over a few string comparisons, with no hashing on the delivery path.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    sorted: Vec<&'static Registration>,
}

/// The handler of an action, and its place in its queue's routes (for per-route tables).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) index: usize,
    pub(crate) reg: &'static Registration,
}

impl Routes {
    fn new(regs: impl IntoIterator<Item = &'static Registration>) -> Self {
        let mut sorted: Vec<_> = regs.into_iter().collect();
        sorted.sort_unstable_by_key(|r| r.action);
        // An action named twice in `ConsumeChannel::actions` is one route.
        sorted.dedup_by_key(|r| r.action);
        Self { sorted }
    }

    pub(crate) fn get(&self, action: &str) -> Option<Route> {
        let index = self
            .sorted
            .binary_search_by(|r| r.action.cmp(action))
            .ok()?;
        Some(Route {
            index,
            reg: self.sorted[index],
        })
    }

    /// The handlers served, in the order of [`Route::index`].
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Registration> + '_ {
        self.sorted.iter().copied()
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
    let routes = match only {
        None => Routes::new(all.into_values()),
        Some(actions) => Routes::new(
            actions
                .iter()
                .map(|action| {
                    all.get(action.as_str())
                        .copied()
                        .ok_or_else(|| Error::UnknownAction {
                            queue: queue.to_owned(),
                            action: action.clone(),
                        })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::input::{Failure, Input, Reply};
    use crate::handler::registration::HandlerFuture;

    fn never(_: Input) -> HandlerFuture {
        Box::pin(async { Err::<Reply, _>(Failure::Failed("unused".into())) })
    }

    fn fits(_: &Input) -> Result<(), Failure> {
        Ok(())
    }

    static A: Registration = Registration::new("A", "a", never, fits);
    static B: Registration = Registration::new("B_LONGER", "b", never, fits);
    static C: Registration = Registration::new("C", "c", never, fits);

    #[test]
    fn finds_every_action_and_only_those() {
        let routes = Routes::new([&C, &A, &B, &A]);
        assert_eq!(
            routes.iter().count(),
            3,
            "an action named twice is one route"
        );
        for reg in [&A, &B, &C] {
            let route = routes.get(reg.action).expect("registered action");
            assert_eq!(route.reg.name, reg.name);
            assert_eq!(
                routes.iter().nth(route.index).map(|r| r.name),
                Some(reg.name)
            );
        }
        for missing in ["", "B", "B_LONGER_", "a", "D"] {
            assert!(routes.get(missing).is_none(), "{missing}");
        }
    }
}
