//! Which handler serves which action: the program-wide registry and per-queue routes.

use super::pattern::{self, is_pattern};
use super::registration::{Registration, registered};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The handlers one queue dispatches to, exact actions sorted: a lookup is a binary
/// search over a few string comparisons, with no hashing on the delivery path; an action
/// no exact route serves is then tried against the patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    sorted: Vec<&'static Registration>,
    /// Handlers of action patterns; no two overlap.
    patterns: Vec<&'static Registration>,
}

/// The handler of an action, and its place in its queue's routes (for per-route tables).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) index: usize,
    pub(crate) reg: &'static Registration,
}

impl Routes {
    fn new(regs: impl IntoIterator<Item = &'static Registration>) -> Self {
        let (mut patterns, mut sorted): (Vec<_>, Vec<_>) =
            regs.into_iter().partition(|r| is_pattern(r.action));
        // An action named twice in `ConsumeChannel::actions` is one route.
        for list in [&mut sorted, &mut patterns] {
            list.sort_unstable_by_key(|r| r.action);
            list.dedup_by_key(|r| r.action);
        }
        Self { sorted, patterns }
    }

    pub(crate) fn get(&self, action: &str) -> Option<Route> {
        match self.sorted.binary_search_by(|r| r.action.cmp(action)) {
            Ok(index) => Some(Route {
                index,
                reg: self.sorted[index],
            }),
            Err(_) => self.matching(action),
        }
    }

    /// The pattern route that matches `action` (an exact route beats it).
    fn matching(&self, action: &str) -> Option<Route> {
        let at = self
            .patterns
            .iter()
            .position(|r| pattern::matches(r.action, action))?;
        Some(Route {
            index: self.sorted.len() + at,
            reg: self.patterns[at],
        })
    }

    /// Fails if two patterns of `queue` could match one action.
    fn check_overlaps(&self, queue: &str) -> Result<()> {
        for (i, a) in self.patterns.iter().enumerate() {
            if let Some(b) = self.patterns[i + 1..]
                .iter()
                .find(|b| pattern::overlap(a.action, b.action))
            {
                return Err(Error::OverlappingPatterns {
                    queue: queue.to_owned(),
                    first: format!("{} ({})", a.action, a.name),
                    second: format!("{} ({})", b.action, b.name),
                });
            }
        }
        Ok(())
    }

    /// The handlers served, in the order of [`Route::index`].
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static Registration> + '_ {
        self.sorted.iter().chain(&self.patterns).copied()
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
    routes.check_overlaps(queue)?;
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

    static USER_ANY: Registration = Registration::new("USER_*", "user_any", never, fits);
    static USER_CREATED: Registration =
        Registration::new("USER_CREATED", "user_created", never, fits);
    static ANY_CREATED: Registration = Registration::new("*_CREATED", "any_created", never, fits);

    #[test]
    fn an_exact_action_beats_a_pattern_and_overlaps_are_refused() {
        let routes = Routes::new([&USER_ANY, &USER_CREATED, &A]);
        assert_eq!(routes.get("USER_CREATED").unwrap().reg.name, "user_created");
        let deleted = routes.get("USER_DELETED").unwrap();
        assert_eq!(deleted.reg.name, "user_any");
        assert_eq!(routes.iter().nth(deleted.index).unwrap().name, "user_any");
        assert!(routes.get("ORDER_CREATED").is_none());
        assert!(routes.check_overlaps("q").is_ok());
        let clash = Routes::new([&USER_ANY, &ANY_CREATED]);
        let e = clash.check_overlaps("q").unwrap_err().to_string();
        assert!(
            e.contains("USER_* (user_any)") && e.contains("*_CREATED (any_created)"),
            "{e}"
        );
    }
}
