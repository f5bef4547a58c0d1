//! Which events one stream client wants: `?uid=` (one user, or every user) and `?types=` (a
//! comma list of outbound event types and prefixes such as `sleep.*`), parsed once at the edge
//! into the exact set of type names, so matching is a comparison and the outbox query takes the
//! same set.

use crate::outbound::outbox::EventType;

use super::StreamEvent;

/// A client's uid and types; `None` is every one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub uid: Option<String>,
    pub types: Option<Vec<&'static str>>,
}

/// A query parameter that says nothing the stream can use; `field` names it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FilterError {
    pub field: &'static str,
    pub problem: String,
}

impl Filter {
    /// Every event.
    pub const ALL: Filter = Filter {
        uid: None,
        types: None,
    };

    pub fn parse(uid: Option<String>, types: Option<&str>) -> Result<Filter, FilterError> {
        let uid = match uid {
            Some(uid) if uid.is_empty() => {
                return Err(problem("uid", "is empty; leave it out for every user"));
            }
            uid => uid,
        };
        let types = match types {
            None => None,
            Some(list) => parse_types(list)?,
        };
        Ok(Filter { uid, types })
    }

    pub fn matches(&self, event: &StreamEvent) -> bool {
        let uid = self
            .uid
            .as_deref()
            .is_none_or(|uid| event.uid.as_deref() == Some(uid));
        let kind = self
            .types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type.as_str()));
        uid && kind
    }
}

fn problem(field: &'static str, problem: impl Into<String>) -> FilterError {
    FilterError {
        field,
        problem: problem.into(),
    }
}

/// The type names a comma list names (`None` for `*`, every type), each once, in the order of
/// [`EventType::ALL`].
fn parse_types(list: &str) -> Result<Option<Vec<&'static str>>, FilterError> {
    let items: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    if items.is_empty() {
        return Err(problem(
            "types",
            "is empty; give event types such as audio.level,sleep.*",
        ));
    }
    if items.contains(&"*") {
        return Ok(None);
    }
    let mut wanted = [false; EventType::ALL.len()];
    for item in items {
        let named = named_types(item);
        if !named.iter().any(|&is| is) {
            let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
            let message = format!(
                "{item:?} is no outbound event type nor a prefix of one such as sleep.*; the types are {}",
                known.join(", ")
            );
            return Err(problem("types", message));
        }
        wanted
            .iter_mut()
            .zip(named)
            .for_each(|(want, is)| *want |= is);
    }
    let types = EventType::ALL
        .iter()
        .zip(wanted)
        .filter_map(|(kind, want)| want.then_some(kind.as_str()))
        .collect();
    Ok(Some(types))
}

/// For each of [`EventType::ALL`], whether `item` (a name, or a prefix ending in `.*`) names it.
fn named_types(item: &str) -> [bool; EventType::ALL.len()] {
    EventType::ALL.map(|kind| match item.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => kind.as_str().starts_with(prefix),
        Some(_) => false,
        None => kind.as_str() == item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Position;

    fn event(event_type: &str, uid: Option<&str>) -> StreamEvent {
        StreamEvent {
            position: Position::START,
            event_type: event_type.to_owned(),
            uid: uid.map(str::to_owned),
            body: "{}".to_owned(),
        }
    }

    #[test]
    fn types_and_prefixes_become_the_exact_set_of_names() {
        let filter = Filter::parse(None, Some("sleep.*, audio.level,sleep.inference")).unwrap();
        let expected = vec!["audio.level", "sleep.inference", "sleep.session_completed"];
        assert_eq!(filter.types, Some(expected));
        assert_eq!(
            Filter::parse(None, Some("audio.level,*")).unwrap(),
            Filter::ALL
        );
        assert_eq!(Filter::parse(None, None).unwrap(), Filter::ALL);
    }

    #[test]
    fn events_match_by_uid_and_type() {
        let filter = Filter::parse(Some("u1".into()), Some("memory.*")).unwrap();
        assert!(filter.matches(&event("memory.created", Some("u1"))));
        assert!(!filter.matches(&event("memory.created", Some("u2"))));
        assert!(!filter.matches(&event("memory.created", None)));
        assert!(!filter.matches(&event("audio.level", Some("u1"))));
        assert!(Filter::ALL.matches(&event("endpoint.disabled", None)));
    }

    #[test]
    fn a_bad_parameter_is_named() {
        for bad in [
            "",
            " , ",
            "audio",
            "sleep.",
            "nope.*",
            "audio.level,bogus",
            "sleep*",
        ] {
            let error = Filter::parse(None, Some(bad)).unwrap_err();
            assert_eq!(error.field, "types", "{bad}");
            assert!(error.to_string().starts_with("types: "), "{error}");
        }
        let error = Filter::parse(Some(String::new()), None).unwrap_err();
        assert_eq!(error.field, "uid");
    }
}
