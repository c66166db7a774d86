//! Application state for handlers: values made once in `main` (a database pool, a client,
//! settings) registered by type with [`Config::with_state`](crate::Config::with_state),
//! and handed to every handler parameter of type [`State<T>`].

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A value of type `T` registered with [`Config::with_state`](crate::Config::with_state)
/// (or [`TestBroker::with_state`](crate::testing::TestBroker::with_state)), as a handler
/// parameter: `db: State<Db>`. It dereferences to `T`; cloning it clones an `Arc`.
///
/// A queue whose handlers take a state that was never registered does not start:
/// `consume` (or `start`) fails with [`Error::MissingState`](crate::Error::MissingState)
/// naming the handler and the type.
///
/// ```no_run,standalone_crate
/// use eventrabbit::{Config, State, consumer};
///
/// struct Greetings {
///     prefix: String,
/// }
///
/// #[consumer(action = "USER_CREATED")]
/// async fn greet(name: String, greetings: State<Greetings>) {
///     println!("{}{name}", greetings.prefix);
/// }
///
/// # async fn run() -> eventrabbit::Result<()> {
/// let config = Config::default().with_state(Greetings { prefix: "hello, ".into() });
/// let handle = eventrabbit::build_event_dependencies("amqp://127.0.0.1:5672", config).await?;
/// # let _ = handle; Ok(()) }
/// # fn main() {}
/// ```
pub struct State<T: ?Sized>(Arc<T>);

impl<T: ?Sized> State<T> {
    /// The shared value.
    #[must_use]
    pub fn into_inner(self) -> Arc<T> {
        self.0
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T: ?Sized> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

/// One registered value.
#[derive(Clone)]
struct Entry {
    id: TypeId,
    name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

/// The state registered for handlers, one value per type. Cheap to clone (an `Arc`); most
/// services register a handful of values, so it is a list searched in order.
#[derive(Clone, Default)]
pub struct StateMap(Arc<Vec<Entry>>);

impl StateMap {
    /// Registers `value` for handlers taking `State<T>`, replacing an earlier value of `T`.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Registers a value already shared (an `Arc<T>` the service also keeps).
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        let entries = Arc::make_mut(&mut self.0);
        entries.retain(|e| e.id != TypeId::of::<T>());
        entries.push(Entry {
            id: TypeId::of::<T>(),
            name: type_name::<T>(),
            value,
        });
    }

    /// The value registered for `T`.
    #[must_use]
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.find(TypeId::of::<T>())
            .and_then(|e| e.value.clone().downcast::<T>().ok())
            .map(State)
    }

    /// Whether a value of `need`'s type is registered.
    pub(crate) fn has(&self, need: &StateNeed) -> bool {
        self.find(need.id).is_some()
    }

    fn find(&self, id: TypeId) -> Option<&Entry> {
        self.0.iter().find(|e| e.id == id)
    }

    /// The names of the registered types.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|e| e.name)
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// Two maps are equal when they hold the same values (the same `Arc`s) for the same types.
impl PartialEq for StateMap {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|(a, b)| a.id == b.id && Arc::ptr_eq(&a.value, &b.value))
    }
}

/// A state type a handler takes, as its registration records it (generated code).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct StateNeed {
    id: TypeId,
    pub(crate) name: &'static str,
}

impl StateNeed {
    /// The need of a `State<T>` parameter.
    #[must_use]
    pub fn of<T: Send + Sync + 'static>() -> Self {
        Self {
            id: TypeId::of::<T>(),
            name: type_name::<T>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type_and_replaced() {
        let mut map = StateMap::default();
        map.insert(5u32);
        map.insert(String::from("a"));
        map.insert(String::from("b"));
        assert_eq!(*map.get::<u32>().unwrap(), 5);
        assert_eq!(&*map.get::<String>().unwrap(), "b");
        assert!(map.get::<u64>().is_none());
        assert!(map.has(&StateNeed::of::<u32>()));
        assert!(!map.has(&StateNeed::of::<u64>()));
        assert_eq!(format!("{map:?}"), r#"{"u32", "alloc::string::String"}"#);
    }

    #[test]
    fn clones_share_values_and_compare_equal() {
        let mut map = StateMap::default();
        map.insert(1u8);
        let copy = map.clone();
        assert_eq!(map, copy);
        let mut other = StateMap::default();
        other.insert(1u8);
        assert_ne!(map, other, "a different value of the same type");
    }
}
