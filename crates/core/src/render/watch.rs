//! Render, `watch`: each finding event as one line, and the ids seen lately so copies of one
//! transition are shown once.

use std::collections::{HashSet, VecDeque};

use crate::text::terminal_field;
use crate::wire::FindingEvent;

/// One line per event: time (the event's own, RFC 3339 UTC), event, check, severity, server,
/// summary. The event's text comes from the network: it is escaped for the terminal, a newline
/// in the summary included, so an event is always one line.
pub fn format_line(event: &FindingEvent) -> String {
    format!(
        "{} {:<8} {} {:<8} {:<10} {}",
        terminal_field(&event.timestamp),
        event.event.as_str().to_uppercase(),
        event.check,
        event.severity.as_str(),
        terminal_field(event.server.as_deref().unwrap_or("-")),
        terminal_field(&event.summary)
    )
}

/// The event ids seen lately, to drop copies: delivery is at least once, and every copy of a
/// transition carries the same id (two instances that could not hear each other may both send
/// it). Remembers the last `capacity` ids.
#[derive(Debug)]
pub struct SeenIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl SeenIds {
    /// Remembering up to `capacity` ids.
    pub fn new(capacity: usize) -> SeenIds {
        SeenIds {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` is offered (false for a copy).
    pub fn first(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_dropped_and_old_ids_forgotten() {
        let mut seen = SeenIds::new(2);
        assert!(seen.first("a"));
        assert!(!seen.first("a"));
        assert!(seen.first("b"));
        assert!(seen.first("c"));
        assert!(seen.first("a"), "forgotten after two newer ids");
    }
}
